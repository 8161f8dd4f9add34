"""ferris_ef: the older script's imports work unchanged and read the same run as fx_ef."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ferris_ef
import fx_ef

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The seed's test_secrets.py, minus its argv part (which the executor provides on opt-in).
SEED_SCRIPT = """
from ferris_ef import get_secret, get_param

print(f"DB NAME: {get_secret('DB_NAME')}")
print(f"DB PASS: {get_secret('DB_PASS')}")

print(f"PACKAGE NAME: {get_param('package_name')}")
"""


def test_all_and_the_same_objects() -> None:
    assert sorted(ferris_ef.__all__) == ["context", "get_param", "get_secret"]
    assert ferris_ef.context is fx_ef.context
    assert ferris_ef.get_secret is fx_ef.get_secret
    assert ferris_ef.get_param is fx_ef.get_param


def test_the_docstring_says_why_argv_is_opt_in() -> None:
    doc = ferris_ef.__doc__ or ""
    assert "compat: ferris" in doc
    assert "sys.argv[1]" in doc
    assert "/proc" in doc


def test_the_seed_script_runs_unchanged(tmp_path: Path) -> None:
    bundle = {
        "format": 1, "run_id": "run-1",
        "package": {"name": "secrets_demo", "id": "default/secrets_demo"},
        "secrets": {"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"},
        "scopes": {"DB_NAME": "package", "DB_PASS": "package"},
    }
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    (tmp_path / "test_secrets.py").write_text(SEED_SCRIPT)
    result = subprocess.run(
        [sys.executable, "test_secrets.py"], cwd=tmp_path, capture_output=True, text=True,
        env={"FX_BUNDLE": str(tmp_path / "bundle.json"), "PYTHONPATH": str(PROJECT_ROOT)},
        check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "DB NAME: test_db", "DB PASS: supersecretpas$", "PACKAGE NAME: secrets_demo"]


def test_the_fx_ef_seed_script_runs_unchanged_in_local_mode(tmp_path: Path) -> None:
    (tmp_path / "ef_env.json").write_text(json.dumps({
        "params": {"package_name": "secrets_demo", "package_id": "1"},
        "secrets": {"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"}}))
    (tmp_path / "main.py").write_text(
        "from fx_ef import context\n\n"
        "print(f\"DB NAME: {context.secrets.get('DB_NAME')}\")\n"
        "print(f\"DB PASS: {context.secrets.get('DB_PASS')}\")\n\n"
        "print(f\"PACKAGE NAME: {context.params.get('package_name')}\")\n"
        "context.secrets.set(name=\"platform_secret\", value={\"somekey\":\"someval\"}, "
        "context=\"platform\")\n"
        "print(context.secrets.get('platform_secret'))\n")
    result = subprocess.run(
        [sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True,
        env={"EF_ENV": "local", "PYTHONPATH": str(PROJECT_ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "DB NAME: test_db", "DB PASS: supersecretpas$", "PACKAGE NAME: secrets_demo",
        "{'somekey': 'someval'}"]
