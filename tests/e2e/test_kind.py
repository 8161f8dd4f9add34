"""The product on a real cluster (kind): the images, the Helm chart, and a user's day with them.

The two seed scripts (``examples/secrets-fx-ef``, ``examples/secrets-ferris``) become Packages;
their ``secrets.json``, plus a random canary value, is sealed on this machine with ``fxctl seal``
and the operator's public key read from the cluster; ``fxctl run PACKAGE -n NS --follow`` runs them.
Then the canary is looked for in every object of the cluster, every pod's log (the operator's and
its PostgreSQL sidecar's included) and a dump of the store: it must be nowhere (P1, P2, P6).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fx_operator.domain.sealing import PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_FIELD
from support.kind import PLATFORM_NAMESPACE, RELEASE, E2ESettings, Kube
from support.processes import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

SEEDS = ("secrets-fx-ef", "secrets-ferris")
SEED_SECRET_NAMES = ("DB_NAME", "DB_PASS")
OBJECT_KINDS = ("all,events,configmaps,secrets,serviceaccounts,roles,rolebindings,"
                "executions.fx.dev,packages.fx.dev,schedules.fx.dev,scopedsecrets.fx.dev")


@dataclass(frozen=True)
class SeedRun:
    package: str
    code: int
    output: str
    stderr: str
    execution: dict[str, Any]


def package_manifest(folder: Path, namespace: str) -> dict[str, Any]:
    """A Package from a package folder: its scripts inline, ``package.yaml``'s settings; never its
    ``secrets.json``."""
    settings = yaml.safe_load((folder / "package.yaml").read_text()) \
        if (folder / "package.yaml").exists() else {}
    scripts = [p for p in sorted(folder.iterdir())
               if p.is_file() and p.name not in ("secrets.json", "package.yaml")]
    spec: dict[str, Any] = {"scripts": [{"name": p.name, "content": p.read_text()}
                                        for p in scripts]}
    for key, field in (("entrypoint", "entrypoint"), ("params", "params"), ("config", "config"),
                       ("compat", "compat"), ("timeout", "timeoutSeconds")):
        if (settings or {}).get(key) is not None:
            spec[field] = settings[key]
    return {"apiVersion": "fx.dev/v1alpha1", "kind": "Package",
            "metadata": {"name": folder.name, "namespace": namespace}, "spec": spec}


def canary_forms(value: str) -> tuple[str, ...]:
    """The value and the encodings a leak would most likely take."""
    return (value, base64.b64encode(value.encode()).decode(), value[::-1],
            json.dumps(value)[1:-1])


@pytest.fixture(scope="module")
def canaries() -> dict[str, str]:
    return {"package": f"pkg-canary-{secrets.token_hex(12)}",
            "project": f"proj-canary-{secrets.token_hex(12)}"}


@pytest.fixture(scope="module")
def seed_runs(deployment: Kube, project_namespace: str, canaries: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, SeedRun]:
    """Both seeds published, given their secrets (sealed here) and run once each."""
    kube, namespace = deployment, project_namespace
    work = tmp_path_factory.mktemp("seeds")
    project_file = work / "project-secrets.json"
    project_file.write_text(json.dumps({"E2E_PROJECT_CANARY": canaries["project"]}))
    sealed = kube.fxctl("seal", str(project_file), "-n", namespace, "--scope", "project").stdout
    kube.apply(sealed)
    for seed in SEEDS:
        folder = REPO / "examples" / seed
        kube.apply(package_manifest(folder, namespace))
        values = json.loads((folder / "secrets.json").read_text())
        secrets_file = work / f"{seed}.json"
        secrets_file.write_text(json.dumps({**values, "E2E_CANARY": canaries["package"]}))
        sealed = kube.fxctl("seal", str(secrets_file), "-n", namespace, "--package", seed).stdout
        for value in canaries.values():
            for form in canary_forms(value):
                if form in sealed:
                    pytest.fail("fxctl seal wrote a canary into the sealed manifest")
        kube.apply(sealed)
    kube.ready("scopedsecret", namespace, "project-secrets")
    runs: dict[str, SeedRun] = {}
    for seed in SEEDS:
        kube.ready("package", namespace, seed)
        kube.ready("scopedsecret", namespace, f"{seed}-secrets")
        done = kube.fxctl("run", seed, "-n", namespace, "--follow", "--timeout", "300",
                          check=False, timeout=900)
        match = re.search(r"execution \S+/(\S+) created", done.stderr)
        assert match, f"fxctl run printed no execution name: {done.stderr[-2000:]}"
        execution = kube.get_json("execution", match.group(1), "-n", namespace)
        runs[seed] = SeedRun(seed, done.returncode, done.stdout, done.stderr, execution)
    return runs


def test_the_operator_runs_as_installed(deployment: Kube, images: E2ESettings) -> None:
    operator = deployment.get_json("deployment", RELEASE, "-n", PLATFORM_NAMESPACE)
    containers = {c["name"]: c for c in operator["spec"]["template"]["spec"]["containers"]}
    assert containers["operator"]["image"] == images.operator_image
    assert (operator.get("status") or {}).get("availableReplicas", 0) >= 1
    uid = deployment.kubectl("exec", "-n", PLATFORM_NAMESPACE, f"deployment/{RELEASE}", "-c",
                             "operator", "--", "id", "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0, f"the operator runs as uid {uid}"
    key = deployment.get_json("configmap", PUBLIC_KEY_CONFIGMAP, "-n", PLATFORM_NAMESPACE)
    assert key["data"][PUBLIC_KEY_FIELD].startswith("fxseal")


@pytest.mark.parametrize("seed", SEEDS)
def test_a_seed_script_runs_with_its_secrets_masked(seed_runs: dict[str, SeedRun],
                                                    seed: str) -> None:
    run = seed_runs[seed]
    assert run.code == 0, f"fxctl run exited {run.code}: {run.stderr[-2000:]}"
    assert "DB NAME: ***" in run.output and "DB PASS: ***" in run.output, run.output
    assert f"PACKAGE NAME: {seed}" in run.output
    assert "supersecretpas$" not in run.output and "test_db" not in run.output
    status = run.execution["status"]
    assert status["phase"] == "Succeeded" and status["exitCode"] == 0, status.get("conditions")
    assert {name: status["manifest"][name]["scope"] for name in SEED_SECRET_NAMES} == \
        {"DB_NAME": "package", "DB_PASS": "package"}
    assert status["manifest"]["E2E_PROJECT_CANARY"]["scope"] == "project"
    if seed == "secrets-ferris":  # argv carries every secret, masked when printed
        assert "E2E_CANARY -> ***" in run.output


def test_run_pods_use_the_runtime_image(seed_runs: dict[str, SeedRun], deployment: Kube,
                                        project_namespace: str, images: E2ESettings) -> None:
    for run in seed_runs.values():
        job = deployment.get_json("job", run.execution["status"]["jobName"], "-n",
                                  project_namespace)
        pod = job["spec"]["template"]["spec"]
        assert {c["image"] for c in pod["initContainers"] + pod["containers"]} == \
            {images.runtime_image}
        assert pod["automountServiceAccountToken"] is False


def _store_dump(kube: Kube) -> str:
    """A plain-SQL dump of the sidecar's database, as docs/operations.md takes a backup."""
    return kube.kubectl(
        "exec", "-n", PLATFORM_NAMESPACE, f"deployment/{RELEASE}", "-c", "postgres", "--",
        "pg_dump", "-h", "/var/run/postgresql", "-U", "fx", "-d", "fx", timeout=300).stdout


