"""No crash window loses a run: an operator that stopped between creating a run's Job and writing
the Execution's status rebuilds that status when it starts again, and ``fxctl run -n`` does not
wait forever for a run whose status never ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fx_operator.cli.cluster import EXIT_WAIT_TIMEOUT
from fx_operator.cli.main import cli
from fx_operator.domain.job_spec import job_name
from support.cluster import Cluster, cluster
from support.kube_emulator import ApiCall, KubeEmulator
from support.postgres import PostgresServer

OPERATOR_TOKEN = "fx-operator-restarts"


class _StatusWrites:
    """The API server refuses the operator's writes of Executions' status while ``refused``."""

    def __init__(self) -> None:
        self.refused = False
        self.tried = 0

    def __call__(self, call: ApiCall) -> bool:
        if call.token == OPERATOR_TOKEN and call.resource == "executions" \
                and call.subresource == "status" and call.verb in ("patch", "update"):
            self.tried += 1
            return not self.refused
        return True


@pytest.fixture
def restarts(tmp_path: Path, postgres_server: PostgresServer
             ) -> Iterator[tuple[Cluster, _StatusWrites]]:
    writes = _StatusWrites()
    emulator = KubeEmulator(authorizer=writes)
    emulator.register_token(OPERATOR_TOKEN, namespace="fx-system", service_account="fx-operator")
    dsn = postgres_server.create_database("restarts")
    try:
        with cluster(tmp_path, dsn, emulator=emulator, operator_token=OPERATOR_TOKEN) as k8s:
            yield k8s, writes
    finally:
        postgres_server.drop_database("restarts")


def test_a_status_lost_between_the_job_and_its_write_is_rebuilt_after_a_restart(
        restarts: tuple[Cluster, _StatusWrites]) -> None:
    k8s, writes = restarts
    k8s.package("team-a", "lost", {"main.py": "print('ran once')\n"},
                secrets={"names": [{"name": "TOKEN"}]})  # delivered though the script reads none
    k8s.sealed_secret("team-a", "lost-secrets", {"TOKEN": "lost-run-value"}, "package",
                      package="lost")
    k8s.ready("packages", "team-a", "lost")
    k8s.ready("scopedsecrets", "team-a", "lost-secrets")
    writes.refused = True  # the operator's status write never lands: as if it stopped first
    k8s.execution("team-a", "lost-1", "lost")
    k8s.wait_for(lambda: k8s.batch.list_namespaced_job(
        "team-a", label_selector="fx.dev/execution=lost-1").items, "the run's Job")
    k8s.wait_for(lambda: writes.tried, "the operator to try writing the status")
    k8s.stop_operator()
    assert "runId" not in (k8s.get("executions", "team-a", "lost-1").get("status") or {})
    writes.refused = False
    k8s.start_operator()
    status = k8s.finished("team-a", "lost-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert "ran once" in status["result"]["outputTail"]
    assert "found after a restart" in status["steps"][0]["message"]
    # The manifest the run was sealed with, from its resolution's audit record.
    assert status["manifest"] == {"TOKEN": {"scope": "package", "version": 1}}
    jobs = k8s.batch.list_namespaced_job("team-a", label_selector="fx.dev/execution=lost-1")
    assert [j.metadata.name for j in jobs.items] == [job_name("lost-1")]


def test_fxctl_stops_waiting_for_a_run_that_does_not_end(
        restarts: tuple[Cluster, _StatusWrites]) -> None:
    k8s, _ = restarts
    k8s.package("team-a", "stuck", {"main.py": "print('never')\n"})
    k8s.ready("packages", "team-a", "stuck")
    k8s.runner.paused.set()  # the pod never starts its containers
    try:
        ran = CliRunner().invoke(cli, ["run", "stuck", "-n", "team-a", "--wait-timeout", "3"],
                                 catch_exceptions=False)
    finally:
        k8s.runner.paused.clear()
    assert ran.exit_code == EXIT_WAIT_TIMEOUT, ran.output
    assert "did not end within 3 s" in ran.output
    assert "it goes on in the cluster: kubectl -n team-a get execution stuck-" in ran.output
