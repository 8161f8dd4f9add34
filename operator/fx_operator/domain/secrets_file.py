"""Validation of a package's ``secrets.json``: what may be imported, checked before any write.

A ``secrets.json`` is one JSON object mapping a secret name to any JSON value::

    {"DB_NAME": "test_db", "DB_PASS": "supersecretpas$", "OPTS": {"retries": 3}}

The rules, checked without any I/O so the CLI, the operator and tests share them:

* Encoding: strict UTF-8 without a byte order mark. Invalid bytes are reported by byte offset;
  UTF-16/UTF-32 files and a BOM are rejected with a hint to re-save as plain UTF-8.
* Document: exactly one JSON object (not an array, string, number, ``true``/``false`` or
  ``null``), nothing after it. Syntax errors give the line and column. An empty file or one
  with only whitespace is rejected; ``{}`` is valid and imports nothing, so an empty set of
  secrets is always written explicitly.
* Keys: no key may repeat, at any depth (``json`` would silently keep the last one); the
  error gives the path of the repeated key inside the value.
* Names (``NAME_PATTERN``): start with an ASCII letter or ``_``; then ASCII letters, digits,
  ``_``, ``.`` and ``-``; at most 128 characters. Portable across env vars, files and labels.
* Values: JSON types only (str, int, float, bool, None, list, dict with str keys); numbers
  finite (``NaN``/``Infinity`` are not JSON, and ``1e999`` overflows to infinity); integers at
  most 4300 digits (Python's int/str conversion limit); strings without lone surrogates
  (``"\\ud800"`` parses but cannot be encoded as UTF-8, so it could never be stored).
* Limits: ``MAX_VALUE_BYTES`` per value, measured as its compact JSON encoding in UTF-8
  (``json.dumps(v, ensure_ascii=False, separators=(",", ":"))``); ``MAX_DEPTH`` levels of
  nesting in a value (a scalar is depth 0, ``[]`` is 1); ``MAX_FILE_BYTES`` for the raw file;
  ``MAX_SECRETS`` names per file.

All name and value problems are collected and raised together as one ``ValidationError``
whose problems are keyed by the secret name, so a user fixes the file in one pass. Messages
name keys, sizes and types, never a value: they end up in logs and Kubernetes events.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from fx_operator.domain.nesting import MAX_INT_DIGITS
from fx_operator.exceptions import Problem, ValidationError

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
MAX_NAME_CHARS = 128
MAX_VALUE_BYTES = 64 * 1024
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_SECRETS = 10_000
MAX_DEPTH = 32

_INT_LIMIT = 10**MAX_INT_DIGITS
_SHOWN_NAME_CHARS = 200
_SHOWN_KEY_CHARS = 40
_MAX_LISTED_CHARS = 5
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789.-")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_JSON_WHITESPACE = " \t\r\n"
_BOM = b"\xef\xbb\xbf"


def _shown_name(name: str) -> str:
    """A name as it appears in an error: plain when valid, else quoted and escaped (and cut)."""
    if NAME_PATTERN.fullmatch(name):
        return name
    if len(name) <= _SHOWN_NAME_CHARS:
        return repr(name)
    return f"{name[:_SHOWN_NAME_CHARS]!r}... ({len(name)} characters)"


def _name_problem(name: str) -> Problem | None:
    # fullmatch, not match: ``$`` would also accept a name ending in "\n".
    if NAME_PATTERN.fullmatch(name):
        return None
    if not name:
        return Problem(repr(name), "name is empty")
    parts: list[str] = []
    if name[0] not in _NAME_START and name[0] in _NAME_CHARS:
        parts.append(f"name must start with an ASCII letter or '_', not {name[0]!r}")
    bad = list(dict.fromkeys(c for c in name if c not in _NAME_CHARS))
    if bad:
        listed = ", ".join(repr(c) for c in bad[:_MAX_LISTED_CHARS])
        more = ", ..." if len(bad) > _MAX_LISTED_CHARS else ""
        parts.append(
            f"name contains {listed}{more}; only ASCII letters, digits, '_', '.' and '-' "
            "are allowed"
        )
    if len(name) > MAX_NAME_CHARS:
        parts.append(
            f"name is {len(name)} characters long, more than the limit of {MAX_NAME_CHARS}"
        )
    return Problem(_shown_name(name), "; ".join(parts))


def validate_name(name: str, *, source: str = "secret name") -> None:
    """Reject a name that does not match ``NAME_PATTERN``, saying which rule it breaks."""
    problem = _name_problem(name)
    if problem is not None:
        raise ValidationError(problem, source=source)


class _TooManyDigits:
    """Stands in for an integer literal too long to convert, so the key can be reported."""


_TOO_MANY_DIGITS = _TooManyDigits()


@dataclass
class _Findings:
    """First occurrence and count of each kind of problem inside one value (document order)."""

    first: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, message: str) -> None:
        self.first.setdefault(kind, message)
        self.counts[kind] += 1

    def messages(self) -> list[str]:
        out = []
        for kind, message in self.first.items():
            extra = self.counts[kind] - 1
            out.append(f"{message} (and {extra} more)" if extra else message)
        return out


_Path = tuple[str | int, ...]
_Pairs = list[tuple[str, object]]


@dataclass(frozen=True)
class _Repeats:
    """An object that had duplicate keys: all its pairs (so no value escapes checking)."""

    obj: dict[str, object]  # held so its id() stays unique while the table lives
    pairs: _Pairs
    times: dict[str, int]  # duplicated key -> how often it appears


_Duplicates = dict[int, _Repeats]


def _render_path(path: _Path) -> str:
    parts = []
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        else:
            shown = step if len(step) <= _SHOWN_KEY_CHARS else step[:_SHOWN_KEY_CHARS] + "..."
            # ensure_ascii escapes control characters and lone surrogates.
            parts.append(f"[{json.dumps(shown)}]")
    return "".join(parts)


def _subject(path: _Path) -> str:
    return f"value at {_render_path(path)}" if path else "value"


def _dict_children(
    item: dict[object, object], path: _Path, duplicates: _Duplicates | None, found: _Findings
) -> list[tuple[object, _Path]]:
    """Check an object's keys; return its values with their paths (every duplicate's too)."""
    repeats = duplicates.get(id(item)) if duplicates is not None else None
    entries: Iterable[tuple[object, object]] = item.items()
    if repeats is not None:
        entries = repeats.pairs
        for repeated, times in repeats.times.items():
            where = _render_path((*path, repeated))
            found.add("duplicate", f"value has a duplicate key at {where} ({times} times)")
    children: list[tuple[object, _Path]] = []
    for key, child in entries:
        if not isinstance(key, str):
            found.add(
                "key-type",
                f"{_subject(path)} has a key of type {type(key).__name__}; "
                "JSON object keys are strings",
            )
            continue
        if _SURROGATE.search(key):
            found.add("surrogate", _surrogate_message(f"a key in the {_subject(path)}"))
        children.append((child, (*path, key)))
    return children


def _walk(value: object, duplicates: _Duplicates | None) -> list[str]:
    """Problems of one value other than its size; iterative and cut off below ``MAX_DEPTH``."""
    found = _Findings()
    stack: list[tuple[object, _Path, int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                # Also ends a walk around a reference cycle.
                found.add("depth", f"value is nested more than {MAX_DEPTH} levels deep")
                continue
            if isinstance(item, dict):
                children = _dict_children(item, path, duplicates, found)
            else:
                children = [(child, (*path, i)) for i, child in enumerate(item)]
            stack.extend((child, where, depth + 1) for child, where in reversed(children))
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                found.add("surrogate", _surrogate_message(_subject(path)))
        elif item is None or isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if abs(item) >= _INT_LIMIT:
                found.add("bigint", _big_int_message(path))
        elif isinstance(item, float):
            if not math.isfinite(item):
                found.add(
                    "nonfinite",
                    f"{_subject(path)} is not a finite number (NaN and Infinity are not JSON)",
                )
        elif item is _TOO_MANY_DIGITS:
            found.add("bigint", _big_int_message(path))
        else:
            found.add(
                "type", f"{_subject(path)} is a {type(item).__name__}, which is not a JSON type"
            )
    return found.messages()


def _surrogate_message(subject: str) -> str:
    return (
        f"{subject} contains a lone surrogate escape (\\ud800-\\udfff), "
        "which cannot be encoded as UTF-8"
    )


def _big_int_message(path: _Path) -> str:
    return f"{_subject(path)} is an integer with more than {MAX_INT_DIGITS} digits"


# A string this short fits the size limit however it is escaped: at most 6 bytes a character
# (a control character as a \u escape), 2 for the quotes.
_SURELY_FITTING_CHARS = (MAX_VALUE_BYTES - 2) // 6


def _value_problems(value: object, duplicates: _Duplicates | None) -> list[str]:
    # The common value, a short string, needs only its surrogate check: the walk and the
    # encoding below would find nothing more (a fifth of a 10k import's time, with them).
    if type(value) is str and len(value) <= _SURELY_FITTING_CHARS \
            and not _SURROGATE.search(value):
        return []
    problems = _walk(value, duplicates)
    if problems:
        return problems
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # an int past a lowered sys.set_int_max_str_digits()
        return ["value cannot be encoded as JSON"]
    size = len(encoded.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        return [
            f"value is {size} bytes as compact JSON, more than the limit of "
            f"{MAX_VALUE_BYTES} bytes (64 KiB)"
        ]
    return []


def validate_value(name: str, value: object, *, source: str = "secret value") -> None:
    """Reject a value that is not plain, finite, encodable JSON within the size and depth limits."""
    problems = _value_problems(value, None)
    if problems:
        where = _shown_name(name)
        raise ValidationError([Problem(where, what) for what in problems], source=source)


class _Parser:
    """``json.loads`` hooks that record duplicate keys instead of letting the last one win."""

    def __init__(self) -> None:
        self.duplicates: _Duplicates = {}

    def object_pairs(self, pairs: _Pairs) -> dict[str, object]:
        result = dict(pairs)
        if len(result) != len(pairs):
            counts = Counter(key for key, _ in pairs)
            times = {key: n for key, n in counts.items() if n > 1}
            self.duplicates[id(result)] = _Repeats(result, pairs, times)
        return result

    @staticmethod
    def constant(name: str) -> float:
        # NaN/Infinity are kept as floats so the walk can report which key holds them.
        return float(name)

    @staticmethod
    def integer(text: str) -> int | _TooManyDigits:
        # int() would raise a bare ValueError past 4300 digits and lose the key.
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            return _TOO_MANY_DIGITS
        return int(text)


def _kind_of(document: object) -> str:
    if document is None:
        return "null"
    if isinstance(document, bool):
        return "true" if document else "false"
    if isinstance(document, int | float | _TooManyDigits):
        return "a number"
    if isinstance(document, str):
        return "a string"
    if isinstance(document, list):
        return "an array"
    return type(document).__name__  # pragma: no cover - json.loads returns nothing else


def _decode(raw: bytes, source: str) -> str:
    def fail(what: str) -> ValidationError:
        return ValidationError(Problem("", what), source=source)

    if len(raw) > MAX_FILE_BYTES:
        raise fail(
            f"file is {len(raw)} bytes, more than the limit of {MAX_FILE_BYTES} bytes (8 MiB)"
        )
    if raw.startswith(_BOM):
        raise fail("file starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4]:
        # JSON text starts with ASCII, so a NUL among the first bytes means UTF-16 or UTF-32.
        raise fail("file looks like UTF-16 or UTF-32; save it as UTF-8 without BOM")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        # The offending byte is not shown: it may be part of a value.
        raise fail(
            f"file is not valid UTF-8: invalid byte at offset {exc.start} (line {line}); "
            "save it as UTF-8"
        ) from None


def _syntax_message(message: str) -> str:
    """``json``'s message (which never quotes the text) tidied, with a hint for common slips."""
    if message == "Extra data":
        return "Extra data; only one JSON object is allowed, with nothing after it"
    if message.startswith("Expecting property name"):
        return f"{message}; keys need double quotes and no trailing comma"
    if message == "Expecting value":
        return f"{message}; comments, single quotes and trailing commas are not JSON"
    if message.startswith("Invalid control character"):
        return "Invalid control character in a string; write newlines and tabs as \\n and \\t"
    if message.startswith("Unterminated string"):
        return "Unterminated string starting here"
    return message


