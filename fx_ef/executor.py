"""The run's executor: runs the package's entrypoint with its output streamed through the masker.

    python -m fx_ef.executor (--bundle FILE | --sealed FILE [--key-stdin | --broker URL]
                             [--token-file FILE] [--ca-file FILE] [--run-id RUN])
                             --package-dir DIR [--result FILE] [--no-mask]
                             [--timeout SECONDS] [--grace SECONDS]

With ``--bundle`` the run's bundle is a file an earlier step wrote (a local run). With ``--sealed``
(a run pod) the executor delivers it itself, before anything of the script starts: the one-time
run key from the broker (``$FX_BROKER_URL``, authenticated by the pod's projected token), the
sealed bundle opened with it, the bundle held in a sealed memory file that the script reads and no
one can write (``fx_ef.init.claim_bundle``). ``--key-stdin`` takes the key from stdin instead
of the broker, as ``fx_ef.init`` does for a local run (the script's stdin is /dev/null anyway).
A delivery that fails ends the executor with exit code 4 and a result that says why
(``delivery_error``), for the operator to report.

The script runs in a forked child of this process (no second interpreter start-up), in its own
process group, with stdin from /dev/null and stdout and stderr on pipes that this process masks
line by line before passing them on. Signals sent to the executor are forwarded to the script.
When the script ends the executor removes the bundle, writes the run's result (exit code, duration,
the masked tail of the output) and exits with the script's exit code (128 + N if killed by signal
N, as a shell reports it).

``--no-mask`` shows the real values on this process's output, for debugging; the result's tail is
masked whatever the flag says, since it is stored.

Secrets too short to mask, in whole or in part (see ``fx_ef.masking``), are named (never shown) in
a warning on stderr before any of the script's output, again at the end for values the script set
itself, and in the result's ``unmasked_names``.

Exit codes of the executor itself, before the script runs: 2 bad arguments or bundle, 3 no
entrypoint, 4 the run's secrets could not be delivered.
"""

from __future__ import annotations

import codecs
import contextlib
import getopt
import json
import os
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, BinaryIO, NamedTuple, TypedDict

from fx_ef import contract
from fx_ef._fields import FieldError
from fx_ef._process import exit_without_teardown, set_dumpable
from fx_ef.run_bundle import RunBundle, UnknownBundleFormat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fx_ef.masking import Masker, MaskingStream

EXIT_USAGE, EXIT_NO_ENTRYPOINT, EXIT_NOT_DELIVERED = 2, 3, 4
EXIT_SCRIPT_FAILED = 1
_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                      signal.SIGUSR1, signal.SIGUSR2)
_READ_SIZE = 64 * 1024


class ExecutorError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Start-up time is this step's cost on every run: stdlib only, and neither dataclasses nor
# pathlib nor runpy (each costs milliseconds to import).


class RunResult(TypedDict):
    """What is kept of a run: never a secret value (the tail is masked)."""

    run_id: str
    project: str
    package: str
    exit_code: int
    signal: str | None
    timed_out: bool
    started_at: str
    finished_at: str
    duration_s: float
    output_tail: str
    output_truncated: bool
    masked_output: bool
    unmasked_names: list[str]
    missing_names: list[str]  # asked for by the script, not delivered to the run (names only)
    bundle_removed: bool


class _Plan(NamedTuple):
    bundle_path: str
    bundle: RunBundle
    entrypoint: str
    argv: list[str]


def load_plan(bundle_path: str, package_dir: str) -> _Plan:
    """Read the bundle and check the entrypoint, before anything is started."""
    try:
        with open(bundle_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ExecutorError(f"cannot read the bundle {bundle_path}: {e.strerror}",
                            EXIT_USAGE) from None
    try:
        bundle = RunBundle.from_json(raw)
    except UnknownBundleFormat:
        raise ExecutorError(f"the bundle {bundle_path} is not of format "
                            f"{contract.BUNDLE_FORMAT}", EXIT_USAGE) from None
    except FieldError as e:
        if e.field == "entrypoint":
            raise ExecutorError("the bundle names no entrypoint", EXIT_NO_ENTRYPOINT) from None
        raise ExecutorError(e.located(f"the bundle {bundle_path}"), EXIT_USAGE) from None
    name = bundle.entrypoint
    if not name:
        raise ExecutorError("the bundle names no entrypoint", EXIT_NO_ENTRYPOINT)
    root = os.path.realpath(package_dir)
    entrypoint = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, entrypoint]) != root:
        raise ExecutorError(f"entrypoint {name!r} is outside the package folder",
                            EXIT_NO_ENTRYPOINT)
    if not os.path.isfile(entrypoint):
        raise ExecutorError(f"entrypoint {name!r} not found in {package_dir}",
                            EXIT_NO_ENTRYPOINT)
    argv = [entrypoint]
    if bundle.compat == "ferris":
        # The original platform's calling convention, opted into per package: argv is visible
        # to other processes on the machine, so this is never the default.
        argv.append(json.dumps({**bundle.params, **_identity_params(bundle),
                                "secrets": bundle.secrets}))
    return _Plan(bundle_path, bundle, entrypoint, argv)


