"""podman, driven as a kubelet would drive a container runtime: the images built by ``.ci/images``,
run with a pod's restrictions (uid 10001, read-only root, no capabilities, no network, a tmpfs for
the secrets, the package's scripts mounted read-only).

Everything goes through the ``podman`` command line, as a platform team's debugging would; the
engine's settings for these machines come from ``.ci/containers.conf`` (``CONTAINERS_CONF``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / ".ci" / "containers.conf"
RUNTIME_IMAGE = os.environ.get("FX_RUNTIME_IMAGE", "localhost/fx-runtime:ci")
OPERATOR_IMAGE = os.environ.get("FX_OPERATOR_IMAGE", "localhost/fx-operator:ci")
IMAGES_OUT = Path(os.environ.get("FX_IMAGES_OUT", REPO / ".cache" / "images"))
RUN_USER = 10001


class PodmanError(RuntimeError):
    """podman exited non-zero; the message has the command line and the end of its output."""


class PodmanNotFoundError(RuntimeError):
    pass


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path at ``target`` inside the container."""

    source: str
    target: str
    read_only: bool = True

    def arg(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True)
class PodContainer:
    """One container as a restricted pod runs it (the Job's ``securityContext``)."""

    image: str
    args: Sequence[str]
    mounts: Sequence[Mount] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: int | None = RUN_USER
    read_only: bool = True
    tmpfs: Sequence[str] = ()
    stdin: bool = False
    name: str | None = None

    def run_args(self) -> list[str]:
        args = ["--network", "none", "--cap-drop", "all", "--security-opt", "no-new-privileges",
                "--pids-limit", "256"]
        if self.name:
            args += ["--name", self.name]
        if self.user is not None:
            args += ["--user", f"{self.user}:{self.user}"]
        if self.read_only:
            # As readOnlyRootFilesystem: no writable /tmp, /var/tmp or /run unless mounted.
            args += ["--read-only", "--read-only-tmpfs=false"]
        if self.stdin:
            args.append("--interactive")
        for path in self.tmpfs:
            args += ["--tmpfs", f"{path}:rw,nosuid,nodev,noexec,size=16m,mode=1777"]
        for mount in self.mounts:
            args += ["--volume", mount.arg()]
        for name, value in self.env.items():
            args += ["--env", f"{name}={value}"]
        return [*args, self.image, *self.args]


@dataclass(frozen=True)
class Podman:
    binary: str
    env: Mapping[str, str]

    @classmethod
    def find(cls) -> Podman:
        binary = shutil.which("podman")
        if binary is None:
            raise PodmanNotFoundError("podman is not installed (.ci/images installs it)")
        env = dict(os.environ)
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
        return cls(binary, env)

    def __call__(self, *args: str, input: bytes | None = None, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([self.binary, *args], env=dict(self.env), input=input,
                                capture_output=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise PodmanError(f"`podman {' '.join(args)}` exited {result.returncode}:\n"
                              f"{result.stderr.decode(errors='replace')[-3000:]}")
        return result

    def text(self, *args: str, timeout: float = 120) -> str:
        return self(*args, timeout=timeout).stdout.decode()

    def image_exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def image_inspect(self, image: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.text("image", "inspect", image))
        return found[0]

    def run(self, container: PodContainer, *, input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """``podman run --rm``; the result whatever the exit code."""
        return self("run", "--rm", *container.run_args(), input=input, timeout=timeout,
                    check=False)

    @contextmanager
    def kept(self, container: PodContainer, *, input: bytes | None = None,
             timeout: float = 120) -> Iterator[tuple[str, subprocess.CompletedProcess[bytes]]]:
        """Run to the end and keep the container (for its logs, inspect, diff); removed after."""
        name = container.name or f"fx-test-{uuid.uuid4().hex[:12]}"
        kept = PodContainer(**{**container.__dict__, "name": name})
        try:
            yield name, self("run", *kept.run_args(), input=input, timeout=timeout, check=False)
        finally:
            self("rm", "--force", "--volumes", name, check=False)

    @contextmanager
    def memory_dir(self, *, uid: int = RUN_USER, size: str = "16Mi") -> Iterator[str]:
        """A pod's ``emptyDir: {medium: Memory}`` as a kubelet makes it: a tmpfs mounted on the
        host, owned by the run user, bind-mounted into each container of the pod (so it outlives
        the init container, which a podman volume of type tmpfs does not). Needs root."""
        folder = tempfile.mkdtemp(prefix="fx-emptydir-")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o",
             f"size={size.removesuffix('i')},mode=0700,uid={uid},gid={uid},nosuid,nodev",
             "tmpfs", folder], capture_output=True, text=True, check=False)
        if mounted.returncode != 0:
            os.rmdir(folder)
            raise PodmanError(f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", folder], check=False)
            os.rmdir(folder)
