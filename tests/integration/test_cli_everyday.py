"""The everyday loop of issue 19, as processes: what starts fast, listings and imports at scale,
folder names, and progress on long work. On the embedded store and on PostgreSQL where the store
matters."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner
from fx_operator.endpoints.local_channel import LocalChannel
from fx_operator.services.local_run import LocalRunner, RunOptions, load_package_folder
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.processes import REPO, child_env, fxctl, python_module
from support.stores import open_service

CANARY = "everyday-canary-0c4e1f-never-printed"


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env  # conftest: on the embedded store and on PostgreSQL


def ok(args: list[str], env: dict[str, str], stdin: bytes | None = None,
       ) -> subprocess.CompletedProcess[str]:
    done = fxctl(args, env=env, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr
    return done


def imported_modules(args: list[str], env: dict[str, str], *,
                     module: str = "fx_operator") -> set[str]:
    """Every module ``python -m MODULE ARGS`` imported (from ``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args],
                          env=child_env(env), capture_output=True, text=True, timeout=120,
                          check=False)
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def secrets_json(count: int, prefix: str = "S") -> bytes:
    return json.dumps({f"{prefix}_{i:05d}": f"{CANARY}-{i}" for i in range(count)}).encode()


# --- 1. fast start -----------------------------------------------------------------------------


def test_version_loads_neither_click_nor_settings_and_matches_the_package(
        tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home")}
    done = ok(["--version"], env)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert done.stdout == f"fxctl, version {version}\n"
    loaded = imported_modules(["--version"], env)
    assert "fx_operator.cli.main" in loaded
    assert not {"click", "pydantic", "pydantic_settings", "typing", "psycopg"} & loaded


def test_the_embedded_store_never_imports_psycopg(tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:cli-test"}
    ok(["secrets", "set", "A", CANARY, "--scope", "platform"], env)
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "main.py").write_text("print('hello')\n")
    for args in (["secrets", "list"], ["run", str(folder)]):
        loaded = imported_modules(args, env)
        assert "fx_operator.storage.secret_store" in loaded
        assert not {m for m in loaded if m.startswith(("psycopg", "psycopg_pool"))}, args


def test_a_local_run_starts_one_interpreter_the_executor(tmp_path: Path) -> None:
    """The init step runs inside fxctl (same code): the only interpreter started is the
    executor's."""
    log = tmp_path / "started.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "main.py").write_text("print('hello')\n")
    service = open_service(Settings(home=tmp_path / "home", actor="user:test"))
    try:
        runner = LocalRunner(service, channel=LocalChannel, python=str(python))
        record = runner.run(load_package_folder(folder), RunOptions())
    finally:
        service.close()
    assert record.exit_code == 0 and record.output_tail == "hello\n"
    started = log.read_text().splitlines()
    assert len(started) == 1 and started[0].startswith("-m fx_ef.local_executor"), started


def test_the_executor_parses_its_options_without_argparse(tmp_path: Path) -> None:
    assert "argparse" not in imported_modules(["--help"], {}, module="fx_ef.executor")
    for args, message in ((["--bogus"], "option --bogus not recognized"),
                          (["--timeout", "soon"], "--timeout: not a number: 'soon'"),
                          (["extra"], "unexpected argument 'extra'")):
        done = python_module("fx_ef.executor", args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr.decode() and "usage:" in done.stderr.decode()


# --- 2. scale ----------------------------------------------------------------------------------


def test_listings_page_with_a_continue_token(env: dict[str, str], tmp_path: Path) -> None:
    file = tmp_path / "secrets.json"
    file.write_bytes(secrets_json(5))
    ok(["secrets", "import", str(file), "--package", "etl"], env)
    first = ok(["secrets", "list", "--limit", "2", "-o", "name"], env)
    assert first.stdout.split() == ["S_00000", "S_00001"]
    token = re.search(r"--continue (\S+)", first.stderr)
    assert token, first.stderr
    second = ok(["secrets", "list", "--limit", "2", "-o", "name", "--continue", token[1]], env)
    assert second.stdout.split() == ["S_00002", "S_00003"]
    last = ok(["secrets", "list", "--limit", "2", "-o", "json", "--continue",
               re.search(r"--continue (\S+)", second.stderr)[1]], env)  # type: ignore[index]
    assert [r["name"] for r in json.loads(last.stdout)] == ["S_00004"]
    assert "--continue" not in last.stderr  # the last page says nothing more
    every = ok(["secrets", "list", "--all", "-o", "json"], env)
    assert [r["name"] for r in json.loads(every.stdout)] == [f"S_{i:05d}" for i in range(5)]
    assert every.stderr == ""
    bad = fxctl(["secrets", "list", "--continue", "not-a-token"], env=env)
    assert bad.returncode == 2 and "--continue" in bad.stderr


def test_a_bulk_import_is_all_or_nothing(env: dict[str, str], tmp_path: Path) -> None:
    """Thousands of names go in as one bulk insert (COPY on PostgreSQL); a row refused half-way
    (here by a trigger) leaves nothing of the import, and earlier versions current."""
    file = tmp_path / "secrets.json"
    file.write_bytes(secrets_json(3000))
    ok(["secrets", "import", str(file), "--package", "bulk"], env)
    _refuse_inserts_of(env, tmp_path, "S_02500")
    failed = fxctl(["secrets", "import", str(file), "--package", "bulk"], env=env)
    assert failed.returncode == 1 and "refused by the test" in failed.stderr, failed.stderr
    listed = json.loads(ok(["secrets", "list", "--all", "-o", "json"], env).stdout)
    assert len(listed) == 3000 and {r["version"] for r in listed} == {1}
    service = open_service(_settings(env))
    try:
        owner = Owner.of("package", "default", "bulk")
        assert service.get(owner, "S_02999") == f"{CANARY}-2999"
        assert service.current_versions(owner)["S_00000"] == 1
    finally:
        service.close()


def _settings(env: dict[str, str]) -> Settings:
    key = env.get("FX_MASTER_KEY_FILE")
    return Settings(home=Path(env["FX_HOME"]), database_url=env.get("FX_DATABASE_URL"),
                    master_key_file=Path(key) if key else None, actor="user:test")


def _refuse_inserts_of(env: dict[str, str], tmp_path: Path, name: str) -> None:
    service = open_service(_settings(env))
    try:
        with service.store.transaction() as tx:
            if service.store.backend.dialect == "sqlite":
                tx.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON secret_versions "
                           f"WHEN NEW.name = '{name}' BEGIN "
                           "SELECT RAISE(ABORT, 'refused by the test'); END")
            else:
                tx.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                           f"BEGIN IF NEW.name = '{name}' THEN "
                           "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$")
                tx.execute("CREATE TRIGGER refuse BEFORE INSERT ON secret_versions "
                           "FOR EACH ROW EXECUTE FUNCTION refuse()")
    finally:
        service.close()


