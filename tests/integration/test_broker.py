"""The broker over real HTTPS, driven by the run pod's own clients (``fx_ef.init`` for the key,
``fx_ef``'s channel for secrets and state), with the cluster's answers faked: which token belongs
to which pod, and which live pod belongs to which run. Both store backends.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from fx_operator.domain import pki
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.endpoints.broker import BrokerServer, PodIdentity, start_broker
from fx_operator.exceptions import FxError, NotFoundError
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.runs import RunService
from fx_operator.services.secret_service import SecretService

from fx_ef import contract
from fx_ef._channel import call
from fx_ef._errors import SecretWriteError
from fx_ef._rundata import ChannelSpec
from fx_ef.init import InitError, key_from_broker

CANARY = "broker-canary-5e2d91f0-do-not-leak"
T = TypeVar("T")


@dataclass
class FakeCluster:
    """The PodAuthenticator a cluster would be: TokenReview and pod lookups from two dicts."""

    tokens: dict[str, PodIdentity] = field(default_factory=dict)
    live_pods: dict[tuple[str, str, str], str] = field(default_factory=dict)
    down: bool = False
    review_delay: float = 0.0  # an API server's time to review a token
    calls: list[str] = field(default_factory=list)
    looked_up: list[tuple[str, str, str]] = field(default_factory=list)

    async def authenticate(self, token: str) -> PodIdentity | None:
        if self.down:
            raise FxError(f"TokenReview failed: 503 (spec.token={token})")
        self.calls.append("review started")
        await asyncio.sleep(self.review_delay)
        self.calls.append("review ended")
        return self.tokens.get(token)

    async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
        self.calls.append("pod looked up")
        self.looked_up.append((namespace, pod_name, pod_uid))
        return self.live_pods.get((namespace, pod_name, pod_uid))


@dataclass
class Env:
    server: BrokerServer
    cluster: FakeCluster
    keys: RunKeyService
    service: SecretService
    folder: Path
    ca_file: Path
    # The clients' own threads: on the default executor they could take every worker the broker
    # needs for its store calls, and wait for answers that then never come.
    clients: ThreadPoolExecutor
    secrets_seen: list[str] = field(default_factory=list)  # tokens and keys: never in a log
    serving: pki.KeyPair | None = None  # to start the broker again, as a restart would

    async def client(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.clients, function, *args)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def run(self, run_id: str, namespace: str = "team-a", package: str = "etl", *,
            allow_platform_write: bool = False) -> bytes:
        key = os.urandom(contract.RUN_KEY_BYTES)
        self.keys.register(run_id, namespace, f"exec-{run_id}", f"fx-{run_id}", package, key,
                           allow_platform_write)
        self.secrets_seen += [base64.b64encode(key).decode(), key.hex()]
        return key

    def pod(self, name: str, namespace: str, run_id: str | None, *, live: bool = True) -> Path:
        """A pod with a projected token file; ``run_id`` is its run label."""
        token = f"token-{name}-{os.urandom(8).hex()}"
        identity = PodIdentity(namespace, name, f"uid-{name}", "default")
        self.cluster.tokens[token] = identity
        if live and run_id is not None:
            self.cluster.live_pods[(namespace, name, identity.pod_uid)] = run_id
        path = self.folder / f"{name}.token"
        path.write_text(token + "\n")
        self.secrets_seen.append(token)
        return path

    async def key(self, run_id: str, token_file: Path, ca_file: Path | None = None) -> bytes:
        return await self.client(key_from_broker, self.url, run_id, token_file,
                                 ca_file or self.ca_file)

    async def channel(self, run_id: str, token_file: Path, method: str, path: str,
                      body: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = ChannelSpec(self.url, None, str(token_file), str(self.ca_file))
        return await self.client(call, spec, run_id, method, path, body, SecretWriteError,
                                 "test")

    async def refused(self, run_id: str, token_file: Path, method: str, path: str,
                      body: dict[str, Any] | None = None) -> int | None:
        with pytest.raises(SecretWriteError) as caught:
            await self.channel(run_id, token_file, method, path, body)
        return caught.value.status

    def audit(self, run_id: str) -> list[tuple[str, str]]:
        """(action, reason or pod) of the run's audit records, oldest first."""
        records = self.service.audit_records(run_id=run_id)
        return [(r.action, str((r.entries or [{}])[0].get("reason", r.entries and
                                                              r.entries[0].get("pod"))))
                for r in reversed(records)]


