"""The run channel's bodies read strictly (``domain.channel_requests``): every malformed body is one
``ValidationError`` naming the field and the problem, never the value; nothing else escapes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fx_operator.domain.channel_requests import (
    MAX_BODY_BYTES,
    MAX_INT_DIGITS,
    SecretWrite,
    StateWrite,
    parse_secret_write,
    parse_state_write,
)
from fx_operator.domain.crypto import encode_value
from fx_operator.domain.nesting import MAX_DEPTH, RECURSION_LIMIT
from fx_operator.exceptions import ValidationError

CANARY = "channel-canary-0b7e4c1d"


def _nested(levels: int, leaf: Any = CANARY) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def _deep_text(levels: int) -> str:
    return "[" * levels + json.dumps(CANARY) + "]" * levels


def _refusal(parse: Any, raw: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(raw)
    return caught.value


@pytest.fixture
def operator_recursion_limit() -> Iterator[None]:
    """The limit the operator runs with (``cli/cluster.py``): deep bodies decode further."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def test_good_writes_are_read() -> None:
    value = {"a": [1, 2.5, -3, True, None, "x\x00y", "\U0001f600"], "n": 10**4299}
    raw = json.dumps({"name": "DB_PASS", "value": value, "scope": "platform", "extra": 1})
    assert parse_secret_write(raw.encode()) == SecretWrite("DB_PASS", value, "platform")
    assert parse_secret_write(b'{"name": "A", "value": null}') == SecretWrite("A", None, "project")
    deepest = _nested(MAX_DEPTH, 1)
    assert parse_state_write(json.dumps({"key": "cursor", "value": deepest}).encode()) == \
        StateWrite("cursor", deepest, encode_value(deepest))
    # a surrogate pair written as escapes is one character, not a lone surrogate
    assert parse_state_write(b'{"key": "k", "value": "\\ud83d\\ude00"}').value == "\U0001f600"


SECRET_REFUSALS: dict[str, tuple[bytes, str, str]] = {
    "name-number": (b'{"name": 42, "value": 1}', "name", "must be a string, got a number"),
    "name-list": (b'{"name": ["a"], "value": 1}', "name", "must be a string, got an array"),
    "name-null": (b'{"name": null, "value": 1}', "name", "must be a string, got null"),
    "name-object": (b'{"name": {}, "value": 1}', "name", "must be a string, got an object"),
    "name-bool": (b'{"name": true, "value": 1}', "name", "must be a string, got a boolean"),
    "name-nan": (b'{"name": NaN, "value": 1}', "name", "must be a string, got a number"),
    "name-missing": (b'{"value": 1}', "name", "is required"),
    "name-nul": (b'{"name": "A\\u0000", "value": 1}', "name", "NUL"),
    "name-surrogate": (b'{"name": "A\\ud800", "value": 1}', "name", "lone surrogate"),
    "scope-number": (b'{"name": "A", "value": 1, "scope": 3}', "scope", "must be a string"),
    "scope-null": (b'{"name": "A", "value": 1, "scope": null}', "scope", "must be a string"),
    "value-missing": (b'{"name": "A"}', "value", "is required"),
    "value-nan": (b'{"name": "A", "value": NaN}', "value", "not finite"),
    "value-infinity": (b'{"name": "A", "value": [Infinity]}', "value", "not finite"),
    "value-minus-infinity": (b'{"name": "A", "value": {"x": -Infinity}}', "value",
                             "not finite"),
    "value-1e999": (b'{"name": "A", "value": -1e999}', "value", "not finite"),
    "value-5000-digits": (b'{"name": "A", "value": ' + b"9" * 5000 + b"}", "value",
                          f"more than {MAX_INT_DIGITS} digits"),
    "value-surrogate": (b'{"name": "A", "value": ["\\udfff"]}', "value", "lone surrogate"),
    "value-surrogate-key": (b'{"name": "A", "value": {"\\ud800": 1}}', "value",
                            "object key that contains a lone surrogate"),
    "value-33-levels": (json.dumps({"name": "A", "value": _nested(MAX_DEPTH + 1)}).encode(),
                        "value", f"nested {MAX_DEPTH + 1} levels deep"),
    "value-100000-levels": (f'{{"name": "A", "value": {_deep_text(100_000)}}}'.encode(),
                            "value", "nested too deeply"),
}