def test_a_listing_says_the_same_in_every_format(env: dict[str, str], tmp_path: Path) -> None:
    """Table, JSON, YAML and names of the same rows, each written a column at a time: text JSON
    must escape (an actor's quotes, backslash, braces, non-ASCII) comes back as it was; times
    are ISO 8601 in UTC for machines, ages for people; columns line up."""
    actor = 'user:"ünï" \\ {x}'
    file = tmp_path / "secrets.json"
    file.write_bytes(secrets_json(3))
    ok(["secrets", "import", str(file), "--package", "etl"], {**env, "FX_ACTOR": actor})
    ok(["secrets", "set", "PROJECT_WIDE", CANARY, "--scope", "project", "-p", "team-b"], env)
    as_json = json.loads(ok(["secrets", "list", "--all", "-o", "json"], env).stdout)
    assert [(r["name"], r["scope"], r["project"], r["package"], r["version"], r["deleted"],
             r["by"]) for r in as_json] == [
        *((f"S_{i:05d}", "package", "default", "etl", 1, False, actor) for i in range(3)),
        ("PROJECT_WIDE", "project", "team-b", "", 1, False, "user:cli-test")]
    for row in as_json:
        created = datetime.fromisoformat(row["created"])
        assert created.utcoffset() == timedelta(0) and created.microsecond == 0
        assert timedelta(0) <= datetime.now(UTC) - created < timedelta(minutes=10)
    assert yaml.safe_load(ok(["secrets", "list", "--all", "-o", "yaml"], env).stdout) == as_json
    assert ok(["secrets", "list", "-o", "name"], env).stdout.split() == [
        "S_00000", "S_00001", "S_00002", "PROJECT_WIDE"]
    header, *lines = ok(["secrets", "list"], env).stdout.splitlines()
    starts = [header.index(c) for c in ("SCOPE", "VERSION", "CREATED", "BY")]
    assert len(lines) == 4 and lines[0].startswith("S_00000 ") and lines[0].endswith(actor)
    for line in lines:
        scope, version, age = (line[at:].split(" ", 1)[0] for at in starts[:3])
        assert scope in ("package", "project") and version == "1", line
        assert re.fullmatch(r"\d+[smhdy]", age), line
        assert line[starts[3]:] in (actor, "user:cli-test"), line


