"""The command lines of a run's two steps, built in one place for the cluster and the workstation.

The operator's Job (``domain.job_spec``) and ``fxctl run`` (``services.local_run``) build their
argv here; ``fx_ef.init`` and ``fx_ef.executor`` parse the same ``contract.FLAG_*`` names, so a
flag is spelled once.
"""

from __future__ import annotations

import os

from fx_ef import contract

__all__ = ["executor_command", "init_command"]

StrPath = str | os.PathLike[str]


def init_command(*, run_id: str, sealed: StrPath, out: StrPath, broker: str | None = None,
                 key_stdin: bool = False, token_file: StrPath | None = None,
                 ca_file: StrPath | None = None, broker_wait: float | None = None,
                 python: str = "python") -> list[str]:
    """``python -m fx_ef.init``: open the sealed bundle with the key from ``broker`` (a pod) or
    from stdin (``key_stdin``), and write it into ``out``."""
    if (broker is None) == (not key_stdin):
        raise ValueError("the init step takes its key from the broker or from stdin: one of them")
    argv = [python, "-m", contract.INIT_MODULE, contract.FLAG_RUN_ID, run_id,
            contract.FLAG_SEALED, os.fspath(sealed), contract.FLAG_OUT, os.fspath(out)]
    if broker is not None:
        argv += [contract.FLAG_BROKER, broker]
    else:
        argv.append(contract.FLAG_KEY_STDIN)
    if token_file is not None:
        argv += [contract.FLAG_TOKEN_FILE, os.fspath(token_file)]
    if ca_file is not None:
        argv += [contract.FLAG_CA_FILE, os.fspath(ca_file)]
    if broker_wait is not None:
        argv += [contract.FLAG_BROKER_WAIT, str(broker_wait)]
    return argv


def executor_command(*, package_dir: StrPath, bundle: StrPath | None = None,
                     sealed: StrPath | None = None, key_stdin: bool = False,
                     result: StrPath | None = None,
                     result_max_bytes: int | None = None, mask: bool = True,
                     timeout: float | None = None, runner_pid: int | None = None,
                     python: str = "python") -> list[str]:
    """``python -m fx_ef.executor``: run the package's entrypoint with its output masked.

    The bundle is a file (``bundle``: a local run's init step wrote it) or sealed (``sealed``: a
    run pod's executor claims the key and opens it itself, the broker, token and CA from the
    pod's environment; ``key_stdin``: its key on stdin instead). With ``runner_pid`` (a run on
    a workstation): ``fx_ef.local_executor``, which ends with that process, with the same
    executor arguments after ``--runner-pid``.
    """
    if (bundle is None) == (sealed is None):
        raise ValueError("the executor reads a bundle file or a sealed bundle: one of them")
    if runner_pid is None:
        argv = [python, "-m", contract.EXECUTOR_MODULE]
    else:
        argv = [python, "-m", contract.LOCAL_EXECUTOR_MODULE, contract.FLAG_RUNNER_PID,
                str(runner_pid)]
    if bundle is not None:
        argv += [contract.FLAG_BUNDLE, os.fspath(bundle)]
    else:
        assert sealed is not None
        argv += [contract.FLAG_SEALED, os.fspath(sealed)]
        if key_stdin:
            argv.append(contract.FLAG_KEY_STDIN)
    argv += [contract.FLAG_PACKAGE_DIR, os.fspath(package_dir)]
    if result is not None:
        argv += [contract.FLAG_RESULT, os.fspath(result)]
    if result_max_bytes is not None:
        argv += [contract.FLAG_RESULT_MAX_BYTES, str(result_max_bytes)]
    if not mask:
        argv.append(contract.FLAG_NO_MASK)
    if timeout:
        argv += [contract.FLAG_TIMEOUT, str(timeout)]
    return argv
