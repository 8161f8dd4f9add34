"""Polling with a deadline: for tests and benchmarks that wait for a cluster or a process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], what: str = "", timeout: float = 30.0,
             every: float = 0.02) -> T:
    """Poll until ``condition()`` is truthy; return its value. A deadline, not a timing check."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:g} s: {what or condition}")
        time.sleep(every)
