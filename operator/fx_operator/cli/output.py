"""Listings as a table, JSON, YAML or names (kubectl's ``-o``); nothing here receives a value.

Rows carry typed cells (``datetime``, ``bool``, numbers). Tables are for people: ages (``5m``,
``2d``) and ``yes``/``no``. Machine formats are for scripts: ISO 8601 times, real booleans.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import repeat
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

import click

FORMATS = ("table", "json", "yaml", "name")
NDJSON = "ndjson"  # one JSON object per line, written as rows come: for listings of any length
F = TypeVar("F", bound=Callable[..., Any])


def output_option(command: F) -> F:
    """``-o/--output table|json|yaml|name``, with ``--json`` kept as its old spelling."""
    command = click.option("--json", "as_json", is_flag=True, hidden=True,
                           help="Same as -o json.")(command)
    return click.option("-o", "--output", "output", type=click.Choice(FORMATS),
                        default="table", show_default=True, help="Output format.")(command)


def chosen_format(output: str, as_json: bool) -> str:
    return "json" if as_json else output


def streaming_output_option(command: F) -> F:
    """``output_option`` with ``ndjson`` too (``-o ndjson``, or ``--ndjson``)."""
    command = click.option("--ndjson", "as_ndjson", is_flag=True,
                           help="Same as -o ndjson: one JSON object per line, as they "
                                "come.")(command)
    command = click.option("--json", "as_json", is_flag=True, help="Same as -o json.")(command)
    return click.option("-o", "--output", "output", type=click.Choice((*FORMATS, NDJSON)),
                        default="table", show_default=True, help="Output format.")(command)


def chosen_streaming_format(output: str, as_json: bool, as_ndjson: bool) -> str:
    if as_json and as_ndjson:
        raise click.UsageError("--json and --ndjson: choose one")
    return NDJSON if as_ndjson else chosen_format(output, as_json)


def emit_lines(rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line (NDJSON), each written as it comes (a pipe sees the first ones
    before the last are read)."""
    encode = json.JSONEncoder(default=_json_default).encode
    out = sys.stdout
    for row in rows:
        line: str = encode(row)
        out.write(line + "\n")
    out.flush()


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


def _json_lines(rows: Sequence[dict[str, Any]]) -> str:
    """A JSON list, one row per line. Not ``indent=``: it runs the pure-Python encoder, about 5x
    slower than the C one; datetimes are turned into text by the encoder as it meets them,
    rather than by a pass over every cell first (on 100k rows: 1.5 s before, see
    bench/bench_cli_scale.py)."""
    if not rows:
        return "[]\n"
    encode = json.JSONEncoder(default=_json_default).encode
    return "[\n" + ",\n".join([f"  {encode(row)}" for row in rows]) + "\n]\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    raise TypeError(f"{type(value).__name__} is not JSON")


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, output: str = "table",
         name_column: str = "name") -> None:
    """Print rows in one write (a listing of 100k rows must not be 100k writes)."""
    if output == "json":
        click.echo(_json_lines(rows), nl=False)
        return
    if output == "yaml":
        import yaml  # only here: ~8 ms of every listing's start otherwise

        click.echo(yaml.safe_dump([_machine_cell(row) for row in rows], sort_keys=False,
                                  allow_unicode=True), nl=False)
        return
    if output == "name":
        click.echo("".join(f"{row[name_column]}\n" for row in rows), nl=False)
        return
    # Column by column, each row then one format call: a third of the per-cell version's time
    # on 100k rows (bench/bench_cli_scale.py).
    _write_table({c: [row.get(c) for row in rows] for c in columns}, ())


