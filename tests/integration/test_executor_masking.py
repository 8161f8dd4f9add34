"""The executor's masking as a script meets it: values cut short by Python's own messages, a value
split across stdout and stderr, and secrets too short to mask named in a warning and the result."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from support.processes import python_module

from fx_ef import contract
from fx_ef.bundle import write_bundle_file
from fx_ef.masking import MIN_FRAGMENT_LENGTH

# 38 random-looking characters, no "*": a value long enough for the fragment rule.
TOKEN = "tok-9Qx2LmV7rB4nK8sD1fH6jW3pZ5cY0gT2aE"
LONG_TOKEN = (TOKEN * 8)[:300]


def _bundle(secrets: dict[str, Any]) -> dict[str, Any]:
    return {"format": contract.BUNDLE_FORMAT, "run_id": "run-1",
            "package": {"name": "pkg", "id": "default/pkg", "project": "default"},
            "entrypoint": "main.py", "compat": None, "params": {}, "config": {},
            "secrets": secrets, "scopes": dict.fromkeys(secrets, "package"), "channel": None,
            "allow_platform_write": False}


def _run(tmp_path: Path, script: str, secrets: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    package = tmp_path / "package"
    package.mkdir()
    (package / "main.py").write_text(textwrap.dedent(script))
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    write_bundle_file(secrets_dir, json.dumps(_bundle(secrets)).encode())
    run = python_module("fx_ef.executor", [
        "--bundle", str(secrets_dir / contract.BUNDLE_FILE_NAME), "--package-dir", str(package),
        "--result", str(tmp_path / "result.json")], timeout=60)
    return subprocess.CompletedProcess(run.args, run.returncode, run.stdout.decode(),
                                       run.stderr.decode())


def _result(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "result.json").read_text())


def _fragments(value: str) -> list[str]:
    return [value[i:i + MIN_FRAGMENT_LENGTH] for i in range(len(value) - MIN_FRAGMENT_LENGTH + 1)]


def test_a_long_value_in_int_s_error_message_leaks_no_fragment(tmp_path: Path) -> None:
    run = _run(tmp_path, """
        from fx_ef import context
        int(context.secrets.get("LONG_TOKEN"))
    """, {"LONG_TOKEN": LONG_TOKEN})

    assert run.returncode == 1
    assert "ValueError: invalid literal for int() with base 10: '***" in run.stderr
    shown = run.stdout + run.stderr + _result(tmp_path)["output_tail"]
    assert [fragment for fragment in _fragments(LONG_TOKEN) if fragment in shown] == []


def test_a_value_split_across_stdout_and_stderr_is_masked_where_each_part_is_long(
        tmp_path: Path) -> None:
    """As docs/security.md says: each stream is masked on its own; a part of 16 characters or
    more is masked on either stream, a shorter part shows."""
    run = _run(tmp_path, """
        import sys
        from fx_ef import context
        token = context.secrets.get("TOKEN")
        print("half:", token[:20], flush=True)
        print("half:", token[20:], file=sys.stderr, flush=True)
        print("most:", token[:30], flush=True)
        print("rest:", token[30:], file=sys.stderr, flush=True)
    """, {"TOKEN": TOKEN})

    assert run.returncode == 0, run.stderr
    assert run.stdout == "half: ***\nmost: ***\n"
    assert "half: ***\n" in run.stderr
    assert f"rest: {TOKEN[30:]}\n" in run.stderr  # 8 characters: below the fragment rule
    assert TOKEN[:20] not in run.stderr + run.stdout
    assert TOKEN[20:] not in run.stderr + run.stdout


def test_secrets_too_short_to_mask_are_named_in_a_warning_and_the_result(tmp_path: Path) -> None:
    secrets = {"PIN": "123", "DB": {"user": "ab", "password": "long-password-1"},
               "CERT": "a-long-first-line\nxy\n", "TOKEN": TOKEN, "FLAG": True}
    run = _run(tmp_path, f"""
        import json, os
        fd = int(os.environ[{contract.ENV_MASK_FD!r}])
        os.write(fd, json.dumps({{"name": "LATE", "value": "42"}}).encode() + b"\\n")
        print("done")
    """, secrets)

    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "too short to mask" in line]
    assert len(warnings) == 2, run.stderr
    assert warnings[0].endswith(": PIN, DB, CERT, FLAG")
    assert warnings[1].endswith(": LATE")
    assert _result(tmp_path)["unmasked_names"] == ["PIN", "DB", "CERT", "FLAG", "LATE"]
    for value in ("123", "long-password-1", "a-long-first-line", TOKEN):
        assert value not in run.stderr


def test_no_warning_when_every_secret_can_be_masked(tmp_path: Path) -> None:
    run = _run(tmp_path, "print('done')\n", {"TOKEN": TOKEN, "DB": {"password": "long-enough"}})
    assert run.returncode == 0
    assert "too short" not in run.stderr
    assert _result(tmp_path)["unmasked_names"] == []
