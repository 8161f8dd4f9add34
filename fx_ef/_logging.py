"""``context.logging``: the package's logger, writing to stderr.

In a run the executor masks the script's whole stderr, so records go out as they are. In local
mode no executor watches, so the formatter masks every local secret's value itself (the same
``fx_ef.masking.Masker``). Imported on first use of ``context.logging`` only.
"""

from __future__ import annotations

import logging
import sys

from fx_ef.masking import Masker

LOGGER_NAME = "fx_ef.package"
FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, as test capture and redirects expect."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # logging's convention: report through handleError, never raise
            self.handleError(record)


class _MaskingFormatter(logging.Formatter):
    """Formats as usual, then masks the whole text, traceback included."""

    def __init__(self, masker: Masker) -> None:
        super().__init__(FORMAT)
        self._masker = masker

    def format(self, record: logging.LogRecord) -> str:
        return self._masker.mask(super().format(record))


def package_logger(masker: Masker | None) -> logging.Logger:
    """The package's logger with one handler of ours (replacing one a previous context added)."""
    logger = logging.getLogger(LOGGER_NAME)
    remove_handlers(logger)
    handler = _StderrHandler()
    handler.setFormatter(_MaskingFormatter(masker) if masker else logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a script that configures the root logger would print it twice
    return logger


def remove_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
            handler.close()
