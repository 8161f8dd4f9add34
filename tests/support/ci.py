"""A tier whose parts are missing: skipped with the reason on a developer's machine, a failure in
CI (``CI`` set, as ``.ci/run`` does), where everything is installed and nothing may be skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str, tier: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{tier} needs this in CI: {reason}", pytrace=False)
    pytest.skip(reason)
