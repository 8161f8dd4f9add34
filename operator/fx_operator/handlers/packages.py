"""Package: publish its scripts for run pods, or say with a condition why not."""

from __future__ import annotations

from typing import Any

import kopf

from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.domain.resources import InvalidResource, Package, parse
from fx_operator.handlers.common import app_of, apply, reconciled, retrying


@kopf.on.resume(GROUP, VERSION, "packages", id="package")
@kopf.on.create(GROUP, VERSION, "packages", id="package")
@kopf.on.update(GROUP, VERSION, "packages", id="package", field="spec")
async def package_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                          **_: Any) -> None:
    app = app_of(memo)
    async with retrying():
        await apply(app, body, patch, await reconciled(Package, body, app.packages.reconcile))


@kopf.index(GROUP, VERSION, "packages")
def published_packages(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Package]:
    """Every Package as last seen on the watch: admission reads it here, not from the API (a
    malformed one is not kept: admission reads it from the API, and says why it is refused)."""
    try:
        package = parse(Package, body)
    except InvalidResource:
        return {}
    return {(package.metadata.namespace, package.metadata.name): package}
