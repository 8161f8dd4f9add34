"""What every handler does with a service's outcome, and how errors become kopf's retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import kopf

from fx_operator.domain.conditions import Outcome
from fx_operator.exceptions import FxError
from fx_operator.services.app import OperatorApp


def app_of(memo: Any) -> OperatorApp:
    app: OperatorApp = memo.app
    return app


async def apply(app: OperatorApp, body: Any, patch: kopf.Patch | None,
                outcome: Outcome | None, *, conditional: bool = False) -> None:
    """Write the outcome's status (through kopf's patch when handling that object) and Events.

    ``conditional``: only onto the version of ``body`` the outcome was decided from (a 409 when
    another write came first), for outcomes decided from an object read apart."""
    if outcome is None:
        return
    involved = dict(body)
    if patch is not None:
        patch.status.update(outcome.status)
    else:
        meta = involved["metadata"]
        plural = {"Execution": "executions", "Package": "packages",
                  "ScopedSecret": "scopedsecrets", "Schedule": "schedules"}[involved["kind"]]
        version = meta.get("resourceVersion") if conditional else None
        await app.kube.patch_custom_status(plural, meta["namespace"], meta["name"],
                                           outcome.status, resource_version=version)
    for event in outcome.events:
        if event.type == "Warning":
            app.metrics.errors.labels(str(event.reason)).inc()
        await app.kube.post_event(involved, event.type, str(event.reason), event.message)


@asynccontextmanager
async def retrying() -> AsyncIterator[None]:
    """Our errors as kopf's: those whose class says retrying helps (``FxError.retry_after``:
    not ready yet, the store or the API server failed) become kopf's temporary errors, with
    that delay; the others end the handler as they are."""
    try:
        yield
    except FxError as e:
        if e.retry_after is None:
            raise
        raise kopf.TemporaryError(str(e), delay=e.retry_after) from e
