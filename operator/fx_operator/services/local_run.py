"""Run a package folder on this machine: the same bundle, steps and masking as a pod run.

Only delivery differs. The sealed bundle is written to a private work folder; the one-time run key
goes to the init step on a pipe; the init step writes the bundle to a tmpfs (``/dev/shm``) folder
of mode 0700; the executor runs the script and masks its output; the channel is a Unix socket in
the work folder. When the run ends the tmpfs folder, the socket and the sealed bundle are removed
and the result (masked) is recorded in the store.

A run killed outright ends all the same: the executor and the script die with this process
(``fx_ef.local_executor``), and the folders it leaves are named after it, for
:func:`fx_operator.services.run_dirs.sweep` to remove once it is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from fx_ef import contract
from fx_ef.bundle import new_run_key, seal_bundle
from fx_ef.command_lines import executor_command
from fx_ef.run_bundle import BundleChannel, RunBundle
from fx_operator.domain.package_spec import PackageSpec, parse_package_spec
from fx_operator.domain.scopes import DEFAULT_PROJECT, OWNER_NAME_PATTERN
from fx_operator.domain.secret_needs import SecretNeeds, find_in_scripts
from fx_operator.exceptions import Problem, RunError, ValidationError
from fx_operator.services.run_dirs import SECRETS_DIR_KIND, TMPFS, WORK_DIR_KIND, private_dir
from fx_operator.services.runs import RunGrant, RunService
from fx_operator.services.secret_service import Resolution, SecretService
from fx_operator.storage.run_records import RunRecord

log = logging.getLogger(__name__)

SECRETS_FILE = "secrets.json"
SPEC_FILE = "package.yaml"
# Settings of the store are the operator's, never the script's: a script that could read
# FX_DATABASE_URL or FX_MASTER_KEY_FILE could bypass scopes altogether.
_WITHHELD_ENV_PREFIXES = ("FX_", "EF_ENV")


@dataclass(frozen=True)
class PackageFolder:
    path: Path
    name: str
    project: str
    entrypoint: str
    spec: PackageSpec
    secrets_file: Path | None
    renamed_from: str | None = None  # the folder's name, when it is not a valid package name

    @property
    def package_id(self) -> str:
        return f"{self.project}/{self.name}"


def load_package_folder(path: Path, *, project: str | None = None) -> PackageFolder:
    """Read a package folder's settings and find its entrypoint; nothing is stored yet."""
    if not path.is_dir():
        raise RunError(f"{path} is not a folder")
    path = path.resolve()
    spec_path = path / SPEC_FILE
    spec = (parse_package_spec(_utf8_text(spec_path), source=str(spec_path))
            if spec_path.is_file() else PackageSpec())
    name = spec.name or package_name_of_folder(path.name)
    if not OWNER_NAME_PATTERN.fullmatch(name):
        raise ValidationError(Problem("name", f"the folder's name {path.name!r} is not a valid "
                                      "package name (lowercase letters, digits and '-'): set "
                                      f"name in {SPEC_FILE}"), source=str(spec_path))
    chosen_project = project or spec.project or DEFAULT_PROJECT
    if not OWNER_NAME_PATTERN.fullmatch(chosen_project):
        raise ValidationError(Problem("project", f"{chosen_project!r} is not a valid project "
                                      "name (lowercase letters, digits and '-')"),
                              source="--project")
    entrypoint = spec.entrypoint or _only_script(path)
    if not (path / entrypoint).is_file():
        raise RunError(f"entrypoint {entrypoint!r} not found in {path}")
    secrets_file = path / SECRETS_FILE
    return PackageFolder(path, name, chosen_project, entrypoint, spec,
                         secrets_file if secrets_file.is_file() else None,
                         renamed_from=None if name == path.name or spec.name else path.name)


_MENDABLE_FOLDER = re.compile(r"[A-Za-z0-9_. -]+")


def package_name_of_folder(folder: str) -> str:
    """The package name a folder's name stands for: Python folders use ``_`` (``secrets_demo``)
    where a package name, a DNS-1123 label, uses ``-`` (``secrets-demo``). Only letters, digits,
    ``_``, ``.``, ``-`` and spaces are mended (lowercased, each run of the others one ``-``,
    trimmed to 63 characters); any other name is left as it is, to be refused with the rule."""
    if not _MENDABLE_FOLDER.fullmatch(folder):
        return folder
    return re.sub(r"[^a-z0-9]+", "-", folder.lower())[:63].strip("-")


def folder_needs(folder: PackageFolder) -> SecretNeeds:
    """The names a run of ``folder`` receives: declared in package.yaml, read by its scripts."""
    scripts = {p.name: p.read_bytes() for p in sorted(folder.path.glob("*.py")) if p.is_file()}
    return SecretNeeds.of(folder.spec.secrets, find_in_scripts(scripts))


def _utf8_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationError(Problem("", f"not UTF-8 text (byte {e.start})"),
                              source=str(path)) from None


def _only_script(path: Path) -> str:
    scripts = sorted(p.name for p in path.glob("*.py"))
    if len(scripts) == 1:
        return scripts[0]
    if not scripts:
        raise RunError(f"no .py script in {path}: a package needs an entrypoint")
    raise RunError(f"several scripts in {path} ({', '.join(scripts)}): name the one to run "
                   f"with 'entrypoint:' in {SPEC_FILE}")


def new_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


@dataclass
class RunOptions:
    params: Mapping[str, Any] = field(default_factory=dict)
    mask: bool = True
    allow_platform_write: bool = False
    timeout: float | None = None


