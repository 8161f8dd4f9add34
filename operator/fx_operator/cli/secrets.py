"""``fxctl secrets``: set, import, list, delete, history, rollback and key rotation.

Values are never printed. A VALUE given on the command line is visible in the shell history and
to other processes (argv): prefer ``-`` and stdin for real secrets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fx_operator.cli.common import parse_value, secret_service
from fx_operator.cli.output import emit
from fx_operator.config import Settings
from fx_operator.domain.scopes import DEFAULT_PROJECT, Owner, Scope
from fx_operator.services.opening import key_provider
from fx_operator.services.rotation import rotate_master_key as rotate_master_key_file
from fx_operator.storage.secret_store import VersionRecord

SCOPES = click.Choice([s.value for s in Scope])



F = TypeVar("F", bound=Callable[..., Any])


def _owner_options(default_scope: str | None = "package") -> Callable[[F], F]:
    def decorate(command: F) -> F:
        command = click.option("--package", "package", metavar="N",
                               help="The package (package scope).")(command)
        command = click.option("--project", "project", metavar="P", default=None,
                               help=f"The project (a namespace); default {DEFAULT_PROJECT!r}.")(
            command)
        return click.option("--scope", type=SCOPES, default=default_scope, show_default=True,
                            help="package, project or platform.")(command)
    return decorate


def _row(record: VersionRecord) -> dict[str, Any]:
    return {"name": record.name, "scope": record.owner.scope.value,
            "project": record.owner.project, "package": record.owner.package,
            "version": record.version, "deleted": record.deleted,
            "created": record.created_at.isoformat(timespec="seconds"), "by": record.actor}


@click.group()
def secrets() -> None:
    """Secrets at package, project and platform scope (values are never shown)."""


@secrets.command("set")
@click.argument("name")
@click.argument("value")
@_owner_options()
def set_(name: str, value: str, scope: str, project: str | None, package: str | None) -> None:
    """Store VALUE under NAME as a new version. VALUE is JSON if it parses, else a string;
    `-` reads it from stdin (preferred: argv is visible to other processes)."""
    text = sys.stdin.read().removesuffix("\n") if value == "-" else value
    owner = Owner.of(scope, project, package)
    with secret_service() as service:
        version = service.set(owner, name, parse_value(text))
    click.echo(f"{name}: version {version} in {owner}")


@secrets.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--project", default=DEFAULT_PROJECT, show_default=True, metavar="P")
@click.option("--package", required=True, metavar="N")
def import_(file: Path, project: str, package: str) -> None:
    """Import a secrets.json as package-scope secrets: all of it or nothing."""
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    with secret_service() as service:
        versions = service.import_file(raw, project=project, package=package, source=str(file))
    owner = Owner.of(Scope.PACKAGE, project, package)
    click.echo(f"imported {len(versions)} secret(s) into {owner}")
    for name, version in versions.items():
        click.echo(f"  {name}: version {version}")


@secrets.command("list")
@click.option("--scope", type=SCOPES, default=None)
@click.option("--project", default=None, metavar="P")
@click.option("--package", default=None, metavar="N")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(scope: str | None, project: str | None, package: str | None, as_json: bool) -> None:
    """Names, scopes, versions and times of the current secrets; never values."""
    with secret_service() as service:
        records = service.list(scope=Scope(scope) if scope else None, project=project,
                               package=package)
    emit([_row(r) for r in records],
         ["name", "scope", "project", "package", "version", "created", "by"], as_json=as_json)


@secrets.command()
@click.argument("name")
@_owner_options()
def delete(name: str, scope: str, project: str | None, package: str | None) -> None:
    """Delete NAME at one scope (a tombstone version; history is kept)."""
    owner = Owner.of(scope, project, package)
    with secret_service() as service:
        version = service.delete(owner, name)
    click.echo(f"{name}: deleted in {owner} (tombstone version {version})")


@secrets.command()
@click.argument("name")
@_owner_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(name: str, scope: str, project: str | None, package: str | None,
            as_json: bool) -> None:
    """Every version of NAME at one scope, with who wrote it and when."""
    owner = Owner.of(scope, project, package)
    with secret_service() as service:
        records = service.history(owner, name)
    rows = [{**_row(r), "current": r.is_current} for r in records]
    emit(rows, ["version", "current", "deleted", "created", "by"], as_json=as_json)


@secrets.command()
@click.argument("name")
@click.option("--to-version", "to_version", type=click.IntRange(min=1), required=True)
@_owner_options()
def rollback(name: str, to_version: int, scope: str, project: str | None,
             package: str | None) -> None:
    """Make version V of NAME current again (written as a new version)."""
    owner = Owner.of(scope, project, package)
    with secret_service() as service:
        version = service.rollback(owner, name, to_version)
    click.echo(f"{name}: version {to_version} restored as version {version} in {owner}")


@secrets.command("rotate-master-key")
@click.option("--new-key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Use this key (base64, 256 bits) instead of generating one, e.g. for a new "
                   "Kubernetes Secret; you then point FX_MASTER_KEY_FILE at it.")
def rotate_master_key(new_key_file: Path | None) -> None:
    """Rewrap every data key under a new master key; no value is re-encrypted."""
    settings = Settings()
    with secret_service() as service:
        result = rotate_master_key_file(service, key_provider(settings), new_key_file)
    click.echo(f"rewrapped {result.data_keys} data key(s): master key {result.old_key_id} -> "
               f"{result.new_key_id}")
    if new_key_file is not None:
        click.echo(f"the store now needs {result.key_file}: install it as the master key "
                   "(FX_MASTER_KEY_FILE or the operator's Secret) before the next start")
    else:
        click.echo(f"new key written to {result.key_file}")


@secrets.command("rotate-data-key")
@_owner_options()
def rotate_data_key(scope: str, project: str | None, package: str | None) -> None:
    """Re-encrypt every version of one owner under a fresh data key."""
    owner = Owner.of(scope, project, package)
    with secret_service() as service:
        count = service.rotate_data_key(owner)
    click.echo(f"re-encrypted {count} version(s) of {owner} under a new data key")
