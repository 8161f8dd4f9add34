"""What a running package may ask of the store through its channel, and its recorded results.

The local channel (``fxctl run``) and the broker (in a cluster) both call this service, so the
tenancy rules (P5) are written once: a run writes only its own project's scope, and platform scope
only when the operator's configuration allows it for that run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fx_ef import contract
from fx_operator.domain.channel_requests import StateWrite
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.domain.secrets_file import validate_name, validate_value
from fx_operator.exceptions import NotFoundError, PermissionDeniedError, Problem, ValidationError
from fx_operator.services.package_state import PackageStateService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import run_records
from fx_operator.storage.run_records import RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunGrant:
    """Who is asking: one run of one package of one project, and what it was allowed."""

    run_id: str
    project: str
    package: str
    allow_platform_write: bool = False

    @property
    def actor(self) -> str:
        return f"run:{self.run_id}"


class RunService:
    def __init__(self, secrets: SecretService) -> None:
        self.secrets = secrets
        self.store = secrets.store
        self.state = PackageStateService(secrets.store, secrets.keys)

    def set_secret(self, grant: RunGrant, name: str, value: Any, scope: str) -> int:
        """``context.secrets.set`` from a script: project scope of its own project, or platform."""
        if scope not in contract.WRITABLE_SCOPES:
            raise ValidationError(Problem("scope", f"must be one of {contract.WRITABLE_SCOPES}, "
                                          f"got {scope!r}"), source="secret write")
        validate_name(name)
        validate_value(name, value)
        if scope == Scope.PLATFORM.value and not grant.allow_platform_write:
            log.warning("refused platform write of %s by run %s of %s/%s", name, grant.run_id,
                        grant.project, grant.package)
            raise PermissionDeniedError(
                f"run {grant.run_id} of package {grant.package!r} may not write platform scope "
                "(the operator's configuration does not allow it for this package)")
        owner = (Owner.of(Scope.PLATFORM) if scope == Scope.PLATFORM.value
                 else Owner.of(Scope.PROJECT, grant.project))
        return self.secrets.set(owner, name, value, run_id=grant.run_id, actor=grant.actor)

    def get_state(self, grant: RunGrant) -> dict[str, Any]:
        """The run's package's whole state (bounded by ``domain.state_limits``)."""
        return self.state.get(grant.project, grant.package)

    def put_state(self, grant: RunGrant, write: StateWrite) -> None:
        """One key of the run's package's state; nothing is answered back (a put returning the
        whole state let one run hold the operator's memory with every write)."""
        self.state.put(grant.project, grant.package, write.key, write.encoded, grant.run_id)

    def record_result(self, record: RunRecord) -> None:
        with self.store.transaction() as tx:
            run_records.add_run(tx, record)

    def result(self, run_id: str) -> RunRecord:
        with self.store.transaction() as tx:
            record = run_records.get_run(tx, run_id)
        if record is None:
            raise NotFoundError(f"no run {run_id!r} in this store")
        return record

    def recent(self, *, project: str | None = None, package: str | None = None,
               limit: int = 20) -> list[RunRecord]:
        with self.store.transaction() as tx:
            return run_records.recent_runs(tx, project=project, package=package, limit=limit)
