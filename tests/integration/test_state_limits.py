"""``context.state``'s limits (issue 20, item 4), through both channels a script can have: the
broker over real HTTPS (a pod) and the local Unix-socket channel (``fxctl run``), each driven by
``fx_ef``'s own ``context.state``, on both store backends. Also: a put answers no state, and a
request body is bounded before it is read.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from fx_operator.domain import pki, state_limits
from fx_operator.domain.state_limits import (
    MAX_KEY_BYTES,
    MAX_KEYS,
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    StateLimitError,
)
from fx_operator.endpoints.broker import BrokerServer, PodIdentity, start_broker
from fx_operator.endpoints.local_channel import LocalChannel
from fx_operator.exceptions import ValidationError
from fx_operator.services.channel import dispatch
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.runs import RunGrant, RunService
from fx_operator.services.secret_service import SecretService

from fx_ef import Context, StateError, contract
from fx_ef import StateLimitError as ScriptStateLimitError
from fx_ef._channel import call
from fx_ef.init import key_from_broker

T = TypeVar("T")
TRANSPORTS = ("broker", "local")


class OnePodCluster:
    """The cluster's answers for the broker: every pod token is its own live pod of its run."""

    def __init__(self) -> None:
        self.pods: dict[str, tuple[PodIdentity, str]] = {}

    async def authenticate(self, token: str) -> PodIdentity | None:
        found = self.pods.get(token)
        return found[0] if found else None

    async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
        return next((run for pod, run in self.pods.values() if pod.pod_uid == pod_uid), None)


