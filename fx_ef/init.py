"""The run's init step: open the sealed bundle with the one-time run key, write it to the tmpfs.

    python -m fx_ef.init --run-id RUN --sealed FILE --out DIR (--key-stdin | --broker URL)

In a pod the key comes once from the broker (authenticated by the pod's projected token); in a local
run ``fxctl run`` passes it on stdin. The key is never written anywhere. Imports neither kopf nor
the kubernetes client: this step is on every run's critical path.

Exit codes: 0 delivered; 2 bad arguments; 3 no key; 4 the bundle does not open; 5 cannot write.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time

from fx_ef import contract
from fx_ef._process import exit_without_teardown

# Start-up: a run pod's executor imports this module before its script starts; argparse (with
# gettext) and pathlib are only for this module's own command line, so they load there.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path

    StrPath = str | os.PathLike[str]

EXIT_USAGE, EXIT_NO_KEY, EXIT_BAD_BUNDLE, EXIT_WRITE = 2, 3, 4, 5
BROKER_WAIT_SECONDS = 60.0  # an operator's restart or upgrade, not a run's failure


class InitError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InitError(f"the run key from {source} is not base64", EXIT_NO_KEY) from None
    if len(key) != contract.RUN_KEY_BYTES:
        raise InitError(f"the run key from {source} has {len(key)} bytes, "
                        f"expected {contract.RUN_KEY_BYTES}", EXIT_NO_KEY)
    return key


def key_from_stdin() -> bytes:
    """The run key, base64 on one line of stdin (a local run's, or a test's)."""
    return _decode_key(sys.stdin.readline(), "stdin")


_UNAVAILABLE = (502, 503, 504)


class _BrokerUnavailable(InitError):
    """Nothing was delivered (no connection, or a gateway's 50x): asking again is safe."""


def key_from_broker(url: str, run_id: str, token_file: StrPath, ca_file: StrPath | None, *,
                    wait: float = 0, while_asking: Callable[[], object] | None = None) -> bytes:
    """Ask the broker for this run's key; it answers once per run, to this run's pod only.

    While the broker cannot be reached (an operator restarting or being upgraded), ask again
    with backoff for up to ``wait`` seconds. A refusal, or a TLS failure, is final at once.
    ``while_asking`` runs once, between sending the first request and reading its answer.
    """
    deadline = time.monotonic() + wait
    delay = 0.25
    while True:
        try:
            return _ask_broker(url, run_id, token_file, ca_file, while_asking)
        except _BrokerUnavailable as e:
            if time.monotonic() + delay > deadline:
                raise InitError(str(e), e.exit_code) from None
            print(f"fx init: {e}; asking again in {delay:.2f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            while_asking = None


def _ask_broker(url: str, run_id: str, token_file: StrPath, ca_file: StrPath | None,
                while_asking: Callable[[], object] | None = None) -> bytes:
    import http.client  # only pods pay for these imports
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InitError(f"the broker URL must be https://HOST[:PORT], got {url!r}", EXIT_USAGE)
    try:
        with open(token_file) as f:
            token = f.read().strip()
    except OSError as e:
        raise InitError(f"cannot read the pod's token {token_file}: {e.strerror}",
                        EXIT_NO_KEY) from None
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=context,
                                       timeout=30)
    path = contract.BROKER_KEY_PATH.format(run_id=run_id)
    try:
        conn.request("POST", path, body=b"{}", headers={
            "Authorization": f"Bearer {token}", contract.RUN_HEADER: run_id,
            "Content-Type": "application/json"})
        if while_asking is not None:
            while_asking()
        response = conn.getresponse()
        body = response.read()
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError, socket.gaierror) as e:
        raise _BrokerUnavailable(f"cannot reach the broker at {url}: {e}", EXIT_NO_KEY) from None
    except (OSError, http.client.HTTPException) as e:  # TLS failures among them: final
        raise InitError(f"cannot reach the broker at {url}: {e}", EXIT_NO_KEY) from None
    finally:
        conn.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if response.status in _UNAVAILABLE:
        raise _BrokerUnavailable(f"the broker at {url} is unavailable ({response.status})",
                                 EXIT_NO_KEY)
    if response.status != 200:
        reason = answer.get("error") if isinstance(answer, dict) else None
        raise InitError(f"the broker refused the run key ({response.status}): "
                        f"{reason or response.reason}", EXIT_NO_KEY)
    if not isinstance(answer, dict) or not isinstance(answer.get("key"), str):
        raise InitError("the broker's answer carries no key", EXIT_NO_KEY)
    return _decode_key(answer["key"], "the broker")


def open_sealed(sealed_path: StrPath, run_id: str, key: bytes) -> bytes:
    """The run's bundle (its JSON text), opened from the sealed file with the run key."""
    from fx_ef.bundle import BundleError, open_bundle

    try:
        with open(sealed_path, "rb") as f:
            sealed = f.read()
    except OSError as e:
        raise InitError(f"cannot read the sealed bundle {sealed_path}: {e.strerror}",
                        EXIT_BAD_BUNDLE) from None
    try:
        return open_bundle(sealed, key, run_id)
    except BundleError as e:
        raise InitError(str(e), EXIT_BAD_BUNDLE) from None


