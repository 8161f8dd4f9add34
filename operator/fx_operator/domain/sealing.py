"""Sealing a secret value on the client for one ScopedSecret field, opening it in the operator.

X25519 key agreement with a fresh ephemeral key per value, HKDF-SHA256, AES-256-GCM (all from
``cryptography``). Format, base64 (standard) of::

    0x01 | recipient key id (8) | ephemeral public key (32) | nonce (12) | ciphertext + tag

The associated data binds the header and the target: namespace, scope, package and name. A value
sealed for one object, scope, package or name fails to open anywhere else, so copying sealed
values between manifests gets nothing. The plaintext is the value's JSON text. Pure: no I/O.

Anyone may seal (the key is public), so an opened plaintext is parsed as a tenant's input: strict
UTF-8, JSON nested at most ``MAX_DEPTH`` levels (measured before the decoder runs, which would
otherwise recurse once per level), integers of at most ``MAX_INT_DIGITS`` digits (both from
:mod:`~fx_operator.domain.nesting`). What cannot be opened for such a reason, or for a low-order
ephemeral key or a target too long for the associated data, is a ``ValidationError`` naming the
target's key and the problem, never the value; what was sealed for another target or key, or
altered, stays an ``IntegrityError``.
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

from fx_operator.domain.conditions import Reason
from fx_operator.domain.nesting import MAX_DEPTH, MAX_INT_DIGITS, text_too_deep
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
#: The longest namespace, scope, package or name the associated data can carry (a 16-bit length).
MAX_TARGET_PART_BYTES = 0xFFFF
_SHOWN_NAME_CHARS = 128  # the longest valid secret name is shown whole



class SealedForAnotherObject(IntegrityError):
    """A sealed value that does not open here: sealed for another object, key or format, or
    altered. The ScopedSecret gets the reason below, never the value."""

    reason = Reason.SEALED_FOR_ANOTHER_OBJECT

@dataclass(frozen=True)
class SealTarget:
    """Where a sealed value may be opened: one name of one ScopedSecret's scope."""

    namespace: str
    scope: str
    package: str
    name: str

    @property
    def where(self) -> str:
        """The target as messages name it: one printable line that any log or Event can carry
        (a long part cut, control characters and lone surrogates escaped)."""
        return "/".join(_shown_part(part) for part in (self.namespace, self.scope,
                                                       self.package or "-", self.name))

    def associated_data(self, header: bytes) -> bytes:
        """The header and the target, each part length-prefixed; a part that cannot be carried
        (over 65,535 bytes, or not encodable as UTF-8) is a ValidationError naming it."""
        encoded = []
        for field, part in (("namespace", self.namespace), ("scope", self.scope),
                            ("package", self.package), ("name", self.name)):
            try:
                raw = part.encode()
            except UnicodeEncodeError:
                raise _invalid(self, f"the {field} is not encodable as UTF-8") from None
            if len(raw) > MAX_TARGET_PART_BYTES:
                raise _invalid(self, f"the {field} is {len(raw)} bytes long; a sealed value's "
                                     f"{field} may have at most {MAX_TARGET_PART_BYTES} bytes")
            encoded.append(struct.pack(">H", len(raw)) + raw)
        return header + b"".join(encoded)


def _shown_part(part: str) -> str:
    """A part of a target as a message shows it: plain when printable, else escaped as in a
    Python literal (so a lone surrogate cannot break the UTF-8 of a log line); cut when long."""
    shown = part[:_SHOWN_NAME_CHARS]
    if not shown.isprintable():
        shown = repr(shown)[1:-1]
    if len(part) > _SHOWN_NAME_CHARS:
        shown = f"{shown}... ({len(part.encode(errors='replace'))} bytes)"
    return shown


def _invalid(target: SealTarget, what: str) -> ValidationError:
    """A sealed value that cannot be opened or used, named by its target, never by its value."""
    return ValidationError(Problem(target.where, what), source="sealed value")


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _TooManyDigits(digits)
    return int(text)


class _TooManyDigits(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def parse_plaintext(target: SealTarget, plaintext: bytes) -> Any:
    """An opened sealed value's JSON, parsed defensively; a ValidationError naming the target
    (never the value) when it is not UTF-8, not JSON, nested too deep or holds too long an
    integer."""
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _invalid(target, f"is not UTF-8 text (invalid byte at offset {e.start}); seal a "
                               "JSON value") from None
    if text_too_deep(text):
        raise _invalid(target, f"is nested more than {MAX_DEPTH} levels deep; at most "
                               f"{MAX_DEPTH} are allowed")
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:  # its message never quotes the text
        raise _invalid(target, f"is not JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                               "seal a JSON value") from None
    except _TooManyDigits as e:
        raise _invalid(target, f"holds an integer of {e.digits} digits; at most "
                               f"{MAX_INT_DIGITS} are allowed") from None
    except RecursionError:  # not reached past the depth check; kept as the last word
        raise _invalid(target, f"is nested more than {MAX_DEPTH} levels deep; at most "
                               f"{MAX_DEPTH} are allowed") from None
    except ValueError:  # e.g. an integer past a lowered sys.set_int_max_str_digits()
        raise _invalid(target, "holds a number that cannot be converted") from None


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
        return self.seal_plaintext(
            target, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    def seal_plaintext(self, target: SealTarget, plaintext: bytes) -> str:
        """Seal bytes for exactly this target: the envelope of :meth:`seal`, which the opener
        must refuse to read as a value whenever they are not one (tests craft such bytes)."""
        ephemeral = X25519PrivateKey.generate()
        ephemeral_raw = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = _derive(ephemeral.exchange(X25519PublicKey.from_public_bytes(self.raw)),
                      ephemeral_raw, self.raw)
        header = _HEADER.pack(SEALED_VERSION, _key_id(self.raw), ephemeral_raw)
        nonce = os.urandom(NONCE_BYTES)
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
        """The JSON value sealed for ``target``. SealedForAnotherObject when it was sealed for
        another target or key, or altered; ValidationError when it cannot be opened or parsed
        for what it holds (see the module). Both name the target, never a value."""
        where = target.where
        try:
            sealed = base64.b64decode(sealed_text, validate=True)
        except (binascii.Error, ValueError):
            raise SealedForAnotherObject(f"sealed value of {where} is not base64") from None
        if len(sealed) < _HEADER.size + NONCE_BYTES + 16:
            raise SealedForAnotherObject(f"sealed value of {where} is truncated")
        version, key_id, ephemeral_raw = _HEADER.unpack_from(sealed)
        if version != SEALED_VERSION:
            raise SealedForAnotherObject(f"sealed value of {where} has unknown format {version}")
        if key_id != _key_id(self.public.raw):
            raise SealedForAnotherObject(
                f"sealed value of {where} was sealed for another operator key "
                f"({key_id.hex()}, this operator's is {self.public.key_id})")
        header = sealed[:_HEADER.size]
        nonce = sealed[_HEADER.size:_HEADER.size + NONCE_BYTES]
        aad = target.associated_data(header)
        try:
            # A low-order point (all zeros, say) gives no shared secret: cryptography refuses it.
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
        except ValueError:
            raise _invalid(target, "has an invalid ephemeral X25519 public key (a low-order "
                                   "point such as all zeros); seal it again with fxctl seal"
                           ) from None
        key = _derive(shared, ephemeral_raw, self.public.raw)
        try:
            plaintext = AESGCM(key).decrypt(nonce, sealed[_HEADER.size + NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealedForAnotherObject(
                f"sealed value of {where} does not open: it was sealed for another namespace, "
                "scope, package or name, or altered") from None
        return parse_plaintext(target, plaintext)
