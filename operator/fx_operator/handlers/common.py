"""What every handler does with a service's outcome, and how errors become kopf's retries."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import kopf

from fx_operator.app import OperatorApp
from fx_operator.domain.api_group import PLURALS
from fx_operator.domain.conditions import Outcome, Reason
from fx_operator.domain.resources import InvalidResource, Resource, not_ready, parse
from fx_operator.exceptions import FxError

R = TypeVar("R", bound=Resource)
log = logging.getLogger(__name__)


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
        version = meta.get("resourceVersion") if conditional else None
        await app.kube.patch_custom_status(PLURALS[involved["kind"]], meta["namespace"],
                                           meta["name"], outcome.status,
                                           resource_version=version)
    for event in outcome.events:
        if event.type == "Warning":
            app.metrics.errors.labels(str(event.reason)).inc()
        await app.kube.post_event(involved, event.type, str(event.reason), event.message)


async def reconciled(model: type[R], body: kopf.Body,
                     reconcile: Callable[[R], Awaitable[Outcome]]) -> Outcome:
    """The object parsed once, then reconciled; one its schema refuses (it slipped past the
    API server's) gets Ready=False and a Warning Event naming the field instead."""
    try:
        resource = parse(model, body)
    except InvalidResource as e:
        log.warning("%s", e)
        return not_ready(e.header, e, Reason.INVALID_SPEC)
    return await reconcile(resource)


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
