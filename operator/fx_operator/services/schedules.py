"""Schedules: each scheduled time's Execution made once, skipped times reported, history pruned.

The decisions are the domain's (``domain/schedules.py``); this module reads what exists (the
Schedule's own Executions, found by label and checked by owner reference), acts, and says what
to write in the status. It is idempotent: the Execution for a time has a name derived from the
time, so deciding again after a crash or a stale read makes nothing twice (the API server
refuses the duplicate name, and that counts as made).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fx_operator.domain.api_group import API_VERSION, GROUP
from fx_operator.domain.conditions import (
    FINAL_PHASES,
    READY,
    SUCCEEDED_PHASE,
    EventNote,
    Outcome,
    Reason,
    mark_failed,
    with_condition,
)
from fx_operator.domain.resources import Schedule
from fx_operator.domain.schedules import (
    Action,
    Finished,
    ScheduleSpec,
    decide,
    execution_name,
    parse_schedule_spec,
    to_prune,
)
from fx_operator.exceptions import ValidationError
from fx_operator.storage.kube import Kube, KubeError

log = logging.getLogger(__name__)

SCHEDULE_LABEL = f"{GROUP}/schedule"
SCHEDULED_AT = f"{GROUP}/scheduled-at"
#: How long an invalid Schedule waits before it is looked at again (an edit wakes it sooner).
INVALID_RECHECK_SECONDS = 300.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    """A label anyone can set; the controller reference only the API server's owner can."""
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def bounded_execution_name(schedule: str, time: datetime) -> str:
    """``<schedule>-<minutes>``, within Kubernetes' 253 characters (long names keep a hash)."""
    name = execution_name(schedule, time)
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:8]
    return execution_name(f"{schedule[:230]}-{digest}", time)


def execution_body(schedule: dict[str, Any], spec: ScheduleSpec, *, name: str | None = None,
                   scheduled_at: datetime | None = None) -> dict[str, Any]:
    """An Execution of the Schedule (``schedule`` is its metadata): its Package and params,
    labelled with it and owned by it. Without ``name``, a generated ``<schedule>-manual-…``."""
    execution_spec: dict[str, Any] = {"package": spec.package}
    if spec.params:
        execution_spec["params"] = spec.params
    if spec.timeout_seconds is not None:
        execution_spec["timeoutSeconds"] = spec.timeout_seconds
    if spec.retries:
        execution_spec["retries"] = dict(spec.retries)
    metadata: dict[str, Any] = {
        "namespace": schedule["namespace"], "labels": {SCHEDULE_LABEL: schedule["name"]},
        "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Schedule",
                             "name": schedule["name"], "uid": schedule["uid"],
                             "controller": True}]}
    if name is not None:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{schedule['name']}-manual-"
    if scheduled_at is not None:
        metadata["annotations"] = {SCHEDULED_AT: _iso(scheduled_at)}
    return {"apiVersion": API_VERSION, "kind": "Execution", "metadata": metadata,
            "spec": execution_spec}


@dataclass(frozen=True)
class Look:
    """One look at a Schedule: what to write and post (None: nothing changed), and when to look
    again."""

    outcome: Outcome | None
    wait_seconds: float


