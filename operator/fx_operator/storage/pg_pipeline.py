"""A one-shot PostgreSQL transaction that reads, writes what it read, and lets its caller put
the rows to use while the write and its commit are on their way to disk.

A resolution reads secrets and writes their audit record. With a durable commit PostgreSQL
answers only once the WAL is on disk, and only then would the caller start decrypting 100
values. In libpq's pipeline mode the transaction stays open between requests until a *sync*
ends it: the read goes first with a *flush* (send its rows now), and once the rows are here the
audit INSERT follows with the sync (commit). :func:`read_then_write` is a context manager: its
block (the caller's decryption) runs while the record is written and committed, and leaving it
waits for the server's confirmation, raising if the commit failed, so that whatever the block
made is dropped with the exception: nothing read leaves without its audit record on disk. No
callback: storage never calls into the service.

Measured gain (bench_store's resolution of 100 names, durable PostgreSQL, interleaved runs on
a loaded 2-core machine, load average 5.7-6.5): this pipeline 3.0-3.8 ms p50; the same
transaction with psycopg's own ``conn.pipeline()`` 4.3-4.4 ms, and plainly (BEGIN, SELECT,
INSERT, COMMIT) 4.3-4.4 ms: 0.6-1.3 ms per resolution. psycopg's ``Pipeline`` cannot overlap
the work with the commit: fetching one cursor's rows syncs, and the commit is confirmed when
the pipeline block ends, before the caller can go on. So this speaks to ``psycopg.pq``,
psycopg's documented libpq layer, and lets psycopg's ``Transformer`` turn parameters and rows
into values, as its cursors do. Rows come back in binary (no hex-encoded bytea to decode).
"""

from __future__ import annotations

import hashlib
import select
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg import abc, pq
from psycopg.adapt import PyFormat, Transformer

K = TypeVar("K")
Row = tuple[Any, ...]
Statement = tuple[str, Sequence[Any]]

SUPPORTED = psycopg.capabilities.has_pipeline()  # libpq 14 or later
"""Whether the libpq in use has pipeline mode and flush requests (libpq 14 or later)."""

CHUNKED = psycopg.capabilities.has_stream_chunked()  # libpq 17 or later
"""Whether the read's rows can be handed over in chunks while the server still sends them."""
ROWS_PER_BATCH = 64

_OK = pq.ExecStatus.COMMAND_OK
_CHUNK = pq.ExecStatus.TUPLES_CHUNK
_ROWS = pq.ExecStatus.TUPLES_OK
_SYNC = pq.ExecStatus.PIPELINE_SYNC

# Statements this module prepared, per connection (a connection the pool replaces is a new key).
_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = (
    weakref.WeakKeyDictionary())


@lru_cache(maxsize=64)
def statement_name(sql: str) -> bytes:
    """A prepared statement's name from its text, apart from psycopg's own ``_pg3_*`` names."""
    return b"fx_" + hashlib.sha256(sql.encode()).hexdigest()[:24].encode()


