"""An Execution's admission writes in one transaction, on the embedded store and on PostgreSQL:
the run key, the resolution and their two audit records commit together, once, or not at all.

The Kubernetes side is a recorder (the admission's store work is what is looked at here); the
store, the key ring, the secret service and the run keys are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from fx_operator.config import Settings
from fx_operator.domain import job_spec
from fx_operator.domain.resources import Execution, Package
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import StoreError
from fx_operator.services.executions import ExecutionService, run_id_of
from fx_operator.services.packages import PackageService
from fx_operator.services.run_keys import ACTION_REGISTER, RunKeyService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import run_keys
from fx_operator.storage.backends import Transaction

NS, PACKAGE = "team-a", "etl"
EXECUTION = Execution.model_validate({
    "apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
    "metadata": {"name": "nightly", "namespace": NS, "uid": "u-1", "generation": 1},
    "spec": {"package": PACKAGE}})
RUN_ID = run_id_of(EXECUTION)
JOB = job_spec.job_name("nightly")
PACKAGE_BODY = Package.model_validate({
    "apiVersion": "fx.dev/v1alpha1", "kind": "Package",
    "metadata": {"name": PACKAGE, "namespace": NS, "generation": 1},
    "spec": {"scripts": [{"name": "main.py", "content": "print('x')\n"}],
             "secrets": {"names": [{"name": "DB_PASS"}, {"name": "API_TOKEN"}]}},
    "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}})

_FAIL_RESOLVE_AUDIT = {
    "sqlite": ["CREATE TRIGGER fail_resolve_audit BEFORE INSERT ON audit "
               "WHEN NEW.action = 'resolve' BEGIN SELECT RAISE(ABORT, 'injected'); END"],
    "postgresql": [
        "CREATE FUNCTION fail_resolve_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'injected'; END $$",
        "CREATE TRIGGER fail_resolve_audit BEFORE INSERT ON audit FOR EACH ROW "
        "WHEN (NEW.action = 'resolve') EXECUTE FUNCTION fail_resolve_audit()"],
}
_DROP_TRIGGER = {"sqlite": ["DROP TRIGGER fail_resolve_audit"],
                 "postgresql": ["DROP TRIGGER fail_resolve_audit ON audit",
                                "DROP FUNCTION fail_resolve_audit()"]}


class _Kube:
    """The API calls of an admission, recorded: no Job exists before, each create succeeds."""

    def __init__(self) -> None:
        self.created: list[str] = []

    async def apply_config_map(self, body: dict[str, Any]) -> None:
        pass

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}} if name in self.created else None

    async def create_run_objects(self, secret: dict[str, Any], job: dict[str, Any]) -> bool:
        self.created.append(job["metadata"]["name"])
        return True


def _executions(service: SecretService, settings: Settings) -> tuple[ExecutionService, _Kube]:
    kube: Any = _Kube()
    pod_settings = job_spec.RunPodSettings(
        runtime_image="fx-runtime:test", broker_url=settings.broker_url,
        broker_audience=settings.broker_audience,
        broker_ca_configmap=settings.broker_ca_configmap)
    executions = ExecutionService(service, RunKeyService(service.store, service.keys), kube,
                                  PackageService(service, kube), settings, pod_settings,
                                  ca_pem="")
    return executions, kube


def _admit(executions: ExecutionService) -> Any:
    outcome = asyncio.run(executions.admit(EXECUTION, PACKAGE_BODY))
    assert outcome is not None
    return outcome


def _written(service: SecretService) -> tuple[bool, list[str]]:
    """Whether the run has a key row, and the actions audited for it."""
    with service.store.transaction() as tx:
        registered = run_keys.get(tx, RUN_ID) is not None
        actions = sorted(r.action for r in service.store.audit_records(tx, run_id=RUN_ID))
    return registered, actions


@pytest.fixture
def seeded(service: SecretService) -> SecretService:
    service.set_many(Owner.of(Scope.PACKAGE, NS, PACKAGE), {"DB_PASS": "s3cret"})
    service.set(Owner.of(Scope.PROJECT, NS), "API_TOKEN", {"token": "t"})
    return service


def test_a_failed_audit_write_leaves_no_run_key_and_no_audit(
        seeded: SecretService, store_settings: Settings) -> None:
    executions, kube = _executions(seeded, store_settings)
    dialect = seeded.store.backend.dialect
    with seeded.store.transaction() as tx:
        for sql in _FAIL_RESOLVE_AUDIT[dialect]:
            tx.execute(sql)
    with pytest.raises(StoreError, match="injected"):
        _admit(executions)
    assert _written(seeded) == (False, [])  # neither the key nor its registration's record
    assert kube.created == []
    with seeded.store.transaction() as tx:
        for sql in _DROP_TRIGGER[dialect]:
            tx.execute(sql)
    outcome = _admit(executions)  # the retry admits it, as the first try would have
    assert outcome.status["phase"] == "Pending" and kube.created == [JOB]
    assert _written(seeded) == (True, sorted(["resolve", ACTION_REGISTER]))


def _counting(commits: list[str], name: str,
              opened: Callable[..., AbstractContextManager[Transaction]]
              ) -> Callable[..., AbstractContextManager[Transaction]]:
    @contextmanager
    def transaction(*args: Any, **kwargs: Any) -> Iterator[Transaction]:
        with opened(*args, **kwargs) as tx:
            yield tx
        commits.append(name)  # the block ended without an error: it committed
    return transaction


def test_an_admission_commits_once(seeded: SecretService, store_settings: Settings,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    executions, kube = _executions(seeded, store_settings)
    backend = seeded.store.backend
    commits: list[str] = []
    monkeypatch.setattr(backend, "transaction",
                        _counting(commits, "transaction", backend.transaction))
    for name in ("read_then_write", "execute_alone"):  # each one commit of its own
        alone = getattr(backend, name)
        monkeypatch.setattr(backend, name, lambda *a, _f=alone, _n=name, **k: (
            commits.append(_n), _f(*a, **k))[1])
    outcome = _admit(executions)
    monkeypatch.undo()
    assert outcome.status["phase"] == "Pending" and kube.created == [JOB]
    assert sorted(outcome.status["manifest"]) == ["API_TOKEN", "DB_PASS"]
    assert commits == ["transaction"]
    assert _written(seeded) == (True, sorted(["resolve", ACTION_REGISTER]))


def test_on_postgresql_the_key_and_both_records_are_one_transaction(
        seeded: SecretService, store_settings: Settings) -> None:
    """The server's own word: every row the admission wrote carries the same transaction id."""
    if seeded.store.backend.dialect != "postgresql":
        pytest.skip("xmin is PostgreSQL's")
    executions, _ = _executions(seeded, store_settings)
    _admit(executions)
    with seeded.store.transaction() as tx:
        writers = tx.execute("SELECT xmin::text FROM run_keys WHERE run_id = :run "
                             "UNION ALL SELECT xmin::text FROM audit WHERE run_id = :run",
                             {"run": RUN_ID})
    assert len(writers) == 3 and len({w[0] for w in writers}) == 1


def test_a_run_with_a_missing_secret_is_closed_in_the_same_commit(
        service: SecretService, store_settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to seal: the key is registered and erased at once, the refusal audited, in the
    one transaction of the admission."""
    executions, kube = _executions(service, store_settings)
    commits: list[str] = []
    backend = service.store.backend
    monkeypatch.setattr(backend, "transaction",
                        _counting(commits, "transaction", backend.transaction))
    outcome = _admit(executions)
    monkeypatch.undo()
    assert outcome.status["phase"] == "Failed" and kube.created == []
    assert commits == ["transaction"]
    with service.store.transaction() as tx:
        record = run_keys.get(tx, RUN_ID)
    assert record is not None and record.finished_at is not None and record.wrapped_key is None
