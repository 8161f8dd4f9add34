"""``fxctl audit consumers`` at a million audit records, on a real PostgreSQL started here.

The audit is filled by COPY with records shaped like a busy cluster's: 90% run resolutions (200
packages in 20 projects, each run receiving 5 names: 2 of its package, 2 of its project, 1 of
the platform, each rotated 10 times and its data key twice over the history), the rest writes
and deliveries. Then, interleaved:

* the floor: one audit record by primary key, through the same store path;
* ``consumers NAME --version N`` of a project secret (~4,500 runs each) and of a platform one
  (~90,000 runs each), and ``consumers --data-key ID``: the first page the CLI fetches (1,001
  rows), at ≥ 50 different targets each, p50/p99 and the p50's ratio to the floor.
  Target: p50 under 50 ms.
* ``fxctl audit --name`` and ``--project`` (the first page of 1,001 records), for scale.
* What 0007 costs every resolution: its durable audit INSERT (5 names) into a table as before
  0007, one with 0007's indexes on ``audit``, and ``audit`` itself (since 0008, no queue).

Run: ``python bench/bench_audit.py [--records N]`` (default 1,000,000; ``--records 20000`` for
a quick check). Needs PostgreSQL's server binaries, like the tests. Not part of CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
from common import report, sample_interleaved  # also puts the project on sys.path
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.services.audit_log import AuditFilter, AuditLog
from fx_operator.storage.secret_store import SecretStore
from support.postgres import PostgresServer

TARGET_P50 = 0.050  # seconds
PAGE = 1001  # what the CLI fetches for its default page of 1,000
QUERIES = 60  # different targets per kind of query
PROJECTS, PACKAGES_PER_PROJECT, VERSIONS, KEY_GENERATIONS = 20, 10, 10, 3
PACKAGE_NAMES, PROJECT_NAMES, PLATFORM_NAMES = ("PKG_A", "PKG_B"), ("DB_PASS", "API_KEY"), (
    "ROOT_CA",)
START = datetime(2026, 1, 1, tzinfo=UTC)


def key_id(owner: tuple[str, str, str], generation: int) -> str:
    return hashlib.md5(f"{owner}|{generation}".encode()).hexdigest()  # noqa: S324 (an id)


def deliveries(project: str, package: str, at: float) -> list[tuple[str, str, str, str, int, str]]:
    """What one run received at ``at`` (0..1 through the history): (name, scope, owner project,
    owner package, version, data key)."""
    version = 1 + int(at * VERSIONS)
    generation = int(at * KEY_GENERATIONS)
    rows = []
    for names, scope, owner in ((PACKAGE_NAMES, "package", (project, package)),
                                (PROJECT_NAMES, "project", (project, "")),
                                (PLATFORM_NAMES, "platform", ("", ""))):
        for name in names:
            rows.append((name, scope, owner[0], owner[1], version,
                         key_id((scope, *owner), generation)))
    return rows


def fill(dsn: str, records: int) -> None:
    """COPY ``records`` audit records and their audit_names rows, as a reader's
    ``index_pending`` would have derived them (and the reader's mark past them)."""
    rng = random.Random(17)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        names: list[tuple[int, str, str, str, str, int, str]] = []
        with conn.cursor().copy("COPY audit (id, at, actor, action, scope, project, package, "
                                "run_id, entries) FROM STDIN") as copy:
            for i in range(1, records + 1):
                at = START + timedelta(seconds=i)
                project = f"team-{rng.randrange(PROJECTS):02d}"
                package = f"pkg-{rng.randrange(PACKAGES_PER_PROJECT):02d}"
                kind = rng.random()
                if kind < 0.9:
                    run = f"run-{i:08d}"
                    got = deliveries(project, package, i / records)
                    entries = [{"name": n, "scope": s, "version": v, "dataKeyId": k}
                               for n, s, _, _, v, k in got]
                    copy.write_row((i, at, f"run:{run}", "resolve", None, project, package,
                                    run, json.dumps(entries, separators=(",", ":"))))
                    names.extend((i, n, s, p, q, v, k) for n, s, p, q, v, k in got)
                elif kind < 0.95:
                    run = f"run-{i:08d}"
                    copy.write_row((i, at, f"pod:{project}/{run}", "deliver", None, project,
                                    package, run, json.dumps([{"pod": run, "podUid": str(i)}])))
                else:
                    name, scope, p, q, v, k = deliveries(project, package, i / records)[3]
                    copy.write_row((i, at, "user:admin", "set", scope, p, q, None, json.dumps(
                        [{"name": name, "scope": scope, "version": v, "dataKeyId": k}])))
                    names.append((i, name, scope, p, q, v, k))
        with conn.cursor().copy("COPY audit_names (audit_id, name, scope, project, package, "
                                "version, data_key_id) FROM STDIN") as copy:
            for row in names:
                copy.write_row(row)
        conn.execute("SELECT setval(pg_get_serial_sequence('audit', 'id'), %s)", (records,))
        conn.execute("UPDATE audit_names_progress SET indexed_through = %s, seen_through = %s, "
                     "writers_then = ''", (records, records))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit")
        conn.execute("VACUUM ANALYZE audit_names")
    print(f"filled {records:,} audit records ({len(names):,} names) by COPY in "
          f"{time.perf_counter() - started:.1f} s")


def targets(records: int) -> Iterator[tuple[str, Callable[[AuditLog], object]]]:
    """Labelled queries, each at QUERIES different targets taken in turn."""
    rng = random.Random(3)

    def cycling(make: Callable[[], Callable[[AuditLog], object]]) -> Callable[[AuditLog], object]:
        made = [make() for _ in range(QUERIES)]
        turn = iter(range(10**9))
        return lambda log: made[next(turn) % QUERIES](log)

    def project_version() -> Callable[[AuditLog], object]:
        owner = Owner.of(Scope.PROJECT, f"team-{rng.randrange(PROJECTS):02d}")
        name, version = rng.choice(PROJECT_NAMES), rng.randint(1, VERSIONS)
        return lambda log: log.consumers_of_version(owner, name, version, limit=PAGE)

    def platform_version() -> Callable[[AuditLog], object]:
        version = rng.randint(1, VERSIONS)
        return lambda log: log.consumers_of_version(Owner(Scope.PLATFORM), "ROOT_CA", version,
                                                    limit=PAGE)

    def data_key() -> Callable[[AuditLog], object]:
        scope, owner = rng.choice((("project", (f"team-{rng.randrange(PROJECTS):02d}", "")),
                                   ("package", (f"team-{rng.randrange(PROJECTS):02d}",
                                                f"pkg-{rng.randrange(PACKAGES_PER_PROJECT):02d}"))))
        key = key_id((scope, *owner), rng.randrange(KEY_GENERATIONS))
        return lambda log: log.consumers_of_data_key(key, limit=PAGE)

    def by_name() -> Callable[[AuditLog], object]:
        where = AuditFilter(name=rng.choice(PROJECT_NAMES + PACKAGE_NAMES))
        return lambda log: log.records(where, limit=PAGE)

    def by_project() -> Callable[[AuditLog], object]:
        where = AuditFilter(project=f"team-{rng.randrange(PROJECTS):02d}")
        return lambda log: log.records(where, limit=PAGE)

    def floor() -> Callable[[AuditLog], object]:
        record = rng.randint(1, records)
        return lambda log: log.records(AuditFilter(), after=record + 1, limit=1)

    yield "floor", cycling(floor)
    yield "consumers, project version", cycling(project_version)
    yield "consumers, platform version", cycling(platform_version)
    yield "consumers --data-key", cycling(data_key)
    yield "audit --name", cycling(by_name)
    yield "audit --project", cycling(by_project)


def bench_queries(store: SecretStore, records: int, runs: int) -> None:
    log = AuditLog(store)
    queries = dict(targets(records))
    samples = sample_interleaved({label: (lambda q=q: q(log)) for label, q in queries.items()},
                                 runs=runs, warmup=5)
    floor = samples.pop("floor")
    print(f"\nqueries at {records:,} records, first page of {PAGE - 1:,} rows, {runs} runs each "
          f"over {QUERIES} targets")
    report("floor: one record by primary key", floor)
    for label, times in samples.items():
        report(label, times, floor)
    consumers = [t for label, times in samples.items() if label.startswith("consumers")
                 for t in times]
    p50 = statistics.median(consumers)
    print(f"consumers, all kinds: p50 {p50 * 1e3:.1f} ms (target < {TARGET_P50 * 1e3:.0f} ms: "
          f"{'ok' if p50 < TARGET_P50 else 'MISSED'})")


def bench_write_cost(dsn: str, runs: int) -> None:
    """What migration 0007 adds to every resolution's audit INSERT (durable, 5 names): the
    same INSERT into a table as before 0007 (primary key and run index), into one with 0007's
    four indexes on audit, and into the audit table itself (those indexes; its readers find
    new records themselves since migration 0008, no trigger queues them)."""
    entries = json.dumps([{"name": n, "scope": s, "version": v, "dataKeyId": k}
                          for n, s, _, _, v, k in deliveries("team-00", "pkg-00", 0.5)],
                         separators=(",", ":"))
    insert = ("INSERT INTO {} (at, actor, action, scope, project, package, run_id, entries) "
              "VALUES (now(), 'run:bench', 'resolve', NULL, 'team-00', 'pkg-00', 'bench', %s)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE audit_0006 (LIKE audit INCLUDING DEFAULTS)")
        conn.execute("ALTER TABLE audit_0006 ADD PRIMARY KEY (id)")
        conn.execute("CREATE INDEX ON audit_0006 (run_id)")
        conn.execute("CREATE TABLE audit_indexed (LIKE audit INCLUDING ALL)")  # no trigger

        def into(table: str) -> Callable[[], object]:
            sql = insert.format(table)
            return lambda: conn.execute(sql, (entries,), prepare=True)

        samples = sample_interleaved({"0006": into("audit_0006"),
                                      "indexed": into("audit_indexed"),
                                      "audit": into("audit")}, runs=runs)
    print("\na resolution's audit INSERT, durable, 5 names:")
    report("as before 0007 (primary key, run index)", samples["0006"])
    report("with 0007's 4 indexes on audit", samples["indexed"], samples["0006"])
    report("the audit table (no trigger since 0008)", samples["audit"], samples["0006"])
    before = statistics.median(samples["0006"])
    added = statistics.median(samples["audit"]) - before
    indexes = statistics.median(samples["indexed"]) - before
    print(f"cost per resolution at p50: {added * 1e6:+.0f} µs ({indexes * 1e6:+.0f} µs of it "
          "the indexes on audit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "120")))
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    with PostgresServer(durable=True) as server:
        store = SecretStore.open_postgres(server.dsn)
        try:
            fill(server.dsn, args.records)
            bench_queries(store, args.records, args.runs)
            bench_write_cost(server.dsn, args.runs)
        finally:
            store.close()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
