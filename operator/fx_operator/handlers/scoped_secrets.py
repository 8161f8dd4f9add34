"""ScopedSecret: move its sealed values into the store; on deletion take them out (finalizer)."""

from __future__ import annotations

from typing import Any

import kopf

from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.domain.resources import InvalidResource, ScopedSecret, parse
from fx_operator.handlers.common import app_of, apply, reconciled, retrying


@kopf.on.resume(GROUP, VERSION, "scopedsecrets", id="scoped-secret")
@kopf.on.create(GROUP, VERSION, "scopedsecrets", id="scoped-secret")
@kopf.on.update(GROUP, VERSION, "scopedsecrets", id="scoped-secret", field="spec")
async def scoped_secret_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                                **_: Any) -> None:
    app = app_of(memo)
    async with retrying():
        await apply(app, body, patch,
                    await reconciled(ScopedSecret, body, app.scoped_secrets.reconcile))


@kopf.on.delete(GROUP, VERSION, "scopedsecrets", id="scoped-secret-removal")
async def scoped_secret_deleted(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                                **_: Any) -> None:
    app = app_of(memo)
    try:
        secret = parse(ScopedSecret, body)
    except InvalidResource as e:  # never stored as it is: what an earlier version stored stays
        logger.warning("nothing taken out of resolution: %s", e)
        return
    async with retrying():
        removed = await app.scoped_secrets.remove(secret)
    logger.info("took %d name(s) out of resolution: %s", len(removed), ", ".join(removed))
