"""One-time run keys in the store, on the embedded store and on PostgreSQL: delivered exactly once,
to the run's own live pod, never after the run finished, and audited without the key."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from fx_operator.domain import internal_keys
from fx_operator.domain.crypto import MasterKey
from fx_operator.endpoints.broker import PodIdentity
from fx_operator.exceptions import IntegrityError, MasterKeyError, RunError
from fx_operator.services import rotation
from fx_operator.services.run_keys import ACTION_REGISTER, Refusal, RunKeyService, RunRefused
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import run_keys
from fx_operator.storage.backends import utcnow

NS, RUN = "team-a", "run-0001"
POD = PodIdentity(NS, "etl-run-abc", "uid-pod-1", "default")


@pytest.fixture
def keys(service: SecretService) -> RunKeyService:
    return RunKeyService(service.store, service.keys)


def _register(keys: RunKeyService, run_id: str = RUN, namespace: str = NS, *,
              allow_platform_write: bool = False) -> bytes:
    key = os.urandom(32)
    keys.register(run_id, namespace, "nightly", f"fx-{run_id}", "etl", key, allow_platform_write)
    return key


def _refusal(keys: RunKeyService, run_id: str, pod: PodIdentity, pod_run_id: str | None
             ) -> Refusal:
    with pytest.raises(RunRefused) as caught:
        keys.claim(run_id, pod, pod_run_id)
    return caught.value.refusal


def _raw_row(keys: RunKeyService, run_id: str) -> tuple[object, ...]:
    with keys.store.transaction() as tx:
        return tuple(tx.execute("SELECT wrapped_key, master_key_id, delivered_at, "
                                "delivered_to_pod FROM run_keys WHERE run_id = :r",
                                {"r": run_id})[0])


def test_the_key_is_delivered_once_and_then_erased(keys: RunKeyService) -> None:
    key = _register(keys)
    wrapped = _raw_row(keys, RUN)[0]
    assert isinstance(wrapped, bytes | memoryview) and key not in bytes(wrapped)
    assert keys.claim(RUN, POD, RUN) == key
    row = _raw_row(keys, RUN)
    assert row[0] is None and row[2] is not None and row[3] == POD.pod_uid
    assert _refusal(keys, RUN, POD, RUN) is Refusal.DELIVERED
    audit = keys.store
    with audit.transaction() as tx:
        records = audit.audit_records(tx, run_id=RUN)
    actions = [r.action for r in reversed(records)]
    assert actions == ["register-run-key", "deliver", "deliver-refused"]
    assert records[1].entries == [{"pod": POD.pod_name, "podUid": POD.pod_uid,
                                   "serviceAccount": "default"}]
    assert records[0].entries[0]["reason"] == "already-delivered"
    assert all(key.hex() not in str(r) for r in records)


def test_concurrent_claims_have_exactly_one_winner(keys: RunKeyService) -> None:
    key = _register(keys)
    barrier = threading.Barrier(6)
    results: list[bytes | Refusal] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        pod = PodIdentity(NS, f"pod-{i}", f"uid-{i}", "default")
        barrier.wait()
        try:
            got: bytes | Refusal = keys.claim(RUN, pod, RUN)
        except RunRefused as e:
            got = e.refusal
        with lock:
            results.append(got)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results.count(key) == 1
    assert results.count(Refusal.DELIVERED) == 5


def test_many_runs_race_independently(keys: RunKeyService) -> None:
    """Storage level: the conditional UPDATE alone decides, for each of several runs."""
    runs = {f"run-{i}": _register(keys, f"run-{i}") for i in range(4)}
    barrier = threading.Barrier(8)
    won: list[str] = []
    lock = threading.Lock()

    def claim(run_id: str, pod: str) -> None:
        barrier.wait()
        with keys.store.transaction() as tx:
            wrapped = run_keys.claim_key(tx, run_id, pod)
        if wrapped is not None:
            assert internal_keys.unwrap(keys.master_key, internal_keys.RUN_KEY, run_id,
                                        wrapped) == runs[run_id]
            with lock:
                won.append(run_id)

    threads = [threading.Thread(target=claim, args=(run_id, f"{run_id}-{n}"))
               for run_id in runs for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(won) == sorted(runs)


def test_a_finished_run_is_refused_and_its_key_erased(keys: RunKeyService) -> None:
    _register(keys)
    keys.finish(RUN)
    keys.finish(RUN)  # idempotent
    assert _raw_row(keys, RUN)[0] is None
    assert _refusal(keys, RUN, POD, RUN) is Refusal.FINISHED
    keys.finish("run-unknown")  # nothing to do, no error


@pytest.mark.parametrize(("pod", "pod_run_id", "expected"), [
    (PodIdentity("team-b", "intruder", "uid-x", "default"), RUN, Refusal.OTHER_NAMESPACE),
    (PodIdentity(NS, "other-run", "uid-y", "default"), "run-0002", Refusal.OTHER_RUN),
    (PodIdentity(NS, "gone", "uid-z", "default"), None, Refusal.NOT_A_RUN_POD),
])
def test_pods_other_than_the_runs_own_are_refused(keys: RunKeyService, pod: PodIdentity,
                                                  pod_run_id: str | None,
                                                  expected: Refusal) -> None:
    key = _register(keys)
    assert _refusal(keys, RUN, pod, pod_run_id) is expected
    assert expected.status == 403
    assert keys.claim(RUN, POD, RUN) == key  # the refusal claimed nothing


def test_an_unknown_run_is_refused(keys: RunKeyService) -> None:
    assert _refusal(keys, "run-nope", POD, "run-nope") is Refusal.UNKNOWN_RUN


def test_re_registering_replaces_an_unclaimed_key_only(keys: RunKeyService) -> None:
    _register(keys)
    second = _register(keys)
    assert keys.claim(RUN, POD, RUN) == second
    with pytest.raises(RunError, match="second key"):
        _register(keys)
    _register(keys, "run-0003")
    with pytest.raises(RunError):  # same run id claimed from another namespace
        _register(keys, "run-0003", "team-b")


def test_registering_only_new_runs_leaves_an_existing_one_alone(keys: RunKeyService) -> None:
    """Admission's first try (``replace=False``): a run seen before keeps its key and nothing is
    audited, so the operator can look for the Job the earlier admission made."""
    first = _register(keys)
    assert not keys.register(RUN, NS, "nightly", f"fx-{RUN}", "etl", os.urandom(32), False,
                             replace=False)
    assert keys.claim(RUN, POD, RUN) == first
    assert not keys.register(RUN, NS, "nightly", f"fx-{RUN}", "etl", os.urandom(32), False,
                             replace=False)  # delivered: still no error, still nothing written
    with keys.store.transaction() as tx:
        registrations = [r for r in keys.store.audit_records(tx, run_id=RUN)
                         if r.action == ACTION_REGISTER]
    assert len(registrations) == 1
    assert keys.register("run-0009", NS, "nightly", "fx-run-0009", "etl", os.urandom(32), False,
                         replace=False)


def test_a_wrapped_key_copied_to_another_run_does_not_open(keys: RunKeyService) -> None:
    _register(keys, "run-a")
    _register(keys, "run-b")
    with keys.store.transaction() as tx:
        tx.execute("UPDATE run_keys SET wrapped_key = (SELECT wrapped_key FROM run_keys "
                   "WHERE run_id = 'run-a') WHERE run_id = 'run-b'")
    with pytest.raises(IntegrityError):
        keys.claim("run-b", POD, "run-b")
    assert _raw_row(keys, "run-b")[2] is None  # the failed claim was rolled back


def test_rewrap_under_a_new_master_key(keys: RunKeyService, service: SecretService) -> None:
    key = _register(keys)
    _register(keys, "run-done")
    keys.finish("run-done")
    new = MasterKey.generate()
    with pytest.raises(MasterKeyError, match="rotate the store first"):
        keys.rotate_master_key(new)  # the store would not open the run key with its own key
    assert _raw_row(keys, RUN)[1] == service.master_key.key_id
    # rewraps the run keys too
    rotation.rotate_store_master_key(service.keys, new, actor=service.actor)
    assert _raw_row(keys, RUN)[1] == new.key_id
    assert keys.rotate_master_key(new) == 0  # nothing left to rewrap; the service follows
    assert keys.claim(RUN, POD, RUN) == key


def test_channel_grant_is_for_the_pod_that_got_the_key(keys: RunKeyService) -> None:
    _register(keys, allow_platform_write=True)
    with pytest.raises(RunRefused) as before:
        keys.channel_grant(RUN, POD, RUN)
    assert before.value.refusal is Refusal.OTHER_POD
    keys.claim(RUN, POD, RUN)
    grant = keys.channel_grant(RUN, POD, RUN)
    assert (grant.run_id, grant.project, grant.package, grant.allow_platform_write) == (
        RUN, NS, "etl", True)
    twin = PodIdentity(NS, POD.pod_name, "uid-other", "default")
    with pytest.raises(RunRefused) as other:
        keys.channel_grant(RUN, twin, RUN)
    assert other.value.refusal is Refusal.OTHER_POD
    keys.finish(RUN)
    with pytest.raises(RunRefused) as finished:
        keys.channel_grant(RUN, POD, RUN)
    assert finished.value.refusal is Refusal.FINISHED


def test_purge_forgets_old_runs(keys: RunKeyService) -> None:
    _register(keys, "run-new")
    old = run_keys.RunKeyRecord("run-old", NS, "x", "fx-x", "etl", None, "0" * 16, False,
                                utcnow() - timedelta(days=40))
    with keys.store.transaction() as tx:
        assert run_keys.create(tx, old)
    assert keys.purge(30) == 1
    assert keys.get("run-old") is None and keys.get("run-new") is not None
    assert "delivered=False" in repr(keys.get("run-new"))
