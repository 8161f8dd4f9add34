"""Fuzz target: ``secrets.json`` (``domain.secrets_file.parse_secrets_file``), what ``fxctl seal``,
``fxctl secrets import`` and a local run read from a tenant's file.

Property: any bytes either parse to secrets that can be stored (valid names, plain finite JSON
values within the limits) or raise ``ValidationError`` with a printable message; never another
exception, never a hang.
"""

from __future__ import annotations

import json

from fx_operator.domain.secrets_file import NAME_PATTERN, parse_secrets_file
from fx_operator.exceptions import ValidationError
from hypothesis import event, example, given
from hypothesis import strategies as st

from fuzz import strategies as fz
from fuzz.checks import assert_plain_json, message_is_clean
from fuzz.profiles import fuzz_settings

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,30}", fullmatch=True)
#: Valid files, as a tenant writes them.
VALID_FILES = st.dictionaries(_NAMES, _JSON, max_size=6).map(
    lambda secrets: json.dumps(secrets, ensure_ascii=False).encode())
#: Objects of any keys and values, the values possibly not JSON (NaN, huge ints, deep, ...).
HOSTILE_FILES = fz.object_text(
    st.lists(st.tuples(fz.KEY_TOKENS, fz.VALUE_TOKENS), max_size=6)).map(fz.encode)
#: Hostile values inside an otherwise valid file, or the whole file nested deeply.
WRAPPED_FILES = st.one_of(
    st.tuples(_NAMES, fz.VALUE_TOKENS).map(
        lambda pair: fz.encode(f'{{"DB_NAME": "db", {json.dumps(pair[0])}: {pair[1]}}}')),
    fz.deep_tokens(st.sampled_from(['{"A": 1}', "1", '"x"'])).map(fz.encode),
)


def _parses_or_refuses(raw: bytes) -> None:
    try:
        secrets = parse_secrets_file(raw)
    except ValidationError as e:
        message_is_clean(e)
        event("refused")
        return
    event("accepted")
    assert isinstance(secrets, dict)
    for name, value in secrets.items():
        assert NAME_PATTERN.fullmatch(name), "an invalid name was accepted"
        assert_plain_json(value)
        assert len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()) \
            <= 64 * 1024


@fuzz_settings(300)
@given(st.one_of(HOSTILE_FILES, WRAPPED_FILES, fz.mutated(VALID_FILES), fz.mutated(HOSTILE_FILES)))
@example(b'{"A": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@example(b'{"A": ' + b"9" * 4_301 + b"}")
@example(b'{"A": NaN, "B": -Infinity, "C": 1e999}')
@example(b'{"A": "\\ud800", "\\udfff": 1}')
@example(b'{"A": 1, "A": 2}')
@example(b'{"A": "\xed\xa0\x80"}')
@example(b'{"' + b"K" * 70_000 + b'": 1}')
@example(b'\xef\xbb\xbf{"A": 1}')
def test_structured_secrets_files(raw: bytes) -> None:
    _parses_or_refuses(raw)


@fuzz_settings(200)
@given(fz.RAW_BYTES)
@example(b"")
@example(b"\x00")
@example(b"\xff\xfe{\x00}\x00")
def test_raw_bytes(raw: bytes) -> None:
    _parses_or_refuses(raw)
