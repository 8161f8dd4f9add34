"""Fuzz target: sealed values (``domain.sealing``), which anyone may craft since the sealing key
is public, as a ScopedSecret's service reads them: the name checked, the value opened
(``SealingKeyPair.open``: base64, envelope, X25519, AES-GCM, then ``parse_plaintext``) and checked
as a secret value (``validate_value``).

Property: any sealed text, any plaintext sealed with the real public key and any target either
opens to a value that can be stored or raises ``IntegrityError`` (altered, another key or target)
or ``ValidationError`` (what it holds cannot be a value), with a printable message; never another
exception, never a hang.
"""

from __future__ import annotations

import base64
from typing import Any

from fx_operator.domain.sealing import SealingKeyPair, SealTarget, parse_plaintext
from fx_operator.domain.secrets_file import validate_name, validate_value
from fx_operator.exceptions import IntegrityError, ValidationError
from hypothesis import event, example, given
from hypothesis import strategies as st

from fuzz import strategies as fz
from fuzz.checks import assert_plain_json, message_is_clean
from fuzz.profiles import fuzz_settings

PAIR = SealingKeyPair.generate()
TARGET = SealTarget("team-a", "package", "etl", "DB_PASS")
#: Low-order X25519 points (RFC 7748 section 6.1, and the published list): no shared secret.
LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little"),
                    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
                    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
                    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
_HEADER_BYTES = 1 + 8 + 32

PLAINTEXTS = st.one_of(
    fz.VALUE_TOKENS.map(fz.encode),
    fz.mutated(fz.VALUE_TOKENS.map(fz.encode)),
    fz.RAW_BYTES,
)
TARGET_PARTS = st.one_of(
    st.sampled_from(["team-a", "package", "etl", "DB_PASS", ""]),
    fz.TEXT,
    st.sampled_from(["K" * 65_536, "é" * 40_000, "\ud800"]),
)
TARGETS = st.builds(SealTarget, TARGET_PARTS, TARGET_PARTS, TARGET_PARTS, TARGET_PARTS)


def _storable(target: SealTarget, sealed_text: str) -> Any:
    """What ``ScopedSecretService`` does with one entry of ``spec.encryptedData``."""
    validate_name(target.name, source="ScopedSecret")
    value = PAIR.open(target, sealed_text)
    validate_value(target.name, value)
    return value


def _opens_or_refuses(target: SealTarget, sealed_text: str) -> None:
    try:
        value = _storable(target, sealed_text)
    except (IntegrityError, ValidationError) as e:
        message_is_clean(e)
        event(f"refused: {type(e).__name__}")
        return
    event("opened")
    assert_plain_json(value)


@fuzz_settings(250)
@given(PLAINTEXTS)
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'"' + b"\\" * 50_001)  # a string that never ends: the depth scan stays linear
@example(b"9" * 5_000)
@example(b"\xff\xfe")
@example(b"NaN")
@example(b'{"a": "\\ud800"}')
@example(b"")
def test_sealed_plaintexts(plaintext: bytes) -> None:
    _opens_or_refuses(TARGET, PAIR.public.seal_plaintext(TARGET, plaintext))


@fuzz_settings(150)
@given(fz.mutated(st.builds(lambda v: base64.b64decode(PAIR.public.seal(TARGET, v)),
                            st.sampled_from(["x", {"a": [1, 2]}, 3]))),
       st.sampled_from([None, *LOW_ORDER_POINTS]))
def test_altered_envelopes(envelope: bytes, ephemeral: bytes | None) -> None:
    if ephemeral is not None and len(envelope) >= _HEADER_BYTES:
        envelope = envelope[:9] + ephemeral + envelope[_HEADER_BYTES:]
    _opens_or_refuses(TARGET, base64.b64encode(envelope).decode())


@fuzz_settings(100)
@given(st.one_of(fz.TEXT, st.text(alphabet="ABCDabcd0123+/=\n ", max_size=200)))
@example("")
@example("====")
@example("é")
def test_sealed_text(sealed_text: str) -> None:
    _opens_or_refuses(TARGET, sealed_text)


@fuzz_settings(100)
@given(TARGETS, fz.VALUE_TOKENS.map(fz.encode))
# Before: the message carried the raw name, and a lone surrogate made it unencodable (no log line,
# no Event); a newline split it.
@example(SealTarget("team-a", "package", "etl", "\ud800"), b"1")
@example(SealTarget("team-a\n", "package", "etl", "A\x00B"), b"1")
def test_odd_targets(target: SealTarget, plaintext: bytes) -> None:
    try:
        sealed = PAIR.public.seal_plaintext(target, plaintext)
    except ValidationError as e:  # the target cannot be carried in the associated data
        message_is_clean(e)
        return
    _opens_or_refuses(target, sealed)


@fuzz_settings(150)
@given(PLAINTEXTS)
def test_parse_plaintext(plaintext: bytes) -> None:
    """The plaintext parser alone, as ``open`` ends: ValidationError or a JSON value (NaN and
    lone surrogates are left to ``validate_value``)."""
    try:
        value = parse_plaintext(TARGET, plaintext)
    except ValidationError as e:
        message_is_clean(e)
        return
    assert_plain_json(value, strict=False)
