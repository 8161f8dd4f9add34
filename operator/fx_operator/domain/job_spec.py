"""The Kubernetes objects of a run, built from a Package and an Execution. Pure: dicts out.

* the package's ConfigMap (its scripts), owned by the Package, kept in sync with it;
* the run's Secret, holding only the *sealed* bundle (ciphertext under the one-time run key);
* the run's Job: one container, the executor, which gets the run key from the broker
  (authenticated by a projected, audience-bound, short-lived token), opens the sealed bundle
  and holds it in a sealed memory file for the script (no init container: a second container's
  start was most of what a run added to a bare Job; no writable tmpfs); the restricted
  pod-security level; no default service-account token; no retries (the key is given once).

Names are deterministic, so a restarted operator finds the Job it made instead of making another.
Each try of an Execution (``spec.retries``) is a run of its own: try 1 keeps the names runs have
always had (``run-<uid>``, ``fx-run-<execution>``); try N puts N after the prefix's word
(``run-<uid>-N``, ``fx-runN-<execution>``), which no first try's name can be.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from fx_ef import contract
from fx_ef.command_lines import executor_command
from fx_operator.domain.api_group import (
    ANNOTATION_CONTENT_HASH,
    API_VERSION,
    LABEL_EXECUTION,
    LABEL_MANAGED_BY,
    LABEL_PACKAGE,
    LABEL_RUN,
    MANAGER,
)

SEALED_BUNDLE_KEY = "bundle"
SCRIPT_CONTAINER = "script"
RESULT_MAX_BYTES = 4096  # the kubelet keeps at most 4 KiB of a termination message
_MAX_NAME = 63


def _bounded(prefix: str, name: str) -> str:
    """``prefix + name`` within 63 characters; long names keep a hash so they stay unique."""
    full = f"{prefix}{name}"
    if len(full) <= _MAX_NAME:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{full[:_MAX_NAME - 9].rstrip('-')}-{digest}"


def _nth(word: str, try_number: int) -> str:
    return f"fx-{word}-" if try_number <= 1 else f"fx-{word}{try_number}-"


def run_id(execution_uid: str, try_number: int = 1) -> str:
    """The run id of one try of an Execution (audit records, the run key, fx_ef's execution_id)."""
    return f"run-{execution_uid}" if try_number <= 1 else f"run-{execution_uid}-{try_number}"


def job_name(execution: str, try_number: int = 1) -> str:
    return _bounded(_nth("run", try_number), execution)


def sealed_secret_name(execution: str, try_number: int = 1) -> str:
    return _bounded(_nth("sealed", try_number), execution)


def scripts_configmap_name(package: str) -> str:
    return _bounded("fx-pkg-", package)


def content_hash(scripts: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(scripts):
        digest.update(name.encode() + b"\0" + scripts[name].encode() + b"\0")
    return digest.hexdigest()


def owner_reference(kind: str, name: str, uid: str, *, controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid,
            "controller": controller, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class RunPodSettings:
    """What the operator's configuration decides about every run pod."""

    runtime_image: str
    broker_url: str
    broker_audience: str
    broker_ca_configmap: str
    token_expiration_seconds: int = 600
    ttl_seconds_after_finished: int = 3600
    run_user_id: int = 10001


@dataclass(frozen=True)
class RunPlan:
    """One Execution of one Package, as decided when it was admitted."""

    namespace: str
    execution: str
    execution_uid: str
    package: str
    run_id: str
    entrypoint: str
    script_names: tuple[str, ...]
    image: str | None = None
    timeout_seconds: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    try_number: int = 1

    @property
    def job_name(self) -> str:
        return job_name(self.execution, self.try_number)

    @property
    def sealed_secret_name(self) -> str:
        return sealed_secret_name(self.execution, self.try_number)

    def labels(self) -> dict[str, str]:
        return {LABEL_RUN: self.run_id, LABEL_EXECUTION: self.execution,
                LABEL_PACKAGE: self.package, LABEL_MANAGED_BY: MANAGER}


def scripts_configmap(namespace: str, package: str, package_uid: str,
                      scripts: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": scripts_configmap_name(package), "namespace": namespace,
                     "labels": {LABEL_PACKAGE: package, LABEL_MANAGED_BY: MANAGER},
                     "annotations": {ANNOTATION_CONTENT_HASH: content_hash(scripts)},
                     "ownerReferences": [owner_reference("Package", package, package_uid)]},
        "data": dict(sorted(scripts.items())),
    }


def broker_ca_configmap(namespace: str, name: str, ca_pem: str) -> dict[str, Any]:
    """The broker's CA certificate (public), for run pods to check the broker they talk to."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {LABEL_MANAGED_BY: MANAGER}},
            "data": {contract.POD_CA_FILE.rsplit("/", 1)[1]: ca_pem}}


def sealed_bundle_secret(plan: RunPlan, sealed_base64: str) -> dict[str, Any]:
    """The run's bundle, sealed under the one-time run key: ciphertext only (P1)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": plan.sealed_secret_name, "namespace": plan.namespace,
                     "labels": plan.labels(),
                     "ownerReferences": [owner_reference("Execution", plan.execution,
                                                         plan.execution_uid)]},
        "data": {SEALED_BUNDLE_KEY: sealed_base64},
    }


