"""``fxctl run DIR`` end to end: separate processes, the embedded store (and PostgreSQL once).

Every test runs with canary secrets at the three scopes; the ``canary`` fixture fails the test if a
canary value shows up in any output it captured, the stored results, the store's files, or the
script's argv (where only the ferris opt-in may put it).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.processes import REPO, child_env, fxctl
from support.scenarios import LEAST_PRIVILEGE_SCRIPT
from support.stores import open_service

CANARIES = {"package": "pkg-canary-1b7e4d0c", "project": "proj-canary-93af20e1",
            "platform": "plat-canary-6c51d7aa"}
EXAMPLES = REPO / "examples"


@dataclass
class Local:
    """A user's machine: a home for the embedded store and every output seen so far."""

    home: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def fxctl(self, *args: str, stdin: bytes | None = None, timeout: float = 120,
              unmasked: bool = False) -> subprocess.CompletedProcess[str]:
        """Run fxctl; its output joins the canary check unless it was asked to be unmasked."""
        done = fxctl(list(args), env=self.env, stdin=stdin, timeout=timeout)
        if not unmasked:
            self.outputs += [done.stdout, done.stderr]
        return done

    def run(self, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return self.fxctl("run", str(folder), *args, unmasked="--no-mask" in args)

    def settings(self) -> Settings:
        key_file = self.env.get("FX_MASTER_KEY_FILE")
        return Settings(home=self.home, database_url=self.env.get("FX_DATABASE_URL"),
                        master_key_file=Path(key_file) if key_file else None, actor="user:test")


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    yield from _with_canaries(Local(tmp_path / "home", _base_env(tmp_path)))


@pytest.fixture
def local_pg(tmp_path: Path, postgres_dsn: str) -> Iterator[Local]:
    key_file = tmp_path / "master.key"
    FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
    env = {**_base_env(tmp_path), "FX_DATABASE_URL": postgres_dsn,
           "FX_MASTER_KEY_FILE": str(key_file)}
    yield from _with_canaries(Local(tmp_path / "home", env))


def _base_env(tmp_path: Path) -> dict[str, str]:
    return {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:test",
            "PROBE_FILE": str(tmp_path / "probe.json")}


def _with_canaries(machine: Local) -> Iterator[Local]:
    """Canaries at the three scopes of the default project; checked everywhere afterwards."""
    for scope, value in CANARIES.items():
        extra = ["--package", "canary-holder"] if scope == "package" else []
        done = machine.fxctl("secrets", "set", f"CANARY_{scope.upper()}", "-", "--scope", scope,
                             *extra, stdin=value.encode())
        assert done.returncode == 0, done.stderr
    yield machine
    listed = machine.fxctl("results", "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    for run in json.loads(listed.stdout):
        machine.fxctl("results", run["run"], "--json")
        machine.fxctl("results", run["run"])
    seen = "\n".join(machine.outputs)
    for value in CANARIES.values():
        assert value not in seen, "a canary value reached fxctl's output or a stored result"
    for path in machine.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(v.encode() in data for v in CANARIES.values()), f"canary in {path}"
    service = open_service(machine.settings())
    try:
        records = service.audit_records(limit=10_000)
        audit = json.dumps([dataclasses.asdict(r) for r in records], default=str)
    finally:
        service.close()
    assert not any(v in audit for v in CANARIES.values()), "canary in the audit records"


def package(root: Path, script: str, *, secrets: dict[str, Any] | str | None = None,
            spec: str | None = None, name: str = "pkg") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(script))
    if secrets is not None:
        (folder / "secrets.json").write_text(
            secrets if isinstance(secrets, str) else json.dumps(secrets))
    if spec is not None:
        (folder / "package.yaml").write_text(textwrap.dedent(spec))
    return folder


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    line = next(x for x in done.stderr.splitlines() if x.startswith("fxctl: run "))
    return line.split()[2]


# --- the seeds' scripts, unchanged ------------------------------------------------------------

def test_seed_fx_ef_script_masked_by_default(local: Local) -> None:
    done = local.run(EXAMPLES / "secrets-fx-ef")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "DB NAME: ***", "DB PASS: ***", "PACKAGE NAME: secrets-fx-ef"]
    # least privilege: only what the script reads, though three canaries are in its chain
    assert "secrets: DB_NAME<-package v1, DB_PASS<-package v1\n" in done.stderr
    service = open_service(local.settings())
    try:
        audit = service.audit_records(run_id=run_id_of(done))
    finally:
        service.close()
    assert [sorted(e["name"] for e in a.entries) for a in audit if a.action == "resolve"] == [
        ["DB_NAME", "DB_PASS"]]


