"""The executor as ``fxctl run`` starts it on a workstation: it and the script end with fxctl.

    python -m fx_ef.local_executor --runner-pid PID [executor arguments]

In a pod, the kubelet ends every process of the container together. On a workstation nothing
does: after a ``kill -9`` of fxctl's process group (or an OOM kill of fxctl) the executor would
be gone but the script, in a process group of its own, would run on. So here the kernel is asked
(Linux's parent-death signal) to SIGKILL the executor when fxctl ends, and the script when the
executor ends. The bundle the run leaves in the tmpfs is removed by the next ``fxctl run`` or by
``fxctl gc``. The executor itself is unchanged: its arguments follow ``--runner-pid``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from fx_ef import contract, executor
from fx_ef._process import die_with_parent, exit_without_teardown

USAGE = (f"usage: python -m {contract.LOCAL_EXECUTOR_MODULE} {contract.FLAG_RUNNER_PID} PID "
         "[executor arguments]")


def _script_dies_with(executor_pid: int) -> Callable[[], None]:
    """At-fork hook: the executor's child (the script) dies with the executor. Later forks of
    the script itself have another parent and are left alone."""
    def after_fork_in_child() -> None:
        if os.getppid() == executor_pid:
            die_with_parent(signal.SIGKILL, executor_pid)
    return after_fork_in_child


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != contract.FLAG_RUNNER_PID or not args[1].isdigit():
        print(USAGE, file=sys.stderr)
        return executor.EXIT_USAGE
    die_with_parent(signal.SIGKILL, int(args[1]))
    os.register_at_fork(after_in_child=_script_dies_with(os.getpid()))
    return executor.main(args[2:])


if __name__ == "__main__":
    exit_without_teardown(main)
