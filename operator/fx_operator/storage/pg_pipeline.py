"""A PostgreSQL transaction whose first statement's rows are put to use while the rest of it runs
and its commit is on its way to disk.

A resolution reads secrets and writes their audit record. With a durable commit PostgreSQL
answers only once the WAL is on disk (300-400 µs here), and only then would the caller start
decrypting 100 values (as long again). In libpq's pipeline mode one request can say: run the
read, *flush* (send its rows now), run the audit INSERT, *sync* (end the implicit transaction:
commit). The server sends the rows before it writes the record, the caller decrypts while the
record is written and committed, and the caller's result is handed back only after the server
confirmed the commit. When the commit fails, that result is dropped and the error raised:
nothing read leaves without its audit record on disk.

psycopg's own ``Pipeline`` cannot do this: fetching one cursor's rows waits for every command
queued behind it, the commit included. So this speaks to ``psycopg.pq``, psycopg's documented
libpq layer, and lets psycopg's ``Transformer`` turn parameters and rows into values, as its
cursors do. Rows come back in binary (no hex-encoded bytea to decode).
"""

from __future__ import annotations

import hashlib
import select
import weakref
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

T = TypeVar("T")
Row = tuple[Any, ...]

SUPPORTED = psycopg.capabilities.has_pipeline()  # libpq 14 or later
"""Whether the libpq in use has pipeline mode and flush requests (libpq 14 or later)."""

_OK = pq.ExecStatus.COMMAND_OK
_ROWS = pq.ExecStatus.TUPLES_OK
_SYNC = pq.ExecStatus.PIPELINE_SYNC

# Statements this module prepared, per connection (a connection the pool replaces is a new key).
_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = (
    weakref.WeakKeyDictionary())


@lru_cache(maxsize=64)
def statement_name(sql: str) -> bytes:
    """A prepared statement's name from its text, apart from psycopg's own ``_pg3_*`` names."""
    return b"fx_" + hashlib.sha256(sql.encode()).hexdigest()[:24].encode()


def execute_then_use(conn: psycopg.Connection[Any],
                     statements: Sequence[tuple[str, Sequence[Any]]],
                     use: Callable[[list[Row]], T]) -> tuple[list[Row], T]:
    """Run ``statements`` (``$1``-style placeholders, with their parameters) as one transaction
    on an idle autocommit connection. ``use`` gets the first one's rows as soon as it ran, while
    the others and the commit go on; the rows and what ``use`` returned come back once the
    commit is confirmed.

    A database error is raised as psycopg's exception for its SQLSTATE, and the transaction is
    rolled back. If ``use`` raises, the transaction still commits and the exception is raised
    afterwards. If the conversation breaks off midway, the connection is closed, so that its
    pool replaces it.
    """
    transformer = Transformer.from_context(conn)
    known = _prepared.setdefault(conn, set())
    pgconn = conn.pgconn
    with conn.lock:
        try:
            pgconn.enter_pipeline_mode()
            calls = []
            preparing = []
            for sql, params in statements:  # preparations first: their results come first
                name = statement_name(sql)
                calls.append((name, transformer.dump_sequence(params,
                                                              [PyFormat.TEXT] * len(params))))
                if name not in known:
                    pgconn.send_prepare(name, sql.encode(), param_types=transformer.types)
                    preparing.append(name)
            for index, (name, args) in enumerate(calls):
                pgconn.send_query_prepared(name, args, result_format=pq.Format.BINARY)
                if index == 0:
                    pgconn.send_flush_request()
            pgconn.pipeline_sync()
            _send(pgconn)
            rows: list[Row] = []
            outcome: tuple[T] | Exception | None = None
            failed = _prepared_first(pgconn, preparing, known)
            result = _next_result(pgconn)
            if failed is None and result.status in (_ROWS, _OK):  # _OK: it returns no rows
                transformer.set_pgresult(result)
                rows = transformer.load_rows(0, result.ntuples, tuple)
                try:
                    outcome = (use(rows),)
                except Exception as e:  # raised once the pipeline is drained
                    outcome = e
            elif failed is None:
                failed = result
            failed_later = _until_sync(pgconn)  # always read: the pipeline must be drained
            failed = failed or failed_later
            pgconn.exit_pipeline_mode()
        except BaseException:
            conn.close()
            raise
    if failed is not None:
        raise psycopg.errors.error_from_result(failed, encoding=conn.info.encoding)
    if isinstance(outcome, Exception):
        raise outcome
    assert outcome is not None
    return rows, outcome[0]


def _prepared_first(pgconn: pq.abc.PGconn, names: list[bytes],
                    known: set[bytes]) -> pq.abc.PGresult | None:
    """Read the results of the statements prepared on the way; note those that were."""
    failed = None
    for name in names:
        result = _next_result(pgconn)
        if result.status == _OK:
            known.add(name)
        elif failed is None:
            failed = result
    return failed


def _send(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():
        select.select([], [pgconn.socket], [])


def _next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """The next command's result (libpq puts an end marker after it, read here too)."""
    result = _wait_result(pgconn)
    if result is None:
        raise psycopg.OperationalError("PostgreSQL sent no result for a pipelined command")
    if result.status != _SYNC:
        _wait_result(pgconn)
    return result


def _until_sync(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """Read up to the sync (the commit's confirmation); an error on the way is returned."""
    error = None
    while (result := _wait_result(pgconn)) is None or result.status != _SYNC:
        if result is None and pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError("the connection to PostgreSQL was lost")
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = result
    return error


def _wait_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    while pgconn.is_busy():
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    return pgconn.get_result()