def test_seed_fx_ef_script_shows_real_values_with_no_mask(local: Local) -> None:
    done = local.run(EXAMPLES / "secrets-fx-ef", "--no-mask")
    assert done.returncode == 0, done.stderr
    assert "DB PASS: supersecretpas$" in done.stdout
    assert "warning: --no-mask shows real secret values" in done.stderr
    stored = local.fxctl("results", run_id_of(done))
    assert "DB PASS: ***" in stored.stdout  # what is stored stays masked
    assert "supersecretpas$" not in stored.stdout


def test_seed_ferris_script_with_the_opt_in(local: Local) -> None:
    done = local.run(EXAMPLES / "secrets-ferris")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["DB NAME: ***", "DB PASS: ***", "PACKAGE NAME: secrets-ferris"]
    # argv holds only the names the script reads, not the canaries of the chain
    assert [line for line in lines if " -> " in line] == ["DB_NAME -> ***", "DB_PASS -> ***"]
    assert "secrets: DB_NAME<-package v1, DB_PASS<-package v1\n" in done.stderr
    environ = lines[-1]
    assert environ.startswith("environ(") and "FX_DATABASE_URL" not in environ
    unmasked = local.run(EXAMPLES / "secrets-ferris", "--no-mask")
    assert "DB_PASS -> supersecretpas$" in unmasked.stdout


def test_ferris_script_without_the_opt_in_gets_no_secrets_in_argv(local: Local,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "no-opt-in"
    shutil.copytree(EXAMPLES / "secrets-ferris", folder)
    (folder / "package.yaml").unlink()
    done = local.run(folder)
    assert done.returncode == 1
    assert "DB PASS: ***" in done.stdout  # get_secret works; sys.argv[1] does not exist
    assert "IndexError: list index out of range" in done.stderr


# --- precedence --------------------------------------------------------------------------------

PRECEDENCE_SCRIPT = """
    import json
    from fx_ef import context
    names = ["ALL", "PROJ_PLAT", "PLAT", "EMPTY", "ZERO", "FALSE", "OBJ", "MISSING"]
    print(json.dumps({n: context.secrets.get(n) for n in names}))
"""
# The script reads its names through a variable: the finder cannot see them, so it declares them
# (least privilege: a run receives only what its package declares or reads literally).
PRECEDENCE_SPEC = """
    secrets:
      names: [{name: ALL, required: false}, {name: PROJ_PLAT, required: false},
              {name: PLAT, required: false}, {name: EMPTY, required: false},
              {name: ZERO, required: false}, {name: "FALSE", required: false},
              {name: OBJ, required: false}, {name: MISSING, required: false},
              {name: SHADOWED, required: false}]
"""


def test_precedence_over_the_three_scopes(local: Local, tmp_path: Path) -> None:
    for args in (["ALL", "platform-all", "--scope", "platform"],
                 ["ALL", "project-all", "--scope", "project"],
                 ["PROJ_PLAT", "platform-pp", "--scope", "platform"],
                 ["PROJ_PLAT", "project-pp", "--scope", "project"],
                 ["PLAT", "platform-only", "--scope", "platform"],
                 ["EMPTY", "project-empty", "--scope", "project"],
                 ["ZERO", "7", "--scope", "platform"],
                 ["FALSE", "true", "--scope", "project"],
                 ["OBJ", '{"a": 1}', "--scope", "platform"],
                 ["ALL", "other-project", "--scope", "project", "--project", "other"]):
        assert local.fxctl("secrets", "set", *args).returncode == 0
    folder = package(tmp_path, PRECEDENCE_SCRIPT, spec=PRECEDENCE_SPEC, secrets={
        "ALL": "package-all", "EMPTY": "", "ZERO": 0, "FALSE": False, "OBJ": {}})
    done = local.run(folder, "--no-mask")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ALL": "package-all", "PROJ_PLAT": "project-pp", "PLAT": "platform-only", "EMPTY": "",
        "ZERO": 0, "FALSE": False, "OBJ": {}, "MISSING": None}
    other = local.run(folder, "--project", "other", "--no-mask")
    assert json.loads(other.stdout)["PROJ_PLAT"] == "platform-pp"


