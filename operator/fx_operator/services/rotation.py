"""Every key rotation, in one place.

* Master-key rotation of the store (:func:`rotate_store_master_key`): every data key, pending run
  key and operator key rewrapped under the new key in one transaction; values untouched.
* Following it in a process that holds a ring over the same store (:func:`follow_rotation`).
* Master-key rotation as an operator runs it (:func:`rotate_master_key`): new key file first,
  store second, rename last.
* Data-key rotation of one owner (:func:`rotate_data_key`): its values and package state
  re-encrypted under a fresh data key.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fx_operator.domain import crypto, internal_keys
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner
from fx_operator.exceptions import MasterKeyError, NotFoundError
from fx_operator.services import package_state
from fx_operator.services.key_ring import (
    MASTER_KEY_META,
    OPERATOR_KEYS_ID,
    OPERATOR_WRAPPED_META,
    KeyRing,
)
from fx_operator.services.secret_service import Progress
from fx_operator.storage import run_keys
from fx_operator.storage.backends import Transaction
from fx_operator.storage.master_keys import FileMasterKeyProvider
from fx_operator.storage.secret_store import AuditRecord

log = logging.getLogger(__name__)  # key ids and counts; never a key



@dataclass(frozen=True)
class RotationResult:
    data_keys: int
    old_key_id: str
    new_key_id: str
    key_file: Path


def pending_rotation_file(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _rewrap_run_keys(tx: Transaction, old: MasterKey, new: MasterKey) -> int:
    """Every unclaimed run key wrapped by ``old`` rewrapped by ``new``."""
    rewrapped = [(run_id, internal_keys.rewrap(old, new, internal_keys.RUN_KEY, run_id, blob))
                 for run_id, blob in run_keys.wrapped_under(tx, old.key_id)]
    run_keys.replace_wrapped(tx, rewrapped, new.key_id)
    return len(rewrapped)


def rotate_store_master_key(keys: KeyRing, new_key: MasterKey, *, actor: str,
                            progress: Progress | None = None) -> int:
    """Rewrap every data key, run key and operator key under a new master key in one
    transaction; values untouched. Returns the number of data keys.

    Exclusive: writers that wrap under the master key wait for it (and then refuse, holding
    the old key), and of two rotations the second waits and then refuses, since its old key
    is no longer the store's."""
    store, old = keys.store, keys.master_key
    with store.transaction() as tx:
        recorded = store.hold_master_key_id(tx, MASTER_KEY_META, old.key_id, exclusive=True)
        if recorded != old.key_id:
            raise MasterKeyError(
                f"the store's master key is now {recorded}, not {old.key_id} "
                "that this rotation started from: another rotation committed first; nothing "
                f"was rotated (to rotate again, start from master key {recorded})")
        records = store.data_keys(tx)
        rewrapped = []
        for record in records:  # one data key per owner
            rewrapped.append((record.key_id, crypto.rewrap_data_key(
                old, new_key, record.key_id, record.owner, record.wrapped)))
            if progress is not None:
                progress(len(rewrapped), len(records))
        store.rewrap_data_keys(tx, rewrapped, new_key.key_id)
        run_keys_rewrapped = _rewrap_run_keys(tx, old, new_key)
        for meta, purpose in OPERATOR_WRAPPED_META.items():
            wrapped = store.get_meta(tx, meta)
            if wrapped is not None:
                store.set_meta(tx, meta, base64.b64encode(internal_keys.rewrap(
                    old, new_key, purpose, OPERATOR_KEYS_ID,
                    base64.b64decode(wrapped))).decode())
        store.set_meta(tx, MASTER_KEY_META, new_key.key_id)
        store.audit(tx, AuditRecord(actor, "rotate-master-key", "", "",
                                    entries=[{"dataKeys": len(records),
                                              "runKeys": run_keys_rewrapped,
                                              "masterKeyId": new_key.key_id}]))
    keys.adopt(new_key)
    log.info("rewrapped %d data key(s) under master key %s", len(records), new_key.key_id)
    return len(records)


