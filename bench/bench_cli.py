"""The everyday loop's costs, as ratios to a floor measured in the same run (issue 19).

* ``fxctl --version`` against ``python -c pass``. Target: ≤ 2x.
* ``fxctl run`` of a trivial package (embedded store, its first run's store already made)
  against ``python main.py`` of the same script. Target: ≤ 3x.
* The executor (``python -m fx_ef.executor``) running that script against ``python main.py``.
  Target: ≤ 1.5x.

Beside each target, the floor under it, measured in the same run: for the executor,
``bench/executor_floor.py`` (what no executor of the pod contract can skip: read the JSON bundle,
``prctl`` through ``ctypes``, fork, run the script on a pipe); for ``fxctl run``, importing the
libraries the run loads by the standards (click, PyYAML, sqlite3, cryptography's AES-GCM,
pydantic-settings with pydantic), then that executor floor. A target below its floor cannot be
met by any change of ours that keeps those libraries and the contract; the ratio over the floor
is what our own code costs.

Measured from a non-editable install, as in the runtime image: a virtualenv made by
``pip install .`` of this checkout (in ``BENCH_VENV`` when set, else a temporary one, about a
minute; a kept one is installed again when the checkout's sources changed). Every figure is
process wall time, interleaved, with the load average; then the same ratios in CPU time (user +
system, of the process and the processes it waited for), which other work on the machine
disturbs far less than wall time: read those when the load average is high.

Run: ``python -m bench.bench_cli`` from the project root (``BENCH_SUBPROCESS_RUNS`` sets the
number of runs of each command).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import venv
from collections.abc import Callable
from pathlib import Path

from bench.bench_fx_ef import _bundle
from bench.common import report, sample_interleaved

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_SUBPROCESS_RUNS", "30"))
SCRIPT = 'print("hello")\n'
# What ``fxctl run`` loads by the standards' choice of libraries, whatever our code does.
RUN_LIBRARIES = ("import click, yaml, sqlite3, pydantic_settings\n"
                 "from cryptography.hazmat.primitives.ciphers.aead import AESGCM")


def _sources_digest() -> str:
    """What the installed copy is made of: the packages' files and the project's metadata."""
    digest = hashlib.sha256()
    for path in sorted([ROOT / "pyproject.toml", *ROOT.glob("fx_ef/**/*.py"),
                        *ROOT.glob("ferris_ef/**/*.py"), *ROOT.glob("operator/fx_operator/**/*")]):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def installed_venv(where: Path) -> Path:
    """A virtualenv with this checkout installed as a wheel would be (no editable finder)."""
    stamp, digest = where / "fx-sources.sha256", _sources_digest()
    if not (where / "bin" / "fxctl").exists():
        venv.create(where, with_pip=True)
        subprocess.run([str(where / "bin" / "pip"), "install", "--quiet",
                        "--disable-pip-version-check", str(ROOT)], check=True)
    elif not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([str(where / "bin" / "pip"), "install", "--quiet", "--no-deps",
                        "--force-reinstall", "--disable-pip-version-check", str(ROOT)],
                       check=True)
    stamp.write_text(digest)
    return where


def _runner(args: list[str], cwd: Path, env: dict[str, str], cpu: list[float],
            bundle: Path | None = None) -> Callable[[], None]:
    """One run of a command, its CPU time appended to ``cpu``; the executor's bundle is
    written first (it is read once, then removed, as in a pod: about 50 µs of the ~100 ms
    measured)."""
    text = json.dumps({**_bundle(), "entrypoint": "main.py"})

    def run() -> None:
        if bundle is not None:
            bundle.write_text(text)
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, args)
        cpu.append(usage.ru_utime + usage.ru_stime)
    return run


def _over(samples: list[float], floor: list[float]) -> str:
    return f"{(statistics.median(samples) / statistics.median(floor)):.2f}x"


def main() -> None:
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        env_dir = Path(os.environ.get("BENCH_VENV") or folder / "venv")
        bin_dir = installed_venv(env_dir) / "bin"
        package = folder / "trivial"
        package.mkdir()
        (package / "main.py").write_text(SCRIPT)
        (package / "package.yaml").write_text("name: trivial\n")
        bundle = folder / "bundle.json"
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FX_HOME": str(folder / "home"),
               "HOME": str(folder)}
        python, fxctl = str(bin_dir / "python"), str(bin_dir / "fxctl")
        subprocess.run([fxctl, "run", str(package)], env=env, check=True,
                       capture_output=True)  # the store and the local key exist from here on
        commands = {
            "pass": [python, "-c", "pass"],
            "version": [fxctl, "--version"],
            "script": [python, "main.py"],
            "run": [fxctl, "run", str(package)],
            "executor": [python, "-m", "fx_ef.executor", "--bundle", str(bundle),
                         "--package-dir", str(package)],
            "executor_floor": [python, str(ROOT / "bench" / "executor_floor.py"), str(bundle),
                               str(package)],
            "libraries": [python, "-c", RUN_LIBRARIES],
        }
        cpu: dict[str, list[float]] = {label: [] for label in commands}
        samples = sample_interleaved(
            {label: _runner(args, package, env, cpu[label],
                            bundle if label.startswith("executor") else None)
             for label, args in commands.items()},
            runs=RUNS, warmup=3)
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(f"{RUNS} interleaved runs of each command, process wall time, from {env_dir}")
    report("floor: python -c pass", samples["pass"])
    report("fxctl --version", samples["version"], samples["pass"], target=2)
    report("floor: python main.py (a print)", samples["script"])
    report("fxctl run (trivial package, embedded store)", samples["run"], samples["script"],
           target=3)
    run_floor = [a + b for a, b in zip(samples["libraries"], samples["executor_floor"],
                                       strict=True)]
    report("  floor: the run's libraries alone", samples["libraries"], samples["script"])
    report("  floor: libraries + executor floor", run_floor, samples["script"])
    report("python -m fx_ef.executor (same script)", samples["executor"], samples["script"],
           target=1.5)
    report("  floor: bench/executor_floor.py", samples["executor_floor"], samples["script"])
    print(f"our own code: fxctl run {_over(samples['run'], run_floor)} its floor, the executor "
          f"{_over(samples['executor'], samples['executor_floor'])} its floor")
    print("CPU time (user + system), p50, the same ratios:")
    for label, floor, target in (("version", "pass", 2), ("run", "script", 3),
                                 ("executor", "script", 1.5)):
        used = cpu[label][-RUNS:]  # without the warm-up runs
        mine, base = statistics.median(used), statistics.median(cpu[floor][-RUNS:])
        print(f"  {label:<9} {mine * 1e3:7.1f} ms against {floor} {base * 1e3:6.1f} ms: "
              f"{mine / base:5.2f}x (target ≤ {target}x: "
              f"{'ok' if mine / base <= target else 'MISSED'})")


if __name__ == "__main__":
    main()
