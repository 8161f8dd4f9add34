"""Master-key handling: rotation without touching values, wrong or missing keys refused."""

from __future__ import annotations

import os
import stat

import pytest
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import ConfigError, MasterKeyError
from fx_operator.services import rotation
from fx_operator.services.configured_store import open_secret_service, pending_rotation_file
from fx_operator.services.rotation import rotate_master_key
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.stores import key_file_of, raw_blobs

OWNERS = [Owner.of(Scope.PACKAGE, "team-a", f"pkg-{i}") for i in range(8)] + [
    Owner.of(Scope.PROJECT, "team-a"), Owner.of(Scope.PLATFORM)]


def _fill(service: SecretService, count: int) -> dict[tuple[Owner, str], object]:
    written: dict[tuple[Owner, str], object] = {}
    per_owner = count // len(OWNERS)
    for index, owner in enumerate(OWNERS):
        values = {f"S{index}_{i:03d}": {"owner": str(owner), "i": i} for i in range(per_owner)}
        service.set_many(owner, values)
        written.update({(owner, n): v for n, v in values.items()})
    return written


def test_rotation_over_1000_secrets_rewraps_keys_and_touches_no_value(
        service: SecretService, store_settings: Settings) -> None:
    written = _fill(service, 1000)
    assert len(written) == 1000
    blobs_before = raw_blobs(service)
    key_file = key_file_of(store_settings)
    old_key = FileMasterKeyProvider(key_file).load()

    result = rotate_master_key(service.keys, service.actor, FileMasterKeyProvider(key_file))
    service.close()

    assert result.data_keys == len(OWNERS)
    assert not pending_rotation_file(key_file).exists()
    new_key = FileMasterKeyProvider(key_file).load()
    assert new_key.key_id == result.new_key_id != old_key.key_id
    # The new key file alone opens everything; no ciphertext changed.
    reopened = open_secret_service(store_settings)
    try:
        assert raw_blobs(reopened) == blobs_before
        seen = {}
        for owner in OWNERS[:8]:
            resolution = reopened.resolve("team-a", owner.package)
            assert len(resolution.values) == 300  # its own 100, the project's and the platform's
            for name, value in resolution.values.items():
                scope = resolution.manifest[name].scope
                source = owner if scope is Scope.PACKAGE else OWNERS[8 if scope is Scope.PROJECT
                                                                     else 9]
                seen[(source, name)] = value
        assert seen == written
        with reopened.store.transaction() as tx:
            assert {r.master_key_id for r in reopened.store.data_keys(tx)} == {new_key.key_id}
    finally:
        reopened.close()


def test_a_wrong_master_key_is_refused_and_nothing_is_overwritten(
        service: SecretService, store_settings: Settings) -> None:
    service.set(Owner.of(Scope.PLATFORM), "KEPT", "kept-value")
    blobs_before = raw_blobs(service)
    service.close()
    key_file = key_file_of(store_settings)
    original = key_file.read_bytes()
    key_file.unlink()
    FileMasterKeyProvider(key_file).write_new(MasterKey.generate())

    with pytest.raises(MasterKeyError, match="store was written with master key"):
        open_secret_service(store_settings)

    key_file.write_bytes(original)
    reopened = open_secret_service(store_settings)
    try:
        assert raw_blobs(reopened) == blobs_before
        assert reopened.resolve("default", "any").values == {"KEPT": "kept-value"}
    finally:
        reopened.close()


def test_an_interrupted_rotation_names_the_pending_key(
        service: SecretService, store_settings: Settings) -> None:
    service.set(Owner.of(Scope.PLATFORM), "A", "a")
    key_file = key_file_of(store_settings)
    pending = pending_rotation_file(key_file)
    new_key = MasterKey.generate()
    FileMasterKeyProvider(pending).write_new(new_key)
    # the store committed, the rename never happened
    rotation.rotate_store_master_key(service.keys, new_key, actor=service.actor)
    service.close()

    with pytest.raises(MasterKeyError, match=r"\.new exists"):
        open_secret_service(store_settings)
    os.replace(pending, key_file)
    reopened = open_secret_service(store_settings)
    reopened.close()


def test_rotation_with_a_given_key_file(service: SecretService, store_settings: Settings,
                                        tmp_path: object) -> None:
    service.set(Owner.of(Scope.PLATFORM), "A", "a")
    key_file = key_file_of(store_settings)
    given = key_file.with_name("next.key")
    FileMasterKeyProvider(given).write_new(MasterKey.generate())
    rotate_master_key(service.keys, service.actor, FileMasterKeyProvider(key_file), given)
    service.close()
    moved = store_settings.model_copy(update={"master_key_file": given})
    reopened = open_secret_service(moved)
    try:
        assert reopened.resolve("default", "x").values == {"A": "a"}
    finally:
        reopened.close()
    with pytest.raises(MasterKeyError):
        open_secret_service(store_settings)


def test_local_key_is_made_once_with_mode_0600(tmp_path: object) -> None:
    from pathlib import Path

    home = Path(str(tmp_path)) / "home"
    settings = Settings(home=home, database_url=None, master_key_file=None)
    service = open_secret_service(settings)
    service.set(Owner.of(Scope.PLATFORM), "A", "a")
    service.close()
    key_file = settings.local_master_key_path
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.embedded_path.stat().st_mode) == 0o600

    key_file.unlink()
    with pytest.raises(MasterKeyError, match="missing but the store already holds data keys"):
        open_secret_service(settings)
    assert not key_file.exists()


def test_malformed_key_files(tmp_path: object) -> None:
    from pathlib import Path

    key_file = Path(str(tmp_path)) / "k"
    key_file.write_text("not base64!!")
    with pytest.raises(MasterKeyError, match="not valid base64"):
        FileMasterKeyProvider(key_file).load()
    key_file.write_text("c2hvcnQ=")
    with pytest.raises(MasterKeyError, match="256 bits"):
        FileMasterKeyProvider(key_file).load()
    with pytest.raises(MasterKeyError, match="does not exist"):
        FileMasterKeyProvider(key_file.with_name("absent")).load()


def test_postgres_without_a_key_file_is_a_config_error(tmp_path: object) -> None:
    from pathlib import Path

    settings = Settings(home=Path(str(tmp_path)), database_url="postgresql://nowhere/db",
                        master_key_file=None)
    from fx_operator.services.configured_store import key_provider

    with pytest.raises(ConfigError, match="FX_MASTER_KEY_FILE"):
        key_provider(settings)
