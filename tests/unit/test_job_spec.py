"""The run's Job: restricted, deterministic, ciphertext only; conditions; package checks; CRDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fx_operator.domain import api_group, job_spec
from fx_operator.domain.conditions import Reason, with_condition
from fx_operator.domain.execution_status import delivered, progress
from fx_operator.domain.package_definition import package_definition
from fx_operator.exceptions import Problem, ValidationError

from fx_ef import contract

CRDS = Path(__file__).resolve().parents[2] / "crds"
SETTINGS = job_spec.RunPodSettings(runtime_image="runtime:1", broker_url="https://broker:8443",
                                   broker_audience="fx-broker", broker_ca_configmap="fx-ca")
PLAN = job_spec.RunPlan(namespace="team-a", execution="nightly", execution_uid="uid-1",
                        package="etl", run_id="run-uid-1", entrypoint="main.py",
                        script_names=("main.py", "lib.py"), timeout_seconds=600)


def test_job_is_restricted_and_gets_no_default_token() -> None:
    job = job_spec.run_job(PLAN, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "initContainers" not in pod  # the executor delivers: one container, one start
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert pod["restartPolicy"] == "Never"


def test_the_pod_holds_ciphertext_only_and_the_executor_delivers() -> None:
    """No volume holds a plaintext bundle (the executor keeps it in a sealed memory file): the
    sealed bundle (ciphertext, 0400), the audience-bound token and the broker's CA, read-only."""
    pod = job_spec.run_job(PLAN, SETTINGS)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"package", "sealed", "tmp", "token", "broker-ca"}
    assert volumes["sealed"]["secret"]["defaultMode"] == 0o400
    token = volumes["token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "fx-broker" and token["expirationSeconds"] <= 3600
    (script,) = pod["containers"]
    mounts = {m["name"]: m for m in script["volumeMounts"]}
    assert all(mounts[name]["readOnly"] for name in ("package", "sealed", "token", "broker-ca"))
    assert script["command"][:3] == ["python", "-m", "fx_ef.executor"]
    assert contract.FLAG_SEALED in script["command"] and contract.FLAG_BUNDLE not in \
        script["command"]
    assert volumes["package"]["configMap"]["items"] == [
        {"key": "main.py", "path": "main.py"}, {"key": "lib.py", "path": "lib.py"}]


def test_names_are_deterministic_and_bounded() -> None:
    assert job_spec.job_name("nightly") == "fx-run-nightly"
    long = "x" * 70
    assert job_spec.job_name(long) == job_spec.job_name(long)
    assert len(job_spec.job_name(long)) <= 63
    assert job_spec.job_name(long) != job_spec.job_name(long + "y")


def test_sealed_secret_holds_only_what_it_is_given_and_is_owned() -> None:
    secret = job_spec.sealed_bundle_secret(PLAN, "c2VhbGVk")
    assert secret["data"] == {job_spec.SEALED_BUNDLE_KEY: "c2VhbGVk"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    job = job_spec.run_job(PLAN, SETTINGS)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Execution"
    assert job["metadata"]["labels"][api_group.LABEL_RUN] == "run-uid-1"


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    first = with_condition(None, type_="Ready", ok=True, reason=Reason.STORED, message="a",
                           generation=1, now="2026-01-01T00:00:00Z")
    same = with_condition(first, type_="Ready", ok=True, reason=Reason.STORED, message="b",
                          generation=2, now="2026-02-02T00:00:00Z")
    flipped = with_condition(same, type_="Ready", ok=False, reason=Reason.INVALID_SECRET,
                             message="c", generation=3, now="2026-03-03T00:00:00Z")
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-03-03T00:00:00Z"
    assert flipped[0]["status"] == "False"


@pytest.mark.parametrize(("spec", "where"), [
    ({"scripts": []}, "spec.scripts"),
    ({"scripts": [{"name": "a.py", "content": "1"}], "entrypoint": "b.py"}, "spec.entrypoint"),
    ({"scripts": [{"name": "a.py", "content": "1"}, {"name": "b.py", "content": "2"}]},
     "spec.entrypoint"),
    ({"scripts": [{"name": "secrets.json", "content": "{}"}, {"name": "a.py", "content": ""}]},
     "secrets.json"),
    ({"scripts": [{"name": "../a.py", "content": "1"}]}, "plain file name"),
    ({"scripts": [{"name": "a.py", "content": "1"}], "compat": "python2"}, "spec.compat"),
    ({"scripts": [{"name": "a.py", "content": "1"}], "timeoutSeconds": 0},
     "spec.timeoutSeconds"),
])
def test_package_definition_names_the_field(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match="Package p") as caught:
        package_definition("p", spec)
    assert where in str(caught.value)


def test_package_definition_refuses_a_script_name_twice() -> None:
    """An API server refuses it first (spec.scripts is a list-type map keyed by name: 422
    Duplicate value, see test_operator_bad_manifests); the check stays for what gets through."""
    with pytest.raises(ValidationError, match="Package p") as caught:
        package_definition("p", {"scripts": [{"name": "main.py", "content": "1"},
                                             {"name": "data.txt", "content": "x"},
                                             {"name": "main.py", "content": "2"}]})

    assert caught.value.problems == [Problem("spec.scripts[2].name", "'main.py' appears twice")]


def test_package_definition_defaults_the_entrypoint() -> None:
    package = package_definition("p", {"scripts": [{"name": "a.py", "content": "1"},
                                                   {"name": "data.txt", "content": "x"}]})
    assert package.entrypoint == "a.py"


def _execution(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "e", "generation": 1},
            "status": {"runId": "run-1", "phase": "Pending", "steps": [
                {"name": "Admitted", "phase": "Succeeded"},
                {"name": "SecretsDelivered", "phase": "Pending"},
                {"name": "Script", "phase": "Pending"}], **status}}


def test_progress_follows_a_one_container_pod() -> None:
    """The executor delivers: the broker's word records it (``delivered``); the executor's end
    says it too, and a delivery that failed is the executor's own result."""
    running = progress(_execution(), {"status": {
        "containerStatuses": [{"state": {"running": {"startedAt": "t1"}}}]}})
    assert running is not None and running.status["phase"] == "Running"
    assert {e.reason for e in running.events} == {Reason.RUNNING}
    told = delivered(_execution(phase="Running"), "run-1", "t2")
    assert told is not None and [e.reason for e in told.events] == [Reason.SECRETS_DELIVERED]
    steps = {s["name"]: s for s in told.status["steps"]}
    assert steps["SecretsDelivered"]["phase"] == "Succeeded"
    assert delivered(_execution(phase="Running", steps=told.status["steps"]), "run-1",
                     "t3") is None  # said once
    assert delivered(_execution(), "run-0", "t2") is None  # another run's key
    result = json.dumps({"output_tail": "hi\n", "output_truncated": False})
    done = progress(_execution(phase="Running"), {"status": {
        "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": result,
                                                        "startedAt": "t1"}}}]}})
    assert done is not None and done.status["phase"] == "Failed"
    steps = {s["name"]: s for s in done.status["steps"]}
    assert steps["SecretsDelivered"]["phase"] == "Succeeded"  # the script ran: it had them
    assert done.events[-1].reason == Reason.SCRIPT_FAILED
    undelivered = json.dumps({"delivery_error": "the broker refused the run key (409)"})
    failed = progress(_execution(), {"status": {
        "containerStatuses": [{"state": {"terminated": {"exitCode": 4,
                                                        "message": undelivered}}}]}})
    assert failed is not None and failed.status["phase"] == "Failed"
    assert failed.events[0].reason == Reason.DELIVERY_FAILED
    assert "refused the run key (409)" in failed.events[0].message


