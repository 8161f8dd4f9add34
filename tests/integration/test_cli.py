"""``fxctl secrets`` and ``fxctl db`` as a user runs them: separate processes, settings from the
environment, on the embedded store and on PostgreSQL. Values never appear in any output."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from fx_operator.config import Settings
from fx_operator.domain.crypto import MasterKey
from fx_operator.domain.scopes import Owner
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.processes import child_env, fxctl
from support.stores import open_service

CANARY = "cli-canary-5d1e88-never-printed"


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env  # conftest: on the embedded store and on PostgreSQL


def ok(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> str:
    done = fxctl(args, env=env, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr
    return done.stdout


def test_secrets_lifecycle(env: dict[str, str], tmp_path: Path) -> None:
    ok(["db", "upgrade"], env)
    assert "version 1 in platform" in ok(["secrets", "set", "TOKEN", CANARY, "--scope",
                                          "platform"], env)
    ok(["secrets", "set", "TOKEN", "-", "--scope", "project", "--project", "team-a"], env,
       stdin=f"{CANARY}-project\n".encode())
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"DB_PASS": CANARY, "OPTS": {"retries": 3}}))
    out = ok(["secrets", "import", str(secrets_file), "--project", "team-a", "--package",
              "etl"], env)
    assert "imported 2 secret(s) into package/team-a/etl" in out
    listed = json.loads(ok(["secrets", "list", "--json"], env))
    assert {(r["name"], r["scope"], r["version"]) for r in listed} == {
        ("TOKEN", "platform", 1), ("TOKEN", "project", 1), ("DB_PASS", "package", 1),
        ("OPTS", "package", 1)}
    assert all("value" not in r for r in listed)
    table = ok(["secrets", "list", "--project", "team-a"], env)
    assert table.splitlines()[0].split()[:3] == ["NAME", "SCOPE", "PROJECT"]

    ok(["secrets", "set", "DB_PASS", "second", "--project", "team-a", "--package", "etl"], env)
    ok(["secrets", "delete", "DB_PASS", "--project", "team-a", "--package", "etl"], env)
    history = json.loads(ok(["secrets", "history", "DB_PASS", "--project", "team-a",
                             "--package", "etl", "--json"], env))
    assert [(h["version"], h["deleted"], h["current"]) for h in history] == [
        (1, False, False), (2, False, False), (3, True, True)]
    assert "restored as version 4" in ok(["secrets", "rollback", "DB_PASS", "--to-version", "1",
                                          "--project", "team-a", "--package", "etl"], env)
    assert "re-encrypted" in ok(["secrets", "rotate-data-key", "--scope", "project",
                                 "--project", "team-a"], env)


def test_master_key_rotation_from_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    ok(["secrets", "set", "A", CANARY, "--scope", "platform"], env)
    if "FX_MASTER_KEY_FILE" in env:  # the operator's case: the new key comes from outside
        new_key = tmp_path / "new.key"
        FileMasterKeyProvider(new_key).write_new(MasterKey.generate())
        out = ok(["secrets", "rotate-master-key", "--new-key-file", str(new_key)], env)
        assert "install it as the master key" in out
        old = fxctl(["secrets", "list"], env=env)
        assert old.returncode == 1 and "nothing was changed" in old.stderr
        env = {**env, "FX_MASTER_KEY_FILE": str(new_key)}
    else:
        assert "new key written to" in ok(["secrets", "rotate-master-key"], env)
    assert "A" in ok(["secrets", "list"], env)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["secrets", "set", "bad name", "x", "--scope", "platform"], 2, "bad name"),
    (["secrets", "set", "A", "x", "--scope", "nowhere"], 2, "'nowhere' is not one of"),
    (["secrets", "set", "A", "x", "--package", "Bad_Pkg"], 2, "package"),
    (["secrets", "set", "A", "x"], 2, "package scope needs a package name"),
    (["secrets", "history", "MISSING", "--scope", "platform"], 1, "no history"),
    (["secrets", "rollback", "MISSING", "--to-version", "1", "--scope", "platform"], 1,
     "MISSING"),
    (["secrets", "import", "/nonexistent/secrets.json", "--package", "p"], 1, "No such file"),
])
def test_bad_input_is_a_clear_error_and_non_zero_exit(env: dict[str, str], args: list[str],
                                                      code: int, message: str) -> None:
    done = fxctl(args, env=env)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_broken_import_stores_nothing(env: dict[str, str], tmp_path: Path) -> None:
    ok(["secrets", "set", "KEEP", CANARY, "--package", "etl"], env)
    broken = tmp_path / "secrets.json"
    broken.write_text('{"NEW": "v", "KEEP": "other", "KEEP": "again"}')
    done = fxctl(["secrets", "import", str(broken), "--package", "etl"], env=env)
    assert done.returncode == 2
    assert "KEEP" in done.stderr and "duplicate" in done.stderr
    listed = json.loads(ok(["secrets", "list", "--json"], env))
    assert [(r["name"], r["version"]) for r in listed] == [("KEEP", 1)]


def test_wrong_master_key_is_refused_and_nothing_is_overwritten(env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    ok(["secrets", "set", "A", CANARY, "--scope", "platform"], env)
    other = tmp_path / "other.key"
    FileMasterKeyProvider(other).write_new(MasterKey.generate())
    done = fxctl(["secrets", "list"], env={**env, "FX_MASTER_KEY_FILE": str(other)})
    assert done.returncode == 1
    assert "was written with master key" in done.stderr
    assert "A" in ok(["secrets", "list"], env)


# --- the everyday habits (issue 19): as kubectl and gh users expect them -------------------------


def test_history_delete_and_rollback_find_the_scope_as_the_readme_shows(
        env: dict[str, str]) -> None:
    ok(["secrets", "set", "API_TOKEN", "-", "--scope", "project"], env, stdin=CANARY.encode())
    history = json.loads(ok(["secrets", "history", "API_TOKEN", "-o", "json"], env))
    assert [(h["scope"], h["project"], h["version"]) for h in history] == [
        ("project", "default", 1)]
    assert "deleted in project/default" in ok(["secrets", "delete", "API_TOKEN"], env)
    assert "restored as version 3 in project/default" in ok(
        ["secrets", "rollback", "API_TOKEN", "--to-version", "1"], env)
    assert "version 4 in project/default" in ok(["secrets", "set", "API_TOKEN", "again"], env)

    ok(["secrets", "set", "API_TOKEN", CANARY, "--scope", "platform"], env)
    ambiguous = fxctl(["secrets", "history", "API_TOKEN"], env=env)
    assert ambiguous.returncode == 2
    assert "'API_TOKEN' is in platform, project/default: choose one with --scope" in (
        ambiguous.stderr)
    assert "version 2 in platform" in ok(["secrets", "set", "API_TOKEN", "x", "--scope",
                                          "platform"], env)
    missing = fxctl(["secrets", "history", "NOPE"], env=env)
    assert missing.returncode == 1 and "no secret 'NOPE'" in missing.stderr


@pytest.mark.parametrize("args", [
    ["secrets", "list", "--scope", "platform", "--project", "team-a"],
    ["secrets", "set", "A", "x", "--scope", "platform", "-p", "team-a"],
    ["secrets", "history", "A", "--scope", "project", "--package", "etl"],
])
def test_an_owner_option_the_scope_cannot_take_is_an_error(env: dict[str, str],
                                                             args: list[str]) -> None:
    done = fxctl(args, env=env)
    assert done.returncode == 2, done.stdout
    assert "takes no" in done.stderr or "takes neither" in done.stderr


def test_listings_print_table_json_yaml_and_names(env: dict[str, str]) -> None:
    ok(["secrets", "set", "B", CANARY, "--package", "etl", "-p", "team-a"], env)
    ok(["secrets", "delete", "B", "--package", "etl", "-p", "team-a"], env)
    ok(["secrets", "set", "A", CANARY, "--scope", "platform"], env)

    table = ok(["secrets", "list"], env).splitlines()
    assert table[0].split() == ["NAME", "SCOPE", "PROJECT", "PACKAGE", "VERSION", "CREATED", "BY"]
    assert re.fullmatch(r"A\s+platform\s+1\s+\d+s\s+user:cli-test", table[1])  # an age
    as_json = json.loads(ok(["secrets", "list", "-o", "json"], env))
    assert as_json == json.loads(ok(["secrets", "list", "--json"], env))
    assert datetime.fromisoformat(as_json[0]["created"]).tzinfo is not None  # ISO in machine
    assert yaml.safe_load(ok(["secrets", "list", "-o", "yaml"], env)) == as_json
    assert ok(["secrets", "list", "-o", "name"], env) == "A\n"

    history = ok(["secrets", "history", "B", "-p", "team-a", "--package", "etl"], env)
    assert [line.split()[:3] for line in history.splitlines()] == [
        ["VERSION", "CURRENT", "DELETED"], ["1", "no", "no"], ["2", "yes", "yes"]]
    machine = json.loads(ok(["secrets", "history", "B", "-p", "team-a", "-o", "json"], env))
    assert [(h["current"], h["deleted"]) for h in machine] == [(False, False), (True, True)]


def test_string_keeps_the_text_and_null_is_pointed_out(env: dict[str, str],
                                                       tmp_path: Path) -> None:
    as_number = fxctl(["secrets", "set", "N", "2e3", "--scope", "platform"], env=env)
    assert as_number.returncode == 0 and "--string keeps the text" in as_number.stderr
    assert "2e3" not in as_number.stderr + as_number.stdout  # a value is never printed
    ok(["secrets", "set", "S", "1e3", "--scope", "platform", "--string"], env)
    null = fxctl(["secrets", "set", "Z", "null", "--scope", "platform"], env=env)
    assert null.returncode == 0 and "stored as JSON null" in null.stderr
    ok(["secrets", "set", "T", "null", "--scope", "platform", "--string"], env)

    settings = Settings(home=Path(env["FX_HOME"]), database_url=env.get("FX_DATABASE_URL"),
                        master_key_file=env.get("FX_MASTER_KEY_FILE"))
    service = open_service(settings)
    try:
        platform = Owner.of("platform")
        assert [service.get(platform, n) for n in ("N", "S", "Z", "T")] == [
            2000.0, "1e3", None, "null"]
    finally:
        service.close()


def test_a_value_typed_at_a_terminal_prompt_is_hidden(env: dict[str, str]) -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fx_operator", "secrets", "set", "TTY", "-", "--scope",
             "platform"], stdin=terminal, stdout=terminal, stderr=terminal,
            env=child_env(env), start_new_session=True)
        os.close(terminal)
        seen = _read_until(controller, b"value:")
        os.write(controller, CANARY.encode() + b"\n")
        seen += _read_until(controller, b"version 1 in platform")
        assert process.wait(timeout=60) == 0, seen
    finally:
        os.close(controller)
    assert CANARY.encode() not in seen  # echo was off


def _read_until(fd: int, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"waited for {marker!r}; saw {seen!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        seen += chunk
    return seen


def test_read_only_commands_on_a_fresh_home_create_nothing(tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home")}
    for args in (["secrets", "list"], ["results"], ["secrets", "list", "-o", "json"]):
        done = fxctl(args, env=env)
        assert done.returncode == 0, done.stderr
        assert "no store yet" in done.stderr
    assert fxctl(["secrets", "list", "-o", "json"], env=env).stdout == "[]\n"
    missing = fxctl(["secrets", "history", "A"], env=env)
    assert missing.returncode == 1 and "no store yet" in missing.stderr
    assert not (tmp_path / "home").exists()


def test_completion_scripts_and_names_from_the_store(env: dict[str, str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert "_FXCTL_COMPLETE" in ok(["completion", shell], env)
    ok(["secrets", "set", "DB_PASS", CANARY, "--package", "etl"], env)
    ok(["secrets", "set", "DB_USER", CANARY, "--package", "loader"], env)
    ok(["secrets", "set", "TOKEN", CANARY, "--scope", "platform"], env)

    def complete(words: str) -> list[str]:
        done = fxctl([], env={**env, "_FXCTL_COMPLETE": "bash_complete",
                              "COMP_WORDS": f"fxctl {words}",
                              "COMP_CWORD": str(len(words.split(" ")))})
        assert done.returncode == 0, done.stderr
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("secrets history DB") == ["DB_PASS", "DB_USER"]
    assert complete("secrets list --package ") == ["etl", "loader"]
    assert complete("sec") == ["secrets"]
