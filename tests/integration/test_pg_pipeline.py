"""The pipelined transaction behind a resolution (storage/pg_pipeline.py), on a real PostgreSQL:
the read's rows are used while the write made of them commits, and nothing used is handed back
unless the commit succeeded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import StoreError
from fx_operator.storage import pg_pipeline
from psycopg import pq
from support.stores import open_service, settings_for

INSERT = "INSERT INTO t (x, note) VALUES ($1, $2)"
INSERT_RETURNING = "INSERT INTO t (x) VALUES ($1::int) RETURNING x"


@pytest.fixture
def conn(postgres_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE t (x int, note text)")
        yield connection


def refuse_commits_of_t(conn: psycopg.Connection[Any]) -> None:
    """A deferred trigger: every statement succeeds, and the commit fails."""
    conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
    conn.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON t DEFERRABLE INITIALLY "
                 "DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()")


def rows_in_t(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT x, note FROM t ORDER BY x").fetchall()


def read_then_write(conn: psycopg.Connection[Any], read: tuple[str, Sequence[Any]], write: str,
                    after_read: Callable[[Iterable[list[Any]]], tuple[Any, Sequence[Any]]],
                    use: Callable[[Any], Any]) -> tuple[Any, Any]:
    """The one-shot API with ``use`` as its block: what was kept, and what ``use`` made of it
    while the write and its commit went on."""
    with pg_pipeline.read_then_write(conn, read, write, after_read) as kept:
        result = use(kept)
    return kept, result


def flat(batches: Iterable[list[Any]]) -> list[Any]:
    return [row for batch in batches for row in batch]


def count_of(batches: Iterable[list[Any]]) -> tuple[int, Sequence[Any]]:
    """Keep how many rows were read, and write that count."""
    count = len(flat(batches))
    return count, [count, "counted"]


def first_and_params(rows: list[Any]) -> tuple[Any, Sequence[Any]]:
    return rows[0], [rows[0][1], rows[0][0]]


def test_the_write_is_made_of_the_rows_read(conn: psycopg.Connection[Any]) -> None:
    read = ("SELECT $1::text, $2::int, $3::text[], $4::text, '\\x00ff'::bytea",
            ["é \"q\" \\", 7, ['a"b', "c\\d", "", "ü"], None])
    used: list[Any] = []
    kept, result = read_then_write(conn, read, INSERT,
                                   lambda batches: first_and_params(flat(batches)),
                                   lambda kept: used.append(kept) or "opened")
    assert kept == ('é "q" \\', 7, ['a"b', "c\\d", "", "ü"], None, b"\x00\xff")
    assert used == [kept] and result == "opened"
    assert rows_in_t(conn) == [(7, 'é "q" \\')]  # the write's types come from the server
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_the_read_and_the_write_are_one_transaction(conn: psycopg.Connection[Any]) -> None:
    read = ("SELECT set_config('fx.test', 'set by the read', true)", [])
    read_then_write(conn, read, "INSERT INTO t (x, note) VALUES ($1, current_setting('fx.test'))",
                    lambda batches: (None, [1]), lambda kept: None)
    assert rows_in_t(conn) == [(1, "set by the read")]


def test_a_read_without_rows_gives_no_rows(conn: psycopg.Connection[Any]) -> None:
    assert read_then_write(conn, ("SELECT x FROM t", []), INSERT, count_of, str) == (0, "0")
    assert rows_in_t(conn) == [(0, "counted")]


def test_a_failed_commit_drops_what_use_made(conn: psycopg.Connection[Any]) -> None:
    refuse_commits_of_t(conn)
    seen: list[object] = []
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        read_then_write(conn, ("SELECT 'read'::text", []), INSERT, count_of, seen.append)
    assert seen == [1]  # it ran, while the commit was on its way, and was dropped
    assert rows_in_t(conn) == []
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


@pytest.mark.parametrize(("read", "write"), [
    (("SELECT 1 / $1::int", [0]), INSERT),
    (("SELECT nonsense FROM", []), INSERT),
    ((INSERT_RETURNING, [1]), "INSERT INTO t VALUES (1 / ($1::int - 1), $2)"),
    ((INSERT_RETURNING, [1]), "INSERT INTO missing_table VALUES ($1, $2)"),
], ids=["read-fails", "read-does-not-parse", "write-fails", "write-does-not-parse"])
def test_an_error_is_psycopgs_own_and_rolls_everything_back(
        conn: psycopg.Connection[Any], read: tuple[str, list[Any]], write: str) -> None:
    with pytest.raises(psycopg.DatabaseError) as raised:
        read_then_write(conn, read, write, count_of, str)
    assert type(raised.value) is not psycopg.DatabaseError  # the class of its SQLSTATE
    assert raised.value.sqlstate is not None
    assert rows_in_t(conn) == []
    assert not conn.closed
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert read_then_write(conn, ("SELECT 2", []), INSERT, count_of, str) == (1, "1")


def test_when_after_read_raises_nothing_is_written(conn: psycopg.Connection[Any]) -> None:
    def refuse(batches: Iterable[list[Any]]) -> tuple[int, Sequence[Any]]:
        raise ValueError("cannot audit these")

    used: list[object] = []
    with pytest.raises(ValueError, match="cannot audit these"):
        read_then_write(conn, (INSERT_RETURNING, [1]), INSERT, refuse, used.append)
    assert used == []
    assert rows_in_t(conn) == [(1, None)]  # the read's own effect is its own business
    assert not conn.closed
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_when_use_raises_the_transaction_still_commits(conn: psycopg.Connection[Any]) -> None:
    def fail(kept: int) -> None:
        raise ValueError("cannot use these")

    with pytest.raises(ValueError, match="cannot use these"):
        read_then_write(conn, ("SELECT 1", []), INSERT, count_of, fail)
    assert rows_in_t(conn) == [(1, "counted")]
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_each_statement_is_prepared_once_per_connection(conn: psycopg.Connection[Any]) -> None:
    for x in range(3):
        read_then_write(conn, ("SELECT $1::int", [x]), INSERT,
                        lambda batches: (None, [flat(batches)[0][0], "x"]), str)
    row = conn.execute("SELECT count(*) FROM pg_prepared_statements "
                       "WHERE name LIKE 'fx\\_%'").fetchone()
    assert row == (2,)
    assert rows_in_t(conn) == [(0, "x"), (1, "x"), (2, "x")]


SERIES = ("SELECT g FROM generate_series(1, $1::int) g", [200])


@pytest.mark.skipif(not pg_pipeline.CHUNKED, reason="libpq older than 17: rows come at once")
def test_rows_come_in_batches_as_they_arrive(conn: psycopg.Connection[Any]) -> None:
    sizes: list[int] = []

    def sizes_of(batches: Iterable[list[Any]]) -> tuple[list[int], Sequence[Any]]:
        rows = []
        for batch in batches:
            sizes.append(len(batch))
            rows += batch
        assert rows == [(g,) for g in range(1, 201)]
        return sizes, [len(rows), "batched"]

    assert read_then_write(conn, SERIES, INSERT, sizes_of, len)[1] > 1
    assert sum(sizes) == 200 and max(sizes) <= pg_pipeline.ROWS_PER_BATCH
    assert rows_in_t(conn) == [(200, "batched")]


def test_without_chunks_the_rows_come_in_one_batch(conn: psycopg.Connection[Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_pipeline, "CHUNKED", False)
    sizes = read_then_write(conn, SERIES, INSERT,
                            lambda batches: ([len(b) for b in batches], [0, "one"]), list)[0]
    assert sizes == [200]


def test_a_read_failing_midway_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    """Rows already handed over are dropped with the rest when the read fails after them."""
    seen: list[int] = []

    def note(batches: Iterable[list[Any]]) -> tuple[int, Sequence[Any]]:
        for batch in batches:
            seen.extend(row[0] for row in batch)
        return len(seen), [len(seen), "partial"]

    used: list[object] = []
    failing = ("SELECT g, 1 / (150 - g) FROM generate_series(1, 200) g", [])
    with pytest.raises(psycopg.errors.DivisionByZero):
        read_then_write(conn, failing, INSERT, note, used.append)
    assert used == [] and rows_in_t(conn) == []
    assert len(seen) < 150  # at most the rows before the failing one
    if pg_pipeline.CHUNKED:
        assert seen[:64] == list(range(1, 65))  # whole chunks arrived before the error
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert read_then_write(conn, ("SELECT 2", []), INSERT, count_of, str) == (1, "1")


def test_rows_left_unread_by_after_read_are_drained(conn: psycopg.Connection[Any]) -> None:
    def first_batch_only(batches: Iterable[list[Any]]) -> tuple[int, Sequence[Any]]:
        first = next(iter(batches))
        return len(first), [first[0][0], "first"]

    read_then_write(conn, SERIES, INSERT, first_batch_only, str)
    assert rows_in_t(conn) == [(1, "first")]
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_after_read_raising_between_batches_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    def give_up(batches: Iterable[list[Any]]) -> tuple[int, Sequence[Any]]:
        for _ in batches:
            raise LookupError("gave up after one batch")
        raise AssertionError("no batch")

    with pytest.raises(LookupError, match="gave up"):
        read_then_write(conn, SERIES, INSERT, give_up, str)
    assert rows_in_t(conn) == []
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert read_then_write(conn, SERIES, INSERT, count_of, str) == (200, "200")


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
        assert [{k: v for k, v in e.items() if k != "dataKeyId"} for e in record.entries] == [
            {"name": "A", "scope": "package", "version": 1},
            {"name": "B", "scope": "platform", "version": 1}]
        assert [e["dataKeyId"] for e in record.entries] == [
            service.history(owner, name)[0].data_key_id for owner, name in (
                (Owner.of(Scope.PACKAGE, "team-a", "etl"), "A"), (Owner.of(Scope.PLATFORM), "B"))]
    finally:
        service.close()
