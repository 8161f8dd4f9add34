"""Reading the audit: records by filter, and the runs that received a version or a data key.

Every query pages by keyset, newest record first: a page goes on after the last row of the one
before (``after``), so a page costs the same at the millionth record as at the first. The
version-level rows come from ``audit_names`` (migration 0007), one row per secret version a
record names, derived from the record's entries by the readers (``index_pending``, the same
SQL on both stores but for the JSON functions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from fx_operator.domain.scopes import Owner
from fx_operator.storage.backends import Params, Row, Transaction, as_datetime
from fx_operator.storage.secret_store import AuditRecord

RESOLUTION = "resolve"
"""The action of the record that lists what a run received (sealed into its bundle)."""


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What ``fxctl audit`` narrows the records to; None leaves a field open. ``since`` is
    inclusive, ``until`` exclusive. ``scope``: records at that scope, or naming a version of it."""

    run_id: str | None = None
    name: str | None = None
    scope: str | None = None
    project: str | None = None
    package: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """An audit record with its id, which orders the log and is where a page goes on."""

    record_id: int
    record: AuditRecord


@dataclass(frozen=True, slots=True)
class Consumer:
    """One secret version one run received: which run, which version, under which data key."""

    record_id: int
    run_id: str
    project: str
    package: str
    at: datetime
    actor: str
    name: str
    scope: str
    version: int
    data_key_id: str | None  # None in records written before the key was recorded

    @property
    def key(self) -> ConsumerKey:
        return (self.record_id, self.name)


ConsumerKey = tuple[int, str]
"""(record id, name): where a listing of consumers goes on, newest first."""


# Which records a pass indexes: those queued before migration 0008, and those above the mark
# that name something and have no rows yet. (A record above the mark whose entries name no valid
# version is looked at again by each pass until the mark passes it.)
_ABOVE_THE_MARK = """
SELECT a.id FROM audit a
WHERE a.id > :indexed_through AND a.entries LIKE '%"name"%'
  AND NOT EXISTS (SELECT 1 FROM audit_names n WHERE n.audit_id = a.id)
"""
# One statement, one snapshot: the newest id it returns is the newest record of the snapshot
# the pass indexed, every committed one below it included. The mark is written in as a number:
# the session's generic plans would not know ``id > $1`` to be a few rows (a scan of the table).
_TODO_POSTGRESQL = """
WITH taken AS (DELETE FROM audit_names_pending RETURNING audit_id)
SELECT ARRAY(SELECT audit_id FROM taken UNION {above}), (SELECT MAX(id) FROM audit)
"""
_DERIVE_POSTGRESQL = """
INSERT INTO audit_names (audit_id, name, scope, project, package, version, data_key_id)
SELECT a.id, e.name, e.scope,
       CASE e.scope WHEN 'platform' THEN '' ELSE a.project END,
       CASE e.scope WHEN 'package' THEN a.package ELSE '' END,
       e.version, e."dataKeyId"
FROM audit a,
     jsonb_to_recordset(a.entries::jsonb)
       AS e(name text, scope text, version int, "dataKeyId" text)
WHERE a.id = ANY(CAST(:ids AS bigint[]))
  AND e.name IS NOT NULL AND e.scope IN ('package', 'project', 'platform')
  AND e.version IS NOT NULL
"""
_INDEX_SQLITE = (f"""
WITH todo AS (SELECT audit_id FROM audit_names_pending UNION {_ABOVE_THE_MARK})
INSERT INTO audit_names (audit_id, name, scope, project, package, version, data_key_id)
SELECT a.id, json_extract(e.value, '$.name'), json_extract(e.value, '$.scope'),
       CASE json_extract(e.value, '$.scope') WHEN 'platform' THEN '' ELSE a.project END,
       CASE json_extract(e.value, '$.scope') WHEN 'package' THEN a.package ELSE '' END,
       json_extract(e.value, '$.version'), json_extract(e.value, '$.dataKeyId')
FROM todo JOIN audit a ON a.id = todo.audit_id, json_each(a.entries) AS e
WHERE json_type(e.value) = 'object' AND json_type(e.value, '$.name') = 'text'
  AND json_extract(e.value, '$.scope') IN ('package', 'project', 'platform')
  AND json_type(e.value, '$.version') = 'integer'
""", "DELETE FROM audit_names_pending", "SELECT MAX(id) FROM audit")

