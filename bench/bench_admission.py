"""Execution admission (created → its Job created) against the emulated API server.

* Admissions per second for a burst of Executions, with the real operator (``fxctl operator``:
  store, resolution, sealing, run-key registration, Secret + Job), as a ratio to a no-op kopf
  operator (``noop_operator.py``) that only creates a Job per Execution, on an emulator of its
  own in the same run. Target: ratio ≥ 0.5. Both stay up and their bursts alternate, round after
  round, after one uncounted warm-up burst each; the ratio is of the medians: on these machines
  CPU speed drifts by a third within a minute, and a floor measured once, before, drifted with
  it.
* p50/p99 admission latency at an offered 20 Executions/s. Target: p99 ≤ 100 ms.
* CPU time per admitted Execution over the counted bursts (user + system, from /proc): of the
  operator process, and of PostgreSQL (the postmaster and its backends): what an admission costs
  the machine, which the rate on a shared machine shows only roughly.

As in a cluster, the API server (the emulator), each operator and PostgreSQL are processes of
their own; the client (this script) creates the Executions and timestamps each Job's ADDED event
from a watch. No Job controller or kubelet runs (the floor has none): runs are admitted only.
Operator logs go to files under the temporary folder (INFO, as deployed).
Run: ``python bench/bench_admission.py`` (BENCH_EXECUTIONS per burst, default 100;
BENCH_ROUNDS, 3; BENCH_SECONDS, 5; BENCH_LOGS: a folder to keep the processes' logs in).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import percentile  # also puts the project on sys.path
from fx_operator.cli.cluster import sealed_manifest
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.sealing import PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_FIELD, SealingPublicKey
from fx_operator.storage.master_keys import FileMasterKeyProvider
from kubernetes import client, config
from support.emulator_process import EmulatorProcess
from support.postgres import PostgresServer
from support.processes import child_env
from support.waiting import wait_for

N = int(os.environ.get("BENCH_EXECUTIONS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REPO = Path(__file__).resolve().parents[1]
NS, PLATFORM_NS = "team-a", "fx-system"


class JobClock:
    """Timestamps each Job's ADDED event, from a watch in a thread.

    The watch is read as raw JSON lines and resumed from its last resourceVersion: decoding
    whole Jobs into the client's models, or re-listing every Job on each reconnect, would make
    the measuring client the bottleneck (and more so for the operator's larger Jobs).
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.seen: dict[str, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(api,), daemon=True)
        self._thread.start()

    def _run(self, api: client.ApiClient) -> None:
        batch = client.BatchV1Api(api)
        version = batch.list_namespaced_job(NS, _preload_content=False).json()["metadata"][
            "resourceVersion"]
        while not self._stop:
            stream = batch.list_namespaced_job(NS, watch=True, resource_version=version,
                                               timeout_seconds=2, _preload_content=False)
            for line in stream:
                event = json.loads(line)
                metadata = event["object"]["metadata"]
                version = metadata.get("resourceVersion", version)
                if event["type"] == "ADDED":
                    name = (metadata.get("labels") or {}).get("fx.dev/execution", "")
                    self.seen.setdefault(name, time.perf_counter())
            stream.release_conn()

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


_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The living processes ``pid`` started (Linux: /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in path.read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """User + system CPU time of a process (and, with ``tree``, of its children, living and
    reaped), from /proc; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = int(fields[11]) + int(fields[12])  # utime, stime
    if tree:
        total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
        return total / _TICK + sum(cpu_seconds(child) for child in _children(pid))
    return total / _TICK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_server(folder: Path, name: str) -> Iterator[client.ApiClient]:
    """An emulator process with the CRDs and the namespaces; a client for it."""
    kubeconfig = folder / f"{name}-kubeconfig"
    with (folder / f"{name}-emulator.log").open("wb") as log, \
            EmulatorProcess(kubeconfig, crds=REPO / "crds", log=log):
        api = config.new_client_from_config(config_file=str(kubeconfig))
        for namespace in (NS, PLATFORM_NS):
            client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        yield api


@contextmanager
def operator_process(command: list[str], env: dict[str, str],
                     log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=child_env(env), stdout=out,
                                   stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Side:
    """One operator on its own API server, ready for bursts: how to make one, how to tell that
    the work each admission leaves behind (status patches, Events) is done."""

    name: str
    custom: client.CustomObjectsApi
    clock: JobClock
    settled: Callable[[client.CustomObjectsApi], bool]
    pid: int
    database_pid: int | None = None
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # operator CPU s per Execution, per burst
    database_cpu: list[float] = field(default_factory=list)

    def burst(self, round_: str, *, counted: bool = True) -> None:
        before = cpu_seconds(self.pid)
        database_before = cpu_seconds(self.database_pid, tree=True) if self.database_pid else 0
        rate = burst(self.custom, self.clock, f"{self.name}-{round_}")
        wait_for(lambda: self.settled(self.custom), f"{self.name}'s burst to settle",
                 timeout=120)
        if counted:
            self.rates.append(rate)
            self.cpu.append((cpu_seconds(self.pid) - before) / N)
            if self.database_pid:
                self.database_cpu.append(
                    (cpu_seconds(self.database_pid, tree=True) - database_before) / N)


def _all_handled_by_kopf(custom: client.CustomObjectsApi) -> bool:
    listed = custom.list_namespaced_custom_object("fx.dev", "v1alpha1", NS, "executions")
    return all("kopf.zalando.org/last-handled-configuration" in
               (item["metadata"].get("annotations") or {}) for item in listed["items"])


@contextmanager
def noop_side(folder: Path) -> Iterator[Side]:
    """The floor: a kopf operator whose whole admission is one Job create."""
    with api_server(folder, "noop") as api:
        env = {"KUBECONFIG": str(folder / "noop-kubeconfig")}
        command = [sys.executable, "-m", "kopf", "run", "--standalone", "-A",
                   str(REPO / "bench" / "noop_operator.py")]
        with operator_process(command, env, folder / "noop-operator.log") as process:
            clock = JobClock(api)
            time.sleep(2)  # kopf's start-up: its watches open
            yield Side("noop", client.CustomObjectsApi(api), clock, _all_handled_by_kopf,
                       process.pid)
            clock.stop()


def _ready(custom: client.CustomObjectsApi, plural: str, name: str) -> bool:
    body = custom.get_namespaced_custom_object("fx.dev", "v1alpha1", NS, plural, name)
    return any(c["type"] == "Ready" and c["status"] == "True"
               and c.get("observedGeneration") == body["metadata"]["generation"]
               for c in (body.get("status") or {}).get("conditions") or [])


def _all_admitted(custom: client.CustomObjectsApi) -> bool:
    listed = custom.list_namespaced_custom_object("fx.dev", "v1alpha1", NS, "executions")
    return all((item.get("status") or {}).get("phase") for item in listed["items"])


def _public_key(core: client.CoreV1Api) -> SealingPublicKey | None:
    try:
        found = core.read_namespaced_config_map(PUBLIC_KEY_CONFIGMAP, PLATFORM_NS)
    except client.ApiException:
        return None
    return SealingPublicKey.parse(found.data[PUBLIC_KEY_FIELD])


@contextmanager
def fx_side(folder: Path, dsn: str, database_pid: int) -> Iterator[Side]:
    """The fx operator with a Package and 20 package-scope secrets, ready to admit."""
    key_file = folder / "master.key"
    FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
    broker_port = _free_port()
    env = {"KUBECONFIG": str(folder / "fx-kubeconfig"), "FX_DATABASE_URL": dsn,
           "FX_MASTER_KEY_FILE": str(key_file), "FX_HOME": str(folder / "home"),
           "FX_BROKER_HOST": "127.0.0.1", "FX_BROKER_PORT": str(broker_port),
           "FX_BROKER_URL": f"https://127.0.0.1:{broker_port}",
           "FX_BROKER_DNS_NAMES": json.dumps(["127.0.0.1"]),
           "FX_PLATFORM_NAMESPACE": PLATFORM_NS, "FX_METRICS_PORT": str(_free_port()),
           "FX_ACTOR": "operator"}
    command = [sys.executable, "-m", "fx_operator", "operator",
               "--liveness", f"http://127.0.0.1:{_free_port()}/healthz"]
    with api_server(folder, "fx") as api, \
            operator_process(command, env, folder / "fx-operator.log") as process:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        key = wait_for(lambda: _public_key(core), "the operator to start", timeout=120)
        custom.create_namespaced_custom_object("fx.dev", "v1alpha1", NS, "packages", {
            "apiVersion": "fx.dev/v1alpha1", "kind": "Package", "metadata": {"name": "bench"},
            "spec": {"scripts": [{"name": "main.py", "content": "print('x')\n"}]}})
        custom.create_namespaced_custom_object("fx.dev", "v1alpha1", NS, "scopedsecrets",
                                               sealed_manifest(
            {f"S{i}": f"value-{i}" for i in range(20)}, key, namespace=NS, scope="package",
            package="bench", name="bench-secrets"))
        wait_for(lambda: _ready(custom, "packages", "bench"), "the Package", timeout=120)
        wait_for(lambda: _ready(custom, "scopedsecrets", "bench-secrets"), "the ScopedSecret",
                 timeout=120)
        clock = JobClock(api)
        yield Side("fx", custom, clock, _all_admitted, process.pid, database_pid)
        clock.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir, PostgresServer() as server:
        folder = Path(os.environ.get("BENCH_LOGS") or tmp_dir)
        folder.mkdir(parents=True, exist_ok=True)
        dsn = server.create_database("bench_admission")
        postmaster = int((server.datadir / "postmaster.pid").read_text().splitlines()[0])
        with noop_side(folder) as floor, fx_side(folder, dsn, postmaster) as fx:
            # A first burst on each side warms what a running operator has warm (connections
            # in the pools, worker threads, unwrapped data keys); it is not counted.
            floor.burst("warm-up", counted=False)
            fx.burst("warm-up", counted=False)
            for round_ in range(ROUNDS):
                floor.burst(str(round_))
                fx.burst(str(round_))
            # The client's own full collections (it holds the client's models) would stall
            # its watch thread and show up as admission latency: its objects are kept out.
            gc.collect()
            gc.freeze()
            latencies = steady(fx.custom, fx.clock)
    ratio = statistics.median(fx.rates) / statistics.median(floor.rates)
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(f"admission, {ROUNDS} rounds of a burst of {N} Executions per operator, after one "
          "uncounted warm-up burst each; API server (emulator), operators, PostgreSQL and "
          "client as separate processes on one machine")
    for side in (floor, fx):
        print(f"{'no-op kopf operator (floor)' if side is floor else 'fx operator':28s} "
              f"median {statistics.median(side.rates):6.1f} Jobs/s  (rounds: "
              f"{', '.join(f'{r:.1f}' for r in side.rates)})")
    for side in (floor, fx):
        line = (f"CPU per Execution, {'floor' if side is floor else 'fx'} operator: median "
                f"{statistics.median(side.cpu) * 1e3:5.2f} ms (rounds: "
                f"{', '.join(f'{c * 1e3:.2f}' for c in side.cpu)})")
        if side.database_cpu:
            line += (f"; PostgreSQL: median {statistics.median(side.database_cpu) * 1e3:5.2f} ms "
                     f"(rounds: {', '.join(f'{c * 1e3:.2f}' for c in side.database_cpu)})")
        print(line)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    verdict = "ok" if ratio >= 0.5 else "MISSED"
    print(f"ratio of the medians {ratio:4.2f}x (target ≥ 0.5: {verdict})")
    print(f"latency at 20/s offered, {len(latencies)} Executions: p50 {p50 * 1e3:6.1f} ms  "
          f"p99 {p99 * 1e3:6.1f} ms (target p99 ≤ 100 ms: {'ok' if p99 <= 0.1 else 'MISSED'})")


if __name__ == "__main__":
    main()
