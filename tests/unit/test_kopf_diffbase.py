"""The operator's kopf storages: the essence built without copying status first; Executions
handled as their status says, with nothing left in their annotations."""

from __future__ import annotations

from typing import Any, cast

import kopf
from fx_operator.handlers.lifecycle import ExecutionDiffBase, StatusFreeDiffBase, TraceFreeProgress


def _body() -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": "e", "namespace": "team-a", "uid": "u", "generation": 1,
                     "labels": {"team": "a"},
                     "annotations": {"fx.dev/last-handled-configuration": "{}", "note": "x"}},
        "spec": {"package": "etl", "params": {"day": "monday"}},
        "status": {"phase": "Pending", "manifest": {"S": {"scope": "package", "version": 1}},
                   "steps": [{"name": "Admitted", "phase": "Succeeded"}]}}
    return kopf.Body(cast(kopf.RawBody, raw))


def test_the_essence_is_kopf_s_own() -> None:
    ours = StatusFreeDiffBase(prefix="fx.dev", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="fx.dev", key="last-handled-configuration")
    body = _body()
    assert ours.build(body=body) == kopfs.build(body=body)
    assert "status" not in ours.build(body=body)


def test_fields_asked_for_from_status_are_kept() -> None:
    ours = StatusFreeDiffBase(prefix="fx.dev", key="last-handled-configuration")
    essence = ours.build(body=_body(), extra_fields=["status.phase"])
    assert essence["status"] == {"phase": "Pending"}


def test_the_body_is_not_changed() -> None:
    body = _body()
    StatusFreeDiffBase(prefix="fx.dev", key="last-handled-configuration").build(body=body)
    assert body["status"]["phase"] == "Pending"


def _package() -> kopf.Body:
    raw = {**_body(), "kind": "Package"}
    return kopf.Body(cast(kopf.RawBody, raw))


def test_an_execution_is_handled_once_it_has_a_phase() -> None:
    storage = ExecutionDiffBase(prefix="fx.dev", key="last-handled-configuration")
    admitted = _body()
    assert storage.fetch(body=admitted) == storage.build(body=admitted)
    new = kopf.Body(cast(kopf.RawBody, {**_body(), "status": {}}))
    assert storage.fetch(body=new) is None  # the annotation on it is not what counts
    patch = kopf.Patch()
    storage.store(body=new, patch=patch, essence=storage.build(body=new))
    assert dict(patch) == {}


def test_other_kinds_keep_the_annotation() -> None:
    storage = ExecutionDiffBase(prefix="fx.dev", key="last-handled-configuration")
    package = kopf.Body(cast(kopf.RawBody, {**_package(), "metadata": {
        **_package()["metadata"], "annotations": {}}}))
    assert storage.fetch(body=package) is None
    patch = kopf.Patch()
    storage.store(body=package, patch=patch, essence=storage.build(body=package))
    assert "fx.dev/last-handled-configuration" in patch["metadata"]["annotations"]


def _progress(body: kopf.Body, *, finished: bool) -> kopf.Patch:
    storage = TraceFreeProgress(prefix="fx.dev")
    patch = kopf.Patch()
    storage.store(key=kopf.HandlerId("admission"), record={"started": "now", "retries": 1},
                  body=body, patch=patch)
    if finished:
        storage.purge(key=kopf.HandlerId("admission"), body=body, patch=patch)
    return patch


def test_a_handler_done_at_once_leaves_no_annotation() -> None:
    assert dict(_progress(_body(), finished=True)) == {}


def test_a_handler_to_retry_keeps_its_progress_and_the_marker() -> None:
    annotations = _progress(_body(), finished=False)["metadata"]["annotations"]
    assert set(annotations) == {"fx.dev/admission", "fx.dev/kopf-managed"}


def test_the_marker_stays_beside_other_annotations_of_the_prefix() -> None:
    storage = TraceFreeProgress(prefix="fx.dev")
    patch = kopf.Patch()
    patch["metadata"] = {"annotations": {"fx.dev/last-handled-configuration": "{}"}}
    storage.store(key=kopf.HandlerId("admission"), record={"started": "now"}, body=_body(),
                  patch=patch)
    storage.purge(key=kopf.HandlerId("admission"), body=_body(), patch=patch)
    assert set(patch["metadata"]["annotations"]) == {"fx.dev/last-handled-configuration",
                                                     "fx.dev/kopf-managed"}
