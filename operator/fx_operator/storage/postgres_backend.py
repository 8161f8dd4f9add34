"""The PostgreSQL backend: psycopg 3 with a pool, errors converted into ours.

Kept apart from ``backends`` so that the embedded store never imports psycopg: its import is
about 50 ms of every ``fxctl`` command's start (measured with ``python -X importtime``; see
bench/bench_cli.py), for a driver the embedded store does not use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from fx_operator.exceptions import (
    CommitUnknownError,
    ConflictError,
    ConnectionLostError,
    StoreError,
)
from fx_operator.storage import pg_pipeline
from fx_operator.storage.backends import Backend, K, Params, Row, Transaction

_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@lru_cache(maxsize=256)
def _to_pyformat(sql: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


@lru_cache(maxsize=64)
def _to_numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` placeholders as ``$1``, ``$2``, ..., and the names in that order."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in order:
            order.append(match[1])
        return f"${order.index(match[1]) + 1}"

    return _NAMED.sub(number, sql), tuple(order)



class _PostgresTransaction(Transaction):
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params | None = None) -> list[Row]:
        cur = self.conn.execute(_to_pyformat(sql), params)
        return cur.fetchall() if cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_to_pyformat(sql), rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> None:
        """COPY, inside the transaction: all rows or none. On 10k secrets, the import went from
        about 27k to 35-48k secrets/s on a loaded machine (bench/bench_cli_scale.py). The text
        format: the binary one needs the columns' types (a round trip more) and was no faster."""
        with self.conn.cursor() as cur, \
                cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


# Our statements are small and always shaped alike: a generic plan saves planning each time.
_SESSION_OPTIONS = "-c plan_cache_mode=force_generic_plan"

# How long a caller waits for a connection (the pool's own default): long enough to ride out a
# failover of an HA cluster (CloudNativePG promotes a standby in seconds), short enough that a
# database that stays away becomes a StoreError, retried later by kopf or the run pod's client.
POOL_TIMEOUT_S = 30.0


@dataclass
class _Attempt:
    """One use of a pooled connection, for telling what a lost connection means."""

    conn: psycopg.Connection[Row] | None = None
    committing: bool = False  # past the point where the server may have committed

    @property
    def lost(self) -> bool:
        return self.conn is not None and self.conn.closed


