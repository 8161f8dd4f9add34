"""Entry point of ``fxctl``: ``--version`` answers at once, anything else loads the commands.

``fxctl --version`` imports nothing but this module and ``fx_operator``: click alone costs more
than the interpreter's own start (17 ms of 74 ms before this, on a loaded machine; the version
now answers in 1.6x ``python -c pass``, bench/bench_cli.py, against 6.7x).
"""

from __future__ import annotations

import sys

from fx_operator import __version__

TYPE_CHECKING = False  # importing typing costs 3-4 ms (with what it imports): annotations only
if TYPE_CHECKING:
    from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Run fxctl (see ``fx_operator.cli.app``)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        sys.stdout.write(f"fxctl, version {__version__}\n")  # as click's version option says it
        return
    from fx_operator.cli.app import run

    run(argv)


def __getattr__(name: str) -> Any:
    """``cli`` and the rest of the command group, for callers that name them here. Dunder
    names are never forwarded: the import system probes ``__path__`` on every import."""
    if name.startswith("__"):
        raise AttributeError(name)
    from fx_operator.cli import app

    return getattr(app, name)
