"""A short string value of a secrets.json is checked without the walk and the encoding
(``secrets_file._value_problems``'s shortcut): the same problems as the full check finds."""

from __future__ import annotations

import json

from fx_operator.domain import secrets_file
from fx_operator.domain.secrets_file import MAX_VALUE_BYTES, parse_secrets_file
from fx_operator.exceptions import ValidationError
from hypothesis import example, given, settings
from hypothesis import strategies as st

EDGE = secrets_file._SURELY_FITTING_CHARS


def _full_check(value: str) -> list[str]:
    """The rule spelled out: the walk's problems, then the size as compact JSON."""
    problems = secrets_file._walk(value, None)
    if problems:
        return problems
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    return [] if size <= MAX_VALUE_BYTES else ["too big"]


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(codec=None, categories=None), max_size=40)
       | st.builds(lambda c, n: c * n, st.sampled_from(["\x00", "\x1f", '"', "\\", "é", "😀",
                                                        "\ud800", "a"]),
                   st.integers(EDGE - 2, EDGE + 2) | st.integers(0, 3)))
@example("\x00" * EDGE)
@example("\x00" * (EDGE + 1))
@example("\x00" * (MAX_VALUE_BYTES // 6 + 1))
@example("ok\udfffok")
def test_a_string_gets_the_problems_of_the_full_check(value: str) -> None:
    found = secrets_file._value_problems(value, None)
    expected = _full_check(value)
    assert bool(found) == bool(expected)
    if expected != ["too big"]:
        assert found == expected


def test_a_file_of_short_strings_still_refuses_a_lone_surrogate_and_a_huge_value() -> None:
    raw = json.dumps({"A": "fine", "B": "x\udc00y", "C": "\x01" * 20000}).encode()
    try:
        parse_secrets_file(raw)
    except ValidationError as e:
        assert [p.where for p in e.problems] == ["B", "C"]
        assert "surrogate" in e.problems[0].what and "64 KiB" in e.problems[1].what
    else:
        raise AssertionError("accepted")
