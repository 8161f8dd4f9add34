"""Status conditions and the reasons of conditions and Events, in one place. Pure.

A condition's ``lastTransitionTime`` moves only when its status flips; ``observedGeneration``
says which spec it describes. Reasons are CamelCase constants that users can alert on; messages
say what is wrong and how to fix it, and never carry a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

READY = "Ready"
#: A Package: whether every secret name its scripts read or it declares is set somewhere.
SECRETS_AVAILABLE = "SecretsAvailable"
SUCCEEDED = "Succeeded"
# An Execution's phases, and the two it never leaves.
PENDING, RUNNING, SUCCEEDED_PHASE, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINAL_PHASES = (SUCCEEDED_PHASE, FAILED)


class Reason(StrEnum):
    # Package
    SCRIPTS_PUBLISHED = "ScriptsPublished"
    INVALID_SPEC = "InvalidSpec"
    NO_ENTRYPOINT = "NoEntrypoint"
    SECRETS_FILE_IN_PACKAGE = "SecretsFileInPackage"
    SECRET_IN_SCRIPT = "SecretInScript"  # noqa: S105 (a reason, not a password)
    # ScopedSecret
    STORED = "Stored"
    PLATFORM_SCOPE_NOT_ALLOWED = "PlatformScopeNotAllowed"
    SEALED_FOR_ANOTHER_OBJECT = "SealedForAnotherObject"
    INVALID_SECRET = "InvalidSecret"  # noqa: S105
    REMOVED = "Removed"
    # Execution
    ADMITTED = "Admitted"
    JOB_CREATED = "JobCreated"
    PACKAGE_NOT_FOUND = "PackageNotFound"
    PACKAGE_NOT_READY = "PackageNotReady"
    SECRETS_DELIVERED = "SecretsDelivered"
    DELIVERY_FAILED = "DeliveryFailed"
    RUNNING = "Running"
    COMPLETED = "Completed"
    SCRIPT_FAILED = "ScriptFailed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    POD_FAILED = "PodFailed"
    SECRETS_SET = "SecretsSet"
    SECRET_MISSING = "SecretMissing"  # noqa: S105 (a reason, not a password)
    ALL_SECRETS_FORBIDDEN = "AllSecretsForbidden"
    RETRYING = "Retrying"  # a try failed; the next starts after its backoff
    # Schedule
    SCHEDULED = "Scheduled"
    SUSPENDED = "Suspended"
    EXECUTION_CREATED = "ExecutionCreated"
    EXECUTION_REPLACED = "ExecutionReplaced"
    RUN_SKIPPED = "RunSkipped"
    # any kind
    STORE_UNAVAILABLE = "StoreUnavailable"
    API_ERROR = "ApiError"


@dataclass(frozen=True)
class EventNote:
    """An Event to post about the object being handled."""

    type: str  # Normal or Warning
    reason: Reason
    message: str


@dataclass
class Outcome:
    """A status to write and Events to post, computed by a service for a handler to apply."""

    status: dict[str, Any]
    events: list[EventNote] = field(default_factory=list)
    ok: bool = True


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_condition(conditions: list[dict[str, Any]] | None, *, type_: str, ok: bool | None,
                   reason: Reason, message: str, generation: int | None,
                   now: str | None = None) -> list[dict[str, Any]]:
    """``conditions`` with ``type_`` set; the transition time kept unless the status flips."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    previous = next((c for c in conditions or [] if c.get("type") == type_), None)
    transition = (previous.get("lastTransitionTime") if previous is not None
                  and previous.get("status") == status else None) or now or now_iso()
    condition: dict[str, Any] = {"type": type_, "status": status, "reason": str(reason),
                                 "message": message, "lastTransitionTime": transition}
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [c for c in conditions or [] if c.get("type") != type_]
    return [*others, condition]


def mark_ready(previous: list[dict[str, Any]] | None, *, generation: int | None,
               reason: Reason, message: str, fields: Mapping[str, Any] | None = None,
               events: Sequence[EventNote] = ()) -> Outcome:
    """An object judged usable for ``generation``: Ready=True with ``reason`` and ``message``,
    beside its kind's own status ``fields``. Every reconciler (Package, ScopedSecret,
    Execution, Schedule) says it this way, so ``kubectl wait --for=condition=Ready`` means
    the same for each."""
    return Outcome({"observedGeneration": generation, **(fields or {}),
                    "conditions": with_condition(previous, type_=READY, ok=True, reason=reason,
                                                 message=message, generation=generation)},
                   list(events))


def mark_failed(previous: list[dict[str, Any]] | None, *, generation: int | None,
                reason: Reason, message: str, fields: Mapping[str, Any] | None = None,
                ended: bool = False) -> Outcome:
    """An object refused for ``generation``: Ready=False with the reason and message, and a
    Warning Event saying the same; ``ended`` also sets Succeeded=False (an Execution that will
    not run)."""
    conditions = with_condition(previous, type_=READY, ok=False, reason=reason,
                                message=message, generation=generation)
    if ended:
        conditions = with_condition(conditions, type_=SUCCEEDED, ok=False, reason=reason,
                                    message=message, generation=generation)
    return Outcome({"observedGeneration": generation, **(fields or {}),
                    "conditions": conditions}, [EventNote("Warning", reason, message)],
                   ok=False)
