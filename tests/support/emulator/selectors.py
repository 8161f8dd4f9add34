"""Label and field selectors, parsed as the API server parses them.

LIST, WATCH and DELETE-collection pick objects with them; a selector the server would refuse is a
400 here too, so a client's malformed selector fails in tests as it would in a cluster.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from support.emulator.errors import bad_request

Selector = Callable[[Mapping[str, Any]], bool]


def _split_outside_parens(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


@dataclasses.dataclass(frozen=True)
class _LabelRequirement:
    """One requirement of a label selector."""

    key: str
    op: str  # exists, !, =, !=, in, notin, <, >
    values: frozenset[str] = frozenset()

    def __call__(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op in ("<", ">"):
            try:
                number, limit = int(value or ""), int(next(iter(self.values)))
            except ValueError:
                return False
            return number < limit if self.op == "<" else number > limit
        return {
            "exists": value is not None,
            "!": value is None,
            "=": value in self.values,
            "in": value in self.values,
            "!=": value not in self.values,
            "notin": value not in self.values,
        }[self.op]


_LABEL_REQUIREMENT = re.compile(
    r"(?P<absent>!)?\s*(?P<key>[A-Za-z0-9._/-]+)"
    r"(?:\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?")


def parse_label_selector(text: str) -> Selector:
    """A label selector as the API server reads it: ``=``, ``==``, ``!=``, ``in``, ``notin``,
    ``key``, ``!key``, ``<``, ``>``; anything else is a 400."""
    requirements: list[_LabelRequirement] = []
    for requirement in _split_outside_parens(text):
        match = _LABEL_REQUIREMENT.fullmatch(requirement)
        if match is None or (match["absent"] and (match["op"] or match["setop"])):
            raise bad_request(f"unable to parse requirement: {requirement!r}")
        if match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_LabelRequirement(match["key"], match["setop"], values))
        elif match["op"]:
            op = "=" if match["op"] == "==" else match["op"]
            requirements.append(_LabelRequirement(match["key"], op, frozenset([match["value"]])))
        else:
            op = "!" if match["absent"] else "exists"
            requirements.append(_LabelRequirement(match["key"], op))

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in requirements)

    return matches


@dataclasses.dataclass(frozen=True)
class _FieldRequirement:
    """One requirement of a field selector, on a dotted path."""

    path: tuple[str, ...]
    value: str
    equal: bool

    def __call__(self, obj: Mapping[str, Any]) -> bool:
        found: Any = obj
        for part in self.path:
            found = found.get(part) if isinstance(found, Mapping) else None
        text = "" if found is None else str(found)
        if isinstance(found, bool):
            text = text.lower()  # Go renders booleans as true/false
        return (text == self.value) == self.equal


def parse_field_selector(text: str) -> Selector:
    """A field selector: ``path=value``, ``path==value``, ``path!=value`` on dotted paths
    (``metadata.name``, ``metadata.namespace``, ``status.phase``, ``involvedObject.uid``...)."""
    requirements: list[_FieldRequirement] = []
    for requirement in _split_outside_parens(text):
        match = re.fullmatch(r"(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)",
                             requirement)
        if match is None:
            raise bad_request(f"invalid field selector: {requirement!r}")
        requirements.append(_FieldRequirement(tuple(match["path"].split(".")), match["value"],
                                              equal=match["op"] != "!="))
    return lambda obj: all(requirement(obj) for requirement in requirements)
