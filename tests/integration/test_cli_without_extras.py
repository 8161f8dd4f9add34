"""``fxctl`` after a plain ``pip install`` (no ``operator`` extra), in a virtualenv of its own.

The commands that need the extra say which extra to install, in one line, instead of a
``ModuleNotFoundError`` traceback; the commands that do not need it work.
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest
from support.processes import REPO

EXAMPLES = REPO / "examples"
HINT = "pip install 'fx-executor[operator]'"


@pytest.fixture(scope="module")
def plain_fxctl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the project installed without extras (pip's cache makes it quick)."""
    where = tmp_path_factory.mktemp("plain-venv")
    venv.create(where, with_pip=True)
    done = subprocess.run([str(where / "bin" / "pip"), "install", "--quiet",
                           "--disable-pip-version-check", "-e", str(REPO)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    python = where / "bin" / "python"
    for module in ("kopf", "kubernetes", "aiohttp"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                               check=False)
        assert probe.returncode != 0, f"{module} is installed: the test would prove nothing"
    return where / "bin" / "fxctl"


def _fxctl(fxctl: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(fxctl), *args], env={"FX_HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("args", [
    ["operator"],
    ["run", "hello", "-n", "team-a"],
    ["seal", str(EXAMPLES / "hello" / "secrets.json"), "-n", "team-a", "--package", "hello"],
])
def test_a_command_that_needs_the_extra_says_which(plain_fxctl: Path, tmp_path: Path,
                                                   args: list[str]) -> None:
    done = _fxctl(plain_fxctl, tmp_path / "home", *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert HINT in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_core_commands_work_without_it(plain_fxctl: Path, tmp_path: Path) -> None:
    done = _fxctl(plain_fxctl, tmp_path / "home", "run", str(EXAMPLES / "hello"))
    assert done.returncode == 0, done.stderr
    listed = _fxctl(plain_fxctl, tmp_path / "home", "secrets", "list")
    assert listed.returncode == 0, listed.stderr
