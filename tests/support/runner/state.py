"""The pod runner's state and settings, shared by its layers.

:class:`RunnerState` holds what the informer, the Job controller and the kubelet all read (the
server, the settings, the records tests look at, the lock guarding them); each of those layers
adds its behaviour on top.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes.client

from support.emulator.server import KubeEmulatorServer
from support.runner.records import NODE_NAME, Cancelled, JobRun, PodRecord, ProcessRecord
from support.runner.sessions import capability_dropper, remove_tree


class RunnerState:
    """The runner's settings, its records of Jobs, pods and processes, and their lock."""

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
        self._dropper = capability_dropper() if drop_root_privileges else None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._jobs: dict[str, JobRun] = {}
        self._pods_by_uid: dict[str, PodRecord] = {}
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._responses: set[Any] = set()
        self._configuration: Any = None
        self._synced: dict[tuple[str, str | None], threading.Event] = {}

    def _client(self) -> kubernetes.client.ApiClient:
        """A client of its own for each thread (the connection pool is not made for sharing)."""
        return kubernetes.client.ApiClient(self._configuration)

    @staticmethod
    def _check(pod: PodRecord) -> None:
        """Stop a pod's set-up at the next step once it is cancelled."""
        if pod.cancelled() is not None:
            raise Cancelled(pod.reason)

    def _cleanup(self, pod: PodRecord) -> None:
        with self._lock:
            if pod._cleaned:
                return
            pod._cleaned = True
        for folder in [pod.directory, *pod._extra_dirs]:
            remove_tree(folder)
