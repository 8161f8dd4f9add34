"""The real control plane tier (marker ``realk8s``): kube-apiserver, kube-controller-manager and
etcd built by ``tests/realk8s/build.sh``, the chart applied with kubectl, the operator under its own
ServiceAccount, run pods as podman containers of the runtime image built by ``.ci/images``.

One control plane and one operator for the session. Skipped with the reason when a part is missing
outside CI; in CI a missing part fails the tier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ci import unavailable
from support.control_plane import ControlPlane, binaries_missing, control_plane
from support.manifests import find_tool
from support.podman import RUNTIME_IMAGE, Podman, PodmanNotFoundError
from support.postgres import PostgresServer
from support.real_cluster import CANARIES, SYSTEM, RealCluster, real_cluster
from support.scenarios import platform_secrets, project_secrets

NAMESPACES = ("team-a", "team-b")
REPO = Path(__file__).resolve().parents[2]
TIER = "the real control plane tier"


def _go() -> str | None:
    """Go on PATH, or where these machines install it (build.sh looks there too)."""
    return shutil.which("go") or ("/usr/local/go/bin/go"
                                  if Path("/usr/local/go/bin/go").is_file() else None)


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if binaries_missing() and _go() is not None:
        # Built here once (about 8 minutes cold on 2 cores; kept in ~/.cache/fx-realk8s).
        subprocess.run(["bash", str(REPO / "tests" / "realk8s" / "build.sh")], check=True,
                       stdout=subprocess.DEVNULL)
    missing = binaries_missing()
    if missing:
        unavailable(f"{missing} (Go is needed to build them)", TIER)
    if os.geteuid() != 0:
        unavailable("the node agent mounts tmpfs volumes and runs podman: it needs root", TIER)
    with control_plane(tmp_path_factory.mktemp("control-plane")) as started:
        yield started


@pytest.fixture(scope="session")
def real(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
         postgres_server: PostgresServer) -> Iterator[RealCluster]:
    kubectl, helm = find_tool("kubectl"), find_tool("helm")
    if kubectl is None or helm is None:
        unavailable("helm and kubectl are needed (.ci/run fetches them into .cache/tools)", TIER)
    try:
        podman = Podman.find()
    except PodmanNotFoundError as exc:
        unavailable(str(exc), TIER)
    if not podman.image_exists(RUNTIME_IMAGE):
        unavailable(f"{RUNTIME_IMAGE} is not built: run .ci/images", TIER)
    dsn = postgres_server.create_database("realk8s")
    assert kubectl is not None and helm is not None
    with real_cluster(plane, Path(tmp_path_factory.mktemp("real")), kubectl=kubectl, helm=helm,
                      dsn=dsn, podman=podman) as cluster:
        for namespace in NAMESPACES:
            cluster.create_namespace(namespace)
        cluster.seal(SYSTEM, "platform", platform_secrets(CANARIES["platform"]), "platform")
        cluster.seal("team-a", "project", project_secrets(CANARIES["project"]), "project")
        cluster.ready("scopedsecrets", SYSTEM, "platform")
        cluster.ready("scopedsecrets", "team-a", "project")
        yield cluster
        # The whole session's traces, once every test has run: the canaries are nowhere they
        # must not be, and the API server never refused the operator a call (the chart's RBAC
        # allows everything the operator does).
        seen = cluster.everything_seen()
        seen["pg_dump"] = postgres_server.dump("realk8s")
        for scope, value in CANARIES.items():
            for where, blob in seen.items():
                assert value.encode() not in blob, f"the {scope} canary is in the {where}"
        # What was searched holds what it should (a sealed canary's object, by name).
        assert b"/registry/fx.dev/scopedsecrets/team-a/project" in seen["etcd"]
        operator = cluster.operator_user
        assert any(e.get("user", {}).get("username") == operator
                   for e in plane.audit_events()), "the audit log has none of the operator's calls"
        refused = [r for r in plane.refused(operator) if r not in cluster.expected_refusals]
        assert refused == [], f"the chart's RBAC refused the operator: {refused}"
    postgres_server.drop_database("realk8s")
