"""An Execution's status as its run goes, decided from what the cluster says: pure rules, no I/O.

``ExecutionService`` (``services/executions.py``) reads the Execution, its Package, its pod and
Job; the functions here say what that means for the status: the steps, the phase, the Succeeded
condition, the tries of a run retried (``domain.retries``), the result as shown (names only,
never a value). Each returns an ``Outcome`` (the status patch and the Events) or None when
nothing changed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fx_operator.domain.conditions import (
    FAILED,
    PENDING,
    READY,
    RUNNING,
    SUCCEEDED,
    SUCCEEDED_PHASE,
    EventNote,
    Outcome,
    Reason,
    mark_failed,
    mark_ready,
    now_iso,
    with_condition,
)
from fx_operator.domain.resources import Condition, Resource
from fx_operator.domain.retries import (
    RetryPolicy,
    current_try,
    failed_try_entry,
    tries_of,
    try_ended,
    with_latest,
)
from fx_operator.domain.secret_needs import MissingSecret

STEP_ADMITTED, STEP_DELIVERY, STEP_SCRIPT = "Admitted", "SecretsDelivered", "Script"
_DELIVERED = "secrets delivered to the run's executor (held in memory, on no disk)"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def step(name: str, phase: str, message: str = "", *, started: str | None = None,
          finished: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "phase": phase}
    if message:
        step["message"] = message
    if started:
        step["startedAt"] = started
    if finished:
        step["finishedAt"] = finished
    return step


def missing_message(missing: list[MissingSecret]) -> str:
    return ("not started, no Job created: " + "; ".join(map(str, missing)) +
            " (set it there, or declare it with required: false)")


def admitted(status: dict[str, Any], generation: int | None, number: int, run_id: str,
             job_name: str, policy: RetryPolicy, manifest: dict[str, Any],
             message: str) -> Outcome:
    """The status of an Execution whose try ``number`` has its Job: Ready, the run followed
    from now on (the phase Running from the second try on: the Execution never stopped)."""
    now = now_iso()
    entry = {"try": number, "runId": run_id, "jobName": job_name, "phase": PENDING}
    fields: dict[str, Any] = {
        "phase": PENDING if number == 1 else RUNNING,
        "runId": run_id, "jobName": job_name, "manifest": manifest,
        "steps": [step(STEP_ADMITTED, SUCCEEDED_PHASE, message, started=now, finished=now),
                  step(STEP_DELIVERY, PENDING), step(STEP_SCRIPT, PENDING)],
        "tries": [*(t for t in tries_of(status) if int(t.get("try", 0)) < number), entry],
        "tryCount": number, "retryPolicy": policy.as_status()}
    if number > 1:  # the failed try's end, cleared (a merge patch keeps what it omits)
        fields.update(nextTryAt=None, exitCode=None, result=None, completionTime=None)
    return mark_ready(status.get("conditions"), generation=generation,
                      reason=Reason.JOB_CREATED, message=message, fields=fields,
                      events=[EventNote("Normal", Reason.JOB_CREATED, message)])


def refused_at_admission(status: dict[str, Any], generation: int | None, number: int,
                         run_id: str, reason: Reason, message: str) -> Outcome:
    """A try refused at admission: the Execution's end, whatever retries remain (trying
    again cannot change a missing secret, an unusable Package or a bad spec)."""
    now = now_iso()
    entry = {"try": number, "runId": run_id, "phase": FAILED, "reason": str(reason),
             "finishedAt": now}
    fields: dict[str, Any] = {
        "phase": FAILED, "completionTime": now,
        "tries": [*(t for t in tries_of(status) if int(t.get("try", 0)) < number), entry],
        "tryCount": number,
        "steps": [step(STEP_ADMITTED, FAILED, message, started=now, finished=now)]}
    if status.get("nextTryAt"):
        fields["nextTryAt"] = None
    return mark_failed(status.get("conditions"), generation=generation, reason=reason,
                       message=message, fields=fields, ended=True)


def usable_from_watch(package: Resource) -> bool:
    """A Package as the watch last showed it is used as is only when Ready for its generation:
    a refused or unpublished one may be stale (fixed since), so the API is read instead."""
    ready = package_ready(package)
    return ready is not None and ready.status == "True"


def package_ready(package: Resource) -> Condition | None:
    """The Package's Ready condition, if it speaks of the Package's current generation."""
    ready = package.status.condition(READY)
    if ready is not None and ready.observed_generation == package.metadata.generation:
        return ready
    return None


def progress(execution: dict[str, Any], pod: dict[str, Any]) -> Outcome | None:
    """Pure: what the pod's status means for the Execution's."""
    status = execution.get("status") or {}
    if try_ended(status):
        return None  # the try's end is recorded; a later event of its pod changes nothing
    pod_status = pod.get("status") or {}
    # A run pod delivers its secrets in its one container (``delivered`` records it when the
    # broker hands out the key); a pod of a Job made by an operator before that has an init
    # container that did, read here so such a run still ends right across an upgrade.
    init: dict[str, Any] = next(iter(pod_status.get("initContainerStatuses") or []), {})
    main: dict[str, Any] = next(iter(pod_status.get("containerStatuses") or []), {})
    init_done = (init.get("state") or {}).get("terminated")
    main_state = main.get("state") or {}
    steps = {s["name"]: s for s in status.get("steps") or []}
    events: list[EventNote] = []
    if init_done and init_done.get("exitCode") != 0:
        message = (f"the init step could not deliver the run's secrets (exit "
                   f"{init_done.get('exitCode')}): {init_done.get('message') or 'see its log'}")
        return ended(execution, FAILED, Reason.DELIVERY_FAILED, message, None, None)
    if init_done and steps.get(STEP_DELIVERY, {}).get("phase") != SUCCEEDED_PHASE:
        steps[STEP_DELIVERY] = step(STEP_DELIVERY, SUCCEEDED_PHASE,
                                     "secrets delivered to the run's tmpfs",
                                     started=init_done.get("startedAt"),
                                     finished=init_done.get("finishedAt"))
        events.append(EventNote("Normal", Reason.SECRETS_DELIVERED,
                                "secrets delivered to the run's tmpfs"))
    terminated = main_state.get("terminated")
    if terminated:
        code = int(terminated.get("exitCode", 1))
        if (undelivered := delivery_error(terminated.get("message"))) is not None:
            message = (f"the executor could not deliver the run's secrets (exit {code}): "
                       f"{undelivered}")
            return ended(execution, FAILED, Reason.DELIVERY_FAILED, message, None, None,
                         steps=steps, started=terminated.get("startedAt"),
                         finished=terminated.get("finishedAt"))
        result = shown_result(terminated.get("message"))
        if result is not None and not init and \
                steps.get(STEP_DELIVERY, {}).get("phase") != SUCCEEDED_PHASE:
            # The executor ran the script, so it had delivered (the broker's word may be late).
            steps[STEP_DELIVERY] = step(STEP_DELIVERY, SUCCEEDED_PHASE, _DELIVERED,
                                        started=terminated.get("startedAt"),
                                        finished=terminated.get("startedAt"))
        ok = code == 0
        message = f"the script exited with {code}"
        return ended(execution, SUCCEEDED_PHASE if ok else FAILED,
                      Reason.COMPLETED if ok else Reason.SCRIPT_FAILED, message, code, result,
                      steps=steps, started=terminated.get("startedAt"),
                      finished=terminated.get("finishedAt"))
    running = main_state.get("running")
    if running and steps.get(STEP_SCRIPT, {}).get("phase") != RUNNING:
        started = running.get("startedAt") or now_iso()
        steps[STEP_SCRIPT] = step(STEP_SCRIPT, RUNNING, started=started)
        number = current_try(status)
        events.append(EventNote("Normal", Reason.RUNNING, "the script is running" + (
            f" (try {number})" if number > 1 else "")))
        latest = {**(tries_of(status) or [{"try": 1, "runId": status.get("runId"),
                                            "jobName": status.get("jobName")}])[-1],
                  "phase": RUNNING, "startedAt": started}
        return Outcome({**kept(status), "phase": RUNNING,
                        "startTime": status.get("startTime") or started,
                        "tries": with_latest(status, latest),
                        "steps": list(steps.values())}, events)
    if events:
        return Outcome({**kept(status), "steps": list(steps.values())}, events)
    return None


def delivered(execution: dict[str, Any], run_id: str, at: str) -> Outcome | None:
    """The broker handed the run's key to its pod at ``at``: the delivery step done, and its
    Event; None when that is said already, or the status is of another run (or over)."""
    status = execution.get("status") or {}
    if status.get("runId") != run_id or try_ended(status):
        return None
    steps = {s["name"]: s for s in status.get("steps") or []}
    if steps.get(STEP_DELIVERY, {}).get("phase") == SUCCEEDED_PHASE:
        return None
    steps[STEP_DELIVERY] = step(STEP_DELIVERY, SUCCEEDED_PHASE, _DELIVERED, started=at,
                                finished=at)
    return Outcome({**kept(status), "steps": list(steps.values())},
                   [EventNote("Normal", Reason.SECRETS_DELIVERED, _DELIVERED)])


def delivery_error(message: str | None) -> str | None:
    """Why the executor could not deliver the run's secrets, from its termination message
    (``{"delivery_error": ...}``); None for any other message."""
    if not message or '"delivery_error"' not in message:
        return None
    try:
        said = json.loads(message)
    except ValueError:
        return None
    error = said.get("delivery_error") if isinstance(said, dict) else None
    return str(error) if error else None


def kept(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k in (
        "observedGeneration", "runId", "jobName", "manifest", "conditions", "startTime",
        "tries", "tryCount", "retryPolicy")}


def shown_result(message: str | None) -> dict[str, Any] | None:
    if not message:
        return None
    try:
        result = json.loads(message)
    except ValueError:
        return None
    if not isinstance(result, dict):
        return None
    shown: dict[str, Any] = {"outputTail": str(result.get("output_tail", "")),
                             "truncated": bool(result.get("output_truncated", False))}
    unmasked = result.get("unmasked_names")
    if isinstance(unmasked, list) and unmasked:  # names only: values too short to mask
        shown["unmaskedSecrets"] = [str(name) for name in unmasked]
    missing = result.get("missing_names")
    if isinstance(missing, list) and missing:  # asked for, not delivered: names only
        shown["missingSecrets"] = [str(name) for name in missing]
    return shown


def ended(execution: dict[str, Any], phase: str, reason: Reason, message: str,
           exit_code: int | None, result: dict[str, Any] | None, *,
           steps: dict[str, dict[str, Any]] | None = None, started: str | None = None,
           finished: str | None = None) -> Outcome:
    status = execution.get("status") or {}
    generation = execution["metadata"].get("generation")
    steps = dict(steps or {s["name"]: s for s in status.get("steps") or []})
    now = now_iso()
    steps[STEP_SCRIPT] = step(STEP_SCRIPT, phase, message,
                               started=started or status.get("startTime"),
                               finished=finished or now)
    if phase == FAILED and steps.get(STEP_DELIVERY, {}).get("phase") == PENDING:
        steps[STEP_DELIVERY] = step(STEP_DELIVERY, FAILED, message)
    new = {**kept(status), "phase": phase, "completionTime": finished or now,
           "steps": list(steps.values()),
           "conditions": with_condition(status.get("conditions"), type_=SUCCEEDED,
                                        ok=phase == SUCCEEDED_PHASE, reason=reason,
                                        message=message, generation=generation)}
    if exit_code is not None:
        new["exitCode"] = exit_code
    if result is not None:
        new["result"] = result
    if "startTime" not in new and started:
        new["startTime"] = started
    number = current_try(status)
    entry = failed_try_entry(status, reason=reason, exit_code=exit_code, started=started,
                             finished=str(new["completionTime"]))
    if phase == SUCCEEDED_PHASE:
        entry["phase"] = SUCCEEDED_PHASE
    new["tries"], new["tryCount"] = with_latest(status, entry), number
    policy = RetryPolicy.from_status(status)
    following = policy.next_try(number, reason) if phase == FAILED else None
    if following is not None:
        return _retrying(execution, new, policy, number, following, reason, message)
    if phase == FAILED and policy.limit and number > 1:
        message = f"{message} (try {number} of {policy.max_tries}: no retries left)"
        new["conditions"] = with_condition(status.get("conditions"), type_=SUCCEEDED, ok=False,
                                           reason=reason, message=message,
                                           generation=generation)
    event_type = "Normal" if phase == SUCCEEDED_PHASE else "Warning"
    return Outcome(new, [EventNote(event_type, reason, message)], ok=phase == SUCCEEDED_PHASE)


def _retrying(execution: dict[str, Any], ended: dict[str, Any], policy: RetryPolicy,
              failed: int, following: int, reason: Reason, message: str) -> Outcome:
    """A failed try that another follows: the Execution goes on (Running, Succeeded Unknown
    with reason Retrying) until ``nextTryAt``, when ``ExecutionService.next_try`` starts it."""
    status = execution.get("status") or {}
    due = datetime.now(UTC) + policy.backoff(failed)
    said = (f"try {failed} of {policy.max_tries} failed ({message}); try {following} at "
            f"{_iso(due)}, in {int(policy.backoff(failed).total_seconds())} s")
    new = {**ended, "phase": RUNNING, "nextTryAt": _iso(due),
           "conditions": with_condition(status.get("conditions"), type_=SUCCEEDED, ok=None,
                                        reason=Reason.RETRYING, message=said,
                                        generation=execution["metadata"].get("generation"))}
    new.pop("completionTime", None)
    return Outcome(new, [EventNote("Warning", reason, said)])
