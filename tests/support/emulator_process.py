"""The emulated API server in a process of its own, as a real API server would be.

In-process (:class:`~support.kube_emulator.KubeEmulatorServer` in a thread) is right for tests;
for benchmarks it makes the emulator, the operator and the client share one interpreter lock, so
every extra API call an operator makes also slows the server down for everybody. Here the server
gets its own interpreter; ``python -m support.emulator_process --kubeconfig F [--crds DIR]``
serves until it is sent SIGTERM or its stdin closes.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from support.kube_emulator import KubeEmulator, KubeEmulatorServer
from support.processes import child_env

READY = "emulator ready"
TESTS = Path(__file__).resolve().parents[1]


class EmulatorProcess:
    """Start the emulator as a child process; its kubeconfig is ready when ``start`` returns."""

    def __init__(self, kubeconfig: Path, *, crds: Path | None = None,
                 log: IO[bytes] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.crds = crds
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Self:
        command = [sys.executable, "-m", "support.emulator_process",
                   "--kubeconfig", str(self.kubeconfig)]
        if self.crds is not None:
            command += ["--crds", str(self.crds)]
        env = child_env({"PYTHONPATH": os.pathsep.join(
            [str(TESTS), os.environ.get("PYTHONPATH", "")])})
        self._process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.log)
        assert self._process.stdout is not None
        ready = threading.Event()

        def wait_ready() -> None:
            assert self._process is not None and self._process.stdout is not None
            if self._process.stdout.readline().decode().strip() == READY:
                ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("the emulator process did not start (see its log)")
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="Where to write the kubeconfig pointing at the server.")
    parser.add_argument("--crds", type=Path, help="A folder of CRD manifests to serve.")
    args = parser.parse_args(argv)
    emulator = KubeEmulator()
    if args.crds is not None:
        emulator.load_crds(args.crds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def until_stdin_closes() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    with KubeEmulatorServer(emulator, kubeconfig=args.kubeconfig):
        # Like the operator: what start-up made (modules, the CRDs' validators) is kept out of
        # later full collections, which otherwise walk it all again while requests wait.
        gc.collect()
        gc.freeze()
        print(READY, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
