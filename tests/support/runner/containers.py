"""The kubelet's containers: each ``command + args`` as a local process of its own session.

Paths under the mounts and the termination message path are rewritten to the pod's folders; the
output is kept as ``kubectl logs`` shows it; a cancelled pod's processes get SIGTERM, then SIGKILL
after the grace period; each container's end is recorded as a kubelet records it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

from kubernetes.client import CoreV1Api

from support.runner.records import STOPPED, JsonDict, PodRecord, ProcessRecord, StartError, utc_now
from support.runner.sessions import kill_session
from support.runner.status import push_status
from support.runner.volumes import Volumes

REPO: Final = Path(__file__).resolve().parents[3]
DEFAULT_TERMINATION_PATH: Final = "/dev/termination-log"
TERMINATION_MESSAGE_MAX: Final = 4096  # what a kubelet keeps of a termination message
FALLBACK_LOG_LINES: Final = 80  # FallbackToLogsOnError: the log's tail, as a kubelet takes it
FALLBACK_LOG_BYTES: Final = 2048


@dataclasses.dataclass
class Started:
    kind: str  # "init" or "main"
    container: JsonDict
    process: subprocess.Popen[bytes]
    record: ProcessRecord
    log_path: Path
    termination_file: Path
    started_at: str


class Containers(Volumes):
    """Starting a pod's containers together, supervising them, recording how each ended."""

    def _run_containers(self, core: CoreV1Api, pod: PodRecord, containers: list[JsonDict],
                        kind: str) -> list[int | None]:
        """Start the containers together, wait for all, record how each ended."""
        codes: list[int | None] = [None] * len(containers)
        started: list[tuple[int, Started]] = []
        for index, container in enumerate(containers):
            if pod.cancelled() is not None:
                break
            try:
                started.append((index, self._start(pod, container, kind)))
            except StartError as exc:
                codes[index] = 128
                pod.states[(kind, container["name"])] = {"terminated": {
                    "exitCode": 128, "reason": "StartError", "message": str(exc)[:4096],
                    "startedAt": utc_now(), "finishedAt": utc_now()}}
        for _, item in started:
            pod.states[(kind, item.container["name"])] = {"running": {"startedAt": item.started_at}}
        if started:
            pod.phase = "Running" if kind == "main" else pod.phase
            push_status(core, pod)
            self._supervise(pod, [item.process for _, item in started])
        for index, item in started:
            codes[index] = self._ended(pod, item)
        push_status(core, pod)
        return codes

    def _start(self, pod: PodRecord, container: JsonDict, kind: str) -> Started:
        argv, env, termination_file = self._prepare(pod, container)
        logs = pod.directory / ".runner" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{container['name']}.log"
        with open(log_path, "wb") as output:
            try:
                process = subprocess.Popen(
                    argv, cwd=pod.directory, env=env, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self._dropper)
            except OSError as exc:
                raise StartError(f"failed to start the container process: {exc}") from exc
        record = ProcessRecord(pod.namespace, pod.name, container["name"], argv, env, process.pid)
        with self._lock:
            self.processes.append(record)
        return Started(kind, container, process, record, log_path, termination_file, utc_now())

    def _prepare(self, pod: PodRecord, container: JsonDict) -> tuple[list[str], dict[str, str],
                                                                        Path]:
        """argv and environment with the pod's paths turned into the local folders."""
        name = container["name"]
        paths: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in pod.volumes:
                raise StartError(f"volumeMount {mount['name']!r}: no such volume in the pod")
            folder = pod.volumes[mount["name"]]
            if mount.get("subPath"):
                folder = folder / mount["subPath"]
            mount_path = mount["mountPath"].rstrip("/") or "/"
            paths.append((mount_path, str(folder)))
            volume = next(v for v in pod.spec.get("volumes") or [] if v["name"] == mount["name"])
            if "emptyDir" in volume:
                self._set_read_only(pod, pod.volumes[mount["name"]], bool(mount.get("readOnly")))
        termination_dir = pod.directory / ".runner" / "termination" / name
        termination_dir.mkdir(parents=True, exist_ok=True)
        termination_file = termination_dir / "termination-log"
        termination_file.write_bytes(b"")
        termination_file.chmod(0o666)
        paths.append((container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH,
                      str(termination_file)))
        paths.sort(key=lambda pair: len(pair[0]), reverse=True)

        def local(value: str) -> str:
            for mount_path, target in paths:
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    return target + value[len(mount_path):]
            return value

        command = list(container.get("command") or [])
        if not command:
            raise StartError("no command: the pod runner cannot run an image's entrypoint")
        argv = [local(str(arg)) for arg in command + list(container.get("args") or [])]
        if argv[0] in ("python", "python3"):
            argv[0] = self.python
        if container.get("envFrom"):
            raise StartError("envFrom is not supported by the pod runner")
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
               "HOSTNAME": pod.name}
        for item in container.get("env") or []:
            if "valueFrom" in item:
                field = ((item["valueFrom"] or {}).get("fieldRef") or {}).get("fieldPath")
                if field is None:
                    raise StartError(f"env {item['name']}: only fieldRef is supported")
                env[item["name"]] = self._field(pod, field)
            else:
                env[item["name"]] = local(str(item.get("value", "")))
        own = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([*own, str(REPO), str(REPO / "operator")])
        return argv, env, termination_file

    def _supervise(self, pod: PodRecord, processes: list[subprocess.Popen[bytes]]) -> None:
        """Wait for the processes; on cancellation SIGTERM their groups, SIGKILL after the grace."""
        grace = min(self.kill_grace, float(pod.spec.get("terminationGracePeriodSeconds", 30)))
        signalled: float | None = None
        killed = False
        while any(process.poll() is None for process in processes):
            reason = pod.cancelled()
            if reason == STOPPED and not killed:
                for process in processes:
                    kill_session(process, signal.SIGKILL)
                killed = True
            elif reason is not None and signalled is None:
                for process in processes:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGTERM)
                signalled = time.monotonic()
            elif signalled is not None and not killed and time.monotonic() - signalled >= grace:
                for process in processes:
                    kill_session(process, signal.SIGKILL)
                killed = True
            if pod._wake.wait(0.02):
                pod._wake.clear()
        for process in processes:  # the container is gone: so is everything it started
            kill_session(process, signal.SIGKILL)

    def _ended(self, pod: PodRecord, item: Started) -> int:
        returncode = item.process.returncode
        code = returncode if returncode >= 0 else 128 - returncode
        item.record.returncode = code
        output = item.log_path.read_bytes()
        with self._lock:
            self.logs[(pod.namespace, pod.name, item.container["name"])] = output.decode(
                errors="replace")
        try:
            message = item.termination_file.read_bytes()[:TERMINATION_MESSAGE_MAX]
        except OSError:
            message = b""
        policy = item.container.get("terminationMessagePolicy") or "File"
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            message = b"\n".join(output.splitlines()[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
        terminated: JsonDict = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                "startedAt": item.started_at, "finishedAt": utc_now(),
                                "containerID": f"pod-runner://{item.process.pid}"}
        if returncode < 0:
            terminated["signal"] = -returncode
        if message:
            terminated["message"] = message.decode(errors="replace")
        pod.states[(item.kind, item.container["name"])] = {"terminated": terminated}
        return code
