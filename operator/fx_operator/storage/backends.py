"""Connections to PostgreSQL (psycopg 3 with a pool) and to the embedded SQLite file.

SQL is written once with ``:name`` placeholders; each backend adapts it and converts driver errors
into ours (``ConflictError`` for a lost race, ``StoreError`` for the rest). Nothing else in the
project imports a database driver.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from fx_operator.exceptions import ConflictError, StoreError
from fx_operator.storage import pg_pipeline

Params = dict[str, Any]
Row = tuple[Any, ...]
T = TypeVar("T")
K = TypeVar("K")

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_datetime(value: Any) -> datetime:
    """SQLite hands timestamps back as text; PostgreSQL as datetimes."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Transaction(ABC):
    """One open transaction; every statement in it commits or rolls back together."""

    @abstractmethod
    def execute(self, sql: str, params: Params | None = None) -> list[Row]: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...


class Backend(ABC):
    """A database the store can run on."""

    dialect: str
    url: str

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Transaction]: ...

    def execute_alone(self, sql: str, params: Params | None = None) -> list[Row]:
        """One statement as a transaction of its own (PostgreSQL: a single round trip)."""
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def read_then_write(self, read_sql: str, params: Params, write_sql: str,
                        after_read: Callable[[Iterable[list[Row]]], tuple[K, Params]],
                        use: Callable[[K], T]) -> tuple[K, T]:
        """One transaction: ``read_sql``, then ``write_sql`` with the parameters ``after_read``
        makes of the rows read (handed over in batches), and ``use`` on what it kept of them.
        PostgreSQL hands rows over while the server still sends the rest, runs ``use`` while
        the write and its commit go on, and returns only once the commit is confirmed."""
        with self.transaction() as tx:
            kept, write_params = after_read([tx.execute(read_sql, params)])
            tx.execute(write_sql, write_params)
        return kept, use(kept)

    @abstractmethod
    def names_filter(self, column: str, param: str) -> str:
        """SQL that is true when ``column`` is one of the names bound to ``param``."""

    @abstractmethod
    def names_param(self, names: Sequence[str]) -> Any: ...

    @abstractmethod
    def close(self) -> None: ...


# --- PostgreSQL ---------------------------------------------------------------------------


class _PostgresTransaction(Transaction):
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params | None = None) -> list[Row]:
        cur = self.conn.execute(_to_pyformat(sql), params)
        return cur.fetchall() if cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_to_pyformat(sql), rows)


# Our statements are small and always shaped alike: a generic plan saves planning each time.
_SESSION_OPTIONS = "-c plan_cache_mode=force_generic_plan"


class PostgresBackend(Backend):
    dialect = "postgresql"

    def __init__(self, url: str, *, max_size: int = 10) -> None:
        self.url = url
        # autocommit: a single statement is its own transaction (one round trip, no BEGIN or
        # COMMIT); ``transaction()`` still wraps several statements in BEGIN ... COMMIT.
        # check: an idle connection is tested (an empty query) before it is handed out, so that
        # after the server restarted (or failed over) no request fails on a dead session.
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False,
                                   kwargs={"autocommit": True, "options": _SESSION_OPTIONS},
                                   check=ConnectionPool.check_connection, name="fx-store")
        try:
            self.pool.open(wait=True, timeout=15)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
        except Exception as e:  # psycopg_pool.PoolTimeout is not a psycopg.Error
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._converting_errors(), self.pool.connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    def execute_alone(self, sql: str, params: Params | None = None) -> list[Row]:
        with self._converting_errors(), self.pool.connection() as conn:
            cur = conn.execute(_to_pyformat(sql), params, prepare=True)
            return cur.fetchall() if cur.description is not None else []

    def read_then_write(self, read_sql: str, params: Params, write_sql: str,
                        after_read: Callable[[Iterable[list[Row]]], tuple[K, Params]],
                        use: Callable[[K], T]) -> tuple[K, T]:
        if not pg_pipeline.SUPPORTED:  # a libpq older than 14: one after the other
            return super().read_then_write(read_sql, params, write_sql, after_read, use)
        read, read_order = _to_numbered(read_sql)
        write, write_order = _to_numbered(write_sql)

        def numbered_write(batches: Iterable[list[Row]]) -> tuple[K, list[Any]]:
            kept, write_params = after_read(batches)
            return kept, [write_params[n] for n in write_order]

        with self._converting_errors(), self.pool.connection() as conn:
            return pg_pipeline.read_then_write(conn, (read, [params[n] for n in read_order]),
                                               write, numbered_write, use)

    @contextmanager
    def _converting_errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.UniqueViolation as e:
            raise ConflictError(f"a concurrent write won: {e.diag.constraint_name}") from e
        except psycopg.errors.SerializationFailure as e:
            raise ConflictError("a concurrent write won (serialization failure)") from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL: {e.__class__.__name__}: {e}") from e

    def names_filter(self, column: str, param: str) -> str:
        return f"{column} = ANY(:{param})"

    def names_param(self, names: Sequence[str]) -> Any:
        return list(names)

    def close(self) -> None:
        self.pool.close()


# --- SQLite (embedded) ---------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _sqlite_params(params: Params | None) -> Params:
    return {k: _sqlite_value(v) for k, v in (params or {}).items()}


class _SqliteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params | None = None) -> list[Row]:
        return self.conn.execute(sql, _sqlite_params(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self.conn.executemany(sql, [_sqlite_params(r) for r in rows])


class SqliteBackend(Backend):
    """One file, one connection guarded by a lock; writers take the lock with BEGIN IMMEDIATE."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the embedded store {path}: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteTransaction(self.conn)
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            except sqlite3.IntegrityError as e:
                if "UNIQUE" in str(e):
                    raise ConflictError(f"a concurrent write won: {e}") from e
                raise StoreError(f"SQLite: {e}") from e
            except sqlite3.Error as e:
                raise StoreError(f"SQLite: {e}") from e

    def names_filter(self, column: str, param: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(:{param}))"

    def names_param(self, names: Sequence[str]) -> Any:
        return json.dumps(list(names))

    def close(self) -> None:
        self.conn.close()
