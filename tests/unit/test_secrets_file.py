"""secrets.json validation: every malformed case rejected with its key named, no value leaked."""

from __future__ import annotations

import json
import sys

import pytest
from fx_operator.domain.secrets_file import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_SECRETS,
    MAX_VALUE_BYTES,
    NAME_PATTERN,
    parse_secrets_file,
    validate_name,
    validate_value,
)
from fx_operator.exceptions import Problem, ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from support.malformed_secrets import LEAK_MARKER, MALFORMED_CASES, message_matches

# The `where` of the single problem each keyed case must produce; all other cases are
# document-level and must have where == "".
KEYED_CASES: dict[str, str] = {
    "duplicate-top-level-key": "DB_PASS",
    "duplicate-nested-key": "DB",
    "duplicate-key-in-list": "DB",
    "nan": "X",
    "infinity": "X",
    "minus-infinity": "X",
    "float-overflow": "X",
    "integer-too-long": "X",
    "name-empty": "''",
    "name-with-space": "'DB PASS'",
    "name-starts-with-digit": "'1PASS'",
    "name-starts-with-dot": "'.env'",
    "name-starts-with-dash": "'-x'",
    "name-with-slash": "'db/pass'",
    "name-with-dollar": "'DB$PASS'",
    "name-with-equals": "'A=B'",
    "name-unicode-letters": "'PASSW\u00d6RT'",
    "name-too-long": repr("N" * 129),
    "name-with-newline": repr("DB\nPASS"),
    "name-trailing-newline": repr("DB_PASS\n"),
    "name-lone-surrogate": repr("A\ud800"),
    "value-too-large": "BIG",
    "value-too-large-in-utf8-bytes": "BIG",
    "nested-lists-too-deep": "DEEP",
    "nested-objects-too-deep": "DEEP",
    "lone-high-surrogate": "S",
    "reversed-surrogate-pair": "S",
    "surrogate-in-nested-key": "S",
}

_CASE_IDS = [case_id for case_id, _, _ in MALFORMED_CASES]


