"""The emulator tier's cluster with the operator as a process of its own, as it is deployed:
``fxctl operator`` started with the cluster's ``FX_*`` settings, so that a test can kill it for
real (SIGKILL: no handler, no ``finally``, no flush) and start it again on the same store.

Usage::

    with cluster(tmp_path, dsn, kind=ProcessCluster) as k8s:
        k8s.kill_operator()      # SIGKILL, at whatever step the test pinned it
        k8s.start_operator()     # a new process; returns once kopf serves its liveness probe
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.cluster import Cluster, _free_port
from support.processes import REPO, child_env


@dataclass
class ProcessCluster(Cluster):
    """:class:`~support.cluster.Cluster`, the operator run by ``python -m fx_operator operator``."""

    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return Path(self.env["FX_HOME"]).parent / "operator.log"

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.poll() is None, "no operator runs"
        return self.process.pid

    def start_operator(self) -> None:
        assert self.process is None or self.process.poll() is not None
        scope = [arg for namespace in self.watched for arg in ("-n", namespace)]
        liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fx_operator", "operator", *scope,
                 f"--liveness={liveness}", "--verbose"],
                env=child_env(self.env), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
        self.wait_for(lambda: self._serving(liveness), "the operator process to start",
                      timeout=90)
        self.wait_for(lambda: self.public_key() is not None, "the operator's sealing key")

    def _serving(self, liveness: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the operator exited {self.process.returncode}:\n"
                                 f"{self.log_file.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(liveness, timeout=2) as answer:  # noqa: S310 (loopback)
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill_operator(self) -> None:
        """SIGKILL: the operator stops wherever it is, as on an OOM kill or a node loss."""
        assert self.process is not None and self.process.poll() is None, "no operator runs"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    def stop_operator(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def everything_seen(self) -> str:
        """The cluster's objects, runs' output and argv, and the operator's own log."""
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return super().everything_seen() + "\n" + log


__all__ = ["ProcessCluster"]
