"""The master key as a value: 256 bits, a one-way id safe to store, base64 in key files.

Apart from ``crypto`` (which uses it) so that the code that only loads or records the key (the
key-file providers in ``storage``) needs no cipher: storage stores bytes. Pure: no I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from fx_operator.exceptions import MasterKeyError

KEY_BYTES = 32
MASTER_KEY_ID_BYTES = 8


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps every data key. Its id is a one-way fingerprint, safe to store."""

    material: bytes

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise MasterKeyError(f"the master key must be {KEY_BYTES} bytes (256 bits), "
                                 f"got {len(self.material)}")

    @property
    def key_id(self) -> str:
        digest = hashlib.sha256(b"fx-master-key-id\x00" + self.material).digest()
        return digest[:MASTER_KEY_ID_BYTES].hex()

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key (what ``AESGCM.generate_key(bit_length=256)`` makes: 32 bytes of the
        operating system's CSPRNG)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str | bytes, *, source: str = "the master key") -> MasterKey:
        try:
            material = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(f"{source} is not valid base64") from None
        if len(material) != KEY_BYTES:
            raise MasterKeyError(f"{source} must hold {KEY_BYTES} bytes (256 bits) base64-encoded, "
                                 f"it holds {len(material)}")
        return cls(material)

    def to_base64(self) -> str:
        return base64.b64encode(self.material).decode()

    def __repr__(self) -> str:  # never show the material
        return f"MasterKey(id={self.key_id})"
