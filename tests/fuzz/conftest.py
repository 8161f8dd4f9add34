"""The fuzz targets' marker and the profile they run with (``profiles``)."""

from __future__ import annotations

import pytest

from fuzz.profiles import EXAMPLES_ENV, PROFILE_ENV, profile_name

#: A run of a target over a whole profile can take minutes: far below the global 300 s in CI.
TIMEOUT_SECONDS = 3600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "fuzz: a fuzz target (tests/fuzz), bounded by FX_FUZZ_PROFILE")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"fuzz profile: {profile_name()} (set {PROFILE_ENV}=long for a longer run, "
            f"{EXAMPLES_ENV}=N for N examples per target)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/fuzz/" in str(item.path):
            item.add_marker(pytest.mark.fuzz)
            if profile_name() != "ci":
                item.add_marker(pytest.mark.timeout(TIMEOUT_SECONDS))
