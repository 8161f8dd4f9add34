"""What the store needs of a database, and the embedded SQLite file that provides it.

SQL is written once with ``:name`` placeholders; each backend adapts it and converts driver errors
into ours (``ConflictError`` for a lost race, ``StoreError`` for the rest). PostgreSQL's backend is
in ``postgres_backend`` and imported only when a PostgreSQL URL is opened: the embedded store
never imports psycopg. Nothing else in the project imports a database driver.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fx_operator.exceptions import ConflictError, StoreError

Params = dict[str, Any]
Row = tuple[Any, ...]
K = TypeVar("K")


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

    @abstractmethod
    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> None:
        """Add many rows to ``table`` at once (a bulk import): PostgreSQL streams them with
        COPY, far faster than one INSERT per row."""


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

    @contextmanager
    def read_then_write(self, read_sql: str, params: Params, write_sql: str,
                        after_read: Callable[[Iterable[list[Row]]], tuple[K, Params]]
                        ) -> Iterator[K]:
        """One shot, one transaction: ``read_sql``, then ``write_sql`` with the parameters
        ``after_read`` makes of the rows read (handed over in batches); the block gets what
        ``after_read`` kept of them. Here the block runs once the transaction committed;
        PostgreSQL hands rows over while the server still sends the rest and runs the block
        while the write and its commit go on, leaving it only once the commit is confirmed
        (``pg_pipeline``). Either way, nothing the block made leaves it unless the write
        committed."""
        with self.transaction() as tx:
            kept, write_params = after_read([tx.execute(read_sql, params)])
            tx.execute(write_sql, write_params)
        yield kept

    @abstractmethod
    def names_filter(self, column: str, param: str) -> str:
        """SQL that is true when ``column`` is one of the names bound to ``param``."""

    @abstractmethod
    def names_param(self, names: Sequence[str]) -> Any: ...

    @abstractmethod
    def close(self) -> None: ...


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

    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> None:
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        self.conn.executemany(sql, ([_sqlite_value(v) for v in row] for row in rows))


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
