"""``fxctl secrets``: set, import, list, delete, history, rollback and key rotation.

Values are never printed. A VALUE given on the command line is visible in the shell history and
to other processes (argv): prefer ``-`` and stdin for real secrets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from fx_operator.cli.common import existing_secret_service, parse_value, secret_service
from fx_operator.cli.completion import complete_packages, complete_secret_names
from fx_operator.cli.output import chosen_format, emit, emit_columns, many_rows, output_option
from fx_operator.cli.paging import cut, fetch_size, paging_options, say_more, token_key
from fx_operator.cli.progress import progress
from fx_operator.config import Settings
from fx_operator.domain.scopes import DEFAULT_PROJECT, Owner, Scope
from fx_operator.exceptions import NotFoundError
from fx_operator.services import rotation
from fx_operator.services.configured_store import key_provider
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.secret_store import ListedSecret, ListingKey, VersionRecord

SCOPES = click.Choice([s.value for s in Scope])
F = TypeVar("F", bound=Callable[..., Any])
PROGRESS_IMPORT = 2000  # secrets in a file, from which an import shows its progress
PROGRESS_ROTATION = 100  # data keys (owners), from which a master-key rotation shows progress


def owner_options(command: F) -> F:
    """--scope, -p/--project and --package: whose secret NAME is (see resolve_owner)."""
    command = click.option("--package", "package", metavar="N",
                           shell_complete=complete_packages,
                           help="The package (implies package scope).")(command)
    command = click.option("-p", "--project", "project", metavar="P", default=None,
                           help=f"The project (a namespace); default {DEFAULT_PROJECT!r}.")(command)
    return click.option("--scope", type=SCOPES, default=None,
                        help="package, project or platform; default: --package's scope, else "
                             "where NAME already is.")(command)


def _explicit_owner(scope: str | None, project: str | None, package: str | None) -> Owner | None:
    """The owner the options name, or None when they leave it to the store to say."""
    if scope == Scope.PLATFORM.value and (project or package):
        raise click.UsageError("--scope platform takes neither --project nor --package")
    if scope == Scope.PROJECT.value and package:
        raise click.UsageError("--scope project takes no --package (package scope does)")
    if scope is None and package is None:
        return None
    return Owner.of(scope or Scope.PACKAGE.value, project, package)


def resolve_owner(service: SecretService, name: str, scope: str | None, project: str | None,
                  package: str | None, *, new_ok: bool = False) -> Owner:
    """The options' owner; without --scope or --package, the one owner that holds NAME.

    Typing ``history NAME`` after ``set NAME`` should just work, as with ``gh secret``; when
    NAME is at several scopes, guessing would act on the wrong one, so we ask.
    """
    owner = _explicit_owner(scope, project, package)
    if owner is not None:
        return owner
    owners = sorted({r.owner for r in service.list(project=project, name=name,
                                                   include_deleted=True)}, key=str)
    if len(owners) == 1:
        return owners[0]
    if owners:
        raise click.UsageError(f"{name!r} is in {', '.join(map(str, owners))}: choose one with "
                               "--scope (and --project/--package)")
    if new_ok:
        raise click.UsageError(f"secret {name!r} is new: say where it goes (package scope needs a "
                               "package name: --package N; or --scope project|platform)")
    raise NotFoundError(f"no secret {name!r}{f' in project {project!r}' if project else ''} "
                        "(fxctl secrets list shows the names)")


def _row(record: VersionRecord) -> dict[str, Any]:
    return {"name": record.name, "scope": record.owner.scope.value,
            "project": record.owner.project, "package": record.owner.package,
            "version": record.version, "deleted": record.deleted,
            "created": record.created_at, "by": record.actor}


def _read_value(value: str) -> str:
    """``-`` reads stdin: with a hidden prompt on a terminal (as gh and vault do)."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        return str(click.prompt("value", hide_input=True, err=True))
    return sys.stdin.read().removesuffix("\n")


@click.group()
def secrets() -> None:
    """Secrets at package, project and platform scope (values are never shown)."""


@secrets.command("set")
@click.argument("name", shell_complete=complete_secret_names)
@click.argument("value")
@owner_options
@click.option("--string", "as_string", is_flag=True,
              help="Store VALUE as text even when it parses as JSON (e.g. 1e3, null, true).")
def set_(name: str, value: str, scope: str | None, project: str | None, package: str | None,
         as_string: bool) -> None:
    """Store VALUE under NAME as a new version. VALUE is JSON if it parses, else a string;
    `-` reads it from stdin, with a hidden prompt on a terminal (argv is visible to other
    processes)."""
    text = _read_value(value)
    parsed = text if as_string else parse_value(text)
    if parsed is None:
        click.echo(f"warning: {name} is stored as JSON null (it reads as None); --string stores "
                   "the text 'null'", err=True)
    elif _reads_differently(text, parsed):
        click.echo(f"note: {name} is stored as a JSON {type(parsed).__name__}, which prints "
                   "differently from the text given (1e3 reads as 1000.0); --string keeps the "
                   "text", err=True)
    with secret_service() as service:
        owner = resolve_owner(service, name, scope, project, package, new_ok=True)
        version = service.set(owner, name, parsed)
    click.echo(f"{name}: version {version} in {owner}")


def _reads_differently(text: str, parsed: Any) -> bool:
    """A number or boolean whose JSON spelling is not the text typed (never shows the value)."""
    return isinstance(parsed, bool | int | float) and json.dumps(parsed) != text.strip()


