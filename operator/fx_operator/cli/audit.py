"""``fxctl audit``: the audit records, filtered and paged, and ``audit consumers``: which runs
received a version of a secret, or any value of a data key (the question after a leak or a
rotation). Records hold names, scopes, versions and key ids; never a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import click
from click.core import ParameterSource

from fx_operator.cli.common import existing_secret_service
from fx_operator.cli.output import (
    NDJSON,
    chosen_streaming_format,
    emit,
    emit_lines,
    streaming_output_option,
)
from fx_operator.cli.paging import Key, cut, fetch_size, paging_options, say_more, token_key
from fx_operator.cli.secrets import SCOPES, owner_options, resolve_owner
from fx_operator.exceptions import NotFoundError
from fx_operator.services.audit_log import AuditFilter, AuditLog, Consumer, LoggedRecord

T = TypeVar("T")
K = TypeVar("K", bound=Key)
Fetch = Callable[[K | None, int | None], Sequence[T]]
STREAM_PAGE = 1000  # rows fetched at a time for NDJSON: memory stays flat however many there are
NAMES_SHOWN = 80  # characters of a record's names in a table; -o json has them all
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"(\d+)([smhdw])")


class Moment(click.ParamType[datetime, Any]):
    """A time: ISO 8601 (UTC when it has no offset) or an age such as 90s, 15m, 1h, 2d, 1w."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        relative = _RELATIVE.fullmatch(text)
        if relative:
            return datetime.now(UTC) - timedelta(
                seconds=int(relative[1]) * _UNITS[relative[2]])
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither an ISO 8601 time (2026-12-07T10:00:00Z) nor an age "
                      "(90s, 15m, 1h, 2d, 1w)", param, ctx)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass
class _Rest:
    """Whether a streamed listing stopped at --limit with more to come, and after which row."""

    more: bool = False
    last: Key | None = None


def _streamed(fetch: Fetch[K, T], key_of: Callable[[T], K], after: K | None, limit: int,
              list_all: bool, rest: _Rest) -> Iterator[T]:
    """Rows a page of STREAM_PAGE at a time, up to ``limit`` (every one with ``list_all``)."""
    left = None if list_all else limit
    while left is None or left > 0:
        size = STREAM_PAGE if left is None else min(STREAM_PAGE, left)
        rows = fetch(after, size + 1)
        page = rows[:size]
        yield from page
        if len(rows) <= size:
            return
        after = key_of(page[-1])
        if left is not None:
            left -= size
    rest.more, rest.last = True, after


@dataclass(frozen=True)
class _Listing(Generic[K, T]):
    """How one listing fetches, keys and shows its rows."""

    fetch: Fetch[K, T]
    key_of: Callable[[T], K]
    machine_row: Callable[[T], dict[str, Any]]
    table_row: Callable[[T], dict[str, Any]]
    columns: Sequence[str]
    name_column: str
    noun: str
    command: str

    def show(self, after: K | None, limit: int, list_all: bool, output: str) -> None:
        if output == NDJSON:
            rest = _Rest()
            emit_lines(map(self.machine_row,
                           _streamed(self.fetch, self.key_of, after, limit, list_all, rest)))
            if rest.more and rest.last is not None:
                say_more(self.noun, self.command, rest.last)
            return
        page, more = cut(self.fetch(after, fetch_size(limit, list_all)), limit, list_all)
        row = self.table_row if output == "table" else self.machine_row
        rows = [row(item) for item in page]
        if output == "name":  # each once, newest first
            rows = list({r[self.name_column]: r for r in rows}.values())
        emit(rows, self.columns, output=output, name_column=self.name_column)
        if more:
            say_more(self.noun, self.command, self.key_of(page[-1]))


# --- fxctl audit ---------------------------------------------------------------------------


def _record_row(logged: LoggedRecord) -> dict[str, Any]:
    record = logged.record
    return {"id": logged.record_id, "at": record.at, "action": record.action,
            "actor": record.actor, "project": record.project, "package": record.package,
            "scope": record.scope, "run": record.run_id, "entries": record.entries}


def _record_table_row(logged: LoggedRecord) -> dict[str, Any]:
    return {**_record_row(logged), "time": _time(logged.record.at),
            "names": _summary(logged.record.entries)}


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _summary(entries: list[dict[str, Any]]) -> str:
    """A record's entries on one line: ``NAME v2 (project)``, else their plain fields."""
    parts = [f"{e['name']} v{e.get('version', '?')} ({e.get('scope', '?')})" if "name" in e
             else " ".join(f"{k}={v}" for k, v in e.items() if not isinstance(v, dict | list))
             for e in entries]
    text = ", ".join(parts)
    return text if len(text) <= NAMES_SHOWN else text[: NAMES_SHOWN - 1] + "…"


@click.group(invoke_without_command=True)
@click.option("--run", "run_id", metavar="RUN", default=None, help="Records of one run.")
@click.option("--name", default=None, metavar="NAME", help="Records that name this secret.")
@click.option("--scope", type=SCOPES, default=None,
              help="Records at this scope, or naming a secret of it.")
