"""The secret store as users see it: values in, values out, every step encrypted and audited."""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from fx_operator.domain import crypto
from fx_operator.domain.crypto import DataKey, MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.domain.secrets_file import parse_secrets_file, validate_name, validate_value
from fx_operator.exceptions import (
    ConflictError,
    ConnectionLostError,
    NotFoundError,
)
from fx_operator.services.key_ring import MASTER_KEY_META as MASTER_KEY_META
from fx_operator.services.key_ring import KeyRing
from fx_operator.storage.backends import Transaction, utcnow
from fx_operator.storage.secret_store import (
    AuditRecord,
    ListedSecret,
    ListingKey,
    ResolvedRow,
    ScopeRule,
    SecretStore,
    VersionRecord,
)

log = logging.getLogger(__name__)  # names, scopes and versions only; never a value

TOMBSTONE: Any = object()  # written by delete; JSON null is a value, so None cannot mark it
WRITE_ATTEMPTS = 3
PROGRESS_STEP = 1000  # values sealed between two reports of an import
T = TypeVar("T")
Progress = Callable[[int, int], None]
"""Told how many items of a long operation are done so far, and how many there are in all."""


class ManifestEntry(NamedTuple):
    """Which scope and version won for one name, and the data key that opened it. No value.
    (A tuple: one per name per resolution.)"""

    scope: Scope
    version: int
    key_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope.value, "version": self.version, "keyId": self.key_id}


# A ManifestEntry made by tuple.__new__, without the Python-level __new__ a NamedTuple's call
# runs (100 per resolution): 18 µs CPU, 3-6 / 19 µs at p50 per 100-name resolution (bench_store's
# data, one process taking turns with the old code, 3000 runs; durable / asynchronous audit).
_new_entry = tuple.__new__


@dataclass(frozen=True, slots=True)
class Resolution:
    """The values a run gets, and the manifest that may be shown anywhere."""

    values: dict[str, Any]
    manifest: dict[str, ManifestEntry]

    def manifest_dict(self) -> dict[str, dict[str, Any]]:
        return {name: entry.as_dict() for name, entry in sorted(self.manifest.items())}


def _canonical(value: Any) -> str:
    """JSON text that tells 1, 1.0 and true apart and ignores key order."""
    return json.dumps(value, sort_keys=True)


def _entries(records: Sequence[VersionRecord]) -> list[dict[str, Any]]:
    """An audit record's entries: which versions, and the data key of each (none: deleted)."""
    # An enum's .value is a descriptor call: read once per scope, not once per record (10k).
    scopes = {scope: scope.value for scope in {r.owner.scope for r in records}}
    return [{"name": r.name, "scope": scopes[r.owner.scope], "version": r.version,
             **({"dataKeyId": r.data_key_id} if r.data_key_id else {})} for r in records]


@lru_cache(maxsize=256)
def _chain_owners(project: str, package: str) -> Mapping[str, Owner]:
    """Scope -> owner along a package's chain (``Owner.chain``: checked names), made once per
    package, not once per resolution: 17 / 13 µs at p50 per 100-name resolution (bench_store's
    data, one process taking turns with the old code, 2500 runs; durable / asynchronous audit).
    Read only."""
    return MappingProxyType({owner.scope.value: owner for owner in Owner.chain(project, package)})


