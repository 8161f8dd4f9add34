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

The runner is built in layers (``support.runner``), each on the one before: its state, the
kubelet's volumes, containers and pod runs, the Job controller, the informer; this module adds
the lifecycle and the test hooks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from types import TracebackType
from typing import Self

from kubernetes.client import ApiException, BatchV1Api

from support.runner.informer import Informer
from support.runner.jobs import job_finished
from support.runner.records import (
    DEADLINE,
    FAILED,
    JOB_DELETED,
    POD_DELETED,
    STOPPED,
    SUCCEEDED,
    JsonDict,
    PodRecord,
    ProcessRecord,
    json_body,
)
from support.runner.sessions import remove_tree

__all__ = ["DEADLINE", "FAILED", "JOB_DELETED", "POD_DELETED", "STOPPED", "SUCCEEDED", "PodRecord",
           "PodRunner", "ProcessRecord"]


class PodRunner(Informer):
    """Runs the emulator's Jobs as local processes, from a thread of its own (see the module).

    Test hooks: :attr:`paused` (set: pods are created, their containers wait), :attr:`pods`,
    :attr:`pods_started`, :attr:`logs`, :attr:`processes` / :attr:`argvs`, :attr:`errors`,
    :meth:`wait_for_job` and :meth:`wait_for_pod`.
    """

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
            remove_tree(self.workdir)

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
                    last = json_body(batch.read_namespaced_job(name, namespace,
                                                           _preload_content=False))
                    if job_finished(last):
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
