"""What both images promise (the Dockerfile's header): uid 10001, tini as PID 1, unbuffered
Python, sizes within budget; the operator image's packages are exactly its lock; each image's SBOM
lists every package of its lock."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support.podman import IMAGES_OUT, RUN_USER, PodContainer, Podman

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
# Uncompressed, as `podman image inspect` reports it. Measured at the first build (2026-12-06, a
# Debian bookworm base as python:3.11-slim's): runtime 149 MB, operator 361 MB. A budget is the
# measurement plus room for a few releases of the dependencies; going over it is a decision.
SIZE_BUDGET_MB = {"runtime": 200, "operator": 420}
PROJECT = "fx-executor"


def _images(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"runtime": request.getfixturevalue("runtime_image"),
            "operator": request.getfixturevalue("operator_image")}


@pytest.fixture(params=["runtime", "operator"])
def image(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, _images(request)[request.param]


def locked(name: str) -> dict[str, str]:
    """The lock's pins that apply to the images' Linux CPython 3.11: name -> version."""
    text = (REPO / "requirements" / f"{name}.lock").read_text().replace("\\\n", " ")
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split(" --hash", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or Marker(str(requirement.marker)).evaluate(
                {"python_version": "3.11", "platform_python_implementation": "CPython",
                 "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                 "implementation_name": "cpython"}):
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_user_is_10001_and_pid_1_is_tini(podman: Podman, image: tuple[str, str]) -> None:
    _, name = image
    config = podman.image_inspect(name)["Config"]
    assert config["User"] == f"{RUN_USER}:{RUN_USER}"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    # No --user here: the image's own user, under its own entrypoint.
    probe = podman.run(PodContainer(name, ["sh", "-c", "id -u; id -g; tr '\\0' ' ' "
                                           "< /proc/1/cmdline; echo; echo $PYTHONUNBUFFERED"],
                                    user=None))
    assert probe.returncode == 0, probe.stderr.decode()
    uid, gid, pid1, unbuffered = probe.stdout.decode().splitlines()
    assert (uid, gid) == (str(RUN_USER), str(RUN_USER))
    assert pid1.split()[:2] == ["/usr/bin/tini", "--"]
    assert unbuffered == "1"
    assert "PYTHONUNBUFFERED=1" in config["Env"]


def test_the_sizes_stay_within_budget(podman: Podman, image: tuple[str, str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    target, name = image
    size_mb = podman.image_inspect(name)["Size"] / 1e6
    with capsys.disabled():
        print(f"\n{name}: {size_mb:.0f} MB uncompressed (budget {SIZE_BUDGET_MB[target]} MB)",
              file=sys.stderr)
    assert size_mb <= SIZE_BUDGET_MB[target]


def test_the_operator_image_starts_its_commands(podman: Podman, operator_image: str) -> None:
    version = podman.run(PodContainer(operator_image, ["fxctl", "--version"]))
    assert version.returncode == 0, version.stderr.decode()
    assert "0.1.0" in version.stdout.decode()
    help_text = podman.run(PodContainer(operator_image, ["fxctl", "operator", "--help"]))
    assert help_text.returncode == 0, help_text.stderr.decode()
    assert "Usage:" in help_text.stdout.decode()


def _installed(podman: Podman, name: str) -> dict[str, str]:
    """The image's installed distributions, read by its own interpreter (it has no pip)."""
    probe = podman.run(PodContainer(name, ["python", "-c", (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")]))
    assert probe.returncode == 0, probe.stderr.decode()
    found: dict[str, str] = json.loads(probe.stdout)
    return {canonicalize_name(k): v for k, v in found.items()}


def test_the_operator_images_packages_are_exactly_its_lock(podman: Podman,
                                                           operator_image: str) -> None:
    installed = _installed(podman, operator_image)
    assert installed.pop(PROJECT) == "0.1.0"
    assert installed == locked("operator")


def test_the_runtime_images_packages_are_exactly_its_lock(podman: Podman,
                                                          runtime_image: str) -> None:
    assert _installed(podman, runtime_image) == locked("runtime")


@pytest.mark.parametrize("target", ["runtime", "operator"])
def test_the_sbom_lists_every_locked_package(target: str,
                                             request: pytest.FixtureRequest) -> None:
    _images(request)  # skipped (or failed in CI) like the rest when the images are missing
    path = IMAGES_OUT / f"sbom-{target}.cdx.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: .ci/images writes it", pytrace=False)
    sbom = json.loads(path.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed: dict[str, str] = {canonicalize_name(c["name"]): c["version"]
                              for c in sbom["components"]}
    missing = {name: version for name, version in locked(target).items()
               if listed.get(name) != version}
    assert missing == {}
    purls: dict[str, str] = {canonicalize_name(c["name"]): c.get("purl", "")
                             for c in sbom["components"]}
    for name, version in locked(target).items():
        assert purls[name].lower().startswith(f"pkg:pypi/{name}@{version}"), purls[name]
