"""The images' promises, read from the Dockerfile and the lock files (no Docker needed).

* every third-party package is pinned to one version with sha256 hashes, and installed with
  ``--require-hashes``;
* the locked versions satisfy pyproject.toml (a lock that drifted from it fails here: refresh it
  with ``requirements/lock.sh``);
* the run pods' image carries neither kopf nor the kubernetes client;
* both final images run as a non-root user, under tini, with Python's output unbuffered.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
FINAL_STAGES = ("runtime", "operator")
# The images' interpreter (python:3.11-slim on Linux): markers in the locks are judged for it.
IMAGE_ENVIRONMENT = {**default_environment(), "python_version": "3.11",
                     "python_full_version": "3.11.0", "sys_platform": "linux",
                     "platform_system": "Linux", "os_name": "posix",
                     "implementation_name": "cpython", "platform_python_implementation": "CPython"}
NOT_IN_RUN_PODS = {"kopf", "kubernetes", "aiohttp", "psycopg", "psycopg-binary", "sqlalchemy",
                   "pydantic", "prometheus-client"}


# --- lock files ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: str | None
    hashes: tuple[str, ...]
    line: str

    def applies(self) -> bool:
        return self.marker is None or Marker(self.marker).evaluate(IMAGE_ENVIRONMENT)


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins of a pip requirements file with hashes; anything else in it fails the test."""
    pins: dict[str, Pin] = {}
    for raw in path.read_text().replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        options = re.findall(r"(?<!\S)--\S+", line)
        assert all(o.startswith("--hash=sha256:") for o in options), f"{path.name}: {line}"
        requirement = Requirement(re.sub(r"(?<!\S)--\S+", "", line).strip())
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", \
            f"{path.name}: {requirement.name} is not pinned to one version"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} is pinned twice"
        pins[name] = Pin(name, Version(specifiers[0].version),
                         str(requirement.marker) if requirement.marker else None,
                         tuple(o.removeprefix("--hash=sha256:") for o in options), line)
    assert pins, f"{path.name} pins nothing"
    return pins


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, Pin]]:
    return {name: read_lock(LOCKS / f"{name}.lock") for name in ("runtime", "operator", "build")}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("lock", ["runtime", "operator", "build"])
def test_every_pin_has_hashes(locks: dict[str, dict[str, Pin]], lock: str) -> None:
    for pin in locks[lock].values():
        assert pin.hashes, f"{lock}.lock: {pin.name} has no --hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes), pin.line


def _assert_satisfied(requirements: list[str], pins: dict[str, Pin], lock: str) -> None:
    for text in requirements:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None and pin.applies(), f"{lock}.lock lacks {text}"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{lock}.lock pins {pin.name}=={pin.version}, but pyproject.toml asks {text}: "
            "run requirements/lock.sh")


