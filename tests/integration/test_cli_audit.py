"""``fxctl audit`` and ``fxctl audit consumers`` (issue 17, item 6), as processes on a fresh
FX_HOME, on the embedded store and on PostgreSQL: the runs that received a version or a data
key, exactly; the filters, paging and NDJSON; and never a value in any of it."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.services.audit_log import AuditLog
from fx_operator.storage import migrating
from fx_operator.storage.backends import Backend, SqliteBackend, utcnow
from fx_operator.storage.postgres_backend import PostgresBackend
from fx_operator.storage.secret_store import SecretStore
from support.processes import fxctl

CANARY = "audit-canary-5b1e9d-never-printed"
RUN_LINE = re.compile(r"fxctl: run (\S+) of ")


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env  # conftest: on the embedded store and on PostgreSQL


def ok(args: list[str], env: dict[str, str], stdin: str | None = None,
       ) -> subprocess.CompletedProcess[str]:
    done = fxctl(args, env=env, stdin=None if stdin is None else stdin.encode())
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr  # the canary: no value, ever
    return done


def package(folder: Path, name: str, script: str, secrets: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(script))
    (folder / "package.yaml").write_text(f"name: {name}\n")
    if secrets is not None:
        (folder / "secrets.json").write_text(json.dumps(secrets))
    return folder


def run(folder: Path, env: dict[str, str], *options: str) -> str:
    """Run a package folder locally; its run id."""
    done = ok(["run", str(folder), *options], env)
    found = RUN_LINE.search(done.stderr)
    assert found, done.stderr
    return found[1]


def names(args: list[str], env: dict[str, str]) -> list[str]:
    return ok([*args, "-o", "name"], env).stdout.split()


def as_json(args: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    rows = json.loads(ok([*args, "-o", "json"], env).stdout)
    assert isinstance(rows, list)
    return rows


def test_consumers_are_exactly_the_runs_that_received_a_version_or_a_data_key(
        env: dict[str, str], tmp_path: Path) -> None:
    reads = 'from fx_ef import context\nprint(len(str(context.secrets.get("DB_PASS"))))\n'
    etl = package(tmp_path / "etl", "etl", reads)
    other = package(tmp_path / "other", "other",
                    'from fx_ef import context\nprint(len(context.secrets.get("OTHER")))\n',
                    {"OTHER": f"{CANARY}-other"})
    ok(["secrets", "set", "DB_PASS", "-", "--scope", "project"], env, stdin=f"{CANARY}-v1")
    ok(["secrets", "set", "DB_PASS", "-", "--scope", "platform"], env, stdin=f"{CANARY}-plat")
    first = [run(etl, env), run(etl, env)]
    bystander = run(other, env)  # uses no DB_PASS: it received none
    ok(["secrets", "set", "DB_PASS", "-", "--scope", "project"], env, stdin=f"{CANARY}-v2")
    second = [run(etl, env)]

    ambiguous = fxctl(["audit", "consumers", "DB_PASS", "--version", "1"], env=env)
    assert ambiguous.returncode == 2 and "--scope" in ambiguous.stderr  # as secrets set asks
    of_version = ["audit", "consumers", "DB_PASS", "--scope", "project"]
    assert sorted(names([*of_version, "--version", "1"], env)) == sorted(first)
    assert names([*of_version, "--version", "2"], env) == second
    assert names(of_version, env) == [*second, *reversed(first)]  # any version, newest first
    # The platform's DB_PASS was shadowed by the project's in every run: nobody received it.
    assert names(["audit", "consumers", "DB_PASS", "--scope", "platform"], env) == []

    [received] = as_json([*of_version, "--version", "2"], env)
    assert (received["run"], received["project"], received["package"], received["scope"],
            received["version"]) == (second[0], "default", "etl", "project", 2)
    project_key = received["dataKey"]
    assert re.fullmatch(r"[0-9a-f]{32}", project_key)

    # A leaked data key: every run that got a value it wrapped, whatever the version; the
    # bystander's values are under its own package's key.
    of_key = ["audit", "consumers", "--data-key", project_key]
    assert sorted(names(of_key, env)) == sorted([*first, *second])
    [other_key] = {r["dataKey"] for r in as_json(["audit", "consumers", "OTHER"], env)}
    assert names(["audit", "consumers", "--data-key", other_key], env) == [bystander]
    assert names([*of_key, "OTHER"], env) == []

    # After the key is rotated, new runs are under the new key; the old key's list is unchanged.
    ok(["secrets", "rotate-data-key", "--scope", "project"], env)
    third = run(etl, env)
    assert sorted(names(of_key, env)) == sorted([*first, *second])
    [after] = as_json([*of_version, "--version", "2", "--limit", "1"], env)
    assert after["run"] == third and after["dataKey"] != project_key

    # Paged like every listing; NDJSON streams one run per line.
    page = ok([*of_version, "--limit", "2", "-o", "name"], env)
    assert page.stdout.split() == [third, *second]
    token = re.search(r"--continue (\S+)", page.stderr)
    assert token, page.stderr
    rest = ok([*of_version, "--limit", "2", "-o", "name", "--continue", token[1]], env)
    assert rest.stdout.split() == list(reversed(first)) and rest.stderr == ""
    lines = ok([*of_version, "--ndjson"], env).stdout.splitlines()
    assert [json.loads(line)["run"] for line in lines] == [third, *second, *reversed(first)]


def test_audit_filters_page_and_stream_without_values(env: dict[str, str],
                                                      tmp_path: Path) -> None:
    etl = package(tmp_path / "etl", "etl",
                  'from fx_ef import context\nprint(len(context.secrets.get("API_KEY")), '
                  'len(context.secrets.get("LOCAL")))\n')
    ok(["secrets", "set", "API_KEY", "-", "--scope", "project", "-p", "team-a"], env,
       stdin=CANARY)
    ok(["secrets", "set", "ROOT", "-", "--scope", "platform"], env, stdin=CANARY)
    ok(["secrets", "set", "LOCAL", "-", "--package", "etl", "-p", "team-a"], env, stdin=CANARY)
    run_id = run(etl, env, "-p", "team-a")

    every = as_json(["audit", "--all"], env)
    assert [r["action"] for r in every] == ["resolve", "set", "set", "set"]
    assert [r["id"] for r in every] == sorted((r["id"] for r in every), reverse=True)
    assert every[0]["entries"] == [{"name": "API_KEY", "scope": "project", "version": 1,
                                    "dataKeyId": every[0]["entries"][0]["dataKeyId"]},
                                   {"name": "LOCAL", "scope": "package", "version": 1,
                                    "dataKeyId": every[0]["entries"][1]["dataKeyId"]}]
    by_id = {r["id"]: r for r in every}

    def ids(*args: str) -> list[int]:
        return [int(i) for i in names(["audit", *args], env)]

    resolve, local, root, api = (r["id"] for r in every)
    assert ids("--action", "set") == [local, root, api]
    assert ids("--run", run_id) == [resolve]
    assert ids("--name", "API_KEY") == [resolve, api]
    assert ids("--name", "API_KEY", "--scope", "platform") == []
    assert ids("--scope", "platform") == [root]
    assert ids("--scope", "package") == [resolve, local]  # the run received a package value
    assert ids("--project", "team-a") == [resolve, local, api]
    assert ids("--project", "team-a", "--package", "etl") == [resolve, local]
    assert ids("--actor", "user:cli-test") == [local, root, api]
    assert ids("--actor", f"run:{run_id}") == [resolve]
    assert ids("--since", "1h") == [resolve, local, root, api]
    assert ids("--until", "1h") == []
    assert ids("--since", "2000-01-01T00:00:00", "--until", "2000-01-02T00:00:00Z") == []
    assert ids("--since", by_id[api]["at"]) == [resolve, local, root, api]  # inclusive
    bad_time = fxctl(["audit", "--since", "yesterday"], env=env)
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr

    table = ok(["audit", "--action", "resolve"], env).stdout
    assert "API_KEY v1 (project), LOCAL v1 (package)" in table and run_id in table

    # Paging: --limit, --continue, --all; the last page says nothing more.
    first = ok(["audit", "--limit", "3", "-o", "name"], env)
    assert [int(i) for i in first.stdout.split()] == [resolve, local, root]
    token = re.search(r"fxctl audit --continue (\S+)", first.stderr)
    assert token, first.stderr
    last = ok(["audit", "--limit", "3", "-o", "name", "--continue", token[1]], env)
    assert [int(i) for i in last.stdout.split()] == [api] and last.stderr == ""
    wrong = fxctl(["audit", "--continue", "bm90LWEtdG9rZW4"], env=env)
    assert wrong.returncode == 2 and "--continue" in wrong.stderr

    # NDJSON: one object per line, the same rows as JSON; --limit and its token hold too.
    streamed = ok(["audit", "--ndjson", "--all"], env).stdout.splitlines()
    assert [json.loads(line) for line in streamed] == every
    assert ok(["audit", "-o", "ndjson", "--all"], env).stdout.splitlines() == streamed
    two = ok(["audit", "--ndjson", "--limit", "2"], env)
    assert [json.loads(line)["id"] for line in two.stdout.splitlines()] == [resolve, local]
    assert "--continue" in two.stderr
    assert fxctl(["audit", "--json", "--ndjson"], env=env).returncode == 2


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_a_store_from_before_the_audit_index_has_its_records_found(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Migration 0007 indexes the records written before it (no data key id in them yet)."""
    if backend == "postgres":
        url = request.getfixturevalue("postgres_dsn")
        opened: Backend = PostgresBackend(url)
    else:
        opened = SqliteBackend(tmp_path / "store.db")
    migrating.upgrade(opened.url, "0006")
    with opened.transaction() as tx:
        tx.execute("INSERT INTO audit (at, actor, action, scope, project, package, run_id, "
                   "entries) VALUES (:at, 'run:r1', 'resolve', NULL, 'team-a', 'etl', 'r1', "
                   ":entries)",
                   {"at": utcnow(), "entries": json.dumps(
                       [{"name": "DB_PASS", "scope": "project", "version": 3}])})
    migrating.upgrade(opened.url)
    store = SecretStore(opened)
    try:
        with store.transaction() as tx:  # queued by the migration, indexed by no one yet
            assert tx.execute("SELECT count(*) FROM audit_names")[0][0] == 0
            assert tx.execute("SELECT count(*) FROM audit_names_pending")[0][0] == 1
        found = AuditLog(store).consumers_of_version(Owner.of(Scope.PROJECT, "team-a"),
                                                     "DB_PASS", 3)
        with store.transaction() as tx:  # the reader indexed it, once
            assert tx.execute("SELECT count(*) FROM audit_names_pending")[0][0] == 0
            assert tx.execute("SELECT count(*) FROM audit_names")[0][0] == 1
    finally:
        store.close()
    assert [(c.run_id, c.package, c.version, c.data_key_id) for c in found] == [
        ("r1", "etl", 3, None)]
