"""Open the same secret service on either backend, and look at its raw rows, for tests."""

from __future__ import annotations

from pathlib import Path

from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.master_keys import FileMasterKeyProvider

BACKENDS = ("embedded", "postgres")


def settings_for(backend: str, home: Path, dsn: str | None) -> Settings:
    """Settings a user would have: the embedded default, or a DSN plus a key file."""
    if backend == "embedded":
        return Settings(home=home, database_url=None, master_key_file=None, actor="user:test")
    assert dsn is not None
    key_file = home / "master.key"
    if not key_file.exists():
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
    return Settings(home=home, database_url=dsn, master_key_file=key_file, actor="user:test")


def key_file_of(settings: Settings) -> Path:
    return settings.master_key_file or settings.local_master_key_path


def open_service(settings: Settings) -> SecretService:
    return open_secret_service(settings)


def raw_blobs(service: SecretService) -> dict[tuple[str, str, str, str, int], bytes | None]:
    """Every stored ciphertext by (scope, project, package, name, version)."""
    with service.store.transaction() as tx:
        rows = tx.execute("SELECT scope, project, package, name, version, blob "
                          "FROM secret_versions")
    return {(r[0], r[1], r[2], r[3], int(r[4])): None if r[5] is None else bytes(r[5])
            for r in rows}