@secrets.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("-p", "--project", default=DEFAULT_PROJECT, show_default=True, metavar="P")
@click.option("--package", required=True, metavar="N", shell_complete=complete_packages)
def import_(file: Path, project: str, package: str) -> None:
    """Import a secrets.json as package-scope secrets: all of it or nothing."""
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    with secret_service() as service, progress(f"importing {file}",
                                               at_least=PROGRESS_IMPORT) as report:
        versions = service.import_file(raw, project=project, package=package, source=str(file),
                                       progress=report)
    owner = Owner.of(Scope.PACKAGE, project, package)
    click.echo("".join([f"imported {len(versions)} secret(s) into {owner}\n",
                        *(f"  {name}: version {version}\n" for name, version in versions.items())]),
               nl=False)


@secrets.command("list")
@click.option("--scope", type=SCOPES, default=None)
@click.option("-p", "--project", default=None, metavar="P")
@click.option("--package", default=None, metavar="N", shell_complete=complete_packages)
@paging_options("secrets")
@output_option
def list_(scope: str | None, project: str | None, package: str | None, limit: int,
          continue_token: str | None, list_all: bool, output: str, as_json: bool) -> None:
    """Names, scopes, versions and ages of the current secrets; never values."""
    if scope == Scope.PLATFORM.value and (project or package):
        raise click.UsageError("--scope platform takes neither --project nor --package")
    after = None if continue_token is None else _listing_key(continue_token)
    with many_rows():
        with existing_secret_service() as service:
            records = [] if service is None else service.list(
                scope=Scope(scope) if scope else None, project=project, package=package,
                after=after, limit=fetch_size(limit, list_all))
        page, more = cut(records, limit, list_all)
        emit_columns(_listed_columns(page),
                     ["name", "scope", "project", "package", "version", "created", "by"],
                     output=chosen_format(output, as_json), times=("created",))
    if more:
        say_more("secrets", "fxctl secrets list", page[-1].key)


def _listed_columns(page: Sequence[ListedSecret]) -> dict[str, Sequence[Any]]:
    """The listing's columns, in the order of ``_row``'s keys (one pass over the rows)."""
    columns: list[Sequence[Any]] = (
        list(zip(*page, strict=True)) if page else [()] * len(ListedSecret._fields))
    scope, project, package, name, version, deleted, created, actor = columns
    return {"name": name, "scope": scope, "project": project, "package": package,
            "version": version, "deleted": deleted, "created": created, "by": actor}


def _listing_key(text: str) -> ListingKey:
    key = token_key(text, (str, str, str, str), "fxctl secrets list")
    return (key[0], key[1], key[2], key[3])


@secrets.command()
@click.argument("name", shell_complete=complete_secret_names)
@owner_options
def delete(name: str, scope: str | None, project: str | None, package: str | None) -> None:
    """Delete NAME at one scope (a tombstone version; history is kept)."""
    with secret_service() as service:
        owner = resolve_owner(service, name, scope, project, package)
        version = service.delete(owner, name)
    click.echo(f"{name}: deleted in {owner} (tombstone version {version})")


@secrets.command()
@click.argument("name", shell_complete=complete_secret_names)
@owner_options
@output_option
def history(name: str, scope: str | None, project: str | None, package: str | None,
            output: str, as_json: bool) -> None:
    """Every version of NAME at one scope, with who wrote it and when."""
    _explicit_owner(scope, project, package)  # the options' own mistakes first
    with existing_secret_service() as service:
        if service is None:
            raise NotFoundError(f"secret {name!r} has no history: there is no store yet")
        owner = resolve_owner(service, name, scope, project, package)
        records = service.history(owner, name)
    rows = [{**_row(r), "current": r.is_current} for r in records]
    emit(rows, ["version", "current", "deleted", "created", "by"],
         output=chosen_format(output, as_json), name_column="version")


@secrets.command()
@click.argument("name", shell_complete=complete_secret_names)
@click.option("--to-version", "to_version", type=click.IntRange(min=1), required=True)
@owner_options
def rollback(name: str, to_version: int, scope: str | None, project: str | None,
             package: str | None) -> None:
    """Make version V of NAME current again (written as a new version)."""
    with secret_service() as service:
        owner = resolve_owner(service, name, scope, project, package)
        version = service.rollback(owner, name, to_version)
    click.echo(f"{name}: version {to_version} restored as version {version} in {owner}")


@secrets.command("rotate-master-key")
@click.option("--new-key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Use this key (base64, 256 bits) instead of generating one, e.g. for a new "
                   "Kubernetes Secret; you then point FX_MASTER_KEY_FILE at it.")
def rotate_master_key(new_key_file: Path | None) -> None:
    """Rewrap every data key under a new master key; no value is re-encrypted."""
    settings = Settings()
    with secret_service() as service, progress("rewrapping data keys",
                                               at_least=PROGRESS_ROTATION) as report:
        result = rotation.rotate_master_key(service.keys, service.actor, key_provider(settings),
                                           new_key_file, report)
    click.echo(f"rewrapped {result.data_keys} data key(s): master key {result.old_key_id} -> "
               f"{result.new_key_id}")
    if new_key_file is not None:
        click.echo(f"the store now needs {result.key_file}: install it as the master key "
                   "(FX_MASTER_KEY_FILE or the operator's Secret) before the next start")
    else:
        click.echo(f"new key written to {result.key_file}")


@secrets.command("rotate-data-key")
@owner_options
def rotate_data_key(scope: str | None, project: str | None, package: str | None) -> None:
    """Re-encrypt every version of one owner under a fresh data key."""
    owner = _explicit_owner(scope, project, package)
    if owner is None:
        raise click.UsageError("say whose data key: --package N, or --scope project|platform")
    with secret_service() as service:
        count = rotation.rotate_data_key(service.keys, owner, actor=service.actor)
    click.echo(f"re-encrypted {count} version(s) of {owner} under a new data key")
