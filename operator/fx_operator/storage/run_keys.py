"""Rows of one-time run keys: registered when a run is admitted, claimed once by its pod.

The claim is one conditional ``UPDATE ... RETURNING``: of two concurrent claims, exactly one
changes the row and gets the key (PostgreSQL re-checks the condition after the row lock; SQLite
runs writers one at a time). A key is erased from its row as soon as it is delivered or the run
finishes, so the sealed bundle of a past run can never be opened from the store again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fx_operator.storage.backends import Row, Transaction, as_datetime, utcnow


@dataclass(frozen=True)
class RunKeyRecord:
    """A run as the broker knows it; ``wrapped_key`` is None once delivered or finished."""

    run_id: str
    namespace: str
    execution: str
    job_name: str
    package: str
    wrapped_key: bytes | None
    master_key_id: str
    allow_platform_write: bool
    created_at: datetime
    delivered_at: datetime | None = None
    finished_at: datetime | None = None
    delivered_to_pod: str | None = None

    def __repr__(self) -> str:  # the wrapped key is ciphertext, but has no place in logs
        return (f"RunKeyRecord(run_id={self.run_id!r}, namespace={self.namespace!r}, "
                f"delivered={self.delivered_at is not None}, "
                f"finished={self.finished_at is not None})")


_COLUMNS = ("run_id, namespace, execution, job_name, package, wrapped_key, master_key_id, "
            "allow_platform_write, created_at, delivered_at, finished_at, delivered_to_pod")


def _optional_time(value: object) -> datetime | None:
    return None if value is None else as_datetime(value)


def _record(row: Row) -> RunKeyRecord:
    return RunKeyRecord(row[0], row[1], row[2], row[3], row[4],
                        None if row[5] is None else bytes(row[5]), row[6], bool(row[7]),
                        as_datetime(row[8]), _optional_time(row[9]), _optional_time(row[10]),
                        row[11])


def create(tx: Transaction, record: RunKeyRecord, *, replace: bool = True) -> bool:
    """Store a run's key; with ``replace``, a re-admission replaces a key nobody claimed yet.

    False when the run already exists and, with ``replace``, its key was delivered or the run
    finished (or the row belongs to another namespace): a run is never given a second key.
    Without ``replace``, False whenever the run exists: the caller looks at what it made before.
    """
    on_conflict = (
        "DO UPDATE SET execution = excluded.execution, "
        "job_name = excluded.job_name, package = excluded.package, "
        "wrapped_key = excluded.wrapped_key, master_key_id = excluded.master_key_id, "
        "allow_platform_write = excluded.allow_platform_write, created_at = excluded.created_at "
        "WHERE run_keys.delivered_at IS NULL AND run_keys.finished_at IS NULL "
        "AND run_keys.namespace = excluded.namespace" if replace else "DO NOTHING")
    rows = tx.execute(
        f"INSERT INTO run_keys ({_COLUMNS}) VALUES (:run_id, :namespace, :execution, :job_name, "
        ":package, :wrapped_key, :master_key_id, :allow_platform_write, :created_at, NULL, NULL, "
        f"NULL) ON CONFLICT (run_id) {on_conflict} RETURNING run_id",
        {"run_id": record.run_id, "namespace": record.namespace, "execution": record.execution,
         "job_name": record.job_name, "package": record.package,
         "wrapped_key": record.wrapped_key, "master_key_id": record.master_key_id,
         "allow_platform_write": record.allow_platform_write, "created_at": record.created_at})
    return bool(rows)


def claim_key(tx: Transaction, run_id: str, pod_uid: str,
              at: datetime | None = None) -> bytes | None:
    """The wrapped key, exactly once per run and only before it finished; None otherwise."""
    rows = tx.execute(
        "UPDATE run_keys SET delivered_at = :at, delivered_to_pod = :pod WHERE run_id = :run_id "
        "AND delivered_at IS NULL AND finished_at IS NULL AND wrapped_key IS NOT NULL "
        "RETURNING wrapped_key",
        {"at": at or utcnow(), "pod": pod_uid, "run_id": run_id})
    if not rows:
        return None
    # Same transaction: the key leaves the store in the commit that records its delivery.
    tx.execute("UPDATE run_keys SET wrapped_key = NULL WHERE run_id = :run_id",
               {"run_id": run_id})
    return bytes(rows[0][0])


def get(tx: Transaction, run_id: str) -> RunKeyRecord | None:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM run_keys WHERE run_id = :run_id",
                      {"run_id": run_id})
    return _record(rows[0]) if rows else None


def mark_finished(tx: Transaction, run_id: str, at: datetime | None = None) -> bool:
    """The run ended: its key (if never claimed) is erased. False when unknown or already so."""
    rows = tx.execute(
        "UPDATE run_keys SET finished_at = :at, wrapped_key = NULL WHERE run_id = :run_id "
        "AND finished_at IS NULL RETURNING run_id", {"at": at or utcnow(), "run_id": run_id})
    return bool(rows)


def wrapped_under(tx: Transaction, master_key_id: str) -> list[tuple[str, bytes]]:
    """(run id, wrapped key) of every unclaimed key wrapped under this master key (a rotation)."""
    rows = tx.execute("SELECT run_id, wrapped_key FROM run_keys WHERE wrapped_key IS NOT NULL "
                      "AND master_key_id = :master ORDER BY run_id", {"master": master_key_id})
    return [(str(run_id), bytes(blob)) for run_id, blob in rows]


def replace_wrapped(tx: Transaction, rewrapped: list[tuple[str, bytes]],
                    master_key_id: str) -> None:
    """Master-key rotation: the (run id, key rewrapped under ``master_key_id``) given."""
    tx.executemany(
        "UPDATE run_keys SET wrapped_key = :wrapped, master_key_id = :master "
        "WHERE run_id = :run_id",
        [{"run_id": run_id, "master": master_key_id, "wrapped": wrapped}
         for run_id, wrapped in rewrapped])


def delete_older_than(tx: Transaction, days: float, now: datetime | None = None) -> int:
    """Forget runs registered more than ``days`` ago; returns how many rows went."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    return len(tx.execute("DELETE FROM run_keys WHERE created_at < :cutoff RETURNING run_id",
                          {"cutoff": cutoff}))
