"""Run the project's commands as a user would: separate processes, environment-configured."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, with the checkout importable even when the project is not installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FX_", "EF_ENV"))}
    paths = [str(REPO), str(REPO / "operator")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def fxctl(args: Sequence[str], *, env: Mapping[str, str], stdin: bytes | None = None,
          timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``fxctl ARGS`` as a separate process; output captured as text."""
    return subprocess.run([sys.executable, "-m", "fx_operator", *args], env=child_env(env),
                          input=stdin.decode() if stdin is not None else None,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def python_module(module: str, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                  stdin: bytes | None = None,
                  timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", module, *args], env=child_env(env),
                          input=stdin, capture_output=True, timeout=timeout, check=False)
