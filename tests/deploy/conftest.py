"""The install's tests need helm and kubectl: skipped with the reason when they are missing, a
failure in CI (CI set), where .ci/run fetches them into .cache/tools."""

from __future__ import annotations

import os

import pytest
from support.manifests import find_tool


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require(name: str) -> str:
    path = find_tool(name)
    if path is None:
        message = (f"{name} not found: set FX_{name.upper()} or put {name} on PATH "
                   f"(bash .ci/run fetches helm and kubectl into .cache/tools)")
        if _in_ci():
            pytest.fail(f"{message}; it is required in CI", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _require("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return _require("kubectl")