def _restricted() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def _dir(path: str) -> str:
    return path.rsplit("/", 1)[0]


def run_job(plan: RunPlan, settings: RunPodSettings) -> dict[str, Any]:
    """The Job of one run (its deterministic name: ``plan.job_name``)."""
    image = plan.image or settings.runtime_image
    env = [{"name": contract.ENV_RUN_ID, "value": plan.run_id},
           {"name": contract.ENV_BROKER_URL, "value": settings.broker_url},
           {"name": contract.ENV_TOKEN_FILE, "value": contract.POD_TOKEN_FILE},
           {"name": contract.ENV_CA_FILE, "value": contract.POD_CA_FILE},
           {"name": "PYTHONUNBUFFERED", "value": "1"},
           {"name": "HOME", "value": "/tmp"}]  # noqa: S108 (an emptyDir; the root fs is read-only)
    token_mount = {"name": "token", "mountPath": _dir(contract.POD_TOKEN_FILE), "readOnly": True}
    ca_mount = {"name": "broker-ca", "mountPath": _dir(contract.POD_CA_FILE), "readOnly": True}
    command = executor_command(sealed=contract.POD_SEALED_BUNDLE,
                               package_dir=contract.POD_PACKAGE_DIR,
                               result=contract.POD_RESULT_FILE, result_max_bytes=RESULT_MAX_BYTES)
    script = {
        "name": SCRIPT_CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
        "command": command, "env": env, "securityContext": _restricted(),
        "resources": plan.resources or {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "terminationMessagePath": contract.POD_RESULT_FILE,
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {"name": "package", "mountPath": contract.POD_PACKAGE_DIR, "readOnly": True},
            {"name": "sealed", "mountPath": _dir(contract.POD_SEALED_BUNDLE), "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
            token_mount, ca_mount],
    }
    volumes = [
        {"name": "package", "configMap": {
            "name": scripts_configmap_name(plan.package), "defaultMode": 0o444,
            "items": [{"key": n, "path": n} for n in plan.script_names]}},
        {"name": "sealed", "secret": {"secretName": plan.sealed_secret_name,
                                      "defaultMode": 0o400}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "token", "projected": {"defaultMode": 0o400, "sources": [
            {"serviceAccountToken": {"audience": settings.broker_audience,
                                     "expirationSeconds": settings.token_expiration_seconds,
                                     "path": contract.POD_TOKEN_FILE.rsplit("/", 1)[1]}}]}},
        {"name": "broker-ca", "configMap": {"name": settings.broker_ca_configmap,
                                            "defaultMode": 0o444}},
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": settings.run_user_id,
                            "runAsGroup": settings.run_user_id, "fsGroup": settings.run_user_id,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [script], "volumes": volumes,
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # the run key is handed out once: a retried pod could not start
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": plan.labels()}, "spec": pod_spec},
    }
    if plan.timeout_seconds:
        job_spec["activeDeadlineSeconds"] = plan.timeout_seconds
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": plan.job_name, "namespace": plan.namespace,
                     "labels": plan.labels(),
                     "ownerReferences": [owner_reference("Execution", plan.execution,
                                                         plan.execution_uid)]},
        "spec": job_spec,
    }
