"""The run's steps as processes, against floors measured in the same run.

* The init step (open the sealed bundle, write it to tmpfs), absolute p50 (target ≤ 100 ms), also
  as a ratio to ``python -c pass``.
* The executor on a trivial script (``pass``), as a ratio to running the same script directly
  with ``python script.py`` (target ≤ 1.5x); ``python -c pass`` is printed as well.
* ``fxctl run`` of a trivial package end to end, for information (it opens the store, resolves,
  seals, and runs both steps).

Run: ``python bench/bench_run_steps.py`` (``BENCH_RUNS`` samples each, default 30).
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import report, sample_interleaved  # also puts the project on sys.path

from fx_ef import contract
from fx_ef.bundle import new_run_key, seal_bundle, write_bundle_file

RUNS = int(os.environ.get("BENCH_RUNS", "30"))
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")])}
SECRETS = {f"SECRET_{i}": f"value-{i}-" + "x" * 24 for i in range(20)}


def _bundle(run_id: str) -> dict[str, object]:
    return {"format": contract.BUNDLE_FORMAT, "run_id": run_id,
            "package": {"name": "bench", "id": "default/bench", "project": "default"},
            "entrypoint": "main.py", "compat": None, "params": {}, "config": {},
            "secrets": SECRETS, "scopes": dict.fromkeys(SECRETS, "package"), "channel": None,
            "allow_platform_write": False}


def _run(command: list[str], stdin: bytes | None = None) -> None:
    subprocess.run(command, input=stdin, env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def main() -> None:
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None  # noqa: S108
    with tempfile.TemporaryDirectory() as work_dir, \
            tempfile.TemporaryDirectory(dir=shm) as tmpfs_dir:
        work, tmpfs = Path(work_dir), Path(tmpfs_dir)
        key = new_run_key()
        sealed = work / "sealed"
        sealed.write_bytes(seal_bundle(_bundle("run-bench"), key))
        package = work / "package"
        package.mkdir()
        script = package / "main.py"
        script.write_text("pass\n")
        out = tmpfs / "out"
        bundle = tmpfs / "bundle"
        bundle.mkdir()
        plain = json.dumps(_bundle("run-bench")).encode()

        def init_step() -> None:
            if out.exists():
                for f in out.iterdir():
                    f.chmod(0o600)
                    f.unlink()
            else:
                out.mkdir()
            _run([sys.executable, "-m", "fx_ef.init", "--run-id", "run-bench", "--sealed",
                  str(sealed), "--out", str(out), "--key-stdin"],
                 base64.b64encode(key) + b"\n")

        def executor() -> None:
            _run([sys.executable, "-m", "fx_ef.executor", "--bundle",
                  str(bundle / contract.BUNDLE_FILE_NAME), "--package-dir", str(package),
                  "--keep-bundle"])

        write_bundle_file(bundle, plain)
        samples = sample_interleaved({
            "python -c pass": lambda: _run([sys.executable, "-c", "pass"]),
            "python main.py (pass)": lambda: _run([sys.executable, str(script)]),
            "init step": init_step,
            "executor running main.py (pass)": executor,
        }, runs=RUNS, warmup=3)

    print(f"run steps, {RUNS} runs each (interpreter start-up included)")
    floor = samples["python -c pass"]
    report("python -c pass (floor)", floor)
    init_ratio = report("init step vs python -c pass", samples["init step"], floor)
    init_p50 = statistics.median(samples["init step"])
    print(f"{'init step absolute':<44} p50 {init_p50 * 1e3:7.1f} ms  (target ≤ 100 ms: "
          f"{'ok' if init_p50 <= 0.1 else 'MISSED'}; {init_ratio:.2f}x python -c pass)")
    report("python main.py (pass) (floor)", samples["python main.py (pass)"])
    report("executor vs python main.py", samples["executor running main.py (pass)"],
           samples["python main.py (pass)"], target=1.5)
    report("executor vs python -c pass", samples["executor running main.py (pass)"], floor,
           target=1.5)


if __name__ == "__main__":
    main()
