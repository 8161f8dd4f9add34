"""``context.state`` encrypted at rest (issue 20, item 8), on both store backends: no value in a
database dump or the store's files, rows from before encryption read and sealed, blobs bound to
their row, and both key rotations keep the state readable.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import IntegrityError, MasterKeyError
from fx_operator.services import rotation
from fx_operator.services.channel import dispatch
from fx_operator.services.runs import RunGrant, RunService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import migrating
from fx_operator.storage.secret_store import SecretStore
from support.postgres import PostgresServer
from support.stores import open_service, settings_for

from fx_ef import contract

CANARY = "state-canary-7d41c2e9-never-at-rest"
LEGACY_CANARY = "legacy-state-canary-0b93f6aa"
ETL = RunGrant("run-1", "team-a", "etl")
ETL_OWNER = Owner.of(Scope.PACKAGE, "team-a", "etl")


def _put(runs: RunService, grant: RunGrant, key: str, value: object) -> None:
    """A put as the run channel gets it."""
    body = json.dumps({"key": key, "value": value}).encode()
    status, answer = dispatch(runs, grant, "POST", contract.CHANNEL_STATE_PATH, body)
    assert status == 200, answer


def _at_rest(settings: Settings, request: pytest.FixtureRequest) -> bytes:
    """Everything a thief of the store would get: a pg_dump, or every file of the store's home."""
    if settings.database_url:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.dump(urlsplit(settings.database_url).path.lstrip("/"))
    return b"".join(path.read_bytes() for path in settings.home.rglob("*") if path.is_file())


def _state_rows(service: SecretService) -> dict[tuple[str, str], tuple[bytes | None, str | None]]:
    """(project, key) -> (blob, legacy_value) of every state row."""
    with service.store.transaction() as tx:
        rows = tx.execute("SELECT project, package, key, blob, legacy_value FROM package_state")
    return {(r[1], r[2]): (None if r[3] is None else bytes(r[3]), r[4]) for r in rows}


def _set_blob(service: SecretService, package: str, key: str, blob: bytes) -> None:
    with service.store.transaction() as tx:
        tx.execute("UPDATE package_state SET blob = :blob WHERE package = :package AND key = :key",
                   {"blob": blob, "package": package, "key": key})


def test_no_state_value_at_rest(service: SecretService, store_settings: Settings,
                                request: pytest.FixtureRequest) -> None:
    runs = RunService(service)
    _put(runs, ETL, "token", CANARY)
    _put(runs, ETL, "nested", {"deep": [CANARY, 1]})
    assert runs.get_state(ETL) == {"nested": {"deep": [CANARY, 1]}, "token": CANARY}
    service.close()
    stored = _at_rest(store_settings, request)
    assert b"token" in stored, "the scan sees the state's rows"
    assert CANARY.encode() not in stored


def test_a_state_blob_opens_only_in_its_own_row(service: SecretService) -> None:
    runs = RunService(service)
    _put(runs, ETL, "a", CANARY)
    _put(runs, ETL, "b", "other")
    _put(runs, RunGrant("run-2", "team-a", "report"), "a", "report's")
    service.set(ETL_OWNER, "SECRET", CANARY)  # a secret of the same package, same data key
    rows = _state_rows(service)
    blob_a = rows[("etl", "a")][0]
    assert blob_a is not None
    with service.store.transaction() as tx:
        secret_blob = bytes(tx.execute("SELECT blob FROM secret_versions WHERE name = 'SECRET'"
                                       )[0][0])
    for package, key, blob in (("etl", "b", blob_a),               # another key
                               ("report", "a", blob_a),            # another package
                               ("etl", "b", secret_blob)):         # a secret's blob
        original = rows[(package, key)][0]
        assert original is not None
        _set_blob(service, package, key, blob)
        grant = ETL if package == "etl" else RunGrant("run-2", "team-a", package)
        with pytest.raises(IntegrityError):
            runs.get_state(grant)
        status, body = dispatch(runs, grant, "GET", contract.CHANNEL_STATE_PATH, b"")
        assert status == 500 and CANARY not in json.dumps(body)
        _set_blob(service, package, key, original)
    assert runs.get_state(ETL) == {"a": CANARY, "b": "other"}


def test_data_key_rotation_keeps_state_readable(service: SecretService) -> None:
    runs = RunService(service)
    _put(runs, ETL, "cursor", {"page": 3})
    service.set(ETL_OWNER, "DB_PASS", "pw")
    before = _state_rows(service)[("etl", "cursor")][0]
    # the one secret version
    assert rotation.rotate_data_key(service.keys, ETL_OWNER, actor=service.actor) == 1
    after = _state_rows(service)[("etl", "cursor")][0]
    assert after is not None and after != before
    with service.store.transaction() as tx:
        keys = service.store.data_keys(tx)
        assert [k.owner for k in keys] == [ETL_OWNER], "the old key was retired"
        assert after[1:17].hex() == keys[0].key_id, "sealed under the new key"
    assert RunService(service).get_state(ETL) == {"cursor": {"page": 3}}
    _put(runs, ETL, "next", 4)
    assert runs.get_state(ETL) == {"cursor": {"page": 3}, "next": 4}
    # a package with state and no secret at all rotates too
    report = RunGrant("run-2", "team-a", "report")
    _put(runs, report, "only", "state")
    rotation.rotate_data_key(service.keys, Owner.of(Scope.PACKAGE, "team-a", "report"),
                             actor=service.actor)
    assert runs.get_state(report) == {"only": "state"}