@click.option("-p", "--project", default=None, metavar="P", help="Records of this project.")
@click.option("--package", default=None, metavar="N", help="Records of this package.")
@click.option("--actor", default=None, metavar="WHO", help="Records made by WHO.")
@click.option("--action", default=None, metavar="ACTION",
              help="Records of one action: set, read, resolve, deliver, import, delete, ...")
@click.option("--since", type=Moment(), default=None,
              help="From this time on: ISO 8601 (UTC without an offset) or an age (1h, 2d).")
@click.option("--until", type=Moment(), default=None, help="Before this time (same forms).")
@paging_options("records")
@streaming_output_option
@click.pass_context
def audit(ctx: click.Context, run_id: str | None, name: str | None, scope: str | None,
          project: str | None, package: str | None, actor: str | None, action: str | None,
          since: datetime | None, until: datetime | None, limit: int,
          continue_token: str | None, list_all: bool, output: str, as_json: bool,
          as_ndjson: bool) -> None:
    """Who read, wrote, resolved and received which secrets, newest first; never a value.

    Every run's record lists what it was sealed: name, scope, version and the data key that
    wrapped it. After a leak or a rotation, `fxctl audit consumers` lists the runs that
    received a version (or any value of a data key).
    """
    if ctx.invoked_subcommand is not None:
        if any(ctx.get_parameter_source(option) != ParameterSource.DEFAULT
               for option in ctx.params):
            raise click.UsageError(f"fxctl audit's options filter its own listing; give "
                                   f"{ctx.invoked_subcommand} its options after its name")
        return
    where = AuditFilter(run_id, name, scope, project, package, actor, action, since, until)
    after = None if continue_token is None else token_key(continue_token, (int,), "fxctl audit")
    fmt = chosen_streaming_format(output, as_json, as_ndjson)
    with existing_secret_service() as service:
        log = None if service is None else AuditLog(service.store)

        def fetch(after: list[int] | None, limit: int | None) -> list[LoggedRecord]:
            if log is None:
                return []
            return log.records(where, after=None if after is None else after[0], limit=limit)

        _Listing(fetch, lambda r: [r.record_id], _record_row, _record_table_row,
                 ["id", "time", "action", "actor", "project", "package", "run", "names"],
                 "id", "records", "fxctl audit").show(after, limit, list_all, fmt)


# --- fxctl audit consumers -----------------------------------------------------------------


def _consumer_row(consumer: Consumer) -> dict[str, Any]:
    return {"run": consumer.run_id, "project": consumer.project, "package": consumer.package,
            "name": consumer.name, "scope": consumer.scope, "version": consumer.version,
            "dataKey": consumer.data_key_id, "at": consumer.at, "actor": consumer.actor}


def _consumer_table_row(consumer: Consumer) -> dict[str, Any]:
    return {**_consumer_row(consumer), "time": _time(consumer.at)}


def _consumer_key(consumer: Consumer) -> list[Any]:
    return [consumer.record_id, consumer.name]


@audit.command()
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="Only runs that received this version (default: any version).")
@click.option("--data-key", "data_key", metavar="ID", default=None,
              help="Runs that received any value wrapped by this data key (NAME: only its).")
@owner_options
@paging_options("runs")
@streaming_output_option
def consumers(name: str | None, version: int | None, data_key: str | None, scope: str | None,
              project: str | None, package: str | None, limit: int,
              continue_token: str | None, list_all: bool, output: str, as_json: bool,
              as_ndjson: bool) -> None:
    """Every run that received NAME (its --version N), or a value of --data-key ID: after a
    leak or a rotation, the runs that had the old value. NAME's scope is found as in
    `fxctl secrets set` (--scope, -p, --package when it is at several)."""
    if name is None and data_key is None:
        raise click.UsageError("say what was received: NAME (with --version N), or --data-key ID")
    if data_key is not None and (version is not None or scope or project or package):
        raise click.UsageError("--data-key names the values on its own: it takes only NAME")
    fmt = chosen_streaming_format(output, as_json, as_ndjson)
    after = None if continue_token is None else token_key(
        continue_token, (int, str), "fxctl audit consumers")
    with existing_secret_service() as service:
        if service is None:
            raise NotFoundError("there is no store yet, so no run received anything")
        log = AuditLog(service.store)
        if data_key is not None:
            key_id = data_key.lower()

            def fetch(after: list[Any] | None, limit: int | None) -> list[Consumer]:
                return log.consumers_of_data_key(key_id, name, limit=limit,
                                                 after=None if after is None else
                                                 (after[0], after[1]))
        else:
            assert name is not None
            owner = resolve_owner(service, name, scope, project, package)
            secret = name

            def fetch(after: list[Any] | None, limit: int | None) -> list[Consumer]:
                return log.consumers_of_version(owner, secret, version, limit=limit,
                                                after=None if after is None else
                                                (after[0], after[1]))

        _Listing(fetch, _consumer_key, _consumer_row, _consumer_table_row,
                 ["run", "project", "package", "name", "scope", "version", "dataKey", "time"],
                 "run", "runs", "fxctl audit consumers").show(after, limit, list_all, fmt)
