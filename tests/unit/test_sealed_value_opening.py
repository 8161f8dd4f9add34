"""Crafted sealed values (P8): anyone may seal, the key being public, so whatever a sealed value
holds is refused with a ``ValidationError`` naming its key and the problem, never its value, and
a ScopedSecret holding one gets ``Ready=False`` (InvalidSecret) and a Warning Event with nothing
stored. Before, each case below raised a bare exception (``ValueError``, ``RecursionError``,
``UnicodeDecodeError``, ``json.JSONDecodeError``, ``struct.error``) that left the object without a
condition.

The values are sealed here by hand, from the format in ``domain/sealing.py``'s docstring and the
operator's public key only, as anyone could: ``SealingPublicKey.seal`` seals JSON values only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from fx_operator.config import Settings
from fx_operator.domain.conditions import Reason
from fx_operator.domain.nesting import MAX_DEPTH
from fx_operator.domain.resources import ScopedSecret
from fx_operator.domain.sealing import SealingKeyPair, SealTarget
from fx_operator.exceptions import IntegrityError, ValidationError
from fx_operator.services.scoped_secrets import ScopedSecretService
from fx_operator.services.secret_service import SecretService

PAIR = SealingKeyPair.generate()
NAME = "DB_PASS"
TARGET = SealTarget("team-a", "package", "etl", NAME)
CANARY = "canary-s3cret-value"
LONG_NAME = "K" * 65_536  # one byte more than the associated data's 16-bit length allows


def with_zero_ephemeral_key(sealed: str) -> str:
    """A sealed value whose ephemeral X25519 public key is all zeros (a low-order point)."""
    raw = base64.b64decode(sealed)
    return base64.b64encode(raw[:9] + bytes(32) + raw[41:]).decode()


def test_the_hand_sealed_format_is_the_operators() -> None:
    sealed = PAIR.public.seal_plaintext(TARGET, json.dumps({"a": [1, "x"]}).encode())
    assert PAIR.open(TARGET, sealed) == {"a": [1, "x"]}


#: case -> (sealed value of NAME at TARGET, words the error must hold).
CASES: dict[str, tuple[Callable[[], str], str]] = {
    "integer-of-5000-digits": (
        lambda: PAIR.public.seal_plaintext(TARGET, b"7" * 5000),
        "integer of 5000 digits"),
    "nested-100000-levels": (
        lambda: PAIR.public.seal_plaintext(TARGET, b"[" * 100_000 + b"]" * 100_000),
        f"nested more than {MAX_DEPTH} levels deep"),
    "nested-100000-levels-unclosed": (
        lambda: PAIR.public.seal_plaintext(TARGET, b'{"a":' * 100_000),
        f"nested more than {MAX_DEPTH} levels deep"),
    "invalid-utf-8": (
        lambda: PAIR.public.seal_plaintext(TARGET, f'"{CANARY}\xff"'.encode("latin-1")),
        "not UTF-8"),
    "not-json": (
        lambda: PAIR.public.seal_plaintext(TARGET, f"{CANARY} is not JSON".encode()),
        "not JSON"),
    "zero-x25519-key": (
        lambda: with_zero_ephemeral_key(PAIR.public.seal(TARGET, CANARY)),
        "ephemeral X25519 public key"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_sealed_value_is_refused_naming_its_key(case: str) -> None:
    sealed, words = CASES[case]

    with pytest.raises(ValidationError) as refused:
        PAIR.open(TARGET, sealed())

    message = str(refused.value)
    assert words in message
    assert NAME in message
    assert CANARY not in message and "7777777" not in message


def test_a_name_over_65535_bytes_is_refused_naming_it_shortened() -> None:
    target = SealTarget("team-a", "package", "etl", LONG_NAME)
    sealed = PAIR.public.seal(TARGET, CANARY)  # any value: the name is refused first

    with pytest.raises(ValidationError) as refused:
        PAIR.open(target, sealed)

    message = str(refused.value)
    assert "65536 bytes" in message and "at most 65535" in message
    assert "KKKK" in message and len(message) < 500


def test_sealing_for_a_name_over_65535_bytes_is_refused() -> None:
    with pytest.raises(ValidationError, match="65536 bytes"):
        PAIR.public.seal(SealTarget("team-a", "package", "etl", LONG_NAME), CANARY)


def test_depth_up_to_the_limit_opens_and_brackets_in_strings_do_not_count() -> None:
    deepest: Any = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    assert PAIR.open(TARGET, PAIR.public.seal(TARGET, deepest)) == deepest
    brackets = {"a": "[{" * 1000, "b": ['\\"[[[', "]]]"]}
    assert PAIR.open(TARGET, PAIR.public.seal(TARGET, brackets)) == brackets
    with pytest.raises(ValidationError, match="nested more than"):
        PAIR.open(TARGET, PAIR.public.seal(TARGET, [deepest]))


def test_an_integer_of_4300_digits_opens() -> None:
    assert PAIR.open(TARGET, PAIR.public.seal_plaintext(TARGET, b"9" * 4300)) == int("9" * 4300)


def test_the_depth_scan_is_linear_on_unclosed_strings() -> None:
    """A quadratic scan would take hours on this 1 MB plaintext (every quote opens a string)."""
    sealed = PAIR.public.seal_plaintext(TARGET, b'"' + b'\\"' * 500_000)
    started = time.monotonic()
    with pytest.raises(ValidationError, match="not JSON"):
        PAIR.open(TARGET, sealed)
    assert time.monotonic() - started < 10


def test_what_opened_before_still_fails_as_before() -> None:
    sealed = PAIR.public.seal(TARGET, "value")
    with pytest.raises(IntegrityError, match="sealed for another namespace"):
        PAIR.open(SealTarget("team-b", "package", "etl", NAME), sealed)


# --- the service: Ready=False (InvalidSecret), a Warning Event, nothing stored ------------------

def _reconcile(encrypted: dict[str, str]) -> tuple[Any, mock.Mock]:
    secrets = mock.create_autospec(SecretService, instance=True)
    service = ScopedSecretService(secrets, PAIR, Settings())
    body = {"metadata": {"namespace": "team-a", "name": "crafted", "generation": 2},
            "spec": {"scope": "package", "package": "etl", "encryptedData": encrypted},
            "status": {"secrets": [{"name": "KEEP", "version": 1}]}}
    return asyncio.run(service.reconcile(ScopedSecret.model_validate(body))), secrets


@pytest.mark.parametrize("case", [*sorted(CASES), "name-over-65535-bytes"])
def test_a_crafted_scoped_secret_is_not_ready_with_a_warning_and_stores_nothing(
        case: str) -> None:
    if case == "name-over-65535-bytes":
        encrypted, words, named = {LONG_NAME: PAIR.public.seal(TARGET, CANARY)}, "65536", "KKKK"
    else:
        encrypted, words, named = {NAME: CASES[case][0]()}, CASES[case][1], NAME

    outcome, secrets = _reconcile({"OK": PAIR.public.seal(
        SealTarget("team-a", "package", "etl", "OK"), "fine"), **encrypted})

    assert outcome.ok is False
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", Reason.INVALID_SECRET)
    assert words in ready["message"] and named in ready["message"]
    assert CANARY not in ready["message"] and len(ready["message"]) < 1000
    [event] = outcome.events
    assert (event.type, event.reason, event.message) == ("Warning", Reason.INVALID_SECRET,
                                                         ready["message"])
    assert secrets.mock_calls == []  # nothing written, nothing removed: what was stored stays