def test_the_operator_lock_satisfies_pyproject(locks: dict[str, dict[str, Pin]],
                                               pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    _assert_satisfied([*project["dependencies"], *project["optional-dependencies"]["operator"]],
                      locks["operator"], "operator")
    # psycopg[binary]: the extra's package is locked too, at psycopg's own version.
    assert locks["operator"]["psycopg-binary"].version == locks["operator"]["psycopg"].version


def test_the_runtime_lock_is_cryptography_and_its_dependencies_only(
        locks: dict[str, dict[str, Pin]], pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    crypto = [r for r in project["dependencies"]
              if canonicalize_name(Requirement(r).name) == "cryptography"]
    _assert_satisfied(crypto, locks["runtime"], "runtime")
    runtime = set(locks["runtime"])
    assert not runtime & NOT_IN_RUN_PODS, f"the run pods' lock holds {runtime & NOT_IN_RUN_PODS}"
    assert runtime <= {"cryptography", "cffi", "pycparser"}, runtime
    # The same versions as the operator's: one cryptography is tested, not two.
    for name in runtime:
        assert locks["runtime"][name].version == locks["operator"][name].version, name


def test_the_build_lock_satisfies_the_build_system(locks: dict[str, dict[str, Pin]],
                                                   pyproject: dict[str, object]) -> None:
    build_system = pyproject["build-system"]
    assert isinstance(build_system, dict)
    _assert_satisfied(build_system["requires"], locks["build"], "build")


# --- Dockerfile ----------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def read_dockerfile(path: Path) -> dict[str, Stage]:
    """Stages by name, each with its instructions (keyword, arguments), continuations joined."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", path.read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = Stage(match.group(2), match.group(1))
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return read_dockerfile(REPO / "Dockerfile")


def _chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def _effective(stages: dict[str, Stage], name: str, keyword: str) -> str | None:
    for stage in _chain(stages, name):
        found = stage.all(keyword)
        if found:
            return found[-1]
    return None


def _env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in reversed(_chain(stages, name)):
        for args in stage.all("ENV"):
            env.update(dict(w.split("=", 1) for w in shlex.split(args)))
    return env


def test_the_final_stages_exist(stages: dict[str, Stage]) -> None:
    assert set(FINAL_STAGES) <= set(stages)
    assert list(stages)[-1] in FINAL_STAGES  # a plain `docker build` gives a final image


@pytest.mark.parametrize("stage", FINAL_STAGES)
def test_final_stages_run_as_a_non_root_user(stages: dict[str, Stage], stage: str) -> None:
    user = _effective(stages, stage, "USER")
    assert user is not None, f"{stage} sets no USER: it would run as root"
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), user
    # Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert name.isdigit() and int(name) >= 1000, user


@pytest.mark.parametrize("stage", FINAL_STAGES)
def test_final_stages_run_python_unbuffered_under_tini(stages: dict[str, Stage],
                                                       stage: str) -> None:
    assert _env(stages, stage).get("PYTHONUNBUFFERED") == "1"
    entrypoint = _effective(stages, stage, "ENTRYPOINT")
    assert entrypoint is not None and "tini" in entrypoint, entrypoint


def test_the_operator_image_runs_the_operator(stages: dict[str, Stage]) -> None:
    assert _effective(stages, "operator", "CMD") == '["fxctl", "operator"]'


def test_third_party_packages_come_only_from_the_locks(stages: dict[str, Stage]) -> None:
    installs: list[str] = []
    for stage in stages.values():
        for run in stage.all("RUN"):
            installs += [c.strip() for c in re.split(r"&&|;", run)
                         if re.search(r"\bpip\b.*\binstall\b", c)]
    locks_used = set()
    for command in installs:
        if "--require-hashes" in command:
            locks_used |= set(re.findall(r"-r\s+requirements/(\w+)\.lock", command))
        else:  # only the project's own wheel, from the build, never from an index
            assert "--no-index" in command and "--no-deps" in command, command
            assert re.search(r"fx_executor-\S*\.whl", command), command
    assert locks_used == {"runtime", "operator", "build"}, locks_used
    assert not any(stage.all("ADD") for stage in stages.values()), "ADD fetches unpinned files"


def test_the_runtime_image_gets_nothing_of_the_operator(stages: dict[str, Stage]) -> None:
    runtime = [stage for stage in _chain(stages, "runtime")]
    copies = [args for stage in runtime for args in stage.all("COPY")]
    assert copies and all("/opt/fx/runtime" in c for c in copies), copies
    runs = " ".join(args for stage in runtime for args in stage.all("RUN"))
    # Installed in the build stage, from runtime.lock only; the final stages only remove pip
    # (tests/images checks the built image holds none).
    assert not re.search(r"\bpip\b[^;&|]*\binstall\b", runs), runs


def test_the_build_context_holds_what_the_dockerfile_copies(stages: dict[str, Stage]) -> None:
    """.dockerignore leaves out everything but what the build copies (and no key material)."""
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    included = {line[1:].strip().rstrip("/") for line in ignore if line.startswith("!")}
    assert "**" in ignore, "the context starts empty"
    for stage in stages.values():
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(args)):
                continue
            for source in words[:-1]:
                assert source.rstrip("/") in included, f"COPY {source}: left out by .dockerignore"
    assert {"**/*.key", "**/*.pem"} <= set(ignore)