def _reject(raw: bytes, **kwargs: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_secrets_file(raw, **kwargs)
    return info.value


def _nest(levels: int, leaf: object, *, objects: bool = False) -> object:
    value = leaf
    for _ in range(levels):
        value = {"k": value} if objects else [value]
    return value


def test_limits_and_pattern_are_the_documented_ones() -> None:
    assert NAME_PATTERN.pattern == r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
    assert MAX_VALUE_BYTES == 65_536
    assert MAX_FILE_BYTES == 8_388_608
    assert MAX_SECRETS == 10_000
    assert MAX_DEPTH == 32


def test_case_list_is_broad_and_ids_are_unique() -> None:
    assert len(MALFORMED_CASES) >= 35
    assert len(set(_CASE_IDS)) == len(_CASE_IDS)
    assert set(KEYED_CASES) <= set(_CASE_IDS)
    assert all(expected for _, _, expected in MALFORMED_CASES)


@pytest.mark.parametrize(("case_id", "raw", "expected"), MALFORMED_CASES, ids=_CASE_IDS)
def test_malformed_case_is_rejected_with_its_message(
    case_id: str, raw: bytes, expected: str
) -> None:
    err = _reject(raw)
    message = str(err)
    assert err.source == "secrets.json"
    assert message.startswith("invalid secrets.json")
    assert message_matches(expected, message), message
    # No value, nor any part of one, reaches the message or the structured problems.
    assert LEAK_MARKER not in message
    assert all(LEAK_MARKER not in p.where + p.what for p in err.problems)


@pytest.mark.parametrize(("case_id", "raw", "expected"), MALFORMED_CASES, ids=_CASE_IDS)
def test_malformed_case_names_its_key_or_the_document(
    case_id: str, raw: bytes, expected: str
) -> None:
    err = _reject(raw)
    if case_id in KEYED_CASES:
        assert [p.where for p in err.problems] == [KEYED_CASES[case_id]]
    else:
        assert [p.where for p in err.problems] == [""]


def test_syntax_errors_give_line_and_column() -> None:
    raw = b'{\n  "A": "leak-me-1",\n  "B": "leak-me-2"\n  "C": 3\n}'
    err = _reject(raw)
    assert err.problems == [
        Problem("", "not valid JSON at line 4, column 3: Expecting ',' delimiter")
    ]


def test_all_name_and_value_problems_are_reported_in_file_order() -> None:
    raw = (
        b'{"OK": "fine", "bad name": "leak-me-1", "NAN": NaN, "BIG": "'
        + b"x" * MAX_VALUE_BYTES
        + b'", "DUP": 1, "1st": {"a": "leak-me-2", "a": 2}, "DUP": "leak-me-3"}'
    )
    err = _reject(raw)
    assert [p.where for p in err.problems] == ["'bad name'", "NAN", "BIG", "DUP", "'1st'", "'1st'"]
    message = str(err)
    assert message.startswith("invalid secrets.json (6 problems):\n  - 'bad name': name contains")
    assert "  - DUP: duplicate key: the name appears 2 times" in message
    assert "  - '1st': value has a duplicate key at [\"a\"] (2 times)" in message
    assert LEAK_MARKER not in message


def test_every_occurrence_of_a_duplicated_key_is_checked() -> None:
    # json keeps the last value; the first one's problems must not slip through unseen.
    err = _reject(b'{"A": {"x": NaN, "x": [], "y": 1, "y": 2}, "A": 1}')
    assert err.problems == [
        Problem("A", "duplicate key: the name appears 2 times"),
        Problem("A", 'value has a duplicate key at ["x"] (2 times) (and 1 more)'),
        Problem("A", 'value at ["x"] is not a finite number (NaN and Infinity are not JSON)'),
    ]


def test_too_many_secrets_is_reported_with_the_other_problems() -> None:
    body = ",".join(f'"K{i}": {i}' for i in range(MAX_SECRETS)) + ', "bad/name": 1'
    err = _reject(("{" + body + "}").encode())
    assert [p.where for p in err.problems] == ["", "'bad/name'"]


def test_repeated_problems_in_one_value_are_summarised() -> None:
    err = _reject(b'{"V": [NaN, 1, Infinity, -Infinity]}')
    assert err.problems == [
        Problem(
            "V", "value at [0] is not a finite number (NaN and Infinity are not JSON) (and 2 more)"
        )
    ]


def test_a_lowered_int_conversion_limit_is_a_validation_error() -> None:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        err = _reject(b'{"A": ' + b"1" * 1000 + b"}")
    finally:
        sys.set_int_max_str_digits(old)
    assert err.problems == [Problem("", "a number in the file is too long to convert")]


def test_source_names_the_file_in_the_message() -> None:
    err = _reject(b"[]", source="pkg/secrets.json")
    assert err.source == "pkg/secrets.json"
    assert str(err).startswith("invalid pkg/secrets.json: ")


_AT_LIMIT_TEXT = "a" * (MAX_VALUE_BYTES - 2)  # plus two quotes: exactly MAX_VALUE_BYTES
_AT_LIMIT_UTF8 = "\u00e9" * ((MAX_VALUE_BYTES - 2) // 2)  # two bytes per character
_LONGEST_NAME = "N" * 128

VALID_CASES: list[tuple[str, bytes, dict[str, object]]] = [
    ("empty-object-imports-nothing", b"{}", {}),
    ("whitespace-around", b" \r\n{ }\n\t", {}),
    (
        "example",
        b'{"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"}',
        {"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"},
    ),
    ("empty-string-value", b'{"A": ""}', {"A": ""}),
    ("zero", b'{"A": 0}', {"A": 0}),
    ("false", b'{"A": false}', {"A": False}),
    ("null", b'{"A": null}', {"A": None}),
    ("empty-object-value", b'{"A": {}}', {"A": {}}),
    ("empty-array-value", b'{"A": []}', {"A": []}),
    (
        "nested-value",
        b'{"DB": {"host": "h", "ports": [5432, 5433], "tls": {"on": true}}}',
        {"DB": {"host": "h", "ports": [5432, 5433], "tls": {"on": True}}},
    ),
    (
        "unicode-value",
        '{"G": "gr\u00fc\u00df \u4f60\u597d \U0001f600"}'.encode(),
        {"G": "gr\u00fc\u00df \u4f60\u597d \U0001f600"},
    ),
    ("escaped-surrogate-pair", b'{"E": "\\ud83d\\ude00"}', {"E": "\U0001f600"}),
    ("crlf-lines", b'{\r\n"A": 1,\r\n"B": 2.5\r\n}', {"A": 1, "B": 2.5}),
    ("name-chars", b'{"_": 1, "a.b-c_D9": 2, "x-": 3}', {"_": 1, "a.b-c_D9": 2, "x-": 3}),
    ("longest-name", json.dumps({_LONGEST_NAME: 1}).encode(), {_LONGEST_NAME: 1}),
    ("value-at-size-limit", json.dumps({"A": _AT_LIMIT_TEXT}).encode(), {"A": _AT_LIMIT_TEXT}),
    (
        "value-at-size-limit-utf8",
        json.dumps({"A": _AT_LIMIT_UTF8}, ensure_ascii=False).encode(),
        {"A": _AT_LIMIT_UTF8},
    ),
    (
        "lists-at-depth-limit",
        json.dumps({"D": _nest(MAX_DEPTH, 1)}).encode(),
        {"D": _nest(MAX_DEPTH, 1)},
    ),
    (
        "objects-at-depth-limit",
        json.dumps({"D": _nest(MAX_DEPTH, 1, objects=True)}).encode(),
        {"D": _nest(MAX_DEPTH, 1, objects=True)},
    ),
    ("longest-integer", b'{"I": -' + b"9" * 4300 + b"}", {"I": -int("9" * 4300)}),
    ("large-finite-float", b'{"F": 1.7e308, "Z": -0.0}', {"F": 1.7e308, "Z": -0.0}),
    (
        "same-key-in-different-objects",
        b'{"A": {"k": 1}, "B": {"k": 2}, "k": [{"k": 3}]}',
        {"A": {"k": 1}, "B": {"k": 2}, "k": [{"k": 3}]},
    ),
]


@pytest.mark.parametrize(
    ("case_id", "raw", "expected"), VALID_CASES, ids=[c[0] for c in VALID_CASES]
)
def test_valid_file_parses_to_its_secrets_in_order(
    case_id: str, raw: bytes, expected: dict[str, object]
) -> None:
    secrets = parse_secrets_file(raw)
    assert secrets == expected
    assert list(secrets) == list(expected)
    assert type(secrets) is dict


def test_file_order_is_kept() -> None:
    secrets = parse_secrets_file(b'{"Z": 1, "A": 2, "M": {"y": 1, "b": 2}}')
    assert list(secrets) == ["Z", "A", "M"]
    nested = secrets["M"]
    assert isinstance(nested, dict)
    assert list(nested) == ["y", "b"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("A", id="one-letter"),
        pytest.param("_", id="underscore"),
        pytest.param("DB_PASS", id="env-style"),
        pytest.param("db.pass", id="dotted"),
        pytest.param("a-b", id="dashed"),
        pytest.param("x9", id="digit-after-first"),
        pytest.param(_LONGEST_NAME, id="128-chars"),
    ],
)
def test_validate_name_accepts(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("", "name is empty", id="empty"),
        # With match() and `$`, a trailing newline would slip through.
        pytest.param("DB_PASS\n", "name contains '\\n'", id="trailing-newline"),
        pytest.param("9LIVES", "must start with an ASCII letter or '_', not '9'", id="digit-first"),
        pytest.param("caf\u00e9", "name contains '\u00e9'", id="non-ascii-letter"),
        pytest.param("a b/c d", "name contains ' ', '/'; only", id="each-bad-char-once"),
        pytest.param("!@#$%^&*", "name contains '!', '@', '#', '$', '%', ...", id="many-bad"),
        pytest.param("N" * 129, "129 characters long, more than the limit of 128", id="129"),
        pytest.param("1" + " " * 200, "not '1'; name contains ' '; only ASCII", id="all-rules"),
    ],
)
def test_validate_name_rejects(name: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_name(name)
    assert info.value.source == "secret name"
    [problem] = info.value.problems
    assert expected in problem.what


def test_a_huge_name_is_cut_short_in_the_message() -> None:
    with pytest.raises(ValidationError) as info:
        validate_name("N" * 100_000)
    assert len(str(info.value)) < 500
    assert "(100000 characters)" in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty-string"),
        pytest.param("leak-me", id="string"),
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(1.5, id="float"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="null"),
        pytest.param([], id="empty-list"),
        pytest.param({}, id="empty-dict"),
        pytest.param({"a": [1, {"b": None}]}, id="nested"),
        pytest.param(10**4299, id="4300-digits"),
        pytest.param(_AT_LIMIT_TEXT, id="size-limit"),
        pytest.param(_nest(MAX_DEPTH, "x"), id="depth-limit"),
    ],
)
def test_validate_value_accepts_json(value: object) -> None:
    validate_value("A", value)


