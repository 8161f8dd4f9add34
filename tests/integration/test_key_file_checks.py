"""The master key is read only from a file, and a folder, that no other user could have read or
replaced: fxctl refuses (or, for a key another owner lets everyone read, warns) in one line.

Before, a key file of mode 0644 and an FX_HOME of 0777 were used silently, ``/dev/zero`` was read
until memory ran out, and a FIFO blocked fxctl forever. Each case runs the real ``fxctl`` with
its address space capped, so that such a regression fails instead of eating the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from fx_operator.domain.crypto import MasterKey
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.processes import child_env

MEMORY_CAP = 1 << 30
#: A command that opens the store and its key (a listing on a fresh FX_HOME opens nothing).
OPENS_THE_STORE = ("secrets", "set", "KEY_CHECK", "x", "--scope", "platform")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def fxctl(env: dict[str, str], *args: str,
          stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fx_operator", *args], env=child_env(env),
                          input=stdin.decode() if stdin is not None else None,
                          capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=_capped)


def _key_file(folder: Path, mode: int = 0o600) -> Path:
    folder.mkdir(exist_ok=True)
    path = FileMasterKeyProvider(folder / "master.key").write_new(MasterKey.generate())
    path.chmod(mode)
    return path


def _env(tmp_path: Path, key: Path | str | None = None, home: Path | None = None) -> dict[str, str]:
    env = {"FX_HOME": str(home or tmp_path / "home"), "FX_ACTOR": "user:test"}
    if key is not None:
        env["FX_MASTER_KEY_FILE"] = str(key)
    return env


def _refused(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr


def test_a_key_file_others_may_read_is_refused_as_ssh_refuses_it(tmp_path: Path) -> None:
    for mode in (0o644, 0o640, 0o604, 0o620):
        key = _key_file(tmp_path / "keys", mode)
        _refused(fxctl(_env(tmp_path, key), *OPENS_THE_STORE), f"(mode {mode:04o})",
                 f"chmod 600 {key}")
        key.unlink()
    assert fxctl(_env(tmp_path, _key_file(tmp_path / "keys", 0o400)),
                 *OPENS_THE_STORE).returncode == 0


def test_the_local_key_made_private_then_opened_up_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert fxctl(env, *OPENS_THE_STORE).returncode == 0
    local_key = tmp_path / "home" / "master.key"
    assert local_key.stat().st_mode & 0o777 == 0o600
    local_key.chmod(0o644)
    _refused(fxctl(env, *OPENS_THE_STORE), "(mode 0644)", f"chmod 600 {local_key}")


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o703])
def test_an_fx_home_every_user_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(mode)
    _refused(fxctl(_env(tmp_path, home=home), *OPENS_THE_STORE), "FX_HOME",
             f"(mode {mode:04o})")
    assert not (home / "master.key").exists() and not (home / "store.sqlite3").exists()


@as_root
def test_an_fx_home_of_another_user_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, 4242, 4242)
    _refused(fxctl(_env(tmp_path, home=home), *OPENS_THE_STORE), "FX_HOME",
             "belongs to another user (uid 4242)")


def test_a_key_path_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)
    for path, kind in [("/dev/zero", "a character device"), (fifo, "a FIFO"),
                       (tmp_path, "a folder")]:
        _refused(fxctl(_env(tmp_path, path), *OPENS_THE_STORE), f"{path} is {kind}",
                 "not a regular file")


def test_a_key_in_a_folder_every_user_may_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    key = _key_file(tmp_path / "shared")
    key.parent.chmod(0o777)
    _refused(fxctl(_env(tmp_path, key), *OPENS_THE_STORE), "the folder of the master key file",
             "(mode 0777)")
    key.parent.chmod(0o1777)  # as a Kubernetes Secret volume's root: nobody may replace our file
    assert fxctl(_env(tmp_path, key), *OPENS_THE_STORE).returncode == 0


@as_root
def test_a_key_of_another_user_in_a_folder_every_user_may_write_is_refused(
        tmp_path: Path) -> None:
    key = _key_file(tmp_path / "shared")
    key.parent.chmod(0o1777)
    os.chown(key, 4242, 4242)  # as if planted there by that user before we looked
    _refused(fxctl(_env(tmp_path, key), *OPENS_THE_STORE), "belongs to another user (uid 4242)",
             "they could have put it there")


@as_root
def test_a_key_in_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    key = _key_file(tmp_path / "theirs")
    os.chown(key.parent, 4242, 4242)
    _refused(fxctl(_env(tmp_path, key), *OPENS_THE_STORE), "belongs to another user")


@as_root
def test_a_key_of_another_owner_that_everyone_may_read_is_used_with_a_warning(
        tmp_path: Path) -> None:
    key = _key_file(tmp_path / "mounted", 0o644)
    os.chown(key, 4242, 4242)  # as a Secret volume's file, root's and not the reader's
    done = fxctl(_env(tmp_path, key), *OPENS_THE_STORE)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and "may be read by every user" in done.stderr
    key.chmod(0o440)  # the chart's defaultMode: no warning
    assert fxctl(_env(tmp_path, key), *OPENS_THE_STORE).stderr == ""
    key.chmod(0o646)
    _refused(fxctl(_env(tmp_path, key), *OPENS_THE_STORE), "may be written by every user")


def test_a_new_key_for_a_rotation_still_comes_on_stdin(tmp_path: Path) -> None:
    env = _env(tmp_path, _key_file(tmp_path / "keys"))
    assert fxctl(env, "secrets", "set", "DB_PASS", "-", "--scope", "project",
                 stdin=b"s3cret").returncode == 0
    new_key = MasterKey.generate()
    done = fxctl(env, "secrets", "rotate-master-key", "--new-key-file", "/dev/stdin",
                 stdin=new_key.to_base64().encode() + b"\n")
    assert done.returncode == 0, done.stderr
    assert new_key.key_id in done.stdout
    assert new_key.to_base64() not in done.stdout + done.stderr
