"""Shared test fixtures.

Sections:
  * PostgreSQL: one real server per test session (started lazily, only when a
    test asks for it) and a fresh database per test.
  * Store fixtures: added at the end of this file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from support.postgres import PostgresNotFoundError, PostgresServer

# --- PostgreSQL ----------------------------------------------------------------

_POSTGRES_FIXTURES = {"postgres_server", "postgres_dsn"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the server get the `postgres` marker, so `-m "not postgres"` works.
    for item in items:
        if _POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server shared by the whole session.

    Without PostgreSQL installed: skipped locally, a failure in CI (CI set).
    """
    try:
        server = PostgresServer()
    except PostgresNotFoundError as exc:
        if _in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """DSN of a fresh, empty database of its own for this test; dropped afterwards.

    For SQLAlchemy use ``support.postgres.sqlalchemy_url(dsn)``.
    """
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = postgres_server.create_database(name)
    yield dsn
    postgres_server.drop_database(name)


# --- store fixtures are added below ---
