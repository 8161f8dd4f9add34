"""Open the store an entry point was configured for, with the master key it was written with."""

from __future__ import annotations

from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.exceptions import ConfigError, MasterKeyError
from fx_operator.services.key_ring import MASTER_KEY_META
from fx_operator.services.rotation import pending_rotation_file as pending_rotation_file
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.master_keys import (
    FileMasterKeyProvider,
    LocalMasterKeyProvider,
    check_private_folder,
)
from fx_operator.storage.secret_store import SecretStore


def open_store(settings: Settings, *, migrate: bool = True) -> SecretStore:
    if settings.database_url:
        return SecretStore.open_postgres(settings.database_url,
                                         pool_max_size=settings.pool_max_size, migrate=migrate,
                                         durable_read_audit=settings.durable_read_audit)
    check_home(settings)
    return SecretStore.open_embedded(settings.embedded_path, migrate=migrate)


def check_home(settings: Settings) -> None:
    """FX_HOME holds the embedded store and the local master key: refuse it when another user
    could put files there first or replace ours (world-writable, or not ours or root's)."""
    check_private_folder(settings.home, "FX_HOME", ConfigError, sticky_ok=False)


def key_provider(settings: Settings) -> FileMasterKeyProvider:
    if settings.master_key_file is not None:
        return FileMasterKeyProvider(settings.master_key_file, guarded=True)
    if settings.database_url:
        raise ConfigError("FX_MASTER_KEY_FILE must name the master key file when FX_DATABASE_URL "
                          "is set (a local key is made only for the embedded store)")
    check_home(settings)
    return LocalMasterKeyProvider(settings.local_master_key_path)


def check_master_key(store: SecretStore, key: MasterKey, provider: FileMasterKeyProvider) -> None:
    """Record the key on a fresh store; refuse any key other than the recorded one."""
    with store.transaction() as tx:
        recorded = store.get_meta(tx, MASTER_KEY_META)
        if recorded is None:
            store.set_meta(tx, MASTER_KEY_META, key.key_id)
            return
    if recorded == key.key_id:
        return
    hint = ""
    pending = pending_rotation_file(provider.path)
    if pending.exists():
        hint = (f"; {pending} exists: a master-key rotation was interrupted after the store was "
                f"rewrapped — move it over {provider.path} to finish")
    raise MasterKeyError(
        f"{provider.description} holds master key {key.key_id}, but the store was written with "
        f"master key {recorded}; nothing was changed{hint}")


def open_secret_service(settings: Settings, *, migrate: bool = True) -> SecretService:
    store = open_store(settings, migrate=migrate)
    try:
        provider = key_provider(settings)
        if isinstance(provider, LocalMasterKeyProvider):
            with store.transaction() as tx:
                empty = (store.count_data_keys(tx) == 0
                         and store.get_meta(tx, MASTER_KEY_META) is None)
            key = provider.load_or_create(store_is_empty=empty)
        else:
            key = provider.load()
        check_master_key(store, key, provider)
    except BaseException:
        store.close()
        raise
    return SecretService(store, key, actor=settings.actor)
