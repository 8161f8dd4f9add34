"""Rows of run results and of per-package state, in the same store as the secrets.

A result holds the masked tail of the output and the resolution manifest (names, scopes, versions):
never a value. State is one row per key, so two runs writing different keys never lose each
other's write, and two writing the same key leave the later one. A state row holds ciphertext
(``blob``, sealed by the state service under the package's data key) and the size of its
plaintext JSON (``value_bytes``, for the limits); ``legacy_value`` is the plaintext JSON of a row
written before state was encrypted (migration 0005), NULL once the service has sealed it.
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
    unmasked_names: tuple[str, ...] = ()  # too short to mask (names only)
    missing_names: tuple[str, ...] = ()  # asked for by the script, not delivered (names only)


_RUN_COLUMNS = ("run_id, project, package, actor, exit_code, signal, timed_out, started_at, "
                "finished_at, duration_s, output_tail, output_truncated, manifest, "
                "unmasked_names, missing_names")


def _run(row: Any) -> RunRecord:
    return RunRecord(row[0], row[1], row[2], row[3], int(row[4]), row[5], bool(row[6]),
                     as_datetime(row[7]), as_datetime(row[8]), float(row[9]), row[10],
                     bool(row[11]), json.loads(row[12]), tuple(json.loads(row[13])),
                     tuple(json.loads(row[14])))


def add_run(tx: Transaction, record: RunRecord) -> None:
    tx.execute(f"INSERT INTO run_results ({_RUN_COLUMNS}) VALUES (:run_id, :project, :package, "
               ":actor, :exit_code, :signal, :timed_out, :started_at, :finished_at, :duration_s, "
               ":output_tail, :output_truncated, :manifest, :unmasked_names, :missing_names)",
               {"run_id": record.run_id, "project": record.project, "package": record.package,
                "actor": record.actor, "exit_code": record.exit_code, "signal": record.signal,
                "timed_out": record.timed_out, "started_at": record.started_at,
                "finished_at": record.finished_at, "duration_s": record.duration_s,
                "output_tail": record.output_tail, "output_truncated": record.output_truncated,
                "manifest": json.dumps(record.manifest),
                "unmasked_names": json.dumps(list(record.unmasked_names)),
                "missing_names": json.dumps(list(record.missing_names))})


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


@dataclass(frozen=True, slots=True)
class StateRow:
    """One stored key of a package's state; ``blob`` is left out (None) where not asked for."""

    key: str
    blob: bytes | None
    legacy_value: str | None  # plaintext JSON of a row from before encryption
    value_bytes: int | None  # None only for a legacy row


@dataclass(frozen=True, slots=True)
class SealedState:
    """A state value as written: ciphertext, the data key that sealed it, its plaintext size."""

    key: str
    blob: bytes
    data_key_id: str
    value_bytes: int


_OF_PACKAGE = "project = :project AND package = :package"


def state_rows(tx: Transaction, project: str, package: str, *,
               blobs: bool = True) -> list[StateRow]:
    """Every key of one package's state, in key order; without the ciphertext if not ``blobs``."""
    blob = "blob" if blobs else "NULL"
    rows = tx.execute(f"SELECT key, {blob}, legacy_value, value_bytes FROM package_state "
                      f"WHERE {_OF_PACKAGE} ORDER BY key", {"project": project, "package": package})
    return [StateRow(r[0], None if r[1] is None else bytes(r[1]), r[2],
                     None if r[3] is None else int(r[3])) for r in rows]


def packages_with_legacy_state(tx: Transaction) -> list[tuple[str, str]]:
    """(project, package) of every package that still has a plaintext row."""
    rows = tx.execute("SELECT DISTINCT project, package FROM package_state "
                      "WHERE legacy_value IS NOT NULL ORDER BY project, package")
    return [(r[0], r[1]) for r in rows]


def put_state(tx: Transaction, project: str, package: str, sealed: SealedState,
              run_id: str | None) -> None:
    """Upsert one key in one statement: atomic on both PostgreSQL and SQLite."""
    params: Params = {"project": project, "package": package, "key": sealed.key,
                      "blob": sealed.blob, "key_id": sealed.data_key_id,
                      "size": sealed.value_bytes, "at": utcnow(), "run_id": run_id}
    tx.execute("INSERT INTO package_state (project, package, key, blob, data_key_id, "
               "value_bytes, legacy_value, updated_at, run_id) VALUES (:project, :package, :key, "
               ":blob, :key_id, :size, NULL, :at, :run_id) "
               "ON CONFLICT (project, package, key) DO UPDATE SET blob = excluded.blob, "
               "data_key_id = excluded.data_key_id, value_bytes = excluded.value_bytes, "
               "legacy_value = NULL, updated_at = excluded.updated_at, run_id = excluded.run_id",
               params)


def reseal_state(tx: Transaction, project: str, package: str,
                 sealed: list[SealedState]) -> None:
    """Replace the ciphertext of existing keys in place (a legacy row sealed, or a data-key
    rotation); when and by which run each key was written is kept."""
    tx.executemany(f"UPDATE package_state SET blob = :blob, data_key_id = :key_id, "
                   f"value_bytes = :size, legacy_value = NULL WHERE {_OF_PACKAGE} AND key = :key",
                   [{"project": project, "package": package, "key": s.key, "blob": s.blob,
                     "key_id": s.data_key_id, "size": s.value_bytes} for s in sealed])