class _Opaque:
    pass


def _cycle() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(("leak-me",), "value is a tuple, which is not a JSON type", id="tuple"),
        pytest.param({"leak-me"}, "value is a set, which is not a JSON type", id="set"),
        pytest.param(b"leak-me", "value is a bytes, which is not a JSON type", id="bytes"),
        pytest.param(
            {"a": [_Opaque()]},
            'value at ["a"][0] is a _Opaque, which is not a JSON type',
            id="object-deep-inside",
        ),
        pytest.param(
            {1: "leak-me"},
            "value has a key of type int; JSON object keys are strings",
            id="int-key",
        ),
        pytest.param(float("nan"), "value is not a finite number", id="nan"),
        pytest.param([float("-inf")], "value at [0] is not a finite number", id="-inf"),
        pytest.param(10**4300, "value is an integer with more than 4300 digits", id="big-int"),
        pytest.param("leak-me-\ud800", "value contains a lone surrogate", id="surrogate"),
        pytest.param(
            "leak-me" + "x" * MAX_VALUE_BYTES,
            f"value is {MAX_VALUE_BYTES + 9} bytes",
            id="too-large",
        ),
        pytest.param(
            _AT_LIMIT_TEXT + "a", f"value is {MAX_VALUE_BYTES + 1} bytes", id="one-byte-over"
        ),
        pytest.param(
            _nest(MAX_DEPTH + 1, "leak-me"), "nested more than 32 levels deep", id="33-levels"
        ),
        # Iterative and cut off at the limit: no RecursionError, no endless loop.
        pytest.param(
            _nest(100_000, "leak-me"), "nested more than 32 levels deep", id="100000-levels"
        ),
        pytest.param(_cycle(), "nested more than 32 levels deep", id="cycle"),
    ],
)
def test_validate_value_rejects(value: object, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_value("MY_KEY", value)
    err = info.value
    assert err.source == "secret value"
    assert [p.where for p in err.problems] == ["MY_KEY"]
    assert expected in err.problems[0].what
    assert LEAK_MARKER not in str(err)


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, database=None)
@given(
    secrets=st.dictionaries(st.from_regex(NAME_PATTERN, fullmatch=True), _json_values, max_size=6),
    ascii_only=st.booleans(),
    indent=st.none() | st.integers(0, 2),
)
def test_any_valid_document_round_trips(
    secrets: dict[str, object], ascii_only: bool, indent: int | None
) -> None:
    raw = json.dumps(secrets, ensure_ascii=ascii_only, indent=indent).encode()
    parsed = parse_secrets_file(raw)
    assert parsed == secrets
    assert list(parsed) == list(secrets)


