"""The files derived from crds/ and the chart (deploy/generate.py) are up to date, and the
kustomize install (deploy/base, deploy/overlays/dev) renders offline into valid, restricted
objects."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from support.kube_emulator import KubeEmulator
from support.manifests import (
    CHART,
    REPO,
    JsonDict,
    find,
    identity,
    kustomize,
    load_objects,
    one,
    pod_specs,
    restricted_violations,
    validation_errors,
)

CRDS = REPO / "crds"
BASE = REPO / "deploy" / "base"
DEV = REPO / "deploy" / "overlays" / "dev"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fx_deploy_generate", REPO / "deploy" /
                                                  "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- CRDs: one source, copies that do not drift ---------------------------------------------------


def test_the_charts_crds_are_the_projects_plus_kopfs_peering() -> None:
    project = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert set(chart) == set(project) | {"kopf-peering.yaml"}
    drifted = [name for name, content in project.items() if chart[name] != content]
    assert drifted == [], f"charts/fx-operator/crds drifted from crds/: {drifted} " \
                          "(run: python deploy/generate.py)"


def test_the_kustomize_bases_crds_are_the_projects() -> None:
    project = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    base = {p.name: p.read_bytes() for p in (BASE / "crds").iterdir()}
    assert base == project, "deploy/base/crds drifted from crds/ (run: python deploy/generate.py)"


def test_the_peering_crds_are_valid_and_kopf_can_use_them() -> None:
    crds = load_objects((CHART / "crds" / "kopf-peering.yaml").read_text())
    assert validation_errors(crds) == []
    emulator = KubeEmulator()  # converts each schema, as the API server checks a CRD
    registered = emulator.load_crds(CHART / "crds" / "kopf-peering.yaml")
    assert {(r.group, r.version, r.plural) for r in registered} == {
        ("kopf.dev", "v1", "clusterkopfpeerings"), ("kopf.dev", "v1", "kopfpeerings")}
    # A keep-alive as kopf writes it (kopf/_core/engines/peering.py: Peer.as_dict) is kept.
    status = {"fx-operator-abc@host/1": {"priority": 7, "lifetime": 60,
                                          "lastseen": "2025-01-01T00:00:00+00:00"}}
    stored = emulator.create("kopf.dev/v1/clusterkopfpeerings",
                             {"metadata": {"name": "fx-operator"}, "status": status})
    assert stored["status"] == status


def test_the_generated_files_are_up_to_date(helm: str) -> None:
    generator = _generator()
    stale = [str(p.relative_to(REPO)) for p in generator.stale_files(helm)]
    assert stale == [], f"stale: {stale} (run: python deploy/generate.py)"


# --- kustomize ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(kubectl: str) -> list[JsonDict]:
    return kustomize(kubectl, BASE)


@pytest.fixture(scope="module")
def dev(kubectl: str) -> list[JsonDict]:
    return kustomize(kubectl, DEV)


def test_the_deploy_folder_renders_the_base(kubectl: str, base: list[JsonDict]) -> None:
    """`kubectl kustomize deploy/` (as the README shows) is the base install, object for object."""
    assert kustomize(kubectl, REPO / "deploy") == base


def test_the_base_and_the_overlay_are_valid(base: list[JsonDict], dev: list[JsonDict]) -> None:
    assert validation_errors(base) == []
    assert validation_errors(dev) == []


def test_their_pods_are_restricted(base: list[JsonDict], dev: list[JsonDict]) -> None:
    for objects in (base, dev):
        specs = pod_specs(objects)
        assert len(specs) == 1
        for where, pod in specs.items():
            assert restricted_violations(pod) == [], where
    namespace = one(base, "Namespace", "fx-system")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_base_commits_no_key_and_expects_the_documented_secret(
        base: list[JsonDict]) -> None:
    assert not find(base, "Secret")
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["master-key"]["secret"]["secretName"] == "fx-operator-master-key"
    documented = (BASE / "kustomization.yaml").read_text()
    assert "create secret generic fx-operator-master-key" in documented
    assert "--from-literal=master.key=" in documented


def test_the_base_is_the_charts_default_install(base: list[JsonDict]) -> None:
    kinds = sorted(o["kind"] for o in base)
    assert kinds == sorted(["Namespace", *["CustomResourceDefinition"] * 4, "ServiceAccount",
                            "ClusterRole",
                            "ClusterRoleBinding", "Service", "Service", "Deployment",
                            "PersistentVolumeClaim", "NetworkPolicy"])
    for obj in base:
        labels = obj["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", identity(obj)
        assert "helm.sh/chart" not in labels


def test_the_dev_overlay_runs_images_built_from_the_checkout(dev: list[JsonDict]) -> None:
    operator = one(dev, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert operator["image"] == "ghcr.io/fx-dev/fx-operator:dev"
    assert "--verbose" in operator["args"]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["FX_RUNTIME_IMAGE"] == "ghcr.io/fx-dev/fx-runtime:dev"
    assert len(operator["env"]) == len(env)  # patched in place, not appended twice
    claim = one(dev, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_the_generator_derives_exactly_these_files(helm: str) -> None:
    generator = _generator()
    expected = generator.expected_files(helm)
    assert set(expected) == {
        *(CHART / "crds" / p.name for p in CRDS.glob("*.yaml")),
        *(BASE / "crds" / p.name for p in CRDS.glob("*.yaml")),
        BASE / "fx-operator.yaml"}
    rendered = expected[BASE / "fx-operator.yaml"].decode()
    assert rendered.startswith("# GENERATED by deploy/generate.py")
    assert "kind: Secret" not in rendered and "randBytes" not in rendered