class RunChannel(Protocol):
    """The run's channel while it runs (``fx_operator.endpoints.local_channel`` serves it on a Unix
    socket): its descriptor goes into the bundle; ``close`` stops it when the run ends."""

    @property
    def descriptor(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


#: opens a run's channel: the run service, the run's grant, the socket's path
ChannelOpener = Callable[[RunService, RunGrant, Path], RunChannel]


class LocalRunner:
    """Prepares, runs and records one package run at a time on the configured store.

    The channel is given (``fxctl run`` gives ``endpoints.local_channel.LocalChannel``), so that
    this service depends on no transport, as the operator's services depend on no kopf."""

    def __init__(self, secrets_service: SecretService, *, channel: ChannelOpener,
                 python: str = sys.executable) -> None:
        self.secrets = secrets_service
        self.runs = RunService(secrets_service)
        self.open_channel = channel
        self.python = python

    def run(self, folder: PackageFolder, options: RunOptions) -> RunRecord:
        if folder.secrets_file is not None:
            written = self.secrets.sync_file(folder.secrets_file.read_bytes(),
                                             project=folder.project, package=folder.name,
                                             source=str(folder.secrets_file))
            if written:
                log.info("imported %s: %s", folder.secrets_file,
                         ", ".join(f"{n} v{v}" for n, v in sorted(written.items())))
        run_id = new_run_id()
        needs = folder_needs(folder)
        resolution = self.secrets.resolve(folder.project, folder.name, needs.names,
                                          run_id=run_id, actor=f"run:{run_id}",
                                          allowed=needs.allows if needs.restricted else None)
        if missing := needs.missing(resolution.values):
            raise RunError(f"run of {folder.package_id} refused: "
                           + "; ".join(map(str, missing)))
        grant = RunGrant(run_id, folder.project, folder.name, options.allow_platform_write)
        with private_dir(WORK_DIR_KIND, None) as work, \
                private_dir(SECRETS_DIR_KIND, _tmpfs()) as tmp:
            channel = self.open_channel(self.runs, grant, work / "channel")
            try:
                bundle = _bundle(folder, run_id, resolution, options, channel.descriptor)
                key = new_run_key()
                sealed = work / "bundle.sealed"
                sealed.write_bytes(seal_bundle(bundle, key))
                self._init(run_id, sealed, tmp, key)
                exit_code = self._execute(tmp / contract.BUNDLE_FILE_NAME, folder,
                                          work / "result.json", options)
                record = _record(work / "result.json", folder, run_id, exit_code, resolution)
            finally:
                channel.close()
        self.runs.record_result(record)
        return record

    def _init(self, run_id: str, sealed: Path, out: Path, key: bytes) -> None:
        """The init step, in this process: the same code and checks as ``python -m fx_ef.init``
        (which a pod runs), without a third interpreter's start. The key never leaves this
        process. (bench_cli, load 0.7: the trivial run's p50 393 ms with the init step as a
        process of its own, 322 ms in process.)"""
        from fx_ef.init import InitError, deliver

        try:
            deliver(sealed, out, run_id, key)
        except InitError as e:
            raise RunError(f"the init step failed ({e.exit_code}): fx init: {e}") from None

    def _execute(self, bundle: Path, folder: PackageFolder, result: Path,
                 options: RunOptions) -> int:
        # The executor as a local run starts it: it and the script die with this process.
        command = executor_command(
            python=self.python, runner_pid=os.getpid(), bundle=bundle, package_dir=folder.path,
            result=result, mask=options.mask, timeout=options.timeout or folder.spec.timeout)
        process = subprocess.Popen(command, env=_script_env())
        with _forwarding_signals(process):
            return process.wait()


def _tmpfs() -> Path | None:
    if TMPFS.is_dir() and os.access(TMPFS, os.W_OK):
        return TMPFS
    log.warning("%s is not available: the run's bundle goes to a private folder on disk", TMPFS)
    return None


@contextmanager
def _forwarding_signals(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """While the executor runs, signals go to it; it stops the script and records the result."""
    def forward(signum: int, _frame: FrameType | None) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    def ignore(_signum: int, _frame: FrameType | None) -> None:
        pass  # a terminal's Ctrl-C already reached the executor, in our process group

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                signal.SIGINT: signal.signal(signal.SIGINT, ignore)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_WITHHELD_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _bundle(folder: PackageFolder, run_id: str, resolution: Resolution, options: RunOptions,
            channel: dict[str, Any]) -> RunBundle:
    return RunBundle.build(
        run_id=run_id, project=folder.project, package=folder.name,
        entrypoint=folder.entrypoint, compat=folder.spec.compat,
        params={**folder.spec.params, **options.params}, config=folder.spec.config,
        secrets=resolution.values,
        scopes={name: entry.scope.value for name, entry in resolution.manifest.items()},
        channel=BundleChannel.from_value(channel),
        allow_platform_write=options.allow_platform_write)


def _record(result_file: Path, folder: PackageFolder, run_id: str, exit_code: int,
            resolution: Resolution) -> RunRecord:
    """The executor's result with the run's manifest; the executor's own code if it wrote none."""
    now = datetime.now(UTC)
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        return RunRecord(run_id, folder.project, folder.name, f"run:{run_id}", exit_code, None,
                         False, now, now, 0.0, "(the executor recorded no result)", False,
                         resolution.manifest_dict())
    return RunRecord(
        run_id, folder.project, folder.name, f"run:{run_id}", int(result["exit_code"]),
        result.get("signal"), bool(result.get("timed_out")),
        datetime.fromisoformat(result["started_at"]), datetime.fromisoformat(result["finished_at"]),
        float(result["duration_s"]), str(result["output_tail"]),
        bool(result.get("output_truncated")), resolution.manifest_dict(),
        tuple(str(n) for n in result.get("unmasked_names") or ()),
        tuple(str(n) for n in result.get("missing_names") or ()))
