"""The executor as ``fxctl run`` starts it on a workstation: it and the script end with fxctl.

    python -m fx_ef.local_executor --runner-pid PID [--start-fd FD] [executor arguments]

In a pod, the kubelet ends every process of the container together. On a workstation nothing
does: after a ``kill -9`` of fxctl's process group (or an OOM kill of fxctl) the executor would
be gone but the script, in a process group of its own, would run on. So here the kernel is asked
(Linux's parent-death signal) to SIGKILL the executor when fxctl ends, and the script when the
executor ends. The bundle the run leaves in the tmpfs is removed by the next ``fxctl run`` or by
``fxctl gc``. The executor itself is unchanged: its arguments follow ``--runner-pid``.

``--start-fd``: fxctl starts this process before it has prepared the run, so that the
interpreter's start overlaps that work; the executor begins when ``go`` arrives on that pipe.
The pipe closed without it (fxctl could not prepare the run, or ended) ends this process at
once, having run nothing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from fx_ef import executor
from fx_ef._process import die_with_parent, exit_without_teardown

USAGE = ("usage: python -m fx_ef.local_executor --runner-pid PID [--start-fd FD] "
         "[executor arguments]")
EXIT_NOT_STARTED = 0  # nothing ran; fxctl reports why


def _script_dies_with(executor_pid: int) -> Callable[[], None]:
    """At-fork hook: the executor's child (the script) dies with the executor. Later forks of
    the script itself have another parent and are left alone."""
    def after_fork_in_child() -> None:
        if os.getppid() == executor_pid:
            die_with_parent(signal.SIGKILL, executor_pid)
    return after_fork_in_child


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--runner-pid" or not args[1].isdigit():
        print(USAGE, file=sys.stderr)
        return executor.EXIT_USAGE
    die_with_parent(signal.SIGKILL, int(args[1]))
    args = args[2:]
    if args[:1] == ["--start-fd"]:
        if len(args) < 2 or not args[1].isdigit():
            print(USAGE, file=sys.stderr)
            return executor.EXIT_USAGE
        if not _started(int(args[1])):
            return EXIT_NOT_STARTED
        args = args[2:]
    os.register_at_fork(after_in_child=_script_dies_with(os.getpid()))
    return executor.main(args)


def _started(fd: int) -> bool:
    """Wait for fxctl's ``go``; a Ctrl-C meanwhile ends this process quietly, as it ends fxctl."""
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        with os.fdopen(fd, "rb") as start:
            return start.readline() == b"go\n"
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    exit_without_teardown(main)
