"""Migration 0008: the audit's version-level index is derived by its readers from a mark over
audit ids; writers do nothing for it. What could go wrong with that: a record committed after
one with a higher id (PostgreSQL), two readers at once, a writer forgotten, a downgrade."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.services.audit_log import AuditFilter, AuditLog
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import audit_log, migrating
from fx_operator.storage.secret_store import BULK_ROWS, AuditRecord
from support.stores import BACKENDS, open_service, settings_for

TEAM = Owner.of(Scope.PROJECT, "team-a")
RECORD = ("INSERT INTO audit (at, actor, action, scope, project, package, run_id, entries) "
          "VALUES (now(), %s, 'resolve', NULL, 'team-a', 'etl', %s, %s) RETURNING id")


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretService]:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    opened = open_service(settings_for(request.param, tmp_path / "home", dsn))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def pg_service(tmp_path: Path, postgres_dsn: str) -> Iterator[SecretService]:
    opened = open_service(settings_for("postgres", tmp_path / "home", postgres_dsn))
    try:
        yield opened
    finally:
        opened.close()


def write_record(conn: psycopg.Connection[Any], run_id: str) -> int:
    """A resolution's record of DB_PASS v1 (project team-a), on ``conn``, not committed."""
    entries = json.dumps([{"name": "DB_PASS", "scope": "project", "version": 1}])
    row = conn.execute(RECORD, (f"run:{run_id}", run_id, entries)).fetchone()
    assert row is not None
    return int(row[0])


def consumers(service: SecretService) -> list[str]:
    return [c.run_id for c in AuditLog(service.store).consumers_of_version(TEAM, "DB_PASS", 1)]


def names_rows(service: SecretService) -> list[tuple[object, ...]]:
    with service.store.transaction() as tx:
        return sorted(tuple(r) for r in tx.execute("SELECT audit_id, name FROM audit_names"))


def dsn_of(service: SecretService) -> str:
    return service.store.backend.url  # PostgreSQL's: libpq's own


def test_a_record_committed_after_one_with_a_higher_id_is_still_found(
        pg_service: SecretService) -> None:
    """The writer that took the lower id commits last, while readers pass in between: the
    mark must not go past it (a mark at the newest id seen would lose it for good)."""
    with psycopg.connect(dsn_of(pg_service)) as slow, \
            psycopg.connect(dsn_of(pg_service), autocommit=True) as fast:
        early = write_record(slow, "early")  # its id first; committed last
        late = write_record(fast, "late")
        assert early < late
        assert consumers(pg_service) == ["late"]
        assert consumers(pg_service) == ["late"]  # the writer still runs: the mark waits
        slow.commit()
    assert consumers(pg_service) == ["late", "early"]
    assert consumers(pg_service) == ["late", "early"]
    assert names_rows(pg_service) == [(early, "DB_PASS"), (late, "DB_PASS")]  # once each
    with pg_service.store.transaction() as tx:  # and the mark has moved past both by now
        assert tx.execute("SELECT indexed_through FROM audit_names_progress")[0][0] >= late


def test_two_readers_at_once_index_each_record_once(pg_service: SecretService) -> None:
    with psycopg.connect(dsn_of(pg_service), autocommit=True) as writer:
        ids = [write_record(writer, f"r{i}") for i in range(3)]
    found: list[list[str]] = []
    with pg_service.store.transaction() as first:
        audit_log.index_pending(first, "postgresql")  # the first reader's pass, not committed
        second = threading.Thread(target=lambda: found.append(consumers(pg_service)))
        second.start()
        with psycopg.connect(dsn_of(pg_service), autocommit=True) as watcher:
            for _ in range(200):  # until the second reader waits for the first (or is done)
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'").fetchone()
                if (waiting and waiting[0]) or not second.is_alive():
                    break
                time.sleep(0.05)
    second.join(timeout=30)
    assert found == [["r2", "r1", "r0"]]
    assert names_rows(pg_service) == [(i, "DB_PASS") for i in ids]


def test_writers_queue_nothing_and_every_record_is_found(service: SecretService) -> None:
    """A write's record, an import (COPY on PostgreSQL) and a resolution (pipelined on
    PostgreSQL) each add their audit row and nothing else; readers find them all."""
    service.set_many(TEAM, {"DB_PASS": "audit-index-canary"})
    service.import_file(json.dumps({f"BULK_{i:03d}": "x" for i in range(BULK_ROWS)}).encode(),
                        project="team-a", package="etl")
    service.resolve("team-a", "etl", run_id="resolved")
    with service.store.transaction() as tx:
        assert tx.execute("SELECT count(*) FROM audit_names_pending")[0][0] == 0
        if service.store.backend.dialect == "postgresql":
            triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit'::regclass"
        else:
            triggers = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
        assert tx.execute(triggers)[0][0] == 0
    log = AuditLog(service.store)
    assert consumers(service) == ["resolved"]
    assert [r.record.action for r in log.records(AuditFilter(name="BULK_000"))] == [
        "resolve", "import"]
    assert [r.record.action for r in log.records(AuditFilter(name="DB_PASS"))] == [
        "resolve", "set"]


def test_a_downgrade_and_an_upgrade_lose_no_record(service: SecretService) -> None:
    """Records no reader indexed yet are queued by the downgrade to 0007's trigger; what that
    trigger queues is derived after the upgrade again."""
    store = service.store

    def record(run_id: str) -> None:
        with store.transaction() as tx:
            store.audit(tx, AuditRecord(f"run:{run_id}", "resolve", "team-a", "etl",
                                        run_id=run_id, entries=[{"name": "DB_PASS",
                                                                 "scope": "project",
                                                                 "version": 1}]))

    record("indexed")
    assert consumers(service) == ["indexed"]
    record("unindexed")  # at 0008, above the mark, read by no one yet
    config = Config()
    config.set_main_option("script_location", str(migrating.MIGRATIONS))
    config.set_main_option("sqlalchemy.url",
                           migrating.sqlalchemy_url(store.backend.url).replace("%", "%%"))
    command.downgrade(config, "0007")
    record("at-0007")  # queued by 0007's trigger
    migrating.upgrade(store.backend.url)
    record("after")
    assert consumers(service) == ["after", "at-0007", "unindexed", "indexed"]
    assert [row[1] for row in names_rows(service)] == ["DB_PASS"] * 4  # once each
