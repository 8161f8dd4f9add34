"""Inputs a fuzz target found that break a parser this branch does not own: each becomes a strict
xfail that runs the target's own check on that one input (``known_bug``). When the owner's fix
lands, the xfail passes, strict mode fails the run, and the entry is removed here and in the
target's filter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st


def known_bug(check: Callable[[Any], None], value: Any, reason: str) -> Callable[..., None]:
    """A test that runs ``check`` on ``value`` only, expected to fail until ``reason`` is fixed."""

    @pytest.mark.xfail(strict=True, reason=reason)
    @settings(phases=[Phase.explicit], database=None, deadline=None)
    @given(st.just(value))
    @example(value)
    def test(value: Any) -> None:
        check(value)

    return test  # type: ignore[no-any-return]  # hypothesis's decorators are untyped here
