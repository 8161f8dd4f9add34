"""The secret store, run identically on the embedded store and on a real PostgreSQL server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import pytest
from fx_operator.config import Settings
from fx_operator.domain import crypto
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import IntegrityError, NotFoundError, ValidationError
from fx_operator.services import rotation
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.secret_store import BULK_ROWS
from support.stores import raw_blobs

PKG = Owner.of(Scope.PACKAGE, "team-a", "etl")
PROJECT = Owner.of(Scope.PROJECT, "team-a")
PLATFORM = Owner.of(Scope.PLATFORM)


def resolve(service: SecretService, names: list[str] | None = None) -> dict[str, Any]:
    return service.resolve("team-a", "etl", names).values


def test_precedence_package_then_project_then_platform(service: SecretService) -> None:
    service.set(PLATFORM, "ONLY_PLATFORM", "p")
    service.set(PLATFORM, "SHARED", "from-platform")
    service.set(PROJECT, "SHARED", "from-project")
    service.set(PROJECT, "PROJECT_AND_PLATFORM", {"k": "project"})
    service.set(PLATFORM, "PROJECT_AND_PLATFORM", {"k": "platform"})
    service.set(PKG, "SHARED", "from-package")

    resolution = service.resolve("team-a", "etl")

    assert resolution.values == {
        "ONLY_PLATFORM": "p",
        "SHARED": "from-package",
        "PROJECT_AND_PLATFORM": {"k": "project"},
    }
    assert {n: (e.scope, e.version) for n, e in resolution.manifest.items()} == {
        "ONLY_PLATFORM": (Scope.PLATFORM, 1),
        "SHARED": (Scope.PACKAGE, 1),
        "PROJECT_AND_PLATFORM": (Scope.PROJECT, 1),
    }


@pytest.mark.parametrize("empty", ["", {}, 0, False, [], None])
def test_an_empty_value_is_a_value_and_does_not_fall_through(service: SecretService,
                                                            empty: Any) -> None:
    service.set(PLATFORM, "X", "platform-value")
    service.set(PROJECT, "X", "project-value")
    service.set(PKG, "X", empty)

    resolution = service.resolve("team-a", "etl", ["X"])

    assert resolution.values == {"X": empty}
    assert type(resolution.values["X"]) is type(empty)
    assert resolution.manifest["X"].scope is Scope.PACKAGE


def test_names_filter_and_missing_names(service: SecretService) -> None:
    service.set_many(PKG, {"A": 1, "B": 2, "C": 3})
    assert resolve(service, ["A", "C", "MISSING"]) == {"A": 1, "C": 3}
    assert resolve(service, []) == {}


def test_other_projects_and_packages_see_nothing(service: SecretService) -> None:
    service.set(PKG, "MINE", "a")
    service.set(PROJECT, "OURS", "b")
    assert service.resolve("team-b", "etl").values == {}
    assert service.resolve("team-a", "other").values == {"OURS": "b"}


def test_manifest_names_the_data_key_and_holds_no_value(service: SecretService) -> None:
    service.set(PKG, "DB_PASS", "manifest-canary-value")
    manifest = service.resolve("team-a", "etl").manifest_dict()
    assert set(manifest["DB_PASS"]) == {"scope", "version", "keyId"}
    assert "manifest-canary-value" not in repr(manifest)


def test_every_write_is_a_version_and_delete_is_a_tombstone(service: SecretService) -> None:
    service.set(PROJECT, "TOKEN", "project-token")
    assert service.set(PKG, "TOKEN", "v1") == 1
    assert service.set(PKG, "TOKEN", "v2") == 2
    assert service.delete(PKG, "TOKEN") == 3

    history = service.history(PKG, "TOKEN")
    assert [(r.version, r.deleted, r.is_current) for r in history] == [
        (1, False, False), (2, False, False), (3, True, True)]
    # the tombstone at package scope lets the project's value through
    assert resolve(service, ["TOKEN"]) == {"TOKEN": "project-token"}
    assert [r.name for r in service.list(scope=Scope.PACKAGE)] == []
    with pytest.raises(NotFoundError, match="TOKEN"):
        service.delete(PKG, "TOKEN")


def test_rollback_writes_the_old_value_as_a_new_version(service: SecretService) -> None:
    service.set(PKG, "API_KEY", {"key": "first"})
    service.set(PKG, "API_KEY", {"key": "second"})
    assert service.rollback(PKG, "API_KEY", 1) == 3
    assert resolve(service, ["API_KEY"]) == {"API_KEY": {"key": "first"}}
    assert [r.version for r in service.history(PKG, "API_KEY")] == [1, 2, 3]
    with pytest.raises(NotFoundError, match="no version 9"):
        service.rollback(PKG, "API_KEY", 9)


def test_rollback_to_a_tombstone_deletes(service: SecretService) -> None:
    service.set(PKG, "GONE", "x1")
    service.delete(PKG, "GONE")
    service.set(PKG, "GONE", "x3")
    service.rollback(PKG, "GONE", 2)
    assert resolve(service, ["GONE"]) == {}


def test_history_of_an_unknown_name(service: SecretService) -> None:
    with pytest.raises(NotFoundError, match="NOPE"):
        service.history(PKG, "NOPE")


def test_import_is_all_or_nothing_and_versions_names(service: SecretService) -> None:
    raw = b'{"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"}'
    assert service.import_file(raw, project="team-a", package="etl") == {"DB_NAME": 1,
                                                                          "DB_PASS": 1}
    assert service.import_file(raw, project="team-a", package="etl") == {"DB_NAME": 2,
                                                                          "DB_PASS": 2}
    assert resolve(service) == {"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"}


def _bulk_file(count: int) -> bytes:
    return json.dumps({f"S_{i:05d}": f"value-{i}" for i in range(count)}).encode()


def test_an_import_encrypts_each_value_as_the_store_writes_it(
        service: SecretService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealing overlaps the bulk insert (COPY on PostgreSQL): the insert begins first and takes
    each value as it is encrypted, rather than all of them encrypted before it."""
    events: list[str] = []
    transaction = service.store.transaction

    @contextmanager
    def spied() -> Iterator[Any]:
        with transaction() as tx:
            insert_rows = tx.insert_rows

            def inserting(*args: Any) -> None:
                events.append("insert")
                insert_rows(*args)
            monkeypatch.setattr(tx, "insert_rows", inserting)
            yield tx

    encrypt = crypto.encrypt_value

    def encrypting(*args: Any) -> bytes:
        events.append("encrypt")
        return encrypt(*args)

    monkeypatch.setattr(service.store, "transaction", spied)
    monkeypatch.setattr(crypto, "encrypt_value", encrypting)
    assert len(service.import_file(_bulk_file(3 * BULK_ROWS), project="team-a",
                                   package="etl")) == 3 * BULK_ROWS
    assert events == ["insert"] + ["encrypt"] * 3 * BULK_ROWS  # the insert takes them as made
    assert service.get(PKG, f"S_{3 * BULK_ROWS - 1:05d}") == f"value-{3 * BULK_ROWS - 1}"


