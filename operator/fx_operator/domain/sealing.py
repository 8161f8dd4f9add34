"""Sealing a secret value on the client for one ScopedSecret field, opening it in the operator.

X25519 key agreement with a fresh ephemeral key per value, HKDF-SHA256, AES-256-GCM (all from
``cryptography``). Format, base64 (standard) of::

    0x01 | recipient key id (8) | ephemeral public key (32) | nonce (12) | ciphertext + tag

The associated data binds the header and the target: namespace, scope, package and name. A value
sealed for one object, scope, package or name fails to open anywhere else, so copying sealed
values between manifests gets nothing. The plaintext is the value's JSON text. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fx_operator.exceptions import IntegrityError, Problem, ValidationError

SEALED_VERSION = 1
KEY_ID_BYTES = 8
PUBLIC_KEY_BYTES = 32
NONCE_BYTES = 12
_HEADER = struct.Struct(f">B{KEY_ID_BYTES}s{PUBLIC_KEY_BYTES}s")
_INFO = b"fx.dev sealed value v1"
PUBLIC_KEY_PREFIX = "fxseal1:"  # so a key pasted in the wrong place is recognised
# Where the operator publishes its public key (in the platform namespace) for ``fxctl seal``.
PUBLIC_KEY_CONFIGMAP = "fx-sealing-key"
PUBLIC_KEY_FIELD = "publicKey"


@dataclass(frozen=True)
class SealTarget:
    """Where a sealed value may be opened: one name of one ScopedSecret's scope."""

    namespace: str
    scope: str
    package: str
    name: str

    def associated_data(self, header: bytes) -> bytes:
        parts = (self.namespace, self.scope, self.package, self.name)
        return header + b"".join(struct.pack(">H", len(p.encode())) + p.encode() for p in parts)


def _key_id(public_raw: bytes) -> bytes:
    return hashlib.sha256(b"fx.dev sealing key\x00" + public_raw).digest()[:KEY_ID_BYTES]


def _derive(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_raw + recipient_raw,
                info=_INFO).derive(shared)


@dataclass(frozen=True)
class SealingPublicKey:
    raw: bytes

    @property
    def key_id(self) -> str:
        return _key_id(self.raw).hex()

    def export(self) -> str:
        """Text form for a ConfigMap, a file or a flag: ``fxseal1:<base64>``."""
        return PUBLIC_KEY_PREFIX + base64.b64encode(self.raw).decode()

    @classmethod
    def parse(cls, text: str) -> SealingPublicKey:
        text = text.strip()
        if not text.startswith(PUBLIC_KEY_PREFIX):
            raise ValidationError(Problem("public key", f"must start with {PUBLIC_KEY_PREFIX!r}"),
                                  source="sealing public key")
        try:
            raw = base64.b64decode(text[len(PUBLIC_KEY_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValidationError(Problem("public key", "is not a base64 X25519 public key"),
                                  source="sealing public key")
        return cls(raw)

    def seal(self, target: SealTarget, value: Any) -> str:
        """Seal a JSON value for exactly this target."""
        ephemeral = X25519PrivateKey.generate()
        ephemeral_raw = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = _derive(ephemeral.exchange(X25519PublicKey.from_public_bytes(self.raw)),
                      ephemeral_raw, self.raw)
        header = _HEADER.pack(SEALED_VERSION, _key_id(self.raw), ephemeral_raw)
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        sealed = header + nonce + AESGCM(key).encrypt(nonce, plaintext,
                                                      target.associated_data(header))
        return base64.b64encode(sealed).decode()


class SealingKeyPair:
    """The operator's private key; it never leaves the store except wrapped by the master key."""

    def __init__(self, private_raw: bytes) -> None:
        self._private = X25519PrivateKey.from_private_bytes(private_raw)
        self.public = SealingPublicKey(
            self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def generate(cls) -> SealingKeyPair:
        return cls(X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw,
                                                             NoEncryption()))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def open(self, target: SealTarget, sealed_text: str) -> Any:
        """The JSON value sealed for ``target``; IntegrityError names the target, never a value."""
        where = f"{target.namespace}/{target.scope}/{target.package or '-'}/{target.name}"
        try:
            sealed = base64.b64decode(sealed_text, validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError(f"sealed value of {where} is not base64") from None
        if len(sealed) < _HEADER.size + NONCE_BYTES + 16:
            raise IntegrityError(f"sealed value of {where} is truncated")
        version, key_id, ephemeral_raw = _HEADER.unpack_from(sealed)
        if version != SEALED_VERSION:
            raise IntegrityError(f"sealed value of {where} has unknown format {version}")
        if key_id != _key_id(self.public.raw):
            raise IntegrityError(f"sealed value of {where} was sealed for another operator key "
                                 f"({key_id.hex()}, this operator's is {self.public.key_id})")
        header = sealed[:_HEADER.size]
        nonce = sealed[_HEADER.size:_HEADER.size + NONCE_BYTES]
        key = _derive(self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw)),
                      ephemeral_raw, self.public.raw)
        try:
            plaintext = AESGCM(key).decrypt(nonce, sealed[_HEADER.size + NONCE_BYTES:],
                                            target.associated_data(header))
        except InvalidTag:
            raise IntegrityError(
                f"sealed value of {where} does not open: it was sealed for another namespace, "
                "scope, package or name, or altered") from None
        return json.loads(plaintext)