@dataclass
class Channels:
    """Makes runs of packages of project team-a, each with a context on one transport."""

    transport: str
    service: SecretService
    runs: RunService
    folder: Path
    clients: ThreadPoolExecutor
    broker: BrokerServer | None = None
    cluster: OnePodCluster | None = None
    ca_file: Path | None = None
    local: list[LocalChannel] | None = None

    async def client(self, function: Callable[..., T], *args: Any) -> T:
        """A script's blocking call, on a thread of its own (the broker serves on this loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.clients, function, *args)

    async def context(self, run_id: str, package: str = "etl") -> Context:
        channel = await self._channel(run_id, package)
        bundle = self.folder / f"{run_id}.bundle.json"
        bundle.write_text(json.dumps({
            "format": 1, "run_id": run_id,
            "package": {"name": package, "id": f"team-a/{package}", "project": "team-a"},
            "params": {}, "config": {}, "secrets": {}, "scopes": {}, "channel": channel,
            "allow_platform_write": False}))
        return Context(environ={"FX_BUNDLE": str(bundle)})

    async def _channel(self, run_id: str, package: str) -> dict[str, Any]:
        if self.transport == "local":
            assert self.local is not None
            folder = Path(os.path.join("/tmp", f"fxst-{os.urandom(4).hex()}"))  # short sun_path
            channel = LocalChannel(self.runs, RunGrant(run_id, "team-a", package), folder)
            self.local.append(channel)
            return channel.descriptor
        assert self.broker is not None and self.cluster is not None and self.ca_file
        keys = RunKeyService(self.service.store, self.service.keys)
        keys.register(run_id, "team-a", f"exec-{run_id}", f"fx-{run_id}", package,
                      os.urandom(contract.RUN_KEY_BYTES), False)
        token = f"token-{run_id}-{os.urandom(8).hex()}"
        self.cluster.pods[token] = (PodIdentity("team-a", f"pod-{run_id}", f"uid-{run_id}",
                                                "default"), run_id)
        token_file = self.folder / f"{run_id}.token"
        token_file.write_text(token)
        url = f"https://127.0.0.1:{self.broker.port}"
        await self.client(key_from_broker, url, run_id, token_file, self.ca_file)
        return {"url": url, "token": None, "token_file": str(token_file),
                "ca_file": str(self.ca_file)}


@pytest_asyncio.fixture(params=TRANSPORTS)
async def channels(request: pytest.FixtureRequest, service: SecretService,
                   tmp_path: Path) -> AsyncIterator[Channels]:
    runs = RunService(service)
    clients = ThreadPoolExecutor(max_workers=4, thread_name_prefix="script")
    made = Channels(request.param, service, runs, tmp_path, clients)
    if request.param == "broker":
        ca = pki.make_ca()
        serving = pki.make_serving_certificate(ca, ["localhost"], ["127.0.0.1"])
        made.ca_file = tmp_path / "ca.crt"
        made.ca_file.write_text(ca.certificate_pem)
        made.cluster = OnePodCluster()
        made.broker = await start_broker(
            certificate_pem=serving.certificate_pem, private_key_pem=serving.private_key_pem,
            authenticator=made.cluster, run_keys=RunKeyService(service.store, service.keys),
            runs=runs, host="127.0.0.1", port=0)
    else:
        made.local = []
    try:
        yield made
    finally:
        if made.broker is not None:
            await made.broker.stop()
        for channel in made.local or []:
            channel.close()
            channel.path.parent.rmdir()
        clients.shutdown(wait=True)


def _string_of(size: int, mark: str = "") -> str:
    """A string value whose JSON is exactly ``size`` bytes (the quotes count)."""
    return mark + "v" * (size - 2 - len(mark))


# --- the limits, end to end -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_issue_20s_attack_is_refused_naming_the_key_and_the_limit(channels: Channels
                                                                        ) -> None:
    """80 values of 900 KB were all accepted; now each is refused with 413 and nothing lands."""
    context = await channels.context("run-1")
    for number in range(80):
        with pytest.raises(ScriptStateLimitError) as caught:
            await channels.client(context.state.put, f"blob-{number}", _string_of(900_000))
        assert caught.value.status == 413
        assert f"'blob-{number}'" in str(caught.value)
        assert f"{MAX_VALUE_BYTES} bytes per value" in str(caught.value)
    assert await channels.client(context.state.get) == {}


@pytest.mark.asyncio
async def test_a_value_of_exactly_the_limit_is_kept(channels: Channels) -> None:
    context = await channels.context("run-1")
    largest = _string_of(MAX_VALUE_BYTES)
    await channels.client(context.state.put, "largest", largest)
    with pytest.raises(ScriptStateLimitError, match=r"'one-more'.*is 131073 bytes"):
        await channels.client(context.state.put, "one-more", _string_of(MAX_VALUE_BYTES + 1))
    assert await channels.client(context.state.get) == {"largest": largest}


@pytest.mark.asyncio
async def test_a_key_too_long_is_400_naming_it(channels: Channels) -> None:
    context = await channels.context("run-1")
    at_limit = "é" * (MAX_KEY_BYTES // 2)  # two bytes each in UTF-8
    await channels.client(context.state.put, at_limit, 1)
    too_long = "é" * (MAX_KEY_BYTES // 2) + "x"
    with pytest.raises(StateError) as caught:
        await channels.client(context.state.put, too_long, 1)
    assert not isinstance(caught.value, ScriptStateLimitError)
    assert caught.value.status == 400
    assert f"{MAX_KEY_BYTES + 1} bytes long" in str(caught.value)
    assert f"at most {MAX_KEY_BYTES} bytes" in str(caught.value)
    assert too_long[:20] in str(caught.value)
    assert await channels.client(context.state.get) == {at_limit: 1}


@pytest.mark.asyncio
async def test_the_package_total_is_bounded_and_an_over_limit_state_may_shrink(
        channels: Channels) -> None:
    context = await channels.context("run-1")
    each = MAX_VALUE_BYTES - 200
    for number in range(MAX_TOTAL_BYTES // (each + 8)):
        await channels.client(context.state.put, f"part-{number}", _string_of(each))
    with pytest.raises(ScriptStateLimitError) as caught:
        await channels.client(context.state.put, "straw", _string_of(each))
    assert "'straw'" in str(caught.value) and f"{MAX_TOTAL_BYTES} bytes per package" in str(
        caught.value)
    await channels.client(context.state.put, "part-0", "small")  # replacing shrinks it: fine
    state = await channels.client(context.state.get)
    assert state["part-0"] == "small" and "straw" not in state
    # the limit is the package's: another package of the project writes as before
    other = await channels.context("run-2", package="report")
    await channels.client(other.state.put, "straw", _string_of(each))


@pytest.mark.asyncio
async def test_a_put_answers_no_state(channels: Channels) -> None:
    context = await channels.context("run-1")
    await channels.client(context.state.put, "cursor", {"page": 3})
    data = context._load()
    assert data.channel is not None
    answer = await channels.client(call, data.channel, "run-1", "POST",
                                   contract.CHANNEL_STATE_PATH, {"key": "next", "value": 4},
                                   StateError, "put")
    assert answer == {}
    assert await channels.client(context.state.get) == {"cursor": {"page": 3}, "next": 4}


def test_the_number_of_keys_is_bounded(service: SecretService) -> None:
    runs = RunService(service)
    grant = RunGrant("run-1", "team-a", "etl")

    def put(key: str, value: int) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"key": key, "value": value}).encode()
        return dispatch(runs, grant, "POST", contract.CHANNEL_STATE_PATH, body)

    for number in range(MAX_KEYS):
        assert put(f"k{number}", 0)[0] == 200
    status, answer = put("k-extra", 0)
    assert status == 413
    assert re.search(f"'k-extra' would be key number {MAX_KEYS + 1}.*limit is {MAX_KEYS} keys",
                     answer["error"])
    assert put("k7", 1)[0] == 200  # an existing key
    state = runs.get_state(grant)
    assert len(state) == MAX_KEYS and state["k7"] == 1


def test_the_package_limits_allow_shrinking_only_past_the_total() -> None:
    """A state over the total (kept from before the limits) may shrink, never grow."""
    over = {"a": MAX_TOTAL_BYTES, "b": 100}
    state_limits.check_package("a", over, MAX_TOTAL_BYTES - 10)
    state_limits.check_package("b", over, 50)
    with pytest.raises(StateLimitError):
        state_limits.check_package("b", over, 101)
    with pytest.raises(StateLimitError):
        state_limits.check_package("c", over, 1)
    with pytest.raises(ValidationError, match="must not be empty"):
        state_limits.check_key("")


# --- bodies are bounded before they are read --------------------------------------------------

_HUNDRED_MB = 100 * 1024 * 1024


def _raw_exchange(connect: Callable[[], socket.socket], head: bytes, body_chunks: int,
                  chunk: bytes) -> bytes:
    """Send a request head and ``body_chunks`` chunks of a body that is never finished, then
    read the answer. A server that waited for the whole body would never answer (the read
    times out and the test fails)."""
    sock = connect()
    try:
        sock.settimeout(60)
        sock.sendall(head)
        try:
            for _ in range(body_chunks):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and stopped reading: its answer is already on the way
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer
    finally:
        sock.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.asyncio
@pytest.mark.parametrize("channels", ["broker"], indirect=True)
async def test_a_100_mb_body_is_refused_unread_by_the_broker(channels: Channels) -> None:
    context = await channels.context("run-1")
    data = context._load()
    assert data.channel is not None and data.channel.token_file and channels.broker
    token = Path(data.channel.token_file).read_text()
    port = channels.broker.port
    tls = ssl.create_default_context(cafile=str(channels.ca_file))

    def connect() -> socket.socket:
        return tls.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                               server_hostname="127.0.0.1")

    def head(framing: str) -> bytes:
        return (f"POST {contract.CHANNEL_STATE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n{contract.RUN_HEADER}: run-1\r\n"
                f"Content-Type: application/json\r\n{framing}\r\n").encode()

    declared = await channels.client(_raw_exchange, connect,
                                     head(f"Content-Length: {_HUNDRED_MB}\r\n"), 1, b" " * 65536)
    assert _status(declared) == 413
    # chunked: no length to refuse by, so the read stops at client_max_size (1 MiB), far
    # before the 100 MB the client meant to send
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    streamed = await channels.client(_raw_exchange, connect, head("Transfer-Encoding: chunked\r\n"),
                                     40, chunk)
    assert _status(streamed) == 413
    assert await channels.client(context.state.get) == {}


@pytest.mark.asyncio
@pytest.mark.parametrize("channels", ["local"], indirect=True)
async def test_the_local_channel_refuses_a_body_it_cannot_bound(channels: Channels) -> None:
    context = await channels.context("run-1")
    data = context._load()
    assert data.channel is not None and data.channel.token
    socket_path = data.channel.url[len("unix:"):]

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
        return sock

    def head(framing: str) -> bytes:
        return (f"POST {contract.CHANNEL_STATE_PATH} HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {data.channel.token}\r\n"  # type: ignore[union-attr]
                f"{contract.RUN_HEADER}: run-1\r\n{framing}\r\n").encode()

    for framing, status in ((f"Content-Length: {_HUNDRED_MB}\r\n", 413),
                            ("Content-Length: -1\r\n", 400),  # read(-1): to the stream's end
                            ("Transfer-Encoding: chunked\r\n", 411)):
        answer = await channels.client(_raw_exchange, connect, head(framing), 1, b" " * 4096)
        assert _status(answer) == status, framing
    assert await channels.client(context.state.get) == {}
