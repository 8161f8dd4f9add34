"""Failover to a standby: how many acknowledged writes are lost, and for how long writes stop.

A real primary and a real streaming standby on loopback (``support.pg_replication``, durable
settings: fsync on, as a user's server), reached through one multi-host URL with
``target_session_attrs=read-write``. ``WRITERS`` threads share one store (one pool, as in the
operator) and write package state through the service layer, each key once; the primary is
SIGKILLed after ``BURST_S`` seconds of that and the standby promoted. Each round then counts
the acknowledged writes the new primary does not have. Printed per replication mode:

* the writes acknowledged, and those lost (with asynchronous replication: the loss window);
* the standby's lag behind the primary sampled during the burst (``pg_stat_replication``:
  ``write_lag`` and the bytes of WAL not yet flushed on the standby): what a crash would lose;
* the pause: from the kill to each writer's first acknowledged write on the new primary
  (mostly the pool's reconnect backoff: first retry after ~1 s);
* the load average, since 2 shared cores make every figure here noisy.

Run: ``python bench/bench_failover.py`` (env: ``BENCH_ROUNDS`` per mode, default 5;
``BENCH_WRITERS``, default 8; ``BENCH_MODES``, default ``sync,async``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from common import percentile  # also puts the project on sys.path
from fx_operator.config import Settings
from fx_operator.domain.channel_requests import parse_state_write
from fx_operator.domain.crypto import MasterKey
from fx_operator.exceptions import CommitUnknownError, ConnectionLostError
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.runs import RunGrant, RunService
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.pg_replication import STANDBY_NAME, ReplicatedPostgres

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
#: Below the 1,000 state keys a package may hold (domain.state_limits).
MAX_KEYS_PER_WRITER = 990
WRITERS = int(os.environ.get("BENCH_WRITERS", "8"))
MODES = os.environ.get("BENCH_MODES", "sync,async").split(",")
BURST_S = 2.0
AFTER_S = 1.0  # writing on after the first write on the new primary


@dataclass
class Writer:
    acknowledged: dict[str, str] = field(default_factory=dict)
    unknown: int = 0  # commits cut midway: not acknowledged, not repeated
    first_after_failover: float | None = None


@dataclass
class Round:
    acknowledged: int
    lost: int
    unknown: int
    write_lag_ms: list[float]
    unflushed_bytes: list[int]
    pauses_s: list[float]


def main() -> None:
    # The pool logs every dead connection it drops and every refused reconnect: expected here.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    print(f"failover benchmark: {ROUNDS} round(s) per mode, {WRITERS} writers, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    for mode in MODES:
        rounds = [one_round(mode == "sync") for _ in range(ROUNDS)]
        summarize(mode, rounds)


def one_round(synchronous: bool) -> Round:
    with ReplicatedPostgres(synchronous=synchronous, durable=True) as pair, \
            tempfile.TemporaryDirectory() as home:
        key_file = Path(home) / "master.key"
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
        service = open_secret_service(Settings(home=Path(home), database_url=pair.dsn,
                                               master_key_file=key_file, actor="bench"))
        runs = RunService(service)
        writers = [Writer() for _ in range(WRITERS)]
        stop = threading.Event()
        killed_at: list[float] = []

        def write(index: int) -> None:
            # A package of its own per writer: a package holds at most 1,000 state keys.
            writer, i = writers[index], 0
            grant = RunGrant(f"bench-{index}", "bench", f"pkg-{index}")
            while not stop.is_set() and i < MAX_KEYS_PER_WRITER:
                i += 1
                key, value = f"w{index}-{i}", f"v{i}"
                try:
                    runs.put_state(grant, parse_state_write(
                        json.dumps({"key": key, "value": value}).encode()))
                except ConnectionLostError:
                    continue  # nothing written: the next key goes to the new primary
                except CommitUnknownError:
                    writer.unknown += 1
                    continue
                writer.acknowledged[key] = value
                if killed_at and writer.first_after_failover is None:
                    writer.first_after_failover = time.monotonic() - killed_at[0]

        threads = [threading.Thread(target=write, args=(i,), daemon=True)
                   for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        lag_ms, unflushed = sample_lag(pair, BURST_S)
        killed_at.append(time.monotonic())
        pair.fail_over()
        deadline = time.monotonic() + 120
        while (any(w.first_after_failover is None for w in writers)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        time.sleep(AFTER_S)
        stop.set()
        for thread in threads:
            thread.join(60)
        stored = [runs.get_state(RunGrant("check", "bench", f"pkg-{i}")) for i in range(WRITERS)]
        service.close()
    lost = sum(1 for i, w in enumerate(writers) for key, value in w.acknowledged.items()
               if stored[i].get(key) != value)
    return Round(sum(len(w.acknowledged) for w in writers), lost,
                 sum(w.unknown for w in writers), lag_ms, unflushed,
                 [w.first_after_failover for w in writers if w.first_after_failover is not None])


def sample_lag(pair: ReplicatedPostgres, seconds: float) -> tuple[list[float], list[int]]:
    """The standby's write lag (ms) and the WAL bytes it had not flushed, sampled every 10 ms."""
    lag_ms: list[float] = []
    unflushed: list[int] = []
    end = time.monotonic() + seconds
    with psycopg.connect(pair.primary.dsn_for("postgres"), autocommit=True) as conn:
        while time.monotonic() < end:
            row = conn.execute(
                "SELECT extract(epoch FROM write_lag) * 1000, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) "
                "FROM pg_stat_replication WHERE application_name = %s", (STANDBY_NAME,)
            ).fetchone()
            if row is not None:
                if row[0] is not None:
                    lag_ms.append(float(row[0]))
                if row[1] is not None:
                    unflushed.append(int(row[1]))
            time.sleep(0.01)
    return lag_ms, unflushed


def summarize(mode: str, rounds: list[Round]) -> None:
    acknowledged = sum(r.acknowledged for r in rounds)
    lost = [r.lost for r in rounds]
    lags = [x for r in rounds for x in r.write_lag_ms] or [0.0]
    unflushed = [x for r in rounds for x in r.unflushed_bytes] or [0]
    pauses = [x for r in rounds for x in r.pauses_s] or [0.0]
    rate = acknowledged / (len(rounds) * (BURST_S + AFTER_S))  # roughly, writes per second
    print(f"{mode:>5}: {acknowledged} acknowledged writes in {len(rounds)} failovers, lost "
          f"{sum(lost)} (per failover: {lost}, max {max(lost)}; ~{max(lost) / rate * 1000:.1f} "
          f"ms of writes at ~{rate:.0f}/s); {sum(r.unknown for r in rounds)} commits cut "
          "(not acknowledged)")
    print(f"       standby write lag p50 {statistics.median(lags):.2f} ms, p99 "
          f"{percentile(lags, 99):.2f} ms, max {max(lags):.2f} ms; WAL not flushed on the "
          f"standby p50 {statistics.median(unflushed):.0f} B, max {max(unflushed)} B")
    print(f"       pause until a writer's first write on the new primary: p50 "
          f"{statistics.median(pauses):.2f} s, max {max(pauses):.2f} s; load average "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
