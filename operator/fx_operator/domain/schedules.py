"""When a Schedule makes an Execution: pure decisions over a clock the caller passes in.

The rules are Kubernetes CronJob's, so that a platform team's intuition carries over:

* The expression is standard cron: five fields, or a macro (``@hourly``, ``@daily``/``@midnight``,
  ``@weekly``, ``@monthly``, ``@yearly``/``@annually``), evaluated in an IANA time zone
  (default UTC) by croniter; no cron parsing of our own.
* After an outage (or a suspension) only the most recent missed time runs, and only if it is
  still within ``startingDeadlineSeconds``: at most one catch-up, never a burst. The others are
  reported as skipped.
* ``concurrencyPolicy``: Allow runs alongside; Forbid skips a time while a run is active; Replace
  stops the active runs and starts the new one.
* Daylight saving time, as cron does it: a wall time that does not exist (spring forward) runs at
  the first instant after the gap; a wall time that happens twice (fall back) runs once, unless
  the hour field is a wildcard (``@hourly``, ``*/2``), where every real hour counts.
* The Execution made for a time is named from that time (``<schedule>-<minutes since epoch>``,
  as CronJob names its Jobs): a restarted operator that decides again makes the same name, and
  the API server refuses the duplicate.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fx_operator.domain.nesting import too_deep
from fx_operator.domain.retries import check_retries
from fx_operator.exceptions import Problem, ValidationError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: Missed times counted for the "skipped" report; beyond this the count says "more than".
MISSED_COUNT_CAP = 100
#: Retries: the first retry after 10 s, doubling, at most 6 minutes (the Job controller's backoff).
RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(minutes=6)


class ConcurrencyPolicy(enum.StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class Action(enum.StrEnum):
    WAIT = "Wait"          # nothing due: decide again at ``next_time``
    CREATE = "Create"      # make the Execution for ``time``
    REPLACE = "Replace"    # stop the active Executions, then make the one for ``time``
    SKIP = "Skip"          # ``time`` will not run (``reason``); record it as handled


@dataclass(frozen=True)
class CronSchedule:
    """A validated expression in its time zone."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, time_zone: str | None = None, *,
              field: str = "spec.schedule") -> CronSchedule:
        text = " ".join(expression.split())
        standard = MACROS.get(text.lower(), text)
        if standard.startswith("@"):
            raise ValidationError(Problem(field, f"{expression!r}: unknown macro (one of "
                                                 f"{', '.join(sorted(MACROS))})"))
        if len(standard.split(" ")) != 5:
            raise ValidationError(Problem(field, f"{expression!r}: five fields (minute hour "
                                                 "day-of-month month day-of-week) or a macro"))
        try:  # a time that never comes (31 February) is refused here, not at the first decision
            croniter(standard, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except (CroniterError, ValueError, KeyError) as e:
            raise ValidationError(Problem(field, f"{expression!r}: {e}")) from None
        return cls(standard, zone_named(time_zone or "UTC"))

    @property
    def hour_is_wildcard(self) -> bool:
        return self.expression.split(" ")[1].startswith("*")

    def _iterator(self, start: datetime) -> croniter:
        return croniter(self.expression, start.astimezone(self.zone))

    def _counts(self, when: datetime) -> bool:
        """False for the second pass through a repeated wall time (see the module's rules).

        The instant decides, not croniter's ``fold`` (which it also sets on unambiguous times
        when iterating backwards): converted back from UTC, ``fold`` is 1 only on the second
        pass through a wall time that happens twice.
        """
        local = when.astimezone(UTC).astimezone(self.zone)
        repeated = local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()
        return not (repeated and local.fold) or self.hour_is_wildcard

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after ``moment`` (UTC)."""
        iterator = self._iterator(moment)
        while True:
            when: datetime = iterator.get_next(datetime)
            if self._counts(when):
                return when.astimezone(UTC)

    def latest_in(self, after: datetime, until: datetime) -> tuple[datetime | None, int]:
        """The most recent scheduled time in ``(after, until]`` and how many there were (the
        count stops at ``MISSED_COUNT_CAP + 1``)."""
        iterator = self._iterator(until + timedelta(microseconds=1))
        latest: datetime | None = None
        count = 0
        while count <= MISSED_COUNT_CAP:
            when: datetime = iterator.get_prev(datetime)
            if when.astimezone(UTC) <= after:
                break
            if not self._counts(when):
                continue
            latest = latest or when.astimezone(UTC)
            count += 1
        return latest, count


def zone_named(name: str, *, field: str = "spec.timeZone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(Problem(field, f"{name!r} is not an IANA time zone (e.g. "
                                             "Europe/Berlin, UTC)")) from None


@dataclass(frozen=True)
class Decision:
    action: Action
    time: datetime | None       # the scheduled time acted on (Create, Replace, Skip)
    next_time: datetime         # when to decide again
    reason: str = ""            # why a time was skipped, or what else was skipped with it


def decide(schedule: CronSchedule, *, now: datetime, last: datetime | None, created: datetime,
           active: int, policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
           deadline_seconds: int | None = None, suspended: bool = False) -> Decision:
    """What to do at ``now``, given the last time handled (``status.lastScheduleTime``)."""
    next_time = schedule.next_after(now)
    if suspended:
        return Decision(Action.WAIT, None, next_time, "suspended")
    due, count = schedule.latest_in(last or created, now)
    if due is None:
        return Decision(Action.WAIT, None, next_time)
    earlier = count - 1
    note = ""
    if earlier:
        many = f"more than {MISSED_COUNT_CAP}" if count > MISSED_COUNT_CAP else str(earlier)
        note = f"{many} earlier missed time(s) not run (at most one catch-up)"
    if deadline_seconds is not None and now - due > timedelta(seconds=deadline_seconds):
        late = int((now - due).total_seconds())
        reason = (f"missed by {late}s, past startingDeadlineSeconds={deadline_seconds}"
                  + (f"; {note}" if note else ""))
        return Decision(Action.SKIP, due, next_time, reason)
    if active and policy is ConcurrencyPolicy.FORBID:
        reason = f"{active} run(s) still active and concurrencyPolicy is Forbid"
        return Decision(Action.SKIP, due, next_time, reason + (f"; {note}" if note else ""))
    action = Action.REPLACE if active and policy is ConcurrencyPolicy.REPLACE else Action.CREATE
    return Decision(action, due, next_time, note)


def execution_name(schedule_name: str, time: datetime) -> str:
    """The Execution for one scheduled time: the same name however often it is decided."""
    return f"{schedule_name}-{int(time.timestamp()) // 60}"


@dataclass(frozen=True)
class Finished:
    name: str
    succeeded: bool
    finished_at: datetime


def to_prune(finished: Sequence[Finished], *, keep_succeeded: int,
             keep_failed: int) -> list[str]:
    """The finished Executions beyond the history limits, oldest first."""
    doomed: list[Finished] = []
    for outcome, keep in ((True, keep_succeeded), (False, keep_failed)):
        same = sorted((f for f in finished if f.succeeded is outcome),
                      key=lambda f: (f.finished_at, f.name), reverse=True)
        doomed.extend(same[keep:])
    return [f.name for f in sorted(doomed, key=lambda f: (f.finished_at, f.name))]


def retry_delay(failed_tries: int) -> timedelta:
    """How long to wait before the next try after ``failed_tries`` failures (1, 2, ...)."""
    if failed_tries < 1:
        return timedelta(0)
    return min(RETRY_CAP, RETRY_BASE * (1 << min(failed_tries - 1, 16)))


# --- a Schedule resource's spec ------------------------------------------------------------------


class ScheduleSpec(BaseModel):
    """``Schedule.spec`` as the CRD describes it; parsed once, its problems named by field."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    package: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    schedule: str = Field(min_length=1, max_length=128)
    time_zone: str | None = Field(default=None, alias="timeZone", max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int | None = Field(default=None, alias="timeoutSeconds", ge=1, le=604800)
    #: Each Execution's ``spec.retries`` (``domain.retries``), copied as written.
    retries: dict[str, Any] | None = None
    concurrency_policy: ConcurrencyPolicy = Field(default=ConcurrencyPolicy.ALLOW,
                                                  alias="concurrencyPolicy")
    starting_deadline_seconds: int | None = Field(default=None, alias="startingDeadlineSeconds",
                                                  ge=0)
    suspend: bool = False
    successful_history: int = Field(default=3, alias="successfulExecutionsHistoryLimit", ge=0,
                                    le=100)
    failed_history: int = Field(default=1, alias="failedExecutionsHistoryLimit", ge=0, le=100)

    @property
    def cron(self) -> CronSchedule:
        return CronSchedule.parse(self.schedule, self.time_zone)


def parse_schedule_spec(spec: Any) -> ScheduleSpec:
    """A Schedule's spec, checked as the API server cannot: cron, time zone, params' depth."""
    if not isinstance(spec, dict):
        raise ValidationError(Problem("spec", "must be an object"), source="Schedule")
    deep = too_deep(spec.get("params"))
    if deep:
        raise ValidationError(Problem("spec.params", deep), source="Schedule")
    if retry_problems := check_retries(spec.get("retries"), "spec.retries"):
        raise ValidationError(retry_problems, source="Schedule")
    try:
        parsed = ScheduleSpec.model_validate(spec)
    except PydanticValidationError as e:
        problems = [Problem("spec." + ".".join(str(p) for p in error["loc"]), str(error["msg"]))
                    for error in e.errors()]
        raise ValidationError(problems, source="Schedule") from None
    try:
        parsed.cron  # noqa: B018 - parsed for its errors (spec.schedule, spec.timeZone)
    except ValidationError as e:
        raise ValidationError(e.problems, source="Schedule") from None
    return parsed