@contextmanager
def read_then_write(conn: psycopg.Connection[Any], read: Statement, write_sql: str,
                    after_read: Callable[[Iterable[list[Row]]], tuple[K, Sequence[Any]]]
                    ) -> Iterator[K]:
    """Run ``read``, then ``write_sql``, as one transaction on an idle autocommit connection
    (``$1``-style placeholders). ``after_read`` gets the read's rows in batches as they arrive
    and returns what to keep of them and the write's parameters. The block gets what was kept
    while the write and the commit go on; leaving it waits for the commit's confirmation.

    A database error is raised as psycopg's exception for its SQLSTATE, and the transaction is
    rolled back: before the block when the read or ``after_read`` failed (the block does not
    run; nothing is written), on leaving it when the write or the commit failed. If the block
    raises, the transaction still commits (the read happened: its record is kept) and the
    block's exception goes on. If the conversation breaks off midway, the connection is
    closed, so that its pool replaces it.
    """
    transformer = Transformer.from_context(conn)
    known = _prepared.setdefault(conn, set())
    pgconn = conn.pgconn
    read_sql, read_params = read
    read_name, write_name = statement_name(read_sql), statement_name(write_sql)
    kept: tuple[K, Sequence[Any]] | None = None
    problem: Exception | None = None  # raised once the transaction is over
    with conn.lock:
        try:
            pgconn.enter_pipeline_mode()
            read_args, read_types = _dumped(transformer, read_params)
            preparing = [name for name in (read_name, write_name) if name not in known]
            if read_name in preparing:  # preparations first: their results come first
                pgconn.send_prepare(read_name, read_sql.encode(), param_types=read_types)
            if write_name in preparing:  # typed by the server: its parameters are not known yet
                pgconn.send_prepare(write_name, write_sql.encode())
            pgconn.send_query_prepared(read_name, read_args, result_format=pq.Format.BINARY)
            pgconn.send_flush_request()
            _send(pgconn)
            failed = _prepared_first(pgconn, preparing, known)
            if failed is not None:
                _next_result(pgconn)  # the read, skipped
            else:
                if CHUNKED:  # for the read, whose results come next
                    pgconn.set_chunked_rows_mode(ROWS_PER_BATCH)
                rows = _Rows(pgconn, transformer)
                try:
                    kept = after_read(rows)
                except Exception as e:  # nothing is written: the sync ends a read-only one
                    problem = e
                rows.drain()
                failed = rows.failed
                if failed is None and kept is not None:
                    try:
                        pgconn.send_query_prepared(write_name, _dumped(transformer, kept[1])[0])
                    except Exception as e:
                        problem = e
                if failed is not None or problem is not None:
                    kept = None
            pgconn.pipeline_sync()
            _send(pgconn)
            if kept is None:  # nothing to hand over: end the transaction, then say why
                failed_later = _until_sync(pgconn)  # always read: the pipeline must be drained
                failed = failed or failed_later
                pgconn.exit_pipeline_mode()
        except BaseException:
            conn.close()
            raise
        if kept is None:
            if failed is not None:
                raise psycopg.errors.error_from_result(failed, encoding=conn.info.encoding)
            assert problem is not None
            raise problem
        try:
            yield kept[0]  # the caller's work, while the write and the commit go on
        finally:
            try:
                failed = _until_sync(pgconn)  # always read: the pipeline must be drained
                pgconn.exit_pipeline_mode()
            except BaseException:
                conn.close()
                raise
            if failed is not None:  # the commit failed: what the block made is dropped
                raise psycopg.errors.error_from_result(failed, encoding=conn.info.encoding)


class _Rows:
    """The read's rows, in batches as libpq hands them over: chunks of ``ROWS_PER_BATCH`` while
    the server still sends the rest (libpq 17 or later), else all of them at once. An error
    the server sends instead of (or after some of) the rows is kept in ``failed``."""

    def __init__(self, pgconn: pq.abc.PGconn, transformer: abc.Transformer) -> None:
        self._pgconn = pgconn
        self._transformer = transformer
        self._loaders_set = False
        self._done = False
        self.failed: pq.abc.PGresult | None = None

    def __iter__(self) -> Iterator[list[Row]]:
        while not self._done:
            result = _wait_result(self._pgconn)
            if result is None:
                raise psycopg.OperationalError("PostgreSQL sent no result for the read")
            status = result.status
            if status != _CHUNK:  # the last result of the read
                self._done = True
                _wait_result(self._pgconn)  # its end marker
                if status not in (_ROWS, _OK):  # _OK: a statement without rows
                    self.failed = result
                    return
            if result.ntuples:
                self._transformer.set_pgresult(result, set_loaders=not self._loaders_set)
                self._loaders_set = True
                yield self._transformer.load_rows(0, result.ntuples, tuple)

    def drain(self) -> None:
        """Read what ``after_read`` left unread: the pipeline goes on only after it."""
        for _ in self:
            pass


def _dumped(transformer: abc.Transformer,
            params: Sequence[Any]) -> tuple[Sequence[abc.Buffer | None], Sequence[int] | None]:
    """Parameters in PostgreSQL's text format, and their types."""
    return transformer.dump_sequence(params, [PyFormat.TEXT] * len(params)), transformer.types


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
