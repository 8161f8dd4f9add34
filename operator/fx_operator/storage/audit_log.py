"""Reading the audit: records by filter, and the runs that received a version or a data key.

Every query pages by keyset, newest record first: a page goes on after the last row of the one
before (``after``), so a page costs the same at the millionth record as at the first. The
version-level rows come from ``audit_names`` (migration 0007), one row per secret version a
record names, kept from the record's entries by the database itself on both stores.
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


_INDEX_POSTGRESQL = """
WITH taken AS (DELETE FROM audit_names_pending RETURNING audit_id)
INSERT INTO audit_names (audit_id, name, scope, project, package, version, data_key_id)
SELECT a.id, e.name, e.scope,
       CASE e.scope WHEN 'platform' THEN '' ELSE a.project END,
       CASE e.scope WHEN 'package' THEN a.package ELSE '' END,
       e.version, e."dataKeyId"
FROM taken JOIN audit a ON a.id = taken.audit_id,
     jsonb_to_recordset(a.entries::jsonb) AS e(name text, scope text, version int, "dataKeyId" text)
WHERE e.name IS NOT NULL AND e.scope IN ('package', 'project', 'platform')
  AND e.version IS NOT NULL
"""
# SQLite: one writer at a time (BEGIN IMMEDIATE), so nothing is queued between the two.
_INDEX_SQLITE = ("""
INSERT INTO audit_names (audit_id, name, scope, project, package, version, data_key_id)
SELECT a.id, json_extract(e.value, '$.name'), json_extract(e.value, '$.scope'),
       CASE json_extract(e.value, '$.scope') WHEN 'platform' THEN '' ELSE a.project END,
       CASE json_extract(e.value, '$.scope') WHEN 'package' THEN a.package ELSE '' END,
       json_extract(e.value, '$.version'), json_extract(e.value, '$.dataKeyId')
FROM audit_names_pending p JOIN audit a ON a.id = p.audit_id, json_each(a.entries) AS e
WHERE json_type(e.value) = 'object' AND json_type(e.value, '$.name') = 'text'
  AND json_extract(e.value, '$.scope') IN ('package', 'project', 'platform')
  AND json_type(e.value, '$.version') = 'integer'
""", "DELETE FROM audit_names_pending")


def index_pending(tx: Transaction, dialect: str) -> None:
    """Derive ``audit_names`` rows of the records written since the last call (their ids queued
    by the trigger of migration 0007), in ``tx``: a reader's first step. On PostgreSQL two
    readers at once each take their own records (the queue's rows are deleted as taken)."""
    if dialect == "postgresql":
        tx.execute(_INDEX_POSTGRESQL)
    else:
        for statement in _INDEX_SQLITE:
            tx.execute(statement)


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