@pytest.mark.parametrize("case", list(SECRET_REFUSALS))
def test_bad_secret_writes_name_the_field(case: str) -> None:
    raw, field, what = SECRET_REFUSALS[case]
    error = _refusal(parse_secret_write, raw)
    assert [p.where for p in error.problems] == [field]
    assert what in error.problems[0].what
    assert str(error).startswith(f"invalid secret write: {field}: ")
    assert CANARY not in str(error)


STATE_REFUSALS: dict[str, tuple[bytes, str, str]] = {
    "key-nul": (b'{"key": "a\\u0000b", "value": 1}', "key", "contains a NUL character"),
    "key-number": (b'{"key": 7, "value": 1}', "key", "must be a string, got a number"),
    "key-surrogate": (b'{"key": "\\udc00", "value": 1}', "key", "lone surrogate"),
    "key-missing": (b'{"value": 1}', "key", "is required"),
    "value-missing": (b'{"key": "k"}', "value", "is required"),
    "value-nan": (b'{"key": "k", "value": [1, NaN]}', "value", "not finite"),
    "value-33-levels": (json.dumps({"key": "k", "value": _nested(MAX_DEPTH + 1)}).encode(),
                        "value", "at most 32 are allowed"),
    "value-100000-levels": (f'{{"key": "k", "value": {_deep_text(100_000)}}}'.encode(),
                            "value", "nested too deeply"),
    # brackets and quotes inside strings do not confuse the search for the deep field
    "value-deep-after-tricky-key": (
        f'{{"key": "[[{{\\"[", "value": {_deep_text(100_000)}}}'.encode(), "value",
        "nested too deeply"),
    "unknown-field-deep": (f'{{"key": "k", "value": 1, "x": {_deep_text(100_000)}}}'.encode(),
                           "body", "nested too deeply"),
    "body-deep-array": (_deep_text(100_000).encode(), "body", "nested too deeply"),
    "body-array": (b"[]", "body", "must be a JSON object, got an array"),
    "body-number": (b"3", "body", "must be a JSON object, got a number"),
    "body-null": (b"null", "body", "must be a JSON object, got null"),
    "body-not-json": (b"{key: k}", "body", "is not JSON"),
    "body-two-documents": (b'{"key": "k", "value": 1} {}', "body", "is not JSON: Extra data"),
    "body-bom": (b'\xef\xbb\xbf{"key": "k", "value": 1}', "body", "is not JSON"),
    "body-not-utf8": (b'{"key": "k", "value": "\xff"}', "body", "is not valid UTF-8 (at byte 23)"),
    "body-utf16": ('{"key": "k", "value": 1}'.encode("utf-16"), "body", "not valid UTF-8"),
    "body-encoded-surrogate": (b'{"key": "k", "value": "\xed\xa0\x80"}', "body",
                               "not valid UTF-8"),
    "body-empty": (b"", "body", "is empty"),
    "body-blank": (b" \r\n", "body", "is empty"),
    "body-oversized": (b'{"key": "k", "value": "' + b"x" * MAX_BODY_BYTES + b'"}', "body",
                       f"more than the limit of {MAX_BODY_BYTES}"),
}


@pytest.mark.parametrize("case", list(STATE_REFUSALS))
def test_bad_state_writes_name_the_field(case: str) -> None:
    raw, field, what = STATE_REFUSALS[case]
    error = _refusal(parse_state_write, raw)
    assert [p.where for p in error.problems] == [field]
    assert what in error.problems[0].what
    assert str(error).startswith(f"invalid state write: {field}: ")
    assert CANARY not in str(error)


def test_every_bad_field_is_named_at_once() -> None:
    error = _refusal(parse_secret_write, b'{"name": 1, "value": [NaN], "scope": []}')
    assert [p.where for p in error.problems] == ["name", "value", "scope"]


@pytest.mark.usefixtures("operator_recursion_limit")
@pytest.mark.parametrize("levels", [1_000, 40_000, 100_000])
def test_deep_values_are_refused_under_the_operators_recursion_limit(levels: int) -> None:
    """With the operator's raised limit a 40,000-level value decodes (and is then refused by
    depth); beyond the limit the decoder's RecursionError is refused the same way."""
    error = _refusal(parse_state_write, f'{{"key": "k", "value": {_deep_text(levels)}}}'.encode())
    assert [p.where for p in error.problems] == ["value"]
    assert f"at most {MAX_DEPTH}" in error.problems[0].what
