"""`fxctl secrets set --project $'team-a\\n'` is refused, not stored as a distinct owner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fx_operator.cli.main import cli
from fx_operator.exceptions import ValidationError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:cli-test"}


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_set_refuses_a_project_ending_in_a_line_break(env: dict[str, str], ending: str) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    refused = runner.invoke(cli, ["secrets", "set", "X", "v", "--scope", "project",
                                  "--project", "team-a" + ending], env=env, standalone_mode=False)
    assert isinstance(refused.exception, ValidationError), refused.output
    message = str(refused.exception)
    assert "project" in message and repr("team-a" + ending) in message

    stored = runner.invoke(cli, ["secrets", "set", "X", "v", "--scope", "project",
                                 "--project", "team-a"], env=env, standalone_mode=False)
    assert stored.exit_code == 0, stored.output
    listed = runner.invoke(cli, ["secrets", "list", "--json"], env=env, standalone_mode=False)
    assert {(r["name"], r["project"]) for r in json.loads(listed.output)} == {("X", "team-a")}