# A lock of the transaction's, not a row lock: locking a row writes to it, and the pass would
# then wait for its commit to be flushed every time.
_PASSES_TAKE_TURNS = 0x66780002  # migrations take 0x66780001
_PROGRESS = "SELECT indexed_through, seen_through, writers_then FROM audit_names_progress"
_SET_PROGRESS = ("UPDATE audit_names_progress SET indexed_through = :indexed_through, "
                 "seen_through = :seen_through, writers_then = :writers_then")
# The transactions that can still commit a record into ``audit``: those holding a lock that
# allows writing to it (taken before the record's id, held until the end), this one aside.
_WRITERS = """
SELECT DISTINCT virtualtransaction FROM pg_locks
WHERE locktype = 'relation' AND relation = 'audit'::regclass
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
               'AccessExclusiveLock')
  AND pid IS DISTINCT FROM pg_backend_pid()
ORDER BY 1
"""
_STILL_RUNNING = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE virtualtransaction = ANY(:writers))
"""


def index_pending(tx: Transaction, dialect: str) -> None:
    """Derive the ``audit_names`` rows of the records written since the last pass, in ``tx``:
    a reader's first step (writers do nothing for it: migration 0008 says why and what it saved).

    A pass indexes every record above the mark ``indexed_through`` that has no rows yet, then
    moves the mark up to the newest record the pass before saw (``seen_through``), provided
    none of the transactions writing to ``audit`` when that pass looked (``writers_then``) is
    still running. That is what makes it right on PostgreSQL, where ids are taken in one order
    and committed in another: a record below the newest one a pass sees, but not visible to it,
    belongs to a transaction that took its id before that newest one was committed, so held its
    write lock on ``audit`` then and still did when the pass listed the writers (or had
    finished). Once those are all over, the next pass sees it (above the mark, since the mark
    is still below it). Ids come from the table's own sequence (no cache: in call order).

    Passes take turns (two readers at once: the second waits for the first and finds its
    rows). On SQLite the writers wait for each other and for the reader: none is in flight."""
    if dialect != "postgresql":  # nothing in flight: the mark goes up to the newest record
        [(indexed_through, _, _)] = tx.execute(_PROGRESS)
        index, dequeue, newest_sql = _INDEX_SQLITE
        tx.execute(index, {"indexed_through": indexed_through})
        tx.execute(dequeue)
        [(newest,)] = tx.execute(newest_sql)
        if newest is not None and newest != indexed_through:
            tx.execute(_SET_PROGRESS, {"indexed_through": newest, "seen_through": newest,
                                       "writers_then": ""})
        return
    # Each statement below must see what committed before it began.
    tx.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    tx.execute("SELECT pg_advisory_xact_lock(:key)", {"key": _PASSES_TAKE_TURNS})
    [progress] = tx.execute(_PROGRESS)
    indexed_through, seen_through, writers_then = progress
    writers = writers_then.split()
    finished = not writers or not tx.execute(_STILL_RUNNING, {"writers": writers})[0][0]
    # Unless one of them may yet commit a record the last pass missed, the mark goes up.
    mark = seen_through if finished else indexed_through
    above = _ABOVE_THE_MARK.replace(":indexed_through", str(int(indexed_through)))
    [(todo, newest)] = tx.execute(_TODO_POSTGRESQL.format(above=above))
    if todo:
        tx.execute(_DERIVE_POSTGRESQL, {"ids": todo})
    newest = seen_through if newest is None else newest
    if finished and newest == seen_through:
        writers = []  # nothing new, nothing missed: no record below the newest is in flight
    else:
        writers = [row[0] for row in tx.execute(_WRITERS)]  # listed after the pass's snapshot
    now = (mark, newest, " ".join(writers))
    if now != tuple(progress):  # else nothing to write (a read-only commit: no WAL flush)
        tx.execute(_SET_PROGRESS, dict(zip(("indexed_through", "seen_through", "writers_then"),
                                           now, strict=True)))


def records(tx: Transaction, where: AuditFilter, *, after: int | None = None,
            limit: int | None = None) -> list[LoggedRecord]:
    """Records that match ``where``, newest first, those older than record ``after``."""
    terms, params = _record_terms(where)
    if after is not None:
        terms.append("a.id < :after")
        params["after"] = after
    sql = ("SELECT a.id, a.at, a.actor, a.action, a.scope, a.project, a.package, a.run_id, "
           "a.entries FROM audit a")
    if terms:
        sql += " WHERE " + " AND ".join(terms)
    sql += " ORDER BY a.id DESC"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [LoggedRecord(int(r[0]), AuditRecord(r[2], r[3], r[5], r[6], r[4], r[7],
                                                json.loads(r[8]), as_datetime(r[1])))
            for r in tx.execute(sql, params)]


def _record_terms(where: AuditFilter) -> tuple[list[str], Params]:
    terms: list[str] = []
    params: Params = {}
    for column, value in (("run_id", where.run_id), ("project", where.project),
                          ("package", where.package), ("actor", where.actor),
                          ("action", where.action)):
        if value is not None:
            terms.append(f"a.{column} = :{column}")
            params[column] = value
    if where.since is not None:
        terms.append("a.at >= :since")
        params["since"] = where.since
    if where.until is not None:
        terms.append("a.at < :until")
        params["until"] = where.until
    named = "EXISTS (SELECT 1 FROM audit_names n WHERE n.audit_id = a.id AND {})"
    if where.name is not None:
        params["name"] = where.name
        if where.scope is not None:
            params["scope"] = where.scope
            terms.append(named.format("n.name = :name AND n.scope = :scope"))
        else:
            terms.append(named.format("n.name = :name"))
    elif where.scope is not None:
        params["scope"] = where.scope
        terms.append(f"(a.scope = :scope OR {named.format('n.scope = :scope')})")
    return terms, params


_CONSUMERS = """
SELECT n.audit_id, a.run_id, a.project, a.package, a.at, a.actor, n.name, n.scope, n.version,
       n.data_key_id
