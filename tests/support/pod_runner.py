"""A kubelet and Job controller for tests: runs the Jobs created in the emulator as local processes.

No real cluster runs here (``/work/shared/ENVIRONMENT.md``), and the emulator runs nothing: a Job
stays a record. :class:`PodRunner` plays the two missing parts against a
:class:`~support.kube_emulator.KubeEmulatorServer`, over real HTTP with the official client, so that
an Execution runs end to end in CI (``DESIGN.md`` §6):

* the Job controller: for each new Job, a Pod (``<job>-<5 chars>``, the template's labels plus
  ``job-name``/``controller-uid``, owned by the Job), then the Job's ``status`` (``active``,
  ``startTime``, ``succeeded``/``failed``, ``Complete``/``Failed`` conditions, ``completionTime``),
  ``backoffLimit`` retries and ``activeDeadlineSeconds`` (reason ``DeadlineExceeded``);
* the kubelet: volumes as local folders (configMap, secret, emptyDir — ``medium: Memory`` on
  ``/dev/shm`` —, projected service-account tokens registered with the emulator so a TokenReview
  accepts them, projected configMaps/secrets/downward API), then the init containers in order
  and the main containers, each ``command + args`` as a process of its own session, with mount
  paths and the termination message path rewritten to the local folders; the Pod's ``status``
  through ``/status`` as a kubelet writes it (phases, container states, termination messages).

Read-only mounts are enforced on the folders (``0500`` folders, ``0400`` files); when the tests run
as root, the containers' processes lose ``CAP_DAC_OVERRIDE`` and friends (bounding set), so the
permission bits hold for them as they would for a non-root pod user.

Usage::

    with KubeEmulatorServer(emulator) as server, PodRunner(server) as runner:
        batch.create_namespaced_job("ns", job)
        job = runner.wait_for_job("ns", "my-job", timeout=30)   # the Job, once Complete/Failed
        runner.logs[("ns", pod_name, "main")]                   # each container's output
        runner.argvs                                           # every argv run, for canary checks

Not emulated: images (a leading ``python`` is this interpreter, other commands come from ``PATH``;
an image's own entrypoint cannot run), users and groups (``runAsUser`` is ignored), resource
limits, probes, restarts inside a pod (``restartPolicy``), ``completions``/``parallelism`` above
1, ``ttlSecondsAfterFinished``, token expiry and refresh, the ``..data`` symlinks of atomic volume
writes, ``envFrom`` and ``valueFrom`` other than ``fieldRef``, and events.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ctypes
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import kubernetes.client
from kubernetes.client import ApiException, BatchV1Api, CoreV1Api
from kubernetes.watch.watch import iter_resp_lines

from support.kube_emulator import DEFAULT_AUDIENCES, KubeEmulatorServer

__all__ = ["PodRecord", "PodRunner", "ProcessRecord"]

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]

REPO: Final = Path(__file__).resolve().parents[2]
NODE_NAME: Final = "pod-runner"
DEFAULT_TERMINATION_PATH: Final = "/dev/termination-log"
TERMINATION_MESSAGE_MAX: Final = 4096  # what a kubelet keeps of a termination message
FALLBACK_LOG_LINES: Final = 80  # FallbackToLogsOnError: the log's tail, as a kubelet takes it
FALLBACK_LOG_BYTES: Final = 2048
NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
NODE_IP: Final = "127.0.0.1"

# Why a run of a pod ended early.
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
DEADLINE: Final = "DeadlineExceeded"
POD_DELETED: Final = "PodDeleted"
JOB_DELETED: Final = "JobDeleted"
STOPPED: Final = "Stopped"

_PR_CAPBSET_DROP: Final = 24
# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: without them root obeys the
# permission bits of files it owns, as a pod's non-root user does.
_DAC_CAPABILITIES: Final = (0, 1, 2, 3)


class _Cancelled(Exception):
    """The pod's run was cancelled (deadline, deletion, stop) before its containers ran."""


