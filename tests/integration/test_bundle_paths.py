"""The pod contract from both sides: the bundle the operator seals for a pod (``ExecutionService``,
its key delivered by ``RunKeyService.claim`` as the broker delivers it) and the bundle ``fxctl run``
seals (``LocalRunner``) are the same type, from the same writer, and open and read back equal,
through the reader a run uses. On the embedded store and on PostgreSQL."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fx_operator.config import Settings
from fx_operator.domain.job_spec import RunPlan, job_name
from fx_operator.domain.package_definition import PackageDefinition
from fx_operator.domain.scopes import Owner
from fx_operator.endpoints.local_channel import LocalChannel
from fx_operator.services import executions, local_run
from fx_operator.services.executions import ExecutionService
from fx_operator.services.local_run import LocalRunner, RunOptions, load_package_folder
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.kube import PodIdentity

from fx_ef.bundle import open_bundle
from fx_ef.run_bundle import BundleChannel, RunBundle

PROJECT, PACKAGE = "team-a", "etl"
SCRIPT = textwrap.dedent("""\
    from fx_ef import context
    found = {"DB_PASS": context.secrets.get("DB_PASS"),
             "API_TOKEN": context.secrets.get("API_TOKEN"),
             "SIGNING_KEY": context.secrets.get("SIGNING_KEY")}
    for name, value in found.items():
        print(name, "delivered" if value else "missing")
""")
PARAMS = {"day": "monday", "limit": 10}
CONFIG = {"region": "eu"}
VALUES = {("package", "DB_PASS"): "pkg-value-8d1c", ("project", "API_TOKEN"): "proj-value-51ae",
          ("platform", "SIGNING_KEY"): {"kid": "plat-value-07f2"}}


class _Seals:
    """Every bundle a service hands to ``seal_bundle``, with the key and the sealed bytes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sealed: list[tuple[Any, bytes, bytes]] = []

    def __call__(self, bundle: Any, key: bytes) -> bytes:
        sealed: bytes = self.real(bundle, key)
        self.sealed.append((bundle, key, sealed))
        return sealed


@pytest.fixture
def stored(service: SecretService) -> SecretService:
    for (scope, name), value in VALUES.items():
        service.set(Owner.of(scope, PROJECT, PACKAGE), name, value)
    return service


def _operator_path(service: SecretService, settings: Settings,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Any, RunBundle]:
    """What admission seals for a pod, and what the pod reads after claiming its key."""
    seals = _Seals(executions.seal_bundle)
    monkeypatch.setattr(executions, "seal_bundle", seals)
    run_keys = RunKeyService(service.store, service.keys)
    nothing: Any = None  # admission's sealing step talks to neither the API nor the packages
    admission = ExecutionService(service, run_keys, nothing, nothing, settings, nothing,
                                 ca_pem="")
    definition = PackageDefinition(name=PACKAGE, scripts={"main.py": SCRIPT},
                                   entrypoint="main.py", params=PARAMS, config=CONFIG)
    run_id = "run-operator-0001"
    plan = RunPlan(namespace=PROJECT, execution="nightly", execution_uid="uid-1",
                   package=PACKAGE, run_id=run_id, entrypoint="main.py",
                   script_names=("main.py",))
    sealed = admission._register_and_seal(plan, definition, dict(PARAMS),
                                          admission.needs(definition), replace=False)
    assert isinstance(sealed, tuple), sealed
    [(written, sealing_key, sealed_bytes)] = seals.sealed
    assert base64.b64decode(sealed[0]) == sealed_bytes  # what goes into the run's Secret
    pod = PodIdentity(PROJECT, f"{job_name('nightly')}-x1", "uid-pod-1", "default")
    key = run_keys.claim(run_id, pod, run_id)  # the broker's one delivery
    assert key == sealing_key
    return written, RunBundle.from_json(open_bundle(sealed_bytes, key, run_id))


def _local_path(service: SecretService, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> tuple[Any, RunBundle]:
    """What ``fxctl run`` seals for its init step, read back the same way."""
    seals = _Seals(local_run.seal_bundle)
    monkeypatch.setattr(local_run, "seal_bundle", seals)
    folder = tmp_path / "etl"
    folder.mkdir()
    (folder / "main.py").write_text(SCRIPT)
    (folder / "package.yaml").write_text(
        f"name: {PACKAGE}\nproject: {PROJECT}\nparams: {{day: monday}}\n"
        "config: {region: eu}\n")
    record = LocalRunner(service, channel=LocalChannel).run(load_package_folder(folder),
                                                            RunOptions(params={"limit": 10}))
    assert record.exit_code == 0, record.output_tail
    assert record.output_tail.splitlines() == [
        "DB_PASS delivered", "API_TOKEN delivered", "SIGNING_KEY delivered"]
    [(written, key, sealed_bytes)] = seals.sealed
    return written, RunBundle.from_json(open_bundle(sealed_bytes, key, record.run_id))


def test_both_paths_write_one_type_that_round_trips(
        stored: SecretService, store_settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_written, cluster_read = _operator_path(stored, store_settings, monkeypatch)
    local_written, local_read = _local_path(stored, tmp_path, monkeypatch)

    assert type(cluster_written) is type(local_written) is RunBundle
    assert cluster_read == cluster_written
    assert local_read == local_written
    assert cluster_read.to_json() == cluster_written.to_json()
    assert local_read.to_json() == local_written.to_json()

    # The same package, secrets and params: the same bundle but for the run and its channel.
    def shared(bundle: RunBundle) -> dict[str, Any]:
        return {k: v for k, v in bundle.to_dict().items() if k not in ("run_id", "channel")}

    assert shared(cluster_read) == shared(local_read)
    assert cluster_read.secrets == {name: value for (_, name), value in VALUES.items()}
    assert cluster_read.scopes == {name: scope for (scope, name) in VALUES}
    assert cluster_read.params == PARAMS and cluster_read.config == CONFIG
    assert cluster_read.channel == BundleChannel(store_settings.broker_url,
                                                 token_file="/run/fx/token/token",
                                                 ca_file="/run/fx/ca/ca.crt")
    assert local_read.channel is not None and local_read.channel.url.startswith("unix:/")
    assert local_read.channel.token
