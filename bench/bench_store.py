"""Store benchmarks on a real PostgreSQL (durable settings) started here.

* Resolving 100 names across the three scopes, p50 and p99, as a ratio to a floor measured in
  the same run: one plain SELECT round trip for 100 blobs plus 100 plain AES-GCM decrypts.
  Target: p50 at most 3x the floor. The default (values are handed back only once the read's
  audit record is on disk; they are decrypted while it gets there)
  and ``FX_DURABLE_READ_AUDIT=false`` (committed asynchronously, in the same transaction) are
  both shown, with a durable 1-row INSERT alone for scale.
* Bulk import of a 10,000-name secrets.json. Target: at least 10,000 secrets/s.

Run: ``python bench/bench_store.py`` (needs PostgreSQL's server binaries, like the tests).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import psycopg
from common import report, sample_interleaved  # also puts the project on sys.path
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.services.configured_store import open_secret_service
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.postgres import PostgresServer

RUNS = int(os.environ.get("BENCH_RUNS", "1000"))
IMPORT_SIZE = 10_000


def main() -> None:
    with PostgresServer(durable=True) as server, tempfile.TemporaryDirectory() as home:
        key_file = Path(home) / "master.key"
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
        settings = Settings(home=Path(home), database_url=server.dsn, master_key_file=key_file,
                            actor="bench")
        service = open_secret_service(settings)
        try:
            bench_resolve(service, server.dsn)
            bench_import(service)
        finally:
            service.close()


def bench_resolve(service, dsn: str) -> None:  # type: ignore[no-untyped-def]
    package = Owner.of(Scope.PACKAGE, "bench", "pkg")
    project = Owner.of(Scope.PROJECT, "bench")
    platform = Owner.of(Scope.PLATFORM)
    # 100 winning names: 34 at package scope, 33 at project, 33 at platform, with shadowed
    # copies below them, and noise from another project the query must skip.
    service.set_many(package, {f"N{i:03d}": f"package-value-{i}" for i in range(34)})
    service.set_many(project, {f"N{i:03d}": f"project-value-{i}" for i in range(67)})
    service.set_many(platform, {f"N{i:03d}": f"platform-value-{i}" for i in range(100)})
    service.set_many(Owner.of(Scope.PROJECT, "other"), {f"N{i:03d}": "x" for i in range(100)})
    assert len(service.resolve("bench", "pkg").values) == 100

    blobs_sql = "SELECT blob FROM secret_versions WHERE scope = 'platform' AND is_current"
    audit_sql = ("INSERT INTO audit (at, actor, action, project, package, entries) "
                 "VALUES (now(), 'bench', 'floor', '', '', '[]')")
    key = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    sealed = [key.encrypt(nonce, f"platform-value-{i}".encode(), b"aad") for i in range(100)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        def decrypt_all() -> None:
            for blob in sealed:
                key.decrypt(nonce, blob, b"aad")

        def floor() -> None:
            assert len(conn.execute(blobs_sql, prepare=True).fetchall()) == 100
            decrypt_all()

        def durable_write() -> None:
            conn.execute(audit_sql, prepare=True)

        def resolve_async_audit() -> None:
            service.store.durable_read_audit = False
            try:
                service.resolve("bench", "pkg", run_id="bench")
            finally:
                service.store.durable_read_audit = True

        samples = sample_interleaved({
            "floor": floor,
            "resolve": lambda: service.resolve("bench", "pkg", run_id="bench"),
            "resolve-async": resolve_async_audit,
            "write": durable_write,
        }, runs=RUNS)
    print(f"resolve: {RUNS} runs, 100 names over 3 scopes, durable PostgreSQL")
    report("floor: 1 SELECT of 100 blobs + 100 decrypts", samples["floor"])
    report("resolve 100 names (with its audit record)", samples["resolve"], samples["floor"], 3.0)
    report("  same, FX_DURABLE_READ_AUDIT=false", samples["resolve-async"], samples["floor"])
    report("  (a durable 1-row INSERT alone)", samples["write"], samples["floor"])


def bench_import(service) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps({f"IMPORTED_{i:05d}": f"value-{i}" for i in range(IMPORT_SIZE)}).encode()
    rates = []
    for round_ in range(3):
        start = time.perf_counter()
        service.import_file(raw, project="bench", package=f"bulk-{round_}")
        rates.append(IMPORT_SIZE / (time.perf_counter() - start))
    best, worst = max(rates), min(rates)
    verdict = "ok" if worst >= 10_000 else "MISSED"
    print(f"bulk import of {IMPORT_SIZE} secrets: best {best:,.0f}/s, worst {worst:,.0f}/s "
          f"(target ≥ 10,000/s: {verdict})")


if __name__ == "__main__":
    main()