@settings(max_examples=60, database=None)
@given(
    secret=st.text(min_size=1, max_size=30).map(lambda s: f"{LEAK_MARKER}{s}"),
    bad_name=st.text(min_size=1, max_size=10).filter(
        lambda s: not NAME_PATTERN.fullmatch(s) and LEAK_MARKER not in s
    ),
    breakage=st.sampled_from(["name", "big", "nan", "dup", "deep", "surrogate"]),
)
def test_no_value_ever_reaches_a_message(secret: str, bad_name: str, breakage: str) -> None:
    value: object = secret
    name = "KEY"
    if breakage == "name":
        name = bad_name
    elif breakage == "big":
        value = secret * (MAX_VALUE_BYTES // len(secret) + 1)
    elif breakage == "nan":
        value = [secret, float("nan")]
    elif breakage == "deep":
        value = _nest(MAX_DEPTH + 1, secret)
    elif breakage == "surrogate":
        value = {"k": secret + "\ud800"}
    text = json.dumps({name: value})
    if breakage == "dup":
        text = json.dumps({"DUP": secret, "OTHER": secret}).replace('"OTHER"', '"DUP"')
    with pytest.raises(ValidationError) as info:
        parse_secrets_file(text.encode())
    message = str(info.value)
    assert LEAK_MARKER not in message
    assert secret not in message
