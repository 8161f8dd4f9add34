"""The names of secrets too short to mask reach the Execution's status (never their values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from fx_operator.domain.execution_status import progress

CRD = Path(__file__).resolve().parents[2] / "crds" / "execution.yaml"


def _finished(result: dict[str, Any]) -> dict[str, Any]:
    execution = {"metadata": {"name": "e", "generation": 1},
                 "status": {"runId": "run-1", "phase": "Running", "steps": []}}
    pod = {"status": {
        "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [{"state": {"terminated": {"exitCode": 0,
                                                        "message": json.dumps(result)}}}]}}
    outcome = progress(execution, pod)
    assert outcome is not None
    return dict(outcome.status["result"])


def test_unmasked_names_from_the_executor_show_in_the_status() -> None:
    result = _finished({"output_tail": "pin 123\n", "output_truncated": False,
                        "unmasked_names": ["PIN", "DB"]})
    assert result == {"outputTail": "pin 123\n", "truncated": False,
                      "unmaskedSecrets": ["PIN", "DB"]}


def test_no_field_when_every_secret_was_masked() -> None:
    result = _finished({"output_tail": "", "output_truncated": False, "unmasked_names": []})
    assert "unmaskedSecrets" not in result


def test_the_crd_keeps_the_field() -> None:
    """A structural schema prunes what it does not list: the field must be in the CRD."""
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    field = status["properties"]["result"]["properties"]["unmaskedSecrets"]
    assert field["type"] == "array" and field["items"]["type"] == "string"