def test_an_import_failing_half_way_through_sealing_writes_nothing(
        service: SecretService, monkeypatch: pytest.MonkeyPatch) -> None:
    service.import_file(_bulk_file(3 * BULK_ROWS), project="team-a", package="etl")
    encrypt, sealed = crypto.encrypt_value, []

    def failing(*args: Any) -> bytes:
        sealed.append(args[1])
        if len(sealed) == 2 * BULK_ROWS:
            raise IntegrityError("refused by the test")
        return encrypt(*args)

    monkeypatch.setattr(crypto, "encrypt_value", failing)
    with pytest.raises(IntegrityError, match="refused by the test"):
        service.import_file(_bulk_file(3 * BULK_ROWS), project="team-a", package="etl")
    monkeypatch.setattr(crypto, "encrypt_value", encrypt)
    assert set(service.current_versions(PKG).values()) == {1}
    assert service.get(PKG, "S_00000") == "value-0"


def test_a_listing_gives_each_time_as_iso_text_in_utc_to_the_second(
        service: SecretService) -> None:
    service.set(PKG, "A", "a")
    service.set(PLATFORM, "B", "b")
    listed = service.list()
    assert [(r.owner, r.name, r.version, r.deleted) for r in listed] == [
        (PKG, "A", 1, False), (PLATFORM, "B", 1, False)]
    for row in listed:
        written = service.history(row.owner, row.name)[0].created_at
        assert row.created == written.astimezone(UTC).replace(microsecond=0).isoformat()
        assert row.created_at == written.replace(microsecond=0)
    service.delete(PKG, "A")
    assert [(r.name, r.deleted) for r in service.list(include_deleted=True)] == [
        ("A", True), ("B", False)]


def test_set_validates_name_and_value(service: SecretService) -> None:
    with pytest.raises(ValidationError, match="bad name"):
        service.set(PKG, "bad name", "x")
    with pytest.raises(ValidationError, match="platform"):
        Owner.of("cluster")
    assert service.list() == []


def test_a_blob_copied_to_another_row_fails_integrity(service: SecretService) -> None:
    service.set(PKG, "A", "value-a")
    service.set(PKG, "B", "value-b")
    with service.store.transaction() as tx:
        tx.execute("UPDATE secret_versions SET blob = (SELECT blob FROM secret_versions "
                   "WHERE name = 'A') WHERE name = 'B'")
    with pytest.raises(IntegrityError, match=r"'B' version 1 .* copied from another row"):
        service.resolve("team-a", "etl")


def test_a_blob_copied_to_another_owner_fails_integrity(service: SecretService) -> None:
    service.set(PKG, "A", "package-value")
    service.set(PROJECT, "A", "project-value")
    with service.store.transaction() as tx:
        tx.execute("UPDATE secret_versions SET blob = (SELECT blob FROM secret_versions "
                   "WHERE scope = 'package'), data_key_id = (SELECT data_key_id FROM "
                   "secret_versions WHERE scope = 'package') WHERE scope = 'project'")
    fresh = SecretService(service.store, service.master_key, actor="t")
    with pytest.raises(IntegrityError, match="another"):
        fresh.resolve("team-a", "other-package")


