"""The operator on a real control plane: real API server (schemas, CEL rules, RBAC, TokenRequest
and TokenReview), real Job and garbage-collector controllers, run pods as containers of the real
runtime image. The session's canaries and the RBAC audit are checked in ``conftest.py``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fx_operator.domain.job_spec import job_name
from kubernetes import client
from support.real_cluster import CANARIES, SYSTEM, RealCluster
from support.scenarios import SCOPES_SCRIPT, SCOPES_SEEN, package_secrets, run_closed

from fx_ef.init import InitError, key_from_broker

pytestmark = pytest.mark.realk8s

REPO = Path(__file__).resolve().parents[2]
SEED_SECRETS = REPO / "examples" / "secrets-fx-ef" / "secrets.json"



def package(namespace: str, name: str, scripts: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "fx.dev/v1alpha1", "kind": "Package",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scripts": [{"name": n, "content": c} for n, c in scripts.items()],
                     **spec}}


def execution(namespace: str, name: str, package_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"package": package_name, **spec}}


def run(real: RealCluster, namespace: str, name: str, package_name: str,
        **spec: Any) -> dict[str, Any]:
    real.apply(execution(namespace, name, package_name, **spec))
    return real.finished(namespace, name)


def reasons(real: RealCluster, namespace: str, name: str, *wanted: str) -> set[str]:
    """The reasons of an object's Events, once ``wanted`` are all there."""
    found: set[str] = real.wait_for(
        lambda: (lambda r: r if set(wanted) <= r else None)(
            {e["reason"] for e in real.events(namespace, name)}),
        f"Events {wanted} of {name}")
    return found


# --- runs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("folder", "name"), [("secrets-fx-ef", "seed-fx-ef"),
                                              ("secrets-ferris", "seed-ferris")])
def test_the_seeds_sealed_with_fxctl_and_run_with_fxctl(real: RealCluster, folder: str,
                                                        name: str) -> None:
    source = REPO / "examples" / folder
    spec = yaml.safe_load((source / "package.yaml").read_text()) \
        if (source / "package.yaml").exists() else {}
    real.apply(package("team-b", name, {"test_secrets.py": (source / "test_secrets.py")
                                        .read_text()}, **({"compat": spec["compat"]}
                                                          if "compat" in spec else {})))
    sealed = real.fxctl("seal", str(source / "secrets.json"), "-n", "team-b", "--package", name)
    assert sealed.returncode == 0, sealed.stderr
    assert "supersecretpas$" not in sealed.stdout
    real.apply(sealed.stdout)
    real.ready("packages", "team-b", name)
    real.ready("scopedsecrets", "team-b", yaml.safe_load(sealed.stdout)["metadata"]["name"])
    ran = real.fxctl("run", name, "-n", "team-b")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "DB NAME: ***" in ran.stdout and "DB PASS: ***" in ran.stdout
    assert f"PACKAGE NAME: {name}" in ran.stdout
    assert "supersecretpas$" not in ran.stdout + ran.stderr


def test_three_scopes_and_precedence(real: RealCluster) -> None:
    real.apply(package("team-a", "scopes", {"main.py": SCOPES_SCRIPT}))
    real.seal("team-a", "scopes-secrets", package_secrets(CANARIES["package"]), "package",
              package="scopes")
    real.ready("packages", "team-a", "scopes")
    stored = real.ready("scopedsecrets", "team-a", "scopes-secrets")
    assert {s["name"] for s in stored["status"]["secrets"]} == {"CANARY_PACKAGE", "SHARED"}
    status = run(real, "team-a", "scopes-1", "scopes")["status"]
    assert status["phase"] == "Succeeded", status
    tail = status["result"]["outputTail"]
    assert "canary: ***" in tail
    assert json.loads(tail.splitlines()[1]) == SCOPES_SEEN
    assert "shared is package" in tail
    manifest = status["manifest"]
    assert (manifest["SHARED"]["scope"], manifest["CANARY_PROJECT"]["scope"],
            manifest["ONLY_PLATFORM"]["scope"]) == ("package", "project", "platform")
    assert [s["name"] for s in status["steps"]] == ["Admitted", "SecretsDelivered", "Script"]
    assert {"JobCreated", "SecretsDelivered", "Completed"} <= reasons(
        real, "team-a", "scopes-1", "Completed")
    # The Job controller made the pod; the node agent ran it as the Job said.
    (pod,) = real.core.list_namespaced_pod(
        "team-a", label_selector="fx.dev/execution=scopes-1").items
    assert pod.spec.node_name == real.agent.node
    assert pod.status.phase == "Succeeded"
    assert pod.metadata.owner_references[0].kind == "Job"


