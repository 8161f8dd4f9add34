"""When a failed run is tried again: pure decisions over an Execution's spec and status.

The shape a Kubernetes user meets is ``spec.retries: {limit, backoffSeconds}`` on an Execution,
a Package (the default of its runs) and a Schedule (copied into each Execution it makes). An
object rather than a bare ``retries: 3`` because the count and its backoff travel together and
are inherited field by field (an Execution may set ``limit`` and keep its Package's backoff);
the names are Argo's ``retryStrategy.limit`` and a Job's backoff, in seconds as everywhere else
in our CRDs. The rules are the Job controller's, so a platform team's intuition carries over:

* ``limit``: how many times a failed run is tried again (0..10, default 0, as ``backoffLimit``
  counts retries, not tries): ``limit + 1`` tries at most.
* ``backoffSeconds``: the wait after the first failed try (default 10, as the Job controller's);
  it doubles after each further failure and never exceeds an hour.
* Only a run that started and failed is retried: the script's non-zero exit, a pod or Job
  failure, a delivery the init step could not finish, the try's deadline. A refusal at
  admission (a secret missing, a Package not usable, a bad spec) is final: trying again cannot
  change it.

Each try is a new run (its own run id, one-time key and Job: ``job_spec.run_id`` and
``job_spec.job_name``), so a key is never handed out twice. Everything the operator needs to go
on is in the Execution's status (``tries``, ``nextTryAt``, ``retryPolicy``): an operator that
restarts between two tries starts exactly the one next try, derived from the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fx_operator.domain.conditions import FAILED, FINAL_PHASES, Reason
from fx_operator.exceptions import Problem, ValidationError

LIMIT_MAX = 10
BACKOFF_MAX_SECONDS = 3600
DEFAULT_BACKOFF_SECONDS = 10
#: A failed try with one of these reasons is tried again while the limit allows.
RETRYABLE = frozenset({Reason.SCRIPT_FAILED, Reason.POD_FAILED, Reason.DELIVERY_FAILED,
                       Reason.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failed run of an Execution is tried again, and how long it waits first."""

    limit: int = 0
    backoff_seconds: int = DEFAULT_BACKOFF_SECONDS

    @property
    def max_tries(self) -> int:
        return self.limit + 1

    @classmethod
    def inherited(cls, *layers: Mapping[str, Any] | None) -> RetryPolicy:
        """Each field from the first layer that sets it (the Execution's ``spec.retries``, then
        its Package's), else the default. Layers are checked with :func:`check_retries`."""
        limit = next((layer["limit"] for layer in layers
                      if layer and layer.get("limit") is not None), 0)
        backoff = next((layer["backoffSeconds"] for layer in layers
                        if layer and layer.get("backoffSeconds") is not None),
                       DEFAULT_BACKOFF_SECONDS)
        return cls(int(limit), int(backoff))

    def as_status(self) -> dict[str, int]:
        return {"limit": self.limit, "backoffSeconds": self.backoff_seconds}

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RetryPolicy:
        """The policy recorded when the Execution's first try was admitted (none: no retries)."""
        recorded = status.get("retryPolicy")
        return cls.inherited(recorded if isinstance(recorded, Mapping) else None,
                             {"limit": 0})

    def backoff(self, failed_tries: int) -> timedelta:
        """The wait before the next try after ``failed_tries`` failures (1, 2, ...)."""
        doubled = self.backoff_seconds * (1 << min(max(failed_tries - 1, 0), 16))
        return timedelta(seconds=min(doubled, BACKOFF_MAX_SECONDS))

    def next_try(self, failed_try: int, reason: Reason | str) -> int | None:
        """The try that follows ``failed_try`` failing for ``reason``; None when it was the last
        (the limit reached, or a failure that trying again cannot change)."""
        if reason not in RETRYABLE or failed_try >= self.max_tries:
            return None
        return failed_try + 1