def test_precedence_on_postgres(local_pg: Local, tmp_path: Path) -> None:
    local_pg.fxctl("secrets", "set", "PLAT", "platform-only", "--scope", "platform")
    local_pg.fxctl("secrets", "set", "ALL", "project-all", "--scope", "project")
    folder = package(tmp_path, PRECEDENCE_SCRIPT, spec=PRECEDENCE_SPEC,
                     secrets={"ALL": "package-all"})
    done = local_pg.run(folder, "--no-mask")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert (seen["ALL"], seen["PLAT"], seen["MISSING"]) == ("package-all", "platform-only", None)


# --- writes from a script ---------------------------------------------------------------------

SET_SCRIPT = """
    import json
    from fx_ef import context
    context.secrets.set("NEW_TOKEN", "token-set-by-the-script", "project")
    print("after set:", context.secrets.get("NEW_TOKEN"))
    context.secrets.set(name="SHADOWED", value="project-value", context="project")
    print("shadowed:", context.secrets.get("SHADOWED"))
    try:
        context.secrets.set("PLATFORM_NEW", {"k": "platform-structured"}, context="platform")
        print("platform: written")
    except Exception as e:
        print("platform:", type(e).__name__)
"""


def test_set_from_a_script_is_stored_audited_and_masked(local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, SET_SCRIPT, secrets={"SHADOWED": "package-value"})
    done = local.run(folder)
    assert done.returncode == 0, done.stderr
    assert "after set: ***" in done.stdout
    assert "token-set-by-the-script" not in done.stdout
    assert "shadowed: ***" in done.stdout
    assert "platform: " in done.stdout and "platform: written" not in done.stdout
    run_id = run_id_of(done)
    listed = json.loads(local.fxctl("secrets", "list", "--json", "--scope", "project").stdout)
    assert {r["name"]: r["by"] for r in listed}["NEW_TOKEN"] == f"run:{run_id}"
    assert "PLATFORM_NEW" not in local.fxctl("secrets", "list").stdout
    service = open_service(local.settings())
    try:
        audit = service.audit_records(run_id=run_id)
    finally:
        service.close()
    assert {a.action for a in audit} == {"resolve", "set"}
    writes = [e["name"] for a in audit if a.action == "set" for e in a.entries]
    assert sorted(writes) == ["NEW_TOKEN", "SHADOWED"]
    # the package-scope value still wins over the project value the script wrote
    again = local.run(package(tmp_path, PRECEDENCE_SCRIPT.replace('"ALL"', '"SHADOWED"'),
                              name="reader", spec=PRECEDENCE_SPEC,
                              secrets={"SHADOWED": "package-value"}), "--no-mask")
    assert '"SHADOWED": "package-value"' in again.stdout


def test_platform_write_only_when_allowed(local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, SET_SCRIPT)
    refused = local.run(folder)
    assert "platform: PlatformWriteNotAllowed" in refused.stdout or \
        "platform: SecretWriteError" in refused.stdout or "platform: Permission" in refused.stdout
    allowed = local.run(folder, "--allow-platform-write")
    assert "platform: written" in allowed.stdout
    listed = json.loads(local.fxctl("secrets", "list", "--json", "--scope", "platform").stdout)
    assert "PLATFORM_NEW" in {r["name"] for r in listed}


# --- the canary's other ways out: argv and environment ----------------------------------------

PROBE_SCRIPT = """
    import json, os, sys
    from fx_ef import context
    context.secrets.get("CANARY_PLATFORM")
    with open(os.environ["PROBE_FILE"], "w") as f:
        json.dump({"argv": sys.argv, "env": dict(os.environ)}, f)
"""


def test_no_secret_in_argv_or_environment(local: Local, tmp_path: Path) -> None:
    done = local.run(package(tmp_path, PROBE_SCRIPT))
    assert done.returncode == 0, done.stderr
    probe = (tmp_path / "probe.json").read_text()
    assert not any(v in probe for v in CANARIES.values())
    env = json.loads(probe)["env"]
    assert not {"FX_HOME", "FX_DATABASE_URL", "FX_MASTER_KEY_FILE"} & set(env)


def test_with_the_ferris_opt_in_only_argv_holds_secrets(local: Local, tmp_path: Path) -> None:
    done = local.run(package(tmp_path, PROBE_SCRIPT, spec="compat: ferris\n"))
    assert done.returncode == 0, done.stderr
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert CANARIES["platform"] in " ".join(probe["argv"])
    assert not any(v in json.dumps(probe["env"]) for v in CANARIES.values())


# --- state -----------------------------------------------------------------------------------

