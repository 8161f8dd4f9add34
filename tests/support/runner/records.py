"""What the pod runner keeps of each Job, pod and process, and how a run ends.

Shared by the Job controller, the kubelet and the tests (which read :class:`PodRecord` and
:class:`ProcessRecord` to check what ran, with which argv and environment).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any, Final

JsonDict = dict[str, Any]

NODE_NAME: Final = "pod-runner"
NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
NODE_IP: Final = "127.0.0.1"

# Why a run of a pod ended early.
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
DEADLINE: Final = "DeadlineExceeded"
POD_DELETED: Final = "PodDeleted"
JOB_DELETED: Final = "JobDeleted"
STOPPED: Final = "Stopped"


class Cancelled(Exception):
    """The pod's run was cancelled (deadline, deletion, stop) before its containers ran."""


class StartError(Exception):
    """A container or volume could not be set up (the kubelet's StartError / config errors)."""


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclasses.dataclass
class ProcessRecord:
    """One container's process: what ran, for checks that no secret value is in an argv or env."""

    namespace: str
    pod: str
    container: str
    argv: list[str]
    env: dict[str, str]
    pid: int
    returncode: int | None = None


@dataclasses.dataclass(eq=False)
class PodRecord:
    """One pod the runner made: where its files are, the last status written, how it ended."""

    namespace: str
    name: str
    uid: str
    job: str
    job_uid: str
    spec: JsonDict
    directory: Path
    deadline: float | None = None  # time.monotonic() of the Job's activeDeadlineSeconds
    status: JsonDict = dataclasses.field(default_factory=dict)
    volumes: dict[str, Path] = dataclasses.field(default_factory=dict)
    tokens: list[str] = dataclasses.field(default_factory=list)
    outcome: str | None = None  # Succeeded, Failed, DeadlineExceeded, PodDeleted, ...
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)
    deleted: bool = False
    phase: str = "Pending"
    start_time: str = dataclasses.field(default_factory=utc_now)
    states: dict[tuple[str, str], JsonDict] = dataclasses.field(default_factory=dict)
    waiting_for: str | None = None  # a volume source that does not exist yet
    start_error: str | None = None
    _reason: str | None = None
    _wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    _conditions: dict[str, tuple[bool, str]] = dataclasses.field(default_factory=dict)
    _extra_dirs: list[Path] = dataclasses.field(default_factory=list)
    _locked: dict[Path, dict[Path, int]] = dataclasses.field(default_factory=dict)
    _cleaned: bool = False

    @property
    def reason(self) -> str | None:
        """Why the run was cancelled, if it was (a deadline counts once noticed)."""
        return self._reason

    def cancel(self, reason: str) -> None:
        """Ask the pod's worker to stop; the first reason wins, but a stop overrides all."""
        if self._reason is None or reason == STOPPED:
            self._reason = reason
        self._wake.set()

    def cancelled(self) -> str | None:
        """The cancellation reason, noticing a passed deadline now."""
        if self._reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self._reason = DEADLINE
        return self._reason


@dataclasses.dataclass(eq=False)
class JobRun:
    namespace: str
    name: str
    uid: str
    body: JsonDict
    deleted: bool = False
    pod: PodRecord | None = None


def json_body(response: Any) -> JsonDict:
    """The JSON body of a kubernetes client answer read with ``_preload_content=False``."""
    body: JsonDict = json.loads(response.data)
    return body
