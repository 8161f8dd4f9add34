"""storage/kube.py's one transport: every call goes out on the event loop over aiohttp (no sync
client call, no worker thread), with the service account's CA and its projected token, re-read
when the token file is renewed."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fx_operator.domain.api_group import LABEL_RUN
from fx_operator.domain.pki import make_ca, make_serving_certificate
from fx_operator.storage import kube as kube_storage
from fx_operator.storage.kube import Kube, KubeError, KubeNotFound, PodIdentity, load_api_client
from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader
from support.kube_emulator import KubeEmulator, KubeEmulatorServer

NS = "team-a"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator() -> KubeEmulator:
    emulator = KubeEmulator(recorded_calls=[])
    emulator.load_crds(REPO / "crds")
    return emulator


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: KubeEmulator) -> Iterator[Kube]:
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
        api = load_api_client()
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield Kube(api)
        api.close()


def _no_sync_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any call through the sync client or a worker thread; the calls tried, by name."""
    tried: list[str] = []

    def sync_call(*args: Any, **kwargs: Any) -> Any:
        tried.append(str(args[1] if len(args) > 1 else "call_api"))
        raise AssertionError("a call through the sync client")

    async def to_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
        tried.append(getattr(function, "__name__", "to_thread"))
        raise AssertionError("a call in a worker thread")
    monkeypatch.setattr(client.ApiClient, "call_api", sync_call)
    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    return tried


def test_every_call_goes_out_on_the_event_loop(kube: Kube, emulator: KubeEmulator,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    core = client.CoreV1Api(kube.api_client)
    core.create_namespaced_pod(NS, {"metadata": {"name": "p", "labels": {
        LABEL_RUN: "run-1"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    uid = core.read_namespaced_pod("p", NS).metadata.uid
    emulator.register_token("pod-token", namespace=NS, service_account="runner", pod_name="p",
                            pod_uid=uid)
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "c", "namespace": NS, "annotations": {"a": "1"}},
                  "data": {"k": "v"}}
    execution = {"apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
                 "metadata": {"name": "e", "namespace": NS}, "spec": {"package": "etl"}}
    tried = _no_sync_calls(monkeypatch)

    async def calls() -> None:
        await kube.open()
        try:
            created = await kube.create_custom("executions", NS, execution)
            assert created["metadata"]["uid"]
            assert (await kube.get_custom("executions", NS, "e"))["spec"] == {"package": "etl"}
            await kube.patch_custom("executions", NS, "e", {"metadata": {"labels": {"x": "y"}}})
            await kube.patch_custom_status("executions", NS, "e", {"phase": "Pending"})
            [listed] = await kube.list_custom("executions", NS, "x=y")
            assert listed["status"] == {"phase": "Pending"}
            assert await kube.list_custom("executions", NS, "x=z") == []
            await kube.apply_config_map(config_map)
            await kube.apply_config_map({**config_map, "data": {"k": "w"}})
            assert (await kube.read_config_map(NS, "c") or {})["data"] == {"k": "w"}
            assert await kube.read_config_map(NS, "missing") is None
            assert await kube.read_job(NS, "missing") is None
            assert [p["metadata"]["name"] for p in await kube.run_pods(NS, "run-1")] == ["p"]
            assert await kube.run_pods(NS, "run-2") == []
            assert await kube.pod_run_id(NS, "p", uid) == "run-1"
            assert await kube.review_token("pod-token", "fx-broker") == PodIdentity(
                NS, "p", uid, "runner")
            assert await kube.review_token("forged", "fx-broker") is None
            assert await kube.delete_custom("executions", NS, "e") is True
            assert await kube.delete_custom("executions", NS, "e") is False
            with pytest.raises(KubeNotFound):
                await kube.get_custom("executions", NS, "e")
        finally:
            await kube.close()
    asyncio.run(calls())
    assert tried == []
    assert emulator.recorded_calls is not None
    deleted = [c for c in emulator.recorded_calls if c.verb == "delete"]
    assert len(deleted) == 2


# --- TLS and the service account's projected token ---------------------------------------------


class _TlsApiServer:
    """An HTTPS server on loopback answering every call with ``{"kind": "Status"}``-like JSON,
    recording each call's bearer token (the in-cluster config's server)."""

    def __init__(self, folder: Path) -> None:
        ca = make_ca("test API server CA")
        serving = make_serving_certificate(ca, ["localhost"], ["127.0.0.1"])
        self.ca_file = folder / "ca.crt"
        self.ca_file.write_text(ca.certificate_pem)
        (folder / "tls.crt").write_text(serving.certificate_pem)
        (folder / "tls.key").write_text(serving.private_key_pem)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
        self.tokens: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def answer(request: web.Request) -> web.Response:
            self.tokens.append(request.headers.get("Authorization", ""))
            return web.json_response({"metadata": {"name": request.match_info["name"]}})
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _in_cluster(folder: Path, server: _TlsApiServer,
                ca_file: Path | None = None) -> tuple[Kube, InClusterConfigLoader, Path]:
    token_file = folder / "token"
    token_file.write_text("token-1")
    loader = InClusterConfigLoader(
        token_filename=str(token_file), cert_filename=str(ca_file or server.ca_file),
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                 "KUBERNETES_SERVICE_PORT": str(server.port)})
    configuration = client.Configuration()
    loader.load_and_set(configuration)
    return Kube(client.ApiClient(configuration)), loader, token_file


def test_in_a_pod_calls_verify_the_ca_and_carry_the_renewed_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _TlsApiServer(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr(kube_storage.time, "monotonic", lambda: clock[0])

    async def run() -> None:
        await server.start()
        try:
            kube, loader, token_file = _in_cluster(tmp_path, server)
            await kube.open()
            try:
                assert (await kube.read_pod(NS, "p") or {})["metadata"] == {"name": "p"}
                token_file.write_text("token-2")  # the kubelet renews the projected token
                # Once the client's refresh period (a minute) and our header cache are over:
                loader.token_expires_at = datetime.now() - timedelta(seconds=1)
                clock[0] += kube_storage.AUTH_HEADERS_SECONDS
                await kube.read_pod(NS, "p")
            finally:
                await kube.close()
        finally:
            await server.stop()
    asyncio.run(run())
    assert server.tokens == ["bearer token-1", "bearer token-2"]


def test_a_server_whose_certificate_the_ca_did_not_sign_is_refused(tmp_path: Path) -> None:
    server = _TlsApiServer(tmp_path)
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_text(make_ca("another CA").certificate_pem)

    async def run() -> None:
        await server.start()
        try:
            kube, _, _ = _in_cluster(tmp_path, server, ca_file=other_ca)
            with pytest.raises(KubeError, match="certificate verify failed"):
                await kube.read_pod(NS, "p")
        finally:
            await server.stop()
    asyncio.run(run())
    assert server.tokens == []  # the token never left for a server the CA does not vouch for


def test_a_server_that_never_answers_fails_the_call(tmp_path: Path) -> None:
    """A black hole (accepts, never answers): the call fails after its timeout, to be retried."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{port}"
        kube = Kube(client.ApiClient(configuration), timeout=0.5)
        with pytest.raises(KubeError) as failed:
            asyncio.run(kube.read_pod(NS, "p"))
        assert not isinstance(failed.value, KubeNotFound)
    finally:
        listener.close()