def test_hello_example_keeps_state_between_runs(local: Local) -> None:
    first = local.run(EXAMPLES / "hello")
    assert first.returncode == 0, first.stderr
    assert "DB PASS: ***" in first.stdout
    assert "GREETING PARAM: hello from package.yaml" in first.stdout
    second = local.run(EXAMPLES / "hello", "--param", "greeting=hey")
    assert "GREETING PARAM: hey" in second.stdout
    assert "run number 2 of this package" in second.stderr


def test_two_runs_writing_state_at_once_lose_nothing(local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, """
        from fx_ef import context
        for i in range(20):
            context.state.put(f"{context.params.get('who')}-{i}", i)
    """)
    runs = [subprocess.Popen([sys.executable, "-m", "fx_operator", "run", str(folder), "--param",
                              f"who={who}"], env=child_env(local.env), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    for run in runs:
        out, err = run.communicate(timeout=120)
        local.outputs += [out, err]
        assert run.returncode == 0, err
    reader = package(tmp_path, """
        from fx_ef import context
        print(len(context.state.get()))
    """, spec="name: pkg\n", name="reader")
    assert local.run(reader).stdout.strip() == "40"


# --- bad input ---------------------------------------------------------------------------------

def test_broken_secrets_json_stores_nothing_and_runs_nothing(local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, "print('ran')\n", secrets={"KEEP": "kept-value-1"})
    assert local.run(folder).returncode == 0
    (folder / "secrets.json").write_text('{"KEEP": "changed", "bad name": 1}')
    done = local.run(folder)
    assert done.returncode == 2
    assert "bad name" in done.stderr and "ran" not in done.stdout
    assert "Traceback" not in done.stderr
    history = json.loads(local.fxctl("secrets", "history", "KEEP", "--package", "pkg",
                                     "--json").stdout)
    assert [h["version"] for h in history] == [1]


@pytest.mark.parametrize(("files", "message"), [
    ({"a.py": "", "b.py": ""}, "several scripts"),
    ({"notes.txt": ""}, "no .py script"),
    ({"a.py": "", "package.yaml": "entrypoint: missing.py\n"}, "entrypoint 'missing.py' not found"),
    ({"a.py": "", "package.yaml": "entrypoint: a.py\ncolour: red\n"}, "colour: unknown field"),
    ({"a.py": "", "package.yaml": "timeout: -1\n"}, "timeout"),
    ({"a.py": "", "package.yaml": "compat: python2\n"}, "compat"),
    ({"a.py": "", "package.yaml": "[not, a, mapping]\n"}, "must be a mapping"),
])
def test_bad_package_folders_are_clear_errors(local: Local, tmp_path: Path,
                                              files: dict[str, str], message: str) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    done = local.run(folder)
    assert done.returncode in (1, 2)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_crashing_script(local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, """
        from fx_ef import context
        raise ConnectionError("login failed for " + context.secrets.get("CANARY_PROJECT"))
    """)
    done = local.run(folder)
    assert done.returncode == 1
    assert "ConnectionError: login failed for ***" in done.stderr
    stored = json.loads(local.fxctl("results", run_id_of(done), "--json").stdout)[0]
    assert stored["exit"] == 1 and "login failed for ***" in stored["output_tail"]


def test_a_killed_script_and_a_stopped_run(local: Local, tmp_path: Path) -> None:
    killed = local.run(package(tmp_path, "import os, signal\nos.kill(os.getpid(), 9)\n",
                               name="killed"))
    assert killed.returncode == 137
    assert "killed by SIGKILL" in killed.stderr
    sleeper = package(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(60)\n",
                      name="sleeper")
    run = subprocess.Popen([sys.executable, "-m", "fx_operator", "run", str(sleeper)],
                           env=child_env(local.env), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert run.stdout is not None
    assert run.stdout.readline() == "started\n"
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    local.outputs += [out, err]
    assert run.returncode == 128 + signal.SIGTERM
    assert "killed by SIGTERM" in err
    timed = local.run(sleeper, "--timeout", "0.5")
    assert "timed out" in timed.stderr


def test_rerunning_an_unchanged_folder_adds_no_versions(local: Local) -> None:
    for _ in range(2):
        assert local.run(EXAMPLES / "secrets-fx-ef").returncode == 0
    listed = json.loads(local.fxctl("secrets", "list", "--json", "--package",
                                    "secrets-fx-ef").stdout)
    assert {r["name"]: r["version"] for r in listed} == {"DB_NAME": 1, "DB_PASS": 1}


def test_results_list_and_show(local: Local) -> None:
    done = local.run(EXAMPLES / "secrets-fx-ef")
    run_id = run_id_of(done)
    listed = local.fxctl("results")
    assert run_id in listed.stdout
    shown = local.fxctl("results", run_id)
    assert "DB_PASS: package v1" in shown.stdout and "DB PASS: ***" in shown.stdout
    missing = local.fxctl("results", "run-nope")
    assert missing.returncode == 1 and "no run 'run-nope'" in missing.stderr


# --- least privilege ---------------------------------------------------------------------------



def test_a_canary_neither_declared_nor_used_reaches_no_part_of_the_run(
        local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, LEAST_PRIVILEGE_SCRIPT, spec="compat: ferris\n",
                     secrets={"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"})
    done = local.run(folder)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'bundle: ["DB_NAME", "DB_PASS"]' in lines
    assert 'argv: ["DB_NAME", "DB_PASS"]' in lines
    assert "undelivered: None" in lines
    assert "secrets: DB_NAME<-package v1, DB_PASS<-package v1; asked for, not delivered: " \
        "CANARY_PLATFORM\n" in done.stderr
    run_id = run_id_of(done)
    stored = json.loads(local.fxctl("results", run_id, "--json").stdout)[0]
    assert sorted(stored["manifest"]) == ["DB_NAME", "DB_PASS"]
    assert stored["missing_names"] == ["CANARY_PLATFORM"]
    service = open_service(local.settings())
    try:
        audit = service.audit_records(run_id=run_id)
    finally:
        service.close()
    assert {e["name"] for a in audit for e in a.entries} == {"DB_NAME", "DB_PASS"}


def test_a_required_name_missing_refuses_the_run(local: Local, tmp_path: Path) -> None:
    folder = package(tmp_path, "print('never runs')\n", spec="""
        secrets:
          names: [{name: API_TOKEN}, {name: CANARY_PROJECT, scope: platform},
                  {name: OPTIONAL, required: false}]
    """)
    done = local.run(folder)
    assert done.returncode == 1
    assert "never runs" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        "error: run of default/pkg refused: required secret 'API_TOKEN' is not set at any "
        "scope; required secret 'CANARY_PROJECT' is not set at platform scope"]
    assert json.loads(local.fxctl("results", "--json").stdout) == []


def test_a_pinned_name_is_delivered_from_its_scope_only(local: Local, tmp_path: Path) -> None:
    assert local.fxctl("secrets", "set", "REGION", "eu-project", "--scope", "project") \
        .returncode == 0
    folder = package(tmp_path, """
        from fx_ef import context
        print(context.secrets.get("REGION"))
    """, secrets={"REGION": "package-region"},
        spec="secrets: {names: [{name: REGION, scope: project}]}\n")
    done = local.run(folder, "--no-mask")
    assert done.stdout.strip() == "eu-project"
    assert "secrets: REGION<-project v1" in done.stderr


def test_explain_a_folder_shadowed_pinned_missing_and_unused_names(local: Local,
                                                                    tmp_path: Path) -> None:
    for name, value, scope in (("SHARED", "plat", "platform"), ("SHARED", "proj", "project"),
                               ("REGION", "eu", "project")):
        assert local.fxctl("secrets", "set", name, value, "--scope", scope).returncode == 0
    folder = package(tmp_path, """
        from fx_ef import context
        context.secrets.get("SHARED"); context.secrets.get("GONE")
        name = "X"; context.secrets.get(name)
    """, secrets={"SHARED": "pkg-value"}, spec="""
        secrets:
          names: [{name: REGION, scope: platform}, {name: UNUSED, required: false},
                  {name: SHARED}]
    """)
    done = local.fxctl("explain", str(folder))
    assert done.returncode == 0, done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert lines == [
        "package default/pkg: runs receive declared and found names",
        "GONE - [found] not delivered: set nowhere at any scope",
        "REGION - [declared, required, pinned to platform] not delivered: project: pinned to "
        "platform scope (required: runs fail before they start)",
        "SHARED package (secrets.json, not imported yet) [both, required] delivered from "
        "package scope (declared); shadows project v1, platform v1",
        "UNUSED - [declared] not delivered: set nowhere at any scope",
        "declared but not read literally by any script: REGION, UNUSED",
        "read by the scripts but not delivered: GONE",
        "dynamic read at main.py:4: declare the names it needs, or secrets.all"]
    assert "CANARY" not in done.stdout  # in the chain, but neither declared nor read
    as_json = json.loads(local.fxctl("explain", str(folder), "--json").stdout)
    assert {n["name"]: n["delivered"] for n in as_json["names"]} == {
        "GONE": False, "REGION": False, "SHARED": True, "UNUSED": False}
