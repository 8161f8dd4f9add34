"""Errors raised by the operator, the store and the CLI.

The tree::

    FxError                       every error of ours; ``str()`` is a message fit for a user
    ├── ConfigError               a setting is missing or unusable
    ├── MasterKeyError            the master key is missing, malformed or not the store's key
    ├── IntegrityError            a ciphertext does not open: tampered, copied or under another key
    ├── ValidationError           bad input (a secrets.json, a name, a scope); carries ``problems``
    ├── NotFoundError             a secret, version or run that does not exist
    ├── PermissionDeniedError     a run asked for what its tenancy does not allow (P5)
    ├── RunError                  a package folder or a run could not be prepared or started
    └── StoreError                the store failed (connection, migration); may be retried
        ├── ConflictError         a concurrent write won; retry the operation
        ├── ConnectionLostError   the connection broke before the commit: nothing was written
        └── CommitUnknownError    the connection broke during the commit: written or not

Messages never carry a secret value: they name keys, scopes and versions only.
"""

from __future__ import annotations

from dataclasses import dataclass


class FxError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(FxError):
    """A setting is missing or cannot be used."""


class MasterKeyError(FxError):
    """The master key is missing, malformed, or is not the key the store was written with."""


class IntegrityError(FxError):
    """A blob failed authentication: altered, moved to another row or owner, or the key is wrong."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a key or field) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


class ValidationError(FxError):
    """Input was rejected; ``problems`` lists each offending key or field with what is wrong."""

    def __init__(self, problems: list[Problem] | Problem, *, source: str = "input") -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"invalid {self.source}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"invalid {self.source} ({len(self.problems)} problems):\n{lines}"


class NotFoundError(FxError):
    """The thing asked for does not exist."""


class PermissionDeniedError(FxError):
    """A run asked to read or write outside what its project and configuration allow."""


class RunError(FxError):
    """A package could not be run: its folder, its entrypoint or a run step is unusable."""


class StoreError(FxError):
    """The store failed; the operation may be retried."""


class ConflictError(StoreError):
    """A concurrent writer got there first; retrying the operation is safe."""


class ConnectionLostError(StoreError):
    """The connection to PostgreSQL broke before the transaction's commit was sent (the server
    crashed or failed over): nothing was written, and retrying the operation is safe."""


class CommitUnknownError(StoreError):
    """The connection broke while the commit was on its way: the write may or may not have
    been applied. Never report it as done; retry only an operation that is idempotent."""
