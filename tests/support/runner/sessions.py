"""Processes and folders as a container runtime handles them.

A container is a process session: stopping it signals the whole session (whatever process groups
its children made). As root, a container loses the DAC capabilities so that read-only mounts hold
for it; a pod's folders, read-only parts included, are removed whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

_PR_CAPBSET_DROP: Final = 24
# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: without them root obeys the
# permission bits of files it owns, as a pod's non-root user does.
_DAC_CAPABILITIES: Final = (0, 1, 2, 3)


def capability_dropper() -> Callable[[], None] | None:
    """A ``preexec_fn`` that drops the DAC capabilities when the runner is root (Linux only)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    args = [(ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap)) for cap in _DAC_CAPABILITIES]
    zero = ctypes.c_ulong(0)

    def drop() -> None:
        for option, cap in args:
            prctl(option, cap, zero, zero, zero)

    return drop


def session_members(session: int) -> list[int]:
    """Processes of a session that are still alive (a container's processes, whatever groups)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 3 and fields[3] == str(session) and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def kill_session(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal every process of the container's session (what a container runtime kills)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    for pid in session_members(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def remove_tree(path: Path) -> None:
    """Remove a pod's folder, read-only parts included."""
    if not path.exists():
        return
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)
