"""A whole cluster for end-to-end tests: the emulator over HTTP, the operator (kopf, in a thread),
the pod runner, and a real PostgreSQL store. The operator talks HTTP to the emulator exactly as it
would to an API server.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fx_operator.handlers.all  # noqa: F401 (registers the operator's handlers, below)
import kopf
from fx_operator.cli.cluster import sealed_manifest
from fx_operator.domain.api_group import API_VERSION, GROUP, VERSION
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.sealing import PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_FIELD, SealingPublicKey
from fx_operator.storage.master_keys import FileMasterKeyProvider
from kopf.testing import KopfRunner
from kubernetes import client

from support.kube_emulator import KubeEmulator, KubeEmulatorServer
from support.pod_runner import PodRunner
from support.scenarios import ClusterView
from support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
PLATFORM_NAMESPACE = "fx-system"
NAMESPACES = ("team-a", "team-b", PLATFORM_NAMESPACE)

_connection: dict[str, Any] = {}


@kopf.on.login()
def _login_to_the_emulator(**_: Any) -> kopf.ConnectionInfo:
    """kopf reads $KUBECONFIG at import: tests log it in to the emulator they started."""
    info: kopf.ConnectionInfo = _connection["info"]
    return info


# The registry our handlers (and the login above) went into at import. Other tests' KopfRunners
# replace kopf's default registry for good, so ours is named explicitly.
_REGISTRY = kopf.get_default_registry()


class _Capture(logging.Handler):
    """Every log record of the operator, for the canary check."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.lines.append(repr(record.__dict__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster(ClusterView):
    server: KubeEmulatorServer
    runner: PodRunner
    api: client.ApiClient
    env: dict[str, str]
    logs: _Capture
    operator: KopfRunner | None = None
    extra_outputs: list[str] = field(default_factory=list)
    #: The operator's own bearer token (kopf's and its API client's), when it has one apart.
    operator_token: str | None = None
    #: The namespaces the operator watches (kopf ``-n``); empty: the whole cluster (``-A``).
    watched: tuple[str, ...] = ()
    #: kopf peering (``--peering NAME``, priority 100) instead of ``--standalone``.
    peering: str | None = None

    # --- the operator ------------------------------------------------------------------------

    def start_operator(self) -> None:
        _connection["info"] = self.server.kopf_connection_info(token=self.operator_token)
        scope = [arg for namespace in self.watched for arg in ("-n", namespace)] or ["-A"]
        peering = (["--peering", self.peering, "--priority", "100"] if self.peering else
                   ["--standalone"])
        self.operator = KopfRunner(["run", *scope, *peering, "-m", "fx_operator.handlers.all"],
                                   registry=_REGISTRY)
        self.operator.__enter__()
        self.wait_for(lambda: self.public_key() is not None, "the operator to start")

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.__exit__(None, None, None)
            self.operator = None

    def public_key(self) -> SealingPublicKey | None:
        try:
            found = self.core.read_namespaced_config_map(PUBLIC_KEY_CONFIGMAP, PLATFORM_NAMESPACE)
        except client.ApiException:
            return None
        return SealingPublicKey.parse(found.data[PUBLIC_KEY_FIELD])

    # --- objects -----------------------------------------------------------------------------

    def apply(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": API_VERSION, **body}
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body)
        return created

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name)
        return found

    def package(self, namespace: str, name: str, scripts: dict[str, str],
                **spec: Any) -> dict[str, Any]:
        return self.apply("packages", namespace, {
            "kind": "Package", "metadata": {"name": name},
            "spec": {"scripts": [{"name": n, "content": c} for n, c in scripts.items()],
                     **spec}})

    def sealed_secret(self, namespace: str, name: str, values: dict[str, Any], scope: str,
                      package: str | None = None) -> dict[str, Any]:
        key = self.public_key()
        assert key is not None
        manifest = sealed_manifest(values, key, namespace=namespace, scope=scope,
                                   package=package, name=name)
        return self.apply("scopedsecrets", namespace, manifest)

    def execution(self, namespace: str, name: str, package: str, **spec: Any) -> dict[str, Any]:
        return self.apply("executions", namespace, {
            "kind": "Execution", "metadata": {"name": name},
            "spec": {"package": package, **spec}})

    def schedule(self, namespace: str, name: str, package: str, schedule: str,
                 **spec: Any) -> dict[str, Any]:
        return self.apply("schedules", namespace, {
            "kind": "Schedule", "metadata": {"name": name},
            "spec": {"package": package, "schedule": schedule, **spec}})

    def assert_still_serving(self, namespace: str) -> None:
        """After whatever a test threw at the operator: a new Package runs to success."""
        self.package(namespace, "after", {"main.py": "print('still here')\n"})
        self.ready("packages", namespace, "after")
        self.execution(namespace, "after-1", "after")
        status = self.finished(namespace, "after-1")["status"]
        assert status["phase"] == "Succeeded", status
        assert "still here" in status["result"]["outputTail"]

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        return wait_for(condition, what, timeout, every=0.1)

    def events(self, namespace: str, name: str, *reasons: str) -> list[dict[str, Any]]:
        """An object's Events; with ``reasons``, once they all are there: the operator posts
        an Event after the status it reports, so a final status can be read before it."""
        def found() -> list[dict[str, Any]]:
            items = self.core.list_namespaced_event(namespace).items
            return [e.to_dict() for e in items if e.involved_object.name == name]
        def complete() -> list[dict[str, Any]] | None:
            events = found()
            return events if set(reasons) <= {e["reason"] for e in events} else None
        return list(self.wait_for(complete, f"Events {reasons} of {name}")) if reasons \
            else found()

    def everything_seen(self) -> str:
        """Every object ever stored, every operator log line, every run's output and argv."""
        parts = [json.dumps(self.server.dump_objects(), default=str)]
        parts += self.logs.lines
        parts += [out for out in self.runner.logs.values()]
        parts += [" ".join(argv) for argv in self.runner.argvs]
        parts += self.extra_outputs
        return "\n".join(parts)


