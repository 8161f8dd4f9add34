"""The operator's Kubernetes calls (storage/kube.py) against the emulated API server over HTTP:
the idempotent writes admission relies on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fx_operator.storage.kube import Kube, KubeError, KubeNotFound, load_api_client
from kubernetes.client import BatchV1Api, CoreV1Api
from support.kube_emulator import KubeEmulator, KubeEmulatorServer

NS = "team-a"


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kube]:
    with KubeEmulatorServer(KubeEmulator(), kubeconfig=tmp_path / "kubeconfig") as server:
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
