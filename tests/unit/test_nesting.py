"""How deep a tenant's free-form JSON may nest: measured without recursion, refused with the field
named, both in a Package's spec and at an Execution's admission (before anything is stored)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fx_operator.domain.conditions import Reason
from fx_operator.domain.nesting import MAX_DEPTH, RECURSION_LIMIT, depth, too_deep
from fx_operator.domain.package_definition import package_definition
from fx_operator.domain.resources import Execution
from fx_operator.exceptions import ValidationError
from fx_operator.services.executions import ExecutionService

SCRIPTS = [{"name": "main.py", "content": "print(1)\n"}]


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("value", "levels"), [
    (1, 0), ("x", 0), (None, 0), ({}, 1), ([], 1), ({"a": 1, "b": [1, {"c": [2]}]}, 4),
    (nested(5), 5), ([[[[]]]], 4),
])
def test_depth_counts_levels_of_objects_and_arrays(value: Any, levels: int) -> None:
    assert depth(value) == levels


def test_depth_measures_far_beyond_the_interpreters_recursion_limit() -> None:
    assert depth(nested(200_000)) == 200_000  # iterative: no RecursionError


def test_too_deep_names_the_depth_and_the_limit() -> None:
    assert too_deep(nested(MAX_DEPTH)) is None
    assert too_deep(nested(MAX_DEPTH + 1)) == \
        f"is nested {MAX_DEPTH + 1} levels deep; at most {MAX_DEPTH} are allowed"
    assert RECURSION_LIMIT > 10_000  # the API server stores JSON up to 10,000 levels deep


@pytest.mark.parametrize("field", ["params", "config", "resources"])
def test_a_package_with_a_field_nested_too_deep_is_refused_naming_it(field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        package_definition("p", {"scripts": SCRIPTS, field: {"x": nested(1_000)}})
    assert [(p.where, p.what) for p in refused.value.problems] == [
        (f"spec.{field}", f"is nested 1001 levels deep; at most {MAX_DEPTH} are allowed")]
    package_definition("p", {"scripts": SCRIPTS, field: {"x": nested(MAX_DEPTH - 1)}})


def test_an_execution_with_params_nested_too_deep_fails_at_admission() -> None:
    """Before its Package is read or any key registered: the service's collaborators are None."""
    nothing: Any = None
    service = ExecutionService(nothing, nothing, nothing, nothing, nothing, nothing, ca_pem="")
    execution = {"metadata": {"name": "deep", "namespace": "team-a", "uid": "u-1",
                              "generation": 1},
                 "spec": {"package": "etl", "params": {"x": nested(5_000)}}}
    outcome = asyncio.run(service.admit(Execution.model_validate(execution)))
    assert outcome is not None and outcome.status["phase"] == "Failed"
    (ready,) = [c for c in outcome.status["conditions"] if c["type"] == "Ready"]
    assert (ready["reason"], ready["message"]) == (
        str(Reason.INVALID_SPEC),
        f"spec.params is nested 5001 levels deep; at most {MAX_DEPTH} are allowed")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", Reason.INVALID_SPEC)]