def test_master_key_rotation_keeps_state_readable(service: SecretService) -> None:
    runs = RunService(service)
    _put(runs, ETL, "cursor", CANARY)
    new_key = MasterKey.generate()
    rotation.rotate_store_master_key(service.keys, new_key, actor=service.actor)
    assert runs.get_state(ETL) == {"cursor": CANARY}
    fresh = SecretService(service.store, new_key, actor="user:test")  # no data key held
    assert RunService(fresh).get_state(ETL) == {"cursor": CANARY}
    stale = SecretService(service.store, MasterKey.generate(), actor="user:test")
    with pytest.raises(MasterKeyError):
        RunService(stale).get_state(ETL)


def _store_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite:///{settings.embedded_path}"


def _legacy_store(settings: Settings) -> None:
    """A store at revision 0004 whose state rows are plaintext, as every store had them."""
    settings.home.mkdir(parents=True, exist_ok=True)
    migrating.upgrade(_store_url(settings), "0004")
    store = (SecretStore.open_postgres(settings.database_url, migrate=False)
             if settings.database_url else
             SecretStore.open_embedded(settings.embedded_path, migrate=False))
    try:
        with store.transaction() as tx:
            for package, key, value in (("etl", "token", LEGACY_CANARY),
                                        ("etl", "count", 7),
                                        ("report", "seen", [LEGACY_CANARY])):
                tx.execute("INSERT INTO package_state (project, package, key, value, updated_at, "
                           "run_id) VALUES ('team-a', :package, :key, :value, "
                           "CURRENT_TIMESTAMP, 'old-run')",
                           {"package": package, "key": key, "value": json.dumps(value)})
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_legacy_plaintext_rows_are_read_and_sealed(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else None
    settings = settings_for(backend, tmp_path / "fx-home", dsn)
    _legacy_store(settings)
    service = open_service(settings)  # migrates to 0005: the plaintext moves, still plaintext
    try:
        rows = _state_rows(service)
        assert rows[("etl", "token")] == (None, json.dumps(LEGACY_CANARY))
        runs = RunService(service)
        # the first use of state seals every package's plaintext rows, not only the one read
        assert runs.get_state(ETL) == {"count": 7, "token": LEGACY_CANARY}
        rows = _state_rows(service)
        assert all(blob is not None and legacy is None for blob, legacy in rows.values()), rows
        assert RunService(service).get_state(RunGrant("run-2", "team-a", "report")) == {
            "seen": [LEGACY_CANARY]}
        _put(runs, ETL, "count", 8)
        assert runs.get_state(ETL) == {"count": 8, "token": LEGACY_CANARY}
    finally:
        service.close()
    assert LEGACY_CANARY.encode() not in _at_rest(settings, request)


def test_a_legacy_row_met_by_a_write_is_sealed_by_it(service: SecretService) -> None:
    """A plaintext row that appears after the sweep (an older operator still writing during an
    upgrade) is sealed by the next read or write of its package, and counts for the limits."""
    runs = RunService(service)
    assert runs.get_state(ETL) == {}  # the sweep ran: nothing to seal
    with service.store.transaction() as tx:
        tx.execute("INSERT INTO package_state (project, package, key, legacy_value, updated_at) "
                   "VALUES ('team-a', 'etl', 'late', :value, CURRENT_TIMESTAMP)",
                   {"value": json.dumps(LEGACY_CANARY)})
    _put(runs, ETL, "new", 1)
    assert _state_rows(service)[("etl", "late")][1] is None
    assert runs.get_state(ETL) == {"late": LEGACY_CANARY, "new": 1}


def test_the_downgrade_keeps_plaintext_rows_and_refuses_sealed_ones(
        store_settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    _legacy_store(store_settings)
    migrating.upgrade(_store_url(store_settings), "head")  # 0005, nothing sealed yet
    config = Config()
    config.set_main_option("script_location", str(migrating.MIGRATIONS))
    config.set_main_option("sqlalchemy.url",
                           migrating.sqlalchemy_url(_store_url(store_settings)).replace("%", "%%"))
    command.downgrade(config, "0004")  # the plaintext goes back where it was
    service = open_service(store_settings)  # upgrades again
    try:
        assert RunService(service).get_state(ETL)["token"] == LEGACY_CANARY  # sealed now
    finally:
        service.close()
    with pytest.raises(RuntimeError, match=r"3 package state row.* are encrypted"):
        command.downgrade(config, "0004")
