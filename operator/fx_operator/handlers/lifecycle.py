"""Start-up and clean-up: the services, the broker and the metrics live in kopf's memo."""

from __future__ import annotations

from typing import Any

import kopf

from fx_operator.config import Settings
from fx_operator.services.app import OperatorApp


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: status holds only what users read.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="fx.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
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
