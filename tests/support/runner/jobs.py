"""The Job controller: pods for a Job until one succeeds, its retries, its deadline.

For each new Job, a pod named and labelled as the real controller names it, owned by the Job;
the Job's ``status`` (active, succeeded/failed, conditions) as the real controller writes it,
``backoffLimit`` retries and ``activeDeadlineSeconds`` (reason ``DeadlineExceeded``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiException, BatchV1Api, CoreV1Api

from support.runner.kubelet import Kubelet
from support.runner.records import (
    DEADLINE,
    JOB_DELETED,
    NAME_ALPHABET,
    STOPPED,
    SUCCEEDED,
    JobRun,
    JsonDict,
    PodRecord,
    json_body,
    utc_now,
)

log = logging.getLogger(__name__)


def job_condition(type_: str, reason: str, message: str) -> JsonDict:
    now = utc_now()
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def deadline_condition() -> JsonDict:
    return job_condition("Failed", DEADLINE, "Job was active longer than specified deadline")


def job_finished(job: Mapping[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class JobController(Kubelet):
    """Drives each Job the informer hands it, on a worker thread of its own."""

    def _job_worker(self, job: JobRun) -> None:
        try:
            with self._client() as api:
                self._drive_job(CoreV1Api(api), BatchV1Api(api), job)
        except Exception as exc:
            if not self._stopping.is_set():
                self.errors.append(exc)
                log.exception("pod runner: Job %s/%s failed in the runner", job.namespace,
                              job.name)

    def _drive_job(self, core: CoreV1Api, batch: BatchV1Api, job: JobRun) -> None:
        """One Job: pods until one succeeds, the backoff limit is reached or the deadline passes."""
        existing = json_body(core.list_namespaced_pod(
            job.namespace, label_selector=f"controller-uid={job.uid}", _preload_content=False))
        if existing.get("items"):
            return  # made before this runner started: not ours to run
        spec = job.body["spec"]
        backoff_limit = int(spec.get("backoffLimit", 6))
        seconds = spec.get("activeDeadlineSeconds")
        deadline = time.monotonic() + float(seconds) if seconds else None
        status: JsonDict = {"startTime": utc_now()}
        failed = 0
        while not (job.deleted or self._stopping.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                self._patch_job(batch, job, {"active": None, "failed": failed,
                                             "conditions": [deadline_condition()]})
                return
            pod = self._create_pod(core, job, deadline)
            self._patch_job(batch, job, {**status, "active": 1})
            status = {}
            outcome = self._run_pod(core, batch, job, pod)
            if outcome in (STOPPED, JOB_DELETED) or job.deleted or self._stopping.is_set():
                return
            if outcome == SUCCEEDED:
                self._patch_job(batch, job, {
                    "active": None, "succeeded": 1, "completionTime": utc_now(),
                    "conditions": [job_condition("Complete", "CompletionsReached",
                                              "Reached expected number of succeeded pods")]})
                return
            failed += 1
            if outcome == DEADLINE:
                self._patch_job(batch, job, {"active": None, "failed": failed,
                                             "conditions": [deadline_condition()]})
                with contextlib.suppress(ApiException):  # the Job controller deletes active pods
                    core.delete_namespaced_pod(pod.name, pod.namespace, _preload_content=False)
                return
            if failed > backoff_limit:
                self._patch_job(batch, job, {"active": None, "failed": failed, "conditions": [
                    job_condition("Failed", "BackoffLimitExceeded",
                               "Job has reached the specified backoff limit")]})
                return
            self._patch_job(batch, job, {"active": None, "failed": failed})
            self._stopping.wait(self.retry_delay)

    def _patch_job(self, batch: BatchV1Api, job: JobRun, status: JsonDict) -> None:
        if job.deleted:
            return
        try:
            batch.patch_namespaced_job_status(job.name, job.namespace, {"status": status},
                                              _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _create_pod(self, core: CoreV1Api, job: JobRun, deadline: float | None) -> PodRecord:
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
                created = json_body(core.create_namespaced_pod(job.namespace, body,
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
