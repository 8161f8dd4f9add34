"""What ``context.secrets`` and ``context.state`` need of the context that owns them.

A type only, imported under ``TYPE_CHECKING``: ``_secrets`` and ``_state`` name it rather than
``Context``, so that neither imports the module that imports them (no import cycle; checked by
the ``runtime-acyclic`` contract in ``.importlinter``). ``fx_ef._context.Context`` fits it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fx_ef._rundata import RunData


class RunOwner(Protocol):
    """The context as its parts see it: its environment, its run's data, and one callback."""

    @property
    def _environ(self) -> Mapping[str, str]: ...

    def _load(self) -> RunData:
        """The run's data, read on first use and kept for the process."""
        ...

    def _secret_written(self, name: str, value: Any) -> None:
        """A value set in this process, to mask from now on where the context masks."""
        ...