def deliver(sealed_path: Path, out_dir: Path, run_id: str, key: bytes) -> Path:
    """Open the sealed bundle and write it to ``out_dir``; returns the bundle file's path."""
    from fx_ef.bundle import write_bundle_file

    plaintext = open_sealed(sealed_path, run_id, key)
    try:
        return write_bundle_file(out_dir, plaintext)
    except FileExistsError:
        raise InitError(f"a bundle is already in {out_dir}: delivery happens once",
                        EXIT_WRITE) from None
    except OSError as e:
        raise InitError(f"cannot write the bundle into {out_dir}: {e.strerror}",
                        EXIT_WRITE) from None


def memory_bundle(plaintext: bytes) -> str:
    """The bundle in a sealed memory file: a path (``/proc/self/fd/N``) that this process and
    the script it forks read, that no one can write (sealed against writes, growth and shrinking)
    and that exists on no filesystem: it ends with the last process holding it.

    What a run pod's executor does with the bundle it opened itself (no init container, no
    writable tmpfs); the file is not inherited across ``exec`` (close-on-exec)."""
    import fcntl

    fd = os.memfd_create("fx-bundle", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(plaintext)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW |
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    except OSError as e:
        os.close(fd)
        raise InitError(f"cannot hold the bundle in memory: {e.strerror}", EXIT_WRITE) from None
    return f"{contract.MEMORY_BUNDLE_PREFIX}{fd}"


def _load_cipher() -> None:
    """Import the cipher (``cryptography``: ~9 ms in the runtime image) while the broker
    reviews the pod's token and claims the key, rather than after its answer. Measured by
    bench_realk8s's "executor's delivery" (p50 of 12 runs, the images built each way in turn):
    34 ms without, 28 ms with."""
    import fx_ef.bundle  # noqa: F401


def claim_bundle(*, run_id: str, sealed: StrPath, broker: str, token_file: StrPath,
                 ca_file: StrPath | None, wait: float = BROKER_WAIT_SECONDS) -> str:
    """A pod's delivery in one process: the run key from the broker (once), the sealed bundle
    opened with it, the bundle held in a sealed memory file (``memory_bundle``); its path. The
    key is dropped as soon as the bundle is open."""
    key = key_from_broker(broker, run_id, token_file, ca_file, wait=wait,
                          while_asking=_load_cipher)
    plaintext = open_sealed(sealed, run_id, key)
    del key
    return memory_bundle(plaintext)


def _parser() -> argparse.ArgumentParser:
    """The flags ``fx_ef.command_lines.init_command`` writes (``contract.FLAG_*``)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog=f"python -m {contract.INIT_MODULE}",
                                     description=__doc__.split("\n")[0])
    parser.add_argument(contract.FLAG_RUN_ID, default=os.environ.get(contract.ENV_RUN_ID),
                        help=f"the run (default: ${contract.ENV_RUN_ID})")
    parser.add_argument(contract.FLAG_SEALED, type=Path, default=Path(contract.POD_SEALED_BUNDLE))
    parser.add_argument(contract.FLAG_OUT, type=Path, default=Path(contract.POD_SECRETS_DIR))
    source = parser.add_mutually_exclusive_group()
    source.add_argument(contract.FLAG_KEY_STDIN, action="store_true",
                        help="read the base64 run key from stdin (local runs)")
    source.add_argument(contract.FLAG_BROKER, default=os.environ.get(contract.ENV_BROKER_URL),
                        help=f"the broker's https URL (default: ${contract.ENV_BROKER_URL})")
    parser.add_argument(contract.FLAG_TOKEN_FILE, type=Path,
                        default=Path(contract.POD_TOKEN_FILE))
    parser.add_argument(contract.FLAG_CA_FILE, type=Path, default=Path(contract.POD_CA_FILE))
    parser.add_argument(contract.FLAG_BROKER_WAIT, type=float, default=BROKER_WAIT_SECONDS,
                        help="seconds to keep asking while the broker cannot be reached "
                             f"(default: {BROKER_WAIT_SECONDS:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not args.run_id:
            raise InitError(f"no run id: pass {contract.FLAG_RUN_ID} or set "
                            f"{contract.ENV_RUN_ID}", EXIT_USAGE)
        if args.key_stdin:
            key = key_from_stdin()
        elif args.broker:
            key = key_from_broker(args.broker, args.run_id, args.token_file,
                                  args.ca_file if args.ca_file.exists() else None,
                                  wait=args.broker_wait)
        else:
            raise InitError(f"no key source: pass {contract.FLAG_KEY_STDIN} or "
                            f"{contract.FLAG_BROKER}", EXIT_USAGE)
        path = deliver(args.sealed, args.out, args.run_id, key)
    except InitError as e:
        print(f"fx init: {e}", file=sys.stderr)
        return e.exit_code
    print(f"fx init: bundle of run {args.run_id} delivered to {path}", file=sys.stderr)
    return 0


def run() -> None:
    exit_without_teardown(main)


if __name__ == "__main__":
    run()
