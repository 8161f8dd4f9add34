"""Where the master key comes from.

A provider only loads a key; whether the key is the one the store was written with is checked by
the store (it records the key's id). A new local key is made only when the store is empty, so a
missing key file never turns into a fresh key over existing data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from fx_operator.domain.crypto import MasterKey
from fx_operator.exceptions import MasterKeyError


class MasterKeyProvider(Protocol):
    """Something that can hand out the master key (a file, later a KMS)."""

    @property
    def description(self) -> str:
        """Where the key comes from, for error messages (never the key)."""
        ...

    def load(self) -> MasterKey:
        """The key, or MasterKeyError saying what is missing or wrong."""
        ...


class FileMasterKeyProvider:
    """A base64 256-bit key in a file: ``FX_MASTER_KEY_FILE``, a mounted Secret in a cluster."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def description(self) -> str:
        return f"the master key file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> MasterKey:
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise MasterKeyError(f"{self.description} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise MasterKeyError(f"{self.description} cannot be read: {e}") from None
        return MasterKey.from_base64(text, source=self.description)

    def write_new(self, key: MasterKey, *, path: Path | None = None) -> Path:
        """Write a key to a new file only the owner can read; refuses to overwrite."""
        target = path or self.path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise MasterKeyError(f"refusing to overwrite the existing key file {target}") from None
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key.to_base64() + "\n")
            out.flush()
            os.fsync(out.fileno())
        return target


class LocalMasterKeyProvider(FileMasterKeyProvider):
    """For the embedded store on a laptop only: the key lives next to the store, mode 0600."""

    def load_or_create(self, *, store_is_empty: bool) -> MasterKey:
        if self.exists():
            return self.load()
        if not store_is_empty:
            raise MasterKeyError(
                f"{self.description} is missing but the store already holds data keys: restore "
                "the key file (or set FX_MASTER_KEY_FILE); a new key would not open them")
        key = MasterKey.generate()
        self.write_new(key)
        return key
