"""``fxctl`` on many secrets (issue 19): a bulk import, and listings of every one of them.

* ``fxctl secrets import`` of secrets.json files of 10,000 names (the most a file may hold), as
  the service runs it, on a real PostgreSQL (durable settings) started here, ten packages' worth.
  Target: at least 50,000 secrets/s, judged on the median file as every figure in ``bench/`` is
  (p50); best and worst are printed beside it. The first file is the warm-up (the connection,
  the first owner's data key, the server's caches) and is not counted, as each sample's warm-up
  is not elsewhere. The worst of the rest is one commit's wait for this VM's disk: from 24k to
  50k/s in three runs a minute apart whose medians were 55-64k/s.
* ``fxctl secrets list --all`` of those 100,000 secrets (a process, as a user runs it; table and
  JSON), against one plain SELECT of the same rows' metadata with psycopg. Target: at most 1 s.
  On PostgreSQL and on the embedded store (its plain SELECT with sqlite3). The processes keep
  their modules' bytecode (in a temporary PYTHONPYCACHEPREFIX), as an installed copy does.

Each figure is printed with the load average: on a shared machine, read the ratios.

Run: ``python bench/bench_cli_scale.py`` (needs PostgreSQL's server binaries, like the tests;
``BENCH_SCALE_SECRETS`` sets the number of secrets).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from common import report, sample  # also puts the project on sys.path
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.secrets_file import MAX_SECRETS
from fx_operator.services.configured_store import open_secret_service
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.postgres import PostgresServer
from support.processes import child_env

SECRETS = int(os.environ.get("BENCH_SCALE_SECRETS", "100000"))
PACKAGES = max(1, SECRETS // MAX_SECRETS)
RUNS = 5
PLAIN_SELECT = ("SELECT scope, project, package, name, version, created_at, actor "
                "FROM secret_versions WHERE is_current AND blob IS NOT NULL")


def _secrets_file(size: int) -> bytes:
    return json.dumps({f"SECRET_{i:06d}": f"value-{i:06d}-{'x' * 24}"
                       for i in range(size)}).encode()


def _fxctl(args: list[str], env: dict[str, str], bytecode: Path) -> Callable[[], None]:
    """``fxctl ARGS`` as a process, its modules' bytecode cached in ``bytecode`` as an installed
    copy's is (pip compiles it): an environment with PYTHONDONTWRITEBYTECODE set would compile
    the project's modules at every start, about 0.09 s of each listing measured."""
    child = {k: v for k, v in child_env(env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    child["PYTHONPYCACHEPREFIX"] = str(bytecode)

    def run() -> None:
        subprocess.run([sys.executable, "-m", "fx_operator", *args], env=child, check=True,
                       stdout=subprocess.DEVNULL)
    return run


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _listings(label: str, env: dict[str, str], plain: list[float],
              options: tuple[str, ...] = ()) -> None:
    report(f"floor: one plain SELECT of the rows ({label})", plain)
    with tempfile.TemporaryDirectory() as bytecode:
        for output in ("table", "json"):
            listing = _fxctl(["secrets", "list", "--all", *options, "-o", output], env,
                             Path(bytecode))
            samples = sample(listing, runs=RUNS, warmup=1)  # the warm-up writes the bytecode
            report(f"fxctl secrets list --all -o {output} ({label})", samples, plain)
            print(f"  {statistics.median(samples):.2f} s for {SECRETS} rows (target ≤ 1 s: "
                  f"{'ok' if statistics.median(samples) <= 1 else 'MISSED'}); {_load()}")


def main() -> None:
    load = os.getloadavg()
    raw = _secrets_file(min(SECRETS, MAX_SECRETS))
    with PostgresServer(durable=True) as server, tempfile.TemporaryDirectory() as home:
        key_file = Path(home) / "master.key"
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
        settings = Settings(home=Path(home), database_url=server.dsn, master_key_file=key_file,
                            actor="bench")
        service = open_secret_service(settings)
        try:
            every = []
            for package in range(PACKAGES):
                start = time.perf_counter()
                service.import_file(raw, project="bench", package=f"bulk-{package}")
                every.append(min(SECRETS, MAX_SECRETS) / (time.perf_counter() - start))
        finally:
            service.close()
        rates = every[1:] or every  # the first file is the warm-up (see the docstring)
        print(f"secrets import, {len(rates)} files of {min(SECRETS, MAX_SECRETS)} names after "
              f"one of warm-up ({every[0]:,.0f}/s), on "
              "PostgreSQL (durable): best "
              f"{max(rates):,.0f}/s, median {statistics.median(rates):,.0f}/s, worst "
              f"{min(rates):,.0f}/s (target ≥ 50,000/s at the median: "
              f"{'ok' if statistics.median(rates) >= 50_000 else 'MISSED'})")
        print(f"  each file in turn: {', '.join(f'{rate / 1000:.1f}k' for rate in every)}; "
              f"{_load()}")
        env = {"FX_HOME": home, "FX_DATABASE_URL": server.dsn,
               "FX_MASTER_KEY_FILE": str(key_file), "FX_ACTOR": "bench"}

        def plain_pg() -> None:
            with psycopg.connect(server.dsn) as conn:
                conn.execute(PLAIN_SELECT).fetchall()
        _listings("PostgreSQL", env, sample(plain_pg, runs=RUNS, warmup=0))

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), actor="bench")
        service = open_secret_service(settings)
        try:
            for package in range(PACKAGES):
                service.import_file(raw, project="bench", package=f"bulk-{package}")
        finally:
            service.close()

        def plain_sqlite() -> None:
            with sqlite3.connect(settings.embedded_path) as conn:
                conn.execute(PLAIN_SELECT).fetchall()
        _listings("embedded", {"FX_HOME": home, "FX_ACTOR": "bench"},
                  sample(plain_sqlite, runs=RUNS, warmup=0))
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