# --- 3. folder names ---------------------------------------------------------------------------


def test_a_python_folder_name_runs_under_its_package_name(tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:cli-test"}
    folder = tmp_path / "Secrets_Demo"
    folder.mkdir()
    (folder / "main.py").write_text("from fx_ef import context\nprint(context.package.name)\n")
    done = ok(["run", str(folder)], env)
    assert done.stdout == "secrets-demo\n"
    notes = [line for line in done.stderr.splitlines() if "note:" in line]
    assert notes == ["fxctl: note: the folder's name 'Secrets_Demo' is not a valid package "
                     "name; running it as 'secrets-demo' (set name: in package.yaml to choose "
                     "another)"]
    (folder / "package.yaml").write_text("name: secrets-demo\n")  # chosen: no note
    assert "note:" not in ok(["run", str(folder)], env).stderr


def test_an_invalid_name_in_package_yaml_or_a_nameless_folder_is_refused(tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home")}
    explicit = tmp_path / "fine"
    explicit.mkdir()
    (explicit / "main.py").write_text("print(1)\n")
    (explicit / "package.yaml").write_text("name: Secrets_Demo\n")
    done = fxctl(["run", str(explicit)], env=env)
    assert done.returncode == 2 and "name" in done.stderr
    assert "[a-z0-9]" in done.stderr  # the rule
    nameless = tmp_path / "__"
    nameless.mkdir()
    (nameless / "main.py").write_text("print(1)\n")
    done = fxctl(["run", str(nameless)], env=env)
    assert done.returncode == 2
    assert "the folder's name '__' is not a valid package name" in done.stderr


# --- 4. progress -------------------------------------------------------------------------------


def test_a_large_import_reports_progress_in_plain_lines(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    file = tmp_path / "secrets.json"
    file.write_bytes(secrets_json(5000))
    done = ok(["secrets", "import", str(file), "--package", "big"], env)
    lines = [line for line in done.stderr.splitlines() if line.startswith("importing")]
    assert lines[0] == f"importing {file}: 1000/5000 (20%)"
    assert lines[-1] == f"importing {file}: 5000/5000 (100%)"
    assert "\r" not in done.stderr
    small = tmp_path / "small.json"
    small.write_bytes(secrets_json(10))
    assert ok(["secrets", "import", str(small), "--package", "small"], env).stderr == ""


def test_a_large_import_on_a_terminal_shows_a_bar(tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:cli-test"}
    file = tmp_path / "secrets.json"
    file.write_bytes(secrets_json(3000))
    seen = _on_a_terminal(["secrets", "import", str(file), "--package", "big"], env)
    assert b"importing" in seen and b"3000/3000" in seen and b"\r" in seen, seen[-400:]
    assert b"(100%)" not in seen  # the bar, not the plain lines


def test_a_master_key_rotation_over_many_owners_reports_progress(env: dict[str, str]) -> None:
    service = open_service(_settings(env))
    try:
        for i in range(120):
            service.set(Owner.of("package", "default", f"pkg-{i}"), "A", CANARY)
    finally:
        service.close()
    args = ["secrets", "rotate-master-key"]
    if "FX_MASTER_KEY_FILE" in env:
        new_key = Path(env["FX_HOME"]).parent / "new.key"
        FileMasterKeyProvider(new_key).write_new(MasterKey.generate())
        args += ["--new-key-file", str(new_key)]
    done = ok(args, env)
    lines = [line for line in done.stderr.splitlines() if line.startswith("rewrapping")]
    assert lines[0] == "rewrapping data keys: 12/120 (10%)" and len(lines) == 10, lines
    assert "rewrapped 120 data key(s)" in done.stdout


def _on_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    controller, terminal = pty.openpty()
    seen = b""
    try:
        process = subprocess.Popen([sys.executable, "-m", "fx_operator", *args],
                                   stdin=terminal, stdout=terminal, stderr=terminal,
                                   env=child_env(env), start_new_session=True)
        os.close(terminal)
        seen = b"".join(_read_all(controller))
        assert process.wait(timeout=120) == 0, seen[-400:]
    finally:
        os.close(controller)
    return seen


def _read_all(fd: int) -> Iterator[bytes]:
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        assert ready, "the command printed nothing for 120 s"
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            return
        if not chunk:
            return
        yield chunk
