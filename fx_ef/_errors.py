"""The errors ``fx_ef`` raises on purpose, so a script can catch them by meaning.

::

    FxEfError                           base of every error below
    ├── NoRunContextError (RuntimeError)  neither a run's bundle nor EF_ENV=local: nothing to read
    ├── RunDataError (ValueError)         the bundle, ef_env.json or ef_state.json is unreadable or
    │                                     malformed; the message names the file and the problem
    ├── SecretWriteError                  ``context.secrets.set`` was refused or failed
    │   └── PlatformWriteNotAllowedError   this run may not write platform-scope secrets
    └── StateError                        ``context.state.get``/``put`` was refused or failed
        └── StateLimitError                 the put is larger than the operator keeps (413): a
                                            value's size, or the package's total size or keys

Wrong arguments raise the built-in ``TypeError`` / ``ValueError``. ``SecretWriteError`` and
``StateError`` carry the channel's HTTP ``status`` and the server's own ``server_message`` when the
server answered; both are ``None`` when it never did. No message ever contains a secret's value.
"""

from __future__ import annotations


class FxEfError(Exception):
    """Base class: ``except fx_ef.FxEfError`` catches every error the runtime raises on purpose."""


class NoRunContextError(FxEfError, RuntimeError):
    """The script runs outside a run (no ``FX_BUNDLE``) and not in local mode (no EF_ENV=local)."""


class RunDataError(FxEfError, ValueError):
    """A file the context reads is missing, unreadable or malformed."""


class _RequestError(FxEfError):
    """A write or read that went to the run's channel (or the local files) and failed."""

    def __init__(self, message: str, *, status: int | None = None,
                 server_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class SecretWriteError(_RequestError):
    """``context.secrets.set`` did not store the secret (or could not report it for masking)."""


class PlatformWriteNotAllowedError(SecretWriteError):
    """The run's bundle says it may not write platform scope; the server would refuse it too."""


class StateError(_RequestError):
    """Reading or updating the package's persistent state failed."""


class StateLimitError(StateError):
    """``context.state.put`` was refused for its size (413): the message names the key and the
    limit (a value's bytes, or the package's total bytes or number of keys)."""