@contextmanager
def many_rows() -> Iterator[None]:
    """The cyclic garbage collector paused while a long listing is read and printed: its rows
    are a few tuples each, none in a cycle, and a collection every 700 of them scanned them all
    again and again. (``fxctl secrets list --all`` of 100k on the embedded store: 1.16 to 0.93 s
    as a table, 0.87 to 0.78 s as JSON; interleaved runs, load 1.0.)"""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def emit_columns(columns: Mapping[str, Sequence[Any]], shown: Sequence[str], *, output: str,
                 times: Collection[str] = (), name_column: str = "name") -> None:
    """``emit`` for a listing handed over column by column, as long as it may be (the rows of
    ``fxctl secrets list --all``): each column is made into text at once, and every row then in
    one call. Cells are text, whole numbers, booleans or None; the columns in ``times`` hold
    ISO 8601 text, printed as it is by machine formats and as ages in tables. Machine formats
    show every column, tables those in ``shown``. (Measured with the store's rows it prints:
    see storage.secret_store.ListedSecret.)"""
    if output == "table":
        _write_table({c: columns[c] for c in shown}, times)
    elif output == "json":
        _write_json(columns)
    elif output == "name":
        sys.stdout.write("".join([f"{v}\n" for v in columns[name_column]]))
    else:
        keys = list(columns)
        emit([dict(zip(keys, row, strict=True)) for row in zip(*columns.values(), strict=True)],
             shown, output=output, name_column=name_column)


def _write_table(columns: Mapping[str, Sequence[Any]], times: Collection[str]) -> None:
    if not next(iter(columns.values()), None):
        sys.stdout.write("(none)\n")
        return
    now = datetime.now(UTC)
    texts = [_ages(values, now) if c in times else _text_column(values, now)
             for c, values in columns.items()]
    widths = [max(len(c), *map(len, column)) for c, column in zip(columns, texts, strict=True)]
    line = "  ".join([*(f"{{:<{w}}}" for w in widths[:-1]), "{}"])
    lines = [line.format(*(c.upper() for c in columns)), *map(line.format, *texts)]
    sys.stdout.write("\n".join(map(str.rstrip, lines)) + "\n")


def _text_column(values: Sequence[Any], now: datetime) -> Sequence[str]:
    kinds = set(map(type, values))
    if kinds == {str}:
        return values
    if kinds == {int}:
        return list(map(str, values))
    return [_table_cell(v, now) for v in values]


def _ages(times: Sequence[str | None], now: datetime) -> list[str]:
    """Ages of ISO 8601 times, worked out once for a run of equal ones: a listing's rows are in
    owner and name order, and an import's share one time. (``fxctl secrets list --all`` of 100k
    as a table, embedded store: 0.75 to 0.68 s, interleaved runs. When all 100k times differ it
    costs nothing: 0.075 s against 0.083 for the ages alone; a dict of the distinct times,
    tried first, cost 0.05 s more then.)"""
    parse = datetime.fromisoformat
    ages = []
    last: object = object()  # equal to no time
    text = ""
    for then in times:
        if then != last:
            last, text = then, "" if then is None else age(parse(then), now)
        ages.append(text)
    return ages


def _write_json(columns: Mapping[str, Sequence[Any]]) -> None:
    """The text ``_json_lines`` writes, a column at a time: strings by the C escaper json.dumps
    uses, the rest by the encoder; each row then joined from its parts. (Against one
    ``str.format`` per row: 0.745 to 0.703 s for ``fxctl secrets list --all -o json`` of 100k,
    embedded store, interleaved runs. Tables gained nothing by it, 0.643 against 0.656 s: they
    keep the format.)"""
    if not next(iter(columns.values()), None):
        sys.stdout.write("[]\n")
        return
    parts: list[Iterable[str]] = []
    for index, (key, values) in enumerate(columns.items()):
        parts += [repeat(f"{'  {' if index == 0 else ', '}{json.dumps(key)}: "),
                  _json_column(values)]
    rows = map("".join, zip(*parts, strict=False))
    sys.stdout.write("[\n" + "},\n".join(rows) + "}\n]\n")


def _json_column(values: Sequence[Any]) -> Iterable[str]:
    kinds = set(map(type, values))
    if kinds == {str}:
        return map(encode_basestring_ascii, values)
    if kinds == {bool}:
        return ["true" if v else "false" for v in values]
    if kinds == {int}:
        return map(str, values)
    return map(json.JSONEncoder(default=_json_default).encode, values)
