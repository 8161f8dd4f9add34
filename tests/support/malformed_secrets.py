"""Malformed ``secrets.json`` files, shared by unit tests and store-level integration tests.

Each case is ``(case_id, raw_bytes, expected)``: parsing ``raw_bytes`` must raise
``ValidationError`` whose message contains ``expected``, compared case-insensitively with
``message_matches`` (``expected.lower() in str(err).lower()``). Where a key is involved,
``expected`` starts with the key as the error names it (``KEY: ...``; invalid names appear
quoted, e.g. ``'DB PASS': ...``), so a match also proves the key is named.

Every secret value in these files contains ``LEAK_MARKER``; no error message may. Names never
contain it. The limits are written out here rather than imported so that a changed limit in
the code is caught by a test, not silently followed.
"""

from __future__ import annotations

import json

LEAK_MARKER = "leak-me"

_KIB = 1024
_MAX_VALUE_BYTES = 64 * _KIB
_MAX_FILE_BYTES = 8 * _KIB * _KIB
_MAX_SECRETS = 10_000
_MAX_DEPTH = 32


def message_matches(expected: str, message: str) -> bool:
    """How every user of ``MALFORMED_CASES`` compares: a case-insensitive substring test."""
    return expected.lower() in message.lower()


def _doc(text: str) -> bytes:
    return text.encode("utf-8")


def _nested_lists(levels: int) -> str:
    return "[" * levels + json.dumps(f"{LEAK_MARKER}-deep") + "]" * levels


def _nested_objects(levels: int) -> str:
    return '{"k": ' * levels + json.dumps(f"{LEAK_MARKER}-deep") + "}" * levels


