"""Master-key rotation against writers and against another rotation, on both stores.

The rule: every acknowledged write is readable with the master key the store records, and a
rotation that reports success left a store that opens with its new key. Each interleaving is
driven step by step: two services on the same store (two connections), one paused inside its
transaction at a known point while the other runs; on PostgreSQL the test also waits until the
other is seen blocked on a lock (or finished) before it lets the first one go.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fx_operator.config import Settings
from fx_operator.domain import crypto, internal_keys
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import MasterKeyError
from fx_operator.services import rotation
from fx_operator.services.configured_store import open_store
from fx_operator.services.operator_keys import load_or_create_operator_keys
from fx_operator.services.rotation import rotate_master_key
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.secret_service import MASTER_KEY_META, SecretService
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.stores import key_file_of, open_service
from support.waiting import wait_for

KEPT = Owner.of(Scope.PACKAGE, "team-a", "etl")  # written before the rotation
FRESH = Owner.of(Scope.PACKAGE, "team-b", "fresh")  # first written by the stale writer
RUN_BEFORE, RUN_AFTER = "run-before", "run-after"

Writer = Callable[[SecretService], object]


def _new_secret_owner(service: SecretService) -> object:
    return service.set(FRESH, "TOKEN", "fresh-value")


def _run_key(service: SecretService) -> object:
    return RunKeyService(service.store, service.keys).register(
        RUN_AFTER, "team-a", "nightly", f"fx-{RUN_AFTER}", "etl", os.urandom(32), False)


def _operator_keys(service: SecretService) -> object:
    return load_or_create_operator_keys(service, ["localhost"])


def _data_key_rotation(service: SecretService) -> object:
    # the writer holds KEPT's data key in memory
    return rotation.rotate_data_key(service.keys, KEPT, actor=service.actor)


WRITERS: dict[str, Writer] = {"new-owner-secret": _new_secret_owner, "run-key": _run_key,
                              "operator-keys": _operator_keys,
                              "data-key-rotation": _data_key_rotation}


class Keys:
    """Master keys by id, each in a file of its own (a Secret's content)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}

    def add(self, key: MasterKey) -> Path:
        path = self.folder / f"{key.key_id}.key"
        if key.key_id not in self.files:
            FileMasterKeyProvider(path).write_new(key)
            self.files[key.key_id] = path
        return path

    def new(self) -> tuple[MasterKey, Path]:
        key = MasterKey.generate()
        return key, self.add(key)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    return Keys(folder)


@contextmanager
def _opened(settings: Settings) -> Iterator[SecretService]:
    service = open_service(settings)
    try:
        yield service
    finally:
        service.close()


def _fill(settings: Settings, keys: Keys, *, data_keys: bool = True) -> None:
    """A store with a run key waiting for its pod, and (unless told) a secret of KEPT."""
    with _opened(settings) as first:
        keys.add(FileMasterKeyProvider(key_file_of(settings)).load())
        if data_keys:
            first.set(KEPT, "DB_PASS", "kept-value")
        RunKeyService(first.store, first.keys).register(
            RUN_BEFORE, "team-a", "nightly", f"fx-{RUN_BEFORE}", "etl", b"r" * 32, False)


def _rotate(service: SecretService, settings: Settings, new_key_file: Path) -> object:
    """What ``fxctl secrets rotate-master-key --new-key-file`` does, in ``service``'s process."""
    return rotate_master_key(service.keys, service.actor,
                             FileMasterKeyProvider(key_file_of(settings)), new_key_file)


def _recorded_key_id(settings: Settings) -> str:
    store = open_store(settings)
    try:
        with store.transaction() as tx:
            recorded = store.get_meta(tx, MASTER_KEY_META)
    finally:
        store.close()
    assert recorded is not None
    return recorded


def _assert_everything_opens_with_the_recorded_key(settings: Settings, keys: Keys) -> None:
    """Every data key, pending run key and operator key opens with the key the store records,
    the values written before read back, and the store can be rotated once more."""
    recorded = _recorded_key_id(settings)
    assert recorded in keys.files, "the store records a key no rotation reported"
    with _opened(settings.model_copy(update={"master_key_file": keys.files[recorded]})) as service:
        key = service.master_key
        with service.store.transaction() as tx:
            data_keys = service.store.data_keys(tx)
            pending = tx.execute("SELECT run_id, wrapped_key FROM run_keys "
                                 "WHERE wrapped_key IS NOT NULL")
            has_operator_keys = service.store.get_meta(tx, "operator.sealing_key") is not None
        for record in data_keys:
            crypto.unwrap_data_key(key, record.key_id, record.owner, record.wrapped)
        for run_id, wrapped in pending:
            internal_keys.unwrap(key, internal_keys.RUN_KEY, run_id, bytes(wrapped))
        if has_operator_keys:
            load_or_create_operator_keys(service, ["localhost"])
        written = {r.owner for r in data_keys}
        if KEPT in written:
            assert service.get(KEPT, "DB_PASS") == "kept-value"
        if FRESH in written:
            assert service.get(FRESH, "TOKEN") == "fresh-value"
        _, next_file = keys.new()
        _rotate(service, settings.model_copy(update={"master_key_file": keys.files[recorded]}),
                next_file)


class Pause:
    """Stops the thread that calls ``method`` of ``target`` (after the call) until released:
    the transaction around the call stays open meanwhile."""

    def __init__(self, target: object, method: str) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()
        original = getattr(target, method)

        def paused(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self.reached.set()
            assert self.released.wait(timeout=120), "the test never released the pause"
            return result

        setattr(target, method, paused)


def _lock_waiters(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock'").fetchone()
    assert row is not None
    return int(row[0])


def _until_blocked_or_done(settings: Settings, future: Future[object]) -> None:
    """Wait until the other party's transaction is waiting for the paused one, or has ended.

    On the embedded store there is nothing to wait for: every transaction begins with BEGIN
    IMMEDIATE, so the other party's transaction starts after the paused one ends, whether it
    asked before or after the pause is released.
    """
    if settings.database_url is None:
        return
    dsn = settings.database_url
    wait_for(lambda: future.done() or _lock_waiters(dsn) > 0,
             "the second transaction waits for the first or has ended")


def _outcome(future: Future[object]) -> object:
    """The result, or the MasterKeyError a party that lost the race must end with."""
    try:
        return future.result(timeout=120)
    except MasterKeyError as e:
        return e


def _assert_succeeded_or_told_to_restart(outcome: object) -> None:
    """A writer that lost the race may succeed under the new key or fail saying why; whatever
    it acknowledged is checked by _assert_everything_opens_with_the_recorded_key."""
    if isinstance(outcome, MasterKeyError):
        assert "rotated to master key" in str(outcome) and "restart" in str(outcome), outcome


# --- (a) a writer and a rotation -------------------------------------------------------------


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_a_writer_that_loaded_its_key_before_a_rotation_acknowledges_nothing_unreadable(
        store_settings: Settings, keys: Keys, write: Writer) -> None:
    _fill(store_settings, keys)
    with _opened(store_settings) as writer, _opened(store_settings) as rotator:
        writer.get(KEPT, "DB_PASS")  # the writer holds KEPT's data key
        _, new_file = keys.new()
        _rotate(rotator, store_settings, new_file)

        try:
            outcome: object = write(writer)
        except MasterKeyError as e:
            outcome = e
        _assert_succeeded_or_told_to_restart(outcome)
    _assert_everything_opens_with_the_recorded_key(store_settings, keys)


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_a_rotation_in_flight_holds_off_a_writer_that_then_fails_clearly(
        store_settings: Settings, keys: Keys, write: Writer) -> None:
    _fill(store_settings, keys)
    with (_opened(store_settings) as writer, _opened(store_settings) as rotator,
          ThreadPoolExecutor(2) as pool):
        writer.get(KEPT, "DB_PASS")
        _, new_file = keys.new()
        pause = Pause(rotator.store, "audit")  # all rewrapped, the rotation not committed yet
        rotation = pool.submit(_rotate, rotator, store_settings, new_file)
        assert pause.reached.wait(timeout=60)
        written = pool.submit(write, writer)
        _until_blocked_or_done(store_settings, written)
        pause.released.set()

        rotation.result(timeout=120)
        _assert_succeeded_or_told_to_restart(_outcome(written))
    _assert_everything_opens_with_the_recorded_key(store_settings, keys)


def test_a_write_in_flight_holds_off_a_rotation_that_then_rewraps_it(
        store_settings: Settings, keys: Keys) -> None:
    _fill(store_settings, keys)
    with (_opened(store_settings) as writer, _opened(store_settings) as rotator,
          ThreadPoolExecutor(2) as pool):
        pause = Pause(writer.store, "insert_data_key")  # wrapped under the old key, not committed
        written = pool.submit(_new_secret_owner, writer)
        assert pause.reached.wait(timeout=60)
        _, new_file = keys.new()
        rotation = pool.submit(_rotate, rotator, store_settings, new_file)
        _until_blocked_or_done(store_settings, rotation)
        pause.released.set()

        assert written.result(timeout=120) == 1
        rotation.result(timeout=120)
    with _opened(store_settings.model_copy(update={"master_key_file": new_file})) as reader:
        assert reader.get(FRESH, "TOKEN") == "fresh-value"
    _assert_everything_opens_with_the_recorded_key(store_settings, keys)


# --- (b) two rotations -------------------------------------------------------------------------


def test_of_two_concurrent_rotations_one_wins_and_the_other_fails_clearly(
        store_settings: Settings, keys: Keys) -> None:
    _fill(store_settings, keys)
    with (_opened(store_settings) as first, _opened(store_settings) as second,
          ThreadPoolExecutor(2) as pool):
        winner_key, winner_file = keys.new()
        _, loser_file = keys.new()
        pause = Pause(first.store, "audit")  # all rewrapped, not committed yet
        won = pool.submit(_rotate, first, store_settings, winner_file)
        assert pause.reached.wait(timeout=60)
        lost = pool.submit(_rotate, second, store_settings, loser_file)
        _until_blocked_or_done(store_settings, lost)
        pause.released.set()

        won.result(timeout=120)
        outcome = _outcome(lost)
    assert isinstance(outcome, MasterKeyError), f"both rotations reported success: {outcome}"
    assert "another rotation" in str(outcome)
    assert _recorded_key_id(store_settings) == winner_key.key_id
    _assert_everything_opens_with_the_recorded_key(store_settings, keys)


def test_a_rotation_from_a_key_the_store_no_longer_records_is_refused(
        store_settings: Settings, keys: Keys) -> None:
    _fill(store_settings, keys, data_keys=False)  # only a pending run key is wrapped
    with _opened(store_settings) as first, _opened(store_settings) as second:
        winner_key, winner_file = keys.new()
        _, loser_file = keys.new()
        _rotate(first, store_settings, winner_file)
        with pytest.raises(MasterKeyError, match="another rotation"):
            _rotate(second, store_settings, loser_file)
    assert _recorded_key_id(store_settings) == winner_key.key_id
    _assert_everything_opens_with_the_recorded_key(store_settings, keys)