class _StartError(Exception):
    """A container or volume could not be set up (the kubelet's StartError / config errors)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclasses.dataclass
class ProcessRecord:
    """One container's process: what ran, for checks that no secret value is in an argv or env."""

    namespace: str
    pod: str
    container: str
    argv: list[str]
    env: dict[str, str]
    pid: int
    returncode: int | None = None


@dataclasses.dataclass(eq=False)
class PodRecord:
    """One pod the runner made: where its files are, the last status written, how it ended."""

    namespace: str
    name: str
    uid: str
    job: str
    job_uid: str
    spec: JsonDict
    directory: Path
    deadline: float | None = None  # time.monotonic() of the Job's activeDeadlineSeconds
    status: JsonDict = dataclasses.field(default_factory=dict)
    volumes: dict[str, Path] = dataclasses.field(default_factory=dict)
    tokens: list[str] = dataclasses.field(default_factory=list)
    outcome: str | None = None  # Succeeded, Failed, DeadlineExceeded, PodDeleted, ...
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)
    deleted: bool = False
    phase: str = "Pending"
    start_time: str = dataclasses.field(default_factory=_now)
    states: dict[tuple[str, str], JsonDict] = dataclasses.field(default_factory=dict)
    waiting_for: str | None = None  # a volume source that does not exist yet
    start_error: str | None = None
    _reason: str | None = None
    _wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    _conditions: dict[str, tuple[bool, str]] = dataclasses.field(default_factory=dict)
    _extra_dirs: list[Path] = dataclasses.field(default_factory=list)
    _locked: dict[Path, dict[Path, int]] = dataclasses.field(default_factory=dict)
    _cleaned: bool = False

    @property
    def reason(self) -> str | None:
        """Why the run was cancelled, if it was (a deadline counts once noticed)."""
        return self._reason

    def cancel(self, reason: str) -> None:
        """Ask the pod's worker to stop; the first reason wins, but a stop overrides all."""
        if self._reason is None or reason == STOPPED:
            self._reason = reason
        self._wake.set()

    def cancelled(self) -> str | None:
        """The cancellation reason, noticing a passed deadline now."""
        if self._reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self._reason = DEADLINE
        return self._reason


@dataclasses.dataclass(eq=False)
class _JobRun:
    namespace: str
    name: str
    uid: str
    body: JsonDict
    deleted: bool = False
    pod: PodRecord | None = None


@dataclasses.dataclass
class _Started:
    kind: str  # "init" or "main"
    container: JsonDict
    process: subprocess.Popen[bytes]
    record: ProcessRecord
    log_path: Path
    termination_file: Path
    started_at: str


