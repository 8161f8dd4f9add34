"""Listings as a table, JSON, YAML or names (kubectl's ``-o``); nothing here receives a value.

Rows carry typed cells (``datetime``, ``bool``, numbers). Tables are for people: ages (``5m``,
``2d``) and ``yes``/``no``. Machine formats are for scripts: ISO 8601 times, real booleans.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import yaml

FORMATS = ("table", "json", "yaml", "name")
F = TypeVar("F", bound=Callable[..., Any])


def output_option(command: F) -> F:
    """``-o/--output table|json|yaml|name``, with ``--json`` kept as its old spelling."""
    command = click.option("--json", "as_json", is_flag=True, hidden=True,
                           help="Same as -o json.")(command)
    return click.option("-o", "--output", "output", type=click.Choice(FORMATS),
                        default="table", show_default=True, help="Output format.")(command)


def chosen_format(output: str, as_json: bool) -> str:
    return "json" if as_json else output


def age(then: datetime, now: datetime | None = None) -> str:
    """The largest whole unit, as kubectl prints ages: 42s, 5m, 3h, 2d, 1y."""
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table_cell(value: Any, now: datetime) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return age(value, now)
    return str(value)


def _machine_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {k: _machine_cell(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_machine_cell(v) for v in value]
    return value


def _json_lines(data: list[Any]) -> str:
    if not data:
        return "[]\n"
    return "[\n" + ",\n".join(f"  {json.dumps(item)}" for item in data) + "\n]\n"


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, output: str = "table",
         name_column: str = "name") -> None:
    """Print rows in one write (a listing of 100k rows must not be 100k writes)."""
    if output in ("json", "yaml"):
        data = [_machine_cell(row) for row in rows]
        # JSON: one row per line. json.dumps with indent= runs the pure-Python encoder, about
        # 5x slower than the C one: most of a 100k-row listing's time (bench_cli_scale.py).
        text = (_json_lines(data) if output == "json"
                else yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        click.echo(text, nl=False)
        return
    if output == "name":
        click.echo("".join(f"{row[name_column]}\n" for row in rows), nl=False)
        return
    if not rows:
        click.echo("(none)")
        return
    now = datetime.now(UTC)
    cells = [[_table_cell(row.get(c), now) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    click.echo("\n".join(lines))
