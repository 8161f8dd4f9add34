"""What ``fxctl`` and the executor load before doing their work (issue 19's start-up targets):
modules, as ``python -X importtime`` lists them, never timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fx_operator.storage import migrating
from fx_operator.storage.backends import SqliteBackend
from fx_operator.storage.postgres_backend import PostgresBackend
from support.processes import child_env

from fx_ef.run_bundle import RunBundle

# Heavy imports that a command on the embedded store does not need (its schema made once).
NOT_ON_THE_EMBEDDED_STORE = {"psycopg", "psycopg_pool", "sqlalchemy", "alembic"}
# The operator extra's modules: a local run has no use for them.
CLUSTER_ONLY = {"kopf", "kubernetes", "aiohttp", "prometheus_client"}


def imported_modules(args: list[str], env: dict[str, str], *, module: str = "fx_operator",
                     cwd: Path | None = None) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module ``python -m MODULE ARGS`` imported, and the finished process."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args],
                          env=child_env(env), capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)
    loaded = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    return loaded, done


def trivial_package(where: Path) -> Path:
    folder = where / "trivial"
    folder.mkdir()
    (folder / "main.py").write_text("print('hello')\n")
    (folder / "package.yaml").write_text("name: trivial\n")
    return folder


def test_the_executor_loads_neither_the_operator_nor_heavy_modules(tmp_path: Path) -> None:
    folder = trivial_package(tmp_path)
    bundle = tmp_path / "bundle.json"
    bundle.write_text(RunBundle.build(
        run_id="run-1", project="default", package="trivial", entrypoint="main.py", compat=None,
        params={}, config={}, secrets={"DB_PASS": "a-long-secret-value"},
        scopes={"DB_PASS": "package"}, channel=None, allow_platform_write=False).to_json())
    loaded, done = imported_modules(["--bundle", str(bundle), "--package-dir", str(folder)],
                                    {}, module="fx_ef.executor")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"
    tops = {m.partition(".")[0] for m in loaded}
    assert not tops & {"fx_operator", "cryptography", "yaml", "pydantic", "asyncio"}


def test_a_local_run_loads_no_migration_tool_no_cluster_code_and_no_resource_models(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """``fxctl run`` of a trivial package on a current store, either: the schema check is one
    query with the store's own driver (no Alembic, no SQLAlchemy), package.yaml needs its own
    model only (not the custom resources')."""
    folder = trivial_package(tmp_path)
    _, done = imported_modules(["run", str(folder)], cli_env)  # makes the store (and the key)
    assert done.returncode == 0, done.stderr
    loaded, done = imported_modules(["run", str(folder)], cli_env)
    assert done.returncode == 0 and done.stdout == "hello\n", done.stderr
    tops = {m.partition(".")[0] for m in loaded}
    heavy = NOT_ON_THE_EMBEDDED_STORE if "FX_DATABASE_URL" not in cli_env else {
        "sqlalchemy", "alembic"}
    assert not tops & {*heavy, *CLUSTER_ONLY}
    assert not loaded & {"fx_operator.domain.resources", "fx_operator.domain.package_definition"}


def test_a_store_of_an_older_schema_is_upgraded_when_opened(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The check that skips Alembic on a current store lets it run on an older one."""
    url = cli_env.get("FX_DATABASE_URL") or f"sqlite:///{tmp_path / 'home' / 'store.sqlite3'}"
    if "FX_DATABASE_URL" not in cli_env:
        (tmp_path / "home").mkdir(mode=0o700)
    migrating.upgrade(url, "0006")
    loaded, done = imported_modules(["run", str(trivial_package(tmp_path))], cli_env)
    assert done.returncode == 0 and done.stdout == "hello\n", done.stderr
    assert "alembic" in loaded
    backend = (PostgresBackend(url) if "FX_DATABASE_URL" in cli_env
               else SqliteBackend(tmp_path / "home" / "store.sqlite3"))
    try:
        assert migrating.schema_revision(backend) == migrating.HEAD_REVISION
    finally:
        backend.close()


def test_a_listing_loads_yaml_only_when_asked_for_yaml(tmp_path: Path) -> None:
    env = {"FX_HOME": str(tmp_path / "home"), "FX_ACTOR": "user:test"}
    _, done = imported_modules(["secrets", "set", "A", "a-long-value-1", "--scope", "platform"],
                               env)
    assert done.returncode == 0, done.stderr
    loaded, done = imported_modules(["secrets", "list"], env)
    assert done.returncode == 0 and "A" in done.stdout, done.stderr
    assert not {m.partition(".")[0] for m in loaded} & {"yaml", *NOT_ON_THE_EMBEDDED_STORE}
    loaded, done = imported_modules(["secrets", "list", "-o", "yaml"], env)
    assert done.returncode == 0 and "name: A" in done.stdout, done.stderr
    assert "yaml" in loaded