class ScheduleService:
    def __init__(self, kube: Kube, clock: Callable[[], datetime] | None = None) -> None:
        self.kube = kube
        self._clock = clock
        # The last time handled per Schedule uid: the status this process wrote may not have
        # come back on the watch yet, and a skipped time must be reported once.
        self._handled: dict[str, datetime] = {}

    def clock(self) -> datetime:
        """The given clock, else this module's ``utcnow`` as it is at the call (tests that run
        a whole operator move time by replacing it)."""
        return (self._clock or utcnow)()

    async def reconcile(self, schedule: Schedule) -> Look:
        meta = schedule.metadata
        namespace, name, uid = meta.namespace, meta.name, meta.uid
        status = schedule.status.model_dump(by_alias=True, exclude_none=True)
        generation = meta.generation
        try:
            spec = parse_schedule_spec(schedule.spec)
        except ValidationError as e:
            outcome = mark_failed(status.get("conditions"), generation=generation,
                                  reason=Reason.INVALID_SPEC, message=str(e))
            return Look(outcome, INVALID_RECHECK_SECONDS)
        owned = [e for e in await self.kube.list_custom(
            "executions", namespace, f"{SCHEDULE_LABEL}={name}") if _owned_by(e, uid)]
        active = sorted(e["metadata"]["name"] for e in owned
                        if (e.get("status") or {}).get("phase") not in FINAL_PHASES)
        last = max(filter(None, (_parse_time(status.get("lastScheduleTime")),
                                 self._handled.get(uid))), default=None)
        created = _parse_time(meta.creation_timestamp) or self.clock()
        decision = decide(spec.cron, now=self.clock(), last=last, created=created,
                          active=len(active), policy=spec.concurrency_policy,
                          deadline_seconds=spec.starting_deadline_seconds,
                          suspended=spec.suspend)
        events: list[EventNote] = []
        last_execution = status.get("lastExecution")
        if decision.action is Action.REPLACE:
            for running in active:
                await self.kube.delete_custom("executions", namespace, running)
                events.append(EventNote("Normal", Reason.EXECUTION_REPLACED,
                                        f"deleted Execution {running}: concurrencyPolicy is "
                                        "Replace"))
            active = []
        if decision.action in (Action.CREATE, Action.REPLACE):
            assert decision.time is not None
            made = bounded_execution_name(name, decision.time)
            if await self._create(schedule, spec, made, decision.time):
                note = f"; {decision.reason}" if decision.reason else ""
                events.append(EventNote("Normal", Reason.EXECUTION_CREATED,
                                        f"made Execution {made} for {_iso(decision.time)}{note}"))
            last_execution = made
            active = sorted({*active, made})
        elif decision.action is Action.SKIP:
            assert decision.time is not None
            events.append(EventNote("Warning", Reason.RUN_SKIPPED,
                                    f"{_iso(decision.time)} not run: {decision.reason}"))
        if decision.time is not None:
            self._handled[uid] = decision.time
            last = decision.time
        await self._prune(namespace, owned, spec)
        new_status: dict[str, Any] = {
            "observedGeneration": generation,
            "nextScheduleTime": _iso(decision.next_time),
            "active": active, "activeCount": len(active),
            "conditions": with_condition(
                status.get("conditions"), type_=READY, ok=True,
                reason=Reason.SUSPENDED if spec.suspend else Reason.SCHEDULED,
                message=("suspended: no Execution is made" if spec.suspend else
                         f"next run at {_iso(decision.next_time)}"),
                generation=generation)}
        if last is not None:
            new_status["lastScheduleTime"] = _iso(last)
        if last_execution:
            new_status["lastExecution"] = last_execution
        wait = max(0.0, (decision.next_time - self.clock()).total_seconds())
        if not events and all(status.get(k) == v for k, v in new_status.items()):
            return Look(None, wait)  # nothing new: no write, no watch event, no load
        return Look(Outcome(new_status, events), wait)

    def forget(self, uid: str) -> None:
        self._handled.pop(uid, None)

    async def _create(self, schedule: Schedule, spec: ScheduleSpec, name: str,
                      time: datetime) -> bool:
        """Make the Execution; False when it exists already (made before a crash)."""
        meta = schedule.metadata
        body = execution_body({"namespace": meta.namespace, "name": meta.name, "uid": meta.uid},
                              spec, name=name, scheduled_at=time)
        try:
            await self.kube.create_custom("executions", meta.namespace, body)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        log.info("schedule %s/%s made Execution %s", meta.namespace, meta.name, name)
        return True

    async def _prune(self, namespace: str, owned: list[dict[str, Any]],
                     spec: ScheduleSpec) -> None:
        finished = []
        for execution in owned:
            status = execution.get("status") or {}
            if status.get("phase") not in FINAL_PHASES:
                continue
            at = (_parse_time(status.get("completionTime"))
                  or _parse_time(execution["metadata"].get("creationTimestamp")) or self.clock())
            finished.append(Finished(execution["metadata"]["name"],
                                     status.get("phase") == SUCCEEDED_PHASE, at))
        for name in to_prune(finished, keep_succeeded=spec.successful_history,
                             keep_failed=spec.failed_history):
            await self.kube.delete_custom("executions", namespace, name)
