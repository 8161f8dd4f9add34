"""Rows of run results and of per-package state, in the same store as the secrets.

A result holds the masked tail of the output and the resolution manifest (names, scopes, versions):
never a value. State is one row per key, so two runs writing different keys never lose each
other's write, and two writing the same key leave the later one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fx_operator.storage.backends import Params, Transaction, as_datetime, utcnow


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    project: str
    package: str
    actor: str
    exit_code: int
    signal: str | None
    timed_out: bool
    started_at: datetime
    finished_at: datetime
    duration_s: float
    output_tail: str
    output_truncated: bool
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)


_RUN_COLUMNS = ("run_id, project, package, actor, exit_code, signal, timed_out, started_at, "
                "finished_at, duration_s, output_tail, output_truncated, manifest")


def _run(row: Any) -> RunRecord:
    return RunRecord(row[0], row[1], row[2], row[3], int(row[4]), row[5], bool(row[6]),
                     as_datetime(row[7]), as_datetime(row[8]), float(row[9]), row[10],
                     bool(row[11]), json.loads(row[12]))


def add_run(tx: Transaction, record: RunRecord) -> None:
    tx.execute(f"INSERT INTO run_results ({_RUN_COLUMNS}) VALUES (:run_id, :project, :package, "
               ":actor, :exit_code, :signal, :timed_out, :started_at, :finished_at, :duration_s, "
               ":output_tail, :output_truncated, :manifest)",
               {"run_id": record.run_id, "project": record.project, "package": record.package,
                "actor": record.actor, "exit_code": record.exit_code, "signal": record.signal,
                "timed_out": record.timed_out, "started_at": record.started_at,
                "finished_at": record.finished_at, "duration_s": record.duration_s,
                "output_tail": record.output_tail, "output_truncated": record.output_truncated,
                "manifest": json.dumps(record.manifest)})


def get_run(tx: Transaction, run_id: str) -> RunRecord | None:
    rows = tx.execute(f"SELECT {_RUN_COLUMNS} FROM run_results WHERE run_id = :run_id",
                      {"run_id": run_id})
    return _run(rows[0]) if rows else None


def recent_runs(tx: Transaction, *, project: str | None = None, package: str | None = None,
                limit: int = 20) -> list[RunRecord]:
    where: list[str] = []
    params: Params = {"limit": limit}
    if project is not None:
        where.append("project = :project")
        params["project"] = project
    if package is not None:
        where.append("package = :package")
        params["package"] = package
    sql = f"SELECT {_RUN_COLUMNS} FROM run_results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_run(r) for r in tx.execute(sql + " ORDER BY started_at DESC LIMIT :limit", params)]


def get_state(tx: Transaction, project: str, package: str) -> dict[str, Any]:
    rows = tx.execute("SELECT key, value FROM package_state WHERE project = :project "
                      "AND package = :package ORDER BY key",
                      {"project": project, "package": package})
    return {r[0]: json.loads(r[1]) for r in rows}


def put_state(tx: Transaction, project: str, package: str, key: str, value: Any,
              run_id: str | None) -> None:
    """Upsert one key in one statement: atomic on both PostgreSQL and SQLite."""
    params: Params = {"project": project, "package": package, "key": key,
                      "value": json.dumps(value), "at": utcnow(), "run_id": run_id}
    tx.execute("INSERT INTO package_state (project, package, key, value, updated_at, run_id) "
               "VALUES (:project, :package, :key, :value, :at, :run_id) "
               "ON CONFLICT (project, package, key) DO UPDATE SET value = excluded.value, "
               "updated_at = excluded.updated_at, run_id = excluded.run_id", params)
