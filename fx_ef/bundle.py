"""Sealing and opening a run's bundle under its one-time run key (format in ``fx_ef.contract``,
type in ``fx_ef.run_bundle``).

The operator seals; the init step opens. ``cryptography`` is imported here and nowhere else in
``fx_ef``, so that ``import fx_ef`` in a script stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fx_ef.contract import (
    BUNDLE_AAD_PREFIX,
    BUNDLE_FILE_NAME,
    BUNDLE_FORMAT,
    RUN_KEY_BYTES,
    SEALED_BUNDLE_VERSION,
)
from fx_ef.run_bundle import RunBundle, bundle_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path  # the caller's; pathlib is not imported on a run pod's start
    from typing import Any

_NONCE_BYTES = 12


class BundleError(Exception):
    """The sealed bundle is malformed, or does not open with this run's key."""


def new_run_key() -> bytes:
    return AESGCM.generate_key(bit_length=RUN_KEY_BYTES * 8)


def _aad(run_id: object) -> bytes:
    """The associated data: the run id, which must be text that UTF-8 can carry."""
    if not isinstance(run_id, str) or not run_id:
        raise BundleError("the bundle's run id must be a non-empty string")
    try:
        return BUNDLE_AAD_PREFIX + run_id.encode()
    except UnicodeEncodeError:
        raise BundleError("the bundle's run id is not valid text (a lone surrogate)") from None


def seal_bundle(bundle: RunBundle | Mapping[str, Any], key: bytes) -> bytes:
    """Encrypt a bundle for its run; the run id inside it is bound as associated data.

    The operator seals a ``RunBundle`` (``RunBundle.build``); a mapping is sealed as it is, for
    tests that need a bundle the writer would refuse. A bundle that JSON cannot carry (a lone
    surrogate, a container inside itself, a type JSON lacks, nesting past the decoder's limit)
    is a ``BundleError``, never a half-made bundle.
    """
    document = bundle.to_dict() if isinstance(bundle, RunBundle) else bundle
    if document.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle format must be {BUNDLE_FORMAT}")
    aad = _aad(document.get("run_id"))
    try:
        plaintext = bundle_json(document).encode()
    except (TypeError, ValueError, RecursionError) as e:  # UnicodeEncodeError is a ValueError
        raise BundleError(f"the bundle cannot be written as JSON ({type(e).__name__})") from None
    nonce = os.urandom(_NONCE_BYTES)
    return bytes([SEALED_BUNDLE_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_bundle(sealed: bytes, key: bytes, run_id: str) -> bytes:
    """The bundle's JSON text; fails if the key, the run id or a single byte is wrong."""
    if len(key) != RUN_KEY_BYTES:
        raise BundleError(f"the run key must be {RUN_KEY_BYTES} bytes, got {len(key)}")
    if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[0] != SEALED_BUNDLE_VERSION:
        raise BundleError("the sealed bundle is truncated or of an unknown format")
    nonce, body = sealed[1:1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES:]
    aad = _aad(run_id)
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise BundleError(f"the sealed bundle does not open with the key of run {run_id!a} "
                          "(wrong key, another run's bundle, or altered)") from None


def write_bundle_file(directory: Path, plaintext: bytes) -> Path:
    """Write the bundle readable by its owner only (0400), never half-written, never over another.

    ``O_EXCL`` refuses an existing file: a second delivery into the same volume is an error.
    """
    target = directory / BUNDLE_FILE_NAME
    partial = directory / f".{BUNDLE_FILE_NAME}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        view = memoryview(plaintext)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(partial, target)  # fails if a bundle is already there, unlike rename
    finally:
        os.unlink(partial)
    return target