def test_progress_follows_the_pod_of_an_earlier_operator() -> None:
    """A Job made before the executor delivered (an init container) still ends right."""
    delivered = {"initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
                 "containerStatuses": [{"state": {"running": {"startedAt": "t1"}}}]}
    running = progress(_execution(), {"status": delivered})
    assert running is not None and running.status["phase"] == "Running"
    assert {e.reason for e in running.events} == {Reason.SECRETS_DELIVERED, Reason.RUNNING}
    result = json.dumps({"output_tail": "hello ***\n", "output_truncated": False})
    done = progress(_execution(phase="Running"), {"status": {
        "initContainerStatuses": delivered["initContainerStatuses"],
        "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": result}}}]}})
    assert done is not None and done.status["phase"] == "Succeeded"
    assert done.status["result"] == {"outputTail": "hello ***\n", "truncated": False}
    failed = progress(_execution(), {"status": {
        "initContainerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}})
    assert failed is not None and failed.status["phase"] == "Failed"
    assert failed.events[0].reason == Reason.DELIVERY_FAILED


def _properties(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, sub in (schema.get("properties") or {}).items():
        found.append((f"{path}.{name}", sub))
        found += _properties(sub, f"{path}.{name}")
        if isinstance(sub.get("items"), dict):
            found += _properties(sub["items"], f"{path}.{name}[]")
        if isinstance(sub.get("additionalProperties"), dict):
            found += _properties(sub["additionalProperties"], f"{path}.{name}{{}}")
    return found


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.stem)
def test_crds_describe_every_field(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["group"] == "fx.dev" and crd["spec"]["scope"] == "Namespaced"
    assert "fx" in crd["spec"]["names"]["categories"] and crd["spec"]["names"]["shortNames"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert version["additionalPrinterColumns"]
    assert not any("kopf" in c["jsonPath"] for c in version["additionalPrinterColumns"])
    schema = version["schema"]["openAPIV3Schema"]
    # The root metadata is ObjectMeta: a real API server refuses a CRD whose schema says anything
    # there but `type: object`, a description included (tests/deploy/test_crds.py).
    assert schema["properties"]["metadata"] == {"type": "object"}
    missing = [p for p, sub in _properties(schema, "")
               if not sub.get("description") and not p.startswith(".metadata")]
    assert missing == []
