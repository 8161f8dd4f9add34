"""Master-key rotation as an operator runs it: new key file first, store second, rename last."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fx_operator.domain.crypto import MasterKey
from fx_operator.exceptions import MasterKeyError
from fx_operator.services.configured_store import pending_rotation_file
from fx_operator.services.secret_service import Progress, SecretService
from fx_operator.storage.master_keys import FileMasterKeyProvider


@dataclass(frozen=True)
class RotationResult:
    data_keys: int
    old_key_id: str
    new_key_id: str
    key_file: Path


def rotate_master_key(service: SecretService, provider: FileMasterKeyProvider,
                      new_key_file: Path | None = None,
                      progress: Progress | None = None) -> RotationResult:
    """Rewrap every data key under a new master key.

    With ``new_key_file`` the new key is read from there and the caller installs it (a cluster
    Secret). Otherwise a new key is written to ``<key file>.new`` before the store changes and moved
    over the key file after it committed, so a crash at any point leaves a key that opens the store.
    """
    old_id = service.master_key.key_id
    if new_key_file is not None:
        new_key = FileMasterKeyProvider(new_key_file).load()
        if new_key.key_id == old_id:
            raise MasterKeyError(f"{new_key_file} holds the current master key; nothing to rotate")
        count = service.rotate_master_key(new_key, progress)
        return RotationResult(count, old_id, new_key.key_id, new_key_file)
    pending = pending_rotation_file(provider.path)
    if pending.exists():
        raise MasterKeyError(f"{pending} exists from an earlier rotation; if the store opens with "
                             f"{provider.path}, remove it, otherwise move it over {provider.path}")
    new_key = MasterKey.generate()
    provider.write_new(new_key, path=pending)
    try:
        count = service.rotate_master_key(new_key, progress)
    except BaseException:
        pending.unlink()
        raise
    os.replace(pending, provider.path)
    return RotationResult(count, old_id, new_key.key_id, provider.path)
