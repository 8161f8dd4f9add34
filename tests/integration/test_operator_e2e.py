"""The operator end to end, in CI: the emulated API server over HTTP, kopf, the pod runner playing
kubelet and Job controller, the broker over HTTPS, and a real PostgreSQL store.

One cluster for the module; a canary secret at every scope, checked at the end against every
object the emulator ever stored, the operator's logs, the runs' output and argv, and the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fx_operator.cli.main import cli
from fx_operator.domain.job_spec import job_name
from support.cluster import PLATFORM_NAMESPACE, Cluster, cluster
from support.postgres import PostgresServer
from support.scenarios import (
    LEAST_PRIVILEGE_SCRIPT,
    SCOPES_SCRIPT,
    SCOPES_SEEN,
    package_secrets,
    platform_secrets,
    project_secrets,
    run_closed,
)

from fx_ef.init import InitError, key_from_broker

CANARIES = {"platform": "plat-canary-e2e-4c1f9a", "project": "proj-canary-e2e-8b2d7e",
            "package": "pkg-canary-e2e-0a5e33"}

SEED_FX_EF = (Path(__file__).resolve().parents[2] / "examples" / "secrets-fx-ef" /
              "test_secrets.py").read_text()
SEED_FERRIS = (Path(__file__).resolve().parents[2] / "examples" / "secrets-ferris" /
               "test_secrets.py").read_text()
SEED_SECRETS = {"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"}



@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory,
        postgres_server: PostgresServer) -> Iterator[Cluster]:
    dsn = postgres_server.create_database("e2e_operator")
    tmp = tmp_path_factory.mktemp("cluster")
    with cluster(tmp, dsn, FX_PLATFORM_WRITERS=json.dumps(["team-a/writer"])) as machine:
        machine.sealed_secret(PLATFORM_NAMESPACE, "platform",
                              platform_secrets(CANARIES["platform"]), "platform")
        machine.sealed_secret("team-a", "project", project_secrets(CANARIES["project"]),
                              "project")
        for name in ("platform", "project"):
            namespace = PLATFORM_NAMESPACE if name == "platform" else "team-a"
            machine.ready("scopedsecrets", namespace, name)
        yield machine
        seen = machine.everything_seen()
        dump = postgres_server.dump("e2e_operator").decode(errors="replace")
        for scope, value in CANARIES.items():
            assert value not in seen, f"the {scope} canary leaked into objects, logs or output"
            assert value not in dump, f"the {scope} canary is in plaintext in the database"
    postgres_server.drop_database("e2e_operator")


def _run(k8s: Cluster, namespace: str, name: str, package: str, **spec: Any) -> dict[str, Any]:
    k8s.execution(namespace, name, package, **spec)
    return k8s.finished(namespace, name)


def test_package_and_secrets_at_three_scopes(k8s: Cluster) -> None:
    k8s.package("team-a", "scopes", {"main.py": SCOPES_SCRIPT})
    k8s.sealed_secret("team-a", "scopes-secrets", package_secrets(CANARIES["package"]),
                      "package", package="scopes")
    k8s.ready("packages", "team-a", "scopes")
    stored = k8s.ready("scopedsecrets", "team-a", "scopes-secrets")
    assert {s["name"] for s in stored["status"]["secrets"]} == {"CANARY_PACKAGE", "SHARED"}
    execution = _run(k8s, "team-a", "scopes-1", "scopes")
    status = execution["status"]
    assert status["phase"] == "Succeeded", status
    assert status["exitCode"] == 0
    tail = status["result"]["outputTail"]
    assert "canary: ***" in tail
    assert json.loads(tail.splitlines()[1]) == SCOPES_SEEN
    assert "shared is package" in tail
    manifest = status["manifest"]
    assert manifest["SHARED"]["scope"] == "package"
    assert manifest["CANARY_PROJECT"]["scope"] == "project"
    assert manifest["ONLY_PLATFORM"]["scope"] == "platform"
    assert [s["name"] for s in status["steps"]] == ["Admitted", "SecretsDelivered", "Script"]
    assert all(s["phase"] == "Succeeded" for s in status["steps"])
    reasons = {e["reason"] for e in k8s.events("team-a", "scopes-1", "Completed")}
    assert {"JobCreated", "SecretsDelivered", "Completed"} <= reasons


@pytest.mark.parametrize(("package", "script", "spec"), [
    ("seed-fx-ef", SEED_FX_EF, {}),
    ("seed-ferris", SEED_FERRIS, {"compat": "ferris"}),
])
def test_the_seeds_scripts_as_packages(k8s: Cluster, package: str, script: str,
                                       spec: dict[str, Any]) -> None:
    k8s.package("team-b", package, {"test_secrets.py": script}, **spec)
    k8s.sealed_secret("team-b", f"{package}-secrets", SEED_SECRETS, "package", package=package)
    k8s.ready("packages", "team-b", package)
    k8s.ready("scopedsecrets", "team-b", f"{package}-secrets")
    status = _run(k8s, "team-b", f"{package}-run", package)["status"]
    assert status["phase"] == "Succeeded", status
    tail = status["result"]["outputTail"]
    assert "DB NAME: ***" in tail and "DB PASS: ***" in tail
    assert f"PACKAGE NAME: {package}" in tail
    assert "supersecretpas$" not in tail
    # least privilege: the platform and project canaries of the chain are not the run's
    assert sorted(status["manifest"]) == ["DB_NAME", "DB_PASS"]
    if spec:  # the ferris opt-in: argv holds exactly the two names too
        assert [line for line in tail.splitlines() if " -> " in line] == [
            "DB_NAME -> ***", "DB_PASS -> ***"]
    assert _audited_names(k8s, status["runId"]) == {"DB_NAME", "DB_PASS"}


def _audited_names(k8s: Cluster, run_id: str) -> set[str]:
    """The names in the audit records of a run (its resolution), read from the database."""
    import psycopg

    with psycopg.connect(k8s.env["FX_DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT entries FROM audit WHERE run_id = %s", (run_id,)).fetchall()
    return {str(e["name"]) for (entries,) in rows for e in json.loads(entries) if "name" in e}




def test_a_canary_neither_declared_nor_used_reaches_no_part_of_the_run(k8s: Cluster) -> None:
    k8s.package("team-b", "least", {"main.py": LEAST_PRIVILEGE_SCRIPT}, compat="ferris")
    k8s.sealed_secret("team-b", "least-secrets", SEED_SECRETS, "package", package="least")
    k8s.ready("packages", "team-b", "least")
    k8s.ready("scopedsecrets", "team-b", "least-secrets")
    status = _run(k8s, "team-b", "least-1", "least")["status"]
    assert status["phase"] == "Succeeded", status
    lines = status["result"]["outputTail"].splitlines()
    assert 'bundle: ["DB_NAME", "DB_PASS"]' in lines
    assert 'argv: ["DB_NAME", "DB_PASS"]' in lines
    assert "undelivered: None" in lines
    assert status["result"]["missingSecrets"] == ["CANARY_PLATFORM"]
    assert sorted(status["manifest"]) == ["DB_NAME", "DB_PASS"]
    assert _audited_names(k8s, status["runId"]) == {"DB_NAME", "DB_PASS"}


def test_a_required_name_missing_fails_at_admission_without_a_job(k8s: Cluster) -> None:
    k8s.package("team-b", "needy", {"main.py": "print('never runs')\n"},
                secrets={"names": [{"name": "API_TOKEN"},
                                   {"name": "CANARY_PROJECT", "scope": "platform"}]})
    k8s.ready("packages", "team-b", "needy")
    status = _run(k8s, "team-b", "needy-1", "needy")["status"]
    assert status["phase"] == "Failed", status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretMissing")
    assert "'API_TOKEN' is not set at any scope" in ready["message"]
    assert "'CANARY_PROJECT' is not set at platform scope" in ready["message"]
    (event,) = k8s.events("team-b", "needy-1", "SecretMissing")
    assert event["type"] == "Warning" and "API_TOKEN" in event["message"]
    jobs = k8s.batch.list_namespaced_job("team-b").items
    assert job_name("needy-1") not in {j.metadata.name for j in jobs}
    assert "runId" not in status and not [p for p in k8s.runner.pods.values()
                                          if p.job == job_name("needy-1")]


def test_a_failing_script_fails_the_execution(k8s: Cluster) -> None:
    k8s.package("team-a", "crasher", {"main.py": "import sys\nprint('bye')\nsys.exit(3)\n"})
    k8s.ready("packages", "team-a", "crasher")
    status = _run(k8s, "team-a", "crasher-1", "crasher")["status"]
    assert status["phase"] == "Failed" and status["exitCode"] == 3
    assert "ScriptFailed" in {e["reason"] for e in k8s.events("team-a", "crasher-1",
                                                                  "ScriptFailed")}


def test_one_job_per_execution_across_an_operator_restart(k8s: Cluster) -> None:
    k8s.package("team-a", "slow", {"main.py": "import time\ntime.sleep(1)\nprint('done')\n"})
    k8s.ready("packages", "team-a", "slow")
    k8s.runner.paused.set()
    try:
        k8s.execution("team-a", "slow-1", "slow")
        k8s.wait_for(lambda: k8s.batch.list_namespaced_job(
            "team-a", label_selector="fx.dev/execution=slow-1").items, "the Job")
        k8s.stop_operator()
        k8s.start_operator()
    finally:
        k8s.runner.paused.clear()
    status = k8s.finished("team-a", "slow-1")["status"]
    assert status["phase"] == "Succeeded", status
    jobs = k8s.batch.list_namespaced_job("team-a", label_selector="fx.dev/execution=slow-1")
    assert [j.metadata.name for j in jobs.items] == [job_name("slow-1")]


def test_platform_writes_only_where_configured(k8s: Cluster) -> None:
    script = ("from fx_ef import context\n"
              "try:\n"
              "    context.secrets.set('FROM_RUN', 'written-by-run-value', 'platform')\n"
              "    print('platform: written')\n"
              "except Exception as e:\n"
              "    print('platform:', type(e).__name__)\n"
              "context.secrets.set('PROJECT_FROM_RUN', 'project-run-value', 'project')\n"
              "print('project:', context.secrets.get('PROJECT_FROM_RUN'))\n")
    for package in ("writer", "reader"):
        k8s.package("team-a", package, {"main.py": script})
        k8s.ready("packages", "team-a", package)
    allowed = _run(k8s, "team-a", "writer-1", "writer")["status"]["result"]["outputTail"]
    refused = _run(k8s, "team-a", "reader-1", "reader")["status"]["result"]["outputTail"]
    assert "platform: written" in allowed
    assert "platform: PlatformWriteNotAllowedError" in refused
    assert "project: ***" in refused


def _ask_for_key(k8s: Cluster, run_id: str, token: str) -> str:
    """The init step's own request for a run key, with ``token``; the refusal's message."""
    ca = k8s.core.read_namespaced_config_map("fx-broker-ca", "team-a").data["ca.crt"]
    directory = Path(k8s.env["FX_HOME"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_text(ca)
    (directory / "token").write_text(token)
    with pytest.raises(InitError) as refused:
        key_from_broker(k8s.env["FX_BROKER_URL"], run_id, directory / "token",
                        directory / "ca.crt")
    return str(refused.value)


def test_run_keys_are_given_once_and_only_to_the_runs_own_pod(k8s: Cluster) -> None:
    k8s.package("team-a", "sleeper", {"main.py": "import time\ntime.sleep(3)\n"})
    k8s.ready("packages", "team-a", "sleeper")
    k8s.execution("team-a", "sleeper-1", "sleeper")
    running = k8s.wait_for(lambda: (lambda b: b if any(
        s["name"] == "SecretsDelivered" and s["phase"] == "Succeeded"
        for s in (b.get("status") or {}).get("steps") or []) else None)(
        k8s.get("executions", "team-a", "sleeper-1")), "the run's key to be delivered")
    run_id = running["status"]["runId"]
    (pod,) = [p for p in k8s.runner.pods.values() if p.job == job_name("sleeper-1")]
    assert "(409)" in _ask_for_key(k8s, run_id, pod.tokens[0])  # a replay of the executor's

    def register(token: str, namespace: str, pod_name: str, pod_uid: str) -> None:
        k8s.server.call(lambda: k8s.server.emulator.register_token(
            token, namespace=namespace, service_account="default", pod_name=pod_name,
            pod_uid=pod_uid, audiences=["fx-broker"]))

    register("other-namespace-token", "team-b", pod.name, pod.uid)
    assert "(403)" in _ask_for_key(k8s, run_id, "other-namespace-token")
    (other,) = [p for p in k8s.runner.pods.values() if p.job == job_name("scopes-1")]
    register("other-run-token", "team-a", other.name, other.uid)
    assert "(403)" in _ask_for_key(k8s, run_id, "other-run-token")
    assert "(401)" in _ask_for_key(k8s, run_id, "not-a-token")
    assert k8s.finished("team-a", "sleeper-1")["status"]["phase"] == "Succeeded"
    assert "(4" in _ask_for_key(k8s, run_id, pod.tokens[0])  # finished: refused for good


def test_fxctl_seal_and_run_against_the_cluster(k8s: Cluster, tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"CLI_SECRET": "sealed-by-the-cli-value"}))
    k8s.package("team-a", "cli-pkg", {"main.py": (
        "from fx_ef import context\n"
        "print('cli:', context.secrets.get('CLI_SECRET'), context.params.get('day'))\n")})
    sealed = CliRunner().invoke(cli, ["seal", str(secrets_file), "-n", "team-a",
                                      "--package", "cli-pkg"], catch_exceptions=False)
    assert sealed.exit_code == 0, sealed.output
    manifest = yaml.safe_load(sealed.output)
    assert "sealed-by-the-cli-value" not in sealed.output
    k8s.apply("scopedsecrets", "team-a", manifest)
    k8s.ready("scopedsecrets", "team-a", manifest["metadata"]["name"])
    k8s.ready("packages", "team-a", "cli-pkg")
    ran = CliRunner().invoke(cli, ["run", "cli-pkg", "-n", "team-a", "--param", "day=monday"],
                             catch_exceptions=False)
    k8s.extra_outputs.append(ran.output)
    assert ran.exit_code == 0, ran.output
    assert "cli: *** monday" in ran.output
    # Progress while following, as plain lines off a terminal: one per phase seen.
    assert "fxctl: execution team-a/cli-pkg-" in ran.output
    assert ": waiting for the operator\n" in ran.output or ": Pending\n" in ran.output \
        or ": Running\n" in ran.output, ran.output


def test_metrics_and_probes(k8s: Cluster) -> None:
    import urllib.request

    port = k8s.env["FX_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert 'fx_executions_total{phase="Succeeded"}' in text
    assert "fx_admission_seconds_count" in text
    assert 'fx_store_seconds' in text


def test_deleting_an_execution_closes_its_run(k8s: Cluster) -> None:
    k8s.package("team-a", "held", {"main.py": "print('never')\n"})
    k8s.ready("packages", "team-a", "held")
    k8s.runner.paused.set()
    try:
        k8s.execution("team-a", "held-1", "held")
        run_id = k8s.wait_for(lambda: (k8s.get("executions", "team-a", "held-1").get("status")
                                       or {}).get("runId"), "admission")
        k8s.custom.delete_namespaced_custom_object("fx.dev", "v1alpha1", "team-a", "executions",
                                                   "held-1")

        k8s.wait_for(lambda: run_closed(k8s.env["FX_DATABASE_URL"], run_id),
                     "the run to close and its key to be erased")
    finally:
        k8s.runner.paused.clear()


def test_an_execution_right_after_its_package_is_fixed_runs_the_fixed_package(
        k8s: Cluster) -> None:
    """Admission reads Packages from the operator's watch; a stale copy there (the refused
    generation) must not fail an Execution made right after the fix."""
    # Two scripts and no entrypoint: the API server accepts it, the operator refuses it.
    k8s.package("team-a", "fixed", {"a.py": "print('old')\n", "b.py": "print('old')\n"})
    refused = k8s.ready("packages", "team-a", "fixed")
    assert [c["status"] for c in refused["status"]["conditions"] if c["type"] == "Ready"] == \
        ["False"]
    k8s.custom.patch_namespaced_custom_object(
        "fx.dev", "v1alpha1", "team-a", "packages", "fixed",
        {"spec": {"scripts": [{"name": "main.py", "content": "print('fixed')\n"}]}})
    status = _run(k8s, "team-a", "fixed-1", "fixed")["status"]
    assert status["phase"] == "Succeeded", status
    assert "fixed" in status["result"]["outputTail"]


def test_a_package_larger_than_the_annotations_limit_is_published(k8s: Cluster) -> None:
    """kopf records the last handled spec in an annotation, and the API server caps annotations
    at 256 KiB: the record keeps long strings as digests, or this Package never got a status."""
    padding = "# padding\n" * 15_000  # 150 KB a script
    k8s.package("team-a", "large", {"main.py": padding + "print('large')\n", "more.py": padding},
                entrypoint="main.py")
    published = k8s.ready("packages", "team-a", "large")
    assert [c["status"] for c in published["status"]["conditions"] if c["type"] == "Ready"] == \
        ["True"]
    annotations = published["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 4096


def test_a_package_shows_the_names_its_scripts_read_and_those_set_nowhere(k8s: Cluster) -> None:
    k8s.package("team-a", "names-reader", {"main.py": (
        "from fx_ef import context\n"
        "context.secrets.get('SHARED')\n"
        "context.secrets.get('NOT_SET_ANYWHERE')\n"
        "name = 'X'\n"
        "context.secrets.get(name)\n")})
    status = k8s.ready("packages", "team-a", "names-reader")["status"]
    assert status["secretsFound"] == ["NOT_SET_ANYWHERE", "SHARED"]
    assert status["secretsDynamic"] == ["main.py:5"]
    available = next(c for c in status["conditions"] if c["type"] == "SecretsAvailable")
    assert (available["status"], available["reason"]) == ("False", "SecretMissing")
    assert "NOT_SET_ANYWHERE" in available["message"] and "SHARED" not in available["message"]


def test_the_delivery_is_reported_while_the_script_runs(k8s: Cluster, tmp_path: Path) -> None:
    """The run pod's executor claims its key and the broker says so on the Execution at once:
    the delivery step and its Event are there while the script still runs (it waits for a gate
    the test opens only after seeing them)."""
    gate = tmp_path / "gate"
    k8s.package("team-a", "gated", {"main.py": (
        "import pathlib, time\n"
        f"gate = pathlib.Path({str(gate)!r})\n"
        "while not gate.exists():\n"
        "    time.sleep(0.05)\n"
        "print('through the gate')\n")})
    k8s.ready("packages", "team-a", "gated")
    k8s.execution("team-a", "gated-1", "gated")

    def delivered_while_running() -> dict[str, Any] | None:
        status = k8s.get("executions", "team-a", "gated-1").get("status") or {}
        steps = {s["name"]: s for s in status.get("steps") or []}
        return status if steps.get("SecretsDelivered", {}).get("phase") == "Succeeded" else None

    status = k8s.wait_for(delivered_while_running, "the delivery step, the script still running")
    assert status["phase"] == "Running" and not gate.exists()
    assert k8s.events("team-a", "gated-1", "SecretsDelivered")
    gate.touch()
    done = k8s.finished("team-a", "gated-1")["status"]
    assert done["phase"] == "Succeeded" and "through the gate" in done["result"]["outputTail"]