def test_a_failing_script_fails_the_execution_and_fxctl_exits_with_its_code(
        real: RealCluster) -> None:
    real.apply(package("team-a", "crasher", {"main.py": "import sys\nprint('bye')\nsys.exit(3)\n"}))
    real.ready("packages", "team-a", "crasher")
    ran = real.fxctl("run", "crasher", "-n", "team-a")
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "bye" in ran.stdout
    (failed,) = [e for e in real.custom.list_namespaced_custom_object(
        "fx.dev", "v1alpha1", "team-a", "executions")["items"]
        if e["spec"]["package"] == "crasher"]
    assert failed["status"]["phase"] == "Failed" and failed["status"]["exitCode"] == 3
    assert "ScriptFailed" in reasons(real, "team-a", failed["metadata"]["name"], "ScriptFailed")


def test_one_job_and_success_across_an_operator_killed_mid_run(real: RealCluster) -> None:
    real.apply(package("team-a", "slow", {"main.py": "import time\ntime.sleep(6)\n"
                                                     "print('done')\n"}))
    real.ready("packages", "team-a", "slow")
    real.apply(execution("team-a", "slow-1", "slow"))
    real.wait_for(lambda: (real.get("executions", "team-a", "slow-1").get("status") or {})
                  .get("phase") == "Running", "the run to start")
    real.stop_operator(kill=True)
    time.sleep(1)
    real.start_operator()
    status = real.finished("team-a", "slow-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert "done" in status["result"]["outputTail"]
    jobs = real.batch.list_namespaced_job("team-a", label_selector="fx.dev/execution=slow-1")
    assert [j.metadata.name for j in jobs.items] == [job_name("slow-1")]
    pods = real.core.list_namespaced_pod("team-a", label_selector="fx.dev/execution=slow-1")
    assert len(pods.items) == 1


def test_deleting_an_execution_mid_run_stops_its_pod_and_closes_its_run(
        real: RealCluster) -> None:
    real.apply(package("team-a", "long", {"main.py": "import time\ntime.sleep(120)\n"}))
    real.ready("packages", "team-a", "long")
    real.apply(execution("team-a", "long-1", "long"))
    running = real.wait_for(lambda: (lambda b: b if (b.get("status") or {}).get("phase") ==
                                     "Running" else None)(
        real.get("executions", "team-a", "long-1")), "the run to start")
    run_id = running["status"]["runId"]
    started = time.monotonic()
    real.kubectl("delete", "execution", "long-1", "-n", "team-a", "--wait=false")

    def gone() -> bool:
        jobs = real.batch.list_namespaced_job("team-a", label_selector="fx.dev/execution=long-1")
        pods = real.core.list_namespaced_pod("team-a", label_selector="fx.dev/execution=long-1")
        return not jobs.items and not pods.items
    real.wait_for(gone, "the garbage collector to delete the Job and its pod", timeout=90)
    assert time.monotonic() - started < 60, "the script was not stopped: it ran its 120 s"

    real.wait_for(lambda: run_closed(real.operator_env["FX_DATABASE_URL"], run_id),
                  "the run to close and its key to be erased")


# --- the broker ----------------------------------------------------------------------------------

def delivered_step(execution: dict[str, Any]) -> bool:
    """The broker has handed the run's key to its pod (its executor asked for it)."""
    steps = (execution.get("status") or {}).get("steps") or []
    return any(s["name"] == "SecretsDelivered" and s["phase"] == "Succeeded" for s in steps)


def _ask_for_key(real: RealCluster, run_id: str, token: str) -> str:
    """The executor's own request for a run key with ``token``; the refusal's message."""
    ca = real.core.read_namespaced_config_map("fx-broker-ca", "team-a").data["ca.crt"]
    folder = real.folder / "broker-client"
    folder.mkdir(exist_ok=True)
    (folder / "ca.crt").write_text(ca)
    (folder / "token").write_text(token)
    with pytest.raises(InitError) as refused:
        key_from_broker(real.operator_env["FX_BROKER_URL"], run_id, folder / "token",
                        folder / "ca.crt")
    return str(refused.value)


def _token(real: RealCluster, namespace: str, pod: client.V1Pod, audience: str) -> str:
    request = real.core.create_namespaced_service_account_token(
        pod.spec.service_account_name or "default", namespace, {"spec": {
            "audiences": [audience], "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                               "uid": pod.metadata.uid}}})
    return str(request.status.token)


def _pod_of(real: RealCluster, namespace: str, execution_name: str) -> client.V1Pod:
    pods: list[client.V1Pod] = real.wait_for(lambda: real.core.list_namespaced_pod(
        namespace, label_selector=f"fx.dev/execution={execution_name}").items,
        f"the pod of {execution_name}")
    return pods[0]


def test_the_broker_gives_a_key_once_and_only_to_the_runs_own_pod(real: RealCluster) -> None:
    audience = real.operator_env["FX_BROKER_AUDIENCE"]
    for namespace, name in (("team-a", "sleeper"), ("team-b", "sleeper")):
        real.apply(package(namespace, name, {"main.py": "import time\ntime.sleep(8)\n"}))
        real.ready("packages", namespace, name)
    real.apply(execution("team-b", "sleeper-b", "sleeper"))
    real.apply(execution("team-a", "sleeper-a2", "sleeper"))
    real.apply(execution("team-a", "sleeper-a", "sleeper"))
    running = real.wait_for(lambda: (lambda b: b if delivered_step(b) else None)(
        real.get("executions", "team-a", "sleeper-a")), "the run's key to be delivered")
    run_id = running["status"]["runId"]
    own = _pod_of(real, "team-a", "sleeper-a")
    (delivered,) = real.agent.tokens[own.metadata.uid]
    # A replay of the executor's request, with the pod's own token: the key went once.
    assert "(409)" in _ask_for_key(real, run_id, delivered)
    # A token of another namespace's pod, of another run's pod, for another audience; garbage.
    other_namespace = _pod_of(real, "team-b", "sleeper-b")
    assert "(403)" in _ask_for_key(real, run_id, _token(real, "team-b", other_namespace,
                                                         audience))
    other_run = _pod_of(real, "team-a", "sleeper-a2")
    assert "(403)" in _ask_for_key(real, run_id, _token(real, "team-a", other_run, audience))
    assert "(401)" in _ask_for_key(real, run_id, _token(real, "team-a", own, "not-the-broker"))
    assert "(401)" in _ask_for_key(real, run_id, "not-a-token")
    assert real.finished("team-a", "sleeper-a")["status"]["phase"] == "Succeeded"
    assert real.finished("team-b", "sleeper-b")["status"]["phase"] == "Succeeded"
    assert real.finished("team-a", "sleeper-a2")["status"]["phase"] == "Succeeded"
    assert "(4" in _ask_for_key(real, run_id, delivered)  # finished: refused for good


# --- retries -------------------------------------------------------------------------------------

#: Fails (exit 1) for its first two tries, counted in its Package's state, then succeeds.
FAILS_TWICE = ("import sys\n"
               "from fx_ef import context\n"
               "tries = int(context.state.get().get('tries', 0)) + 1\n"
               "context.state.put('tries', tries)\n"
               "print('try', tries)\n"
               "sys.exit(0 if tries >= 3 else 1)\n")


def test_a_script_failing_twice_then_succeeding_ends_succeeded_after_three_tries(
        real: RealCluster) -> None:
    """Three runs of one Execution on the real Job controller: three run ids, three Jobs, and
    each try's key refused when its pod asks again."""
    real.apply(package("team-a", "fails-twice", {"main.py": FAILS_TWICE},
                       retries={"limit": 3, "backoffSeconds": 1}))
    real.ready("packages", "team-a", "fails-twice")
    real.apply(execution("team-a", "fails-twice-1", "fails-twice"))
    done = real.finished("team-a", "fails-twice-1")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert "try 3" in status["result"]["outputTail"]
    tries = status["tries"]
    assert [(t["try"], t["phase"], t.get("exitCode")) for t in tries] == [
        (1, "Failed", 1), (2, "Failed", 1), (3, "Succeeded", 0)]
    uid = done["metadata"]["uid"]
    assert [t["runId"] for t in tries] == [f"run-{uid}", f"run-{uid}-2", f"run-{uid}-3"]
    jobs = real.batch.list_namespaced_job("team-a", label_selector="fx.dev/execution="
                                          "fails-twice-1").items
    assert sorted(j.metadata.name for j in jobs) == sorted(job_name("fails-twice-1", n)
                                                           for n in (1, 2, 3))
    for entry in tries:
        (pod,) = real.core.list_namespaced_pod(
            "team-a", label_selector=f"fx.dev/run-id={entry['runId']}").items
        (delivered,) = real.agent.tokens[pod.metadata.uid]
        assert "(4" in _ask_for_key(real, entry["runId"], delivered)  # a key goes once
        assert run_closed(real.operator_env["FX_DATABASE_URL"], entry["runId"])


# --- bad manifests -------------------------------------------------------------------------------

@pytest.mark.parametrize(("manifest", "message"), [
    (package("team-a", "bad-secrets-json", {"secrets.json": "{}", "main.py": "pass"}),
     "secrets.json"),
    (package("team-a", "bad-entrypoint", {"main.py": "pass"}, entrypoint="other.py"),
     "entrypoint"),
    ({"apiVersion": "fx.dev/v1alpha1", "kind": "Package",
      "metadata": {"name": "bad-scripts", "namespace": "team-a"},
      "spec": {"scripts": "not-a-list"}}, "spec.scripts"),
    ({"apiVersion": "fx.dev/v1alpha1", "kind": "ScopedSecret",
      "metadata": {"name": "bad-scope", "namespace": "team-a"},
      "spec": {"scope": "package", "encryptedData": {}}}, "package"),
    ({"apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
      "metadata": {"name": "bad-execution", "namespace": "team-a"}, "spec": {}},
     "spec.package"),
    (execution("team-a", "bad-retries", "any", retries={"limit": 11}), "spec.retries.limit"),
    (package("team-a", "bad-backoff", {"main.py": "pass"}, retries={"backoffSeconds": -1}),
     "spec.retries.backoffSeconds"),
])
def test_the_api_server_refuses_what_the_schemas_forbid(real: RealCluster,
                                                         manifest: dict[str, Any],
                                                         message: str) -> None:
    refused = real.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert refused.returncode != 0
    assert "is invalid" in refused.stderr or "Invalid value" in refused.stderr, refused.stderr
    assert message in refused.stderr, refused.stderr


def test_an_execution_is_immutable(real: RealCluster) -> None:
    real.apply(package("team-a", "immutable", {"main.py": "print('x')\n"}))
    real.ready("packages", "team-a", "immutable")
    real.apply(execution("team-a", "immutable-1", "immutable"))
    changed = real.kubectl("apply", "-f", "-", check=False, input=yaml.safe_dump(
        execution("team-a", "immutable-1", "immutable", params={"x": 1})))
    assert changed.returncode != 0 and "immutable" in changed.stderr.lower(), changed.stderr
    real.finished("team-a", "immutable-1")


def test_an_execution_of_a_missing_package_fails_with_a_condition_and_an_event(
        real: RealCluster) -> None:
    """Admission reads the Package with `get` when its watch has not got it: the chart's RBAC
    must allow it (it did not; the emulator did not check)."""
    real.apply(execution("team-a", "orphan-1", "does-not-exist"))
    status = real.finished("team-a", "orphan-1", timeout=60)["status"]
    assert status["phase"] == "Failed"
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert "does-not-exist" in ready["message"]
    assert reasons(real, "team-a", "orphan-1") != set()
    ran = real.fxctl("run", "does-not-exist", "-n", "team-a", timeout=120)
    assert ran.returncode != 0
    assert "does-not-exist" in ran.stdout + ran.stderr


def test_a_required_name_missing_fails_at_admission_without_a_job(real: RealCluster) -> None:
    """Least privilege on the real server: a declared, required name set nowhere fails the
    Execution at admission (condition and Event naming it), and no Job or run Secret is made."""
    real.apply(package("team-a", "needy", {"main.py": "print('never runs')\n"},
                       secrets={"names": [{"name": "NEVER_SET_ANYWHERE"}]}))
    real.ready("packages", "team-a", "needy")
    status = run(real, "team-a", "needy-1", "needy")["status"]
    assert status["phase"] == "Failed", status
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "SecretMissing")
    assert "NEVER_SET_ANYWHERE" in ready["message"]
    assert "SecretMissing" in reasons(real, "team-a", "needy-1", "SecretMissing")
    jobs = {j.metadata.name for j in real.batch.list_namespaced_job("team-a").items}
    assert job_name("needy-1") not in jobs
    assert "runId" not in status


def test_a_package_holding_a_stored_value_is_refused_with_a_condition(
        real: RealCluster) -> None:
    real.apply(package("team-a", "leaky", {
        "main.py": f"PASSWORD = {'shared-project-value'!r}\nprint('x')\n"}))
    refused = real.ready("packages", "team-a", "leaky")
    (ready,) = [c for c in refused["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "False"
    assert "shared-project-value" not in json.dumps(refused["status"])
    assert reasons(real, "team-a", "leaky") != set()
    # The operator kept serving: the next package and its run still work.
    real.apply(package("team-a", "not-leaky", {"main.py": "print('fine')\n"}))
    real.ready("packages", "team-a", "not-leaky")
    assert run(real, "team-a", "after-leaky", "not-leaky")["status"]["phase"] == "Succeeded"


def test_platform_scope_outside_the_platform_namespace_is_refused(real: RealCluster) -> None:
    real.seal("team-a", "not-platform", {"X": "platform-elsewhere-value"}, "platform")
    refused = real.ready("scopedsecrets", "team-a", "not-platform")
    (ready,) = [c for c in refused["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "False"
    assert SYSTEM in ready["message"]


# --- one tenant must not stop the operator ------------------------------------------------------

def _nested_json(levels: int) -> str:
    """A JSON object ``levels`` deep, written as text: this process never decodes it."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def _jsonpath(real: RealCluster, kind: str, namespace: str, name: str, path: str) -> str:
    return real.kubectl("get", kind, name, "-n", namespace, "-o", f"jsonpath={path}").stdout


@pytest.mark.parametrize("levels", [1_000, 9_990])
def test_objects_nested_thousands_of_levels_deep_are_refused_and_the_rest_is_served(
        real: RealCluster, levels: int) -> None:
    """The API server stores JSON up to 10,000 levels deep; Python's decoder stopped at 1,000,
    and with it the operator's watch of every namespace (the objects are written as text here,
    and read back with kubectl's jsonpath, because this process could not decode them either)."""
    namespace = f"deep-{levels}"
    real.create_namespace(namespace)
    deep = _nested_json(levels)
    real.kubectl("create", "-f", "-", input=(
        '{"apiVersion": "fx.dev/v1alpha1", "kind": "Package", "metadata": {"name": "deep-config",'
        f' "namespace": "{namespace}"}}, "spec": {{"scripts": [{{"name": "main.py", "content":'
        f' "print(1)"}}], "config": {deep}}}}}'))
    real.apply(package(namespace, "plain", {"main.py": "print('served')\n"}))
    real.ready("packages", namespace, "plain")
    real.kubectl("create", "-f", "-", input=(
        '{"apiVersion": "fx.dev/v1alpha1", "kind": "Execution", "metadata": {"name": "deep-params",'
        f' "namespace": "{namespace}"}}, "spec": {{"package": "plain", "params": {deep}}}}}'))
    expected = f"is nested {levels} levels deep; at most 32 are allowed"
    refused = real.wait_for(lambda: (lambda m: m if expected in m else None)(_jsonpath(
        real, "execution", namespace, "deep-params",
        "{.status.phase}: {.status.conditions[?(@.type=='Ready')].message}")),
        "the deep Execution's condition")
    assert refused == f"Failed: spec.params {expected}"
    not_ready = real.wait_for(lambda: (lambda m: m if expected in m else None)(_jsonpath(
        real, "package", namespace, "deep-config",
        "{.status.conditions[?(@.type=='Ready')].status}: "
        "{.status.conditions[?(@.type=='Ready')].message}")), "the deep Package's condition")
    assert not_ready.startswith("False: ") and f"spec.config: {expected}" in not_ready
    assert real.operator is not None and real.operator.poll() is None
    assert run(real, namespace, "after-deep", "plain")["status"]["phase"] == "Succeeded"


def test_a_status_lost_between_the_job_and_its_write_is_rebuilt_after_a_restart(
        real: RealCluster) -> None:
    """The operator's status writes refused by its RBAC (as if it had stopped right after the
    Job), then the operator killed, the rule given back and the operator started again."""
    real.create_namespace("lost")
    real.apply(package("lost", "lost", {"main.py": "print('ran once')\n"}))
    real.ready("packages", "lost", "lost")
    original = json.loads(real.kubectl("get", "clusterrole", "fx-operator", "-o", "json").stdout)
    narrowed = json.loads(json.dumps(original))
    for rule in narrowed["rules"]:
        rule["resources"] = [r for r in rule["resources"] if r != "executions/status"]
    real.kubectl("replace", "-f", "-", input=json.dumps(narrowed))
    real.expected_refusals.add("patch fx.dev/executions/status lost/lost-1")
    try:
        real.apply(execution("lost", "lost-1", "lost"))
        real.wait_for(lambda: real.batch.list_namespaced_job(
            "lost", label_selector="fx.dev/execution=lost-1").items, "the run's Job")
        real.wait_for(lambda: "patch fx.dev/executions/status lost/lost-1" in
                      real.plane.refused(real.operator_user), "the refused status write")
        real.stop_operator(kill=True)
    finally:
        for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            original["metadata"].pop(field, None)
        real.kubectl("replace", "-f", "-", input=json.dumps(original))
    assert "runId" not in (real.get("executions", "lost", "lost-1").get("status") or {})
    real.start_operator()
    status = real.finished("lost", "lost-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert "ran once" in status["result"]["outputTail"]
    assert "found after a restart" in status["steps"][0]["message"]
    jobs = real.batch.list_namespaced_job("lost", label_selector="fx.dev/execution=lost-1")
    assert [j.metadata.name for j in jobs.items] == [job_name("lost-1")]


def test_objects_larger_than_the_annotations_limit_are_handled(real: RealCluster) -> None:
    """A real API server caps an object's annotations at 256 KiB in all: kopf's record of the
    last handled spec must not copy a large spec there, or the status patch that carries it is
    refused and the object never gets its condition. (Applied server-side: kubectl's client-side
    apply keeps a copy of the whole object in an annotation of its own, refused the same way.)"""
    real.create_namespace("large")
    padding = "# padding\n" * 15_000  # 150 KB a script (a script may have 256 KiB)
    real.apply(package("large", "large", {"main.py": padding + "print('large package ran')\n",
                                          "more.py": padding}, entrypoint="main.py"),
               server_side=True)
    assert real.ready("packages", "large", "large")["status"]["conditions"][0]["status"] == "True"
    values = {f"BIG_{i}": "v" * 60_000 for i in range(6)}  # 64 KiB a value: 480 KB sealed
    real.seal("large", "large-secrets", values, "package", package="large", server_side=True)
    stored = real.ready("scopedsecrets", "large", "large-secrets")
    assert {s["name"] for s in stored["status"]["secrets"]} == set(values)
    ran = run(real, "large", "large-1", "large")["status"]
    assert ran["phase"] == "Succeeded", ran
    assert "large package ran" in ran["result"]["outputTail"]


def test_deleting_a_finished_execution_removes_its_job_and_pod(real: RealCluster) -> None:
    real.create_namespace("finished")
    real.apply(package("finished", "quick", {"main.py": "print('done')\n"}))
    real.ready("packages", "finished", "quick")
    assert run(real, "finished", "quick-1", "quick")["status"]["phase"] == "Succeeded"
    real.kubectl("delete", "execution", "quick-1", "-n", "finished", "--wait=false")

    def gone() -> bool:
        selector = "fx.dev/execution=quick-1"
        return not real.batch.list_namespaced_job("finished", label_selector=selector).items \
            and not real.core.list_namespaced_pod("finished", label_selector=selector).items
    real.wait_for(gone, "the garbage collector to delete the finished Job and its pod",
                  timeout=90)


# --- schedules -----------------------------------------------------------------------------------

def test_a_schedule_runs_on_the_minute_and_its_executions_go_with_it(real: RealCluster) -> None:
    """The real clock (at most a minute's wait), the real API server's owner references and
    the controller-manager's garbage collector: deleting the Schedule deletes its Executions."""
    real.apply(package("team-b", "sched", {"main.py": "print('scheduled run')\n"}))
    real.ready("packages", "team-b", "sched")
    made = real.fxctl("schedule", "create", "every", "-n", "team-b", "--package", "sched",
                      "--cron", "* * * * *", "--concurrency", "Forbid", "--keep-succeeded", "5")
    assert made.returncode == 0, made.stderr
    triggered = real.fxctl("schedule", "trigger", "every", "-n", "team-b")
    assert triggered.returncode == 0, triggered.stderr
    manual = triggered.stdout.split()[1].split("/")[1]
    assert real.finished("team-b", manual)["status"]["phase"] == "Succeeded"

    def scheduled() -> list[str]:
        listed = real.kubectl("-n", "team-b", "get", "executions", "-l", "fx.dev/schedule=every",
                              "-o", "json")
        return [e["metadata"]["name"] for e in json.loads(listed.stdout)["items"]
                if "-manual-" not in e["metadata"]["name"]]

    first = real.wait_for(lambda: scheduled() or None, "the next minute's Execution", timeout=100)
    status = real.finished("team-b", first[0])["status"]
    assert status["phase"] == "Succeeded" and "scheduled run" in status["result"]["outputTail"]
    assert "ExecutionCreated" in reasons(real, "team-b", "every", "ExecutionCreated")
    schedule = real.get("schedules", "team-b", "every")
    assert schedule["status"]["lastExecution"] in first

    real.kubectl("-n", "team-b", "delete", "schedule", "every", "--wait=true")

    def all_gone() -> bool:
        names = real.kubectl("-n", "team-b", "get", "executions", "-o", "name").stdout
        return not scheduled() and manual not in names

    real.wait_for(all_gone, "the garbage collector to delete the Schedule's Executions")
