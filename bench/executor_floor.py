"""The least an executor of this design can do, for ``bench_cli`` to measure as a floor.

    python executor_floor.py BUNDLE PACKAGE_DIR

What no executor of the pod contract can skip, and nothing else: read the run's bundle (JSON, the
contract's format) to learn the entrypoint, turn the process's "dumpable" flag off (``prctl``
through ``ctypes``, the standard library having no ``prctl``: the script must not open the
executor), fork, and in the child turn the flag back on and run the script with its output on a
pipe that the parent copies to its own. No masking, no signals forwarded, no result, no checks:
``fx_ef.executor`` does all of that on top of this, so its time over this floor is its own.
"""

import ctypes
import json
import os
import sys

_PR_SET_DUMPABLE = 4


def main() -> None:
    bundle_path, package_dir = sys.argv[1], sys.argv[2]
    with open(bundle_path, "rb") as f:
        entrypoint = os.path.join(package_dir, json.loads(f.read())["entrypoint"])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.dup2(write_end, 1)
        os.close(write_end)
        libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
        with open(entrypoint, "rb") as f:
            code = compile(f.read(), entrypoint, "exec")
        exec(code, {"__name__": "__main__", "__file__": entrypoint})  # noqa: S102
        sys.stdout.flush()
        os._exit(0)
    os.close(write_end)
    while data := os.read(read_end, 65536):
        os.write(1, data)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
