"""The run pods' image, run as a Job's pod runs it.

The init container and the script container are the ones ``domain.job_spec.run_job`` builds (the
same commands, paths, user and restrictions); only the key's source differs: stdin here, the
operator's broker in a cluster (the real control plane tier covers that part).
"""

from __future__ import annotations

import base64
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fx_operator.domain import job_spec
from support.podman import RUN_USER, Mount, PodContainer, Podman

from fx_ef import contract
from fx_ef.bundle import new_run_key, seal_bundle

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "examples" / "secrets-fx-ef"
CANARY = "canary-img-5b1e0c-do-not-leak"
RUN_ID = "run-image-test-1"
DISTINCTIVE = ("CANARY", "DB_PASS")
# Set by Debian's base-files; podman mounts its own on them only when asked (--read-only-tmpfs).
STICKY_TEMP_DIRS = {"/tmp", "/var/tmp", "/run/lock"}


def _plan_and_job(image: str) -> dict[str, Any]:
    plan = job_spec.RunPlan(namespace="team-a", execution="seed", execution_uid="uid-1",
                            package="secrets-fx-ef", run_id=RUN_ID,
                            entrypoint="test_secrets.py", script_names=("test_secrets.py",))
    settings = job_spec.RunPodSettings(runtime_image=image, broker_url="https://broker:8443",
                                       broker_audience="fx-broker",
                                       broker_ca_configmap="fx-broker-ca")
    pod: dict[str, Any] = job_spec.run_job(plan, settings)["spec"]["template"]["spec"]
    return pod


def _key_on_stdin(command: list[str]) -> list[str]:
    """The run pod's executor command, its key on stdin instead of from the broker (a broker
    and a pod's token are the real control plane tier's: tests/realk8s)."""
    assert contract.FLAG_SEALED in command
    return [*command, contract.FLAG_KEY_STDIN]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def _sealed_dir(workdir: Path, bundle: dict[str, Any], key: bytes) -> Path:
    """The sealed bundle as the run's Secret volume holds it (ciphertext only)."""
    sealed_dir = _readable_dir(workdir / "sealed")
    sealed = sealed_dir / Path(contract.POD_SEALED_BUNDLE).name
    sealed.write_bytes(seal_bundle(bundle, key))
    sealed.chmod(0o444)
    return sealed_dir


def _readable_dir(path: Path) -> Path:
    """A folder uid 10001 can read, as a ConfigMap or Secret volume is (files 0444)."""
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are root's 0700 folders; bind sources must be reachable.
    with tempfile.TemporaryDirectory(prefix="fx-image-") as folder:
        root = Path(folder)
        root.chmod(0o755)
        yield root


@pytest.fixture
def seed_secrets() -> dict[str, Any]:
    secrets: dict[str, Any] = json.loads((SEED / "secrets.json").read_text())
    return {**secrets, "CANARY": CANARY}


def _forms(value: str) -> list[bytes]:
    return [value.encode(), base64.b64encode(value.encode())]


def _leaks(blob: bytes, secrets: dict[str, Any]) -> list[str]:
    """The names of the distinctive values found in ``blob`` (``test_db``, the seed's DB_NAME, is
    also a word of Python's own files: finding it would prove nothing)."""
    return [name for name in DISTINCTIVE if any(f in blob for f in _forms(secrets[name]))]


