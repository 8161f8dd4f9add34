"""The operator's Kubernetes calls (storage/kube.py) against the emulated API server over HTTP:
the idempotent writes admission relies on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fx_operator.storage import kube as kube_storage
from fx_operator.storage.kube import Kube, KubeError, KubeNotFound, load_api_client
from kubernetes.client import BatchV1Api, CoreV1Api
from support.kube_emulator import KubeEmulator, KubeEmulatorServer

NS = "team-a"


@pytest.fixture
def emulator() -> KubeEmulator:
    return KubeEmulator(recorded_calls=[])


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: KubeEmulator) -> Iterator[Kube]:
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
        api = load_api_client()
        CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield Kube(api)
        api.close()


def _config_map(value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "fx-broker-ca", "namespace": NS}, "data": {"ca.crt": value}}


def test_concurrent_writers_of_one_config_map_all_succeed(kube: Kube) -> None:
    """Replicas (or a burst) racing to publish the same ConfigMap: a create that loses with 409
    reads what won instead of failing."""
    async def race() -> None:
        await asyncio.gather(*(kube.apply_config_map(_config_map("pem")) for _ in range(8)))
        await kube.apply_config_map(_config_map("new pem"))
    asyncio.run(race())
    found = CoreV1Api(kube.api_client).read_namespaced_config_map("fx-broker-ca", NS)
    assert found.data == {"ca.crt": "new pem"}


def test_run_objects_are_made_once(kube: Kube) -> None:
    def secret(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "fx-run-1-bundle", "namespace": NS},
                "data": {"bundle": base64.b64encode(value.encode()).decode()}}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "fx-run-1", "namespace": NS},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "x"}]}}}}
    assert asyncio.run(kube.create_run_objects(secret("first"), job)) is True
    assert asyncio.run(kube.create_run_objects(secret("second"), job)) is False
    stored = CoreV1Api(kube.api_client).read_namespaced_secret("fx-run-1-bundle", NS)
    assert base64.b64decode(stored.data["bundle"]) == b"second"
    assert len(BatchV1Api(kube.api_client).list_namespaced_job(NS).items) == 1
    assert asyncio.run(kube.read_job(NS, "fx-run-1"))["metadata"]["name"] == "fx-run-1"
    assert asyncio.run(kube.read_job(NS, "fx-run-2")) is None


def test_a_refused_write_names_the_server_s_reason(kube: Kube) -> None:
    """Writes go over aiohttp: a 422 comes back as KubeError with the API server's message."""
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "fx-run-3-bundle", "namespace": NS}, "data": {}}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "Not_A_Name", "namespace": NS},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "x"}]}}}}
    with pytest.raises(KubeError) as refused:
        asyncio.run(kube.create_run_objects(secret, job))
    assert refused.value.status == 422
    assert "Not_A_Name" in str(refused.value)


def test_writes_share_one_session_while_open(kube: Kube) -> None:
    """The operator opens the session once; its writes then reuse its connections."""
    async def writes() -> None:
        await kube.open()
        try:
            for reason in ("First", "Second"):
                await kube.post_event({"apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
                                       "metadata": {"name": "e", "namespace": NS, "uid": "u"}},
                                      "Normal", reason, "message")
            with pytest.raises(KubeNotFound):
                await kube.patch_custom_status("executions", NS, "missing", {"phase": "Pending"})
        finally:
            await kube.close()
    asyncio.run(writes())
    events = CoreV1Api(kube.api_client).list_namespaced_event(NS).items
    assert sorted(e.reason for e in events) == ["First", "Second"]


def test_writes_carry_the_client_s_token_and_its_refreshes(
        kube: Kube, emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth header is asked of the client once per AUTH_HEADERS_SECONDS, not per write (its
    refresh hook rebuilds the configuration); a token the hook renews is used once that is up."""
    configuration = kube.api_client.configuration
    refreshes: list[str] = []

    def refresh(conf: Any) -> None:  # as the client's loaders do: renew, then set the key
        refreshes.append(token := f"token-{len(refreshes) + 1}")
        conf.api_key = {"BearerToken": token}
        conf.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.refresh_api_key_hook = refresh
    clock = [1000.0]
    monkeypatch.setattr(kube_storage.time, "monotonic", lambda: clock[0])
    involved = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": NS, "uid": "u"}}

    async def writes(*reasons: str) -> None:
        for reason in reasons:
            await kube.post_event(involved, "Normal", reason, "message")
    assert emulator.recorded_calls is not None
    emulator.recorded_calls.clear()
    asyncio.run(writes("One", "Two", "Three"))
    clock[0] += kube_storage.AUTH_HEADERS_SECONDS
    asyncio.run(writes("Four"))
    assert [call.token for call in emulator.recorded_calls if call.verb == "create"] == [
        "token-1", "token-1", "token-1", "token-2"]
    assert refreshes == ["token-1", "token-2"]
