"""Migration 0004: a resolution's audit entries are compressed with LZ4 on a PostgreSQL that has
it (the commit a durable resolution waits for is cheaper), and the downgrade puts pglz back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.storage.migrating import MIGRATIONS, sqlalchemy_url
from support.stores import open_service, settings_for


def entries_compression(dsn: str) -> Any:
    with psycopg.connect(dsn) as conn:
        lz4 = conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                           "WHERE name = 'default_toast_compression'").fetchone()
        if not lz4 or not lz4[0]:
            pytest.skip("this PostgreSQL was built without LZ4")
        row = conn.execute("SELECT attcompression FROM pg_attribute "
                           "WHERE attrelid = 'audit'::regclass AND attname = 'entries'").fetchone()
        return row[0] if row else None


def test_resolution_audit_entries_are_stored_with_lz4(tmp_path: Path, postgres_dsn: str) -> None:
    service = open_service(settings_for("postgres", tmp_path / "fx-home", postgres_dsn))
    try:
        service.set_many(Owner.of(Scope.PLATFORM), {f"NAME_{i:03d}": "canary-4410"
                                                    for i in range(100)})
        service.resolve("team-a", "etl", run_id="compressed")
        [record] = service.audit_records(run_id="compressed")
        assert len(record.entries) == 100
    finally:
        service.close()
    assert entries_compression(postgres_dsn) == "l"
    with psycopg.connect(postgres_dsn) as conn:
        stored = conn.execute("SELECT pg_column_compression(entries), length(entries) "
                              "FROM audit WHERE run_id = 'compressed'").fetchone()
    assert stored is not None and stored[0] == "lz4" and stored[1] > 4000


def test_the_downgrade_returns_to_the_default_compression(tmp_path: Path,
                                                         postgres_dsn: str) -> None:
    open_service(settings_for("postgres", tmp_path / "fx-home", postgres_dsn)).close()
    assert entries_compression(postgres_dsn) == "l"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(postgres_dsn).replace("%", "%%"))
    command.downgrade(config, "0003")
    assert entries_compression(postgres_dsn) == ""  # the server's default_toast_compression
    command.upgrade(config, "head")
    assert entries_compression(postgres_dsn) == "l"
