"""Store fixtures: every store test runs on the embedded store and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.stores import BACKENDS, open_service, settings_for


@pytest.fixture(params=BACKENDS)
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    return settings_for(request.param, tmp_path / "fx-home", dsn)


@pytest.fixture
def service(store_settings: Settings) -> Iterator[SecretService]:
    opened = open_service(store_settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["embedded", "postgres"])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """fxctl's environment on the embedded store and on PostgreSQL (with its key file)."""
    settings = {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:cli-test"}
    if request.param == "postgres":
        key_file = tmp_path / "master.key"
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
        settings["FX_DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
        settings["FX_MASTER_KEY_FILE"] = str(key_file)
    return settings
