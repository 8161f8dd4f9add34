"""fx_ef benchmarks: what a script pays to read its secrets.

* ``context.secrets.get`` in steady state, against a plain dict lookup. Target: ≤ 1 µs a call.
* The first call (read and parse the bundle: ~20 secrets, on /dev/shm like a pod's tmpfs),
  against reading and ``json.loads``-ing the same file. Target: ≤ 100 µs.
* ``import fx_ef`` in a fresh interpreter, against ``python -c pass``; and fx_ef's own share of
  the import as ``python -X importtime`` reports it.
* The executor's masking of a run's output: building the masker for the bundle's secrets (once
  per run), and masking 1 MiB of log lines (some with a secret) in 64 KiB pipe reads, against
  decoding and re-encoding the same reads (what passing the output on costs without a masker).

Run: ``python -m bench.bench_fx_ef`` from the project root (``BENCH_RUNS`` sets the sample count).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import report, sample_interleaved  # also puts the project on sys.path
from fx_ef import Context

RUNS = int(os.environ.get("BENCH_RUNS", "2000"))
BATCH = 1000  # calls per steady-state sample: one call is too short for the timer
SUBPROCESS_RUNS = int(os.environ.get("BENCH_SUBPROCESS_RUNS", "40"))
ROOT = Path(__file__).resolve().parents[1]
# A tmpfs like the pod's secrets volume; mkdtemp below makes a private (0700) folder in it.
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108


def main() -> None:
    with tempfile.TemporaryDirectory(dir=SHM) as folder:
        path = Path(folder) / "bundle.json"
        path.write_text(json.dumps(_bundle()))
        path.chmod(0o400)
        print(f"bundle: {path.stat().st_size} bytes, 20 secrets, on {SHM or 'the temp dir'}")
        bench_steady_state(path)
        bench_first_call(path)
        bench_import(path)
    bench_masking()


def _bundle() -> dict[str, object]:
    secrets: dict[str, object] = {f"SECRET_{i:02d}": f"value-{i:02d}-{'x' * 24}" for i in range(16)}
    secrets.update({"DB_NAME": "test_db", "DB_PASS": "supersecretpas$",
                    "API": {"key": "k" * 32, "url": "https://api.example"}, "PORT": 5432})
    return {
        "format": 1, "run_id": "run-bench",
        "package": {"name": "bench", "id": "default/bench", "project": "default"},
        "entrypoint": "main.py", "compat": None,
        "params": {"limit": 10, "mode": "full"}, "config": {"region": "eu"},
        "secrets": secrets, "scopes": dict.fromkeys(secrets, "package"),
        "channel": {"url": "unix:/run/fx/channel.sock", "token": "t" * 43, "token_file": None,
                    "ca_file": None},
        "allow_platform_write": False,
    }


def _per_call(samples: list[float]) -> list[float]:
    return [s / BATCH for s in samples]


def _verdict(label: str, samples: list[float], target: float) -> None:
    """The p50 with more digits than ``report`` shows, and whether it meets the target."""
    p50 = statistics.median(samples)
    ok = "ok" if p50 <= target else "MISSED"
    print(f"  {label}: p50 {p50 * 1e9:.0f} ns (target ≤ {target * 1e6:g} µs: {ok})")


def bench_steady_state(path: Path) -> None:
    context = Context(environ={"FX_BUNDLE": str(path)})
    secrets = context.secrets
    assert secrets.get("DB_PASS") == "supersecretpas$"  # loaded: from here on, steady state
    values = json.loads(path.read_text())["secrets"]
    calls = range(BATCH)

    def floor() -> None:
        for _ in calls:
            values.get("DB_PASS")

    def through_context() -> None:  # the way a script writes it, attribute lookups included
        for _ in calls:
            context.secrets.get("DB_PASS")

    def bound_method() -> None:
        get = secrets.get
        for _ in calls:
            get("DB_PASS")

    samples = sample_interleaved({"floor": floor, "context": through_context,
                                  "bound": bound_method}, runs=RUNS)
    floor_calls = _per_call(samples["floor"])
    print(f"\nsteady state: {RUNS} samples of {BATCH} calls, per call")
    report("floor: plain dict .get", floor_calls)
    report("context.secrets.get(name)", _per_call(samples["context"]), floor_calls)
    report("secrets.get (method bound once)", _per_call(samples["bound"]), floor_calls)
    _verdict("floor", floor_calls, 1e-6)
    _verdict("context.secrets.get", _per_call(samples["context"]), 1e-6)


def bench_first_call(path: Path) -> None:
    environ = {"FX_BUNDLE": str(path)}

    def floor() -> None:
        with open(path, "rb") as file:
            json.loads(file.read())

    def first_call() -> None:
        Context(environ=environ).secrets.get("DB_PASS")

    samples = sample_interleaved({"floor": floor, "first": first_call}, runs=RUNS)
    print(f"\nfirst call: {RUNS} fresh contexts (json already imported, as in the floor)")
    report("floor: open + read + json.loads", samples["floor"])
    report("first context.secrets.get", samples["first"], samples["floor"])
    _verdict("first call", samples["first"], 100e-6)


MASK_OUTPUT_BYTES = 1 << 20
MASK_READ_BYTES = 64 * 1024  # the executor's pipe read size


def _log_output(secrets: dict[str, object]) -> bytes:
    """1 MiB of log lines as a script prints them; one line in 50 carries a secret value."""
    values = [v for v in secrets.values() if isinstance(v, str)]
    lines = []
    index = 0
    while sum(map(len, lines)) < MASK_OUTPUT_BYTES:
        if index % 50 == 0:
            line = f"{index:07d} INFO connecting with password={values[index % len(values)]}"
        else:
            line = f"{index:07d} INFO processed record {index * 7919 % 100003} in 3.{index % 10}ms"
        lines.append(line + "\n")
        index += 1
    return "".join(lines).encode()


def bench_masking() -> None:
    import codecs

    from fx_ef.masking import Masker

    secrets = _bundle()["secrets"]
    assert isinstance(secrets, dict)
    output = _log_output(secrets)
    reads = [output[i:i + MASK_READ_BYTES] for i in range(0, len(output), MASK_READ_BYTES)]
    masked_sample = Masker(secrets).mask(output.decode())
    assert "supersecretpas$" not in masked_sample and masked_sample.count("***") >= 400

    def build() -> None:
        re.purge()  # as in a fresh executor: no pattern in re's cache yet
        Masker(secrets).mask("warm")  # the pattern is compiled on first use

    def floor_pass_on() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for data in reads:
            decoder.decode(data).encode()

    def mask_stream() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stream = masker.stream()
        for data in reads:
            stream.write(decoder.decode(data)).encode()
        stream.flush()

    masker = Masker(secrets)
    runs = max(RUNS // 100, 10)
    built = sample_interleaved({"build": build}, runs=runs * 5, warmup=3)["build"]
    samples = sample_interleaved({"floor": floor_pass_on, "mask": mask_stream}, runs=runs,
                                 warmup=2)
    print(f"\nmasking: the bundle's {len(secrets)} secrets; {len(output) >> 10} KiB of output "
          f"in {MASK_READ_BYTES >> 10} KiB reads, {runs} samples")
    report("build the masker (once per run)", built)
    report("floor: decode + encode the reads", samples["floor"])
    report("mask the output as a stream", samples["mask"], samples["floor"])
    mib_per_s = len(output) / statistics.median(samples["mask"]) / (1 << 20)
    print(f"  masking throughput: {mib_per_s:.0f} MiB/s")


def _time_process(args: list[str], env: dict[str, str]) -> float:
    import time

    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def bench_import(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FX_BUNDLE": str(path)}
    codes = {
        "pass": "pass",
        "import": "import fx_ef",
        "json": f"import json; json.loads(open({str(path)!r}, 'rb').read())",
        "first": "from fx_ef import context; context.secrets.get('DB_PASS')",
    }
    # As installed here, and with -S: no site, so nothing (typing, re, ...) is preloaded, as in
    # a slim image; there fx_ef's own imports are all an import costs.
    for flags, title in (([], "as installed"), (["-S"], "-S, nothing preloaded by site")):
        runs = {label: [*flags, "-c", code] for label, code in codes.items()}
        samples: dict[str, list[float]] = {label: [] for label in runs}
        for args in runs.values():  # warm the page cache and the .pyc files
            _time_process(args, env)
        for _ in range(SUBPROCESS_RUNS):
            for label, args in runs.items():
                samples[label].append(_time_process(args, env))
        print(f"\nfresh interpreter ({title}): {SUBPROCESS_RUNS} runs each, process wall time")
        report("floor: python -c pass", samples["pass"])
        report("python -c 'import fx_ef'", samples["import"], samples["pass"])
        report("python: import json + read + parse bundle", samples["json"], samples["pass"])
        report("python: import fx_ef + first secrets.get", samples["first"], samples["pass"])
        extra = statistics.median(samples["import"]) - statistics.median(samples["pass"])
        print(f"  import fx_ef adds {extra * 1e3:.2f} ms of wall time (p50 difference, noisy)")

    shares = []
    for _ in range(15):
        trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fx_ef"],
                               cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        shares.append(_cumulative_us(trace.stderr, "fx_ef"))
    print(f"\n-X importtime: fx_ef's cumulative import p50 {statistics.median(shares):.0f} µs "
          f"(min {min(shares)} µs); the interpreter's startup imports not included")


def _cumulative_us(trace: str, module: str) -> int:
    for line in trace.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$", line)
        if match and match.group(2) == module:
            return int(match.group(1))
    raise RuntimeError(f"{module} not in the import trace")


if __name__ == "__main__":
    main()
