"""What every handler does with a service's outcome, and how errors become kopf's retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import kopf

from fx_operator.domain.conditions import Outcome
from fx_operator.exceptions import StoreError
from fx_operator.services.app import OperatorApp
from fx_operator.services.executions import NotReadyYet
from fx_operator.storage.kube import KubeError

NOT_READY_DELAY = 2
STORE_RETRY_DELAY = 10


def app_of(memo: Any) -> OperatorApp:
    app: OperatorApp = memo.app
    return app


async def apply(app: OperatorApp, body: Any, patch: kopf.Patch | None,
                outcome: Outcome | None) -> None:
    """Write the outcome's status (through kopf's patch when handling that object) and Events."""
    if outcome is None:
        return
    involved = dict(body)
    if patch is not None:
        patch.status.update(outcome.status)
    else:
        meta = involved["metadata"]
        plural = {"Execution": "executions", "Package": "packages",
                  "ScopedSecret": "scopedsecrets", "Schedule": "schedules"}[involved["kind"]]
        await app.kube.patch_custom_status(plural, meta["namespace"], meta["name"],
                                           outcome.status)
    for event in outcome.events:
        if event.type == "Warning":
            app.metrics.errors.labels(str(event.reason)).inc()
        await app.kube.post_event(involved, event.type, str(event.reason), event.message)


@asynccontextmanager
async def retrying() -> AsyncIterator[None]:
    """Our errors with retry meaning, as kopf's: not ready yet, or the store or API failed."""
    try:
        yield
    except NotReadyYet as e:
        raise kopf.TemporaryError(str(e), delay=NOT_READY_DELAY) from e
    except (StoreError, KubeError) as e:
        raise kopf.TemporaryError(str(e), delay=STORE_RETRY_DELAY) from e