def test_a_blob_copied_next_to_its_own_owner_fails_integrity(service: SecretService) -> None:
    """The package's key is held and opens the copy's header; the row's owner still differs."""
    service.set(PKG, "A", "package-value")
    service.set(PROJECT, "B", "project-value")
    with service.store.transaction() as tx:
        tx.execute("UPDATE secret_versions SET blob = (SELECT blob FROM secret_versions "
                   "WHERE scope = 'package') WHERE scope = 'project'")
    with pytest.raises(IntegrityError, match=r"'B' of project/team-a .* belongs to another owner"):
        service.resolve("team-a", "etl")


def test_a_blob_moved_to_another_version_fails_integrity(service: SecretService) -> None:
    service.set(PKG, "A", "one")
    service.set(PKG, "A", "two")
    with service.store.transaction() as tx:
        tx.execute("UPDATE secret_versions SET blob = (SELECT blob FROM secret_versions "
                   "WHERE version = 1) WHERE version = 2")
    with pytest.raises(IntegrityError, match="version 2"):
        service.resolve("team-a", "etl")


def test_audit_records_every_read_and_write_without_values(service: SecretService) -> None:
    service.set(PKG, "AUDITED", "audit-canary-31337", run_id="run-1")
    service.resolve("team-a", "etl", ["AUDITED", "MISSING"], run_id="run-2", actor="run:run-2")
    service.delete(PKG, "AUDITED")

    records = service.audit_records()
    assert [r.action for r in records] == ["delete", "resolve", "set"]
    delete, read, write = records
    assert (write.actor, write.run_id, write.scope, write.project, write.package) == (
        "user:test", "run-1", "package", "team-a", "etl")
    key_id = service.history(PKG, "AUDITED")[0].data_key_id  # the data key of what was read
    assert write.entries == [{"name": "AUDITED", "scope": "package", "version": 1,
                              "dataKeyId": key_id}]
    assert (read.actor, read.run_id) == ("run:run-2", "run-2")
    assert read.entries == [{"name": "AUDITED", "scope": "package", "version": 1,
                             "dataKeyId": key_id}]
    assert delete.entries == [{"name": "AUDITED", "scope": "package", "version": 2}]  # no key
    assert "audit-canary-31337" not in repr(records)
    assert [r.action for r in service.audit_records(run_id="run-2")] == ["resolve"]


def test_a_resolution_of_nothing_is_audited_with_no_entries(service: SecretService) -> None:
    service.set(PKG, "A", "a")
    assert service.resolve("team-b", "empty", run_id="run-0").values == {}
    assert service.resolve("team-a", "etl", ["MISSING"], run_id="run-1").values == {}
    assert [(r.run_id, r.entries) for r in service.audit_records()[:2]] == [
        ("run-1", []), ("run-0", [])]


@pytest.mark.parametrize("durable", [True, False])
def test_resolutions_are_audited_whichever_the_commit_mode(service: SecretService,
                                                           durable: bool) -> None:
    """FX_DURABLE_READ_AUDIT=false changes only how PostgreSQL commits the read's transaction:
    the record is still written with it, and the connection's own setting is left as it was."""
    postgres = service.store.backend.dialect == "postgresql"

    def commit_mode() -> object:
        with service.store.transaction() as tx:
            return tx.execute("SHOW synchronous_commit")

    before = commit_mode() if postgres else None
    service.set(PKG, "AUDITED", "v")
    service.store.durable_read_audit = durable
    for run in ("run-a", "run-b"):
        assert service.resolve("team-a", "etl", run_id=run).values == {"AUDITED": "v"}
    assert [r.action for r in service.audit_records()[:2]] == ["resolve", "resolve"]
    if postgres:
        assert commit_mode() == before


def test_data_key_rotation_re_encrypts_one_owner(service: SecretService) -> None:
    service.set_many(PKG, {"A": "a1", "B": {"x": 1}})
    service.set(PKG, "A", "a2")
    service.set(PROJECT, "P", "untouched")
    before = raw_blobs(service)
    old_key = service.resolve("team-a", "etl").manifest["A"].key_id

    assert rotation.rotate_data_key(service.keys, PKG, actor=service.actor) == 3

    after = raw_blobs(service)
    resolution = service.resolve("team-a", "etl")
    assert resolution.values == {"A": "a2", "B": {"x": 1}, "P": "untouched"}
    assert resolution.manifest["A"].key_id != old_key
    assert service.rollback(PKG, "A", 1) == 3
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in before if k[0] == "package"}
    with service.store.transaction() as tx:
        assert old_key not in [r.key_id for r in service.store.data_keys(tx)]


def test_concurrent_writers_lose_no_version(service: SecretService) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(10):
                service.set(PKG, "COUNTER", f"{worker}-{i}")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r.version for r in service.history(PKG, "COUNTER")] == list(range(1, 21))


def test_migrations_are_idempotent(store_settings: Settings, service: SecretService) -> None:
    from fx_operator.services.configured_store import open_store

    service.set(PKG, "KEEP", "kept")
    open_store(store_settings).close()
    assert resolve(service) == {"KEEP": "kept"}
