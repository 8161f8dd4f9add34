"""The pipelined transaction behind a resolution (storage/pg_pipeline.py), on a real PostgreSQL:
the first statement's rows are used while the rest commits, and nothing used is handed back
unless the commit succeeded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import StoreError
from fx_operator.storage import pg_pipeline
from fx_operator.storage.pg_pipeline import execute_then_use
from psycopg import pq
from support.stores import open_service, settings_for

INSERT = "INSERT INTO t (x) VALUES ($1::int)"


@pytest.fixture
def conn(postgres_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE t (x int)")
        yield connection


def refuse_commits_of_t(conn: psycopg.Connection[Any]) -> None:
    """A deferred trigger: every statement succeeds, and the commit fails."""
    conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
    conn.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON t DEFERRABLE INITIALLY "
                 "DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()")


def rows_in_t(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM t").fetchone()
    assert row is not None
    return int(row[0])


def test_rows_come_back_with_what_use_made_of_them(conn: psycopg.Connection[Any]) -> None:
    rows, used = execute_then_use(
        conn, [("SELECT $1::text, $2::int, $3::text[], $4::text, '\\x00ff'::bytea",
                ["é \"q\" \\", 7, ['a"b', "c\\d", "", "ü"], None]),
               ("INSERT INTO t (x) VALUES ($1::int)", [1])],
        lambda rows: len(rows))
    assert rows == [('é "q" \\', 7, ['a"b', "c\\d", "", "ü"], None, b"\x00\xff")]
    assert used == 1
    assert rows_in_t(conn) == 1
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_a_first_statement_without_rows_gives_use_no_rows(conn: psycopg.Connection[Any]) -> None:
    assert execute_then_use(conn, [(INSERT, [4])], len) == ([], 0)
    assert rows_in_t(conn) == 1


def test_a_failed_commit_drops_what_use_made(conn: psycopg.Connection[Any]) -> None:
    refuse_commits_of_t(conn)
    seen: list[object] = []
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        execute_then_use(conn, [("SELECT 'read'::text", []), (INSERT, [5])],
                         seen.append)
    assert seen == [[("read",)]]  # it ran, while the commit was on its way, and was dropped
    assert rows_in_t(conn) == 0
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


@pytest.mark.parametrize("statements", [
    [("SELECT 1 / $1::int", [0]), (INSERT, [1])],
    [("SELECT nonsense FROM", []), (INSERT, [1])],
    [("SELECT 1", []), ("INSERT INTO t (x) VALUES (1 / $1::int)", [0])],
    [(INSERT, [1]), ("SELECT * FROM missing_table", [])],
], ids=["first-fails", "first-does-not-parse", "second-fails", "second-does-not-parse"])
def test_an_error_is_psycopgs_own_and_rolls_everything_back(
        conn: psycopg.Connection[Any], statements: list[tuple[str, list[Any]]]) -> None:
    with pytest.raises(psycopg.DatabaseError) as raised:
        execute_then_use(conn, statements, lambda rows: rows)
    assert type(raised.value) is not psycopg.DatabaseError  # the class of its SQLSTATE
    assert raised.value.sqlstate is not None
    assert rows_in_t(conn) == 0
    assert not conn.closed
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert execute_then_use(conn, [("SELECT 2", [])], lambda rows: rows)[1] == [(2,)]


def test_when_use_raises_the_transaction_still_commits(conn: psycopg.Connection[Any]) -> None:
    def fail(rows: list[Any]) -> None:
        raise ValueError("cannot use these")

    with pytest.raises(ValueError, match="cannot use these"):
        execute_then_use(conn, [("SELECT 1", []), (INSERT, [3])], fail)
    assert rows_in_t(conn) == 1
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_each_statement_is_prepared_once_per_connection(conn: psycopg.Connection[Any]) -> None:
    for x in range(3):
        execute_then_use(conn, [("SELECT $1::int", [x]), (INSERT, [x])],
                         lambda rows: rows)
    row = conn.execute("SELECT count(*) FROM pg_prepared_statements "
                       "WHERE name LIKE 'fx\\_%'").fetchone()
    assert row == (2,)
    assert rows_in_t(conn) == 3


def test_a_resolution_whose_audit_record_cannot_commit_gives_no_values(
        tmp_path: Path, postgres_dsn: str) -> None:
    """P7: a read whose audit record is not committed hands out nothing."""
    service = open_service(settings_for("postgres", tmp_path / "fx-home", postgres_dsn))
    try:
        service.set(Owner.of(Scope.PACKAGE, "team-a", "etl"), "A", "canary-8812")
        assert service.resolve("team-a", "etl").values == {"A": "canary-8812"}
        with service.store.transaction() as tx:
            tx.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'audit is full'; END $$")
            tx.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON audit DEFERRABLE "
                       "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()")
        with pytest.raises(StoreError, match="audit is full") as raised:
            service.resolve("team-a", "etl", run_id="refused")
        assert "canary-8812" not in str(raised.value)
        assert service.audit_records(run_id="refused") == []
    finally:
        service.close()


def test_without_pipeline_mode_a_resolution_reads_then_decrypts(
        tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A libpq older than 14 has no pipeline mode: the read and the audit INSERT run one
    after the other in one transaction, and the values are decrypted after the commit."""
    monkeypatch.setattr(pg_pipeline, "SUPPORTED", False)
    service = open_service(settings_for("postgres", tmp_path / "fx-home", postgres_dsn))
    try:
        service.set(Owner.of(Scope.PROJECT, "team-a"), "A", "project")
        service.set(Owner.of(Scope.PACKAGE, "team-a", "etl"), "A", "package")
        service.set(Owner.of(Scope.PLATFORM), "B", {"x": 1})
        resolution = service.resolve("team-a", "etl", run_id="old-libpq")
        assert resolution.values == {"A": "package", "B": {"x": 1}}
        [record] = service.audit_records(run_id="old-libpq")
        assert record.entries == [{"name": "A", "scope": "package", "version": 1},
                                  {"name": "B", "scope": "platform", "version": 1}]
    finally:
        service.close()