@contextmanager
def cluster(tmp_path: Path, dsn: str, *, emulator: KubeEmulator | None = None,
            operator_token: str | None = None, watched: tuple[str, ...] = (),
            peering: str | None = None, kind: type[Cluster] = Cluster,
            **settings: str) -> Iterator[Cluster]:
    """The whole cluster, its operator started. ``FX_*`` settings as keywords.

    ``emulator``: one set up by the caller (e.g. recording calls). ``operator_token``: the
    operator (kopf, and its API client through ``$KUBECONFIG``) uses this bearer token instead of
    the one of the tests and the pod runner, so that the emulator's ``recorded_calls`` tell its
    requests apart. ``watched``: the namespaces kopf watches (default: all). ``peering``: kopf
    peering of that name (its CRDs and object must be in the emulator) instead of standalone.
    ``kind``: a subclass of :class:`Cluster` that runs the operator otherwise (e.g. as a process).
    """
    emulator = emulator if emulator is not None else KubeEmulator()
    emulator.load_crds(REPO / "crds")
    key_file = tmp_path / "master.key"
    FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
    port = _free_port()
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    previous_level = root.level
    root.setLevel(logging.DEBUG)
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        api = server.api_client()
        core = client.CoreV1Api(api)
        for namespace in NAMESPACES:
            core.create_namespace({"metadata": {"name": namespace}})
        kubeconfig = server.kubeconfig
        if operator_token is not None:
            kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig-operator",
                                                 token=operator_token)
        env = {"KUBECONFIG": str(kubeconfig), "FX_DATABASE_URL": dsn,
               "FX_MASTER_KEY_FILE": str(key_file), "FX_HOME": str(tmp_path / "home"),
               "FX_BROKER_HOST": "127.0.0.1", "FX_BROKER_PORT": str(port),
               "FX_BROKER_URL": f"https://127.0.0.1:{port}",
               "FX_BROKER_DNS_NAMES": json.dumps(["localhost", "127.0.0.1"]),
               "FX_PLATFORM_NAMESPACE": PLATFORM_NAMESPACE, "FX_METRICS_PORT": str(_free_port()),
               "FX_ACTOR": "operator", "FX_SCHEDULE_RECHECK_SECONDS": "0.5", **settings}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        runner = PodRunner(server, workdir=tmp_path / "pods")
        runner.start()
        machine = kind(server, runner, api, env, capture, operator_token=operator_token,
                          watched=watched, peering=peering)
        try:
            machine.start_operator()
            yield machine
        finally:
            try:
                machine.stop_operator()
            finally:
                runner.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            root.removeHandler(capture)
            root.setLevel(previous_level)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


__all__ = ["NAMESPACES", "PLATFORM_NAMESPACE", "Cluster", "b64", "cluster", "threading"]
