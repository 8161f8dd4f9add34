"""The kind suite's tools: prerequisites, images, a kind cluster, the chart, kubectl and fxctl.

Everything here runs the real command-line tools (docker, kind, helm, kubectl) as a platform team
would, with a kubeconfig of its own so that no other cluster is touched. Settings, all optional
but the first:

| variable             | meaning                                                              |
|----------------------|----------------------------------------------------------------------|
| ``FX_E2E=1``         | run the suite (else it is skipped: it takes minutes)                 |
| ``FX_E2E_CLUSTER``   | use this existing kind cluster (kept); default: create one, delete it |
| ``FX_E2E_BUILD=0``   | do not build the images (already built with ``FX_E2E_TAG``)          |
| ``FX_E2E_TAG``       | the images' tag (default ``e2e``)                                    |
| ``FX_E2E_NODE_IMAGE``| kind's node image for a cluster the suite creates                    |
| ``FX_E2E_ARTIFACTS`` | folder for logs, events and objects at the end (default: a temp dir) |
| ``FX_E2E_KEEP=1``    | leave the release, the namespace and a created cluster in place       |
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from support.processes import REPO, child_env

TOOLS = ("docker", "kind", "helm", "kubectl")
OPERATOR_IMAGE = "ghcr.io/fx-dev/fx-operator"
RUNTIME_IMAGE = "ghcr.io/fx-dev/fx-runtime"
CHART = REPO / "charts" / "fx-operator"
RELEASE = "fx-operator"  # contains "fx-operator": the chart names its objects after it
PLATFORM_NAMESPACE = "fx-system"
DOCKER_INFO_TIMEOUT = 20

T = TypeVar("T")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def requested() -> bool:
    """FX_E2E=1: the suite was asked for, so a missing tool is a failure, not a skip."""
    return _flag("FX_E2E")


def missing_prerequisites() -> str | None:
    """Why the suite cannot run here, or None. Quick: a PATH look-up and `docker info`."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=DOCKER_INFO_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"the Docker daemon did not answer `docker info` within {DOCKER_INFO_TIMEOUT} s"
    if info.returncode != 0 or not info.stdout.strip():
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"the Docker daemon is unreachable: {lines[0] if lines else 'docker info failed'}"
    return None


class CommandFailed(AssertionError):
    """A tool exited non-zero; the message has its command line and the end of its output."""


def run(args: Sequence[str], *, env: Mapping[str, str] | None = None, input: str | None = None,
        timeout: float = 600, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), env=child_env(env), input=input, capture_output=True,
                            text=True, timeout=timeout, check=False, cwd=cwd or REPO)
    if check and result.returncode != 0:
        raise CommandFailed(f"`{' '.join(args)}` exited {result.returncode}:\n"
                            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


@dataclass(frozen=True)
class E2ESettings:
    cluster: str | None = field(default_factory=lambda: os.environ.get("FX_E2E_CLUSTER") or None)
    build: bool = field(default_factory=lambda: os.environ.get("FX_E2E_BUILD", "1") != "0")
    tag: str = field(default_factory=lambda: os.environ.get("FX_E2E_TAG", "e2e"))
    node_image: str | None = field(
        default_factory=lambda: os.environ.get("FX_E2E_NODE_IMAGE") or None)
    artifacts: Path | None = field(default_factory=lambda: Path(os.environ["FX_E2E_ARTIFACTS"])
                                   if os.environ.get("FX_E2E_ARTIFACTS") else None)
    keep: bool = field(default_factory=lambda: _flag("FX_E2E_KEEP"))

    @property
    def operator_image(self) -> str:
        return f"{OPERATOR_IMAGE}:{self.tag}"

    @property
    def runtime_image(self) -> str:
        return f"{RUNTIME_IMAGE}:{self.tag}"


def build_images(settings: E2ESettings) -> None:
    """Both images from the Dockerfile, as CI and a release build them."""
    for target, image in (("runtime", settings.runtime_image),
                          ("operator", settings.operator_image)):
        run(["docker", "build", "--target", target, "--tag", image, "."], timeout=1800)


@dataclass
class KindCluster:
    name: str
    kubeconfig: Path
    created: bool

    @classmethod
    def create(cls, name: str, kubeconfig: Path, node_image: str | None) -> KindCluster:
        args = ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig),
                "--wait", "180s"]
        if node_image:
            args += ["--image", node_image]
        run(args, timeout=600)
        return cls(name, kubeconfig, created=True)

    @classmethod
    def existing(cls, name: str, kubeconfig: Path) -> KindCluster:
        clusters = run(["kind", "get", "clusters"]).stdout.split()
        assert name in clusters, f"FX_E2E_CLUSTER={name}: kind knows only {clusters}"
        kubeconfig.write_text(run(["kind", "get", "kubeconfig", "--name", name]).stdout)
        return cls(name, kubeconfig, created=False)

    def load(self, image: str) -> None:
        run(["kind", "load", "docker-image", image, "--name", self.name], timeout=600)

    def delete(self) -> None:
        run(["kind", "delete", "cluster", "--name", self.name], timeout=300, check=False)


@dataclass
class Kube:
    """kubectl, helm and fxctl against one cluster (its own kubeconfig)."""

    kubeconfig: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {"KUBECONFIG": str(self.kubeconfig),
                    "FX_PLATFORM_NAMESPACE": PLATFORM_NAMESPACE}

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["kubectl", *args], env=self.env, input=input, timeout=timeout, check=check)

    def get_json(self, *args: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return found

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(["helm", *args], env=self.env, timeout=timeout)

    def fxctl(self, *args: str, input: str | None = None, timeout: float = 600,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """The checkout's fxctl, as a user runs it on a laptop against the cluster."""
        return run([sys.executable, "-m", "fx_operator", *args], env=self.env, input=input,
                   timeout=timeout, check=check)

    def ready(self, kind: str, namespace: str, name: str, timeout: int = 180) -> None:
        self.kubectl("wait", "--for=condition=Ready", f"{kind}/{name}", "-n", namespace,
                     f"--timeout={timeout}s", timeout=timeout + 30)