def _capability_dropper() -> Callable[[], None] | None:
    """A ``preexec_fn`` that drops the DAC capabilities when the runner is root (Linux only)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    args = [(ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap)) for cap in _DAC_CAPABILITIES]
    zero = ctypes.c_ulong(0)

    def drop() -> None:
        for option, cap in args:
            prctl(option, cap, zero, zero, zero)

    return drop


def _session_members(session: int) -> list[int]:
    """Processes of a session that are still alive (a container's processes, whatever groups)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 3 and fields[3] == str(session) and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _kill_session(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal every process of the container's session (what a container runtime kills)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    for pid in _session_members(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _remove_tree(path: Path) -> None:
    """Remove a pod's folder, read-only parts included."""
    if not path.exists():
        return
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _json(response: Any) -> JsonDict:
    body: JsonDict = json.loads(response.data)
    return body


def _condition(type_: str, reason: str, message: str) -> JsonDict:
    now = _now()
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _deadline_condition() -> JsonDict:
    return _condition("Failed", DEADLINE, "Job was active longer than specified deadline")


def _finished(job: Mapping[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class PodRunner:
    """Runs the emulator's Jobs as local processes, from a thread of its own (see the module).

    Test hooks: :attr:`paused` (set: pods are created, their containers wait), :attr:`pods`,
    :attr:`pods_started`, :attr:`logs`, :attr:`processes` / :attr:`argvs`, :attr:`errors`,
    :meth:`wait_for_job` and :meth:`wait_for_pod`.
    """

    def __init__(self, server: KubeEmulatorServer, *, workdir: str | Path | None = None,
                 namespaces: Sequence[str] | None = None, node_name: str = NODE_NAME,
                 python: str = sys.executable, kill_grace: float = 5.0,
                 retry_delay: float = 0.5, watch_timeout: int = 10,
                 drop_root_privileges: bool = True) -> None:
        self.server = server
        self.namespaces = tuple(namespaces) if namespaces else None
        self.node_name = node_name
        self.python = python
        #: Seconds between SIGTERM and SIGKILL (capped by the pod's terminationGracePeriodSeconds).
        self.kill_grace = kill_grace
        #: Seconds between a failed pod and its replacement (a real controller backs off longer).
        self.retry_delay = retry_delay
        self.watch_timeout = watch_timeout
        #: Set: new pods are created and wait before mounting volumes and starting containers
        #: (e.g. to restart the operator while a run is in flight). Clear it to let them go on.
        self.paused = threading.Event()
        #: (namespace, pod) of every pod whose containers began to start, in order.
        self.pods_started: list[tuple[str, str]] = []
        #: Every pod made, by (namespace, name), in order of creation.
        self.pods: dict[tuple[str, str], PodRecord] = {}
        #: Each container's output (stdout and stderr interleaved, as ``kubectl logs`` shows it),
        #: by (namespace, pod, container); filled when the container ends.
        self.logs: dict[tuple[str, str, str], str] = {}
        #: Every process started, with its argv and environment.
        self.processes: list[ProcessRecord] = []
        #: Unexpected failures of the runner itself (a test can assert that there are none).
        self.errors: list[BaseException] = []
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="pod-runner-"))
        self._dropper = _capability_dropper() if drop_root_privileges else None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._jobs: dict[str, _JobRun] = {}
        self._pods_by_uid: dict[str, PodRecord] = {}
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._responses: set[Any] = set()
        self._configuration: Any = None
        self._synced: dict[tuple[str, str | None], threading.Event] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start watching Jobs and Pods; returns once the first listing of each is done."""
        if self._configuration is not None:
            raise RuntimeError("the pod runner can be started only once")
        with self.server.api_client() as api:
            self._configuration = api.configuration
        self.workdir.mkdir(parents=True, exist_ok=True)
        for kind in ("jobs", "pods"):
            for namespace in self.namespaces or (None,):
                self._synced[(kind, namespace)] = threading.Event()
                thread = threading.Thread(target=self._watch, args=(kind, namespace),
                                          name=f"pod-runner-watch-{kind}", daemon=True)
                self._threads.append(thread)
                thread.start()
        for synced in self._synced.values():
            synced.wait(10)
        return self

    def stop(self) -> None:
        """Kill every container process, end the watches, remove every pod's folders."""
        self._stopping.set()
        with self._lock:
            runs = list(self._pods_by_uid.values())
            responses = list(self._responses)
        for run in runs:
            run.cancel(STOPPED)
        for response in responses:
            with contextlib.suppress(Exception):
                getattr(response, "shutdown", response.close)()
        with self._lock:
            threads = [*self._threads, *self._workers]
        for thread in threads:
            thread.join(10)
        with self._lock:
            runs = list(self._pods_by_uid.values())
        for run in runs:
            self._cleanup(run)
        if self._own_workdir:
            _remove_tree(self.workdir)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- test hooks ------------------------------------------------------------------------------

    @property
    def argvs(self) -> list[list[str]]:
        """The argv of every process started so far."""
        with self._lock:
            return [list(record.argv) for record in self.processes]

    def wait_for_job(self, namespace: str, name: str, timeout: float = 60.0) -> JsonDict:
        """The Job (read through the API) once it has a ``Complete`` or ``Failed`` condition."""
        deadline = time.monotonic() + timeout
        last: JsonDict = {}
        with self._client() as api:
            batch = BatchV1Api(api)
            while True:
                with contextlib.suppress(ApiException):
                    last = _json(batch.read_namespaced_job(name, namespace,
                                                           _preload_content=False))
                    if _finished(last):
                        return last
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Job {namespace}/{name} did not finish in {timeout} s; "
                                       f"its status: {last.get('status')}")
                time.sleep(0.05)

    def wait_for_pod(self, namespace: str, job: str, timeout: float = 30.0) -> PodRecord:
        """The newest pod made for a Job, once there is one."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [p for p in self.pods.values() if p.namespace == namespace and p.job == job]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pod for Job {namespace}/{job} in {timeout} s")
            time.sleep(0.02)

    # --- watching --------------------------------------------------------------------------------

    def _client(self) -> kubernetes.client.ApiClient:
        """A client of its own for each thread (the connection pool is not made for sharing)."""
        return kubernetes.client.ApiClient(self._configuration)

    def _lister(self, api: kubernetes.client.ApiClient, kind: str,
                namespace: str | None) -> Callable[..., Any]:
        if kind == "jobs":
            batch = BatchV1Api(api)
            if namespace is None:
                return lambda **kw: batch.list_job_for_all_namespaces(**kw)
            return lambda **kw: batch.list_namespaced_job(namespace, **kw)
        core = CoreV1Api(api)
        selector = f"spec.nodeName={self.node_name}"
        if namespace is None:
            return lambda **kw: core.list_pod_for_all_namespaces(field_selector=selector, **kw)
        return lambda **kw: core.list_namespaced_pod(namespace, field_selector=selector, **kw)

    def _watch(self, kind: str, namespace: str | None) -> None:
        """LIST, then WATCH from its resourceVersion; LIST again after any failure (410 too)
        and each time a watch ends (every ``watch_timeout`` seconds), as an informer resyncs:
        a Job whose event went missing under a burst (seen: one in 50, once in a few CI runs;
        not explained yet) is started at the next LIST instead of never."""
        pause = 0.1
        while not self._stopping.is_set():
            try:
                with self._client() as api:
                    lister = self._lister(api, kind, namespace)
                    version = self._sync(lister, kind, namespace)
                    self._synced[(kind, namespace)].set()
                    pause = 0.1
                    while not self._stopping.is_set():
                        self._watch_once(lister, kind, version)
                        version = self._sync(lister, kind, namespace)
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.debug("pod runner: the %s watch restarts after %r", kind, exc)
                self._stopping.wait(pause)
                pause = min(pause * 2, 2.0)  # a server gone for good is not hammered

    def _sync(self, lister: Callable[..., Any], kind: str, namespace: str | None) -> str:
        listed = _json(lister(_preload_content=False))
        seen = set()
        for item in listed.get("items") or []:
            seen.add(item["metadata"]["uid"])
            self._handle(kind, "ADDED", item)
        with self._lock:
            tracked: Mapping[str, Any] = self._jobs if kind == "jobs" else self._pods_by_uid
            gone = [(uid, t) for uid, t in tracked.items()
                    if uid not in seen and namespace in (None, t.namespace)]
        for uid, thing in gone:
            self._handle(kind, "DELETED", {"metadata": {"uid": uid, "name": thing.name,
                                                        "namespace": thing.namespace}})
        return str(listed["metadata"]["resourceVersion"])

    def _watch_once(self, lister: Callable[..., Any], kind: str, version: str) -> str:
        response = lister(watch=True, resource_version=version, allow_watch_bookmarks=True,
                          timeout_seconds=self.watch_timeout, _preload_content=False)
        with self._lock:
            self._responses.add(response)
        try:
            if self._stopping.is_set():
                return version
            for line in iter_resp_lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    self._handle(kind, event["type"], obj)
        finally:
            with self._lock:
                self._responses.discard(response)
            response.close()
            response.release_conn()
        return version

    def _handle(self, kind: str, event: str, obj: JsonDict) -> None:
        try:
            if kind == "jobs":
                self._on_job(event, obj)
            else:
                self._on_pod(event, obj)
        except Exception as exc:  # a bug here must not end the watch silently
            self.errors.append(exc)
            log.exception("pod runner: handling a %s event failed", kind)

    def _on_job(self, event: str, job: JsonDict) -> None:
        meta = job["metadata"]
        with self._lock:
            known = self._jobs.get(meta["uid"])
            if event == "DELETED":
                if known is not None:
                    known.deleted = True
                    if known.pod is not None:
                        known.pod.cancel(JOB_DELETED)
                return
            spec = job.get("spec") or {}
            if known is not None or self._stopping.is_set() or spec.get("suspend") or \
                    _finished(job) or "template" not in spec:
                return
            run = _JobRun(meta["namespace"], meta["name"], meta["uid"], copy.deepcopy(job))
            self._jobs[run.uid] = run
            worker = threading.Thread(target=self._job_worker, args=(run,),
                                      name=f"pod-runner-job-{run.name}", daemon=True)
            self._workers.append(worker)
            worker.start()  # under the lock: stop() must never join a thread not yet started

    def _on_pod(self, event: str, pod: JsonDict) -> None:
        if event != "DELETED":
            return
        with self._lock:
            run = self._pods_by_uid.get(pod["metadata"]["uid"])
        if run is None or run.deleted:
            return
        run.deleted = True
        if run.finished.is_set():
            self._cleanup(run)
        else:
            run.cancel(POD_DELETED)

    # --- the Job controller ----------------------------------------------------------------------

    def _job_worker(self, job: _JobRun) -> None:
        try:
            with self._client() as api:
                self._drive_job(CoreV1Api(api), BatchV1Api(api), job)
        except Exception as exc:
            if not self._stopping.is_set():
                self.errors.append(exc)
                log.exception("pod runner: Job %s/%s failed in the runner", job.namespace,
                              job.name)

    def _drive_job(self, core: CoreV1Api, batch: BatchV1Api, job: _JobRun) -> None:
        """One Job: pods until one succeeds, the backoff limit is reached or the deadline passes."""
        existing = _json(core.list_namespaced_pod(
            job.namespace, label_selector=f"controller-uid={job.uid}", _preload_content=False))
        if existing.get("items"):
            return  # made before this runner started: not ours to run
        spec = job.body["spec"]
        backoff_limit = int(spec.get("backoffLimit", 6))
        seconds = spec.get("activeDeadlineSeconds")
        deadline = time.monotonic() + float(seconds) if seconds else None
        status: JsonDict = {"startTime": _now()}
        failed = 0
        while not (job.deleted or self._stopping.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                self._patch_job(batch, job, {"active": None, "failed": failed,
                                             "conditions": [_deadline_condition()]})
                return
            pod = self._create_pod(core, job, deadline)
            self._patch_job(batch, job, {**status, "active": 1})
            status = {}
            outcome = self._run_pod(core, batch, job, pod)
            if outcome in (STOPPED, JOB_DELETED) or job.deleted or self._stopping.is_set():
                return
            if outcome == SUCCEEDED:
                self._patch_job(batch, job, {
                    "active": None, "succeeded": 1, "completionTime": _now(),
                    "conditions": [_condition("Complete", "CompletionsReached",
                                              "Reached expected number of succeeded pods")]})
                return
            failed += 1
            if outcome == DEADLINE:
                self._patch_job(batch, job, {"active": None, "failed": failed,
                                             "conditions": [_deadline_condition()]})
                with contextlib.suppress(ApiException):  # the Job controller deletes active pods
                    core.delete_namespaced_pod(pod.name, pod.namespace, _preload_content=False)
                return
            if failed > backoff_limit:
                self._patch_job(batch, job, {"active": None, "failed": failed, "conditions": [
                    _condition("Failed", "BackoffLimitExceeded",
                               "Job has reached the specified backoff limit")]})
                return
            self._patch_job(batch, job, {"active": None, "failed": failed})
            self._stopping.wait(self.retry_delay)

    @staticmethod
    def _job_exists(batch: BatchV1Api, job: _JobRun) -> bool:
        try:
            found = _json(batch.read_namespaced_job(job.name, job.namespace,
                                                    _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(found["metadata"]["uid"] == job.uid)

    def _patch_job(self, batch: BatchV1Api, job: _JobRun, status: JsonDict) -> None:
        if job.deleted:
            return
        try:
            batch.patch_namespaced_job_status(job.name, job.namespace, {"status": status},
                                              _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _create_pod(self, core: CoreV1Api, job: _JobRun, deadline: float | None) -> PodRecord:
        template = job.body["spec"]["template"]
        template_meta = template.get("metadata") or {}
        labels = {**(template_meta.get("labels") or {}), "job-name": job.name,
                  "controller-uid": job.uid, "batch.kubernetes.io/job-name": job.name,
                  "batch.kubernetes.io/controller-uid": job.uid}
        spec = copy.deepcopy(template.get("spec") or {})
        spec["nodeName"] = self.node_name
        spec.setdefault("serviceAccountName", "default")
        meta: JsonDict = {"namespace": job.namespace, "labels": labels, "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": job.name, "uid": job.uid,
             "controller": True, "blockOwnerDeletion": True}]}
        if template_meta.get("annotations"):
            meta["annotations"] = dict(template_meta["annotations"])
        for _ in range(20):
            meta["name"] = f"{job.name}-{''.join(secrets.choice(NAME_ALPHABET) for _ in range(5))}"
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
            try:
                created = _json(core.create_namespaced_pod(job.namespace, body,
                                                           _preload_content=False))
                break
            except ApiException as exc:
                if exc.status != 409:
                    raise
        else:
            raise RuntimeError(f"no free pod name for Job {job.namespace}/{job.name}")
        name, uid = created["metadata"]["name"], created["metadata"]["uid"]
        pod = PodRecord(namespace=job.namespace, name=name, uid=uid, job=job.name,
                        job_uid=job.uid, spec=created.get("spec") or spec,
                        directory=self.workdir / f"{job.namespace}.{name}", deadline=deadline)
        pod.directory.mkdir(parents=True)
        (pod.directory / ".runner").mkdir(mode=0o700)
        with self._lock:
            self.pods[(pod.namespace, pod.name)] = pod
            self._pods_by_uid[uid] = pod
            job.pod = pod
            if job.deleted:
                pod.cancel(JOB_DELETED)
            if self._stopping.is_set():
                pod.cancel(STOPPED)
        return pod

    # --- the kubelet -----------------------------------------------------------------------------

    def _run_pod(self, core: CoreV1Api, batch: BatchV1Api, job: _JobRun, pod: PodRecord) -> str:
        """Volumes, init containers in order, then the main containers; returns the outcome."""
        try:
            outcome = self._run_pod_steps(core, pod)
            if outcome == POD_DELETED and not self._job_exists(batch, job):
                # The Job's deletion took its pod along, and the pod's watch was the faster.
                job.deleted = True
                outcome = JOB_DELETED
            pod.outcome = outcome
            return outcome
        finally:
            pod.finished.set()
            if pod.deleted:
                self._cleanup(pod)

    def _run_pod_steps(self, core: CoreV1Api, pod: PodRecord) -> str:
        self._push(core, pod)
        try:
            while self.paused.is_set():
                self._check(pod)
                time.sleep(0.02)
            self._check(pod)
            self._mount_volumes(core, pod)
        except _Cancelled:
            return self._end_cancelled(core, pod)
        except _StartError as exc:
            pod.start_error = str(exc)
            pod.phase = FAILED
            self._push(core, pod)
            return FAILED
        with self._lock:
            self.pods_started.append((pod.namespace, pod.name))
        for container in pod.spec.get("initContainers") or []:
            codes = self._run_containers(core, pod, [container], "init")
            if pod.cancelled() is not None:
                return self._end_cancelled(core, pod)
            if codes != [0]:
                pod.phase = FAILED
                self._push(core, pod)
                return FAILED
        codes = self._run_containers(core, pod, pod.spec.get("containers") or [], "main")
        if pod.reason is not None:
            return self._end_cancelled(core, pod)
        pod.phase = SUCCEEDED if all(code == 0 for code in codes) else FAILED
        self._push(core, pod)
        return pod.phase

    def _check(self, pod: PodRecord) -> None:
        if pod.cancelled() is not None:
            raise _Cancelled(pod.reason)

    def _end_cancelled(self, core: CoreV1Api, pod: PodRecord) -> str:
        reason = pod.reason or STOPPED
        if reason in (DEADLINE, JOB_DELETED):
            pod.phase = FAILED
            self._push(core, pod)
        return reason

    # --- volumes ---------------------------------------------------------------------------------

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
                raise _StartError(f"volume {name!r}: the pod runner cannot mount {kinds}")
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
            raise _StartError(f"projected source {sorted(source)}: not supported by the runner")

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
                raise _StartError(f"{kind} {pod.namespace}/{name} has no key {item['key']!r}")
            self._write_file(target, item.get("path") or item["key"], files[item["key"]],
                             item.get("mode", mode))

    def _read_source(self, core: CoreV1Api, pod: PodRecord, is_secret: bool, name: str,
                     optional: bool) -> JsonDict | None:
        """The object, waiting for it as a kubelet does (the pod stays Pending meanwhile)."""
        read = core.read_namespaced_secret if is_secret else core.read_namespaced_config_map
        while True:
            try:
                found = _json(read(name, pod.namespace, _preload_content=False))
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
            raise _StartError(f"fieldRef {path!r}: not supported by the pod runner")
        return values[path]

    @staticmethod
    def _write_file(root: Path, relative: str, content: bytes, mode: int) -> None:
        path = root / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise _StartError(f"volume path {relative!r} leaves its volume")
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

    # --- containers ------------------------------------------------------------------------------

    def _run_containers(self, core: CoreV1Api, pod: PodRecord, containers: list[JsonDict],
                        kind: str) -> list[int | None]:
        """Start the containers together, wait for all, record how each ended."""
        codes: list[int | None] = [None] * len(containers)
        started: list[tuple[int, _Started]] = []
        for index, container in enumerate(containers):
            if pod.cancelled() is not None:
                break
            try:
                started.append((index, self._start(pod, container, kind)))
            except _StartError as exc:
                codes[index] = 128
                pod.states[(kind, container["name"])] = {"terminated": {
                    "exitCode": 128, "reason": "StartError", "message": str(exc)[:4096],
                    "startedAt": _now(), "finishedAt": _now()}}
        for _, item in started:
            pod.states[(kind, item.container["name"])] = {"running": {"startedAt": item.started_at}}
        if started:
            pod.phase = "Running" if kind == "main" else pod.phase
            self._push(core, pod)
            self._supervise(pod, [item.process for _, item in started])
        for index, item in started:
            codes[index] = self._ended(pod, item)
        self._push(core, pod)
        return codes

    def _start(self, pod: PodRecord, container: JsonDict, kind: str) -> _Started:
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
                raise _StartError(f"failed to start the container process: {exc}") from exc
        record = ProcessRecord(pod.namespace, pod.name, container["name"], argv, env, process.pid)
        with self._lock:
            self.processes.append(record)
        return _Started(kind, container, process, record, log_path, termination_file, _now())

    def _prepare(self, pod: PodRecord, container: JsonDict) -> tuple[list[str], dict[str, str],
                                                                        Path]:
        """argv and environment with the pod's paths turned into the local folders."""
        name = container["name"]
        paths: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in pod.volumes:
                raise _StartError(f"volumeMount {mount['name']!r}: no such volume in the pod")
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
            raise _StartError("no command: the pod runner cannot run an image's entrypoint")
        argv = [local(str(arg)) for arg in command + list(container.get("args") or [])]
        if argv[0] in ("python", "python3"):
            argv[0] = self.python
        if container.get("envFrom"):
            raise _StartError("envFrom is not supported by the pod runner")
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
               "HOSTNAME": pod.name}
        for item in container.get("env") or []:
            if "valueFrom" in item:
                field = ((item["valueFrom"] or {}).get("fieldRef") or {}).get("fieldPath")
                if field is None:
                    raise _StartError(f"env {item['name']}: only fieldRef is supported")
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
                    _kill_session(process, signal.SIGKILL)
                killed = True
            elif reason is not None and signalled is None:
                for process in processes:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGTERM)
                signalled = time.monotonic()
            elif signalled is not None and not killed and time.monotonic() - signalled >= grace:
                for process in processes:
                    _kill_session(process, signal.SIGKILL)
                killed = True
            if pod._wake.wait(0.02):
                pod._wake.clear()
        for process in processes:  # the container is gone: so is everything it started
            _kill_session(process, signal.SIGKILL)

    def _ended(self, pod: PodRecord, item: _Started) -> int:
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
                                "startedAt": item.started_at, "finishedAt": _now(),
                                "containerID": f"pod-runner://{item.process.pid}"}
        if returncode < 0:
            terminated["signal"] = -returncode
        if message:
            terminated["message"] = message.decode(errors="replace")
        pod.states[(item.kind, item.container["name"])] = {"terminated": terminated}
        return code

    # --- pod status ------------------------------------------------------------------------------

    def _pod_status(self, pod: PodRecord) -> JsonDict:
        inits = pod.spec.get("initContainers") or []
        mains = pod.spec.get("containers") or []
        waiting_reason = "ContainerCreating"
        if pod.start_error:
            waiting_reason = "CreateContainerConfigError"
        elif inits:
            waiting_reason = "PodInitializing"

        def status_of(container: JsonDict, kind: str, reason: str) -> JsonDict:
            waiting: JsonDict = {"reason": reason}
            if pod.start_error:
                waiting["message"] = pod.start_error
            state = pod.states.get((kind, container["name"])) or {"waiting": waiting}
            running = "running" in state
            found: JsonDict = {"name": container["name"], "image": container.get("image", ""),
                               "imageID": "", "ready": running, "started": running,
                               "restartCount": 0, "state": state, "lastState": {}}
            terminated = state.get("terminated") or {}
            if terminated.get("containerID"):
                found["containerID"] = terminated["containerID"]
            return found

        init_statuses = [status_of(c, "init", "PodInitializing" if not pod.start_error
                                   else waiting_reason) for c in inits]
        main_statuses = [status_of(c, "main", waiting_reason) for c in mains]
        initialized = all((s["state"].get("terminated") or {}).get("exitCode") == 0
                          for s in init_statuses)
        ready = bool(main_statuses) and all("running" in s["state"] for s in main_statuses)
        status: JsonDict = {
            "phase": pod.phase, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP, "podIPs": [{"ip": NODE_IP}], "startTime": pod.start_time,
            "qosClass": "BestEffort",
            "conditions": self._conditions(pod, {"PodScheduled": True, "Initialized": initialized,
                                                 "ContainersReady": ready, "Ready": ready}),
            "containerStatuses": main_statuses,
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        return status

    @staticmethod
    def _conditions(pod: PodRecord, wanted: Mapping[str, bool]) -> list[JsonDict]:
        conditions: list[JsonDict] = []
        for type_, ok in wanted.items():
            previous = pod._conditions.get(type_)
            if previous is None or previous[0] != ok:
                pod._conditions[type_] = (ok, _now())
            condition: JsonDict = {"type": type_, "status": "True" if ok else "False",
                                   "lastTransitionTime": pod._conditions[type_][1]}
            if not ok and type_ == "Initialized":
                condition["reason"] = "ContainersNotInitialized"
            elif not ok:
                condition["reason"] = ("PodCompleted" if pod.phase in (SUCCEEDED, FAILED)
                                       else "ContainersNotReady")
            conditions.append(condition)
        return conditions

    def _push(self, core: CoreV1Api, pod: PodRecord) -> None:
        """Write the pod's status through ``/status``, as a kubelet does (a gone pod is fine)."""
        pod.status = self._pod_status(pod)
        if pod.deleted or pod.reason in (STOPPED, POD_DELETED):
            return
        try:
            core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": pod.status},
                                             _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _cleanup(self, pod: PodRecord) -> None:
        with self._lock:
            if pod._cleaned:
                return
            pod._cleaned = True
        for folder in [pod.directory, *pod._extra_dirs]:
            _remove_tree(folder)
