"""A stand-in kubelet for the real control plane: it registers a Node, binds the pods nobody
scheduled to it, and runs each pod's containers with podman, as a kubelet with a container runtime
would, reporting their status back to the API server.

Honoured from a pod's spec: init containers in order, then the containers; ``command``/``args``
against the image's entrypoint; env (values and ``fieldRef``); the pod's and containers'
security context (user, group, ``fsGroup``, read-only root, dropped capabilities, no privilege
escalation, ``runAsNonRoot``); volumes of kind ConfigMap, Secret, ``emptyDir`` (``medium: Memory``
as a tmpfs mounted on the host, as the kubelet does), and projected service-account tokens (a real
token from the API server's TokenRequest, audience- and pod-bound); the termination message file;
graceful deletion. Not honoured: resource limits, probes, image pulls (images are local),
networking (containers share the host's loopback, where the operator's broker listens).

It talks only to the real API server, with the kubernetes client.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from support.podman import Podman

log = logging.getLogger("fx.test.node-agent")
TERMINATION_MESSAGE_MAX = 4096  # the kubelet's limit
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodStartError(Exception):
    """The pod cannot start as specified (the kubelet's CreateContainerConfigError & co)."""


@dataclass
class _PodRun:
    namespace: str
    name: str
    uid: str
    folder: Path
    containers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # container -> podman container name
    stopping: threading.Event = field(default_factory=threading.Event)
    mounts: list[Path] = field(default_factory=list)  # tmpfs mounted on the host
    thread: threading.Thread | None = None


class NodeAgent:
    """Runs in threads of the test process; ``start()``/``stop()``."""

    def __init__(self, api: client.ApiClient, podman: Podman, folder: Path, *,
                 node: str = "fx-node-1") -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.podman = podman
        self.folder = folder
        self.node = node
        self.runs: dict[str, _PodRun] = {}
        #: every container's output (stdout and stderr), by "namespace/pod/container"
        self.logs: dict[str, bytes] = {}
        #: what happened to each pod, when (time.monotonic()): by pod uid, event -> time, with
        #: events "bound", "init-started", "init-finished", "started" (the main containers
        #: launched), "finished"; and each pod's labels (the bench finds its pods by them)
        self.timeline: dict[str, dict[str, float]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        #: the service-account tokens handed to each pod, by pod uid (for the broker's tests)
        self.tokens: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- the node ---------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.core.create_node({"metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"}}})
        self.core.patch_node_status(self.node, {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "fx test node agent", "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now()}],
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "nodeInfo": {"kubeletVersion": "fx-node-agent", "containerRuntimeVersion": "podman",
                         "architecture": "amd64", "operatingSystem": "linux",
                         "bootID": "", "kernelVersion": "", "kubeProxyVersion": "",
                         "machineID": "", "osImage": "", "systemUUID": ""}}})
        self._thread = threading.Thread(target=self._watch, name="node-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            self._kill(run, grace=0)
        for run in runs:
            if run.thread is not None:
                run.thread.join(30)
        if self._thread is not None:
            self._thread.join(15)

    def _watch(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.core.list_pod_for_all_namespaces()
                    version = listed.metadata.resource_version
                    for pod in listed.items:
                        self._seen(self.api.sanitize_for_serialization(pod))
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces,
                                              resource_version=version, timeout_seconds=5,
                                              _preload_content=True)
                for event in stream:
                    if self._stop.is_set():
                        break
                    pod = self.api.sanitize_for_serialization(event["object"])
                    version = pod["metadata"]["resourceVersion"]
                    if event["type"] != "DELETED":
                        self._seen(pod)
            except client.ApiException as exc:
                if exc.status == 410:
                    version = None
                else:
                    log.warning("watch: %s", exc)
                    time.sleep(0.5)
            except Exception:
                if not self._stop.is_set():
                    log.exception("watch failed")
                    time.sleep(0.5)
                    version = None

    def _seen(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        phase = (pod.get("status") or {}).get("phase")
        self.labels.setdefault(uid, dict(meta.get("labels") or {}))
        if not spec.get("nodeName"):
            if not meta.get("deletionTimestamp"):
                self._bind(meta["namespace"], meta["name"], uid)
            return
        if spec["nodeName"] != self.node:
            return
        with self._lock:
            run = self.runs.get(uid)
        if meta.get("deletionTimestamp"):
            if run is not None and run.thread is not None and not run.thread.is_alive():
                self._remove(meta["namespace"], meta["name"], uid)  # ended: nothing to stop
            elif run is not None:
                # In a thread of its own: podman stop waits up to the grace period.
                threading.Thread(target=self._kill, args=(run,), kwargs={
                    "grace": float(meta.get("deletionGracePeriodSeconds") or 0)},
                    daemon=True).start()
            else:
                self._remove(meta["namespace"], meta["name"], uid)
            return
        if run is None and phase in (None, "Pending"):
            run = _PodRun(meta["namespace"], meta["name"], uid, self.folder / uid)
            with self._lock:
                if uid in self.runs:
                    return
                self.runs[uid] = run
            run.thread = threading.Thread(target=self._run_pod, args=(run, pod),
                                          name=f"pod-{meta['name']}", daemon=True)
            run.thread.start()

    def _mark(self, uid: str, event: str) -> None:
        self.timeline.setdefault(uid, {}).setdefault(event, time.monotonic())

    def _bind(self, namespace: str, name: str, uid: str) -> None:
        self._mark(uid, "bound")
        try:
            self.core.create_namespaced_binding(namespace, {
                "metadata": {"name": name, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}},
                _preload_content=False)
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("binding %s/%s: %s", namespace, name, exc)

    # --- a pod ------------------------------------------------------------------------------

    def _run_pod(self, run: _PodRun, pod: dict[str, Any]) -> None:
        spec = pod["spec"]
        statuses: dict[str, dict[str, Any]] = {}
        phase = "Failed"
        try:
            run.folder.mkdir(parents=True)
            volumes = self._volumes(run, pod)
            self._mark(run.uid, "volumes")
            init = spec.get("initContainers") or []
            for container in init:
                statuses[container["name"]] = self._waiting(container, "PodInitializing")
            for container in spec["containers"]:
                statuses[container["name"]] = self._waiting(container, "PodInitializing")
            self._report(run, pod, "Pending", statuses)
            if init:
                self._mark(run.uid, "init-started")
            for container in init:
                status = self._run_container(run, pod, container, volumes, statuses, init=True)
                if status["state"]["terminated"]["exitCode"] != 0 or run.stopping.is_set():
                    self._report(run, pod, "Failed", statuses)
                    return
            if init:
                self._mark(run.uid, "init-finished")
            started = [self._start_container(run, pod, c, volumes) for c in spec["containers"]]
            self._mark(run.uid, "started")
            for container, (begun, _, _) in zip(spec["containers"], started, strict=True):
                statuses[container["name"]] = self._state(container, running=begun)
            self._report(run, pod, "Running", statuses)
            codes = []
            for container, (begun, process, termination) in zip(spec["containers"], started,
                                                                strict=True):
                statuses[container["name"]] = self._finish(run, pod, container, begun, process,
                                                           termination)
                codes.append(statuses[container["name"]]["state"]["terminated"]["exitCode"])
            phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            self._mark(run.uid, "finished")
            self._report(run, pod, phase, statuses)
        except PodStartError as exc:
            log.warning("pod %s/%s cannot start: %s", run.namespace, run.name, exc)
            self._report(run, pod, "Failed", statuses, reason="CreateContainerConfigError",
                         message=str(exc))
        except Exception:
            log.exception("pod %s/%s", run.namespace, run.name)
            self._report(run, pod, "Failed", statuses, reason="NodeAgentError")
        finally:
            self._cleanup(run)
            if run.stopping.is_set():
                self._remove(run.namespace, run.name, run.uid)

    def _report(self, run: _PodRun, pod: dict[str, Any], phase: str,
                statuses: dict[str, dict[str, Any]], *, reason: str | None = None,
                message: str | None = None) -> None:
        spec = pod["spec"]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        status: dict[str, Any] = {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": pod["metadata"]["creationTimestamp"],
            "initContainerStatuses": [statuses[n] for n in init_names if n in statuses],
            "containerStatuses": [statuses[c["name"]] for c in spec["containers"]
                                  if c["name"] in statuses],
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {"type": "Initialized", "status": "True" if phase != "Pending" else "False",
                 "lastTransitionTime": _now()},
                {"type": "Ready", "status": "True" if phase == "Running" else "False",
                 "lastTransitionTime": _now()}],
        }
        if reason:
            status["reason"], status["message"] = reason, message or reason
        try:
            self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s: %s", run.namespace, run.name, exc)

    @staticmethod
    def _waiting(container: dict[str, Any], reason: str) -> dict[str, Any]:
        return {"name": container["name"], "image": container["image"], "imageID": "",
                "ready": False, "restartCount": 0, "started": False,
                "state": {"waiting": {"reason": reason}}}

    @staticmethod
    def _state(container: dict[str, Any], *, running: str | None = None,
               terminated: dict[str, Any] | None = None) -> dict[str, Any]:
        state = {"running": {"startedAt": running}} if terminated is None else \
            {"terminated": terminated}
        return {"name": container["name"], "image": container["image"], "imageID": "",
                "ready": terminated is None, "restartCount": 0, "started": terminated is None,
                "containerID": f"podman://{container['name']}", "state": state}

    # --- volumes ----------------------------------------------------------------------------

    def _volumes(self, run: _PodRun, pod: dict[str, Any]) -> dict[str, Path]:
        """Each volume made ready, all at once as a kubelet's volume manager mounts them (one
        API read or TokenRequest each; one after the other, three volumes took ~20-40 ms more
        than a kubelet would before a run pod's container started)."""
        spec = pod["spec"]
        group = int((spec.get("securityContext") or {}).get("fsGroup") or 0)
        volumes = spec.get("volumes") or []
        if not volumes:
            return {}
        with ThreadPoolExecutor(max_workers=len(volumes)) as pool:
            ready = [pool.submit(self._volume, run, pod, volume, group) for volume in volumes]
            return {volume["name"]: made.result()
                    for volume, made in zip(volumes, ready, strict=True)}

    def _volume(self, run: _PodRun, pod: dict[str, Any], volume: dict[str, Any],
                group: int) -> Path:
        path: Path = run.folder / "volumes" / volume["name"]
        path.mkdir(parents=True)
        if "configMap" in volume:
            source = volume["configMap"]
            found = self._read(self.core.read_namespaced_config_map, source["name"],
                               run.namespace, source.get("optional"))
            data = dict((found or {}).get("data") or {})
            self._files(path, data, source, group)
        elif "secret" in volume:
            source = volume["secret"]
            found = self._read(self.core.read_namespaced_secret, source["secretName"],
                               run.namespace, source.get("optional"))
            data = {k: base64.b64decode(v) for k, v in ((found or {}).get("data") or {})
                    .items()}
            self._files(path, data, source, group)
        elif "emptyDir" in volume:
            if (volume["emptyDir"] or {}).get("medium") == "Memory":
                limit = (volume["emptyDir"] or {}).get("sizeLimit") or "64Mi"
                size = limit.removesuffix("i")
                mounted = subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777,nosuid,nodev",
                     "tmpfs", str(path)], capture_output=True, text=True, check=False)
                if mounted.returncode != 0:
                    raise PodStartError(f"emptyDir {volume['name']}: {mounted.stderr}")
                run.mounts.append(path)
            path.chmod(0o777)
            self._own(path, group, directory=True)
        elif "projected" in volume:
            source = volume["projected"]
            files: dict[str, str | bytes] = {}
            items = []
            for part in source.get("sources") or []:
                if "serviceAccountToken" in part:
                    token = part["serviceAccountToken"]
                    files[token["path"]] = self._token(pod, token)
                    items.append({"key": token["path"], "path": token["path"]})
                else:
                    raise PodStartError(f"projected source {sorted(part)} is not supported")
            self._files(path, files, {"defaultMode": source.get("defaultMode", 0o644),
                                      "items": items}, group)
        else:
            raise PodStartError(f"volume {volume['name']}: kind {sorted(volume)} "
                                "is not supported by the node agent")
        return path

    def _read(self, reader: Any, name: str, namespace: str,
              optional: bool | None) -> dict[str, Any] | None:
        try:
            # As JSON: the client's models cost ~5-10 ms of Python per object, which a kubelet
            # (Go, reading from its watch caches) does not spend.
            found: dict[str, Any] = json.loads(reader(name, namespace,
                                                      _preload_content=False).data)
            return found
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return None
            raise PodStartError(f"{name}: {exc.status} {exc.reason}") from None

    def _files(self, folder: Path, data: dict[str, Any], source: dict[str, Any],
               group: int) -> None:
        mode = int(source.get("defaultMode", 0o644))
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        folder.chmod(0o755)
        for item in items:
            if item["key"] not in data:
                raise PodStartError(f"key {item['key']} is missing")
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            value = data[item["key"]]
            target.write_bytes(value.encode() if isinstance(value, str) else value)
            target.chmod(int(item.get("mode", mode)))
            self._own(target, group)

    @staticmethod
    def _own(path: Path, group: int, *, directory: bool = False) -> None:
        """fsGroup as the kubelet applies it: the group owns the file and may read it."""
        if not group:
            return
        os.chown(path, -1, group)
        mode = path.stat().st_mode & 0o7777
        path.chmod(mode | (0o2070 if directory else 0o040))

    def _token(self, pod: dict[str, Any], token: dict[str, Any]) -> str:
        account = pod["spec"].get("serviceAccountName") or "default"
        request = self.core.create_namespaced_service_account_token(
            account, pod["metadata"]["namespace"], {"spec": {
                "audiences": [token["audience"]] if token.get("audience") else None,
                "expirationSeconds": int(token.get("expirationSeconds", 3600)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                   "name": pod["metadata"]["name"],
                                   "uid": pod["metadata"]["uid"]}}},
            _preload_content=False)
        token_value = str(json.loads(request.data)["status"]["token"])
        self.tokens.setdefault(pod["metadata"]["uid"], []).append(token_value)
        return token_value

    # --- containers -------------------------------------------------------------------------

    def _run_container(self, run: _PodRun, pod: dict[str, Any], container: dict[str, Any],
                       volumes: dict[str, Path], statuses: dict[str, dict[str, Any]], *,
                       init: bool) -> dict[str, Any]:
        begun, process, termination = self._start_container(run, pod, container, volumes)
        statuses[container["name"]] = self._state(container, running=begun)
        self._report(run, pod, "Pending", statuses)
        statuses[container["name"]] = self._finish(run, pod, container, begun, process,
                                                   termination)
        self._report(run, pod, "Pending", statuses)
        return statuses[container["name"]]

    def _start_container(self, run: _PodRun, pod: dict[str, Any], container: dict[str, Any],
                         volumes: dict[str, Path]
                         ) -> tuple[str, subprocess.Popen[bytes], Path]:
        argv, termination = self._podman_args(run, pod, container, volumes)
        output = run.folder / f"{container['name']}.log"
        with output.open("wb") as out:
            process = subprocess.Popen([self.podman.binary, *argv], env=dict(self.podman.env),
                                       stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        run.containers[container["name"]] = process
        return _now(), process, termination

    def _finish(self, run: _PodRun, pod: dict[str, Any], container: dict[str, Any], begun: str,
                process: subprocess.Popen[bytes], termination: Path) -> dict[str, Any]:
        code = process.wait()
        output = (run.folder / f"{container['name']}.log").read_bytes()
        self.logs[f"{run.namespace}/{run.name}/{container['name']}"] = output
        message = ""
        if container.get("terminationMessagePolicy", "File") in ("File",
                                                                 "FallbackToLogsOnError"):
            message = termination.read_bytes()[:TERMINATION_MESSAGE_MAX].decode(
                errors="replace")
        if not message and container.get("terminationMessagePolicy") == \
                "FallbackToLogsOnError" and code != 0:
            message = output[-2048:].decode(errors="replace")
        reason = "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": begun,
                      "finishedAt": _now(), "containerID": f"podman://{container['name']}"}
        if code in (137, 143) and run.stopping.is_set():
            terminated["signal"] = code - 128
        if message:
            terminated["message"] = message
        return self._state(container, terminated=terminated)

    def _podman_args(self, run: _PodRun, pod: dict[str, Any], container: dict[str, Any],
                     volumes: dict[str, Path]) -> tuple[list[str], Path]:
        spec = pod["spec"]
        pod_security = spec.get("securityContext") or {}
        security = {**pod_security, **(container.get("securityContext") or {})}
        name = f"fx-{run.uid[:8]}-{container['name']}-{uuid.uuid4().hex[:4]}"
        run.names[container["name"]] = name
        args = ["run", "--rm", "--name", name, "--network", "host", "--pull", "never",
                "--pids-limit", "512", "--hostname", run.name]
        user = security.get("runAsUser")
        group = security.get("runAsGroup")
        if user is None and security.get("runAsNonRoot"):
            image_user = self.podman.image_inspect(container["image"])["Config"].get("User", "")
            if image_user.split(":")[0] in ("", "0", "root"):
                raise PodStartError(f"container {container['name']} has runAsNonRoot and "
                                    "image will run as root")
        if user is not None:
            if int(user) == 0 and security.get("runAsNonRoot"):
                raise PodStartError("runAsNonRoot and runAsUser 0")
            args += ["--user", f"{user}:{group if group is not None else user}"]
        if pod_security.get("fsGroup") is not None:
            args += ["--group-add", str(pod_security["fsGroup"])]
        if security.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        drop = (security.get("capabilities") or {}).get("drop") or []
        if "ALL" in drop:
            args += ["--cap-drop", "all"]
        else:
            for cap in drop:
                args += ["--cap-drop", cap]
        for cap in (security.get("capabilities") or {}).get("add") or []:
            args += ["--cap-add", cap]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        for mount in container.get("volumeMounts") or []:
            source = volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mode = "ro" if mount.get("readOnly") else "rw"
            args += ["--volume", f"{source}:{mount['mountPath']}:{mode}"]
        termination = run.folder / "termination" / container["name"]
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_bytes(b"")
        termination.chmod(0o666)
        path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        args += ["--volume", f"{termination}:{path}:rw"]
        for item in container.get("env") or []:
            args += ["--env", f"{item['name']}={self._env_value(pod, item)}"]
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        if container.get("command"):
            args += ["--entrypoint", json.dumps(container["command"])]
        args.append(container["image"])
        args += list(container.get("args") or [])
        return args, termination

    @staticmethod
    def _env_value(pod: dict[str, Any], item: dict[str, Any]) -> str:
        if "valueFrom" not in item:
            return str(item.get("value", ""))
        field_path = ((item["valueFrom"] or {}).get("fieldRef") or {}).get("fieldPath")
        values: dict[str, str] = {"metadata.name": pod["metadata"]["name"],
                  "metadata.namespace": pod["metadata"]["namespace"],
                  "metadata.uid": pod["metadata"]["uid"],
                  "spec.nodeName": pod["spec"].get("nodeName", ""),
                  "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        if field_path not in values:
            raise PodStartError(f"env {item['name']}: valueFrom {item['valueFrom']} "
                                "is not supported by the node agent")
        return values[field_path]

    # --- stopping ---------------------------------------------------------------------------

    def _kill(self, run: _PodRun, *, grace: float) -> None:
        """Graceful deletion: SIGTERM, then SIGKILL after the grace period (podman stop)."""
        with self._lock:
            if run.stopping.is_set():
                return
            run.stopping.set()
        for container, name in list(run.names.items()):
            process = run.containers.get(container)
            if process is not None and process.poll() is None:
                subprocess.run([self.podman.binary, "stop", "--time", str(int(grace)), name],
                               env=dict(self.podman.env), capture_output=True, check=False,
                               timeout=grace + 30)

    def _remove(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final delete, once the containers are gone."""
        try:
            # In the body: with a body, the API server ignores the query's gracePeriodSeconds.
            self.core.delete_namespaced_pod(name, namespace, body={
                "gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("delete of %s/%s: %s", namespace, name, exc)

    def _cleanup(self, run: _PodRun) -> None:
        for path in run.mounts:
            subprocess.run(["umount", str(path)], capture_output=True, check=False)
        run.mounts.clear()
        shutil.rmtree(run.folder / "volumes", ignore_errors=True)
