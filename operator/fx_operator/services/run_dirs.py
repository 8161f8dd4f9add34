"""The private folders of local runs, named after the process that owns them, and the removal of
those whose owner is gone.

A local run writes every resolved secret in plaintext to a tmpfs folder (``/dev/shm/fx-secrets-*``)
and removes it when the run ends. A run killed outright (``kill -9`` of fxctl's process group)
cannot, and the folder would stay until the machine restarts. So each folder's name records its
owner: fxctl's pid and that process's start time (field 22 of ``/proc/<pid>/stat``, clock ticks
since boot), which tells the owner from a later process that got the same pid. :func:`sweep`
removes the folders whose owner no longer runs; ``fxctl run`` sweeps before each local run, and
``fxctl gc`` on demand.

Only folders that cannot be anyone else's are removed: the name must match exactly, the entry must
be a real directory (a symlink is never followed) owned by this user. Linux only (``/proc``);
elsewhere folders carry no owner and are never swept.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SECRETS_DIR_KIND = "fx-secrets"  # the tmpfs folder the init step writes the bundle into
WORK_DIR_KIND = "fx-run"  # the sealed bundle, the channel's socket, the executor's result
TMPFS = Path("/dev/shm")  # noqa: S108 (private 0700 folders are made inside)
_OWNED_NAME = re.compile(rf"(?:{SECRETS_DIR_KIND}|{WORK_DIR_KIND})-([0-9]+)\.([0-9]+)-[a-z0-9_]+")
_ENDED_STATES = ("Z", "X")  # a zombie's run is over, whoever has yet to reap it


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it can be told from any later one with the same pid."""

    pid: int
    start_time: int


def process_identity(pid: int) -> ProcessIdentity | None:
    """The running process ``pid``, or None when there is none (or it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode("ascii", errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid ... starttime ...": comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2:].split()
    if len(fields) < 20 or fields[0] in _ENDED_STATES:
        return None
    return ProcessIdentity(pid, int(fields[19]))


def current_process() -> ProcessIdentity | None:
    return process_identity(os.getpid())


def default_roots() -> list[Path]:
    """Where local runs make their folders: the tmpfs and the temporary directory."""
    return [TMPFS, Path(tempfile.gettempdir())]


@contextmanager
def private_dir(kind: str, parent: Path | None) -> Iterator[Path]:
    """A new folder of mode 0700 named after this process, removed when the block ends."""
    owner = current_process()
    prefix = f"{kind}-{owner.pid}.{owner.start_time}-" if owner else f"{kind}-"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep(roots: Iterable[Path] | None = None) -> list[Path]:
    """Remove the run folders in ``roots`` whose owner has ended; returns the removed ones."""
    removed = []
    uid = os.getuid()
    for root in default_roots() if roots is None else roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            match = _OWNED_NAME.fullmatch(entry.name)
            if match is None:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
                continue
            owner = ProcessIdentity(int(match[1]), int(match[2]))
            if process_identity(owner.pid) == owner:
                continue
            try:
                # rmtree opens each folder without following symlinks and refuses a folder
                # swapped for a symlink after the check above (its avoids_symlink_attacks).
                shutil.rmtree(entry.path)
            except FileNotFoundError:
                continue  # another sweep got there first
            except OSError as e:
                log.warning("cannot remove the leftover run folder %s: %s", entry.path,
                            e.strerror or e)
                continue
            removed.append(Path(entry.path))
    return removed
