"""Execution: admit it into a Job, follow the run pod and the Job to the end, and start the next
try of a failed run when its backoff is over."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from fx_operator.app import OperatorApp
from fx_operator.domain.api_group import GROUP, LABEL_MANAGED_BY, LABEL_RUN, MANAGER, VERSION
from fx_operator.domain.conditions import FINAL_PHASES, Outcome
from fx_operator.domain.resources import Execution, InvalidResource, Package, parse
from fx_operator.domain.retries import awaiting_next_try, current_try, seconds_until_next_try
from fx_operator.exceptions import StoreError
from fx_operator.handlers.common import app_of, apply, retrying
from fx_operator.storage.kube import KubeError

PackageIndex = kopf.Index[tuple[str, str], Package]
_RUN_OBJECTS: dict[str, Any] = {LABEL_RUN: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER}
#: Tries of an admission before it gives up and fails the Execution with the last error (a Package
#: still unpublished after ~2 minutes, the store or the API failing for ~10 minutes).
ADMISSION_TRIES = 60
#: Tries before a refusal by the API server's authorizer (401, 403: the operator's RBAC lacks a
#: rule) fails the Execution: a few seconds for RBAC still being applied (an install or upgrade in
#: progress), then the refusal is reported on the Execution rather than retried for 10 minutes.
FORBIDDEN_TRIES = 3
#: A run's pod or Job sends no event after its last one, and kopf does not retry event handlers:
#: recording what an event says is retried here while the API server or the store fails (delays
#: doubling up to EVENT_RETRY_MAX_DELAY: ~10 minutes in all, as admission), or its end is lost.
EVENT_TRIES = 25
EVENT_RETRY_MAX_DELAY = 30.0
#: How long the next-try daemon waits for its own status write to come back on the watch (which
#: stops it) before it looks again; looking again is harmless, admission is idempotent.
NEXT_TRY_RECHECK_SECONDS = 5.0

log = logging.getLogger(__name__)


@kopf.on.resume(GROUP, VERSION, "executions", id="admission", retries=ADMISSION_TRIES)
@kopf.on.create(GROUP, VERSION, "executions", id="admission", retries=ADMISSION_TRIES)
async def execution_created(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                            retry: int = 0, published_packages: PackageIndex | None = None,
                            **_: Any) -> None:
    app = app_of(memo)
    started = time.perf_counter()
    outcome = await _admission(app, body, retry, published_packages)
    app.metrics.admission.observe(time.perf_counter() - started)
    if outcome is not None:
        app.metrics.executions.labels(outcome.status.get("phase", "Pending")).inc()
    await apply(app, body, patch, outcome)


async def _admission(app: OperatorApp, body: kopf.Body, retry: int,
                     packages: PackageIndex | None) -> Outcome | None:
    """The Execution parsed once and admitted; a malformed one fails, naming the field."""
    try:
        execution = parse(Execution, body)
    except InvalidResource as e:
        if body.get("status", {}).get("phase") in FINAL_PHASES:
            return None  # refused before: its end is never rewritten
        return app.executions.refused(e.header, e)
    key = (execution.metadata.namespace, execution.spec.package)
    seen = packages.get(key) if packages is not None else None
    try:
        async with retrying():
            return await app.executions.admit(execution, package=next(iter(seen or ()), None))
    except kopf.TemporaryError as e:
        if not gives_up(e.__cause__, retry):
            raise
        return await app.executions.not_admitted(execution, e.__cause__)


def gives_up(error: BaseException | None, retry: int) -> bool:
    """Whether admission stops retrying after this failure (``retry``: kopf's count, from 0)."""
    tries = FORBIDDEN_TRIES if isinstance(error, KubeError) and error.forbidden \
        else ADMISSION_TRIES
    return retry + 1 >= tries


@kopf.on.event("", "v1", "pods", labels=_RUN_OBJECTS)
async def run_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    app = app_of(memo)

    async def record() -> None:
        await _report(app, await app.executions.observe_pod(dict(body)))
    await _until_recorded(record, f"pod {body.metadata.namespace}/{body.metadata.name}")


def _job_failed(body: kopf.Body, **_: Any) -> bool:
    return any(c.get("type") == "Failed" and c.get("status") == "True"
               for c in body.status.get("conditions") or [])


def _job_failed_or_gone(type: str, body: kopf.Body, **_: Any) -> bool:
    return type == "DELETED" or _job_failed(body)


# Filters (``when``) keep kopf from invoking, and logging, a handler for events it ignores.
# A run's Job goes when its Execution is deleted (it owns the Job) or its time to live ends:
# watching Jobs for that, not Executions, keeps every Execution event off kopf's event-handler
# path (each event there costs a full set of handler arguments even when filtered out).
@kopf.on.event("batch", "v1", "jobs", labels=_RUN_OBJECTS, when=_job_failed_or_gone)
async def run_job_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    app = app_of(memo)

    async def record() -> None:
        if type == "DELETED":
            await app.executions.forget_run(dict(body))
            return
        await _report(app, await app.executions.observe_job(dict(body)))
    await _until_recorded(record, f"Job {body.metadata.namespace}/{body.metadata.name}")


async def _until_recorded(record: Callable[[], Awaitable[None]], what: str) -> None:
    """Record an event, again while the API server or the store fails (see EVENT_TRIES)."""
    delay = 1.0
    for attempt in range(1, EVENT_TRIES + 1):
        try:
            async with retrying():
                await record()
            return
        except kopf.TemporaryError as e:
            if attempt == EVENT_TRIES or not isinstance(e.__cause__, (KubeError, StoreError)):
                raise
            log.warning("recording the state of %s failed (try %d), again in %.0f s: %s",
                        what, attempt, delay, e)
        await asyncio.sleep(delay)
        delay = min(delay * 2, EVENT_RETRY_MAX_DELAY)


async def _report(app: OperatorApp, observed: tuple[dict[str, Any], Outcome] | None) -> None:
    """An Execution's new status from its pod or Job: counted when its phase moves, applied.

    Applied onto the version it was decided from: a run pod's and its Job's events are handled
    at once, and a status decided from a stale read (a try's end already recorded, the next try
    admitted since) must not overwrite a newer one. The loser's 409 is retried, reading again."""
    if observed is None:
        return
    execution, outcome = observed
    if outcome.status.get("phase") != (execution.get("status") or {}).get("phase"):
        app.metrics.executions.labels(outcome.status.get("phase", "")).inc()
    await apply(app, execution, None, outcome, conditional=True)


def _awaiting_next_try(status: kopf.Status, **_: Any) -> bool:
    return awaiting_next_try(status)


# A daemon only while a failed try's successor waits (kopf stops it when the filter no longer
# matches, and starts it again after the next failure): no task per Execution otherwise. Started
# again by kopf for every Execution still waiting when the operator restarts; the try it makes
# comes from the status, so a restart anywhere in between makes that one try, once.
@kopf.daemon(GROUP, VERSION, "executions", id="next-try", when=_awaiting_next_try,
             cancellation_timeout=10)
async def start_next_try(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo,
                         **_: Any) -> None:
    """``body`` is live: each look sees the latest status. Waits for ``status.nextTryAt`` on the
    daemon's stop flag (never a sleep in a handler), then admits the next try."""
    app = app_of(memo)
    failures = 0
    while not stopped:
        wait = seconds_until_next_try(body.status, datetime.now(UTC))
        if wait > 0:
            await stopped.wait(wait)
            continue
        number = current_try(body.status) + 1
        try:
            execution = parse(Execution, body)
        except InvalidResource as e:  # malformed since its last try: it fails, naming the field
            await apply(app, body, None, app.executions.refused(e.header, e))
            return
        try:
            async with retrying():
                outcome = await app.executions.next_try(execution)
        except kopf.TemporaryError as e:
            if not gives_up(e.__cause__, failures):
                failures += 1
                await stopped.wait(e.delay or 1.0)
                continue
            outcome = await app.executions.not_admitted(execution, e.__cause__, number)
        if stopped:  # the operator is stopping: its HTTP session may be closed already
            break
        if outcome is not None:
            app.metrics.executions.labels(outcome.status.get("phase", "Running")).inc()
        await apply(app, body, None, outcome)
        await stopped.wait(NEXT_TRY_RECHECK_SECONDS)