def check_retries(value: Any, field: str) -> list[Problem]:
    """The problems of one ``retries`` object (what the CRD's bounds refuse, for a manifest that
    reached the operator some other way); each names its field."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [Problem(field, "must be an object: {limit, backoffSeconds}")]
    problems = [Problem(f"{field}.{key}", "unknown field (known: limit, backoffSeconds)")
                for key in value if key not in ("limit", "backoffSeconds")]
    for key, top in (("limit", LIMIT_MAX), ("backoffSeconds", BACKOFF_MAX_SECONDS)):
        number = value.get(key)
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= top:
            problems.append(Problem(f"{field}.{key}", f"must be a whole number from 0 to {top}, "
                                                      f"got {number!r}"))
    return problems


def parse_retries(value: Any, field: str = "spec.retries") -> dict[str, int] | None:
    """One ``retries`` object, checked; a ValidationError names every bad field."""
    if problems := check_retries(value, field):
        raise ValidationError(problems)
    return dict(value) if value is not None else None


# --- the tries as an Execution's status records them -----------------------------------------


def tries_of(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tries so far, oldest first. A status written before tries were recorded (an
    Execution admitted by an older operator) is its run id's one try."""
    recorded = status.get("tries")
    if isinstance(recorded, list) and recorded:
        return [dict(t) for t in recorded if isinstance(t, Mapping)]
    if status.get("runId"):
        phase = status.get("phase")
        return [{"try": 1, "runId": status["runId"], "jobName": status.get("jobName"),
                 "phase": phase if phase in FINAL_PHASES else "Pending"}]
    return []


def current_try(status: Mapping[str, Any]) -> int:
    """The number of the latest try (1 before any was admitted)."""
    tries = tries_of(status)
    return int(tries[-1].get("try", len(tries))) if tries else 1


def try_ended(status: Mapping[str, Any]) -> bool:
    """Whether the latest try has ended (the Execution may still go on with another)."""
    if status.get("phase") in FINAL_PHASES:
        return True
    tries = tries_of(status)
    return bool(tries) and tries[-1].get("phase") in FINAL_PHASES


def awaiting_next_try(status: Mapping[str, Any]) -> bool:
    """A try failed and the next is due at ``status.nextTryAt``: nothing runs meanwhile."""
    return bool(status.get("nextTryAt")) and status.get("phase") not in FINAL_PHASES


def try_to_admit(status: Mapping[str, Any]) -> int | None:
    """The try the Execution's admission (on create, or on the operator's resume) stands for:
    the latest one, admitted again idempotently; None while the next try waits for its time
    (that one is started when due, not by a resume)."""
    if awaiting_next_try(status):
        return None
    return current_try(status)


def seconds_until_next_try(status: Mapping[str, Any], now: datetime) -> float:
    """How long before the due next try may start (0 when due, or when the time is unreadable)."""
    text = status.get("nextTryAt")
    try:
        due = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    return max(0.0, (due - now).total_seconds())


def failed_try_entry(status: Mapping[str, Any], *, reason: Reason | str, exit_code: int | None,
                     started: str | None, finished: str) -> dict[str, Any]:
    """The latest try's record, ended in failure."""
    entry = _latest_entry(status)
    entry.update(phase=FAILED, reason=str(reason), finishedAt=finished)
    if started and "startedAt" not in entry:
        entry["startedAt"] = started
    if exit_code is not None:
        entry["exitCode"] = exit_code
    return {key: value for key, value in entry.items() if value is not None}


def _latest_entry(status: Mapping[str, Any]) -> dict[str, Any]:
    tries = tries_of(status)
    if tries:
        return dict(tries[-1])
    return {"try": 1, "runId": status.get("runId"), "jobName": status.get("jobName")}


def with_latest(status: Mapping[str, Any], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tries with ``entry`` in place of (or after) the one of the same number."""
    number = entry.get("try")
    return [*(t for t in tries_of(status) if t.get("try") != number), dict(entry)]