def follow_rotation(keys: KeyRing, new_key: MasterKey) -> int:
    """Follow a master-key rotation of the store: use ``new_key`` from now on, rewrapping any
    unclaimed run key still under the ring's key. Refused unless the store records
    ``new_key``: a run key wrapped under any other would not open after a restart. Returns the
    number of run keys rewrapped."""
    store, old = keys.store, keys.master_key
    with store.transaction() as tx:
        recorded = store.hold_master_key_id(tx, MASTER_KEY_META, old.key_id)
        if recorded != new_key.key_id:
            raise MasterKeyError(
                f"the store records master key {recorded}, not {new_key.key_id}: rotate the "
                "store first; no run key was rewrapped")
        count = _rewrap_run_keys(tx, old, new_key) if old.key_id != new_key.key_id else 0
    if old.key_id != new_key.key_id:
        keys.adopt(new_key)
    log.info("rewrapped %d run key(s) under master key %s", count, new_key.key_id)
    return count


def rotate_master_key(keys: KeyRing, actor: str, provider: FileMasterKeyProvider,
                      new_key_file: Path | None = None,
                      progress: Progress | None = None) -> RotationResult:
    """Rewrap every data key under a new master key.

    With ``new_key_file`` the new key is read from there and the caller installs it (a cluster
    Secret). Otherwise a new key is written to ``<key file>.new`` before the store changes and moved
    over the key file after it committed, so a crash at any point leaves a key that opens the store.
    """
    old_id = keys.master_key.key_id
    if new_key_file is not None:
        new_key = FileMasterKeyProvider(new_key_file).load()
        if new_key.key_id == old_id:
            raise MasterKeyError(f"{new_key_file} holds the current master key; nothing to rotate")
        count = rotate_store_master_key(keys, new_key, actor=actor, progress=progress)
        return RotationResult(count, old_id, new_key.key_id, new_key_file)
    pending = pending_rotation_file(provider.path)
    if pending.exists():
        raise MasterKeyError(f"{pending} exists from an earlier rotation; if the store opens with "
                             f"{provider.path}, remove it, otherwise move it over {provider.path}")
    new_key = MasterKey.generate()
    provider.write_new(new_key, path=pending)
    try:
        count = rotate_store_master_key(keys, new_key, actor=actor, progress=progress)
    except BaseException:
        pending.unlink()
        raise
    os.replace(pending, provider.path)
    return RotationResult(count, old_id, new_key.key_id, provider.path)


def rotate_data_key(keys: KeyRing, owner: Owner, *, actor: str) -> int:
    """Re-encrypt every version of one owner (and its package state) under a fresh data key;
    the old key is dropped. Returns the number of versions."""
    store = keys.store
    with store.transaction() as tx:
        keys.hold(tx)  # first, as a master-key rotation locks: the meta row, then data keys
        old = store.active_data_key(tx, owner)
        if old is None:
            raise NotFoundError(f"{owner} has no data key")
        old_key = keys.unwrap_data_key(old.key_id, owner, old.wrapped)
        store.deactivate_data_key(tx, old.key_id)
        new_key = keys.new_data_key(tx, owner)
        versions = store.owner_versions(tx, owner)
        blobs = [(v.name, v.version, crypto.encrypt_value(
            new_key, v.name, v.version,
            crypto.decrypt_value(old_key, v.name, v.version, v.blob or b"")), new_key.key_id)
            for v in versions]
        store.replace_blobs(tx, owner, blobs)
        package_state.reseal(tx, old_key, new_key)  # the package's context.state
        store.retire_data_key(tx, old.key_id)
        store.audit(tx, AuditRecord(actor, "rotate-data-key", owner.project, owner.package,
                                    owner.scope.value, entries=[{"versions": len(blobs),
                                                                 "dataKeyId": new_key.key_id}]))
    log.info("re-encrypted %d version(s) of %s under data key %s", len(blobs), owner,
             new_key.key_id)
    keys.forget_data_keys(old.key_id)
    return len(blobs)
