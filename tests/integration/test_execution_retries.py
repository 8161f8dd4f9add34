"""Retries of a failed run on the emulated cluster (operator, pod runner, broker, PostgreSQL):
each try a run of its own (run id, one-time key, Job), listed in the Execution's status.

The scripts count their tries in their Package's state (``context.state``), as a script on a real
cluster would: the count outlives each try's pod.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fx_operator.cli.main import cli
from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.domain.job_spec import job_name, run_id
from kubernetes import client
from support.cluster import Cluster, cluster
from support.postgres import PostgresServer
from support.scenarios import run_closed

from fx_ef.init import InitError, key_from_broker

NS = "team-a"
CANARY = "retry-canary-5d03b1"
#: Fails (exit 1) until its Package's state has counted ``succeed_at`` tries.
FLAKY = ("import sys\n"
         "from fx_ef import context\n"
         "tries = int(context.state.get().get('tries', 0)) + 1\n"
         "context.state.put('tries', tries)\n"
         "print('try', tries, 'secret', context.secrets.get('CANARY_PACKAGE'))\n"
         "sys.exit(0 if tries >= context.params.get('succeed_at') else 1)\n")


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory,
        postgres_server: PostgresServer) -> Iterator[Cluster]:
    dsn = postgres_server.create_database("retries")
    with cluster(tmp_path_factory.mktemp("cluster"), dsn) as machine:
        yield machine
        assert CANARY not in machine.everything_seen()
        assert CANARY not in postgres_server.dump("retries").decode(errors="replace")
    postgres_server.drop_database("retries")


def _flaky_package(k8s: Cluster, name: str, **spec: Any) -> None:
    k8s.package(NS, name, {"main.py": FLAKY}, **spec)
    k8s.sealed_secret(NS, f"{name}-secrets", {"CANARY_PACKAGE": CANARY}, "package",
                      package=name)
    k8s.ready("packages", NS, name)
    k8s.ready("scopedsecrets", NS, f"{name}-secrets")


def _jobs(k8s: Cluster, execution: str) -> list[str]:
    return sorted(j.metadata.name for j in k8s.batch.list_namespaced_job(
        NS, label_selector=f"fx.dev/execution={execution}").items)


def _ask_for_key_again(k8s: Cluster, run: str, token: str) -> str:
    """The init step's own request for a run key, with its pod's token; the refusal's message."""
    ca = k8s.core.read_namespaced_config_map("fx-broker-ca", NS).data["ca.crt"]
    folder = Path(k8s.env["FX_HOME"]) / "retries-client"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_text(ca)
    (folder / "token").write_text(token)
    with pytest.raises(InitError) as refused:
        key_from_broker(k8s.env["FX_BROKER_URL"], run, folder / "token", folder / "ca.crt")
    return str(refused.value)


