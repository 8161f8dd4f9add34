"""Errors raised by the operator, the store and the CLI, and what each one means.

Each class says, once, what its errors mean to everyone who meets them (``FxError``'s
attributes): the condition ``reason`` an object gets, whether and when retrying can help
(``retry_after``), the HTTP status a server answers with, and fxctl's exit code. Handlers,
servers and the CLI read these; nobody matches messages or climbs ``isinstance`` ladders.

The tree (every class; ``tests/unit/test_exceptions.py`` holds it to the code)::

    FxError                       every error of ours; ``str()`` is a message fit for a user
    ├── ConfigError               a setting is missing or unusable
    ├── MasterKeyError            the master key is missing, malformed or not the store's key
    ├── IntegrityError            a ciphertext does not open: tampered, copied or under another key
    │   └── SealedForAnotherObject    (domain.sealing) a sealed value opens for another object
    ├── ValidationError           bad input (a secrets.json, a name, a scope); carries ``problems``
    │   ├── StateLimitError       (domain.state_limits) a state write beyond a size limit
    │   └── InvalidResource       (domain.resources) an object its kind's schema refuses
    ├── NotFoundError             a secret, version or run that does not exist
    ├── PermissionDeniedError     a run asked for what its tenancy does not allow (P5)
    │   └── RunRefused            (services.run_keys) a run key asked twice, or by another pod
    ├── RunError                  a package folder or a run could not be prepared or started
    ├── NotReadyYet               (services.executions) what an Execution needs is being set up
    ├── PackageNotUsable          (services.executions) the Package exists but cannot run
    ├── KubeError                 (storage.kube) the API server refused or failed a call
    │   └── KubeNotFound          (storage.kube) the object does not exist (any more)
    └── StoreError                the store failed (connection, migration); may be retried
        ├── ConflictError         a concurrent write won; retry the operation
        ├── ConnectionLostError   the connection broke before the commit: nothing was written
        └── CommitUnknownError    the connection broke during the commit: written or not

Messages never carry a secret value: they name keys, scopes and versions only.
"""

from __future__ import annotations

from dataclasses import dataclass

from fx_operator.domain.conditions import Reason

#: fxctl's exit codes: an error, and input that was refused (as click's usage errors).
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class FxError(Exception):
    """Base of every error this project raises on purpose; its attributes say what it means."""

    #: The condition reason of an object refused or failed with this error; None: the reason
    #: of the object's own kind (InvalidSpec, InvalidSecret, ...).
    reason: Reason | None = None
    #: Seconds after which the same operation may well succeed; None: retrying does not help.
    retry_after: float | None = None
    #: What a server (the broker, the local channel) answers.
    http_status: int = 500
    #: fxctl's exit code.
    exit_code: int = EXIT_FAILURE

    def after_retries(self) -> str:
        """The error, said once retrying it has stopped helping."""
        return f"retrying did not help: {self}"


class ConfigError(FxError):
    """A setting is missing or cannot be used."""


class MasterKeyError(FxError):
    """The master key is missing, malformed, or is not the key the store was written with."""


class IntegrityError(FxError):
    """A blob failed authentication: altered, moved to another row or owner, or the key is wrong."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a key or field) and what; ``reason`` when this
    problem has a condition reason of its own (a Package's missing entrypoint, say)."""

    where: str
    what: str
    reason: Reason | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


class ValidationError(FxError):
    """Input was rejected; ``problems`` lists each offending key or field with what is wrong."""

    http_status = 400
    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: list[Problem] | Problem, *, source: str = "input") -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.source = source
        self.reason = next((p.reason for p in self.problems if p.reason is not None), None)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"invalid {self.source}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"invalid {self.source} ({len(self.problems)} problems):\n{lines}"


class NotFoundError(FxError):
    """The thing asked for does not exist."""

    http_status = 404


class PermissionDeniedError(FxError):
    """A run asked to read or write outside what its project and configuration allow."""

    http_status = 403


class RunError(FxError):
    """A package could not be run: its folder, its entrypoint or a run step is unusable."""


class StoreError(FxError):
    """The store failed; the operation may be retried."""

    reason = Reason.STORE_UNAVAILABLE
    retry_after = 10.0
    http_status = 503

    def after_retries(self) -> str:
        return f"the secret store kept failing: {self}"


class ConflictError(StoreError):
    """A concurrent writer got there first; retrying the operation is safe."""


class ConnectionLostError(StoreError):
    """The connection to PostgreSQL broke before the transaction's commit was sent (the server
    crashed or failed over): nothing was written, and retrying the operation is safe."""


class CommitUnknownError(StoreError):
    """The connection broke while the commit was on its way: the write may or may not have
    been applied. Never report it as done; retry only an operation that is idempotent."""