@pytest_asyncio.fixture
async def env(service: SecretService, tmp_path: Path) -> AsyncIterator[Env]:
    ca = pki.make_ca()
    serving = pki.make_serving_certificate(ca, ["localhost"], ["127.0.0.1"])
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca.certificate_pem)
    cluster = FakeCluster()
    keys = RunKeyService(service.store, service.keys)
    server = await start_broker(certificate_pem=serving.certificate_pem,
                                private_key_pem=serving.private_key_pem, authenticator=cluster,
                                run_keys=keys, runs=RunService(service), host="127.0.0.1",
                                port=0)
    clients = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pod-client")
    try:
        env = Env(server, cluster, keys, service, tmp_path, ca_file, clients, serving=serving)
        yield env
    finally:
        await env.server.stop()
        clients.shutdown(wait=True)


def _assert_no_secret(text: str, env: Env, where: str) -> None:
    for secret in [CANARY, base64.b64encode(CANARY.encode()).decode(), *env.secrets_seen]:
        assert secret not in text, f"a secret leaked into {where}"


@pytest.mark.asyncio
async def test_the_key_is_delivered_once_then_409(env: Env) -> None:
    key = env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    assert await env.key("run-1", token) == key
    with pytest.raises(InitError, match=r"\(409\).*already delivered"):
        await env.key("run-1", token)
    assert env.audit("run-1") == [("register-run-key", "None"), ("deliver", "etl-1"),
                                  ("deliver-refused", "already-delivered")]


@pytest.mark.asyncio
async def test_pods_of_other_namespaces_and_runs_are_refused(env: Env) -> None:
    key = env.run("run-1")
    env.run("run-2")
    intruder = env.pod("intruder", "team-b", "run-1")  # labelled as run-1, but in team-b
    other_run = env.pod("etl-2", "team-a", "run-2")
    finished_pod = env.pod("etl-old", "team-a", "run-1", live=False)
    with pytest.raises(InitError, match=r"\(403\).*another namespace"):
        await env.key("run-1", intruder)
    with pytest.raises(InitError, match=r"\(403\).*another run"):
        await env.key("run-1", other_run)
    with pytest.raises(InitError, match=r"\(403\).*not a live pod"):
        await env.key("run-1", finished_pod)
    assert await env.key("run-1", env.pod("etl-1", "team-a", "run-1")) == key
    reasons = [reason for action, reason in env.audit("run-1") if action == "deliver-refused"]
    assert reasons == ["pod-of-another-namespace", "pod-of-another-run", "not-a-live-run-pod"]


def _jwt_claiming(namespace: str, pod: str, uid: str) -> str:
    """A token shaped as a projected one, whose (unverified) claims name a pod."""
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    claims = {"kubernetes.io": {"namespace": namespace, "pod": {"name": pod, "uid": uid}}}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.{os.urandom(8).hex()}"


@pytest.mark.asyncio
async def test_the_claimed_pod_is_read_while_the_token_is_reviewed(env: Env) -> None:
    """One round trip off a run's start: the pod lookup does not wait for the review."""
    key = env.run("run-1")
    token = _jwt_claiming("team-a", "etl-1", "uid-etl-1")
    env.cluster.tokens[token] = PodIdentity("team-a", "etl-1", "uid-etl-1", "default")
    env.cluster.live_pods[("team-a", "etl-1", "uid-etl-1")] = "run-1"
    env.cluster.review_delay = 0.2
    path = env.folder / "claiming.token"
    path.write_text(token)
    env.secrets_seen.append(token)
    assert await env.key("run-1", path) == key
    assert env.cluster.calls == ["review started", "pod looked up", "review ended"]


