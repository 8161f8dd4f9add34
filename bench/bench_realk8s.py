"""What the operator adds to a run's start on a real control plane.

Measured in the same run, interleaved in a shuffled order (the machine is noisy), each to the
moment user code runs (its first line prints the wall clock):

* **floor**: a bare Job (the runtime image, ``python -c`` printing the time, the same restricted
  pod) created -> that line, with the same breakdown as an Execution's;
* **Execution** created -> its script's first line (admission, the resolution and sealing, the
  Job, the Job controller's pod, the executor fetching the key from the broker, opening the
  bundle and starting the script), with the breakdown: created -> pod bound (the operator's
  admission and the Job controller), bound -> container launched (the node agent: the volumes,
  podman), launched -> the script's first line (the interpreter, the executor's delivery, the
  fork), and of that the delivery as the executor's log line gives it (the key from the broker,
  the bundle opened and held in memory);
* ``fxctl run -n`` started -> its Execution exists (the CLI's own start-up and its requests);
* one container of the runtime image run to its end by podman, for scale.

Target: Execution p50 at most the bare Job's p50 + 100 ms. Needs what the realk8s tier needs
(the control plane built by tests/realk8s/build.sh, the images by .ci/images, root, helm,
kubectl, PostgreSQL). Run: ``python bench/bench_realk8s.py`` (BENCH_RUNS, default 20).
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import percentile  # also puts the project on sys.path
from support.control_plane import binaries_missing, control_plane
from support.manifests import find_tool
from support.podman import RUNTIME_IMAGE, Podman
from support.postgres import PostgresServer
from support.processes import child_env
from support.real_cluster import RealCluster, real_cluster

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
FIRST_LINE = "import time; print(f'first line at {time.time():.6f}')"
NAMESPACE = "bench"
TARGET_EXTRA_S = 0.100


def _bare_job(name: str) -> dict[str, object]:
    restricted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                  "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": {"spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "runAsGroup": 10001, "fsGroup": 10001},
                "containers": [{"name": "main", "image": RUNTIME_IMAGE,
                                "command": ["python", "-c", FIRST_LINE],
                                "securityContext": restricted}]}}}}


def _pod_uid(real: RealCluster, job: str) -> str:
    def find() -> str | None:
        for uid, labels in list(real.agent.labels.items()):
            if labels.get("job-name") == job and "finished" in real.agent.timeline.get(uid, {}):
                return uid
        return None
    found: str = real.wait_for(find, f"the pod of Job {job} to end", timeout=120)
    return found


def _first_line(real: RealCluster, job: str) -> float:
    """The wall-clock time the pod's user code printed first (its container's log)."""
    for key, output in list(real.agent.logs.items()):
        if key.startswith(f"{NAMESPACE}/{job}-"):
            for line in output.decode(errors="replace").splitlines():
                if line.startswith("first line at "):
                    return float(line.removeprefix("first line at "))
    raise AssertionError(f"no first line from Job {job}: {real.agent.logs}")


def _delivery_seconds(real: RealCluster, job: str) -> float:
    """The executor's own account of its delivery (the broker's round trip for the key, the
    bundle opened and held in memory), from its log line."""
    for key, output in list(real.agent.logs.items()):
        if key.startswith(f"{NAMESPACE}/{job}-"):
            found = re.search(r"delivered in (\d+) ms", output.decode(errors="replace"))
            if found:
                return int(found.group(1)) / 1000
    raise AssertionError(f"no delivery line from Job {job}")


class Bench:
    def __init__(self, real: RealCluster) -> None:
        self.real = real
        self.count = 0
        self.samples: dict[str, list[float]] = {
            "bare Job -> first line": [], "  created -> pod bound (Job controller)": [],
            "  bound -> container launched (bare)": [], "  launched -> first line (bare)": [],
            "Execution -> script's first line": [],
            "  created -> pod bound": [], "  bound -> container launched": [],
            "    of which binding and volumes (reads, TokenRequest)": [],
            "  launched -> script's first line": [],
            "    of which the executor's delivery": [],
            "one container, podman run -> exit": []}

    def _breakdown(self, labels: tuple[str, str, str], job: str, start: float,
                   start_monotonic: float) -> float:
        """Created -> first line, and its three parts from the node agent's timeline."""
        uid = _pod_uid(self.real, job)
        times = self.real.agent.timeline[uid]
        first = _first_line(self.real, job) - start
        bound, launched, line = labels
        self.samples[bound].append(times["bound"] - start_monotonic)
        self.samples[launched].append(times["started"] - times["bound"])
        self.samples[line].append(first - (times["started"] - start_monotonic))
        return first

    def bare(self) -> None:
        self.count += 1
        name = f"bare-{self.count}"
        start, start_monotonic = time.time(), time.monotonic()
        self.real.batch.create_namespaced_job(NAMESPACE, _bare_job(name))
        first = self._breakdown(("  created -> pod bound (Job controller)",
                                 "  bound -> container launched (bare)",
                                 "  launched -> first line (bare)"), name, start, start_monotonic)
        self.samples["bare Job -> first line"].append(first)

    def container(self) -> None:
        """The runtime's own cost of one container (start, ``python -c pass``, exit): what a
        second container in a run's pod (an init container) would cost before doing anything."""
        podman = self.real.agent.podman
        start = time.monotonic()
        subprocess.run([podman.binary, "run", "--rm", "--network", "host", "--user",
                        "10001:10001", "--read-only", "--cap-drop", "all", RUNTIME_IMAGE,
                        "python", "-c", "pass"], env=dict(podman.env), check=True,
                       capture_output=True)
        self.samples["one container, podman run -> exit"].append(time.monotonic() - start)

    def execution(self) -> None:
        self.count += 1
        name = f"run-{self.count}"
        start, start_monotonic = time.time(), time.monotonic()
        self.real.custom.create_namespaced_custom_object(
            "fx.dev", "v1alpha1", NAMESPACE, "executions",
            {"apiVersion": "fx.dev/v1alpha1", "kind": "Execution",
             "metadata": {"name": name}, "spec": {"package": "noop"}})
        first = self._breakdown(("  created -> pod bound", "  bound -> container launched",
                                 "  launched -> script's first line"), f"fx-run-{name}", start,
                                start_monotonic)
        self.samples["Execution -> script's first line"].append(first)
        times = self.real.agent.timeline[_pod_uid(self.real, f"fx-run-{name}")]
        self.samples["    of which binding and volumes (reads, TokenRequest)"].append(
            times["volumes"] - times["bound"])
        self.samples["    of which the executor's delivery"].append(
            _delivery_seconds(self.real, f"fx-run-{name}"))


