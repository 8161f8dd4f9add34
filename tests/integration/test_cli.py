"""``fxctl secrets`` and ``fxctl db`` as a user runs them: separate processes, settings from the
environment, on the embedded store and on PostgreSQL. Values never appear in any output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fx_operator.domain.crypto import MasterKey
from fx_operator.storage.master_keys import FileMasterKeyProvider
from support.processes import fxctl

CANARY = "cli-canary-5d1e88-never-printed"


@pytest.fixture(params=["embedded", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    settings = {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:cli-test"}
    if request.param == "postgres":
        key_file = tmp_path / "master.key"
        FileMasterKeyProvider(key_file).write_new(MasterKey.generate())
        settings["FX_DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
        settings["FX_MASTER_KEY_FILE"] = str(key_file)
    return settings


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