class PostgresBackend(Backend):
    """A pool of connections to one database, or to whichever of several servers takes writes.

    A multi-host URL (``host=a,b&port=1,2&target_session_attrs=read-write``) reaches the
    primary of a replicated cluster: libpq tries each host and keeps the first that accepts
    writes. When the primary dies, every pooled connection is dead. Each is found so at the
    BEGIN that starts the next transaction, before anything that could commit went on it: it is
    dropped and another taken, and the pool connects anew (to the promoted standby) in its
    background, retrying after 1, 2, 4 ... s. Connections are not checked when taken from the
    pool (psycopg_pool's ``check``): that is a round trip more on every transaction.

    A connection lost later raises ``ConnectionLostError`` (before the commit: nothing written,
    safe to retry) or ``CommitUnknownError`` (during it: maybe written). Nothing is reported as
    done unless the server that holds it confirmed the commit.
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, max_size: int = 10) -> None:
        self.url = url
        # autocommit: a single statement is its own transaction (one round trip, no BEGIN or
        # COMMIT); ``transaction()`` still wraps several statements in BEGIN ... COMMIT.
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False,
                                   kwargs={"autocommit": True, "options": _SESSION_OPTIONS},
                                   timeout=POOL_TIMEOUT_S, name="fx-store")
        try:
            self.pool.open(wait=True, timeout=15)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
        except Exception as e:  # psycopg_pool.PoolTimeout is not a psycopg.Error
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        attempt = _Attempt()
        with self._converting_errors(attempt), ExitStack() as held:
            conn = self._begun(held, attempt)
            yield _PostgresTransaction(conn)
            attempt.committing = True  # the COMMIT goes out as ``held`` closes

    def _begun(self, held: ExitStack, attempt: _Attempt) -> psycopg.Connection[Row]:
        """A pooled connection with a transaction begun on it, kept open by ``held``.

        A connection found dead at BEGIN (the server crashed or failed over since it was last
        used) is dropped, and another one taken: nothing was sent on it that could commit."""
        for _ in range(self.pool.max_size + 1):
            with ExitStack() as trying:
                conn: psycopg.Connection[Row] = trying.enter_context(self.pool.connection())
                try:
                    trying.enter_context(conn.transaction())
                except psycopg.OperationalError:
                    if not conn.closed:
                        raise
                    continue  # back to the pool, which discards it and connects anew
                held.enter_context(trying.pop_all())
                attempt.conn = conn
                return conn
        raise ConnectionLostError("every pooled connection to PostgreSQL was found broken")

    def execute_alone(self, sql: str, params: Params | None = None) -> list[Row]:
        attempt = _Attempt(committing=True)  # a single statement commits as it runs
        with self._converting_errors(attempt), self.pool.connection() as conn:
            attempt.conn = conn
            cur = conn.execute(_to_pyformat(sql), params, prepare=True)
            return cur.fetchall() if cur.description is not None else []

    @contextmanager
    def read_then_write(self, read_sql: str, params: Params, write_sql: str,
                        after_read: Callable[[Iterable[list[Row]]], tuple[K, Params]]
                        ) -> Iterator[K]:
        if not pg_pipeline.SUPPORTED:  # a libpq older than 14: one after the other
            with super().read_then_write(read_sql, params, write_sql, after_read) as kept:
                yield kept
            return
        read, read_order = _to_numbered(read_sql)
        write, write_order = _to_numbered(write_sql)
        # A connection lost before the write was sent (e.g. found dead after a failover) lost
        # nothing but a read: it is tried again on another, as often as the pool has them.
        for _ in range(self.pool.max_size + 1):
            attempt = _Attempt()

            def numbered_write(batches: Iterable[list[Row]],
                               attempt: _Attempt = attempt) -> tuple[K, list[Any]]:
                kept, write_params = after_read(batches)
                attempt.committing = True  # the write and its commit go out next
                return kept, [write_params[n] for n in write_order]

            handed_over = False
            try:  # nested blocks, not an ExitStack: 6-7 µs at p50 per 100-name resolution
                with self._converting_errors(attempt), self.pool.connection() as conn:
                    attempt.conn = conn
                    with pg_pipeline.read_then_write(
                            conn, (read, [params[n] for n in read_order]), write,
                            numbered_write) as kept:
                        handed_over = True
                        yield kept
                return
            except ConnectionLostError:
                if handed_over:
                    raise
        raise ConnectionLostError("every pooled connection to PostgreSQL was found broken")

    @contextmanager
    def _converting_errors(self, attempt: _Attempt | None = None) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.UniqueViolation as e:
            raise ConflictError(f"a concurrent write won: {e.diag.constraint_name}") from e
        except psycopg.errors.SerializationFailure as e:
            raise ConflictError("a concurrent write won (serialization failure)") from e
        except PoolTimeout as e:
            raise StoreError(f"no connection to a PostgreSQL server that takes writes within "
                             f"{self.pool.timeout:g} s: {e}") from e
        except psycopg.OperationalError as e:
            if attempt is not None and attempt.lost:
                if attempt.committing:
                    raise CommitUnknownError(
                        "the connection to PostgreSQL broke during the commit: whether it was "
                        f"applied is unknown ({e.__class__.__name__}: {e})") from e
                raise ConnectionLostError(
                    "the connection to PostgreSQL broke before the commit; nothing was written "
                    f"({e.__class__.__name__}: {e})") from e
            raise StoreError(f"PostgreSQL: {e.__class__.__name__}: {e}") from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL: {e.__class__.__name__}: {e}") from e

    def names_filter(self, column: str, param: str) -> str:
        return f"{column} = ANY(:{param})"

    def names_param(self, names: Sequence[str]) -> Any:
        return list(names)

    def close(self) -> None:
        self.pool.close()
