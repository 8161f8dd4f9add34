"""``context.state`` as the store keeps it: each value sealed under its package's data key.

A package's state is one row per key (``storage.run_records``). Its values are encrypted like
secrets (P2): AES-256-GCM under the data key of the package's owner, the same key its package
secrets use, with associated data that binds the kind ("state"), scope, project, package and key
(``crypto.encrypt_state``), so a dump shows keys and sizes only, and no blob opens in another row.

Writes are held to ``domain.state_limits``: the package's totals are checked in the transaction
that writes, after taking the package's data key ``FOR UPDATE``, so the package's writers take
turns and two of them cannot both squeeze under the limit.

Rows from before encryption (migration 0005 moved their plaintext to ``legacy_value``) are sealed
the first time this service touches state (every such package, once per process), and again by
any read or write that still meets one. A data-key rotation re-seals the package's state in the
rotation's own transaction (:func:`reseal`), before the old key is dropped.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fx_operator.domain import crypto, state_limits
from fx_operator.domain.crypto import DataKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import ConflictError, FxError
from fx_operator.services.key_ring import KeyRing
from fx_operator.storage import run_records
from fx_operator.storage.backends import Transaction
from fx_operator.storage.run_records import SealedState, StateRow
from fx_operator.storage.secret_store import SecretStore

log = logging.getLogger(__name__)  # projects, packages and keys; never a value

WRITE_ATTEMPTS = 3
T = TypeVar("T")


def _seal(data_key: DataKey, key: str, encoded: bytes) -> SealedState:
    return SealedState(key, crypto.encrypt_state(data_key, key, encoded), data_key.key_id,
                       len(encoded))


def _seal_legacy(tx: Transaction, data_key: DataKey, rows: Sequence[StateRow]) -> list[SealedState]:
    """Encrypt the plaintext rows among ``rows`` in place; returns what they became."""
    owner = data_key.owner
    sealed = [_seal(data_key, row.key, crypto.encode_value(json.loads(row.legacy_value)))
              for row in rows if row.legacy_value is not None]
    if sealed:
        run_records.reseal_state(tx, owner.project, owner.package, sealed)
        log.info("sealed %d plaintext state key(s) of %s/%s from before encryption",
                 len(sealed), owner.project, owner.package)
    return sealed


def reseal(tx: Transaction, old_key: DataKey, new_key: DataKey) -> int:
    """Data-key rotation of a package owner: its state re-encrypted under ``new_key`` inside the
    rotation's transaction; returns the number of keys. Other owners keep no state."""
    owner = new_key.owner
    if owner.scope is not Scope.PACKAGE:
        return 0
    rows = run_records.state_rows(tx, owner.project, owner.package)
    sealed = [_seal(new_key, row.key,
                    crypto.encode_value(crypto.decrypt_state(old_key, row.key, row.blob)))
              for row in rows if row.blob is not None]
    run_records.reseal_state(tx, owner.project, owner.package, sealed)
    return len(sealed) + len(_seal_legacy(tx, new_key, rows))


class PackageStateService:
    """Reads and writes one package's state, encrypted, within the limits."""

    def __init__(self, store: SecretStore, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys
        self._legacy_swept = False
        self._sweeping = threading.Lock()

    def get(self, project: str, package: str) -> dict[str, Any]:
        """The whole state of a package (bounded by ``state_limits.MAX_TOTAL_BYTES``)."""
        self._sweep_legacy_once()
        return self._retrying(lambda: self._get(Owner.of(Scope.PACKAGE, project, package)))

    def _get(self, owner: Owner) -> dict[str, Any]:
        with self.store.transaction() as tx:
            rows = run_records.state_rows(tx, owner.project, owner.package)
            if any(row.legacy_value is not None for row in rows):
                _seal_legacy(tx, self.keys.writing_key(tx, owner), rows)
                rows = run_records.state_rows(tx, owner.project, owner.package)
            state: dict[str, Any] = {}
            for row in rows:
                assert row.blob is not None, "every legacy row was just sealed"
                data_key = self.keys.opening_key(tx, crypto.blob_data_key_id(row.blob), owner)
                state[row.key] = crypto.decrypt_state(data_key, row.key, row.blob)
        return state

    def put(self, project: str, package: str, key: str, encoded: bytes,
            run_id: str | None) -> None:
        """Set one key to a value given as its ``crypto.encode_value`` bytes; the package's other
        keys stay. ``StateLimitError`` (or ``ValidationError`` for the key) beyond the limits."""
        state_limits.check_key(key)
        state_limits.check_value(key, len(encoded))
        self._sweep_legacy_once()
        owner = Owner.of(Scope.PACKAGE, project, package)
        self._retrying(lambda: self._put(owner, key, encoded, run_id))

    def _put(self, owner: Owner, key: str, encoded: bytes, run_id: str | None) -> None:
        with self.store.transaction() as tx:
            data_key = self.keys.writing_key(tx, owner)  # the package's writers take turns
            rows = run_records.state_rows(tx, owner.project, owner.package, blobs=False)
            sizes = {row.key: state_limits.entry_bytes(row.key, row.value_bytes)
                     for row in rows if row.value_bytes is not None}
            sizes.update({sealed.key: state_limits.entry_bytes(sealed.key, sealed.value_bytes)
                          for sealed in _seal_legacy(tx, data_key, rows)})
            state_limits.check_package(key, sizes, state_limits.entry_bytes(key, len(encoded)))
            run_records.put_state(tx, owner.project, owner.package,
                                  _seal(data_key, key, encoded), run_id)

    def seal_legacy_rows(self) -> int:
        """Encrypt every plaintext row left from before migration 0005; returns the number of
        packages done. A package whose rows cannot be sealed now is logged and left for the
        next read or write of it, which then fails with the reason."""
        with self.store.transaction() as tx:
            packages = run_records.packages_with_legacy_state(tx)
        done = 0
        for project, package in packages:
            owner = Owner.of(Scope.PACKAGE, project, package)
            try:
                self._retrying(lambda: self._seal_package(owner))  # noqa: B023 (called at once)
            except FxError as e:
                log.warning("cannot seal the plaintext state of %s/%s now: %s", project, package,
                            e)
                continue
            done += 1
        return done

    def _seal_package(self, owner: Owner) -> None:
        with self.store.transaction() as tx:
            data_key = self.keys.writing_key(tx, owner)
            _seal_legacy(tx, data_key, run_records.state_rows(tx, owner.project, owner.package,
                                                              blobs=False))

    def _sweep_legacy_once(self) -> None:
        if self._legacy_swept:
            return
        with self._sweeping:
            if not self._legacy_swept:
                self.seal_legacy_rows()
                self._legacy_swept = True

    @staticmethod
    def _retrying(operation: Callable[[], T]) -> T:
        """Again when a concurrent first write of the package made its data key first."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return operation()
            except ConflictError:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")
