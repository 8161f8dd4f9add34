"""What every fuzz target asserts about a parser's answer, whatever the input."""

from __future__ import annotations

import json
import math
from typing import Any

from fx_operator.domain.nesting import MAX_DEPTH

#: How many containers and leaves a parsed value may hold before we call it a blow-up (an alias
#: bomb in YAML) rather than a document.
MAX_NODES = 200_000


def message_is_clean(error: BaseException) -> str:
    """A refusal's message: non-empty, and printable to a log or a terminal (UTF-8)."""
    message = str(error)
    assert message.strip(), f"{type(error).__name__} without a message"
    message.encode("utf-8")  # a lone surrogate in a message would break the log line
    return message


def assert_plain_json(value: Any, *, max_depth: int = MAX_DEPTH, strict: bool = True) -> None:
    """``value`` is what a JSON document holds: str keys, no cycles, no shared (aliased)
    containers, at most ``max_depth`` levels; ``strict``: numbers finite and text UTF-8 encodable
    (what can be stored)."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, level = stack.pop()
        nodes += 1
        assert nodes <= MAX_NODES, f"the value holds more than {MAX_NODES} nodes"
        if isinstance(item, dict | list):
            assert level < max_depth, f"the value nests more than {max_depth} levels"
            assert id(item) not in seen, "the value holds one container twice (alias or cycle)"
            seen.add(id(item))
            if isinstance(item, dict):
                for key in item:
                    assert isinstance(key, str), f"a key of type {type(key).__name__}"
                    if strict:
                        key.encode("utf-8")
                children = list(item.values())
            else:
                children = list(item)
            stack.extend((child, level + 1) for child in children)
        elif isinstance(item, str):
            if strict:
                item.encode("utf-8")
        elif isinstance(item, float):
            assert not strict or math.isfinite(item), "a number that is not finite"
        else:
            assert item is None or isinstance(item, bool | int), f"a {type(item).__name__}"
    json.dumps(value, allow_nan=not strict)