def test_a_script_failing_twice_then_succeeding_ends_succeeded_after_three_tries(
        k8s: Cluster) -> None:
    _flaky_package(k8s, "flaky")
    created = k8s.execution(NS, "flaky-1", "flaky", params={"succeed_at": 3},
                            retries={"limit": 3, "backoffSeconds": 0})
    status = k8s.finished(NS, "flaky-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["exitCode"] == 0 and "try 3 secret ***" in status["result"]["outputTail"]
    tries = status["tries"]
    assert [(t["try"], t["phase"], t.get("reason"), t.get("exitCode")) for t in tries] == [
        (1, "Failed", "ScriptFailed", 1), (2, "Failed", "ScriptFailed", 1),
        (3, "Succeeded", "Completed", 0)]
    uid = created["metadata"]["uid"]
    runs = [t["runId"] for t in tries]
    assert runs == [run_id(uid, 1), run_id(uid, 2), run_id(uid, 3)] and len(set(runs)) == 3
    assert runs[0] == f"run-{uid}"  # the first try keeps the run id runs always had
    assert status["runId"] == runs[-1] and status["tryCount"] == 3
    assert [t["jobName"] for t in tries] == [job_name("flaky-1", n) for n in (1, 2, 3)]
    assert _jobs(k8s, "flaky-1") == sorted(job_name("flaky-1", n) for n in (1, 2, 3))
    assert "nextTryAt" not in status and "completionTime" in status
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True", succeeded
    # Each try's pod asked for its key once (its init step delivered it); asked again, with
    # the same pod's token, the broker refuses: a key is never handed out twice.
    for entry in tries:
        (pod,) = [p for p in k8s.runner.pods.values() if p.job == entry["jobName"]]
        assert "(4" in _ask_for_key_again(k8s, entry["runId"], pod.tokens[0])
        assert run_closed(k8s.env["FX_DATABASE_URL"], entry["runId"])
    reasons = [e["reason"] for e in k8s.events(NS, "flaky-1", "ScriptFailed", "Completed")]
    assert reasons.count("JobCreated") == 3, reasons


def test_retries_exhausted_fail_the_execution_with_every_try_listed(k8s: Cluster) -> None:
    k8s.package(NS, "doomed", {"main.py": "import sys\nprint('no')\nsys.exit(2)\n"})
    k8s.ready("packages", NS, "doomed")
    k8s.execution(NS, "doomed-1", "doomed", retries={"limit": 2, "backoffSeconds": 0})
    status = k8s.finished(NS, "doomed-1")["status"]
    assert status["phase"] == "Failed" and status["exitCode"] == 2, status
    assert [(t["try"], t["phase"], t["reason"], t.get("exitCode")) for t in status["tries"]] == [
        (n, "Failed", "ScriptFailed", 2) for n in (1, 2, 3)]
    assert len({t["runId"] for t in status["tries"]}) == 3 and status["tryCount"] == 3
    failed = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert failed["status"] == "False" and failed["reason"] == "ScriptFailed"
    assert "try 3 of 3: no retries left" in failed["message"]
    assert _jobs(k8s, "doomed-1") == sorted(job_name("doomed-1", n) for n in (1, 2, 3))


def test_a_refusal_at_admission_is_not_retried(k8s: Cluster) -> None:
    k8s.package(NS, "needs-token", {"main.py": "print('never')\n"},
                secrets={"names": [{"name": "RETRY_TOKEN_SET_NOWHERE"}]})
    k8s.ready("packages", NS, "needs-token")
    k8s.execution(NS, "needs-token-1", "needs-token",
                  retries={"limit": 5, "backoffSeconds": 0})
    status = k8s.finished(NS, "needs-token-1")["status"]
    assert status["phase"] == "Failed", status
    assert [(t["try"], t["phase"], t["reason"]) for t in status["tries"]] == [
        (1, "Failed", "SecretMissing")]
    assert "nextTryAt" not in status and _jobs(k8s, "needs-token-1") == []


def test_the_packages_retries_are_the_default_and_an_execution_overrides_them(
        k8s: Cluster) -> None:
    _flaky_package(k8s, "flaky-default", retries={"limit": 1, "backoffSeconds": 0})
    inherited = k8s.execution(NS, "flaky-default-1", "flaky-default", params={"succeed_at": 2})
    status = k8s.finished(NS, "flaky-default-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["retryPolicy"] == {"limit": 1, "backoffSeconds": 0}
    assert [t["runId"] for t in status["tries"]] == [
        run_id(inherited["metadata"]["uid"], n) for n in (1, 2)]
    # The Execution's own limit wins over the Package's: no retry, the first failure is final.
    k8s.execution(NS, "flaky-default-2", "flaky-default", params={"succeed_at": 99},
                  retries={"limit": 0})
    status = k8s.finished(NS, "flaky-default-2")["status"]
    assert status["phase"] == "Failed" and len(status["tries"]) == 1, status
    assert status["retryPolicy"] == {"limit": 0, "backoffSeconds": 0}



def test_fxctl_run_shows_the_tries(k8s: Cluster) -> None:
    _flaky_package(k8s, "flaky-cli", retries={"limit": 2, "backoffSeconds": 0})
    ran = CliRunner().invoke(cli, ["run", "flaky-cli", "-n", NS, "--param", "succeed_at=2"],
                             catch_exceptions=False)
    k8s.extra_outputs.append(ran.output)
    assert ran.exit_code == 0, ran.output
    assert "try 2 secret ***" in ran.output
    assert "fxctl: Succeeded after 2 tries:" in ran.output, ran.output


def test_an_operator_restart_between_tries_makes_exactly_one_next_try(k8s: Cluster) -> None:
    _flaky_package(k8s, "flaky-restart")
    # An hour's backoff: the operator is stopped while the next try waits, whatever the speed.
    k8s.execution(NS, "flaky-restart-1", "flaky-restart", params={"succeed_at": 2},
                  retries={"limit": 2, "backoffSeconds": 3600})
    k8s.wait_for(lambda: (k8s.get("executions", NS, "flaky-restart-1").get("status")
                          or {}).get("nextTryAt"), "the first try to fail")
    k8s.stop_operator()
    before = k8s.get("executions", NS, "flaky-restart-1")["status"]
    assert before["phase"] == "Running" and [t["phase"] for t in before["tries"]] == ["Failed"]
    retrying = next(c for c in before["conditions"] if c["type"] == "Succeeded")
    assert (retrying["status"], retrying["reason"]) == ("Unknown", "Retrying"), retrying
    assert _jobs(k8s, "flaky-restart-1") == [job_name("flaky-restart-1")]
    # The hour goes by while the operator is down (no clock is waited for): the next try is due
    # when it starts again, and only the status tells it which try that is.
    k8s.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, "executions", "flaky-restart-1",
        {"status": {"nextTryAt": "2000-01-01T00:00:00Z"}})
    k8s.start_operator()
    status = k8s.finished(NS, "flaky-restart-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert [(t["try"], t["phase"]) for t in status["tries"]] == [(1, "Failed"),
                                                                (2, "Succeeded")]
    assert _jobs(k8s, "flaky-restart-1") == sorted(job_name("flaky-restart-1", n)
                                                   for n in (1, 2))
    assert len([p for p in k8s.runner.pods.values()
                if p.job == job_name("flaky-restart-1", 2)]) == 1


@pytest.mark.parametrize(("retries", "field"), [
    ({"limit": 11}, "spec.retries.limit"),
    ({"limit": -1}, "spec.retries.limit"),
    ({"backoffSeconds": 3601}, "spec.retries.backoffSeconds"),
    ({"limit": "three"}, "spec.retries.limit"),
])
def test_the_api_server_refuses_retries_out_of_bounds_naming_the_field(
        k8s: Cluster, retries: dict[str, Any], field: str) -> None:
    with pytest.raises(client.ApiException) as refused:
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "executions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Execution",
            "metadata": {"name": "out-of-bounds"},
            "spec": {"package": "flaky", "retries": retries}})
    assert refused.value.status == 422
    assert field in json.loads(refused.value.body)["message"], refused.value.body
