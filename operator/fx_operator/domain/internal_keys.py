"""The operator's own small secrets (run keys, the broker CA's key, the sealing private key) kept
wrapped under the master key, like data keys (P2), so a database dump reveals none of them.

Format (integers big-endian)::

    wrapped = 0x01 | master_key_id (8) | nonce (12) | AES-256-GCM(secret + tag)

The associated data is the header plus a length-prefixed ``purpose`` and ``item_id``: a run key
copied to another run's row, or a CA key offered as a sealing key, fails to open. Pure: no I/O.
"""

from __future__ import annotations

import os
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fx_operator.domain.crypto import MASTER_KEY_ID_BYTES, NONCE_BYTES, MasterKey
from fx_operator.exceptions import IntegrityError, MasterKeyError

FORMAT_VERSION: Final = 1
TAG_BYTES: Final = 16
_HEADER = struct.Struct(f">B{MASTER_KEY_ID_BYTES}s")

# Purposes in use; each names what the secret is, so one cannot stand in for another.
RUN_KEY: Final = "run-key"
BROKER_CA_KEY: Final = "broker-ca-key"
BROKER_SERVING_KEY: Final = "broker-serving-key"
SEALING_KEY: Final = "sealing-key"


def _aad(header: bytes, purpose: str, item_id: str) -> bytes:
    out = bytearray(header)
    for part in (b"fx-internal-key", purpose.encode(), item_id.encode()):
        out += struct.pack(">I", len(part)) + part
    return bytes(out)


def wrap(master: MasterKey, purpose: str, item_id: str, secret: bytes) -> bytes:
    """Encrypt ``secret`` under the master key, bound to what it is and whose it is."""
    header = _HEADER.pack(FORMAT_VERSION, bytes.fromhex(master.key_id))
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(master.material).encrypt(
        nonce, secret, _aad(header, purpose, item_id))


def wrapped_by(wrapped: bytes) -> str:
    """The id of the master key that wrapped this blob (read from its header)."""
    if len(wrapped) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
        raise IntegrityError("wrapped internal key is truncated")
    version, master_id = _HEADER.unpack_from(wrapped)
    if version != FORMAT_VERSION:
        raise IntegrityError(f"wrapped internal key has unknown format version {version}")
    return bytes(master_id).hex()


def unwrap(master: MasterKey, purpose: str, item_id: str, wrapped: bytes) -> bytes:
    """The secret, if ``wrapped`` was made for this purpose and id under this master key."""
    made_with = wrapped_by(wrapped)
    if made_with != master.key_id:
        raise MasterKeyError(f"the {purpose} of {item_id} was wrapped by master key {made_with}, "
                             f"but the configured master key is {master.key_id}")
    header = wrapped[: _HEADER.size]
    nonce = wrapped[_HEADER.size : _HEADER.size + NONCE_BYTES]
    try:
        return AESGCM(master.material).decrypt(nonce, wrapped[_HEADER.size + NONCE_BYTES :],
                                               _aad(header, purpose, item_id))
    except InvalidTag:
        raise IntegrityError(f"the {purpose} of {item_id} does not open: it was altered or "
                             "copied from another row") from None


def rewrap(old: MasterKey, new: MasterKey, purpose: str, item_id: str, wrapped: bytes) -> bytes:
    """Master-key rotation for one internal secret."""
    return wrap(new, purpose, item_id, unwrap(old, purpose, item_id, wrapped))
