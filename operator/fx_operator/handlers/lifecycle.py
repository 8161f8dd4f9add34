"""Start-up and clean-up: the services, the broker and the metrics live in kopf's memo."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

from fx_operator.config import Settings
from fx_operator.services.app import OperatorApp


class StatusFreeDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration, without deep-copying a status it then throws away.

    kopf builds the essence on every event of every object by deep-copying the whole body and
    then deleting ``status``; an Execution's status (manifest, steps, conditions) made that copy
    the largest single cost of admitting it. The essence is the same: status is dropped first.
    """

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if not extra_fields and "status" in body:  # extra fields may name status fields
            body = kopf.Body(cast(kopf.RawBody, {k: v for k, v in body.items() if k != "status"}))
        return super().build(body=body, extra_fields=extra_fields)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: status holds only what users read.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="fx.dev")
    settings.persistence.diffbase_storage = StatusFreeDiffBase(
        prefix="fx.dev", key="last-handled-configuration")
    settings.posting.level = 30  # only warnings and errors become Events, never debug chatter
    memo.app = await OperatorApp.start(Settings())


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    app: OperatorApp | None = getattr(memo, "app", None)
    if app is not None:
        await app.stop()


@kopf.on.probe(id="store")
async def store_probe(memo: kopf.Memo, **_: Any) -> str:
    app: OperatorApp = memo.app
    answer: str = await app.probe()
    return answer
