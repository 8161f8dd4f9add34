"""What a local run killed outright leaves: nothing that runs, and no secrets once fxctl is back.

A real ``fxctl run`` (a separate process in a session of its own) is killed with ``kill -9`` of
its whole process group while its script runs. The script must end with it, and the plaintext
bundle it leaves in the tmpfs must be gone after the next ``fxctl gc`` or ``fxctl run``. The
sweep itself removes only folders it can prove are a dead run's: exact name, real directory,
owned by this user, owner process ended (a reused pid does not count as the owner).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fx_operator.services.run_dirs import ProcessIdentity, process_identity, sweep
from support.processes import child_env, fxctl
from support.waiting import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

SECRET = "leftover-canary-5d0c9e7a"
SLEEPER = """
    import os, time
    from fx_ef import context
    assert context.secrets.get("DB_PASS")
    print(os.getpid(), os.environ["FX_BUNDLE"], flush=True)
    time.sleep(600)
"""


@dataclass
class KilledRun:
    """A local run whose fxctl was killed with its process group while the script ran."""

    fxctl_pid: int
    script: ProcessIdentity
    bundle: Path

    def leftovers(self) -> list[Path]:
        roots = [Path("/dev/shm"), Path(tempfile.gettempdir())]
        return [p for root in roots for p in root.glob(f"fx-*-{self.fxctl_pid}.*")]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:test"}


def _package(root: Path, name: str, script: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(script))
    (folder / "secrets.json").write_text(json.dumps({"DB_PASS": SECRET}))
    return folder


@pytest.fixture
def killed_run(tmp_path: Path, env: dict[str, str]) -> Iterator[KilledRun]:
    run = subprocess.Popen(
        [sys.executable, "-m", "fx_operator", "run", str(_package(tmp_path, "sleeper", SLEEPER))],
        env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)  # its own process group, as a shell gives a job
    assert run.stdout is not None and run.stderr is not None
    line = run.stdout.readline().decode()
    assert line, run.stderr.read().decode()
    pid, bundle = line.split()
    script = process_identity(int(pid))
    assert script is not None
    assert SECRET.encode() in Path(bundle).read_bytes()  # what is at stake: plaintext
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    run.stdout.close()
    run.stderr.close()
    killed = KilledRun(run.pid, script, Path(bundle))
    try:
        yield killed
    finally:
        if process_identity(script.pid) == script:  # never leave it behind, whatever failed
            os.kill(script.pid, signal.SIGKILL)


def _ended(process: ProcessIdentity) -> bool:
    return process_identity(process.pid) != process


def test_the_script_dies_with_its_runner_and_gc_removes_the_secrets(
        killed_run: KilledRun, env: dict[str, str]) -> None:
    wait_for(lambda: _ended(killed_run.script), "the script ended with its killed fxctl")
    assert killed_run.bundle.exists(), "nothing was left: the test no longer shows a leftover"
    assert {p.name.split("-")[1] for p in killed_run.leftovers()} == {"secrets", "run"}

    done = fxctl(["gc"], env=env)

    assert done.returncode == 0, done.stderr
    assert not killed_run.bundle.parent.exists()
    assert killed_run.leftovers() == []
    assert str(killed_run.bundle.parent) in done.stderr
    assert SECRET not in done.stderr


def test_the_next_run_removes_the_secrets(killed_run: KilledRun, env: dict[str, str],
                                          tmp_path: Path) -> None:
    done = fxctl(["run", str(_package(tmp_path, "next", "print('next run')\n"))], env=env)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "next run\n"
    assert not killed_run.bundle.parent.exists()
    assert killed_run.leftovers() == []
    wait_for(lambda: _ended(killed_run.script), "the script ended with its killed fxctl")


# --- what the sweep leaves alone ------------------------------------------------------------------

def _ended_process() -> ProcessIdentity:
    child = subprocess.Popen(["sleep", "60"])
    identity = process_identity(child.pid)
    child.kill()
    child.wait()
    assert identity is not None and process_identity(child.pid) is None
    return identity


def _folder(root: Path, owner: ProcessIdentity, kind: str = "fx-secrets") -> Path:
    path = root / f"{kind}-{owner.pid}.{owner.start_time}-k3x_9a0q"
    path.mkdir(mode=0o700)
    (path / "bundle.json").write_text("{}")
    return path


def test_the_sweep_removes_only_the_folders_of_ended_runs(tmp_path: Path) -> None:
    ended = _ended_process()
    me = process_identity(os.getpid())
    assert me is not None
    dead_secrets = _folder(tmp_path, ended)
    dead_work = _folder(tmp_path, ended, "fx-run")
    reused_pid = _folder(tmp_path, ProcessIdentity(me.pid, me.start_time + 1))
    alive = _folder(tmp_path, me, "fx-run")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    link = tmp_path / f"fx-secrets-{ended.pid}.{ended.start_time}-link0000"
    link.symlink_to(victim, target_is_directory=True)
    a_file = tmp_path / f"fx-secrets-{ended.pid}.{ended.start_time}-file0000"
    a_file.write_text("not a folder")
    near_misses = [tmp_path / f"{prefix}-{ended.pid}.{ended.start_time}-abc{suffix}"
                   for prefix, suffix in [("fx-secretsx", ""), ("fx-secrets", ".d"),
                                          ("xfx-run", ""), ("fx-run", "\n")]]
    for path in near_misses:
        path.mkdir()
    unowned = tmp_path / f"fx-secrets-{ended.pid}-abcd1234"  # an older fxctl's: no owner known
    unowned.mkdir()

    removed = sweep([tmp_path, tmp_path / "missing"])

    assert sorted(removed) == sorted([dead_secrets, dead_work, reused_pid])
    assert not any(p.exists() for p in removed)
    assert alive.is_dir() and link.is_symlink() and a_file.is_file() and unowned.is_dir()
    assert (victim / "keep").read_text() == "mine"
    assert all(p.is_dir() for p in near_misses)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_the_sweep_leaves_other_users_folders(tmp_path: Path) -> None:
    theirs = _folder(tmp_path, _ended_process())
    os.chown(theirs, 4242, 4242)

    assert sweep([tmp_path]) == []
    assert (theirs / "bundle.json").exists()
