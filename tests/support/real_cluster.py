"""The product installed on the real control plane as a platform team installs it, and run there.

* the control plane (``support.control_plane``) and the node agent running pods with podman on
  the runtime image that ``.ci/images`` built;
* ``helm template`` of the chart, applied with ``kubectl apply``: the CRDs, the ServiceAccount,
  the RBAC, the Services, the master-key Secret (the Deployment, its volume claim and its
  NetworkPolicy are left out: there is no kubelet for the operator's own pod);
* the operator, ``fxctl operator``, as a process with the Deployment's environment, talking to
  the API server with a token of its own ServiceAccount: every call it makes is checked by the
  chart's RBAC, the broker's TokenReviews included;
* a real PostgreSQL (the test session's) as its store.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.domain.sealing import PUBLIC_KEY_CONFIGMAP
from kubernetes import client, config

from support.control_plane import ControlPlane, free_port
from support.manifests import RELEASE, helm_template, run
from support.node_agent import NodeAgent
from support.podman import RUNTIME_IMAGE, Podman
from support.processes import child_env
from support.scenarios import ClusterView
from support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "fx-system"
OPERATOR_ACCOUNT = f"{RELEASE}"
# One canary per scope, sealed at the start of a session (tests/realk8s/conftest.py); checked at
# its end against every object read back from the API, etcd itself, every Event, the operator's
# log, the containers' output, the control plane's logs, every CLI output and a pg_dump.
CANARIES = {"platform": "plat-canary-real-5d0e71", "project": "proj-canary-real-a93c04",
            "package": "pkg-canary-real-77f2b8"}
# What the chart renders that needs a kubelet of its own (the operator's pod and its volume) or a
# network plugin; everything else is applied as rendered.
NOT_APPLIED = {"Deployment", "PersistentVolumeClaim", "NetworkPolicy"}


@dataclass
class RealCluster(ClusterView):
    plane: ControlPlane
    agent: NodeAgent
    api: client.ApiClient
    kubectl_path: str
    folder: Path
    operator_env: dict[str, str]
    operator_kubeconfig: Path
    operator_log: Path
    master_key: Path
    liveness_port: int = field(default_factory=free_port)
    settle_timeout = 120
    run_timeout = 180
    #: refusals of the operator's calls that a test caused on purpose (``verb resource where``)
    expected_refusals: set[str] = field(default_factory=set)
    operator: subprocess.Popen[bytes] | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def operator_user(self) -> str:
        return f"system:serviceaccount:{SYSTEM}:{OPERATOR_ACCOUNT}"

    # --- tools as a user runs them ----------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.kubectl_path, f"--kubeconfig={self.plane.admin_kubeconfig}",
                               *args], input=input, capture_output=True, text=True, timeout=120,
                              check=False)
        self.outputs += [done.stdout, done.stderr]
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stderr}")
        return done

    def fxctl(self, *args: str, input: str | None = None, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "fx_operator", *args],
            env=child_env({"KUBECONFIG": str(self.plane.admin_kubeconfig),
                           "FX_HOME": str(self.folder / "client-home"), **(env or {})}),
            input=input, capture_output=True, text=True, timeout=timeout, check=False)
        self.outputs += [done.stdout, done.stderr]
        return done

    # --- the operator -----------------------------------------------------------------------

    def start_operator(self) -> None:
        assert self.operator is None or self.operator.poll() is not None
        with self.operator_log.open("ab") as log:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "fx_operator", "operator",
                 f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz",
                 "--log-format=full", "--verbose"],
                env=child_env(self.operator_env), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_for(self._public_key_published, "the operator to publish its sealing key",
                      timeout=90)

    def _public_key_published(self) -> bool:
        if self.operator is not None and self.operator.poll() is not None:
            raise AssertionError(f"the operator exited {self.operator.returncode}:\n"
                                 f"{self.operator_log.read_text()[-4000:]}")
        try:
            self.core.read_namespaced_config_map(PUBLIC_KEY_CONFIGMAP, SYSTEM)
        except client.ApiException:
            return False
        return True

    def stop_operator(self, *, kill: bool = False) -> None:
        if self.operator is None:
            return
        if self.operator.poll() is None:
            self.operator.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.operator.wait(60)
            except subprocess.TimeoutExpired:
                self.operator.kill()
                self.operator.wait()
        self.operator = None

    # --- objects ----------------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name)
        return found

    def apply(self, manifest: dict[str, Any] | str, *, server_side: bool = False) -> str:
        """``kubectl apply``; ``server_side`` for objects over 256 KiB, whose copy in the
        client-side apply's annotation the API server refuses."""
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        extra = ["--server-side"] if server_side else []
        return self.kubectl("apply", *extra, "-f", "-", input=text).stdout

    def seal(self, namespace: str, name: str, values: dict[str, Any], scope: str,
             package: str | None = None, *, server_side: bool = False) -> dict[str, Any]:
        """``fxctl seal`` of these values (a secrets.json on disk), applied with kubectl."""
        source = self.folder / f"secrets-{namespace}-{name}.json"
        source.write_text(json.dumps(values))
        args = ["seal", str(source), "-n", namespace, "--scope", scope, "--name", name]
        if package:
            args += ["--package", package]
        sealed = self.fxctl(*args)
        source.unlink()
        assert sealed.returncode == 0, sealed.stderr
        self.apply(sealed.stdout, server_side=server_side)
        manifest: dict[str, Any] = yaml.safe_load(sealed.stdout)
        return manifest

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 120) -> Any:
        try:
            return wait_for(condition, what, timeout, every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.state()}") from None

    def state(self) -> str:
        """What a reader of a failure needs: Jobs, pods and Executions, and the logs' ends."""
        lines = []
        for kind in ("jobs", "pods", "executions"):
            try:
                listed = json.loads(self.kubectl("get", kind, "-A", "-o", "json").stdout)["items"]
            except RecursionError:  # a test's deliberately deep object
                lines.append(f"{kind}: too deep to decode here")
                continue
            for item in listed:
                meta = item["metadata"]
                lines.append(f"{kind} {meta['namespace']}/{meta['name']}: "
                             f"phase={(item.get('status') or {}).get('phase')} "
                             f"deleting={meta.get('deletionTimestamp')} "
                             f"finalizers={meta.get('finalizers')} "
                             f"owners={[o['kind'] for o in meta.get('ownerReferences') or []]}")
        for log in (self.plane.logs / "kube-controller-manager.log", self.operator_log):
            tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
            lines += [f"--- {log.name}:", *tail]
        return "\n".join(lines)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(namespace).items
        return [self.api.sanitize_for_serialization(e) for e in items
                if e.involved_object.name == name]

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})
        # The controller manager gives it its default ServiceAccount; pods need it.
        self.wait_for(lambda: self._has_default_account(name), f"namespace {name}'s account")

    def _has_default_account(self, namespace: str) -> bool:
        try:
            self.core.read_namespaced_service_account("default", namespace)
        except client.ApiException:
            return False
        return True

    # --- everything the canary must not be in ------------------------------------------------

    def everything_seen(self) -> dict[str, bytes]:
        """Every object read back from the API, etcd's keys and values as stored, every Event,
        the operator's log, every container's output, every CLI output of the tests."""
        objects = []
        for args in (["get", "--raw", "/api/v1/events"], ["get", "--raw", "/api/v1/secrets"],
                     ["get", "--raw", "/api/v1/configmaps"], ["get", "--raw", "/api/v1/pods"],
                     ["get", "--raw", "/apis/batch/v1/jobs"],
                     ["get", "--raw", "/apis/events.k8s.io/v1/events"]):
            objects.append(self.kubectl(*args).stdout)
        for plural in ("packages", "scopedsecrets", "executions"):
            objects.append(self.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}/{plural}").stdout)
        return {
            "API objects": "\n".join(objects).encode(),
            "etcd": self.plane.etcd_dump(),
            "operator log": self.operator_log.read_bytes(),
            "containers' output": b"\n".join(self.agent.logs.values()),
            "control plane logs": b"\n".join(p.read_bytes() for p in self.plane.logs.iterdir()),
            "CLI output": "\n".join(self.outputs).encode(),
        }


