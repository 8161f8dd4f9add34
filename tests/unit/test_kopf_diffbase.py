"""The operator's diffbase storage: kopf's essence, built without copying status first."""

from __future__ import annotations

from typing import Any, cast

import kopf
from fx_operator.handlers.lifecycle import StatusFreeDiffBase


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
