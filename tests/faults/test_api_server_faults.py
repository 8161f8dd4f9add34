"""An API server failing for a while (500s, 429s with ``Retry-After``, requests that time out)
does not take the operator down: the same process (same pid) admits and finishes the Executions
created during the fault once it is over, without a restart.

Every request the operator makes (kopf's watches and patches, its own reads and writes, the
broker's TokenReviews) fails in the window; other clients (the test, the pod runner) are served.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fx_operator.domain.job_spec import job_name
from support.fault_checks import assert_ran_once, cluster_with_a_package
from support.faults import INTERNAL_ERROR, TOO_MANY_REQUESTS, Failure, FaultyEmulator, timeout
from support.operator_process import ProcessCluster
from support.postgres import PostgresServer

OPERATOR_TOKEN = "fx-operator-api-faults"
DATABASE = "faults_api"
NAMESPACE = "team-a"
CANARY = "api-fault-canary-91c4e2-do-not-leak"
SCRIPT = ("from fx_ef import context\n"
          "print('canary:', context.secrets.get('CANARY'))\n"
          "print('after the storm')\n")
#: How long the API server fails the operator's requests (a few of kopf's retry intervals).
WINDOW_SECONDS = 6.0
EXECUTIONS = 3
#: How long the operator waits for one answer (FX_API_TIMEOUT_SECONDS, 60 by default): short
#: here, for the black hole below; longer than the stall of the 504s.
API_TIMEOUT_SECONDS = 4
FAULTS: dict[str, list[Failure]] = {
    "500": [INTERNAL_ERROR],
    "429": [TOO_MANY_REQUESTS],
    "timeouts": [timeout(stall=API_TIMEOUT_SECONDS / 2)],
}


@pytest.fixture(scope="module")
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    yield postgres_server.create_database(DATABASE)
    postgres_server.drop_database(DATABASE)


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
        dsn: str) -> Iterator[ProcessCluster]:
    emulator = FaultyEmulator()
    emulator.register_token(OPERATOR_TOKEN, namespace="fx-system", service_account="fx-operator")
    with cluster_with_a_package(
            tmp_path_factory.mktemp("api-faults"), dsn, lambda: postgres_server.dump(DATABASE),
            namespace=NAMESPACE, package="storm", script=SCRIPT, canary=CANARY,
            emulator=emulator, operator_token=OPERATOR_TOKEN,
            FX_API_TIMEOUT_SECONDS=str(API_TIMEOUT_SECONDS)) as machine:
        yield machine


def _operators(token: str) -> bool:
    return token == OPERATOR_TOKEN


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_operator_recovers_from_a_failing_api_server_without_a_restart(
        k8s: ProcessCluster, dsn: str, fault: str) -> None:
    assert isinstance(k8s.server.emulator, FaultyEmulator)
    faults = k8s.server.emulator.faults
    pid = k8s.pid
    names = [f"storm-{fault}-{i}" for i in range(EXECUTIONS)]
    faults.fail(lambda call: _operators(call.token), FAULTS[fault])
    try:
        for name in names:
            k8s.execution(NAMESPACE, name, "storm")
        k8s.wait_for(lambda: faults.failed >= EXECUTIONS, "the operator's calls to fail")
        time.sleep(WINDOW_SECONDS)  # the fault lasts a while: retries meet it too
        assert k8s.pid == pid
    finally:
        faults.clear()
    for name in names:
        status = assert_ran_once(k8s, dsn, NAMESPACE, name, "after the storm")
        assert "canary: ***" in status["result"]["outputTail"]
    assert k8s.pid == pid, "the operator was restarted"


def test_the_operator_recovers_from_requests_the_api_server_never_answers(
        k8s: ProcessCluster, dsn: str) -> None:
    """A black hole for a while (a load balancer failing over, a half-open connection): the
    operator's requests of that time are never answered. Its calls time out and are retried:
    nothing it does waits forever for one answer."""
    assert isinstance(k8s.server.emulator, FaultyEmulator)
    faults = k8s.server.emulator.faults
    pid = k8s.pid
    names = [f"silence-{i}" for i in range(EXECUTIONS)]
    hold = faults.hold(lambda call: _operators(call.token))
    unanswered = []
    try:
        for name in names:
            k8s.execution(NAMESPACE, name, "storm")
        k8s.wait_for(lambda: hold.arrived, "the operator's calls to hang")
        time.sleep(WINDOW_SECONDS)
        unanswered = faults.stop()  # served again, but what was asked meanwhile never is
        for name in names:
            assert_ran_once(k8s, dsn, NAMESPACE, name, "after the storm")
        assert k8s.pid == pid, "the operator was restarted"
    finally:
        for held in unanswered:
            held.release()
        faults.clear()


def test_a_run_that_ends_while_the_api_server_fails_still_ends_its_execution(
        k8s: ProcessCluster, dsn: str) -> None:
    """The pod's last event comes while the operator cannot read or write Executions: the end
    is not lost with that event (the pod sends no other), it is written once the API is back."""
    assert isinstance(k8s.server.emulator, FaultyEmulator)
    faults = k8s.server.emulator.faults
    pid = k8s.pid
    names = [f"ends-in-storm-{i}" for i in range(EXECUTIONS)]
    k8s.runner.paused.set()
    try:
        for name in names:
            k8s.execution(NAMESPACE, name, "storm")
        k8s.wait_for(lambda: all((k8s.get("executions", NAMESPACE, n).get("status") or {})
                                 .get("runId") for n in names), "the runs admitted")
        faults.fail(lambda call: _operators(call.token) and call.resource == "executions",
                    [INTERNAL_ERROR])
        k8s.runner.paused.clear()
        k8s.wait_for(lambda: all(_pod_phase(k8s, n) == "Succeeded" for n in names),
                     "the pods to end", timeout=120)
        time.sleep(WINDOW_SECONDS)  # the fault outlasts the pods' last events
    finally:
        k8s.runner.paused.clear()
        faults.clear()
    for name in names:
        assert_ran_once(k8s, dsn, NAMESPACE, name, "after the storm")
    assert k8s.pid == pid


def _pod_phase(k8s: ProcessCluster, name: str) -> str | None:
    pods = k8s.core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job_name(name)}")
    return next((str(p.status.phase) for p in pods.items), None)
