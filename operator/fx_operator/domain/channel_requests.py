"""The run channel's request bodies, read strictly: a run's writes are a tenant's input.

``context.secrets.set`` and ``context.state.put`` reach the operator as JSON bodies (the protocol
is in ``fx_ef.contract``); the broker and the local channel both read them here, without I/O,
before anything reaches the store. The rules:

* Body: at most :data:`MAX_BODY_BYTES`, strict UTF-8, exactly one JSON object. Fields the request
  does not use are ignored.
* ``name``, ``key`` and ``scope``: strings (``scope`` may be left out: ``"project"``), with no
  NUL (PostgreSQL text cannot hold one) and no lone surrogate. What a valid name or scope is
  stays with ``RunService`` (``validate_name``, the writable scopes).
* A state write's key and value are held to ``domain.state_limits`` here, before the store: a key
  too long is a ``ValidationError`` (400), a value too large a ``StateLimitError`` (413), each
  naming the key and the limit.
* ``value``: any JSON value, nested at most :data:`~fx_operator.domain.nesting.MAX_DEPTH` levels;
  numbers finite (Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999`` by default, and
  writes them back as text no other JSON reader takes), integers at most 4,300 digits; no lone
  surrogate (``"\\ud800"`` parses but can never be encoded as UTF-8) in a string or an object key.
* A body nested too deeply for the decoder (``RecursionError``) is refused like any other, naming
  the field it was in.

Every refusal is one ``ValidationError`` whose problems name the field (``body`` for the body as a
whole) and what is wrong with it, never the value; the channel answers it with 400.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from fx_operator.domain import state_limits
from fx_operator.domain.crypto import encode_value
from fx_operator.domain.nesting import MAX_DEPTH, MAX_INT_DIGITS, too_deep
from fx_operator.exceptions import Problem, ValidationError

#: The largest body the channel reads (the broker and the local channel answer 413 beyond it).
MAX_BODY_BYTES: Final = 1024 * 1024

DEFAULT_SCOPE: Final = "project"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PROBLEM = ("contains a lone surrogate (\\ud800-\\udfff), which cannot be encoded as "
                      "UTF-8")
_WHITESPACE = b" \t\r\n"
# A JSON string (with an optional ':' after it: an object key) or a bracket; only used to find
# the field of a body too deep to decode.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"\s*(:)?|[\[\]{}]')


@dataclass(frozen=True)
class SecretWrite:
    """``POST /v1/secrets``: a new version of ``name`` at ``scope``."""

    name: str
    value: Any
    scope: str


@dataclass(frozen=True)
class StateWrite:
    """``POST /v1/state``: one key of the package's state, and the value as it is stored."""

    key: str
    value: Any
    encoded: bytes  # ``crypto.encode_value(value)``, within ``state_limits.MAX_VALUE_BYTES``


class _NotFinite:
    """Stands in for NaN, Infinity or an overflowing float, so the field can be named."""


class _TooManyDigits:
    """Stands in for an integer literal too long to convert, so the field can be named."""


_NOT_FINITE: Final = _NotFinite()
_TOO_MANY_DIGITS: Final = _TooManyDigits()


def _constant(name: str) -> _NotFinite:
    return _NOT_FINITE  # "NaN", "Infinity", "-Infinity": never a float of ours


def _float(text: str) -> float | _NotFinite:
    number = float(text)
    return number if math.isfinite(number) else _NOT_FINITE  # 1e999 is inf


def _int(text: str) -> int | _TooManyDigits:
    # int() would raise past 4,300 digits, and the field would be lost.
    return _TOO_MANY_DIGITS if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