@pytest.mark.asyncio
async def test_a_token_claiming_another_pod_gets_its_own_pods_answer(env: Env) -> None:
    """What the claims name is a hint: the run is the one of the pod the review names."""
    env.run("run-1")
    own_key = env.run("run-2")
    token = _jwt_claiming("team-a", "etl-1", "uid-etl-1")  # claims run-1's pod
    env.cluster.tokens[token] = PodIdentity("team-a", "etl-2", "uid-etl-2", "default")
    env.cluster.live_pods[("team-a", "etl-1", "uid-etl-1")] = "run-1"
    env.cluster.live_pods[("team-a", "etl-2", "uid-etl-2")] = "run-2"
    path = env.folder / "lying.token"
    path.write_text(token)
    env.secrets_seen.append(token)
    with pytest.raises(InitError, match=r"\(403\).*another run"):
        await env.key("run-1", path)
    assert await env.key("run-2", path) == own_key
    assert env.cluster.looked_up[-1] == ("team-a", "etl-2", "uid-etl-2")


@pytest.mark.asyncio
async def test_a_bad_token_is_401_and_audited(env: Env) -> None:
    env.run("run-1")
    forged = env.folder / "forged.token"
    forged.write_text("not-a-token")
    with pytest.raises(InitError, match=r"\(401\)"):
        await env.key("run-1", forged)
    assert env.audit("run-1")[-1] == ("deliver-refused", "unauthenticated")
    assert env.service.audit_records(run_id="run-1")[0].actor == "unauthenticated"


@pytest.mark.asyncio
async def test_unknown_and_finished_runs(env: Env) -> None:
    env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    with pytest.raises(InitError, match=r"\(404\)"):
        await env.key("run-nope", env.pod("etl-x", "team-a", "run-nope"))
    env.keys.finish("run-1")
    with pytest.raises(InitError, match=r"\(410\)"):
        await env.key("run-1", token)


@pytest.mark.asyncio
async def test_concurrent_key_requests_have_one_winner(env: Env) -> None:
    key = env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    results = await asyncio.gather(*(env.key("run-1", token) for _ in range(6)),
                                   return_exceptions=True)
    assert results.count(key) == 1
    assert sum(isinstance(r, InitError) and "(409)" in str(r) for r in results) == 5


@pytest.mark.asyncio
async def test_the_client_refuses_a_broker_it_does_not_trust(
        env: Env, capfd: pytest.CaptureFixture[str]) -> None:
    key = env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    other_ca = env.folder / "other-ca.crt"
    other_ca.write_text(pki.make_ca().certificate_pem)
    with pytest.raises(InitError, match="cannot reach the broker"):  # final: not asked again
        await env.client(functools.partial(key_from_broker, wait=30), env.url, "run-1", token,
                         other_ca)
    assert "asking again" not in capfd.readouterr().err
    assert await env.key("run-1", token) == key  # nothing was handed out over the failed TLS


@pytest.mark.asyncio
async def test_the_init_step_waits_for_a_restarting_broker(env: Env,
                                                           capfd: pytest.CaptureFixture[str]
                                                           ) -> None:
    """A run pod that starts while the operator restarts gets its key once the broker is back;
    nothing unreachable is a refusal, so it keeps asking (within its wait)."""
    key = env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    port = env.server.port
    await env.server.stop()
    asking = asyncio.ensure_future(env.client(
        functools.partial(key_from_broker, wait=30), env.url, "run-1", token, env.ca_file))
    await asyncio.sleep(0.8)
    assert not asking.done()
    assert env.serving is not None
    env.server = await start_broker(
        certificate_pem=env.serving.certificate_pem, private_key_pem=env.serving.private_key_pem,
        authenticator=env.cluster, run_keys=env.keys, runs=RunService(env.service),
        host="127.0.0.1", port=port)
    assert await asking == key
    assert "asking again" in capfd.readouterr().err