def test_the_canary_is_in_no_object_log_or_dump(seed_runs: dict[str, SeedRun], deployment: Kube,
                                                project_namespace: str,
                                                canaries: dict[str, str]) -> None:
    kube = deployment
    seen: dict[str, str] = {
        "an object of the cluster": kube.kubectl("get", OBJECT_KINDS, "-A", "-o", "json",
                                                 timeout=300).stdout}
    for run in seed_runs.values():
        seen[f"fxctl run's output ({run.package})"] = run.output + run.stderr
        seen[f"the Execution {run.package}"] = json.dumps(run.execution)
    for namespace in (PLATFORM_NAMESPACE, project_namespace):
        pods = kube.get_json("pods", "-n", namespace)["items"]
        for pod in pods:
            name = pod["metadata"]["name"]
            logs = kube.kubectl("logs", "-n", namespace, name, "--all-containers", "--prefix",
                                "--tail=-1", check=False, timeout=120)
            seen[f"the log of pod {namespace}/{name}"] = logs.stdout + logs.stderr
    dump = _store_dump(kube)
    assert "secret_versions" in dump and "E2E_CANARY" in dump  # a real dump: names, no values
    seen["the store's dump"] = dump
    assert any(run.package in text for text in seen.values())  # the sources hold real content
    for where, text in seen.items():
        for scope, value in canaries.items():
            for form in canary_forms(value):
                if form in text:  # never print the text: it holds the canary
                    pytest.fail(f"the {scope} canary leaked into {where}")