def _too_large_file() -> bytes:
    # One value just big enough to push the file past 8 MiB; bytes concatenation is cheap.
    filler = LEAK_MARKER.encode() * (_MAX_FILE_BYTES // len(LEAK_MARKER) + 1)
    return b'{"BIG": "' + filler + b'"}'


def _too_many_secrets() -> bytes:
    body = b",".join(
        b'"K%05d": "%s-%d"' % (i, LEAK_MARKER.encode(), i) for i in range(_MAX_SECRETS + 1)
    )
    return b"{" + body + b"}"


_OBJECT = '{"A": "leak-me-1234"}'

MALFORMED_CASES: list[tuple[str, bytes, str]] = [
    # --- encoding -------------------------------------------------------------------------
    ("invalid-utf8-byte", b'{"A": "leak-me-\xff"}', "invalid byte at offset 15 (line 1)"),
    ("invalid-utf8-line-3", b'{\n  "A": 1,\n  "B": "leak-me-\xc3("\n}', "offset 28 (line 3)"),
    ("latin-1-file", '{"PASS": "leak-me-caf\u00e9"}'.encode("latin-1"), "not valid utf-8"),
    ("cesu-encoded-surrogate", b'{"A": "leak-me-\xed\xa0\x80"}', "not valid utf-8"),
    ("overlong-encoding", b'{"A": "leak-me-\xc0\xaf"}', "not valid utf-8"),
    ("truncated-multibyte", b'{"A": "leak-me"}\xe2\x82', "not valid utf-8"),
    ("utf-16-le-with-bom", _OBJECT.encode("utf-16"), "utf-16"),
    ("utf-16-be-no-bom", _OBJECT.encode("utf-16-be"), "utf-16"),
    ("utf-32-le", _OBJECT.encode("utf-32-le"), "utf-16 or utf-32"),
    ("utf-8-bom", b"\xef\xbb\xbf" + _doc(_OBJECT), "save it as utf-8 without bom"),
    ("empty-file", b"", "file is empty"),
    ("whitespace-only", b" \n\t\r\n  ", "file is empty"),
    # --- not an object --------------------------------------------------------------------
    ("top-level-null", b"null", "must be a json object of name -> value, got null"),
    ("top-level-array", _doc('["leak-me-1"]'), "got an array"),
    ("top-level-string", _doc('"leak-me-2"'), "got a string"),
    ("top-level-number", b"42", "got a number"),
    ("top-level-true", b"true", "got true"),
    ("top-level-false", b" false\n", "got false"),
    # --- JSON syntax ----------------------------------------------------------------------
    # The wording of a trailing-comma error changed in Python 3.13, so only the position prefix.
    ("trailing-comma", _doc('{"A": "leak-me-3",}'), "not valid json at line 1"),
    ("single-quotes", _doc("{'A': 'leak-me-4'}"), "line 1, column 2: expecting property name"),
    ("line-comment", _doc('// note\n{"A": "leak-me-5"}'), "line 1, column 1: expecting value"),
    ("block-comment", _doc('{"A": "leak-me-6" /* c */}'), "line 1, column 19: expecting ','"),
    ("unterminated-string", _doc('{"A": "leak-me-7'), "unterminated string"),
    ("truncated-object", _doc('{"A": "leak-me-8",\n "B": '), "line 2, column 7: expecting value"),
    ("missing-close-brace", _doc('{"A": "leak-me-9"'), "expecting ',' delimiter"),
    ("number-key", _doc('{1: "leak-me-10"}'), "expecting property name enclosed in double"),
    ("unquoted-key", _doc('{A: "leak-me-11"}'), "expecting property name enclosed in double"),
    ("python-none", _doc('{"A": None}'), "line 1, column 7: expecting value"),
    ("two-documents", b"{}{}", "line 1, column 3: extra data"),
    ("garbage-after-object", _doc('{"A": "leak-me-12"} x'), "line 1, column 21: extra data"),
    ("raw-control-char", _doc('{"A": "leak\x01me-13"}'), "invalid control character"),
    ("raw-newline-in-string", _doc('{"A": "leak-me\n14"}'), "invalid control character"),
    ("invalid-escape", _doc('{"A": "leak-me-\\q"}'), "invalid \\escape"),
    # --- duplicate keys -------------------------------------------------------------------
    (
        "duplicate-top-level-key",
        _doc('{"DB_PASS": "leak-me-15", "DB_NAME": "x", "DB_PASS": "leak-me-16"}'),
        "DB_PASS: duplicate key: the name appears 2 times",
    ),
    (
        "duplicate-nested-key",
        _doc('{"DB": {"user": "u", "pass": "leak-me-17", "pass": "leak-me-18"}}'),
        'DB: value has a duplicate key at ["pass"]',
    ),
    (
        "duplicate-key-in-list",
        _doc('{"DB": [{"a": 1}, {"b": {"a": "leak-me-19", "a": 2}}]}'),
        'DB: value has a duplicate key at [1]["b"]["a"]',
    ),
    # --- numbers --------------------------------------------------------------------------
    ("nan", _doc('{"X": NaN}'), "X: value is not a finite number"),
    ("infinity", _doc('{"X": [1, Infinity]}'), "X: value at [1] is not a finite number"),
    ("minus-infinity", _doc('{"X": {"v": -Infinity}}'), 'X: value at ["v"] is not a finite'),
    ("float-overflow", _doc('{"X": 1e999}'), "X: value is not a finite number"),
    ("integer-too-long", _doc('{"X": ' + "7" * 4301 + "}"), "X: value is an integer with more"),
    # --- names ----------------------------------------------------------------------------
    ("name-empty", _doc('{"": "leak-me-20"}'), "'': name is empty"),
    ("name-with-space", _doc('{"DB PASS": "leak-me-21"}'), "'DB PASS': name contains ' '"),
    (
        "name-starts-with-digit",
        _doc('{"1PASS": "leak-me-22"}'),
        "'1PASS': name must start with an ASCII letter or '_', not '1'",
    ),
    ("name-starts-with-dot", _doc('{".env": "leak-me-23"}'), "'.env': name must start with"),
    ("name-starts-with-dash", _doc('{"-x": "leak-me-24"}'), "'-x': name must start with"),
    ("name-with-slash", _doc('{"db/pass": "leak-me-25"}'), "'db/pass': name contains '/'"),
    ("name-with-dollar", _doc('{"DB$PASS": "leak-me-26"}'), "'DB$PASS': name contains '$'"),
    ("name-with-equals", _doc('{"A=B": "leak-me-27"}'), "'A=B': name contains '='"),
    (
        "name-unicode-letters",
        _doc('{"PASSW\u00d6RT": "leak-me-28"}'),
        "'PASSW\u00d6RT': name contains '\u00d6'",
    ),
    (
        "name-too-long",
        _doc(json.dumps({"N" * 129: "leak-me-29"})),
        "name is 129 characters long, more than the limit of 128",
    ),
    ("name-with-newline", _doc('{"DB\\nPASS": "leak-me-30"}'), "'DB\\nPASS': name contains '\\n'"),
    (
        "name-trailing-newline",
        _doc('{"DB_PASS\\n": "leak-me-31"}'),
        "'DB_PASS\\n': name contains '\\n'",
    ),
    ("name-lone-surrogate", _doc('{"A\\ud800": "leak-me-32"}'), "name contains '\\ud800'"),
    # --- values and limits ----------------------------------------------------------------
    (
        "value-too-large",
        _doc(json.dumps({"BIG": LEAK_MARKER + "x" * _MAX_VALUE_BYTES})),
        f"BIG: value is {_MAX_VALUE_BYTES + len(LEAK_MARKER) + 2} bytes as compact JSON",
    ),
    (
        # 32768 two-byte characters: under the limit in characters, over it in UTF-8 bytes.
        "value-too-large-in-utf8-bytes",
        _doc(
            json.dumps(
                {"BIG": LEAK_MARKER + "\u00e9" * (_MAX_VALUE_BYTES // 2)}, ensure_ascii=False
            )
        ),
        f"BIG: value is {_MAX_VALUE_BYTES + len(LEAK_MARKER) + 2} bytes",
    ),
    ("file-too-large", _too_large_file(), f"more than the limit of {_MAX_FILE_BYTES} bytes"),
    (
        "too-many-secrets",
        _too_many_secrets(),
        f"file has {_MAX_SECRETS + 1} secrets, more than the limit of {_MAX_SECRETS}",
    ),
    (
        "nested-lists-too-deep",
        _doc('{"DEEP": ' + _nested_lists(_MAX_DEPTH + 1) + "}"),
        f"DEEP: value is nested more than {_MAX_DEPTH} levels deep",
    ),
    (
        "nested-objects-too-deep",
        _doc('{"DEEP": ' + _nested_objects(_MAX_DEPTH + 1) + "}"),
        f"DEEP: value is nested more than {_MAX_DEPTH} levels deep",
    ),
    (
        # Deep enough to exhaust the parser's recursion: reported for the document.
        "nested-beyond-recursion",
        _doc('{"DEEP": ' + _nested_lists(100_000) + "}"),
        "nested far too deeply",
    ),
    (
        "lone-high-surrogate",
        _doc('{"S": "leak-me-\\ud800"}'),
        "S: value contains a lone surrogate escape",
    ),
    (
        "reversed-surrogate-pair",
        _doc('{"S": ["ok", "leak-me-\\udc00\\ud800"]}'),
        "S: value at [1] contains a lone surrogate escape",
    ),
    (
        "surrogate-in-nested-key",
        _doc('{"S": {"\\udfff": "leak-me-33"}}'),
        "S: a key in the value contains a lone surrogate escape",
    ),
]
