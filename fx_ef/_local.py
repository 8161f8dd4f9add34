"""Local mode's writes: ef_env.json (``secrets.set``) and ef_state.json (``state.put``).

Every write is a read-modify-write under an exclusive ``flock`` of the file, and the new text
replaces the file atomically (a temporary file renamed over it). So two processes writing at once
both land, and a reader without the lock sees the old file or the new one, never half of one.
Imported on first write only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from fx_ef._rundata import parse_json_object

STATE_WHAT = "the local package state"


def update_json_object(path: str, what: str, mutate: Callable[[dict[str, Any]], None], *,
                       create: bool) -> None:
    """Apply ``mutate`` to the object in ``path`` and write it back, atomically and locked.

    An empty (just created) file counts as ``{}``. Raises ``OSError`` when the file cannot be
    opened or written, ``RunDataError`` when it does not hold a JSON object.
    """
    path = os.path.realpath(path)  # replace the file a symlink points at, not the link
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    while True:
        fd = os.open(path, flags, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Whoever held the lock before may have renamed a new file over this one while we
            # waited: then this lock guards nothing. Start again on the current file.
            mine = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                if not create:
                    raise
                continue
            if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                continue
            raw = _read_all(fd)
            document = parse_json_object(raw, path, what) if raw.strip() else {}
            mutate(document)
            _replace(path, document, stat.S_IMODE(mine.st_mode))
            return
        finally:
            os.close(fd)  # also releases the lock, after the new file is in place


def read_state(path: str) -> dict[str, Any]:
    """The local state, ``{}`` before the first ``put``; no lock needed (writes are atomic)."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        return {}
    if not raw.strip():
        return {}
    return parse_json_object(raw, path, STATE_WHAT)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _replace(path: str, document: dict[str, Any], mode: int) -> None:
    """Write ``document`` beside ``path`` and rename it over ``path``, keeping the file's mode."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    directory, name = os.path.split(path)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
