"""The run's two steps as processes: the init step (sealed bundle to tmpfs file), the executor."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from support.processes import child_env, python_module

from fx_ef import contract
from fx_ef.bundle import BundleError, new_run_key, open_bundle, seal_bundle, write_bundle_file

CANARY = "canary-7f3a9c-do-not-leak"


def bundle_for(run_id: str = "run-1", *, secrets: dict[str, Any] | None = None,
               entrypoint: str = "main.py", compat: str | None = None,
               params: dict[str, Any] | None = None) -> dict[str, Any]:
    secrets = {"CANARY": CANARY} if secrets is None else secrets
    return {"format": contract.BUNDLE_FORMAT, "run_id": run_id,
            "package": {"name": "pkg", "id": "default/pkg", "project": "default"},
            "entrypoint": entrypoint, "compat": compat, "params": params or {}, "config": {},
            "secrets": secrets, "scopes": dict.fromkeys(secrets, "package"), "channel": None,
            "allow_platform_write": False}


# --- sealing ----------------------------------------------------------------------------------

def test_sealed_bundle_opens_with_its_key_and_run_only() -> None:
    key = new_run_key()
    sealed = seal_bundle(bundle_for("run-1"), key)
    assert CANARY.encode() not in sealed
    assert json.loads(open_bundle(sealed, key, "run-1"))["secrets"] == {"CANARY": CANARY}
    with pytest.raises(BundleError, match="run-2"):
        open_bundle(sealed, key, "run-2")  # another run's bundle
    with pytest.raises(BundleError, match="wrong key"):
        open_bundle(sealed, new_run_key(), "run-1")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(BundleError, match="altered"):
        open_bundle(bytes(tampered), key, "run-1")
    with pytest.raises(BundleError, match="truncated"):
        open_bundle(sealed[:10], key, "run-1")


def test_bundle_file_is_owner_read_only_and_written_once(tmp_path: Path) -> None:
    path = write_bundle_file(tmp_path, b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    with pytest.raises(FileExistsError):
        write_bundle_file(tmp_path, b"{}")
    assert [p.name for p in tmp_path.iterdir()] == [contract.BUNDLE_FILE_NAME]


# --- init step -----------------------------------------------------------------------------

def _seal_to(tmp_path: Path, run_id: str = "run-1") -> tuple[Path, bytes]:
    key = new_run_key()
    sealed = tmp_path / "sealed"
    sealed.write_bytes(seal_bundle(bundle_for(run_id), key))
    return sealed, key


def test_init_delivers_the_bundle_from_a_key_on_stdin(tmp_path: Path) -> None:
    sealed, key = _seal_to(tmp_path)
    out = tmp_path / "tmpfs"
    out.mkdir(mode=0o700)
    step = python_module("fx_ef.init", ["--run-id", "run-1", "--sealed", str(sealed),
                                        "--out", str(out), "--key-stdin"],
                         stdin=base64.b64encode(key) + b"\n")
    assert step.returncode == 0, step.stderr
    bundle = out / contract.BUNDLE_FILE_NAME
    assert json.loads(bundle.read_text())["secrets"]["CANARY"] == CANARY
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o400
    assert CANARY.encode() not in step.stdout + step.stderr
    assert base64.b64encode(key) not in step.stdout + step.stderr
    again = python_module("fx_ef.init", ["--run-id", "run-1", "--sealed", str(sealed),
                                         "--out", str(out), "--key-stdin"],
                          stdin=base64.b64encode(key) + b"\n")
    assert again.returncode == 5
    assert b"delivery happens once" in again.stderr


@pytest.mark.parametrize(("stdin", "run_id", "code", "message"), [
    (b"not base64!\n", "run-1", 3, b"not base64"),
    (base64.b64encode(b"short") + b"\n", "run-1", 3, b"has 5 bytes"),
    (None, "run-2", 4, b"does not open with the key of run 'run-2'"),
    (None, "", 2, b"no run id"),
])
def test_init_refuses_bad_keys_and_other_runs(tmp_path: Path, stdin: bytes | None, run_id: str,
                                              code: int, message: bytes) -> None:
    sealed, key = _seal_to(tmp_path)
    step = python_module("fx_ef.init", ["--run-id", run_id, "--sealed", str(sealed),
                                        "--out", str(tmp_path), "--key-stdin"],
                         stdin=stdin if stdin is not None else base64.b64encode(key) + b"\n")
    assert step.returncode == code, step.stderr
    assert message in step.stderr
    assert not (tmp_path / contract.BUNDLE_FILE_NAME).exists()


def test_init_imports_neither_kopf_nor_the_kubernetes_client() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, fx_ef.init, fx_ef.bundle; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('kopf', 'kubernetes', 'fx_operator', 'psycopg', 'sqlalchemy')))"],
        env=child_env(), capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"


# --- executor ------------------------------------------------------------------------------

def _package(tmp_path: Path, script: str, bundle: dict[str, Any] | None = None) -> Path:
    package = tmp_path / "package"
    package.mkdir()
    (package / "main.py").write_text(textwrap.dedent(script))
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    write_bundle_file(secrets_dir, json.dumps(bundle or bundle_for()).encode())
    return tmp_path


def _execute(root: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return python_module("fx_ef.executor", [
        "--bundle", str(root / "secrets" / contract.BUNDLE_FILE_NAME),
        "--package-dir", str(root / "package"), "--result", str(root / "result.json"), *extra],
        timeout=timeout)


def _result(root: Path) -> dict[str, Any]:
    return json.loads((root / "result.json").read_text())


def test_output_is_masked_also_when_a_value_is_split_across_writes(tmp_path: Path) -> None:
    root = _package(tmp_path, f"""
        import base64, sys
        print("value:", {CANARY!r})
        sys.stdout.write({CANARY[:9]!r}); sys.stdout.flush()
        sys.stdout.write({CANARY[9:]!r} + "\\n")
        print("b64:", base64.b64encode({CANARY!r}.encode()).decode())
        print("on stderr", {CANARY!r}, file=sys.stderr)
    """)
    run = _execute(root)
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert CANARY.encode() not in output
    assert b"value: ***" in run.stdout
    assert run.stdout.count(b"***") == 3
    result = _result(root)
    assert CANARY not in json.dumps(result)
    assert result["exit_code"] == 0 and result["masked_output"] is True
    assert result["bundle_removed"] is True
    assert not (root / "secrets" / contract.BUNDLE_FILE_NAME).exists()


def test_no_mask_shows_values_but_the_stored_tail_stays_masked(tmp_path: Path) -> None:
    root = _package(tmp_path, f"print('value:', {CANARY!r})\n")
    run = _execute(root, "--no-mask")
    assert f"value: {CANARY}".encode() in run.stdout
    result = _result(root)
    assert "value: ***" in result["output_tail"]
    assert CANARY not in json.dumps(result)


def test_exit_code_and_masked_traceback_of_a_crashing_script(tmp_path: Path) -> None:
    root = _package(tmp_path, f"""
        def fail():
            raise RuntimeError("cannot connect with " + {CANARY!r})
        fail()
    """)
    run = _execute(root)
    assert run.returncode == 1
    assert CANARY.encode() not in run.stderr
    assert b"RuntimeError: cannot connect with ***" in run.stderr
    assert b'main.py", line 4' in run.stderr
    assert b"runpy" not in run.stderr and b"executor.py" not in run.stderr
    assert _result(root)["exit_code"] == 1


def test_sys_exit_code_is_passed_through(tmp_path: Path) -> None:
    root = _package(tmp_path, "import sys\nprint('bye')\nsys.exit(7)\n")
    assert _execute(root).returncode == 7
    assert _result(root)["exit_code"] == 7


def test_a_killed_script_reports_the_signal(tmp_path: Path) -> None:
    root = _package(tmp_path, "import os, signal\nprint('x', flush=True)\n"
                              "os.kill(os.getpid(), signal.SIGKILL)\n")
    run = _execute(root)
    assert run.returncode == 128 + signal.SIGKILL
    result = _result(root)
    assert result["signal"] == "SIGKILL" and result["exit_code"] == 137


def test_signals_are_forwarded_to_the_script(tmp_path: Path) -> None:
    root = _package(tmp_path, """
        import signal, sys, time
        def stop(signum, frame):
            print("got", signal.Signals(signum).name, flush=True)
            sys.exit(42)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        time.sleep(60)
    """)
    executor = subprocess.Popen(
        [sys.executable, "-m", "fx_ef.executor",
         "--bundle", str(root / "secrets" / contract.BUNDLE_FILE_NAME),
         "--package-dir", str(root / "package"), "--result", str(root / "result.json")],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert executor.stdout is not None
    assert executor.stdout.readline() == b"ready\n"
    executor.send_signal(signal.SIGTERM)
    out, _ = executor.communicate(timeout=30)
    assert b"got SIGTERM" in out
    assert executor.returncode == 42
    assert _result(root)["exit_code"] == 42


def test_a_timeout_stops_the_script(tmp_path: Path) -> None:
    root = _package(tmp_path, "import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    started = time.monotonic()
    run = _execute(root, "--timeout", "0.5", "--grace", "2")
    assert time.monotonic() - started < 30
    assert run.returncode == 128 + signal.SIGTERM
    assert b"timeout" in run.stderr
    result = _result(root)
    assert result["timed_out"] is True and result["signal"] == "SIGTERM"


def test_a_value_announced_on_the_mask_fd_is_masked_from_then_on(tmp_path: Path) -> None:
    new_value = "fresh-value-set-by-the-script"
    root = _package(tmp_path, f"""
        import json, os
        fd = int(os.environ[{contract.ENV_MASK_FD!r}])
        os.write(fd, json.dumps({{"name": "NEW", "value": {new_value!r}}}).encode() + b"\\n")
        print("new:", {new_value!r})
    """)
    run = _execute(root)
    assert run.returncode == 0, run.stderr
    assert new_value.encode() not in run.stdout
    assert b"new: ***" in run.stdout


def test_script_environment_and_argv(tmp_path: Path) -> None:
    root = _package(tmp_path, """
        import json, os, sys
        print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                          "bundle": os.environ.get("FX_BUNDLE"),
                          "run": os.environ.get("FX_RUN_ID"),
                          "stdin": sys.stdin.read()}))
    """)
    run = _execute(root)
    seen = json.loads(run.stdout)
    assert seen["argv"] == []  # no secrets in argv without the ferris opt-in
    assert seen["cwd"] == str((root / "package").resolve())
    assert seen["bundle"] == str(root / "secrets" / contract.BUNDLE_FILE_NAME)
    assert seen["run"] == "run-1"
    assert seen["stdin"] == ""


def test_ferris_opt_in_passes_secrets_and_params_in_argv(tmp_path: Path) -> None:
    bundle = bundle_for(compat="ferris", params={"day": "monday"})
    root = _package(tmp_path, f"""
        import json, sys
        fa = json.loads(sys.argv[1])
        print(sorted(fa), fa["day"], fa["package_name"], fa["secrets"]["CANARY"] == "{CANARY}")
    """, bundle)
    run = _execute(root)
    assert run.returncode == 0, run.stderr
    assert b"'day', 'execution_id', 'package_id', 'package_name', 'secrets'" in run.stdout
    assert b"monday pkg True" in run.stdout


def test_the_tail_keeps_the_end_of_long_output(tmp_path: Path) -> None:
    root = _package(tmp_path, "for i in range(20000):\n    print('line', i)\n")
    run = _execute(root)
    assert run.returncode == 0
    result = _result(root)
    assert result["output_truncated"] is True
    assert len(result["output_tail"]) <= contract.OUTPUT_TAIL_BYTES
    assert result["output_tail"].endswith("line 19999\n")


@pytest.mark.parametrize(("bundle", "code", "message"), [
    (bundle_for(entrypoint="missing.py"), 3, b"entrypoint 'missing.py' not found"),
    (bundle_for(entrypoint="../outside.py"), 3, b"outside the package folder"),
    ({"format": 99}, 2, b"not of format 1"),
])
def test_executor_refuses_a_bad_plan_before_starting(tmp_path: Path, bundle: dict[str, Any],
                                                     code: int, message: bytes) -> None:
    root = _package(tmp_path, "print('never')\n", bundle)
    run = _execute(root)
    assert run.returncode == code
    assert message in run.stderr
    assert b"never" not in run.stdout


def test_unreadable_bundle_is_a_clear_error(tmp_path: Path) -> None:
    run = python_module("fx_ef.executor", ["--bundle", str(tmp_path / "nope.json"),
                                           "--package-dir", str(tmp_path)])
    assert run.returncode == 2
    assert b"cannot read the bundle" in run.stderr
    assert os.listdir(tmp_path) == []


def test_result_fits_a_termination_message(tmp_path: Path) -> None:
    root = _package(tmp_path, f"for i in range(2000):\n    print('line', i, {CANARY!r})\n")
    run = _execute(root, "--result-max-bytes", "4096")
    assert run.returncode == 0
    text = (root / "result.json").read_text()
    assert len(text.encode()) <= 4096
    result = json.loads(text)
    assert result["output_truncated"] is True
    assert result["output_tail"].endswith("line 1999 ***\n")
    assert CANARY not in text
