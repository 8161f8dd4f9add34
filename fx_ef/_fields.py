"""Typed access to a JSON document's fields, with errors that name the field and say what was
expected, never the value found (it may be a secret): the run's bundle and ``ef_env.json`` are
read through it.

Stdlib only and nothing imported at run time: the executor reads the bundle on every run's start.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class FieldError(ValueError):
    """A field of a JSON document is missing or has the wrong type or value.

    ``field`` is the field's dotted name (``package.name``, ``scopes.DB_PASS``), or ``""`` when
    the document as a whole is wrong (not JSON, not an object). The message names the field and
    the problem, and reads after the document's name (see :meth:`located`).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def located(self, document: str) -> str:
        """The message, said of ``document`` (a file's description and path)."""
        return f"{document}: {self}" if self.field else f"{document} {self}"


class Fields:
    """One JSON object's fields, read as the types the reader expects."""

    __slots__ = ("_document", "_prefix")

    def __init__(self, document: dict[str, Any], prefix: str = "") -> None:
        self._document = document
        self._prefix = prefix  # "package." for a nested object's fields

    def error(self, key: str, expected: str, value: object) -> FieldError:
        found = "nothing (or null)" if value is None else kind(value)
        name = f"{self._prefix}{key}"
        return FieldError(name, f"{name} must be {expected}, found {found}")

    def string(self, key: str) -> str:
        value = self._document.get(key)
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string", value)
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._document.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, "a string or null", value)
        return value

    def object(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self._document.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, "an object", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._document.get(key, default)
        if not isinstance(value, bool):
            name = f"{self._prefix}{key}"
            raise FieldError(name, f"{name} must be true or false")
        return value


def shown(value: object) -> str:
    """A field's value in a message when it is None, a number or short text (a format, a
    scope), escaped so that it cannot break the line; otherwise its type only."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a number"  # repr() of an integer past 4,300 digits would itself raise
    if value is None or (isinstance(value, str | bool | int | float) and len(repr(value)) <= 64):
        return repr(value)
    return kind(value)


def key_text(name: str) -> str:
    """A key in a message: as written when short and printable, else escaped and cut."""
    return name if len(name) <= 128 and name.isprintable() else ascii(name[:64])


def kind(value: object) -> str:
    """A JSON value's type in words; never the value itself, which may be a secret."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)