class SecretService:
    """Encrypts on the way in, decrypts on the way out; the store sees only ciphertext."""

    def __init__(self, store: SecretStore, master_key: MasterKey | KeyRing, *,
                 actor: str) -> None:
        self.store = store
        #: The process's key ring (shared with the run keys and the operator keys).
        self.keys = master_key if isinstance(master_key, KeyRing) else KeyRing(store, master_key)
        self.actor = actor

    @property
    def master_key(self) -> MasterKey:
        return self.keys.master_key

    def close(self) -> None:
        self.store.close()

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction of the store, for work that spans services (an admission)."""
        return self.store.transaction()

    # --- keys -------------------------------------------------------------------------------

    def _key_of(self, tx: Transaction, record: VersionRecord) -> DataKey:
        assert record.data_key_id is not None
        key = self.keys.data_key(tx, record.data_key_id, record.owner)
        if key is None:
            raise NotFoundError(f"data key {record.data_key_id} of {record.owner} is missing")
        return key

    # --- data keys for values kept outside secret_versions (package state) ------------------

    def sealing_key(self, tx: Transaction, owner: Owner) -> DataKey:
        """The owner's active data key (made on first use), locked until ``tx`` ends."""
        return self.keys.writing_key(tx, owner)

    def opening_key(self, tx: Transaction, owner: Owner, key_id: str) -> DataKey:
        """Data key ``key_id``, unwrapped as ``owner``'s: another owner's key does not open."""
        return self.keys.opening_key(tx, key_id, owner)

    def _retrying(self, operation: Callable[[], T]) -> T:
        """Re-run a write whose version number a concurrent writer took first, or whose
        connection broke before its commit (a failover: the retry goes to the new primary)."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return operation()
            except (ConflictError, ConnectionLostError):
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                self.keys.forget_data_keys()
        raise AssertionError("unreachable")

    # --- writes -----------------------------------------------------------------------------

    def set_many(self, owner: Owner, values: Mapping[str, Any], *, action: str = "set",
                 run_id: str | None = None, actor: str | None = None) -> dict[str, int]:
        """Write several values for one owner, all or nothing; returns the new versions."""
        for name, value in values.items():
            validate_name(name)
            validate_value(name, value)
        return self._retrying(lambda: self._write(owner, dict(values), action, run_id, actor))

    def _write(self, owner: Owner, values: dict[str, Any], action: str,
               run_id: str | None, actor: str | None,
               progress: Progress | None = None) -> dict[str, int]:
        """Append one version per name; TOMBSTONE (from delete, rollback) marks a deletion."""
        who = actor or self.actor
        now = utcnow()
        with self.store.transaction() as tx:
            key = self.keys.writing_key(tx, owner)  # locks the owner: versions below stay ours
            latest = self.store.latest_versions(tx, owner)
            versions = {name: latest.get(name, 0) + 1 for name in values}

            def sealed() -> Iterator[VersionRecord]:
                """Each value encrypted as the store writes it (see add_versions)."""
                for done, (name, value) in enumerate(values.items(), 1):
                    blob = (None if value is TOMBSTONE
                            else crypto.encrypt_value(key, name, versions[name], value))
                    yield VersionRecord(owner, name, versions[name], blob,
                                        None if blob is None else key.key_id, now, who)
                    if progress is not None and done % PROGRESS_STEP == 0:
                        progress(done, len(values))

            records = self.store.add_versions(tx, owner, versions, sealed())
            self.store.audit(tx, AuditRecord(who, action, owner.project, owner.package,
                                             owner.scope.value, run_id, _entries(records)))
        log.info("%s by %s in %s: %s", action, who, owner,
                 ", ".join(f"{r.name} v{r.version}" for r in records[:20]))
        return {r.name: r.version for r in records}

    def set(self, owner: Owner, name: str, value: Any, *, run_id: str | None = None,
            actor: str | None = None) -> int:
        return self.set_many(owner, {name: value}, run_id=run_id, actor=actor)[name]

    def import_file(self, raw: bytes, *, project: str, package: str,
                    source: str = "secrets.json", actor: str | None = None,
                    progress: Progress | None = None) -> dict[str, int]:
        """Import a whole secrets.json as package scope: every name or none. ``progress``
        hears how many values are sealed so far; it hears the total once they are written."""
        values = parse_secrets_file(raw, source=source)
        owner = Owner.of(Scope.PACKAGE, project, package)
        if not values:
            return {}
        written = self._retrying(
            lambda: self._write(owner, values, "import", None, actor, progress))
        if progress is not None:
            progress(len(written), len(written))
        return written

    def sync_file(self, raw: bytes, *, project: str, package: str,
                  source: str = "secrets.json", actor: str | None = None) -> dict[str, int]:
        """Import a secrets.json as package scope, writing only the names whose value changed.

        A package folder run again and again adds no versions while its file stays the same.
        Names absent from the file are left alone (they may have been set another way).
        """
        values = parse_secrets_file(raw, source=source)
        return self.sync_values(Owner.of(Scope.PACKAGE, project, package), values,
                                action="import", actor=actor)

    def sync_values(self, owner: Owner, values: Mapping[str, Any], *, action: str = "apply",
                    actor: str | None = None) -> dict[str, int]:
        """Write, all or nothing, the names whose value differs from the stored one; returns
        the new versions (an unchanged name is not written again)."""
        for name, value in values.items():
            validate_name(name)
            validate_value(name, value)
        with self.store.transaction() as tx:
            records = [r for r in self.store.current(tx, scope=owner.scope, project=owner.project,
                                                     package=owner.package)
                       if r.name in values and not r.deleted and r.owner == owner]
            stored = {r.name: crypto.decrypt_value(self._key_of(tx, r), r.name, r.version,
                                                   r.blob or b"") for r in records}
            if records:
                self.store.audit(tx, AuditRecord(actor or self.actor, "read", owner.project,
                                                 owner.package, owner.scope.value, None,
                                                 _entries(records)))
        changed = {name: value for name, value in values.items()
                   if name not in stored or _canonical(stored[name]) != _canonical(value)}
        if not changed:
            return {}
        return self._retrying(lambda: self._write(owner, changed, action, None, actor))

    def current_versions(self, owner: Owner) -> dict[str, int]:
        """The current version of each live name of one owner."""
        with self.store.transaction() as tx:
            return {r.name: r.version for r in self.store.current(
                tx, scope=owner.scope, project=owner.project, package=owner.package)
                if not r.deleted and r.owner == owner}

    def delete_many(self, owner: Owner, names: Sequence[str], *, actor: str | None = None,
                    action: str = "delete") -> dict[str, int]:
        """Tombstone the live ones of ``names`` at one owner, all at once."""
        live = set(self.current_versions(owner))
        doomed = {name: TOMBSTONE for name in names if name in live}
        if not doomed:
            return {}
        return self._retrying(lambda: self._write(owner, doomed, action, None, actor))

    def delete(self, owner: Owner, name: str, *, run_id: str | None = None) -> int:
        """Write a tombstone: the name stops resolving at this scope; history is kept."""
        self._current(owner, name)
        written = self._retrying(
            lambda: self._write(owner, {name: TOMBSTONE}, "delete", run_id, None))
        return written[name]

    def rollback(self, owner: Owner, name: str, to_version: int) -> int:
        """Make an earlier version current again, as a new version (history only grows)."""
        def attempt() -> dict[str, int]:
            with self.store.transaction() as tx:
                old = self.store.version(tx, owner, name, to_version)
                if old is None:
                    raise NotFoundError(f"secret {name!r} of {owner} has no version {to_version}")
                value = TOMBSTONE if old.blob is None else crypto.decrypt_value(
                    self._key_of(tx, old), name, old.version, old.blob)
            return self._write(owner, {name: value}, f"rollback:{to_version}", None, None)
        return self._retrying(attempt)[name]

    # --- reads ------------------------------------------------------------------------------

    def _current(self, owner: Owner, name: str) -> VersionRecord:
        with self.store.transaction() as tx:
            found = [r for r in self.store.history(tx, owner, name) if r.is_current]
        if not found or found[0].deleted:
            raise NotFoundError(f"secret {name!r} does not exist in {owner}")
        return found[0]

    def history(self, owner: Owner, name: str) -> list[VersionRecord]:
        with self.store.transaction() as tx:
            records = self.store.history(tx, owner, name)
        if not records:
            raise NotFoundError(f"secret {name!r} has no history in {owner}")
        return records

    def list(self, *, scope: Scope | None = None, project: str | None = None,
             package: str | None = None, include_deleted: bool = False,
             after: ListingKey | None = None, limit: int | None = None,
             name: str | None = None) -> builtins.list[ListedSecret]:
        """Current versions, names and metadata only (a page of ``limit`` after ``after``;
        only ``name``'s, when given)."""
        with self.store.transaction() as tx:
            return self.store.listing(tx, scope=scope, project=project, package=package,
                                      include_deleted=include_deleted, after=after, limit=limit,
                                      name=name)

    def get(self, owner: Owner, name: str) -> Any:
        """One value at one scope (no fall-through), audited as a read."""
        record = self._current(owner, name)
        with self.store.transaction() as tx:
            value = crypto.decrypt_value(self._key_of(tx, record), name, record.version,
                                         record.blob or b"")
            self.store.audit(tx, AuditRecord(self.actor, "read", owner.project, owner.package,
                                             owner.scope.value, None, _entries([record])))
        return value

    def resolve(self, project: str, package: str, names: Sequence[str] | None = None, *,
                run_id: str | None = None, actor: str | None = None,
                allowed: ScopeRule | None = None, tx: Transaction | None = None) -> Resolution:
        """Package, then project, then platform: one query, audited, with its manifest.

        ``names``: only these (None: every name of the chain); ``allowed(scope, name)``: only
        values a run may receive (least privilege's pins and policy, ``SecretNeeds.allows``).
        ``tx``: read and audit in this transaction (an admission: the run key, the resolution
        and both audit records in one commit), else in one of its own.
        """
        owners = _chain_owners(project, package)
        package_owner = owners[Scope.PACKAGE.value]
        if tx is not None:
            rows = self.store.resolve_in(tx, package_owner.project, package_owner.package, names,
                                         actor=actor or self.actor, run_id=run_id,
                                         allowed=allowed)
            self.keys.read_missing(tx, rows, owners)
            opened = self._open(rows, owners)
            assert opened is not None, "every data key was just read"
            return opened
        with self.store.resolving(package_owner.project, package_owner.package, names,
                                  actor=actor or self.actor, run_id=run_id,
                                  allowed=allowed) as rows:
            opened = self._open(rows, owners)  # on PostgreSQL, while the audit record commits
        if opened is None:  # a data key was not held: read it now (another connection)
            self.keys.read_missing(None, rows, owners)
            opened = self._open(rows, owners)
            assert opened is not None, "every data key was just read"
        log.debug("resolved %d name(s) for %s/%s (run %s)", len(rows), project, package, run_id)
        return opened

    def _open(self, rows: Sequence[ResolvedRow],
              owners: Mapping[str, Owner]) -> Resolution | None:
        """The values and manifest of ``rows``, or None if a data key is not held in memory.
        On PostgreSQL this runs while the read's audit record is committed; a key is not read
        then, since a pool of one connection has no other (the steady state holds them all)."""
        values: dict[str, Any] = {}
        manifest: dict[str, ManifestEntry] = {}
        # Blob header -> its key, checked for the row's owner once per key, not per row: 72 µs
        # of 540 µs CPU per 100-name resolution (bench_store's data, interleaved, thread time).
        checked: dict[bytes, DataKey] = {}
        for scope, name, version, blob in rows:
            header = blob[: crypto.VALUE_HEADER_BYTES]
            key = checked.get(header)
            if key is None or key.owner.scope != scope:
                key = self.keys.held_key(header, owners[scope], name)
                if key is None:
                    return None
                checked[header] = key
            values[name] = crypto.decrypt_value(key, name, version, blob)
            manifest[name] = _new_entry(ManifestEntry, (key.owner.scope, version, key.key_id))
        return Resolution(values, manifest)

    def audit_records(self, *, run_id: str | None = None,
                      limit: int = 100) -> builtins.list[AuditRecord]:
        with self.store.transaction() as tx:
            return self.store.audit_records(tx, run_id=run_id, limit=limit)