def _kind(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "a boolean"
    if isinstance(item, int | float | _NotFinite | _TooManyDigits):
        return "a number"
    if isinstance(item, str):
        return "a string"
    if isinstance(item, list):
        return "an array"
    return "an object"


def _refused(where: str, what: str, source: str) -> ValidationError:
    return ValidationError(Problem(where, what), source=source)


def _too_deep_field(text: str, fields: tuple[str, ...]) -> str:
    """The field whose value nests beyond ``MAX_DEPTH``; ``body`` when it is none of ``fields``."""
    level = 0
    field = "body"
    for token in _TOKEN.finditer(text):
        symbol = token.group()
        if symbol in ("[", "{"):
            level += 1
            if level > MAX_DEPTH + 1:  # the body's own object is one level
                return field
        elif symbol in ("]", "}"):
            level -= 1
        elif level == 1 and token.group(1):
            key = symbol[:symbol.rindex('"') + 1]
            field = next((name for name in fields if key == f'"{name}"'), "body")
    return "body"


def _document(raw: bytes, fields: tuple[str, ...], source: str) -> dict[str, Any]:
    """The body as a JSON object; numbers out of range kept as markers for the field checks."""
    if len(raw) > MAX_BODY_BYTES:
        raise _refused("body", f"is {len(raw)} bytes, more than the limit of {MAX_BODY_BYTES}",
                       source)
    if not raw.strip(_WHITESPACE):
        raise _refused("body", "is empty; the request is a JSON object", source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # The offending byte is not shown: it may be part of a value.
        raise _refused("body", f"is not valid UTF-8 (at byte {e.start})", source) from None
    try:
        document = json.loads(text, parse_constant=_constant, parse_float=_float,
                              parse_int=_int)
    except json.JSONDecodeError as e:
        # json's message never quotes the text.
        raise _refused("body", f"is not JSON: {e.msg} at line {e.lineno}, column {e.colno}",
                       source) from None
    except RecursionError:
        raise _refused(_too_deep_field(text, fields),
                       f"is nested too deeply; at most {MAX_DEPTH} levels are allowed",
                       source) from None
    except ValueError:  # int() under a lowered sys.set_int_max_str_digits()
        raise _refused("body", "holds a number too long to read", source) from None
    if not isinstance(document, dict):
        raise _refused("body", f"must be a JSON object, got {_kind(document)}", source)
    return document


def _text(document: dict[str, Any], field: str, problems: list[Problem],
          default: str | None = None) -> str:
    """A string field; a problem is added (and "" returned) when it is missing or not usable."""
    if field not in document and default is not None:
        return default
    if field not in document:
        problems.append(Problem(field, "is required"))
        return ""
    item = document[field]
    if not isinstance(item, str):
        problems.append(Problem(field, f"must be a string, got {_kind(item)}"))
    elif "\x00" in item:
        problems.append(Problem(field, "contains a NUL character"))
    elif _SURROGATE.search(item):
        problems.append(Problem(field, _SURROGATE_PROBLEM))
    else:
        return item
    return ""


def _value_problem(value: Any) -> str | None:
    """What is wrong with a value that is not too deep, or None. Iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(_SURROGATE.search(key) for key in item):
                return f"has an object key that {_SURROGATE_PROBLEM}"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                return f"has a string that {_SURROGATE_PROBLEM}"
        elif item is _NOT_FINITE:
            return "has a number that is not finite (NaN, Infinity or out of range)"
        elif item is _TOO_MANY_DIGITS:
            return f"has an integer of more than {MAX_INT_DIGITS} digits"
    return None


def _value(document: dict[str, Any], field: str, problems: list[Problem]) -> Any:
    if field not in document:
        problems.append(Problem(field, "is required"))
        return None
    item = document[field]
    problem = too_deep(item) or _value_problem(item)
    if problem is not None:
        problems.append(Problem(field, problem))
        return None
    return item


def parse_secret_write(raw: bytes) -> SecretWrite:
    """``POST /v1/secrets``'s body ``{"name", "value", "scope"}``; ``ValidationError`` if bad."""
    source = "secret write"
    document = _document(raw, ("name", "value", "scope"), source)
    problems: list[Problem] = []
    name = _text(document, "name", problems)
    value = _value(document, "value", problems)
    scope = _text(document, "scope", problems, default=DEFAULT_SCOPE)
    if problems:
        raise ValidationError(problems, source=source)
    return SecretWrite(name, value, scope)


def parse_state_write(raw: bytes) -> StateWrite:
    """``POST /v1/state``'s body ``{"key", "value"}``; ``ValidationError`` if bad, and
    ``state_limits.StateLimitError`` if the value is larger than a state value may be."""
    source = state_limits.SOURCE
    document = _document(raw, ("key", "value"), source)
    problems: list[Problem] = []
    key = _text(document, "key", problems)
    if not problems:  # the key is a usable string: now its length
        problem = state_limits.key_problem(key)
        if problem is not None:
            problems.append(Problem("key", problem))
    value = _value(document, "value", problems)
    if problems:
        raise ValidationError(problems, source=source)
    encoded = encode_value(value)
    state_limits.check_value(key, len(encoded))
    return StateWrite(key, value, encoded)
