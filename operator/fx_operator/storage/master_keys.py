"""Where the master key comes from.

A provider only loads a key; whether the key is the one the store was written with is checked by
the store (it records the key's id). A new local key is made only when the store is empty, so a
missing key file never turns into a fresh key over existing data.

The key that opens the store is read only when nobody else could have read or replaced it, as
ssh treats a private key (:func:`read_key_file`): a regular file (not ``/dev/zero``, a FIFO, a
folder); its owner's alone when it is ours (mode 0600 or 0400: ssh refuses "unprotected private
key files"); writable by no other user; in a folder owned by us or root that other users cannot
write to (a sticky folder, such as a Kubernetes Secret volume's root, is fine for a file of
ours or root's). A key file of another owner that every user may read (a Secret mounted with mode
0644) is read with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Protocol

from fx_operator.domain.master_key import MasterKey
from fx_operator.exceptions import MasterKeyError

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 4096  # a key is 45 bytes of base64; anything much longer is not a key
_FILE_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class MasterKeyProvider(Protocol):
    """Something that can hand out the master key (a file, later a KMS)."""

    @property
    def description(self) -> str:
        """Where the key comes from, for error messages (never the key)."""
        ...

    def load(self) -> MasterKey:
        """The key, or MasterKeyError saying what is missing or wrong."""
        ...


class FileMasterKeyProvider:
    """A base64 256-bit key in a file: ``FX_MASTER_KEY_FILE``, a mounted Secret in a cluster.

    ``guarded``: the key that opens the store, checked as ssh checks a private key
    (:func:`read_key_file`). Unguarded, a key handed in once (a rotation's new key, which may
    come on ``/dev/stdin``) is only read, at most :data:`MAX_KEY_FILE_BYTES` of it.
    """

    def __init__(self, path: Path, *, guarded: bool = False) -> None:
        self.path = path
        self.guarded = guarded

    @property
    def description(self) -> str:
        return f"the master key file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> MasterKey:
        text = read_key_file(self.path, self.description, guarded=self.guarded)
        return MasterKey.from_base64(text, source=self.description)

    def write_new(self, key: MasterKey, *, path: Path | None = None) -> Path:
        """Write a key to a new file only the owner can read; refuses to overwrite."""
        target = path or self.path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise MasterKeyError(f"refusing to overwrite the existing key file {target}") from None
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key.to_base64() + "\n")
            out.flush()
            os.fsync(out.fileno())
        return target


class LocalMasterKeyProvider(FileMasterKeyProvider):
    """For the embedded store on a laptop only: the key lives next to the store, mode 0600."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, guarded=True)

    def load_or_create(self, *, store_is_empty: bool) -> MasterKey:
        if self.exists():
            return self.load()
        if not store_is_empty:
            raise MasterKeyError(
                f"{self.description} is missing but the store already holds data keys: restore "
                "the key file (or set FX_MASTER_KEY_FILE); a new key would not open them")
        key = MasterKey.generate()
        self.write_new(key)
        return key


def read_key_file(path: Path, description: str, *, guarded: bool = True) -> str:
    """The text of a key file; ``guarded``, only if no other user could have read or replaced it.

    Symlinks are followed (a Kubernetes Secret volume is made of them); the checks are made on
    the opened file. Raises :class:`MasterKeyError` saying what is wrong and how to fix it.
    """
    # Guarded, O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | (os.O_NONBLOCK if guarded else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MasterKeyError(f"{description} does not exist") from None
    except OSError as e:
        raise MasterKeyError(f"{description} cannot be read: {e.strerror or e}") from None
    try:
        if guarded:
            info = os.fstat(fd)
            _check_key_file(path, info, description)
            shared = [check_private_folder(folder, f"the folder of {description}")
                      for folder in {path.absolute().parent, path.resolve().parent}]
            if any(shared) and info.st_uid not in (os.geteuid(), 0):
                raise MasterKeyError(f"{description} belongs to another user (uid {info.st_uid}) "
                                     "and lies in a folder where every user may create files: "
                                     "they could have put it there")
        data = _read_at_most(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise MasterKeyError(f"{description} cannot be read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise MasterKeyError(f"{description} is not a master key: it holds more than "
                             f"{MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyError(f"{description} is not a master key: it is not base64 "
                             "text") from None


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes, to the end of the file (a pipe may give them in several reads)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_key_file(path: Path, info: os.stat_result, description: str) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise MasterKeyError(f"{description} is {kind}, not a regular file")
    if info.st_uid == os.geteuid() and mode & 0o077:
        raise MasterKeyError(f"{description} may be read or written by other users (mode "
                             f"{mode:04o}); a key file must be its owner's alone, as ssh "
                             f"requires of private keys: chmod 600 {path}")
    if mode & 0o002:
        raise MasterKeyError(f"{description} may be written by every user (mode {mode:04o}): "
                             f"chmod o-w {path}")
    if mode & 0o004:
        log.warning("%s may be read by every user of this machine (mode %04o, owner uid %d): "
                    "give it mode 0400 or 0440 (a Secret volume's defaultMode)", description,
                    mode, info.st_uid)


def check_private_folder(folder: Path, description: str, error: type[Exception] = MasterKeyError,
                         *, sticky_ok: bool = True) -> bool:
    """Refuse a folder where another user could replace what we keep: not owned by us or root,
    or writable by every user. With the sticky bit (and ``sticky_ok``), others cannot replace
    our files but may create theirs: returns True then, so that the caller trusts only files of
    ours or root's in it. A missing folder passes (it is made 0700)."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (os.geteuid(), 0):
        raise error(f"{description} ({folder}) belongs to another user (uid {info.st_uid}): "
                    "anything in it could be replaced")
    if mode & 0o002 and not (sticky_ok and mode & stat.S_ISVTX):
        raise error(f"{description} ({folder}) may be written by every user (mode "
                    f"{mode:04o}): chmod o-w {folder}")
    return bool(mode & 0o002)