def _identity_params(bundle: RunBundle) -> dict[str, Any]:
    return {"package_name": bundle.package.name, "package_id": bundle.package.id,
            "execution_id": bundle.run_id}


# --- the child ------------------------------------------------------------------------------------

def _run_script(plan: _Plan, out_w: int, err_w: int, mask_w: int) -> int:
    """In the forked child: become the script, run it, and return its exit code."""
    set_dumpable(True)  # the script is an ordinary process; only the executor is closed
    os.setpgid(0, 0)  # our own group: a terminal's Ctrl-C reaches the script once, through us
    for sig in _FORWARDED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (devnull, out_w, err_w):
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ[contract.ENV_BUNDLE] = plan.bundle_path
    os.environ[contract.ENV_RUN_ID] = plan.bundle.run_id
    os.environ[contract.ENV_MASK_FD] = str(mask_w)
    os.environ.pop(contract.ENV_LOCAL, None)
    folder = os.path.dirname(plan.entrypoint)
    os.chdir(folder)
    sys.argv = list(plan.argv)
    sys.path[0] = folder
    main = type(sys)("__main__")
    main.__file__ = plan.entrypoint
    sys.modules["__main__"] = main
    try:
        with open(plan.entrypoint, "rb") as f:
            code = compile(f.read(), plan.entrypoint, "exec")
        exec(code, main.__dict__)  # noqa: S102 (running the package's script is the point)
    except SystemExit as e:
        return _system_exit_code(e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the script's own error: report it as Python would, minus us
        import traceback

        traceback.print_exception(type(e), e, _script_frames(e.__traceback__, plan.entrypoint))
        return 1
    return 0


def _system_exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


def _finish_child(code: int) -> None:
    """End the script's process as the interpreter would, minus the slow module teardown."""
    import atexit

    try:
        # Start-up: a script that started no thread need not load threading (about 1 ms).
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # join non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _script_frames(tb: TracebackType | None, entrypoint: str) -> TracebackType | None:
    """The traceback from the script's first frame on, without the executor's."""
    current = tb
    while current is not None and current.tb_frame.f_code.co_filename != entrypoint:
        current = current.tb_next
    return current or tb


# --- the parent -----------------------------------------------------------------------------------

class _Output:
    """One of the script's output streams: decoded, masked, passed on, and kept in the tail."""

    def __init__(self, sink: BinaryIO, masker: Masker, tail: _Tail, show_raw: bool) -> None:
        self.sink = sink
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stream: MaskingStream = masker.stream()
        self.tail = tail
        self.show_raw = show_raw

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self.decoder.decode(data, final)
        masked = self.stream.write(text) + (self.stream.flush() if final else "")
        self.tail.add(masked)
        shown = text if self.show_raw else masked
        if shown:
            self.sink.write(shown.encode())
            self.sink.flush()


class _Tail:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: deque[str] = deque()
        self.size = 0
        self.truncated = False

    def add(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        self.size += len(text)
        while self.size > self.limit and self.parts:
            excess = self.size - self.limit
            first = self.parts[0]
            self.truncated = True
            if len(first) <= excess:
                self.parts.popleft()
                self.size -= len(first)
            else:
                self.parts[0] = first[excess:]
                self.size -= excess

    def text(self) -> str:
        return "".join(self.parts)


def _pump(pid: int, out_r: int, err_r: int, mask_r: int, masker: Masker, tail: _Tail,
          show_raw: bool, deadline: float | None, grace: float,
          missing: list[str]) -> tuple[int, bool]:
    """Stream the script's output until it exits; returns (wait status, timed out)."""
    outputs = {out_r: _Output(sys.stdout.buffer, masker, tail, show_raw),
               err_r: _Output(sys.stderr.buffer, masker, tail, show_raw)}
    selector = selectors.DefaultSelector()
    for fd in (mask_r, out_r, err_r):
        selector.register(fd, selectors.EVENT_READ)
    mask_buffer = b""
    timed_out = False
    kill_at: float | None = None
    open_fds = {out_r, err_r, mask_r}
    while open_fds:
        timeout = None
        now = time.monotonic()
        if deadline is not None and not timed_out:
            timeout = max(deadline - now, 0)
        elif kill_at is not None:
            timeout = max(kill_at - now, 0)
        events = selector.select(timeout)
        if not events:
            if deadline is not None and not timed_out and time.monotonic() >= deadline:
                timed_out = True
                _signal_group(pid, signal.SIGTERM)
                kill_at = time.monotonic() + grace
            elif kill_at is not None and time.monotonic() >= kill_at:
                _signal_group(pid, signal.SIGKILL)
                kill_at = None
            continue
        # A value the script has just set is announced before it can be printed: take the
        # announcements first, so that output read in this same round is masked with it.
        ready = sorted((key.fd for key, _ in events), key=lambda fd: fd != mask_r)
        for fd in ready:
            data = os.read(fd, _READ_SIZE)
            if fd == mask_r:
                mask_buffer = _take_mask_lines(mask_buffer + data, masker, missing)
            else:
                outputs[fd].feed(data, final=not data)
            if not data:
                selector.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
    selector.close()
    _, status = os.waitpid(pid, 0)
    return status, timed_out


_MAX_MISSING_NAMES = 32  # a script asking for endless names does not grow the result


def _take_mask_lines(buffer: bytes, masker: Masker, missing: list[str]) -> bytes:
    """Values the script set (to mask from now on) and names it asked for in vain."""
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        try:
            announced = json.loads(line)
            if "missing" in announced:
                name = str(announced["missing"])[:64]
                if name not in missing and len(missing) < _MAX_MISSING_NAMES:
                    missing.append(name)
                continue
            masker.add(str(announced["name"]), announced["value"])
        except (ValueError, KeyError, TypeError):
            continue  # not ours to trust blindly, and nothing to mask
    return rest


def _warn_unmasked(names: list[str]) -> None:
    """Name the secrets whose values (or parts of them) will show as they are if printed."""
    if names:
        print(f"fx executor: warning: secrets too short to mask, in whole or in part (printed, "
              f"they show as they are): {', '.join(names)}", file=sys.stderr, flush=True)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _forwarding(pid: int) -> Callable[[int, FrameType | None], None]:
    def forward(signum: int, _frame: FrameType | None) -> None:
        _signal_group(pid, signum)
    return forward


def _remove_bundle(path: str) -> bool:
    if path.startswith(contract.MEMORY_BUNDLE_PREFIX):  # a sealed memory file: gone when closed
        try:
            os.close(int(path[len(contract.MEMORY_BUNDLE_PREFIX):]))
        except (OSError, ValueError):
            return False
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError as e:  # a read-only mount in a pod: the tmpfs goes with the pod
        print(f"fx executor: bundle not removed ({e.strerror}); it ends with the run's tmpfs",
              file=sys.stderr)
        return False
    return True


def _exit_code(status: int) -> tuple[int, str | None]:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return 128 - code, signal.Signals(-code).name
    return code, None


def fit_result(result: RunResult, max_bytes: int) -> str:
    """The result as JSON of at most ``max_bytes`` (a pod's termination message keeps 4 KiB):
    the oldest part of the output tail goes first."""
    text = json.dumps(result, separators=(",", ":"))
    while len(text.encode()) > max_bytes and result["output_tail"]:
        excess = len(text.encode()) - max_bytes
        result["output_tail"] = result["output_tail"][max(excess, 64):]
        result["output_truncated"] = True
        text = json.dumps(result, separators=(",", ":"))
    return text


def write_result(result: RunResult, path: str, max_bytes: int | None = None) -> None:
    """Write the result whole or not at all (``/dev/termination-log`` is written in place)."""
    _write_whole(fit_result(result, max_bytes) if max_bytes else json.dumps(result, indent=1),
                 path)


def _write_whole(text: str, path: str) -> None:
    if path.startswith("/dev/"):
        with open(path, "w") as f:
            f.write(text)
        return
    partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def _timestamp(seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds, without importing datetime."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1000):03d}+00:00"


class _Args:
    """The executor's options (see the module's docstring)."""

    def __init__(self) -> None:
        self.bundle = os.path.join(contract.POD_SECRETS_DIR, contract.BUNDLE_FILE_NAME)
        # a run pod's delivery (``--sealed``): from the pod's environment unless given
        self.sealed: str | None = None
        self.run_id = os.environ.get(contract.ENV_RUN_ID, "")
        self.broker = os.environ.get(contract.ENV_BROKER_URL, "")
        self.token_file = os.environ.get(contract.ENV_TOKEN_FILE) or contract.POD_TOKEN_FILE
        self.ca_file = os.environ.get(contract.ENV_CA_FILE) or contract.POD_CA_FILE
        self.package_dir = contract.POD_PACKAGE_DIR
        self.result: str | None = os.environ.get(contract.ENV_RESULT_FILE) or None
        self.result_max_bytes: int | None = None  # shorten the tail to fit (termination message)
        self.no_mask = False  # real values on this output (the stored tail stays masked)
        self.timeout: float | None = None  # seconds; then SIGTERM
        self.grace = 10.0  # seconds between SIGTERM and SIGKILL after a timeout
        self.keep_bundle = False  # tests only
        self.key_stdin = False  # the run key on stdin instead of from the broker


_VALUED = (contract.FLAG_BUNDLE, contract.FLAG_PACKAGE_DIR, contract.FLAG_RESULT,
           contract.FLAG_RESULT_MAX_BYTES, contract.FLAG_TIMEOUT, contract.FLAG_GRACE,
           contract.FLAG_SEALED, contract.FLAG_RUN_ID, contract.FLAG_BROKER,
           contract.FLAG_TOKEN_FILE, contract.FLAG_CA_FILE)
_SWITCHES = (contract.FLAG_NO_MASK, contract.FLAG_KEEP_BUNDLE, contract.FLAG_KEY_STDIN)
# getopt's spelling of the flags ``fx_ef.command_lines.executor_command`` writes.
_OPTIONS = (*(f"{flag[2:]}=" for flag in _VALUED), *(flag[2:] for flag in _SWITCHES), "help")


def parse_args(argv: list[str]) -> _Args | None:
    """The options, or None after printing the help. With getopt: argparse (and the gettext,
    shutil and textwrap it brings) costs 5-10 ms to import. With the two changes marked
    "start-up" below, the executor of bench_cli's trivial script went from 60.8 to 49.8 ms
    (p50, interleaved runs, load 0.9)."""
    try:
        pairs, rest = getopt.gnu_getopt(argv, "h", list(_OPTIONS))
    except getopt.GetoptError as e:
        raise ExecutorError(f"{e}\n{_usage()}", EXIT_USAGE) from None
    if rest:
        raise ExecutorError(f"unexpected argument {rest[0]!r}\n{_usage()}", EXIT_USAGE)
    args = _Args()
    for option, value in pairs:
        if option in ("-h", "--help"):
            print(__doc__)
            return None
        name = option[2:].replace("-", "_")
        if option in _SWITCHES:
            setattr(args, name, True)
        elif option == contract.FLAG_RESULT_MAX_BYTES:
            setattr(args, name, _number(int, option, value))
        elif option in (contract.FLAG_TIMEOUT, contract.FLAG_GRACE):
            setattr(args, name, _number(float, option, value))
        else:
            setattr(args, name, value)
    return args


def _number(kind: type[int] | type[float], option: str, value: str) -> float:
    try:
        return kind(value)
    except ValueError:
        raise ExecutorError(f"{option}: not a number: {value!r}\n{_usage()}",
                            EXIT_USAGE) from None


def _usage() -> str:
    return "usage:" + __doc__.split("\n\n")[1].removeprefix("   ")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args is None:
            return 0
        bundle_path = args.bundle if args.sealed is None else _delivered(args)
        plan = load_plan(bundle_path, args.package_dir)
    except ExecutorError as e:
        print(f"fx executor: {e}", file=sys.stderr)
        return e.exit_code
    tail = _Tail(contract.OUTPUT_TAIL_BYTES)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    mask_r, mask_w = os.pipe()
    started_at, t0 = time.time(), time.monotonic()
    missing: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    set_dumpable(False)  # before the fork: the script never sees an executor it could open
    pid = os.fork()
    if pid == 0:  # the child: never returns into the executor's logic below
        code = EXIT_SCRIPT_FAILED
        try:
            for fd in (out_r, err_r, mask_r):
                os.close(fd)
            code = _run_script(plan, out_w, err_w, mask_w)
        finally:
            _finish_child(code)
    for fd in (out_w, err_w, mask_w):
        os.close(fd)
    previous = {sig: signal.signal(sig, _forwarding(pid)) for sig in _FORWARDED_SIGNALS}
    # Start-up: the masker is imported (~4 ms in the runtime image) and built while the script
    # starts on the other core (its output waits in the pipes until the first read below),
    # not before the fork; its patterns (4-8 ms for bench_cli's 20 secrets) were built here
    # already. With the init module's lighter imports: a sealed delivery's executor run went
    # from 57.2 to 52.8 ms p50 (30 interleaved runs, non-editable installs, load 1.1).
    from fx_ef.masking import Masker

    masker = Masker(plan.bundle.secrets)
    warned = masker.unmasked_names
    _warn_unmasked(warned)
    masker.masked_spans("")
    try:
        deadline = t0 + args.timeout if args.timeout else None
        status, timed_out = _pump(pid, out_r, err_r, mask_r, masker, tail,
                                  args.no_mask, deadline, args.grace, missing)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    duration = time.monotonic() - t0
    code, killed_by = _exit_code(status)
    removed = True if args.keep_bundle else _remove_bundle(plan.bundle_path)
    _warn_unmasked([name for name in masker.unmasked_names if name not in warned])
    if timed_out:
        print(f"fx executor: the script ran past its timeout of {args.timeout:g}s and was "
              "stopped", file=sys.stderr)
    package = plan.bundle.package
    result = RunResult(
        run_id=plan.bundle.run_id, project=package.project or "",
        package=package.name, exit_code=code, signal=killed_by,
        timed_out=timed_out, started_at=_timestamp(started_at),
        finished_at=_timestamp(time.time()),
        duration_s=round(duration, 6), output_tail=tail.text(),
        output_truncated=tail.truncated, masked_output=not args.no_mask,
        unmasked_names=masker.unmasked_names, missing_names=sorted(missing),
        bundle_removed=removed)
    if args.result is not None:
        try:
            write_result(result, args.result, args.result_max_bytes)
        except OSError as e:
            print(f"fx executor: cannot write the result to {args.result}: {e.strerror}",
                  file=sys.stderr)
    return code


def _delivered(args: _Args) -> str:
    """A run pod's delivery, by this process (see the module's docstring): the bundle's path."""
    from fx_ef import init  # only a pod pays for the broker's client and the cipher

    assert args.sealed is not None
    began = time.monotonic()
    try:
        if not args.run_id:
            raise init.InitError(f"no run id: pass {contract.FLAG_RUN_ID} or set "
                                 f"{contract.ENV_RUN_ID}", EXIT_USAGE)
        if args.key_stdin:
            key = init.key_from_stdin()
            path = init.memory_bundle(init.open_sealed(args.sealed, args.run_id, key))
            del key
        elif not args.broker:
            raise init.InitError(f"no broker: pass {contract.FLAG_BROKER} or set "
                                 f"{contract.ENV_BROKER_URL}", EXIT_USAGE)
        else:
            path = init.claim_bundle(run_id=args.run_id, sealed=args.sealed,
                                     broker=args.broker, token_file=args.token_file,
                                     ca_file=args.ca_file if os.path.exists(args.ca_file)
                                     else None)
    except init.InitError as e:
        if args.result is not None:
            with contextlib.suppress(OSError):  # the operator reads why in the pod's status
                _write_whole(json.dumps({"delivery_error": str(e)}), args.result)
        raise ExecutorError(f"the run's secrets were not delivered: {e}",
                            EXIT_NOT_DELIVERED) from None
    print(f"fx executor: bundle of run {args.run_id} delivered in "
          f"{(time.monotonic() - began) * 1000:.0f} ms (held in memory)", file=sys.stderr)
    return path


def run() -> None:
    exit_without_teardown(main)


if __name__ == "__main__":
    run()
