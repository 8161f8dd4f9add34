"""Start-up and clean-up: the services, the broker and the metrics live in kopf's memo."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterable
from typing import Any, cast

import kopf

from fx_operator.app import OperatorApp
from fx_operator.config import Settings


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


#: Strings longer than this are kept in the last-handled configuration as their digest.
DIGESTED_LENGTH = 256


def digested(value: Any) -> Any:
    """``value`` with every string longer than :data:`DIGESTED_LENGTH` replaced by its sha256.

    The essence only has to tell whether a spec changed; a digest does that as well as the text.
    A real API server caps an object's annotations at 256 KiB in all, and kopf stores the
    essence in one: a Package's scripts or a ScopedSecret's sealed values copied there in full
    made the patch carrying the object's status too large, and the object never got a condition.
    """
    if isinstance(value, str):
        if len(value) <= DIGESTED_LENGTH:
            return value
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    if isinstance(value, dict):
        return {key: digested(item) for key, item in value.items()}
    if isinstance(value, list):
        return [digested(item) for item in value]
    return value


class DigestedDiffBase(StatusFreeDiffBase):
    """The last-handled configuration with long strings as digests (see :func:`digested`)."""

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        return cast(kopf.BodyEssence, digested(essence))


class ExecutionDiffBase(DigestedDiffBase):
    """For an Execution, the status its admission writes is the record that it was handled.

    An Execution has no update handler: kopf needs its last-handled configuration only to tell
    a new Execution from one seen before. Its phase tells that as well, so nothing is stored in
    its annotations, and kopf's patch after an admission is the status alone: one request and
    one watch event fewer per Execution. Packages and ScopedSecrets keep the annotation.
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") == "Execution":
            return self.build(body=body) if (body.get("status") or {}).get("phase") else None
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") != "Execution":
            super().store(body=body, patch=patch, essence=essence)


class TraceFreeProgress(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations, minus the ``kopf-managed`` marker when nothing else is left.

    A handler that succeeds at once leaves no progress behind (kopf purges it in the same patch),
    but the marker that names the annotations' prefix stayed, and with it a metadata patch.
    """

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        super().purge(key=key, body=body, patch=patch)
        metadata = patch.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        marker = f"{self.prefix}/kopf-managed"
        if marker in annotations and not any(name.startswith(f"{self.prefix}/")
                                             for name in annotations if name != marker):
            del annotations[marker]
            if not annotations:
                del metadata["annotations"]
            if not metadata:
                del patch["metadata"]


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: status holds only what users read.
    settings.persistence.progress_storage = TraceFreeProgress(prefix="fx.dev")
    settings.persistence.diffbase_storage = ExecutionDiffBase(
        prefix="fx.dev", key="last-handled-configuration")
    settings.posting.level = 30  # only warnings and errors become Events, never debug chatter
    config = Settings()
    # kopf's own calls (patches, Events) wait no longer than ours for an answer (kopf: 5 min).
    settings.networking.request_timeout = config.api_timeout_seconds
    memo.app = await OperatorApp.start(config)
    freeze_start_up_objects()


def freeze_start_up_objects() -> None:
    """Keep what start-up made out of every later full garbage collection.

    Start-up leaves about 200,000 objects tracked by the collector, nearly all of them for good:
    about 90,000 from importing kopf, the kubernetes client, pydantic and the rest, the others
    made while the services start (their own imports, clients, pools, the broker). Each full
    collection walked them all again, pausing the event loop for 100 to 170 ms while admissions
    waited. Frozen, they are skipped: a full collection walks only what the objects being handled
    hold. Start-up's garbage is collected first, so nothing is kept that should go, and a frozen
    object is still freed when its last reference goes.
    """
    gc.collect()
    gc.freeze()


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
