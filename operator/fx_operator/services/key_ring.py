"""One owner of the master key: the key ring every service that wraps or unwraps goes through.

The ring holds the master key and the cache of unwrapped data keys, and does every wrap and
unwrap under the master key: data keys (``domain.crypto``), run keys and the operator's own keys
(``domain.internal_keys``). The secret service, the run keys, the operator keys and rotation
share one ring per process, so a rotation changes the key for all of them at once and no service
keeps a copy of its own. Only ``services.rotation`` replaces the key (:meth:`KeyRing.adopt`).

Every transaction that writes something wrapped under the master key calls :meth:`KeyRing.hold`
before it commits: no rotation commits in between, and a process whose key a rotation elsewhere
replaced writes nothing.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping, Sequence
from typing import Final

from fx_operator.domain import crypto, internal_keys
from fx_operator.domain.crypto import DataKey, MasterKey
from fx_operator.domain.scopes import Owner
from fx_operator.exceptions import IntegrityError, MasterKeyError
from fx_operator.storage.backends import Transaction
from fx_operator.storage.secret_store import DataKeyRecord, ResolvedRow, SecretStore

MASTER_KEY_META: Final = "master_key_id"
# The operator's own keys kept in store_meta, wrapped by the master key (see operator_keys).
OPERATOR_KEYS_ID: Final = "operator"
OPERATOR_WRAPPED_META: Final = {"operator.sealing_key": internal_keys.SEALING_KEY,
                                "operator.broker_ca_key": internal_keys.BROKER_CA_KEY}


class KeyRing:
    """The master key of one store, and the data keys unwrapped with it so far."""

    def __init__(self, store: SecretStore, master_key: MasterKey) -> None:
        self.store = store
        self._master_key = master_key
        self._data_keys: dict[str, DataKey] = {}
        self._adopting = threading.Lock()

    @property
    def master_key(self) -> MasterKey:
        return self._master_key

    def __repr__(self) -> str:  # ids only
        return f"KeyRing(master={self._master_key.key_id}, data_keys={len(self._data_keys)})"

    # --- the master key in a transaction -----------------------------------------------------

    def hold(self, tx: Transaction) -> None:
        """Call in every transaction that wraps something under the master key, before it
        commits: no rotation commits until ``tx`` ends, and if one committed since this process
        loaded its key, nothing is written (it would not open with the key the store records)."""
        key_id = self._master_key.key_id
        recorded = self.store.hold_master_key_id(tx, MASTER_KEY_META, key_id)
        if recorded != key_id:
            raise MasterKeyError(
                f"the store's master key was rotated to master key {recorded}, but this process "
                f"holds master key {key_id}: nothing was written; restart it with the new key")

    def adopt(self, new_key: MasterKey) -> None:
        """Use ``new_key`` from now on (for ``services.rotation``, once the store records it).
        Data keys stay valid (only their wrapping changed); the cache is dropped all the same,
        so nothing unwrapped before the rotation outlives it."""
        with self._adopting:
            self._master_key = new_key
            self._data_keys.clear()

    # --- data keys -----------------------------------------------------------------------------

    def unwrap_data_key(self, key_id: str, owner: Owner, wrapped: bytes) -> DataKey:
        """Data key ``key_id`` as ``owner``'s, from the cache or unwrapped (and then cached)."""
        key = self._data_keys.get(key_id)
        if key is None or key.owner != owner:
            key = crypto.unwrap_data_key(self._master_key, key_id, owner, wrapped)
            self._data_keys[key_id] = key
        return key

    def cached_data_key(self, key_id: str, owner: Owner) -> DataKey | None:
        """Data key ``key_id`` if held in memory as ``owner``'s."""
        key = self._data_keys.get(key_id)
        return key if key is not None and key.owner == owner else None

    def data_key(self, tx: Transaction, key_id: str, owner: Owner) -> DataKey | None:
        """Data key ``key_id`` unwrapped as ``owner``'s (another owner's does not open); None
        when the store has no such key."""
        cached = self.cached_data_key(key_id, owner)
        if cached is not None:
            return cached
        found = self.store.data_keys(tx, [key_id])
        return self.unwrap_data_key(key_id, owner, found[0].wrapped) if found else None

    def opening_key(self, tx: Transaction, key_id: str, owner: Owner) -> DataKey:
        """Data key ``key_id`` as ``owner``'s, which a stored blob names: missing is damage."""
        key = self.data_key(tx, key_id, owner)
        if key is None:
            raise IntegrityError(f"data key {key_id} of {owner} is missing from the store")
        return key

    def held_key(self, header: bytes, owner: Owner, name: str) -> DataKey | None:
        """The data key a row's blob header names, if held in memory, after checking that it
        is the row owner's: a key of another owner means the ciphertext was moved there."""
        key_id = crypto.header_data_key_id(header)
        key = self._data_keys.get(key_id)
        if key is not None and key.owner != owner:
            raise IntegrityError(
                f"secret {name!r} of {owner} is sealed with data key {key_id} of {key.owner}: "
                "the ciphertext belongs to another owner")
        return key

    def read_missing(self, tx: Transaction | None, rows: Sequence[ResolvedRow],
                     owners: Mapping[str, Owner]) -> None:
        """Read and unwrap the data keys of ``rows`` not held yet, in one query (in ``tx``, or a
        transaction of its own). Each is unwrapped for the owner of the row it was found in, so
        a moved one fails to open."""
        missing: dict[str, Owner] = {}
        for scope, _, _, blob in rows:
            key_id = crypto.blob_data_key_id(blob)
            if key_id not in self._data_keys:
                missing.setdefault(key_id, owners[scope])
        if not missing:
            return
        if tx is None:
            with self.store.transaction() as own:
                records = self.store.data_keys(own, sorted(missing))
        else:
            records = self.store.data_keys(tx, sorted(missing))
        wrapped = {r.key_id: r.wrapped for r in records}
        for key_id, owner in missing.items():
            if key_id not in wrapped:
                raise IntegrityError(f"data key {key_id} of {owner} is missing from the store")
            self.unwrap_data_key(key_id, owner, wrapped[key_id])

    def writing_key(self, tx: Transaction, owner: Owner) -> DataKey:
        """The owner's active data key (made on first use), locked until ``tx`` ends: the
        owner's writers take turns."""
        record = self.store.active_data_key(tx, owner, lock=True)
        if record is not None:
            return self.unwrap_data_key(record.key_id, owner, record.wrapped)
        return self.new_data_key(tx, owner)

    def new_data_key(self, tx: Transaction, owner: Owner) -> DataKey:
        """A fresh data key for ``owner``, stored wrapped under the master key (active)."""
        self.hold(tx)
        key = DataKey.generate(owner)
        master = self._master_key
        self.store.insert_data_key(tx, DataKeyRecord(
            key.key_id, owner, crypto.wrap_data_key(master, key), master.key_id))
        self._data_keys[key.key_id] = key
        return key

    def forget_data_keys(self, *key_ids: str) -> None:
        """Drop these (all, when none is named) from the cache: after a lost write, or a
        data-key rotation."""
        if not key_ids:
            self._data_keys.clear()
        for key_id in key_ids:
            self._data_keys.pop(key_id, None)

    # --- run keys and the operator's own keys --------------------------------------------------

    def wrap_run_key(self, run_id: str, key: bytes) -> tuple[bytes, str]:
        """A run's key wrapped for its row, and the id of the master key that wrapped it."""
        master = self._master_key
        return internal_keys.wrap(master, internal_keys.RUN_KEY, run_id, key), master.key_id

    def unwrap_run_key(self, run_id: str, wrapped: bytes) -> bytes:
        return internal_keys.unwrap(self._master_key, internal_keys.RUN_KEY, run_id, wrapped)

    def load_operator_key(self, tx: Transaction, meta: str) -> bytes | None:
        """One of the operator's own keys (``OPERATOR_WRAPPED_META``), None when not made yet."""
        text = self.store.get_meta(tx, meta)
        if text is None:
            return None
        return internal_keys.unwrap(self._master_key, OPERATOR_WRAPPED_META[meta],
                                    OPERATOR_KEYS_ID, base64.b64decode(text))

    def save_operator_key(self, tx: Transaction, meta: str, secret: bytes) -> None:
        self.hold(tx)
        wrapped = internal_keys.wrap(self._master_key, OPERATOR_WRAPPED_META[meta],
                                     OPERATOR_KEYS_ID, secret)
        self.store.set_meta(tx, meta, base64.b64encode(wrapped).decode())