def _apply_chart(kubectl: str, helm: str, kubeconfig: Path, folder: Path) -> dict[str, Any]:
    """The chart's objects applied with kubectl; returns the rendered master-key Secret."""
    objects = helm_template(helm, {}, extra=["--include-crds"])
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] not in NOT_APPLIED and o not in crds]
    for name, batch in (("crds", crds), ("install", rest)):
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(batch))
        run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-f", str(path)])
        if name == "crds":
            run([kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Established",
                 "--timeout=60s", "-f", str(path)])
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    return secret


def _deployment_env(helm: str) -> dict[str, str]:
    objects = helm_template(helm, {})
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "operator"]
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


@contextmanager
def real_cluster(plane: ControlPlane, folder: Path, *, kubectl: str, helm: str, dsn: str,
                 podman: Podman) -> Iterator[RealCluster]:
    folder.mkdir(parents=True, exist_ok=True)
    admin = config.new_client_from_config(str(plane.admin_kubeconfig))
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": SYSTEM}})
    secret = _apply_chart(kubectl, helm, plane.admin_kubeconfig, folder)
    master_key = folder / "master.key"
    master_key.write_bytes(base64.b64decode(next(iter(secret["data"].values()))))
    master_key.chmod(0o600)

    token = core.create_namespaced_service_account_token(
        OPERATOR_ACCOUNT, SYSTEM, {"spec": {"expirationSeconds": 24 * 3600}}).status.token
    operator_kubeconfig = plane.write_kubeconfig(folder / "operator.kubeconfig", token=token)
    broker_port = free_port()
    env = {**_deployment_env(helm),
           "KUBECONFIG": str(operator_kubeconfig),
           "FX_DATABASE_URL": dsn,
           "FX_MASTER_KEY_FILE": str(master_key),
           "FX_HOME": str(folder / "operator-home"),
           "FX_RUNTIME_IMAGE": RUNTIME_IMAGE,
           # The broker's Service has no endpoints here (no pod network): run pods, which share
           # the host's loopback, reach it on 127.0.0.1.
           "FX_BROKER_HOST": "127.0.0.1", "FX_BROKER_PORT": str(broker_port),
           "FX_BROKER_URL": f"https://127.0.0.1:{broker_port}",
           "FX_BROKER_DNS_NAMES": json.dumps(["localhost", "127.0.0.1"]),
           "FX_METRICS_PORT": str(free_port())}
    agent = NodeAgent(admin, podman, folder / "node")
    agent.start()
    cluster = RealCluster(plane, agent, admin, kubectl, folder, env, operator_kubeconfig,
                          folder / "operator.log", master_key)
    try:
        cluster.start_operator()
        yield cluster
    finally:
        try:
            cluster.stop_operator()
        finally:
            agent.stop()
