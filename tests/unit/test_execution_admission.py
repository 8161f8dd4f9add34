"""Which Package copy admission may use without reading the API (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from fx_operator.services.executions import usable_from_watch


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
    assert usable_from_watch(package) is usable
