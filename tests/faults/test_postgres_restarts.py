"""PostgreSQL restarted under the operator during a burst loses no acknowledged write and no run:
50 Executions, each writing two state values and two project secrets through the run's channel
(200 writes), while the server is stopped and started twice on the same port — once ``-m fast``
(sessions ended, checkpoint), once ``-m immediate`` (a crash, recovered from the WAL).

Each script retries a write that failed (as a careful script does while its store restarts) and
prints the writes that were acknowledged; afterwards a last run of the package reads them all
back through ``fx_ef`` and every one is there with its value. The server keeps
``synchronous_commit`` on (the default, ``durable=True``): with it off a crash may drop commits
it already acknowledged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.endpoints.broker import PodIdentity
from fx_operator.exceptions import StoreError
from fx_operator.services.run_keys import ACTION_DELIVER, RunKeyService, RunRefused
from fx_operator.storage.backends import Transaction
from fx_operator.storage.secret_store import SecretStore
from support.fault_checks import assert_ran_once, cluster_with_a_package, run_actions
from support.operator_process import ProcessCluster
from support.postgres import PostgresServer
from support.stores import open_service, settings_for

NAMESPACE = "team-a"
DATABASE = "faults_pg"
CANARY = "pg-restart-canary-2d8f60-do-not-leak"
EXECUTIONS = 50
WRITES_EACH = 4  # 2 state values, 2 project secrets: 200 writes in all
#: A bound for a burst's run on 2 shared cores (a hang, not a speed, is what it catches).
RUN_TIMEOUT = 240
# One package (the state is the package's): a run writes, or, given the names, reads them back.
SCRIPT = """
import json, time
from fx_ef import context
if context.params.get("state") is not None:
    state = context.state.get()
    lost = [k for k in context.params.get("state") if state.get(k) != "written-" + k]
    lost += [n for n in context.params.get("secrets") if context.secrets.get(n) != "written-" + n]
    print("lost:", json.dumps(lost))
    raise SystemExit(0)
tag = context.params.get("tag")
print("canary:", context.secrets.get("CANARY"))
acked = []
for kind, name in (("state", f"s-{tag}-0"), ("secret", f"W_{tag}_0"),
                   ("state", f"s-{tag}-1"), ("secret", f"W_{tag}_1")):
    for attempt in range(120):  # up to ~30 s of a store restarting
        try:
            if kind == "state":
                context.state.put(name, "written-" + name)
            else:
                context.secrets.set(name, "written-" + name, "project")
        except Exception as e:
            print("retrying", name, type(e).__name__)
            time.sleep(0.25)
        else:
            acked.append(name)
            break
print("acked:", json.dumps(acked))
"""


@pytest.fixture(scope="module")
def durable_postgres(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A server of its own (restarted by the test), committing durably as a user's would."""
    with PostgresServer(bindir=postgres_server.bindir, durable=True) as server:
        yield server


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory,
        durable_postgres: PostgresServer) -> Iterator[tuple[ProcessCluster, str]]:
    dsn = durable_postgres.create_database(DATABASE)
    with cluster_with_a_package(
            tmp_path_factory.mktemp("pg-restarts"), dsn, lambda: durable_postgres.dump(DATABASE),
            namespace=NAMESPACE, package="writer", script=SCRIPT, canary=CANARY,
            # the read-back reads the names it is given: every name of the chain (least
            # privilege would deliver only names known before the run)
            package_spec={"secrets": {"all": True}}) as machine:
        yield machine, dsn


def _phases(k8s: ProcessCluster) -> list[str]:
    listed = k8s.custom.list_namespaced_custom_object("fx.dev", "v1alpha1", NAMESPACE,
                                                      "executions")
    return [str((item.get("status") or {}).get("phase", "")) for item in listed["items"]]


def _acked(status: dict[str, Any]) -> list[str]:
    line = next(line for line in status["result"]["outputTail"].splitlines()
                if line.startswith("acked: "))
    return [str(name) for name in json.loads(line[len("acked: "):])]


