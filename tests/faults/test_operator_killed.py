"""No crash window of admission loses or doubles a run: the operator process is killed (SIGKILL)
at each step of admitting an Execution, started again, and every Execution still ends Succeeded,
with one Job, one pod and one delivery of its run's key (P4).

Admission (``services/executions.py``) registers the run key, resolves and seals, creates the
sealed-bundle Secret, then the Job; kopf writes the status after. The operator is pinned at a
step from outside: by a lock on ``run_keys`` in PostgreSQL (the registration waits on it), or by
the API server holding the operator's next request (``support.faults``); then killed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg
import pytest
from support.fault_checks import assert_ran_once, cluster_with_a_package
from support.faults import FaultyEmulator, by_token
from support.operator_process import ProcessCluster
from support.postgres import PostgresServer

OPERATOR_TOKEN = "fx-operator-killed"
DATABASE = "faults_killed"
NAMESPACE = "team-a"
CANARY = "kill-canary-5be07d-do-not-leak"
SCRIPT = ("from fx_ef import context\n"
          "print('canary:', context.secrets.get('CANARY'))\n"
          "print('ran once')\n")
#: Executions admitted together at each step (kopf admits them concurrently).
EXECUTIONS = 2


@pytest.fixture(scope="module")
def postgres_dsn_killed(postgres_server: PostgresServer) -> Iterator[str]:
    yield postgres_server.create_database(DATABASE)
    postgres_server.drop_database(DATABASE)


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
        postgres_dsn_killed: str) -> Iterator[ProcessCluster]:
    emulator = FaultyEmulator()
    emulator.register_token(OPERATOR_TOKEN, namespace="fx-system", service_account="fx-operator")
    with cluster_with_a_package(
            tmp_path_factory.mktemp("killed"), postgres_dsn_killed,
            lambda: postgres_server.dump(DATABASE), namespace=NAMESPACE, package="once",
            script=SCRIPT, canary=CANARY, emulator=emulator,
            operator_token=OPERATOR_TOKEN) as machine:
        yield machine


# --- pinning the operator at a step ---------------------------------------------------------------

#: Set up before the Executions are created; what it yields waits until that many are pinned.
Pin = Callable[[ProcessCluster, str], AbstractContextManager[Callable[[int], None]]]


@contextmanager
def before_run_key(k8s: ProcessCluster, dsn: str) -> Iterator[Callable[[int], None]]:
    """``run_keys`` locked: each registration waits on the lock, uncommitted, when the operator
    dies. Its server sessions are ended before the lock goes (as the server does once it sees the
    client gone), so no registration commits after the kill."""
    def waiting() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE '%INSERT INTO run_keys%'").fetchall()
        return [int(r[0]) for r in rows]

    def pinned(count: int) -> None:
        k8s.wait_for(lambda: len(waiting()) >= count, "the registrations to wait on the lock")

    with psycopg.connect(dsn) as lock:
        lock.execute("LOCK TABLE run_keys IN ACCESS EXCLUSIVE MODE")
        try:
            yield pinned
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for pid in waiting():
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            lock.rollback()


def _held(verbs: tuple[str, ...], resource: str) -> Pin:
    """The operator's next request of that kind waits at the API server until after the kill,
    and is then dropped, never applied."""
    @contextmanager
    def pin(k8s: ProcessCluster, dsn: str) -> Iterator[Callable[[int], None]]:
        assert isinstance(k8s.server.emulator, FaultyEmulator)
        faults = k8s.server.emulator.faults
        hold = faults.hold(by_token(OPERATOR_TOKEN, verbs=verbs, resource=resource,
                                    namespace=NAMESPACE))

        def pinned(count: int) -> None:
            k8s.wait_for(lambda: hold.arrived >= count, f"the operator's {verbs} {resource}")

        try:
            yield pinned
        finally:
            faults.clear()
    return pin


@contextmanager
def after_status(k8s: ProcessCluster, dsn: str) -> Iterator[Callable[[int], None]]:
    """The status with the run id is written: the run is followed from there on."""
    def pinned(count: int) -> None:
        def admitted() -> int:
            listed = k8s.custom.list_namespaced_custom_object(
                "fx.dev", "v1alpha1", NAMESPACE, "executions")
            return sum(bool((item.get("status") or {}).get("runId") and
                            item["metadata"]["name"].startswith("after-the-status"))
                       for item in listed["items"])
        k8s.wait_for(lambda: admitted() >= count, "the admitted status")
    yield pinned


STEPS: dict[str, Pin] = {
    "before-the-run-key": before_run_key,
    "after-the-run-key": _held(("create",), "secrets"),
    "after-the-secret": _held(("create",), "jobs"),
    "after-the-job": _held(("patch", "update"), "executions"),
    "after-the-status": after_status,
}


@pytest.mark.parametrize("step", list(STEPS))
def test_an_operator_killed_during_admission_loses_no_run_and_doubles_none(
        k8s: ProcessCluster, postgres_dsn_killed: str, step: str) -> None:
    names = [f"{step}-{i}" for i in range(EXECUTIONS)]
    killed = k8s.pid
    k8s.runner.paused.set()  # the pods wait: the kill lands in admission, not in the run
    try:
        with STEPS[step](k8s, postgres_dsn_killed) as pinned:
            for name in names:
                k8s.execution(NAMESPACE, name, "once")
            pinned(len(names))
            k8s.kill_operator()
        k8s.start_operator()
        assert k8s.pid != killed
    finally:
        k8s.runner.paused.clear()
    for name in names:
        status = assert_ran_once(k8s, postgres_dsn_killed, NAMESPACE, name, "ran once")
        assert "canary: ***" in status["result"]["outputTail"]


def test_the_killed_operators_left_nothing_behind(k8s: ProcessCluster) -> None:
    """After all the kills, a new Execution still runs (the operator serves the namespace)."""
    k8s.assert_still_serving(NAMESPACE)
