"""Listings written a column at a time (``emit_columns``) print exactly what the row-by-row
writer (``emit``) prints for the same rows, in every format."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from typing import Any

from fx_operator.cli.output import FORMATS, emit, emit_columns
from hypothesis import given, settings
from hypothesis import strategies as st

COLUMNS = ("name", "scope", "version", "deleted", "created", "by", "note")
SHOWN = ("name", "scope", "version", "created", "by", "note")
# Ages are whole units of a time in the past: half a unit off each, so the moment each writer
# reads the clock never moves an age across a unit (their rows' times are whole seconds) -
# except seconds, which have no half in whole-second times: ``emit`` prints before and after,
# and the column writer's text must be one of the two (a second may tick between them).
UNITS = (1, 60, 3600, 86400, 365 * 86400)

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
pasts = st.builds(lambda n, unit: timedelta(seconds=n * unit + unit // 2 + 2),
                  st.integers(0, 40), st.sampled_from(UNITS))
rows = st.lists(st.tuples(texts, st.sampled_from(["package", "project"]), st.integers(1, 10**6),
                          st.booleans(), pasts, texts, st.none() | texts), max_size=8)


def _printed(write: Callable[[], None]) -> str:
    with redirect_stdout(io.StringIO()) as out:
        write()
    return out.getvalue()


@settings(max_examples=150, deadline=None)
@given(rows=rows, output=st.sampled_from(FORMATS))
def test_emit_columns_prints_what_emit_prints(rows: list[tuple[Any, ...]], output: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    times = [now - past for *_, past, _, _ in rows]
    as_rows = [dict(zip(COLUMNS, (*row[:4], then, *row[5:]), strict=True))
               for row, then in zip(rows, times, strict=True)]
    columns = {c: [r[c] for r in as_rows] for c in COLUMNS}
    columns["created"] = [then.isoformat() for then in times]
    before = _printed(lambda: emit(as_rows, SHOWN, output=output))
    printed = _printed(lambda: emit_columns(columns, SHOWN, output=output, times=("created",)))
    after = _printed(lambda: emit(as_rows, SHOWN, output=output))
    assert printed in (before, after)
