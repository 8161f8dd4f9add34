"""The typed resources (domain/resources.py): what the API server stores parses; a malformed
object (one that slipped past the CRD's schema) is refused naming the field, never a value, and
the handlers report it on the object instead of failing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from fx_operator.domain.conditions import Reason
from fx_operator.domain.resources import (
    Execution,
    InvalidResource,
    Package,
    Schedule,
    ScopedSecret,
    not_ready,
    parse,
)
from fx_operator.domain.schedules import parse_schedule_spec
from fx_operator.handlers.executions import execution_created
from fx_operator.handlers.packages import package_changed, published_packages
from fx_operator.handlers.scoped_secrets import scoped_secret_changed, scoped_secret_deleted
from fx_operator.services.executions import ExecutionService
from fx_operator.services.metrics import Metrics

CANARY = "canary-value-never-shown-42"
META = {"name": "x", "namespace": "team-a", "uid": "u-1", "generation": 3,
        "managedFields": [{"manager": "kubectl"}], "resourceVersion": "7"}
READY = {"type": "Ready", "status": "True", "reason": "ScriptsPublished", "message": "ok",
         "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}


def _body(kind: str, spec: Any, status: Any = None) -> dict[str, Any]:
    body = {"apiVersion": "fx.dev/v1alpha1", "kind": kind, "metadata": META, "spec": spec}
    if status is not None:
        body["status"] = status
    return body


def test_objects_as_the_api_server_stores_them_parse() -> None:
    package = parse(Package, _body("Package", {
        "scripts": [{"name": "main.py", "content": "print(1)"}], "timeoutSeconds": 60,
        "secrets": {"names": [{"name": "DB_PASS", "scope": "project"}]}, "params": {"a": [1]}},
        {"conditions": [READY], "scriptCount": 1, "secretsFound": ["DB_PASS"]}))
    assert (package.metadata.name, package.metadata.generation) == ("x", 3)
    assert package.spec.timeout_seconds == 60 and package.spec.secrets.names[0].scope == "project"
    assert package.status.condition("Ready") is not None
    assert package.status.condition_dicts() == [READY]
    secret = parse(ScopedSecret, _body("ScopedSecret", {
        "scope": "package", "package": "etl", "encryptedData": {"A": "c2VhbGVk"}},
        {"secrets": [{"name": "A", "version": 2}], "secretCount": 1}))
    assert secret.spec.encrypted_data == {"A": "c2VhbGVk"} and secret.status.secrets[0].version == 2
    execution = parse(Execution, _body("Execution", {"package": "etl", "params": {"k": "v"}}, {
        "phase": "Running", "runId": "run-u-1", "manifest": {"A": {"scope": "package",
                                                                  "version": 2}},
        "steps": [{"name": "Admitted", "phase": "Succeeded"}]}))
    assert (execution.spec.package, execution.status.run_id) == ("etl", "run-u-1")
    schedule = parse(Schedule, _body("Schedule", {"package": "etl", "schedule": "@daily"}))
    spec = parse_schedule_spec(schedule.spec)  # the one validator of a Schedule's spec
    assert (spec.concurrency_policy, spec.suspend) == ("Allow", False)


@pytest.mark.parametrize(("model", "kind", "spec", "where", "reason"), [
    (Execution, "Execution", {"package": "etl", "params": "not an object"}, "spec.params",
     Reason.INVALID_SPEC),
    (Execution, "Execution", {"package": "etl", "timeoutSeconds": "60"}, "spec.timeoutSeconds",
     Reason.INVALID_SPEC),
    (Package, "Package", {"scripts": [{"name": "main.py", "content": [CANARY]}]},
     "spec.scripts.0.content", Reason.INVALID_SPEC),
    (Package, "Package", {"scripts": [{"name": "main.py", "content": ""}], "image": 5},
     "spec.image", Reason.INVALID_SPEC),
    (ScopedSecret, "ScopedSecret", {"scope": "project", "encryptedData": {"A": [CANARY]}},
     "spec.encryptedData.A", Reason.INVALID_SECRET),
    (ScopedSecret, "ScopedSecret", {"scope": "galaxy", "encryptedData": {"A": "x"}},
     "spec.scope", Reason.INVALID_SECRET),
])
def test_a_malformed_object_is_refused_naming_the_field_never_a_value(
        model: type[Any], kind: str, spec: dict[str, Any], where: str, reason: Reason) -> None:
    with pytest.raises(InvalidResource) as refused:
        parse(model, _body(kind, spec, {"conditions": [READY]}))
    assert [p.where for p in refused.value.problems] == [where]
    assert refused.value.reason == reason
    assert str(refused.value).startswith(f"invalid {kind} x: {where}: ")
    assert CANARY not in str(refused.value)
    header = refused.value.header  # what the refusal is reported on
    assert (header.metadata.name, header.generation) == ("x", 3)
    assert header.status.condition_dicts() == [READY]


def test_a_refusal_says_ready_false_for_the_generation_it_describes() -> None:
    with pytest.raises(InvalidResource) as refused:
        parse(Package, _body("Package", {"scripts": "main.py"}, {"conditions": [READY]}))
    outcome = not_ready(refused.value.header, refused.value, Reason.INVALID_SPEC)
    assert not outcome.ok and outcome.status["observedGeneration"] == 3
    [ready] = outcome.status["conditions"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "False", "InvalidSpec", 3)
    assert "spec.scripts" in ready["message"]
    assert [(e.type, e.reason, e.message) for e in outcome.events] == [
        ("Warning", Reason.INVALID_SPEC, ready["message"])]


def test_a_malformed_status_still_leaves_the_metadata_to_report_on() -> None:
    body = _body("ScopedSecret", {"scope": "project", "encryptedData": {"A": 1}},
                 {"conditions": [{"type": 5}]})
    with pytest.raises(InvalidResource) as refused:
        parse(ScopedSecret, body)
    assert {p.where for p in refused.value.problems} == {
        "spec.encryptedData.A", "status.conditions.0.type", "status.conditions.0.status"}
    assert refused.value.header.metadata.uid == "u-1"
    assert refused.value.header.status.conditions == []


def test_a_key_that_would_break_a_log_line_is_escaped() -> None:
    with pytest.raises(InvalidResource) as refused:
        parse(ScopedSecret, _body("ScopedSecret", {"scope": "project",
                                                   "encryptedData": {"\ud800": 1}}))
    str(refused.value).encode("utf-8")  # no lone surrogate: printable to a log


# --- the handlers: a malformed object gets a status and an Event, the handler does not fail ------


class _Kube:
    """Records the Events the handlers post (the API's edge, storage/kube.py)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def post_event(self, involved: dict[str, Any], event_type: str, reason: str,
                         message: str) -> None:
        self.events.append((event_type, reason, message))


