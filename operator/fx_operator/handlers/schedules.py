"""Schedule: a daemon per Schedule that wakes at its next time (or to look again) and acts."""

from __future__ import annotations

from typing import Any

import kopf

from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.domain.conditions import Reason
from fx_operator.domain.resources import InvalidResource, Schedule, not_ready, parse
from fx_operator.handlers.common import app_of, apply, retrying
from fx_operator.services.schedules import INVALID_RECHECK_SECONDS


@kopf.daemon(GROUP, VERSION, "schedules", id="schedule", cancellation_timeout=10)
async def follow_schedule(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo,
                          **_: Any) -> None:
    """``body`` is live (kopf updates it from the watch): each look sees the current spec.
    Executions finishing and edits are seen at the next look, at most
    ``schedule_recheck_seconds`` away."""
    app = app_of(memo)
    try:
        while not stopped:
            try:
                schedule = parse(Schedule, body)
            except InvalidResource as e:  # past the schema: said on it, looked at after an edit
                await apply(app, body, None, not_ready(e.header, e, Reason.INVALID_SPEC))
                await stopped.wait(INVALID_RECHECK_SECONDS)
                continue
            async with retrying():
                look = await app.schedules.reconcile(schedule)
                if stopped:  # the operator is stopping: its HTTP session may be closed already
                    break
                await apply(app, body, None, look.outcome)
            await stopped.wait(min(look.wait_seconds, app.settings.schedule_recheck_seconds))
    finally:
        if stopped:
            app.schedules.forget(body.metadata.uid or "")