FROM audit_names n JOIN audit a ON a.id = n.audit_id
WHERE {match} AND a.action = '{resolution}' AND a.run_id IS NOT NULL {after}
ORDER BY n.audit_id DESC, n.name DESC
"""
# A row comparison ``(audit_id, name) < (...)`` is not an index condition on PostgreSQL when
# the index has other columns between them; this spelling leaves ``audit_id <=`` as one.
_AFTER = ("AND n.audit_id <= :after_id AND (n.audit_id < :after_id OR n.name < :after_name)")


def consumers_of_version(tx: Transaction, owner: Owner, name: str, version: int | None, *,
                         after: ConsumerKey | None = None,
                         limit: int | None = None) -> list[Consumer]:
    """The runs that received ``name`` of ``owner`` (that ``version``, or any), newest first."""
    match = ("n.name = :name AND n.scope = :scope AND n.project = :project "
             "AND n.package = :package")
    params: Params = {"name": name, "scope": owner.scope.value, "project": owner.project,
                      "package": owner.package}
    if version is not None:
        match += " AND n.version = :version"
        params["version"] = version
    return _consumers(tx, match, params, after, limit)


def consumers_of_data_key(tx: Transaction, data_key_id: str, name: str | None = None, *,
                          after: ConsumerKey | None = None,
                          limit: int | None = None) -> list[Consumer]:
    """The runs that received a value wrapped by data key ``data_key_id`` (only ``name``'s,
    if given), newest first: one row per name."""
    match = "n.data_key_id = :data_key_id"
    params: Params = {"data_key_id": data_key_id}
    if name is not None:
        match += " AND n.name = :name"
        params["name"] = name
    return _consumers(tx, match, params, after, limit)


def _consumers(tx: Transaction, match: str, params: Params, after: ConsumerKey | None,
               limit: int | None) -> list[Consumer]:
    sql = _CONSUMERS.format(match=match, resolution=RESOLUTION,
                            after="" if after is None else _AFTER)
    if after is not None:
        params["after_id"], params["after_name"] = after
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [_consumer(r) for r in tx.execute(sql, params)]


def _consumer(row: Row) -> Consumer:
    return Consumer(int(row[0]), row[1], row[2], row[3], as_datetime(row[4]), row[5], row[6],
                    row[7], int(row[8]), row[9])