def parse_secrets_file(raw: bytes, *, source: str = "secrets.json") -> dict[str, object]:
    """Parse and fully validate a ``secrets.json``; return its secrets in file order.

    Raises one ``ValidationError`` with ``source``. A broken document (size, encoding, syntax,
    not an object) gives a single problem with ``where == ""`` and the line/column or offset.
    Otherwise every problem is listed at once: too many secrets (``where == ""``) first, then
    each name and value problem in file order with ``where`` = the secret name.
    """
    text = _decode(raw, source)
    if not text.strip(_JSON_WHITESPACE):
        raise ValidationError(
            Problem("", "file is empty; write {} for a package without secrets"), source=source
        )
    parser = _Parser()
    try:
        document = json.loads(
            text,
            object_pairs_hook=parser.object_pairs,
            parse_constant=parser.constant,
            parse_int=parser.integer,
        )
    except json.JSONDecodeError as exc:
        raise ValidationError(
            Problem(
                "",
                f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                f"{_syntax_message(exc.msg)}",
            ),
            source=source,
        ) from None
    except ValueError:  # int() under a lowered sys.set_int_max_str_digits()
        raise ValidationError(
            Problem("", "a number in the file is too long to convert"), source=source
        ) from None
    except RecursionError:
        raise ValidationError(
            Problem("", f"nested far too deeply (values may nest at most {MAX_DEPTH} levels)"),
            source=source,
        ) from None
    if not isinstance(document, dict):
        raise ValidationError(
            Problem(
                "",
                f"the top level must be a JSON object of name -> value, got {_kind_of(document)}",
            ),
            source=source,
        )

    problems: list[Problem] = []
    if len(document) > MAX_SECRETS:
        problems.append(
            Problem("", f"file has {len(document)} secrets, more than the limit of {MAX_SECRETS}")
        )
    repeats = parser.duplicates.get(id(document))
    # With duplicates, every occurrence's value is checked, not just the one json kept.
    pairs = repeats.pairs if repeats is not None else list(document.items())
    times = repeats.times if repeats is not None else {}
    seen: set[str] = set()
    for name, value in pairs:
        where = _shown_name(name)
        if name not in seen:
            seen.add(name)
            name_problem = _name_problem(name)
            if name_problem is not None:
                problems.append(name_problem)
            if name in times:
                problems.append(
                    Problem(where, f"duplicate key: the name appears {times[name]} times")
                )
        problems.extend(Problem(where, what) for what in _value_problems(value, parser.duplicates))
    if problems:
        raise ValidationError(problems, source=source)
    return document
