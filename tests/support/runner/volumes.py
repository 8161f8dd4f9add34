"""The kubelet's volumes, as local folders a container's paths are rewritten to.

configMap, secret, emptyDir (``medium: Memory`` on ``/dev/shm``), projected service-account
tokens (registered with the emulator, so that a TokenReview accepts them), projected
configMaps/secrets and the downward API; read-only mounts are enforced by permission bits.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import tempfile
import time
from pathlib import Path

from kubernetes.client import ApiException, CoreV1Api

from support.emulator.tokens import DEFAULT_AUDIENCES
from support.runner.records import NODE_IP, JsonDict, PodRecord, StartError, json_body
from support.runner.state import RunnerState


class Volumes(RunnerState):
    """Mounting a pod's volumes (and reading the downward API) before its containers start."""

    def _mount_volumes(self, core: CoreV1Api, pod: PodRecord) -> None:
        for volume in pod.spec.get("volumes") or []:
            name = volume["name"]
            target = pod.directory / "volumes" / name
            if "emptyDir" in volume:
                if (volume["emptyDir"] or {}).get("medium") == "Memory" and \
                        os.access("/dev/shm", os.W_OK):
                    base = Path(tempfile.mkdtemp(prefix=f"pod-runner-{pod.name}-",
                                                 dir="/dev/shm"))
                    pod._extra_dirs.append(base)
                    target = base / name
                target.mkdir(parents=True)
                target.chmod(0o777)
            elif "configMap" in volume or "secret" in volume:
                target.mkdir(parents=True)
                source = volume.get("configMap") or volume.get("secret") or {}
                self._project_object(core, pod, target, "secret" in volume, source,
                                     source.get("defaultMode", 0o644))
                self._seal(target)
            elif "projected" in volume:
                target.mkdir(parents=True)
                projected = volume["projected"] or {}
                mode = projected.get("defaultMode", 0o644)
                for source in projected.get("sources") or []:
                    self._project_source(core, pod, target, source, mode)
                self._seal(target)
            elif "downwardAPI" in volume:
                target.mkdir(parents=True)
                downward = volume["downwardAPI"] or {}
                self._project_fields(pod, target, downward.get("items") or [],
                                     downward.get("defaultMode", 0o644))
                self._seal(target)
            else:
                kinds = sorted(set(volume) - {"name"})
                raise StartError(f"volume {name!r}: the pod runner cannot mount {kinds}")
            pod.volumes[name] = target

    def _project_source(self, core: CoreV1Api, pod: PodRecord, target: Path, source: JsonDict,
                        mode: int) -> None:
        if "serviceAccountToken" in source:
            self._write_token(pod, target, source["serviceAccountToken"] or {}, mode)
        elif "configMap" in source or "secret" in source:
            self._project_object(core, pod, target, "secret" in source,
                                 source.get("configMap") or source.get("secret") or {}, mode)
        elif "downwardAPI" in source:
            self._project_fields(pod, target, (source["downwardAPI"] or {}).get("items") or [],
                                 mode)
        else:
            raise StartError(f"projected source {sorted(source)}: not supported by the runner")

    def _write_token(self, pod: PodRecord, target: Path, source: JsonDict, mode: int) -> None:
        """A fresh token, valid for TokenReview as this pod's service account and audience."""
        token = f"pod-runner.{secrets.token_urlsafe(32)}"
        audience = source.get("audience")
        audiences = (audience,) if audience else DEFAULT_AUDIENCES
        account = pod.spec.get("serviceAccountName") or "default"
        emulator = self.server.emulator
        self.server.call(lambda: emulator.register_token(
            token, namespace=pod.namespace, service_account=account, pod_name=pod.name,
            pod_uid=pod.uid, audiences=audiences))
        pod.tokens.append(token)
        self._write_file(target, source.get("path") or "token", token.encode(), mode)

    def _project_object(self, core: CoreV1Api, pod: PodRecord, target: Path, is_secret: bool,
                        source: JsonDict, mode: int) -> None:
        """A ConfigMap's or Secret's keys as files (``items`` pick and rename them)."""
        name = source.get("secretName") or source.get("name") or ""
        found = self._read_source(core, pod, is_secret, name, bool(source.get("optional")))
        if found is None:
            return
        files: dict[str, bytes] = {}
        if is_secret:
            for key, value in (found.get("data") or {}).items():
                files[key] = base64.b64decode(value)
        else:
            for key, value in (found.get("data") or {}).items():
                files[key] = str(value).encode()
            for key, value in (found.get("binaryData") or {}).items():
                files[key] = base64.b64decode(value)
        items = source.get("items")
        if items is None:
            for key, content in files.items():
                self._write_file(target, key, content, mode)
            return
        for item in items:
            if item["key"] not in files:
                if source.get("optional"):
                    continue
                kind = "Secret" if is_secret else "ConfigMap"
                raise StartError(f"{kind} {pod.namespace}/{name} has no key {item['key']!r}")
            self._write_file(target, item.get("path") or item["key"], files[item["key"]],
                             item.get("mode", mode))

    def _read_source(self, core: CoreV1Api, pod: PodRecord, is_secret: bool, name: str,
                     optional: bool) -> JsonDict | None:
        """The object, waiting for it as a kubelet does (the pod stays Pending meanwhile)."""
        read = core.read_namespaced_secret if is_secret else core.read_namespaced_config_map
        while True:
            try:
                found = json_body(read(name, pod.namespace, _preload_content=False))
                pod.waiting_for = None
                return found
            except ApiException as exc:
                if exc.status != 404:
                    raise
            if optional:
                return None
            pod.waiting_for = f"{'Secret' if is_secret else 'ConfigMap'} {pod.namespace}/{name}"
            self._check(pod)
            time.sleep(0.1)

    def _project_fields(self, pod: PodRecord, target: Path, items: list[JsonDict],
                        mode: int) -> None:
        for item in items:
            value = self._field(pod, (item.get("fieldRef") or {}).get("fieldPath", ""))
            self._write_file(target, item["path"], value.encode(), item.get("mode", mode))

    def _field(self, pod: PodRecord, path: str) -> str:
        """A downward-API ``fieldRef`` (the common fields only)."""
        values = {"metadata.name": pod.name, "metadata.namespace": pod.namespace,
                  "metadata.uid": pod.uid, "spec.nodeName": self.node_name,
                  "spec.serviceAccountName": pod.spec.get("serviceAccountName") or "default",
                  "status.podIP": NODE_IP, "status.hostIP": NODE_IP}
        if path not in values:
            raise StartError(f"fieldRef {path!r}: not supported by the pod runner")
        return values[path]

    @staticmethod
    def _write_file(root: Path, relative: str, content: bytes, mode: int) -> None:
        path = root / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise StartError(f"volume path {relative!r} leaves its volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)

    @staticmethod
    def _seal(root: Path) -> None:
        """ConfigMap, Secret and projected volumes are always mounted read-only."""
        for folder, dirs, _ in os.walk(root, topdown=False):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o555)  # noqa: S103 (as mounted)
        root.chmod(0o555)

    @staticmethod
    def _set_read_only(pod: PodRecord, root: Path, read_only: bool) -> None:
        """Lock an emptyDir for a ``readOnly`` mount (folders 0500, files 0400), or give back
        its modes for a read-write one: the script then cannot write or delete there."""
        if read_only and root not in pod._locked:
            modes: dict[Path, int] = {root: root.stat().st_mode & 0o7777}
            for folder, dirs, files in os.walk(root):
                for name in [*dirs, *files]:
                    path = Path(folder, name)
                    if not path.is_symlink():
                        modes[path] = path.stat().st_mode & 0o7777
            for path in modes:
                path.chmod(0o500 if path.is_dir() else 0o400)
            pod._locked[root] = modes
        elif not read_only and root in pod._locked:
            for path, mode in pod._locked.pop(root).items():
                with contextlib.suppress(OSError):
                    path.chmod(mode)