def test_the_seed_package_runs_from_a_sealed_bundle_with_its_output_masked(
        podman: Podman, runtime_image: str, workdir: Path,
        seed_secrets: dict[str, Any]) -> None:
    pod = _plan_and_job(runtime_image)
    assert "initContainers" not in pod
    (script,) = pod["containers"]
    bundle = {"format": contract.BUNDLE_FORMAT, "run_id": RUN_ID,
              "package": {"name": "secrets-fx-ef", "id": "team-a/secrets-fx-ef",
                          "project": "team-a"},
              "entrypoint": "test_secrets.py", "compat": None, "params": {}, "config": {},
              "secrets": seed_secrets, "scopes": dict.fromkeys(seed_secrets, "package"),
              "channel": None, "allow_platform_write": False}
    key = new_run_key()
    sealed_dir = _sealed_dir(workdir, bundle, key)
    package_dir = _readable_dir(workdir / "package")
    (package_dir / "test_secrets.py").write_text((SEED / "test_secrets.py").read_text())
    (package_dir / "test_secrets.py").chmod(0o444)
    termination = workdir / "termination-log"
    termination.write_bytes(b"")
    os.chown(termination, RUN_USER, RUN_USER)
    env = {item["name"]: item["value"] for item in script["env"]}

    container = PodContainer(
        runtime_image, _key_on_stdin(script["command"]), env=env, tmpfs=["/tmp"], stdin=True,
        mounts=[Mount(str(package_dir), contract.POD_PACKAGE_DIR),
                Mount(str(sealed_dir), str(Path(contract.POD_SEALED_BUNDLE).parent)),
                Mount(str(termination), contract.POD_RESULT_FILE, read_only=False)])
    with podman.kept(container, input=base64.b64encode(key) + b"\n") as (name, ran):
        output = ran.stdout.decode()
        assert ran.returncode == 0, ran.stderr.decode()
        assert re.search(rf"bundle of run {RUN_ID} delivered in \d+ ms \(held in memory\)",
                         ran.stderr.decode())
        assert "DB NAME: ***" in output
        assert "DB PASS: ***" in output
        assert "PACKAGE NAME: secrets-fx-ef" in output
        result = json.loads(termination.read_text())
        assert result["exit_code"] == 0
        assert result["bundle_removed"] is True
        assert "DB PASS: ***" in result["output_tail"]

        # Nothing of a value anywhere the runtime keeps a trace of the container: the bundle
        # was in memory only (its layer, diff and tmpfs-less root hold no copy).
        traces = {
            "output": ran.stdout + ran.stderr,
            "logs": podman("logs", name).stdout + podman("logs", name).stderr,
            "inspect": podman("container", "inspect", name).stdout,
            "diff": podman("diff", name).stdout,
            "layer": _container_filesystem(podman, name, workdir),
            "termination message": termination.read_bytes(),
        }
        for where, blob in traces.items():
            assert _leaks(blob, seed_secrets) == [], f"{name}: {where}"


def _container_filesystem(podman: Podman, name: str, workdir: Path) -> bytes:
    """Every regular file of the container's filesystem (image layers and its own), concatenated.

    Mounted volumes are not part of it: the tmpfs and the bind mounts stay out, as in a pod.
    """
    archive = workdir / f"{name}.tar"
    podman("export", "--output", str(archive), name, timeout=300)
    chunks = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.size < 64 * 1024 * 1024:
                extracted = tar.extractfile(member)
                if extracted is not None:
                    chunks.append(extracted.read())
    archive.unlink()
    return b"\0".join(chunks)


