"""Run-once delivery (P4): a run's key is handed to its own pod, once, while the run is active.

The operator registers a key when it admits an Execution and finishes it when the run ends; the
broker claims it for the pod that asks. Every delivery and every refusal is audited (P7) with the
pod's name and uid, never the key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Protocol

from fx_operator.domain.crypto import MasterKey
from fx_operator.exceptions import PermissionDeniedError, RunError, StoreError
from fx_operator.services import rotation
from fx_operator.services.key_ring import KeyRing
from fx_operator.services.runs import RunGrant
from fx_operator.storage import run_keys
from fx_operator.storage.backends import Transaction, utcnow
from fx_operator.storage.run_keys import RunKeyRecord
from fx_operator.storage.secret_store import AuditRecord, SecretStore

log = logging.getLogger(__name__)  # run ids, pod names and outcomes; never a key

ACTION_DELIVER = "deliver"
ACTION_REFUSED = "deliver-refused"
ACTION_REGISTER = "register-run-key"
ACTOR_UNAUTHENTICATED = "unauthenticated"


class Caller(Protocol):
    """Who a run pod is, as its verified token says (any object with these attributes)."""

    @property
    def namespace(self) -> str: ...

    @property
    def pod_name(self) -> str: ...

    @property
    def pod_uid(self) -> str: ...

    @property
    def service_account(self) -> str: ...


class Refusal(Enum):
    """Why a pod was refused, with the HTTP status the broker answers."""

    UNAUTHENTICATED = ("unauthenticated", 401)
    NOT_A_RUN_POD = ("not-a-live-run-pod", 403)
    OTHER_RUN = ("pod-of-another-run", 403)
    OTHER_NAMESPACE = ("pod-of-another-namespace", 403)
    OTHER_POD = ("key-delivered-to-another-pod", 403)
    UNKNOWN_RUN = ("unknown-run", 404)
    DELIVERED = ("already-delivered", 409)
    FINISHED = ("run-finished", 410)

    def __init__(self, code: str, status: int) -> None:
        self.code = code
        self.status = status


_MESSAGES = {
    Refusal.UNAUTHENTICATED: "the pod's token is not valid for the broker",
    Refusal.NOT_A_RUN_POD: "the caller is not a live pod of a run",
    Refusal.OTHER_RUN: "the pod belongs to another run",
    Refusal.OTHER_NAMESPACE: "the pod belongs to another namespace",
    Refusal.OTHER_POD: "the run's key was delivered to another pod",
    Refusal.UNKNOWN_RUN: "no such run",
    Refusal.DELIVERED: "the run's key was already delivered (it is handed out once)",
    Refusal.FINISHED: "the run has finished",
}


class RunRefused(PermissionDeniedError):
    """A pod asked for a key or a channel request it may not have; ``refusal`` says why."""

    def __init__(self, refusal: Refusal, run_id: str) -> None:
        super().__init__(f"{_MESSAGES[refusal]} (run {run_id})")
        self.refusal = refusal
        self.status = refusal.status


def _actor(caller: Caller | None) -> str:
    if caller is None:
        return ACTOR_UNAUTHENTICATED
    return f"pod:{caller.namespace}/{caller.pod_name}"[:256]


def _pod_entry(caller: Caller | None) -> dict[str, str]:
    if caller is None:
        return {}
    return {"pod": caller.pod_name, "podUid": caller.pod_uid,
            "serviceAccount": caller.service_account}


def _check(record: RunKeyRecord | None, run_id: str, caller: Caller,
           pod_run_id: str | None) -> Refusal | None:
    """The checks shared by key delivery and channel requests, in the order they are told."""
    if record is None:
        return Refusal.UNKNOWN_RUN
    if pod_run_id is None:
        return Refusal.NOT_A_RUN_POD
    if pod_run_id != run_id:
        return Refusal.OTHER_RUN
    if caller.namespace != record.namespace:
        return Refusal.OTHER_NAMESPACE
    return None


class RunKeyService:
    """One-time run keys, wrapped under the master key (the process's key ring) while they
    wait for their pod."""

    def __init__(self, store: SecretStore, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys
        #: Claims whose commit failed with the connection (the server crashed or restarted):
        #: it may have landed, the pod never got the key. Run id -> (pod uid, key), handed to
        #: that pod when it asks again and the row says the claim did land (see ``claim``).
        self._unconfirmed: dict[str, tuple[str, bytes]] = {}
        self._unconfirmed_lock = threading.Lock()

    def register(self, run_id: str, namespace: str, execution: str, job_name: str,
                 package: str, key: bytes, allow_platform_write: bool, *,
                 replace: bool = True, tx: Transaction | None = None) -> bool:
        """Keep a newly admitted run's key until its pod claims it.

        ``replace=False``: only for a run never registered before; False (nothing written) when
        it was, so a re-admission can first look at what the earlier one made. ``tx``: in this
        transaction (an admission's, which commits it with the resolution), else its own.
        """
        wrapped, master_key_id = self.keys.wrap_run_key(run_id, key)
        record = RunKeyRecord(run_id, namespace, execution, job_name, package, wrapped,
                              master_key_id, allow_platform_write, utcnow())
        with self._in(tx) as tx:
            self.keys.hold(tx)
            if not run_keys.create(tx, record, replace=replace):
                if not replace:
                    return False
                raise RunError(f"run {run_id} already had its key delivered or has finished; "
                               "a run is never given a second key")
            self.store.audit(tx, AuditRecord(
                f"operator:Execution/{namespace}/{execution}", ACTION_REGISTER, namespace,
                package, run_id=run_id,
                entries=[{"job": job_name, "allowPlatformWrite": allow_platform_write}]))
        log.debug("run key registered for run %s (%s/%s)", run_id, namespace, execution)
        return True

    def claim(self, run_id: str, caller: Caller, pod_run_id: str | None) -> bytes:
        """The run's key for its own live pod, once; ``RunRefused`` otherwise (audited).

        A claim whose commit fails with the connection may still have landed (the server wrote
        it, its answer was lost): the key is kept in memory, and when the same pod asks again
        and the row says it was delivered to that pod, it gets the key then — its one delivery,
        audited once — instead of a refusal that fails the run.
        """
        with self._unconfirmed_lock:
            unconfirmed = self._unconfirmed.get(run_id)
        claimed: bytes | None = None
        try:
            with self.store.transaction() as tx:
                record = run_keys.get(tx, run_id)
                refusal = _check(record, run_id, caller, pod_run_id)
                if refusal is None:
                    assert record is not None
                    if unconfirmed is not None and unconfirmed[0] == caller.pod_uid and \
                            record.delivered_to_pod == caller.pod_uid and \
                            record.finished_at is None:
                        with self._unconfirmed_lock:
                            self._unconfirmed.pop(run_id, None)
                        log.info("run key of run %s delivered to pod %s/%s (its claim had "
                                 "landed, unconfirmed)", run_id, caller.namespace,
                                 caller.pod_name)
                        return unconfirmed[1]
                    wrapped = run_keys.claim_key(tx, run_id, caller.pod_uid)
                    if wrapped is not None:
                        # Unwrapped inside the claim's transaction: if it fails, nothing was
                        # claimed.
                        claimed = self.keys.unwrap_run_key(run_id, wrapped)
                        self.store.audit(tx, AuditRecord(
                            _actor(caller), ACTION_DELIVER, record.namespace, record.package,
                            run_id=run_id, entries=[_pod_entry(caller)]))
                        log.info("run key of run %s delivered to pod %s/%s", run_id,
                                 caller.namespace, caller.pod_name)
                        return claimed
                    current = run_keys.get(tx, run_id) or record
                    refusal = (Refusal.FINISHED if current.finished_at is not None
                               else Refusal.DELIVERED)
                self._audit_refusal(tx, run_id, refusal, caller, record)
        except StoreError:
            if claimed is not None:  # the commit's outcome is unknown
                with self._unconfirmed_lock:
                    self._unconfirmed[run_id] = (caller.pod_uid, claimed)
            raise
        log.warning("run key of run %s refused to pod %s/%s: %s", run_id, caller.namespace,
                    caller.pod_name, refusal.code)
        raise RunRefused(refusal, run_id)

    def refuse(self, run_id: str, refusal: Refusal, caller: Caller | None = None) -> RunRefused:
        """Audit a refusal the broker decided itself (a bad token); the error to answer with."""
        with self.store.transaction() as tx:
            self._audit_refusal(tx, run_id, refusal, caller, run_keys.get(tx, run_id))
        log.warning("run key of run %s refused: %s", run_id, refusal.code)
        return RunRefused(refusal, run_id)

    def _audit_refusal(self, tx: Transaction, run_id: str, refusal: Refusal,
                       caller: Caller | None, record: RunKeyRecord | None) -> None:
        project = record.namespace if record else (caller.namespace if caller else "")
        self.store.audit(tx, AuditRecord(
            _actor(caller), ACTION_REFUSED, project[:63], record.package if record else "",
            run_id=run_id, entries=[{**_pod_entry(caller), "reason": refusal.code}]))

    def channel_grant(self, run_id: str, caller: Caller, pod_run_id: str | None) -> RunGrant:
        """What a channel request of a live run may do: only the pod that got the key asks."""
        with self.store.transaction() as tx:
            record = run_keys.get(tx, run_id)
        refusal = _check(record, run_id, caller, pod_run_id)
        if refusal is None:
            assert record is not None
            if record.finished_at is not None:
                refusal = Refusal.FINISHED
            elif record.delivered_to_pod is None or record.delivered_to_pod != caller.pod_uid:
                refusal = Refusal.OTHER_POD
            else:
                return RunGrant(run_id, record.namespace, record.package,
                                record.allow_platform_write)
        log.warning("channel request of run %s refused to pod %s/%s: %s", run_id,
                    caller.namespace, caller.pod_name, refusal.code)
        raise RunRefused(refusal, run_id)

    def finish(self, run_id: str, *, tx: Transaction | None = None) -> None:
        """The run ended (any outcome): its key can no longer be claimed. Idempotent."""
        with self._unconfirmed_lock:
            self._unconfirmed.pop(run_id, None)
        with self._in(tx) as tx:
            finished = run_keys.mark_finished(tx, run_id)
        if finished:
            log.info("run %s finished: its key is erased", run_id)

    def get(self, run_id: str) -> RunKeyRecord | None:
        with self.store.transaction() as tx:
            return run_keys.get(tx, run_id)

    @property
    def master_key(self) -> MasterKey:
        """The ring's master key (not a copy: a rotation in this process changes it)."""
        return self.keys.master_key

    def rotate_master_key(self, new_key: MasterKey) -> int:
        """Follow the store's master-key rotation (``services.rotation``)."""
        return rotation.follow_rotation(self.keys, new_key)

    @contextmanager
    def _in(self, tx: Transaction | None) -> Iterator[Transaction]:
        """``tx`` when given (its owner commits), else a transaction of its own."""
        if tx is not None:
            yield tx
            return
        with self.store.transaction() as own:
            yield own

    def purge(self, older_than_days: float) -> int:
        """Forget runs older than this (their keys are long erased); returns how many."""
        with self.store.transaction() as tx:
            return run_keys.delete_older_than(tx, older_than_days)

