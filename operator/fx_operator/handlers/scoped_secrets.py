"""ScopedSecret: move its sealed values into the store; on deletion take them out (finalizer)."""

from __future__ import annotations

from typing import Any

import kopf

from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.handlers.common import app_of, apply, retrying


@kopf.on.resume(GROUP, VERSION, "scopedsecrets", id="scoped-secret")
@kopf.on.create(GROUP, VERSION, "scopedsecrets", id="scoped-secret")
@kopf.on.update(GROUP, VERSION, "scopedsecrets", id="scoped-secret", field="spec")
async def scoped_secret_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                                **_: Any) -> None:
    app = app_of(memo)
    async with retrying():
        await apply(app, body, patch, await app.scoped_secrets.reconcile(dict(body)))


@kopf.on.delete(GROUP, VERSION, "scopedsecrets", id="scoped-secret-removal")
async def scoped_secret_deleted(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                                **_: Any) -> None:
    app = app_of(memo)
    async with retrying():
        removed = await app.scoped_secrets.remove(dict(body))
    logger.info("took %d name(s) out of resolution: %s", len(removed), ", ".join(removed))
