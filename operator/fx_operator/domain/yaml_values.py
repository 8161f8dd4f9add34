"""YAML read as JSON values, the only values a run's params and config can carry.

``yaml.safe_load`` builds more than JSON can hold: dates (``2024-01-01`` unquoted), bytes
(``!!binary``), sets, NaN and infinities (``.nan``, ``1e400``), non-text keys. Each of them used to
surface later as a traceback (a bundle that does not serialize) or as a value no pod run would
see the same. And its composer recurses once per level: 5,000 nested levels raised
``RecursionError``. Here:

* dates stay text, as Kubernetes reads YAML (``2024-01-01`` is the string ``"2024-01-01"``);
* nesting deeper than :data:`~fx_operator.domain.nesting.MAX_DEPTH` is refused while composing,
  before any recursion could go deep;
* every other value that is not JSON is refused with its path: :func:`json_problems`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Final

import yaml

from fx_operator.domain.nesting import MAX_DEPTH, MAX_INT_DIGITS
from fx_operator.exceptions import Problem

#: Values a document may hold, every alias counted at each place it is used: aliases make a
#: small text into an exponentially large value ("billion laughs").
MAX_VALUES: Final = 100_000
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_JSON_TYPES = "text, a number, true/false, null, a list or a mapping"


class TooDeepError(yaml.YAMLError):
    """The document nests deeper than a run's values may (raised before recursing further)."""

    def __init__(self, field: str, line: int) -> None:
        super().__init__(f"is nested more than {MAX_DEPTH} levels deep (line {line}); at most "
                         f"{MAX_DEPTH} are allowed")
        self.field = field


class _LongInteger:
    """Stands for an integer too long to convert (Python refuses past 4,300 digits)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


class JsonValueLoader(yaml.SafeLoader):
    """SafeLoader with dates kept as text and nesting bounded while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # nodes above the one being composed
        self._field = ""  # the top-level field being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # A top-level field's value (depth 1) may hold MAX_DEPTH levels of lists and mappings,
        # and scalars inside the deepest: a node below that means one level too many.
        if self._depth > MAX_DEPTH + 1:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise TooDeepError(self._field, mark.line + 1)
        if self._depth == 1 and isinstance(index, yaml.ScalarNode):
            self._field = str(index.value)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        digits = sum(char.isdigit() for char in str(node.value))
        if digits > MAX_INT_DIGITS:
            return _LongInteger(digits)
        return super().construct_yaml_int(node)


JsonValueLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
JsonValueLoader.add_constructor("tag:yaml.org,2002:int", JsonValueLoader.construct_yaml_int)


def load_json_values(text: str) -> Any:
    """The YAML document in ``text``; raises ``yaml.YAMLError`` (:class:`TooDeepError` among
    them). Values that are not JSON are left for :func:`json_problems` to name."""
    try:
        return yaml.load(text, Loader=JsonValueLoader)  # noqa: S506 (a SafeLoader)
    except (ValueError, IndexError, TypeError, OverflowError) as e:
        # PyYAML's constructors on a tag they cannot read: "!!int" (empty), "!!int 08",
        # "!!float ;". Its message names the text, which in package.yaml is no secret.
        raise yaml.YAMLError(f"a tagged value cannot be read ({type(e).__name__}: {e})") from None


def json_problems(value: Any, where: str) -> list[Problem]:
    """What in ``value`` is not a JSON value, each with its path under ``where``. Iterative,
    and stops after :data:`MAX_VALUES` values (aliases counted at every use)."""
    problems: list[Problem] = []
    for count, (path, item) in enumerate(_walk(value, where)):
        if count >= MAX_VALUES:
            field = where or re.split(r"[.\[]", path, maxsplit=1)[0]
            return [*problems, Problem(field, f"holds more than {MAX_VALUES} values (every "
                                       "alias counted where it is used)")]
        if (what := _not_json(item)) is not None:
            problems.append(Problem(path, what))
    return problems


def _walk(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and _encodable(key):
                    stack.append((f"{path}.{key}" if path else key, child))
                else:
                    stack.append((path, _NonTextKey(key)))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))


class _NonTextKey:
    def __init__(self, key: Any) -> None:
        self.key = key


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate ("\\ud800" in YAML): no UTF-8 (nor JSON) carries it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _not_json(item: Any) -> str | None:
    if isinstance(item, str):
        return None if _encodable(item) else "text with a lone surrogate (\\udXXX) is not text"
    if item is None or isinstance(item, bool | int | dict | list):
        return None
    if isinstance(item, float):
        if math.isnan(item):
            return "NaN is not a number JSON can carry"
        if math.isinf(item):
            return "infinity is not a number JSON can carry (or a number too large for a float)"
        return None
    if isinstance(item, _LongInteger):
        return f"an integer of {item.digits} digits; at most {MAX_INT_DIGITS} are allowed"
    if isinstance(item, _NonTextKey):
        if isinstance(item.key, str):
            return f"the key {item.key!r} holds a lone surrogate: it is not text"
        return f"the key {item.key!r} is not text: quote it"
    advice = _ADVICE.get(type(item).__name__)
    if advice is None:
        return f"{type(item).__name__} is not a JSON value ({_JSON_TYPES})"
    return f"{advice[0]} is not a JSON value: {advice[1]}"


_ADVICE: Final = {
    "date": ("a date (!!timestamp)", "quote it to keep it as text"),
    "datetime": ("a date (!!timestamp)", "quote it to keep it as text"),
    "bytes": ("binary data (!!binary)", "put it in text (base64, say)"),
    "set": ("a set (!!set)", "use a list"),
    "tuple": ("an ordered pair (!!omap, !!pairs)", "use a mapping or a list"),
}