def _memo() -> tuple[Any, _Kube]:
    kube = _Kube()
    nothing: Any = None
    executions = ExecutionService(nothing, nothing, nothing, nothing, nothing, nothing,
                                  ca_pem="")
    async def never(resource: Any) -> Any:
        raise AssertionError(f"a malformed object reached its service: {resource}")
    app = SimpleNamespace(kube=kube, metrics=Metrics(), executions=executions,
                          packages=SimpleNamespace(reconcile=never),
                          scoped_secrets=SimpleNamespace(reconcile=never, remove=never))
    return SimpleNamespace(app=app), kube


def _handled(handler: Any, body: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any],
                                                                       _Kube]:
    memo, kube = _memo()
    patch = kopf.Patch()
    asyncio.run(handler(body=kopf.Body(body), patch=patch, memo=memo, **kwargs))
    return dict(patch.get("status") or {}), kube


def test_a_malformed_execution_fails_naming_the_field() -> None:
    """Before: admission went on with a string for params and failed further on (here: with
    collaborators it never reaches) instead of saying what is wrong."""
    status, kube = _handled(execution_created, _body("Execution", {
        "package": "etl", "params": "not an object"}))
    assert status["phase"] == "Failed"
    conditions = {c["type"]: c for c in status["conditions"]}
    for kind in ("Ready", "Succeeded"):
        assert conditions[kind]["reason"] == "InvalidSpec"
        assert "spec.params" in conditions[kind]["message"]
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "InvalidSpec")]


def test_a_malformed_execution_already_failed_is_left_as_it_is() -> None:
    status, kube = _handled(execution_created, _body("Execution", {"params": 1},
                                                     {"phase": "Failed"}))
    assert status == {} and kube.events == []


@pytest.mark.parametrize(("handler", "kind", "spec", "where", "reason"), [
    (package_changed, "Package", {"scripts": [{"name": "main.py", "content": ""}], "image": 5},
     "spec.image", "InvalidSpec"),
    (scoped_secret_changed, "ScopedSecret", {"scope": "project", "encryptedData": {"A": 1}},
     "spec.encryptedData.A", "InvalidSecret"),
])
def test_a_malformed_package_or_scoped_secret_is_not_ready_naming_the_field(
        handler: Any, kind: str, spec: dict[str, Any], where: str, reason: str) -> None:
    status, kube = _handled(handler, _body(kind, spec))
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert where in ready["message"]
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", reason)]


def test_a_malformed_scoped_secret_deleted_takes_nothing_out() -> None:
    memo, _ = _memo()
    asyncio.run(scoped_secret_deleted(
        body=kopf.Body(_body("ScopedSecret", {"scope": "project", "encryptedData": {"A": 1}})),
        memo=memo, logger=SimpleNamespace(warning=lambda *a: None)))


def test_the_package_index_keeps_parsed_packages_only() -> None:
    good = _body("Package", {"scripts": [{"name": "main.py", "content": ""}]})
    [(key, package)] = published_packages(body=kopf.Body(good)).items()
    assert key == ("team-a", "x") and isinstance(package, Package)
    assert published_packages(body=kopf.Body(_body("Package", {"scripts": 1}))) == {}
