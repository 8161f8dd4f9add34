"""The kind suite's fixtures: images built and loaded, a kind cluster, the chart installed.

Every test here is marked ``e2e``. It runs only where it can and was asked to:

* without docker, kind, helm or kubectl on PATH, or without a reachable Docker daemon, every test
  is **skipped** with that reason — also in CI (``CI=true``), which has no Docker: unlike the
  PostgreSQL tests, nothing here turns that skip into a failure;
* with everything present but ``FX_E2E`` unset, skipped too (the suite takes minutes);
* with ``FX_E2E=1``, a missing prerequisite **fails** the tests: the suite was asked for.

    FX_E2E=1 python -m pytest tests/e2e -m e2e          # builds, creates and deletes a cluster

See ``support/kind.py`` for the other settings (an existing cluster, prebuilt images, artifacts).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fx_operator.domain.sealing import PUBLIC_KEY_CONFIGMAP
from support.kind import (
    CHART,
    PLATFORM_NAMESPACE,
    RELEASE,
    E2ESettings,
    KindCluster,
    Kube,
    build_images,
    missing_prerequisites,
    requested,
)
from support.waiting import wait_for


@pytest.fixture(scope="session", autouse=True)
def e2e_prerequisites() -> None:
    """Skip (or, with FX_E2E=1, fail) every kind test at once, before anything slow happens."""
    reason = missing_prerequisites()
    if reason is not None:
        if requested():
            pytest.fail(f"FX_E2E=1 asks for the kind suite, but {reason}", pytrace=False)
        pytest.skip(f"kind suite skipped: {reason}")
    if not requested():
        pytest.skip("kind suite skipped: set FX_E2E=1 to run it (it builds both images and "
                    "creates a kind cluster: several minutes)")


@pytest.fixture(scope="session")
def e2e_settings() -> E2ESettings:
    return E2ESettings()


@pytest.fixture(scope="session")
def artifacts(e2e_settings: E2ESettings) -> Path:
    folder = e2e_settings.artifacts or Path(tempfile.mkdtemp(prefix="fx-e2e-artifacts-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def kind_cluster(e2e_settings: E2ESettings,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    if e2e_settings.cluster:
        yield KindCluster.existing(e2e_settings.cluster, kubeconfig)
        return
    cluster = KindCluster.create(f"fx-e2e-{uuid.uuid4().hex[:6]}", kubeconfig,
                                 e2e_settings.node_image)
    try:
        yield cluster
    finally:
        if not e2e_settings.keep:
            cluster.delete()


@pytest.fixture(scope="session")
def kube(kind_cluster: KindCluster) -> Kube:
    return Kube(kind_cluster.kubeconfig)


@pytest.fixture(scope="session")
def images(e2e_settings: E2ESettings, kind_cluster: KindCluster) -> E2ESettings:
    """Both images, built (unless FX_E2E_BUILD=0) and loaded into the cluster's node."""
    if e2e_settings.build:
        build_images(e2e_settings)
    for image in (e2e_settings.runtime_image, e2e_settings.operator_image):
        kind_cluster.load(image)
    return e2e_settings


def collect_artifacts(kube: Kube, folder: Path, namespaces: list[str]) -> None:
    """Logs, Events and objects, for a person reading a failed run (CI uploads the folder)."""
    def save(name: str, *args: str) -> None:
        result = kube.kubectl(*args, check=False, timeout=120)
        (folder / name).write_text(result.stdout + result.stderr)

    save("operator.log", "logs", "-n", PLATFORM_NAMESPACE, f"deployment/{RELEASE}",
         "--all-containers", "--prefix", "--tail=-1")
    save("operator-previous.log", "logs", "-n", PLATFORM_NAMESPACE, f"deployment/{RELEASE}",
         "--all-containers", "--prefix", "--previous")
    save("events.txt", "get", "events", "-A", "--sort-by=.lastTimestamp")
    for namespace in namespaces:
        save(f"{namespace}-objects.yaml", "get",
             "all,configmaps,executions,packages,scopedsecrets", "-n", namespace, "-o", "yaml")
        save(f"{namespace}-describe.txt", "describe", "pods,jobs,executions", "-n", namespace)


@pytest.fixture(scope="session")
def project_namespace() -> str:
    return f"fx-e2e-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def deployment(images: E2ESettings, kube: Kube, artifacts: Path, project_namespace: str,
               e2e_settings: E2ESettings) -> Iterator[Kube]:
    """The chart installed from the checkout with the images just built; a project namespace."""
    kube.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", PLATFORM_NAMESPACE,
              "--create-namespace", "--wait", "--timeout", "10m",
              "--set", f"image.operator.tag={images.tag}",
              "--set", "image.operator.pullPolicy=Never",
              "--set", f"image.runtime.tag={images.tag}", timeout=900)
    kube.kubectl("create", "namespace", project_namespace)
    try:
        wait_for(lambda: kube.kubectl("get", "configmap", PUBLIC_KEY_CONFIGMAP, "-n",
                                      PLATFORM_NAMESPACE, check=False).returncode == 0,
                 "the operator to publish its sealing key", timeout=180, every=2)
        yield kube
    finally:
        collect_artifacts(kube, artifacts, [PLATFORM_NAMESPACE, project_namespace])
        (artifacts / "settings.json").write_text(json.dumps(
            {"tag": images.tag, "namespace": project_namespace}, indent=2))
        if not e2e_settings.keep and e2e_settings.cluster:  # a created cluster goes whole
            kube.kubectl("delete", "namespace", project_namespace, "--wait=false", check=False)
            kube.helm("uninstall", RELEASE, "--namespace", PLATFORM_NAMESPACE)
