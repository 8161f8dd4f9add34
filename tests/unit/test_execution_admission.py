"""Which Package copy admission may use without reading the API (pure); when admission gives up,
and the status an Execution then gets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fx_operator.domain.conditions import Reason
from fx_operator.domain.execution_status import usable_from_watch
from fx_operator.domain.resources import Execution, ResourceHeader
from fx_operator.exceptions import StoreError
from fx_operator.handlers.executions import ADMISSION_TRIES, FORBIDDEN_TRIES, gives_up
from fx_operator.services.executions import ExecutionService, NotReadyYet
from fx_operator.storage.kube import KubeError


def _package(generation: int, ready: str | None, observed: int) -> dict[str, Any]:
    conditions = [] if ready is None else [
        {"type": "Ready", "status": ready, "observedGeneration": observed}]
    return {"metadata": {"generation": generation}, "status": {"conditions": conditions}}


@pytest.mark.parametrize(("package", "usable"), [
    (_package(2, "True", 2), True),
    (_package(2, "False", 2), False),   # refused: maybe fixed since, the watch may lag
    (_package(3, "True", 2), False),    # a newer generation not published yet
    (_package(1, None, 0), False),      # never handled
    ({"metadata": {"generation": 1}}, False),
])
def test_only_a_package_ready_for_its_generation_is_used_from_the_watch(
        package: dict[str, Any], usable: bool) -> None:
    assert usable_from_watch(ResourceHeader.model_validate(package)) is usable


# --- when admission gives up, and what the Execution then says ----------------------------------


@pytest.mark.parametrize(("error", "tries"), [
    (KubeError("reading packages team-a/x: 403 forbidden", 403), FORBIDDEN_TRIES),
    (KubeError("reading packages team-a/x: 401 Unauthorized", 401), FORBIDDEN_TRIES),
    (KubeError("creating the run objects: 500 etcd timeout", 500), ADMISSION_TRIES),
    (KubeError("creating the run objects: connection refused"), ADMISSION_TRIES),
    (StoreError("the store is down"), ADMISSION_TRIES),
    (NotReadyYet("Package team-a/x is not published yet"), ADMISSION_TRIES),
])
def test_admission_retries_a_refusal_briefly_and_anything_else_for_long(
        error: Exception, tries: int) -> None:
    assert [gives_up(error, retry) for retry in range(tries)] == [False] * (tries - 1) + [True]
    assert FORBIDDEN_TRIES < ADMISSION_TRIES


class _RunKeys:
    def __init__(self, fails: bool = False) -> None:
        self.finished: list[str] = []
        self.fails = fails

    def register(self, *args: Any, **kwargs: Any) -> bool:
        raise AssertionError("not expected")

    def finish(self, run_id: str) -> None:
        if self.fails:
            raise StoreError("the store is down")
        self.finished.append(run_id)


def _service(run_keys: _RunKeys) -> ExecutionService:
    nothing: Any = None
    return ExecutionService(nothing, run_keys, nothing, nothing, nothing, nothing, ca_pem="")


EXECUTION = Execution.model_validate({"apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
             "metadata": {"name": "nightly", "namespace": "team-a", "uid": "u-1", "generation": 1},
             "spec": {"package": "etl"}})


@pytest.mark.parametrize(("error", "reason", "says"), [
    (KubeError('reading packages team-a/etl: 403 packages.fx.dev "etl" is forbidden', 403),
     Reason.API_ERROR, "not allowed this call: grant it in the operator's RBAC"),
    (KubeError("creating the run objects: 500 etcd timeout", 500), Reason.API_ERROR,
     "the API server kept failing"),
    (StoreError("the store is down"), Reason.STORE_UNAVAILABLE, "the secret store kept failing"),
    (NotReadyYet("Package team-a/etl is not published yet"), Reason.PACKAGE_NOT_READY,
     "gave up waiting"),
])
def test_an_execution_admission_gave_up_on_fails_with_the_error(
        error: Exception, reason: Reason, says: str) -> None:
    run_keys = _RunKeys()
    outcome = asyncio.run(_service(run_keys).not_admitted(EXECUTION, error))
    status = outcome.status
    assert not outcome.ok and status["phase"] == "Failed"
    conditions = {c["type"]: c for c in status["conditions"]}
    for kind in ("Ready", "Succeeded"):
        assert (conditions[kind]["status"], conditions[kind]["reason"]) == ("False", str(reason))
        assert str(error) in conditions[kind]["message"] and says in conditions[kind]["message"]
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", reason)]
    assert run_keys.finished == ["run-u-1"]  # no Job will claim the run's key, if it has one


def test_an_execution_fails_even_when_its_run_cannot_be_closed() -> None:
    outcome = asyncio.run(_service(_RunKeys(fails=True)).not_admitted(
        EXECUTION, StoreError("the store is down")))
    assert outcome.status["phase"] == "Failed"