def _fxctl_startup(real: RealCluster) -> list[float]:
    """``fxctl run -n`` launched -> its Execution exists (the CLI's own share)."""
    samples = []
    for _ in range(max(3, RUNS // 4)):
        before = {e["metadata"]["name"] for e in real.custom.list_namespaced_custom_object(
            "fx.dev", "v1alpha1", NAMESPACE, "executions")["items"]}
        start = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "fx_operator", "run", "noop", "-n", NAMESPACE],
            env=child_env({"KUBECONFIG": str(real.plane.admin_kubeconfig)}),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def created(before: set[str] = before) -> bool:
            names = {e["metadata"]["name"] for e in real.custom.list_namespaced_custom_object(
                "fx.dev", "v1alpha1", NAMESPACE, "executions")["items"]}
            return bool(names - before)
        real.wait_for(created, "fxctl's Execution")
        samples.append(time.monotonic() - start)
        process.wait(120)
    return samples


def _line(label: str, samples: list[float]) -> str:
    return (f"{label:<50} p50 {statistics.median(samples) * 1000:7.0f} ms  "
            f"p99 {percentile(samples, 99) * 1000:7.0f} ms  (n={len(samples)})")


def main() -> None:
    missing = binaries_missing()
    kubectl, helm = find_tool("kubectl"), find_tool("helm")
    if missing or kubectl is None or helm is None:
        sys.exit(f"cannot run: {missing or 'helm and kubectl are needed'}")
    podman = Podman.find()
    with PostgresServer() as server, \
            tempfile.TemporaryDirectory(prefix="fx-bench-") as folder, \
            control_plane(Path(folder) / "plane") as plane, \
            real_cluster(plane, Path(folder) / "real", kubectl=kubectl, helm=helm,
                         dsn=server.create_database("bench"), podman=podman) as real:
        real.create_namespace(NAMESPACE)
        real.apply({"apiVersion": "fx.dev/v1alpha1", "kind": "Package",
                    "metadata": {"name": "noop", "namespace": NAMESPACE},
                    "spec": {"scripts": [{"name": "main.py", "content": FIRST_LINE + "\n"}]}})
        real.ready("packages", NAMESPACE, "noop")
        bench = Bench(real)
        operations: list[Callable[[], None]] = [bench.bare, bench.execution, bench.container]
        for operation in operations:  # warm: images in the page cache, pools, data keys
            operation()
        for samples in bench.samples.values():
            samples.clear()
        shuffler = random.Random(0)
        for _ in range(RUNS):
            shuffler.shuffle(operations)
            for operation in operations:
                operation()
        startup = _fxctl_startup(real)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
          f"(2 cores; Kubernetes {plane_version()})")
    for label, samples in bench.samples.items():
        print(_line(label, samples))
    print(_line("fxctl run -n -> Execution exists", startup))
    floor = statistics.median(bench.samples["bare Job -> first line"])
    ours = statistics.median(bench.samples["Execution -> script's first line"])
    extra = ours - floor
    print(f"Execution adds {extra * 1000:.0f} ms to the bare Job (ratio {ours / floor:.2f}x; "
          f"target ≤ +{TARGET_EXTRA_S * 1000:.0f} ms: "
          f"{'ok' if extra <= TARGET_EXTRA_S else 'MISSED'})")


def plane_version() -> str:
    versions = Path(__file__).resolve().parents[1] / "tests" / "realk8s" / "versions.env"
    for line in versions.read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.split("=", 1)[1]
    return "?"


if __name__ == "__main__":
    main()
