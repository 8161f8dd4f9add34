"""The admission benchmark's floor: a kopf operator whose whole admission is one Job create.

Run by ``bench_admission.py`` as ``kopf run --standalone -A bench/noop_operator.py`` with
``$KUBECONFIG`` pointing at the emulator, the same way the fx operator runs (its own process).
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config

config.load_kube_config()
BATCH = client.BatchV1Api()


@kopf.on.create("fx.dev", "v1alpha1", "executions")
def create(name: str, namespace: str, **_: Any) -> None:
    BATCH.create_namespaced_job(namespace, {
        "metadata": {"name": f"noop-{name}", "labels": {"fx.dev/execution": name}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "x"}]}}}})
