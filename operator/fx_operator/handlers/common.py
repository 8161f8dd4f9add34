"""What every handler does with a service's outcome, and how errors become kopf's retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import kopf

from fx_operator.app import OperatorApp
from fx_operator.domain.api_group import PLURALS
from fx_operator.domain.conditions import Outcome
from fx_operator.exceptions import FxError


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
        await app.kube.patch_custom_status(PLURALS[involved["kind"]], meta["namespace"],
                                           meta["name"], outcome.status)
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
