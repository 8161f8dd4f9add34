"""Execution admission (created → its Job created) against the emulated API server.

* Admissions per second for a burst of Executions, with the real operator (store, resolution,
  sealing, run-key registration, Secret + Job), as a ratio to a no-op kopf operator that only
  creates a Job per Execution on a fresh emulator in the same run. Target: ratio ≥ 0.5.
* p50/p99 admission latency at an offered 20 Executions/s. Target: p99 ≤ 100 ms.

The pod runner is paused: runs are not executed, only admitted. Jobs are timestamped by a watch.
Run: ``python bench/bench_admission.py`` (BENCH_EXECUTIONS, default 100; BENCH_SECONDS, 5).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kopf
from common import percentile  # also puts the project on sys.path
from kopf.testing import KopfRunner
from kubernetes import client, watch
from support.cluster import Cluster, cluster
from support.kube_emulator import KubeEmulator, KubeEmulatorServer
from support.postgres import PostgresServer

N = int(os.environ.get("BENCH_EXECUTIONS", "100"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REPO = Path(__file__).resolve().parents[1]
NS = "team-a"


class JobClock:
    """Timestamps each Job's ADDED event, from a watch in a thread."""

    def __init__(self, api: client.ApiClient) -> None:
        self.seen: dict[str, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(api,), daemon=True)
        self._thread.start()

    def _run(self, api: client.ApiClient) -> None:
        batch = client.BatchV1Api(api)
        while not self._stop:
            for event in watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=2):
                if event["type"] == "ADDED":
                    labels = event["object"].metadata.labels or {}
                    self.seen.setdefault(labels.get("fx.dev/execution", ""), time.perf_counter())

    def wait(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(n in self.seen for n in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(n in self.seen for n in names)}/{len(names)} Jobs")
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop = True


def _execution(name: str) -> dict[str, Any]:
    return {"apiVersion": "fx.dev/v1alpha1", "kind": "Execution", "metadata": {"name": name},
            "spec": {"package": "bench"}}


def burst(custom: client.CustomObjectsApi, clock: JobClock, prefix: str) -> float:
    names = [f"{prefix}-{i}" for i in range(N)]
    started = time.perf_counter()
    for name in names:
        custom.create_namespaced_custom_object("fx.dev", "v1alpha1", NS, "executions",
                                               _execution(name))
    clock.wait(names)
    return N / (max(clock.seen[n] for n in names) - started)


def steady(custom: client.CustomObjectsApi, clock: JobClock) -> list[float]:
    count = int(SECONDS * 20)
    created: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(count):
        time.sleep(max(0.0, start + i / 20 - time.perf_counter()))
        name = f"steady-{i}"
        created[name] = time.perf_counter()
        custom.create_namespaced_custom_object("fx.dev", "v1alpha1", NS, "executions",
                                               _execution(name))
    clock.wait(list(created))
    return [clock.seen[n] - t for n, t in created.items()]


def noop_rate(tmp: Path) -> float:
    """The floor: a kopf operator whose whole admission is one Job create."""
    registry = kopf.OperatorRegistry()
    emulator = KubeEmulator()
    emulator.load_crds(REPO / "crds")
    with KubeEmulatorServer(emulator, kubeconfig=tmp / "noop-kubeconfig") as server:
        api = server.api_client()
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        info = server.kopf_connection_info()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return info

        @kopf.on.create("fx.dev", "v1alpha1", "executions", registry=registry)
        def create(name: str, namespace: str, **_: Any) -> None:
            client.BatchV1Api(api).create_namespaced_job(namespace, {
                "metadata": {"name": f"noop-{name}", "labels": {"fx.dev/execution": name}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "x"}]}}}})

        clock = JobClock(api)
        with KopfRunner(["run", "-A", "--standalone"], registry=registry):
            time.sleep(1)
            rate = burst(client.CustomObjectsApi(api), clock, "noop")
        clock.stop()
    return rate


def operator_numbers(k8s: Cluster) -> tuple[float, list[float]]:
    k8s.runner.paused.set()
    k8s.package(NS, "bench", {"main.py": "print('x')\n"})
    k8s.sealed_secret(NS, "bench-secrets", {f"S{i}": f"value-{i}" for i in range(20)}, "package",
                      package="bench")
    k8s.ready("packages", NS, "bench")
    k8s.ready("scopedsecrets", NS, "bench-secrets")
    clock = JobClock(k8s.api)
    rate = burst(k8s.custom, clock, "burst")
    latencies = steady(k8s.custom, clock)
    clock.stop()
    return rate, latencies


def main() -> None:
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp_dir, PostgresServer() as server:
        tmp = Path(tmp_dir)
        floor = noop_rate(tmp)
        dsn = server.create_database("bench_admission")
        with cluster(tmp / "cluster", dsn) as k8s:
            rate, latencies = operator_numbers(k8s)
    ratio = rate / floor
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(f"admission, {N} Executions in a burst; emulator + operator + client on one machine")
    print(f"no-op kopf operator (floor)                 {floor:7.1f} Jobs/s")
    print(f"fx operator                                 {rate:7.1f} Jobs/s  ratio {ratio:4.2f}x "
          f"(target ≥ 0.5: {'ok' if ratio >= 0.5 else 'MISSED'})")
    print(f"latency at 20/s offered, {len(latencies)} Executions: p50 {p50 * 1e3:6.1f} ms  "
          f"p99 {p99 * 1e3:6.1f} ms (target p99 ≤ 100 ms: {'ok' if p99 <= 0.1 else 'MISSED'})")


if __name__ == "__main__":
    main()