def test_a_postgres_restart_during_a_burst_loses_no_acknowledged_write_and_no_run(
        k8s: tuple[ProcessCluster, str], durable_postgres: PostgresServer) -> None:
    cluster_, dsn = k8s
    pid = cluster_.pid
    names = [f"burst-{i}" for i in range(EXECUTIONS)]
    for i, name in enumerate(names):
        cluster_.execution(NAMESPACE, name, "writer", params={"tag": i})
    cluster_.wait_for(lambda: any(p in ("Running", "Succeeded") for p in _phases(cluster_)),
                      "the burst's first runs")
    durable_postgres.restart("fast")
    cluster_.wait_for(lambda: _phases(cluster_).count("Succeeded") >= EXECUTIONS // 3,
                      "a third of the burst to end", timeout=180)
    durable_postgres.restart("immediate")

    acked: list[str] = []
    for name in names:
        status = assert_ran_once(cluster_, dsn, NAMESPACE, name, "acked: ", timeout=RUN_TIMEOUT)
        assert "canary: ***" in status["result"]["outputTail"]
        acked += _acked(status)
    assert len(acked) == EXECUTIONS * WRITES_EACH  # each write acknowledged, at some try
    assert cluster_.pid == pid  # the operator rode the restarts out

    cluster_.execution(NAMESPACE, "read-back", "writer", params={
        "state": [n for n in acked if n.startswith("s-")],
        "secrets": [n for n in acked if n.startswith("W_")]})
    status = assert_ran_once(cluster_, dsn, NAMESPACE, "read-back", "lost: ")
    assert "lost: []" in status["result"]["outputTail"], status["result"]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_store_serves_its_first_request_after_postgres_restarted(
        durable_postgres: PostgresServer, tmp_path: Path, mode: str) -> None:
    """The pool's idle connections died with the server: none is handed out after it is back,
    so the first write after a restart succeeds instead of failing with the dead session."""
    database = f"faults_pool_{mode}"
    dsn = durable_postgres.create_database(database)
    service = open_service(settings_for("postgres", tmp_path, dsn))
    owner = Owner.of(Scope.PROJECT, NAMESPACE)
    try:
        service.set(owner, "BEFORE", "written-before")  # a connection now idles in the pool
        durable_postgres.restart(mode)
        service.set(owner, "AFTER", "written-after")
        assert service.get(owner, "BEFORE") == "written-before"
        assert service.get(owner, "AFTER") == "written-after"
    finally:
        service.close()
        durable_postgres.drop_database(database)


class _AnswerLostAfterCommit:
    """The store, but the next transaction's commit lands and its answer is lost: what a client
    sees when the server crashes right after writing the commit (no test can time a real crash
    into that gap; the commit itself is real)."""

    def __init__(self, store: SecretStore) -> None:
        self._store = store
        self.lose_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._store.transaction() as tx:
            yield tx
        if self.lose_next:
            self.lose_next = False
            raise StoreError("PostgreSQL: OperationalError: consuming input failed: server "
                             "closed the connection unexpectedly")


def test_a_claim_that_landed_unanswered_is_delivered_when_the_pod_asks_again(
        postgres_dsn: str, tmp_path: Path) -> None:
    """The broker answered 503 (the store failed) and the pod asks again, as it does: the claim
    had landed, so it gets its key now, once, instead of ``already-delivered`` failing its run."""
    service = open_service(settings_for("postgres", tmp_path, postgres_dsn))
    try:
        store = _AnswerLostAfterCommit(service.store)
        keys = RunKeyService(store, service.keys)  # type: ignore[arg-type]
        run, pod = "run-unanswered", PodIdentity(NAMESPACE, "fx-run-x-abcde", "uid-1", "default")
        key = os.urandom(32)
        keys.register(run, NAMESPACE, "x", "fx-run-x", "writer", key, False)
        store.lose_next = True
        with pytest.raises(StoreError):
            keys.claim(run, pod, run)
        record = keys.get(run)
        assert record is not None and record.delivered_to_pod == pod.pod_uid  # it landed
        other = PodIdentity(NAMESPACE, "fx-run-x-fghij", "uid-2", "default")
        with pytest.raises(RunRefused):
            keys.claim(run, other, run)  # another pod of the run: never
        assert keys.claim(run, pod, run) == key
        with pytest.raises(RunRefused):
            keys.claim(run, pod, run)  # once
        assert run_actions(postgres_dsn, run).count(ACTION_DELIVER) == 1
    finally:
        service.close()
