"""`fxctl operator`: how its flags reach kopf (kopf itself is not started)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from click.testing import CliRunner
from fx_operator.cli.cluster import operator


@pytest.fixture
def kopf_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    return calls


def _run(*args: str) -> Any:
    return CliRunner().invoke(operator, list(args), catch_exceptions=False)


def test_standalone_and_cluster_wide_by_default(kopf_run: list[dict[str, Any]]) -> None:
    assert _run().exit_code == 0
    (call,) = kopf_run
    assert call["standalone"] is True and call["clusterwide"] is True
    assert call["namespaces"] == [] and call["priority"] == 0
    assert call["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"


def test_watched_namespaces_and_peering(kopf_run: list[dict[str, Any]]) -> None:
    assert _run("-n", "team-a", "--namespace", "fx-system", "--peering", "fx",
                "--priority", "7").exit_code == 0
    (call,) = kopf_run
    assert call["clusterwide"] is False and call["namespaces"] == ["team-a", "fx-system"]
    assert call["standalone"] is False and call["peering_name"] == "fx"
    assert call["priority"] == 7


def test_a_random_priority_for_replicas_that_cannot_be_numbered(
        kopf_run: list[dict[str, Any]]) -> None:
    for _ in range(5):
        assert _run("--peering", "fx", "--priority", "random").exit_code == 0
    priorities = [call["priority"] for call in kopf_run]
    assert all(isinstance(p, int) and 1 <= p < 2**31 for p in priorities)
    assert len(set(priorities)) > 1  # 5 draws from 2**31 values: a tie is not a real risk


def test_a_priority_is_an_integer_or_random(kopf_run: list[dict[str, Any]]) -> None:
    refused = CliRunner().invoke(operator, ["--priority", "high"])
    assert refused.exit_code == 2 and "neither an integer nor 'random'" in refused.output
    assert kopf_run == []