def test_the_bundle_is_held_in_sealed_memory_that_no_one_writes(
        podman: Podman, runtime_image: str, workdir: Path) -> None:
    """The executor opens the bundle into a sealed memory file: the script reads it through
    ``$FX_BUNDLE`` (``/proc/self/fd/N``), cannot write, grow or truncate it, and no file of it
    exists in any folder of the container."""
    pod = _plan_and_job(runtime_image)
    (script,) = pod["containers"]
    key = new_run_key()
    bundle = {"format": contract.BUNDLE_FORMAT, "run_id": RUN_ID,
              "package": {"name": "p", "id": "team-a/p", "project": "team-a"},
              "entrypoint": "test_secrets.py", "compat": None, "params": {}, "config": {},
              "secrets": {"CANARY": CANARY}, "scopes": {"CANARY": "package"}, "channel": None,
              "allow_platform_write": False}
    sealed_dir = _sealed_dir(workdir, bundle, key)
    package_dir = _readable_dir(workdir / "package")
    (package_dir / "test_secrets.py").write_text(
        "import os, subprocess\n"
        "from fx_ef import context\n"
        "path = os.environ['FX_BUNDLE']\n"
        "print('path:', path.startswith('/proc/self/fd/'))\n"
        "print('reads:', context.secrets.get('CANARY') is not None)\n"
        "for mode in ('r+b', 'ab'):\n"
        "    try:\n"
        "        with open(path, mode) as f:\n"
        "            f.write(b'x')\n"
        "        print(mode, 'written')\n"
        "    except OSError as e:\n"
        "        print(mode, 'refused:', e.strerror)\n"
        "try:\n"
        "    os.truncate(path, 0)\n"
        "    print('truncated')\n"
        "except OSError as e:\n"
        "    print('truncate refused:', e.strerror)\n"
        "found = subprocess.run(['grep', '-rlsF', '--', context.secrets.get('CANARY'),\n"
        "                        '/run', '/tmp', '/opt', '/home', '/var'],\n"
        "                       capture_output=True, text=True)\n"
        "print('files holding it:', found.stdout.split())\n")
    (package_dir / "test_secrets.py").chmod(0o444)
    ran = podman.run(PodContainer(
        runtime_image, _key_on_stdin(script["command"]), env=_env(script), tmpfs=["/tmp"],
        stdin=True,
        mounts=[Mount(str(package_dir), contract.POD_PACKAGE_DIR),
                Mount(str(sealed_dir), str(Path(contract.POD_SEALED_BUNDLE).parent))]),
        input=base64.b64encode(key) + b"\n")
    assert ran.returncode == 0, ran.stderr.decode()
    lines = ran.stdout.decode().splitlines()
    assert lines[:2] == ["path: True", "reads: True"], lines
    assert lines[2] == "r+b refused: Operation not permitted", lines
    assert lines[3] == "ab refused: Operation not permitted", lines
    assert lines[4] == "truncate refused: Operation not permitted", lines
    assert lines[5] == "files holding it: []", lines


def test_the_runtime_image_holds_no_operator_no_pip_and_no_compiler(
        podman: Podman, runtime_image: str) -> None:
    probe = podman.run(PodContainer(runtime_image, ["python", "-c", (
        "import importlib.util as u, shutil, sys\n"
        "mods = ['kopf', 'kubernetes', 'fx_operator', 'psycopg', 'sqlalchemy', 'pydantic',\n"
        "        'aiohttp', 'pip', 'setuptools', 'ensurepip._bundled']\n"
        "print('modules:', [m for m in mods if u.find_spec(m.split('.')[0]) and\n"
        "      (m != 'ensurepip._bundled' or u.find_spec(m))])\n"
        "tools = ['pip', 'pip3', 'gcc', 'cc', 'c++', 'clang', 'ld', 'make', 'apt-get', 'dpkg']\n"
        "print('tools:', [t for t in tools if shutil.which(t)])\n"
        "print('system python modules:', sys.base_prefix)\n")]))
    assert probe.returncode == 0, probe.stderr.decode()
    lines = probe.stdout.decode().splitlines()
    assert lines[0] == "modules: []"
    # apt-get and dpkg are Debian's (the official slim image keeps them too); no compiler, no pip.
    assert set(lines[1].removeprefix("tools: ").strip("[]").replace("'", "").split(", ")) <= {
        "apt-get", "dpkg", ""}
    # The system interpreter has no pip either, nor wheels to bootstrap one.
    system = podman.run(PodContainer(runtime_image, [
        "sh", "-c", "/usr/bin/python3 -c 'import pip' 2>&1; "
        "find / -xdev \\( \\( -type f -perm -u+x \\( -name pip -o -name 'pip[0-9]*' -o -name gcc "
        "-o -name 'gcc-[0-9]*' -o -name 'x86_64-linux-gnu-gcc*' -o -name cc1 -o -name 'clang*' "
        "\\) \\) -o -name 'pip-*.whl' -o \\( -type d -path '*-packages/pip' \\) "
        "\\) -print 2>/dev/null"]))
    found = system.stdout.decode()
    assert "No module named 'pip'" in found
    assert [line for line in found.splitlines() if line.startswith("/")] == []


