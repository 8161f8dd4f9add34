"""The ``Context`` a script reads its run through, and the module-level ``context`` instance.

Nothing is read when this module is imported: the run's data is loaded on first use (from the
bundle at ``$FX_BUNDLE``, or from ``ef_env.json`` when ``EF_ENV=local``) and cached for the
process. Only ``os`` is imported here; the readers, the channel and logging come on first use.
"""

from __future__ import annotations

import os

from fx_ef._secrets import Secrets
from fx_ef._state import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from logging import Logger
    from typing import Any

    from fx_ef._rundata import Package, RunData
    from fx_ef.masking import Masker


class Context:
    """A run's context: ``secrets``, ``params``, ``config``, ``package``, ``state``, ``logging``.

    Scripts use the shared ``fx_ef.context``; tests build their own from an environment mapping
    and a working directory, or call ``_reset()`` on the shared one.
    """

    __slots__ = ("_cwd", "_data", "_environ", "_logger", "_masker", "secrets", "state")

    def __init__(self, environ: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._cwd = None if cwd is None else os.fspath(cwd)  # None: the directory at first use
        self._data: RunData | None = None
        self._logger: Logger | None = None
        self._masker: Masker | None = None
        self.secrets = Secrets(self)
        self.state = State(self)

    def _load(self) -> RunData:
        """The run's data, read on first use and kept for the process."""
        data = self._data
        if data is None:
            from fx_ef._rundata import load

            data = load(self._environ, self._cwd)
            self._data = data
            self.secrets._values = data.secrets
        return data

    def _reset(self) -> None:
        """Forget everything read so far (tests; a script never needs this)."""
        self._data = None
        self.secrets._values = None
        self._masker = None
        if self._logger is not None:
            from fx_ef._logging import remove_handlers

            remove_handlers(self._logger)
            self._logger = None

    def _secret_written(self, name: str, value: Any) -> None:
        """A value set in this process: local-mode logging masks it from now on."""
        if self._masker is not None:
            self._masker.add(name, value)

    @property
    def params(self) -> dict[str, Any]:
        """The run's params, with ``package_name``, ``package_id`` and ``execution_id``."""
        return self._load().params

    parameters = params

    @property
    def config(self) -> dict[str, Any]:
        """The package's configuration."""
        return self._load().config

    @property
    def package(self) -> Package:
        """The package this script belongs to: ``.name``, ``.id`` (and ``.project``)."""
        return self._load().package

    @property
    def is_local_env(self) -> bool:
        """True when the context reads ``ef_env.json`` (EF_ENV=local and no run's bundle)."""
        from fx_ef import contract

        return (not self._environ.get(contract.ENV_BUNDLE)
                and self._environ.get(contract.ENV_LOCAL) == contract.LOCAL_ENV_VALUE)

    @property
    def logging(self) -> Logger:
        """The package's logger (stderr); in local mode it masks the local secrets' values."""
        logger = self._logger
        if logger is None:
            from fx_ef._logging import package_logger

            masker = None
            if self.is_local_env:
                from fx_ef.masking import Masker

                masker = Masker()
                for layer in (self._load().layers or {}).values():
                    for name, value in layer.items():
                        masker.add(name, value)
            logger = package_logger(masker)
            self._logger, self._masker = logger, masker
        return logger

    def __repr__(self) -> str:
        if self._data is None:
            return "<fx_ef context (not loaded yet)>"
        return f"<fx_ef context of {self._data.package.id!r}, from {self._data.source}>"


context = Context()


def get_secret(name: str) -> Any:
    """``context.secrets.get(name)``: the helper the original library offered."""
    return context.secrets.get(name)


def get_param(name: str) -> Any:
    """``context.params.get(name)``: the helper the original library offered."""
    return context._load().params.get(name)
