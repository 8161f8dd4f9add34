"""Progress of long work on stderr: click's progress bar on a terminal, plain lines otherwise.

A bar redrawn in place is for people; a log or a pipeline gets a few whole lines it can keep
(at each tenth of the work), never carriage returns. Small work shows nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar  # what click.progressbar returns

Report = Callable[[int, int], None]
"""Called with how many items are done so far, and how many there are in all."""


@contextmanager
def progress(label: str, *, at_least: int) -> Iterator[Report]:
    """A ``Report`` that shows progress once it is told of ``at_least`` items in all."""
    with ExitStack() as stack:
        bar: ProgressBar[int] | None = None
        shown = 0
        terminal = sys.stderr.isatty()

        def report(done: int, total: int) -> None:
            nonlocal bar, shown
            if total < at_least:
                return
            if terminal:
                if bar is None:
                    bar = stack.enter_context(click.progressbar(
                        length=total, label=label, file=sys.stderr, show_pos=True))
                bar.update(done - bar.pos)
                return
            tenth = done * 10 // total
            if tenth > shown:
                shown = tenth
                click.echo(f"{label}: {done}/{total} ({tenth * 10}%)", err=True)

        yield report


@contextmanager
def phases(label: str, limit_seconds: float) -> Iterator[Callable[[str, float], None]]:
    """Show waiting work's phase: on a terminal a bar over the time allowed, with the phase and
    the seconds waited; otherwise a line each time the phase changes."""
    if sys.stderr.isatty():
        with click.progressbar(length=max(1, int(limit_seconds)), label=label, file=sys.stderr,
                               show_eta=False, show_percent=False,
                               item_show_func=lambda item: item) as bar:
            def show_on_bar(phase: str, waited: float) -> None:
                bar.update(max(0, int(waited) - bar.pos), f"{phase}, {int(waited)}s")

            yield show_on_bar
        return
    last: str | None = None

    def show_as_line(phase: str, _waited: float) -> None:
        nonlocal last
        if phase != last:
            last = phase
            click.echo(f"{label}: {phase}", err=True)

    yield show_as_line
