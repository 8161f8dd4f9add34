"""How deep a tenant's JSON may nest, and how long its integers may be: params, config and
resources of the objects, sealed values, the run channel's bodies, secrets.json.

The API server stores objects nested up to 10,000 levels deep (apimachinery's JSON limit; kubectl
refuses more). Python's json decoder, which kopf and the Kubernetes client use for every object
they read, counts each level against the interpreter's recursion limit (1,000 by default): one
Execution nested 1,000 levels deep stopped the operator's watch, and with it every namespace.
So the operator runs with a recursion limit above the API server's (:data:`RECURSION_LIMIT`),
reads such objects like any other, and refuses their free-form fields beyond :data:`MAX_DEPTH`
with a condition naming the field.
"""

from __future__ import annotations

import re
from typing import Any, Final

#: The deepest JSON the API server accepts and stores.
API_SERVER_MAX_DEPTH: Final = 10_000
#: The operator's recursion limit: every object the API server can hold decodes (one level each)
#: and goes through kopf's deep copies and diffs (two Python frames a level), with room for the
#: frames beneath. Python 3.11 keeps Python-to-Python calls off the C stack, and the C decoder's
#: own depth is bounded by the API server's limit, so the raised limit costs no C stack.
RECURSION_LIMIT: Final = 5 * API_SERVER_MAX_DEPTH
#: The deepest params, config or resources a Package or Execution may have (a script's settings;
#: 32 levels is far beyond any seen, and keeps every later copy and dump cheap).
MAX_DEPTH: Final = 32
#: The longest integer a tenant's JSON may hold: Python's int/str conversion limit
#: (``sys.get_int_max_str_digits()``), past which ``int()`` raises.
MAX_INT_DIGITS: Final = 4300
# A JSON token that can change the depth: a string (skipped whole, also when it runs to the end
# of the text, so that the scan stays linear), or a bracket.
_DEPTH_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[\[{]|[\]}]', re.DOTALL)


def depth(value: Any) -> int | None:
    """Levels of nested objects and arrays in ``value`` (a scalar is 0); None when a container
    holds itself. Iterative (any depth), each container measured once: YAML aliases can share
    one list between many places (nine levels of nine aliases reach 387M leaves) or put a list
    inside itself, and neither may turn this check into a hang."""
    if not isinstance(value, dict | list):
        return 0
    measured: dict[int, int] = {}  # id -> levels, of containers finished
    open_ids = {id(value)}  # the containers on the current path
    # Each frame: [container, its children not yet visited, deepest child so far].
    stack: list[list[Any]] = [[value, iter(_children(value)), 0]]
    while stack:
        frame = stack[-1]
        child = next(frame[1], _DONE)
        if child is _DONE:
            stack.pop()
            open_ids.discard(id(frame[0]))
            measured[id(frame[0])] = levels = frame[2] + 1
            if stack:
                stack[-1][2] = max(stack[-1][2], levels)
        elif isinstance(child, dict | list):
            if id(child) in measured:
                frame[2] = max(frame[2], measured[id(child)])
            elif id(child) in open_ids:
                return None
            else:
                open_ids.add(id(child))
                stack.append([child, iter(_children(child)), 0])
    return measured[id(value)]


_DONE = object()


def _children(container: dict[Any, Any] | list[Any]) -> Any:
    return container.values() if isinstance(container, dict) else container


def too_deep(value: Any) -> str | None:
    """What is wrong with ``value``'s nesting, or None when it is within :data:`MAX_DEPTH`."""
    levels = depth(value)
    if levels is None:
        return "contains itself (a YAML alias cycle); a value must be a tree"
    if levels > MAX_DEPTH:
        return f"is nested {levels} levels deep; at most {MAX_DEPTH} are allowed"
    return None


def text_too_deep(text: str) -> bool:
    """Whether JSON ``text`` opens more than :data:`MAX_DEPTH` arrays or objects inside each
    other (strings skipped), read before any decoder recurses once per level: linear, no
    recursion, stops at the first level too many."""
    level = 0
    for token in _DEPTH_TOKENS.finditer(text):
        char = token.group()[0]
        if char in "[{":
            level += 1
            if level > MAX_DEPTH:
                return True
        elif char in "]}":
            level = max(level - 1, 0)
    return False
