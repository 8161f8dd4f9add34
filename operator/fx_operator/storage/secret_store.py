"""Rows of the secret store: data keys, secret versions, audit. Ciphertext in, ciphertext out.

Encryption is the service's job; this module only moves blobs and keeps the rules of the tables:
a write adds a version (a NULL blob is a tombstone) and moves the ``is_current`` mark; nothing is
updated in place except during key rotation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from fx_operator.domain.precedence import Candidate, most_specific
from fx_operator.domain.precedence import ScopeRule as ScopeRule  # callers' import, kept
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.domain.value_header import VALUE_HEADER_BYTES, header_data_key_id
from fx_operator.storage.backends import (
    Backend,
    Params,
    Row,
    SqliteBackend,
    Transaction,
    as_datetime,
    utcnow,
)
from fx_operator.storage.migrating import ensure_current

# From this many versions in one write on, they go in as one bulk insert (COPY on PostgreSQL):
# below it, COPY's extra round trips (the column types, the copy itself) cost more than they save.
BULK_ROWS = 64

OWNER_MATCH = "scope = :scope AND project = :project AND package = :package"


def _owner_params(owner: Owner) -> Params:
    return {"scope": owner.scope.value, "project": owner.project, "package": owner.package}


@lru_cache(maxsize=4096)
def _owner_of(scope: str, project: str, package: str) -> Owner:
    return Owner(Scope(scope), project, package)


def _owner(row: Row, at: int = 0) -> Owner:
    return _owner_of(row[at], row[at + 1], row[at + 2])


@dataclass(frozen=True, slots=True)
class DataKeyRecord:
    key_id: str
    owner: Owner
    wrapped: bytes
    master_key_id: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class VersionRecord:
    owner: Owner
    name: str
    version: int
    blob: bytes | None  # None: a tombstone
    data_key_id: str | None
    created_at: datetime
    actor: str
    is_current: bool = True

    @property
    def deleted(self) -> bool:
        return self.blob is None


class ListedSecret(NamedTuple):
    """A current version as listings show it: no blob, read or kept. A tuple of what a listing
    prints, as the database hands it over (the owner's parts as text, the time as ISO 8601
    text): a listing of 100k secrets makes no object per owner or time. (With the time made
    text by the database and the rows printed a column at a time, cli/output.emit_columns:
    ``fxctl secrets list --all`` of 100k went from 1.49 to 0.95 s as JSON and 1.24 to 1.10 s as
    a table on PostgreSQL, 1.28 to 0.84 and 1.23 to 0.94 s on the embedded store; interleaved
    runs, load 1.0, bench/bench_cli_scale.py's data.)"""

    scope: str
    project: str
    package: str
    name: str
    version: int
    deleted: bool
    created: str  # ISO 8601 in UTC, to the second: 2026-01-31T12:00:00+00:00
    actor: str

    @property
    def owner(self) -> Owner:
        return _owner_of(self.scope, self.project, self.package)

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    @property
    def key(self) -> ListingKey:
        """Where this row is in a listing's order: a page goes on after it."""
        return (self.scope, self.project, self.package, self.name)


# A listing's times as ISO 8601 text in UTC, to the second, made by the database: machine
# output prints them as they are, where datetime.isoformat took 170-200 ms of 100k rows (see
# ListedSecret for the measured gain). (On SQLite, taking the first 19 characters of the text
# stored instead of strftime's: no gain seen at the CLI's level, 0.680 against 0.684 s.)
_LISTED_TIME = {
    "postgresql": """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')""",
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%S+00:00', created_at)",
}

ListingKey = tuple[str, str, str, str]
"""(scope, project, package, name): a listing's order, and where its next page starts."""

ResolvedRow = Candidate
"""The winning current version of one name for a run: (scope, name, version, blob), the
precedence rule's candidate as the driver returns it."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what to which names, scopes and versions. There is no field for a value."""

    actor: str
    action: str
    project: str
    package: str
    scope: str | None = None
    run_id: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    at: datetime = field(default_factory=utcnow)


def _current_filter(scope: Scope | None, project: str | None, package: str | None,
                    include_deleted: bool, name: str | None = None) -> tuple[list[str], Params]:
    """The WHERE terms (and their parameters) of a listing of current versions."""
    where = ["is_current"]
    params: Params = {}
    for column, value in (("scope", scope), ("project", project), ("package", package),
                          ("name", name)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value.value if isinstance(value, Scope) else value
    if not include_deleted:
        where.append("blob IS NOT NULL")
    return where, params


_VERSION_COLUMNS = ("scope, project, package, name, version, blob, data_key_id, created_at, actor, "
                    "is_current")


def _version(row: Row) -> VersionRecord:
    return VersionRecord(_owner(row), row[3], row[4], None if row[5] is None else bytes(row[5]),
                         row[6], as_datetime(row[7]), row[8], bool(row[9]))


_OWNER_CHAIN = """
  v.is_current AND v.blob IS NOT NULL
  AND ((v.scope = 'package' AND v.project = :project AND v.package = :package)
    OR (v.scope = 'project' AND v.project = :project AND v.package = '')
    OR (v.scope = 'platform' AND v.project = '' AND v.package = ''))
"""
# Only what a resolution needs: the owner follows from the scope (the chain is fixed by the
# request) and the data key's id is in the blob's header, so neither crosses the wire. No join to
# data_keys: the service keeps unwrapped data keys and asks for the few it lacks.
#
# Every current version in the chain comes back, shadowed ones too (at most three per name), and
# the domain's precedence rule (domain/precedence.py) picks the winners; shadowed blobs are never
# decrypted. Picking them in SQL
# (DISTINCT ON, or a window) sorts the rows, blobs and all, and listing the winners for the audit
# record there is another pass before the first row leaves: on PostgreSQL the two cost about
# 300 µs of a 100-name resolution, picking and listing them here about 50 µs.
_RESOLVE = f"""
SELECT v.scope, v.name, v.version, v.blob FROM secret_versions v
WHERE {_OWNER_CHAIN} {{names_filter}}
"""


@lru_cache(maxsize=4)
def _resolve(names_filter: str) -> str:
    return _RESOLVE.format(names_filter=names_filter)


_AS_IS_IN_JSON = re.compile(r"[A-Za-z0-9_.-]*")


def _resolution_entries(rows: list[ResolvedRow]) -> str:
    """The audit entries of a resolution, the JSON list of {name, scope, version, dataKeyId}
    every audit record of secrets has, written out: a hundred per resolution, in under half
    json.dumps's time. Secret names are plain (``NAME_PATTERN``); any other is escaped by
    json.dumps. ``dataKeyId``, the data key that wrapped the value delivered (from the blob's
    header; a resolution's blobs share a few keys, each decoded once), is what ``fxctl audit
    consumers --data-key`` finds runs by. (Written by hand: 62 µs of 540 µs CPU per 100-name
    resolution saved against json.dumps, bench_store's data, interleaved, thread time. In one
    loop, the version as ``{version}`` (an integer column) rather than ``{version:d}``, which
    parses a format spec per entry: 37 -> 29 µs CPU, 21 / 14 µs at p50 per resolution, before
    the audit INSERT goes out (bench_store's data, one process taking turns with the old code,
    2500 runs; durable / asynchronous audit).)"""
    escape = not _AS_IS_IN_JSON.fullmatch("".join([row[1] for row in rows]))
    key_ids: dict[bytes, str] = {}
    entries = []
    for scope, name, version, blob in rows:
        header = blob[:VALUE_HEADER_BYTES]
        key_id = key_ids.get(header)
        if key_id is None:
            key_id = key_ids[header] = header_data_key_id(header)
        quoted = json.dumps(name)[1:-1] if escape else name
        entries.append(f'{{"name":"{quoted}","scope":"{scope}","version":{version},'
                       f'"dataKeyId":"{key_id}"}}')
    return "[" + ",".join(entries) + "]"


_AUDIT = ("INSERT INTO audit (at, actor, action, scope, project, package, run_id, entries) "
          "VALUES (:at, :actor, :action, :scope, :project, :package, :run_id, :entries)")


def _audit_params(record: AuditRecord) -> Params:
    return {"at": record.at, "actor": record.actor, "action": record.action,
            "scope": record.scope, "project": record.project, "package": record.package,
            "run_id": record.run_id, "entries": json.dumps(record.entries)}


# PostgreSQL: ``set_config(..., true)`` on synchronous_commit chooses how this transaction
# commits (see SecretStore.durable_read_audit).
_AUDIT_RESOLUTION_PG = """
INSERT INTO audit (at, actor, action, scope, project, package, run_id, entries)
SELECT now(), :actor, 'resolve', NULL, :project, :package, :run_id, :entries
FROM (SELECT set_config('synchronous_commit', :read_commit, true)) AS mode
"""


class SecretStore:
    """Tables of one store on one backend (PostgreSQL or the embedded SQLite file)."""

    def __init__(self, backend: Backend, *, durable_read_audit: bool = True) -> None:
        self.backend = backend
        # PostgreSQL: a resolution's audit record is committed in the same transaction as the
        # read; without this, asynchronously (synchronous_commit=off: in the WAL at once, on disk
        # within ~0.6 s; a server crash in that window can lose it, never corrupt anything).
        # Writes of secrets always commit synchronously.
        self.durable_read_audit = durable_read_audit

    @classmethod
    def open_postgres(cls, url: str, *, pool_max_size: int = 10, migrate: bool = True,
                      durable_read_audit: bool = True) -> SecretStore:
        from fx_operator.storage.postgres_backend import PostgresBackend  # psycopg: here only

        store = cls._migrated(PostgresBackend(url, max_size=pool_max_size), migrate)
        store.durable_read_audit = durable_read_audit
        return store

    @classmethod
    def open_embedded(cls, path: Any, *, migrate: bool = True) -> SecretStore:
        return cls._migrated(SqliteBackend(path), migrate)

    @classmethod
    def _migrated(cls, backend: Backend, migrate: bool) -> SecretStore:
        """The store on ``backend``, its schema brought up to date first (closed on failure)."""
        if migrate:
            try:
                ensure_current(backend)
            except BaseException:
                backend.close()
                raise
        return cls(backend)

    def close(self) -> None:
        self.backend.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.backend.transaction() as tx:
            yield tx

    # --- metadata -----------------------------------------------------------------------

    def get_meta(self, tx: Transaction, key: str) -> str | None:
        rows = tx.execute("SELECT value FROM store_meta WHERE key = :key", {"key": key})
        return rows[0][0] if rows else None

    def set_meta(self, tx: Transaction, key: str, value: str) -> None:
        tx.execute("INSERT INTO store_meta (key, value) VALUES (:key, :value) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   {"key": key, "value": value})

    def hold_master_key_id(self, tx: Transaction, key: str, candidate: str, *,
                           exclusive: bool = False) -> str:
        """The master-key id recorded under ``key``, held until ``tx`` ends: shared by every
        transaction that wraps under the master key, exclusively by a rotation, so none of them
        commits across a rotation. Recorded as ``candidate`` on a store that has none yet.

        PostgreSQL: a lock on the meta row; one granted after waiting for a rotation returns
        the id the rotation committed. SQLite: every transaction already holds the write lock
        (BEGIN IMMEDIATE), so reading the row is enough.
        """
        locking = ""
        if self.backend.dialect == "postgresql":
            locking = " FOR UPDATE" if exclusive else " FOR SHARE"
        select = f"SELECT value FROM store_meta WHERE key = :key{locking}"
        rows = tx.execute(select, {"key": key})
        if not rows:
            tx.execute("INSERT INTO store_meta (key, value) VALUES (:key, :value) "
                       "ON CONFLICT (key) DO NOTHING", {"key": key, "value": candidate})
            rows = tx.execute(select, {"key": key})
        return str(rows[0][0])

    # --- data keys ----------------------------------------------------------------------

    def active_data_key(self, tx: Transaction, owner: Owner, *,
                        lock: bool = False) -> DataKeyRecord | None:
        """The owner's key for new writes; ``lock`` makes writers of one owner take turns."""
        locking = " FOR UPDATE" if lock and self.backend.dialect == "postgresql" else ""
        rows = tx.execute("SELECT id, wrapped, master_key_id FROM data_keys "
                          f"WHERE {OWNER_MATCH} AND active{locking}", _owner_params(owner))
        return DataKeyRecord(rows[0][0], owner, bytes(rows[0][1]), rows[0][2]) if rows else None

    def data_keys(self, tx: Transaction, ids: Sequence[str] | None = None) -> list[DataKeyRecord]:
        sql = "SELECT id, scope, project, package, wrapped, master_key_id, active FROM data_keys"
        params: Params = {}
        if ids is not None:
            sql += " WHERE " + self.backend.names_filter("id", "ids")
            params["ids"] = self.backend.names_param(ids)
        return [DataKeyRecord(r[0], _owner(r, 1), bytes(r[4]), r[5], bool(r[6]))
                for r in tx.execute(sql + " ORDER BY id", params)]

    def count_data_keys(self, tx: Transaction) -> int:
        return int(tx.execute("SELECT count(*) FROM data_keys")[0][0])

    def insert_data_key(self, tx: Transaction, record: DataKeyRecord) -> None:
        tx.execute("INSERT INTO data_keys (id, scope, project, package, wrapped, master_key_id, "
                   "active, created_at) VALUES (:id, :scope, :project, :package, :wrapped, "
                   ":master_key_id, :active, :created_at)",
                   {"id": record.key_id, **_owner_params(record.owner), "wrapped": record.wrapped,
                    "master_key_id": record.master_key_id, "active": record.active,
                    "created_at": utcnow()})

    def rewrap_data_keys(self, tx: Transaction, rewrapped: Sequence[tuple[str, bytes]],
                         master_key_id: str) -> None:
        tx.executemany("UPDATE data_keys SET wrapped = :wrapped, master_key_id = :master "
                       "WHERE id = :id",
                       [{"id": key_id, "wrapped": wrapped, "master": master_key_id}
                        for key_id, wrapped in rewrapped])

    def deactivate_data_key(self, tx: Transaction, key_id: str) -> None:
        tx.execute("UPDATE data_keys SET active = :no WHERE id = :id", {"no": False, "id": key_id})

    def retire_data_key(self, tx: Transaction, key_id: str) -> None:
        """Drop a data key no blob refers to any more (after a data-key rotation)."""
        tx.execute("DELETE FROM data_keys WHERE id = :id", {"id": key_id})

    # --- versions -----------------------------------------------------------------------

    def latest_versions(self, tx: Transaction, owner: Owner) -> dict[str, int]:
        """Highest version of every name the owner ever had, tombstones included."""
        rows = tx.execute(f"SELECT name, max(version) FROM secret_versions WHERE {OWNER_MATCH} "
                          "GROUP BY name", _owner_params(owner))
        return {r[0]: int(r[1]) for r in rows}

    def add_versions(self, tx: Transaction, owner: Owner, versions: Mapping[str, int],
                     records: Iterable[VersionRecord]) -> list[VersionRecord]:
        """Append one owner's new ``versions`` (name -> version) and make them current; returns
        the records written. ``records`` holds exactly those versions and is read as they are
        written: on PostgreSQL each goes into the COPY as it comes, so making them (encrypting
        the values) overlaps the server's work on the rows before. (Imports of 10k names on
        PostgreSQL, six in a row, three times, alternating with the code before: median 41-43k
        before, 45-53k secrets/s after; the COPY alone 185 to 149 ms.)"""
        if not versions:
            return []
        # A name's first version has no row before it to retire: an import of new names (the
        # bulk case) skips this statement, 14 ms of a 10k import's ~460 on PostgreSQL.
        if replaced := [name for name, version in versions.items() if version > 1]:
            tx.execute(f"UPDATE secret_versions SET is_current = :false WHERE {OWNER_MATCH} AND "
                       f"is_current AND {self.backend.names_filter('name', 'names')}",
                       {**_owner_params(owner), "false": False,
                        "names": self.backend.names_param(replaced)})
        scope, project, package = owner.scope.value, owner.project, owner.package
        written: list[VersionRecord] = []

        def rows() -> Iterator[Row]:
            for r in records:
                if (r.owner is not owner and r.owner != owner) or versions.get(r.name) != r.version:
                    raise ValueError(f"{r.name} v{r.version} of {r.owner} is not one of the "
                                     f"versions of {owner} being written")
                written.append(r)
                yield (scope, project, package, r.name, r.version, r.blob, r.data_key_id,
                       r.created_at, r.actor, True)

        if len(versions) >= BULK_ROWS:  # an import: COPY on PostgreSQL
            tx.insert_rows("secret_versions", _VERSION_COLUMNS.split(", "), rows())
        else:
            columns = _VERSION_COLUMNS.split(", ")
            tx.executemany(
                f"INSERT INTO secret_versions ({_VERSION_COLUMNS}) VALUES (:scope, :project, "
                ":package, :name, :version, :blob, :data_key_id, :created_at, :actor, "
                ":is_current)", [dict(zip(columns, row, strict=True)) for row in rows()])
        if len(written) != len(versions):
            raise ValueError(f"{len(written)} records for {len(versions)} versions of {owner}")
        return written

    def version(self, tx: Transaction, owner: Owner, name: str,
                version: int) -> VersionRecord | None:
        rows = tx.execute(f"SELECT {_VERSION_COLUMNS} FROM secret_versions WHERE {OWNER_MATCH} "
                          "AND name = :name AND version = :version",
                          {**_owner_params(owner), "name": name, "version": version})
        return _version(rows[0]) if rows else None

    def history(self, tx: Transaction, owner: Owner, name: str) -> list[VersionRecord]:
        rows = tx.execute(f"SELECT {_VERSION_COLUMNS} FROM secret_versions WHERE {OWNER_MATCH} "
                          "AND name = :name ORDER BY version",
                          {**_owner_params(owner), "name": name})
        return [_version(r) for r in rows]

    def owner_versions(self, tx: Transaction, owner: Owner) -> list[VersionRecord]:
        rows = tx.execute(f"SELECT {_VERSION_COLUMNS} FROM secret_versions WHERE {OWNER_MATCH} "
                          "AND blob IS NOT NULL ORDER BY name, version", _owner_params(owner))
        return [_version(r) for r in rows]

    def replace_blobs(self, tx: Transaction, owner: Owner,
                      blobs: Sequence[tuple[str, int, bytes, str]]) -> None:
        """Data-key rotation only: (name, version, blob, data_key_id) re-encrypted in place."""
        tx.executemany(f"UPDATE secret_versions SET blob = :blob, data_key_id = :key WHERE "
                       f"{OWNER_MATCH} AND name = :name AND version = :version",
                       [{**_owner_params(owner), "name": n, "version": v, "blob": b, "key": k}
                        for n, v, b, k in blobs])

    def current(self, tx: Transaction, *, scope: Scope | None = None, project: str | None = None,
                package: str | None = None, include_deleted: bool = False) -> list[VersionRecord]:
        where, params = _current_filter(scope, project, package, include_deleted)
        rows = tx.execute(f"SELECT {_VERSION_COLUMNS} FROM secret_versions WHERE "
                          f"{' AND '.join(where)} ORDER BY scope, project, package, name", params)
        return [_version(r) for r in rows]

    def chain_versions(self, tx: Transaction, project: str,
                       package: str) -> dict[str, dict[str, int]]:
        """Name -> {scope: current version} over a package's three owners: what could be
        delivered, shadowed ones too (no blob read: for explaining, never for running)."""
        rows = tx.execute(f"SELECT v.scope, v.name, v.version FROM secret_versions v "
                          f"WHERE {_OWNER_CHAIN}", {"project": project, "package": package})
        found: dict[str, dict[str, int]] = {}
        for scope, name, version in rows:
            found.setdefault(name, {})[scope] = int(version)
        return found

    def listing(self, tx: Transaction, *, scope: Scope | None = None, project: str | None = None,
                package: str | None = None, include_deleted: bool = False,
                after: ListingKey | None = None, limit: int | None = None,
                name: str | None = None) -> list[ListedSecret]:
        """Current versions in (scope, project, package, name) order, metadata only: the blob
        is neither fetched nor kept (on 100k secrets it was most of the bytes read). A page
        starts after ``after`` (keyset paging on the one-current-version index); ``name``: only
        that name's owners (on the current-by-name index)."""
        where, params = _current_filter(scope, project, package, include_deleted, name)
        if after is not None:
            where.append("(scope, project, package, name) > (:after_scope, :after_project, "
                         ":after_package, :after_name)")
            params.update(zip(("after_scope", "after_project", "after_package", "after_name"),
                              after, strict=True))
        sql = (f"SELECT scope, project, package, name, version, blob IS NULL, "
               f"{_LISTED_TIME[self.backend.dialect]}, actor "
               f"FROM secret_versions WHERE {' AND '.join(where)} "
               "ORDER BY scope, project, package, name")
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        rows = tx.execute(sql, params)
        if self.backend.dialect == "sqlite":  # its booleans are 0 and 1
            return [ListedSecret(s, p, k, n, v, d == 1, c, a) for s, p, k, n, v, d, c, a in rows]
        return list(map(ListedSecret._make, rows))

    # --- resolution -----------------------------------------------------------------------

    def _resolution_query(self, project: str, package: str,
                          names: Sequence[str] | None) -> tuple[str, Params]:
        """The candidates' SELECT (every scope's current version of the names) and its
        parameters."""
        params: Params = {"project": project, "package": package}
        names_filter = ""
        if names is not None:
            names_filter = "AND " + self.backend.names_filter("v.name", "names")
            params["names"] = self.backend.names_param(names)
        return _resolve(names_filter), params

    def resolving(self, project: str, package: str, names: Sequence[str] | None, *, actor: str,
                  run_id: str | None, allowed: ScopeRule | None = None
                  ) -> AbstractContextManager[list[ResolvedRow]]:
        """The winning version of each name for a package (read in one round trip, audited in
        the same transaction), for the block to use once. On PostgreSQL the block runs while the
        audit record is being committed, and leaving it waits for the commit's confirmation (an
        error then, if it failed: nothing the block made leaves). ``allowed`` drops rows a run
        may not receive (pins, policy): they are neither winners, nor in the audit record."""
        # Returns the backend's context manager (no generator of its own), and on PostgreSQL
        # builds only the parameters its statement names (no AuditRecord, no json.dumps of an
        # empty list, no clock read: ``now()``): 22 / 17 µs at p50 per 100-name resolution
        # (bench_store's data, one process taking turns with the old code, 2500 runs;
        # durable / asynchronous audit).
        query, params = self._resolution_query(project, package, names)
        if self.backend.dialect == "postgresql":
            write = _AUDIT_RESOLUTION_PG
            record: Params = {"actor": actor, "project": project, "package": package,
                              "run_id": run_id,
                              "read_commit": "on" if self.durable_read_audit else "off"}
        else:
            write = _AUDIT
            record = _audit_params(AuditRecord(actor, "resolve", project, package,
                                               run_id=run_id))

        def audited(batches: Iterable[list[ResolvedRow]]) -> tuple[list[ResolvedRow], Params]:
            winners = most_specific(batches, allowed)
            return winners, {**record, "entries": _resolution_entries(winners)}

        return self.backend.read_then_write(query, params, write, audited)

    def resolve_in(self, tx: Transaction, project: str, package: str,
                   names: Sequence[str] | None, *, actor: str, run_id: str | None,
                   allowed: ScopeRule | None = None) -> list[ResolvedRow]:
        """``resolve`` inside a transaction the caller commits (durably, with what else it
        wrote): the winning rows, their audit record written in ``tx``."""
        query, params = self._resolution_query(project, package, names)
        winners = most_specific([tx.execute(query, params)], allowed)
        tx.execute(_AUDIT, {**_audit_params(AuditRecord(actor, "resolve", project, package,
                                                        run_id=run_id)),
                            "entries": _resolution_entries(winners)})
        return winners

    # --- audit ----------------------------------------------------------------------------

    def audit(self, tx: Transaction, record: AuditRecord) -> None:
        tx.execute(_AUDIT, _audit_params(record))

    def audit_records(self, tx: Transaction, *, run_id: str | None = None,
                      limit: int = 100) -> list[AuditRecord]:
        sql = ("SELECT at, actor, action, scope, project, package, run_id, entries FROM audit")
        params: Params = {"limit": limit}
        if run_id is not None:
            sql += " WHERE run_id = :run_id"
            params["run_id"] = run_id
        rows = tx.execute(sql + " ORDER BY id DESC LIMIT :limit", params)
        return [AuditRecord(r[1], r[2], r[4], r[5], r[3], r[6], json.loads(r[7]), as_datetime(r[0]))
                for r in rows]