def test_nothing_is_writable_by_the_run_user_outside_its_mounts(
        podman: Podman, runtime_image: str) -> None:
    """Even without a read-only root (a cluster that forgets it), uid 10001 can change no file of
    the image but the world-writable, sticky temp folders every Debian system has."""
    found = podman.run(PodContainer(
        runtime_image, ["find", "/", "-xdev", "-writable", "!", "-type", "l", "-print"],
        read_only=False))
    writable = set(found.stdout.decode().split())
    assert writable <= STICKY_TEMP_DIRS, sorted(writable - STICKY_TEMP_DIRS)
    sticky = podman.run(PodContainer(
        runtime_image, ["stat", "-c", "%n %a", *sorted(writable)], read_only=False))
    assert all(line.split()[1] == "1777" for line in sticky.stdout.decode().splitlines())
    # And with the pod's read-only root nothing at all is writable.
    denied = podman.run(PodContainer(runtime_image, [
        "sh", "-c", "touch /opt/fx/x 2>&1; touch /tmp/x 2>&1; touch /x 2>&1"]))
    assert denied.stdout.decode().count("Read-only file system") == 3


def test_the_script_cannot_write_past_the_masker_through_the_executors_descriptors(
        podman: Podman, runtime_image: str, workdir: Path) -> None:
    """The script runs as the executor's uid: without more, it could open
    ``/proc/<executor>/fd/1`` (the container's log) and write a secret there unmasked. The
    executor is not dumpable, so the kernel refuses that open to any other process of its uid."""
    pod = _plan_and_job(runtime_image)
    (script,) = pod["containers"]
    bundle = {"format": contract.BUNDLE_FORMAT, "run_id": RUN_ID,
              "package": {"name": "p", "id": "team-a/p", "project": "team-a"},
              "entrypoint": "test_secrets.py", "compat": None, "params": {}, "config": {},
              "secrets": {"CANARY": CANARY}, "scopes": {"CANARY": "package"}, "channel": None,
              "allow_platform_write": False}
    package_dir = _readable_dir(workdir / "package")
    (package_dir / "test_secrets.py").write_text(
        "import os\n"
        "from fx_ef import context\n"
        "for fd in (1, 2):\n"
        "    try:\n"
        "        with open(f'/proc/{os.getppid()}/fd/{fd}', 'w') as out:\n"
        "            out.write(context.secrets.get('CANARY') + '\\n')\n"
        "        print('written past the masker')\n"
        "    except OSError as e:\n"
        "        print('refused:', e.strerror)\n"
        "print('masked:', context.secrets.get('CANARY'))\n")
    (package_dir / "test_secrets.py").chmod(0o444)
    termination = workdir / "termination-log"
    termination.write_bytes(b"")
    os.chown(termination, RUN_USER, RUN_USER)
    key = new_run_key()
    sealed_dir = _sealed_dir(workdir, bundle, key)
    ran = podman.run(PodContainer(
        runtime_image, _key_on_stdin(script["command"]), env=_env(script), tmpfs=["/tmp"],
        stdin=True,
        mounts=[Mount(str(package_dir), contract.POD_PACKAGE_DIR),
                Mount(str(sealed_dir), str(Path(contract.POD_SEALED_BUNDLE).parent)),
                Mount(str(termination), contract.POD_RESULT_FILE, read_only=False)]),
        input=base64.b64encode(key) + b"\n")
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output.decode()
    assert output.decode().count("refused: Permission denied") == 2, output.decode()
    assert b"written past the masker" not in output
    assert b"masked: ***" in output
    assert CANARY.encode() not in output