@pytest.mark.asyncio
async def test_channel_writes_secrets_and_state_for_the_runs_own_pod(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    await env.key("run-1", token)
    answers = [await env.channel("run-1", token, "POST", contract.CHANNEL_SECRETS_PATH,
                                 {"name": "CANARY", "value": CANARY, "scope": "project"})]
    assert answers[0] == {"version": 1}
    assert env.service.get(Owner.of(Scope.PROJECT, "team-a"), "CANARY") == CANARY
    answers.append(await env.channel("run-1", token, "POST", contract.CHANNEL_STATE_PATH,
                                     {"key": "cursor", "value": {"page": 3}}))
    answers.append(await env.channel("run-1", token, "GET", contract.CHANNEL_STATE_PATH))
    assert answers[-1] == {"state": {"cursor": {"page": 3}}}
    # the state is the package's: another package of the project does not see it
    env.run("run-2", package="report")
    other = env.pod("report-1", "team-a", "run-2")
    await env.key("run-2", other)
    assert await env.channel("run-2", other, "GET", contract.CHANNEL_STATE_PATH) == {"state": {}}
    _assert_no_secret(json.dumps(answers), env, "a channel answer")
    _assert_no_secret(caplog.text, env, "a log line")
    assert "run-1" in caplog.text, "logging was captured"


@pytest.mark.asyncio
async def test_channel_refusals(env: Env) -> None:
    env.run("run-1")
    env.run("run-2", namespace="team-b")
    token = env.pod("etl-1", "team-a", "run-1")
    write = {"name": "X", "value": "v", "scope": "project"}
    # before the pod got the key, the run has no channel
    assert await env.refused("run-1", token, "POST", contract.CHANNEL_SECRETS_PATH, write) == 403
    await env.key("run-1", token)
    assert await env.refused("run-2", token, "POST", contract.CHANNEL_SECRETS_PATH, write) == 403
    forged = env.folder / "forged.token"
    forged.write_text("forged")
    assert await env.refused("run-1", forged, "GET", contract.CHANNEL_STATE_PATH) == 401
    twin = env.pod("etl-1-retry", "team-a", "run-1")  # a second pod of the same run
    assert await env.refused("run-1", twin, "GET", contract.CHANNEL_STATE_PATH) == 403
    env.keys.finish("run-1")
    assert await env.refused("run-1", token, "GET", contract.CHANNEL_STATE_PATH) == 410
    assert env.service.list(scope=None, project="team-b") == []


@pytest.mark.asyncio
async def test_platform_writes_only_where_allowed(env: Env) -> None:
    env.run("run-1")
    env.run("run-2", allow_platform_write=True)
    plain = env.pod("etl-1", "team-a", "run-1")
    allowed = env.pod("etl-2", "team-a", "run-2")
    await env.key("run-1", plain)
    await env.key("run-2", allowed)
    write = {"name": "SHARED", "value": CANARY, "scope": "platform"}
    assert await env.refused("run-1", plain, "POST", contract.CHANNEL_SECRETS_PATH, write) == 403
    with pytest.raises(NotFoundError):
        env.service.get(Owner.of(Scope.PLATFORM), "SHARED")
    assert await env.channel("run-2", allowed, "POST", contract.CHANNEL_SECRETS_PATH,
                             write) == {"version": 1}
    assert env.service.get(Owner.of(Scope.PLATFORM), "SHARED") == CANARY
    [record] = [r for r in env.service.audit_records(run_id="run-2") if r.action == "set"]
    key_id = env.service.history(Owner.of(Scope.PLATFORM), "SHARED")[0].data_key_id
    assert (record.scope, record.actor, record.entries) == (
        "platform", "run:run-2", [{"name": "SHARED", "scope": "platform", "version": 1,
                                   "dataKeyId": key_id}])


@pytest.mark.asyncio
async def test_an_unreachable_cluster_is_503_and_the_token_stays_out_of_logs(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env.run("run-1")
    token = env.pod("etl-1", "team-a", "run-1")
    env.cluster.down = True
    with pytest.raises(InitError, match=r"\(503\)"):
        await env.key("run-1", token)
    env.cluster.down = False
    await env.key("run-1", token)
    _assert_no_secret(caplog.text, env, "a log line")


def _raw(env: Env, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str | None]:
    context = ssl.create_default_context(cafile=str(env.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", env.server.port, context=context, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Cache-Control")
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_health_unknown_paths_and_oversized_bodies(env: Env) -> None:
    assert await env.client(_raw, env, "GET", "/healthz") == (200, {"status": "ok"},
                                                                     "no-store")
    status, body, _ = await env.client(_raw, env, "GET", "/v1/nothing")
    assert status == 404 and "error" in body
    status, body, _ = await env.client(_raw, env, "DELETE", contract.CHANNEL_STATE_PATH)
    assert status == 405 and "error" in body
    env.run("run-1")
    token_file = env.pod("etl-1", "team-a", "run-1")
    await env.key("run-1", token_file)
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}",
               contract.RUN_HEADER: "run-1", "Content-Type": "application/json"}
    big = json.dumps({"key": "k", "value": "x" * (2 * 1024 * 1024)}).encode()
    status, body, _ = await env.client(_raw, env, "POST", contract.CHANNEL_STATE_PATH,
                                              big, headers)
    assert status == 413 and "larger than" in body["error"]
    status, body, _ = await env.client(
        _raw, env, "POST", contract.BROKER_KEY_PATH.format(run_id="run-1"), b"{}",
        {**headers, contract.RUN_HEADER: "run-2"})
    assert status == 400


# --- bad requests: 400 naming the field, never a 500/503 or a traceback (issue 20, item 6) -----

_SECRETS = contract.CHANNEL_SECRETS_PATH
_STATE = contract.CHANNEL_STATE_PATH
_VALUE_MAX_DEPTH = 32  # fx_operator.domain.nesting.MAX_DEPTH, spelled out: the contract's number


def _doc(document: Any) -> bytes:
    """A body as a client could send it: ``json`` escapes lone surrogates and NUL, writes NaN."""
    return json.dumps(document).encode()


def _nested(levels: int) -> Any:
    value: Any = CANARY
    for _ in range(levels):
        value = [value]
    return value


def _deep_text(levels: int) -> str:
    """JSON nested ``levels`` deep, as text: ``json.dumps`` itself cannot write it."""
    return "[" * levels + json.dumps(CANARY) + "]" * levels


# id -> (path, raw body, the field the answer must name, status)
BAD_REQUESTS: dict[str, tuple[str, bytes, str, int]] = {
    "name-is-a-number": (_SECRETS, _doc({"name": 42, "value": CANARY}), "name", 400),
    "name-is-a-list": (_SECRETS, _doc({"name": ["a"], "value": CANARY}), "name", 400),
    "name-is-null": (_SECRETS, _doc({"name": None, "value": CANARY}), "name", 400),
    "name-is-missing": (_SECRETS, _doc({"value": CANARY}), "name", 400),
    "name-has-a-lone-surrogate": (_SECRETS, _doc({"name": "A\ud800", "value": CANARY}), "name",
                                  400),
    "scope-is-a-number": (_SECRETS, _doc({"name": "A", "value": CANARY, "scope": 3}), "scope",
                          400),
    "scope-is-null": (_SECRETS, _doc({"name": "A", "value": CANARY, "scope": None}), "scope",
                      400),
    "secret-value-33-levels": (_SECRETS, _doc({"name": "A",
                                               "value": _nested(_VALUE_MAX_DEPTH + 1)}),
                               "value", 400),
    "secret-value-100000-levels": (
        _SECRETS, f'{{"name": "A", "value": {_deep_text(100_000)}}}'.encode(), "value", 400),
    "secret-value-nan": (_SECRETS, _doc({"name": "A", "value": [CANARY, float("nan")]}),
                         "value", 400),
    "secret-value-lone-surrogate": (_SECRETS, _doc({"name": "A", "value": CANARY + "\udfff"}),
                                    "value", 400),
    "state-key-has-a-nul": (_STATE, _doc({"key": "a\x00b", "value": CANARY}), "key", 400),
    "state-key-is-a-number": (_STATE, _doc({"key": 7, "value": CANARY}), "key", 400),
    "state-key-is-a-list": (_STATE, _doc({"key": ["k"], "value": CANARY}), "key", 400),
    "state-key-has-a-lone-surrogate": (_STATE, _doc({"key": "k\udc00", "value": CANARY}), "key",
                                       400),
    "state-value-is-missing": (_STATE, _doc({"key": "k"}), "value", 400),
    "state-value-33-levels": (_STATE, _doc({"key": "k", "value": _nested(_VALUE_MAX_DEPTH + 1)}),
                              "value", 400),
    "state-value-100000-levels": (
        _STATE, f'{{"key": "k", "value": {_deep_text(100_000)}}}'.encode(), "value", 400),
    "state-value-nan": (_STATE, _doc({"key": "k", "value": [CANARY, float("nan")]}), "value",
                        400),
    "state-value-infinity": (_STATE, _doc({"key": "k", "value": {"x": float("-inf")}}), "value",
                             400),
    "state-value-1e999": (_STATE, b'{"key": "k", "value": [1e999]}', "value", 400),
    "state-value-5000-digits": (_STATE, b'{"key": "k", "value": ' + b"7" * 5000 + b"}", "value",
                                400),
    "state-value-lone-surrogate": (_STATE, _doc({"key": "k", "value": [CANARY, "\ud800"]}),
                                   "value", 400),
    "state-value-lone-surrogate-in-a-key": (_STATE, _doc({"key": "k",
                                                          "value": {"\ud800": CANARY}}),
                                            "value", 400),
    "body-is-an-array": (_STATE, _doc([{"key": "k", "value": CANARY}]), "body", 400),
    "body-is-a-string": (_STATE, _doc(CANARY), "body", 400),
    "body-is-not-json": (_STATE, b"{key: k, value: " + CANARY.encode() + b"}", "body", 400),
    "body-is-not-utf8": (_STATE, b'{"key": "k", "value": "\xff\xfe"}', "body", 400),
    "body-is-empty": (_STATE, b"", "body", 400),
    "body-is-oversized": (_STATE, _doc({"key": "k", "value": "x" * (2 * 1024 * 1024)}), "body",
                          413),
}


def _post(env: Env, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """Status and text of one raw request; a 500 of aiohttp's own is plain text, not JSON."""
    context = ssl.create_default_context(cafile=str(env.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", env.server.port, context=context, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_a_bad_channel_request_is_refused_naming_the_field(
        env: Env, caplog: pytest.LogCaptureFixture, case: str) -> None:
    path, raw, field_name, expected = BAD_REQUESTS[case]
    caplog.set_level(logging.DEBUG)
    env.run("run-1")
    token_file = env.pod("etl-1", "team-a", "run-1")
    await env.key("run-1", token_file)
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}",
               contract.RUN_HEADER: "run-1", "Content-Type": "application/json"}
    status, text = await env.client(_post, env, path, raw, headers)
    assert status == expected, f"{case}: {status} {text[:300]}"
    error = json.loads(text)["error"]
    assert re.search(rf"\b{field_name}\b", error), f"{case}: {error!r} names no {field_name!r}"
    if expected == 400:
        assert f"{field_name}: " in error, error
    assert CANARY not in text and not re.search("[\ud800-\udfff]", error)  # no value echoed
    # nothing stored, and the broker goes on serving the run
    assert env.service.list(scope=None, project="team-a") == []
    assert await env.channel("run-1", token_file, "GET", _STATE) == {"state": {}}
    await env.channel("run-1", token_file, "POST", _STATE, {"key": "ok", "value": [1]})
    assert await env.channel("run-1", token_file, "GET", _STATE) == {"state": {"ok": [1]}}
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == [], f"{case}: {[r.getMessage() for r in tracebacks]}"
    assert CANARY not in caplog.text
