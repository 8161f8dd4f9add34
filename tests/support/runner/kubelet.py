"""The kubelet's run of one pod: volumes, init containers in order, then the main ones.

A pod can be cancelled at any step (its Job's deadline, its deletion, the runner stopping); the
outcome says which, and the pod's last status is written as a kubelet would leave it.
"""

from __future__ import annotations

import time

from kubernetes.client import ApiException, BatchV1Api, CoreV1Api

from support.runner.containers import Containers
from support.runner.records import (
    DEADLINE,
    FAILED,
    JOB_DELETED,
    POD_DELETED,
    STOPPED,
    SUCCEEDED,
    Cancelled,
    JobRun,
    PodRecord,
    StartError,
    json_body,
)
from support.runner.status import push_status


class Kubelet(Containers):
    """Runs one pod made by the Job controller, to its outcome."""

    def _run_pod(self, core: CoreV1Api, batch: BatchV1Api, job: JobRun, pod: PodRecord) -> str:
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
        push_status(core, pod)
        try:
            while self.paused.is_set():
                self._check(pod)
                time.sleep(0.02)
            self._check(pod)
            self._mount_volumes(core, pod)
        except Cancelled:
            return self._end_cancelled(core, pod)
        except StartError as exc:
            pod.start_error = str(exc)
            pod.phase = FAILED
            push_status(core, pod)
            return FAILED
        with self._lock:
            self.pods_started.append((pod.namespace, pod.name))
        for container in pod.spec.get("initContainers") or []:
            codes = self._run_containers(core, pod, [container], "init")
            if pod.cancelled() is not None:
                return self._end_cancelled(core, pod)
            if codes != [0]:
                pod.phase = FAILED
                push_status(core, pod)
                return FAILED
        codes = self._run_containers(core, pod, pod.spec.get("containers") or [], "main")
        if pod.reason is not None:
            return self._end_cancelled(core, pod)
        pod.phase = SUCCEEDED if all(code == 0 for code in codes) else FAILED
        push_status(core, pod)
        return pod.phase

    @staticmethod
    def _job_exists(batch: BatchV1Api, job: JobRun) -> bool:
        try:
            found = json_body(batch.read_namespaced_job(job.name, job.namespace,
                                                    _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(found["metadata"]["uid"] == job.uid)

    def _end_cancelled(self, core: CoreV1Api, pod: PodRecord) -> str:
        reason = pod.reason or STOPPED
        if reason in (DEADLINE, JOB_DELETED):
            pod.phase = FAILED
            push_status(core, pod)
        return reason
