"""How the run's step commands end."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def exit_without_teardown(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its code, skipping the interpreter's module teardown: nothing of
    ours needs it, and on a short step it is a measurable part of the run's time."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_DUMPABLE = 4


def set_dumpable(dumpable: bool) -> None:
    """Linux's "dumpable" flag of this process (a no-op elsewhere).

    Off, no other process of the same uid may open this one's ``/proc/<pid>/fd`` or memory: the
    executor turns it off so that the script it runs, under the same uid, cannot write straight
    to the executor's own stdout (``/proc/<executor>/fd/1``, in a pod the container's log) past
    the masker, nor read the secrets from its memory. The script's process turns it back on for
    itself (the flag is inherited across fork). ``ctypes`` (about 2 ms to import) because the
    standard library has no ``prctl``.
    """
    if sys.platform.startswith("linux"):
        _prctl(_PR_SET_DUMPABLE, int(dumpable), "PR_SET_DUMPABLE")


def die_with_parent(signum: int, parent_pid: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent, ``parent_pid``, ends
    (Linux's parent-death signal; a no-op elsewhere).

    A ``kill -9`` gives the parent no chance to stop its children: this is how they end with it
    anyway. If the parent has already ended (the process was re-parented before the request took
    effect), the signal comes at once. Not inherited by forked children; kept across ``exec``.
    """
    if not sys.platform.startswith("linux"):
        return
    _prctl(_PR_SET_PDEATHSIG, signum, "PR_SET_PDEATHSIG")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def _prctl(option: int, value: int, name: str) -> None:
    import ctypes  # about 2 ms; only the steps that need prctl pay for it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({name}): {os.strerror(error)}")
