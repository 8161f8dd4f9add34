"""GET, LIST and WATCH, as a real API server answers them.

LIST answers ``<Kind>List`` with the current resourceVersion, selectors and ``limit``/``continue``
pagination; WATCH resumes from a resourceVersion (410 Gone past the history), honours
``timeoutSeconds`` and bookmarks, and turns selector transitions into ADDED/DELETED.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import attrs
import kmock

from support.emulator.errors import bad_request, failure
from support.emulator.history import watch_event
from support.emulator.kinds import JsonDict, ObjectKey
from support.emulator.selectors import Selector, parse_field_selector, parse_label_selector
from support.emulator.tokens import Authentication


@attrs.define(kw_only=True)
class Reads(Authentication):
    """The read verbs over the store (kmock's ``_serve_*`` fallbacks, replaced)."""

    def _selector(self, request: kmock.Request) -> Selector:
        checks: list[Selector] = []
        if request.params.get("labelSelector"):
            checks.append(parse_label_selector(request.params["labelSelector"]))
        if request.params.get("fieldSelector"):
            checks.append(parse_field_selector(request.params["fieldSelector"]))
        namespace, name = request.namespace, request.name
        return lambda obj: (
            (namespace is None or obj["metadata"].get("namespace") == namespace)
            and (name is None or obj["metadata"].get("name") == name)
            and all(check(obj) for check in checks))

    def _select(self, request: kmock.Request,
                res: kmock.resource) -> list[tuple[ObjectKey, JsonDict]]:
        matches = self._selector(request)
        found = [(key, body) for key, body in self._live(res) if matches(body)]
        return sorted(found, key=lambda item: (item[0][1] or "", item[0][2]))

    def _list_body(self, res: kmock.resource, items: list[JsonDict], version: str) -> JsonDict:
        return {"apiVersion": self._api_version(res), "kind": f"{self._kind(res)}List",
                "metadata": {"resourceVersion": version}, "items": items}

    async def _serve_list(self, request: kmock.Request) -> JsonDict:
        """LIST with selectors and ``limit``/``continue`` pagination."""
        res = self._require_known(request.resource)
        found = self._select(request, res)
        version = str(self._revision)
        if request.params.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(request.params["continue"]))
                version, after = str(token["rv"]), tuple(token["after"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request("invalid continue token") from exc
            found = [item for item in found if (item[0][1] or "", item[0][2]) > after]
        limit = int(request.params.get("limit") or 0)
        body = self._list_body(res, [item for _, item in found[:limit or None]], version)
        if limit and len(found) > limit:
            last = found[limit - 1][0]
            token_data = {"rv": int(version), "after": [last[1] or "", last[2]]}
            body["metadata"]["continue"] = base64.urlsafe_b64encode(
                json.dumps(token_data).encode()).decode()
            body["metadata"]["remainingItemCount"] = len(found) - limit
        return body

    async def _serve_fetch(self, request: kmock.Request) -> JsonDict:
        res = self._require_known(request.resource)
        if request.subresource not in (None, "status"):
            raise failure(404, "NotFound", "the server could not find the requested resource")
        return self._existing(self._key(res, request.namespace, request.name))

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[bytes | JsonDict]:
        """WATCH from a resourceVersion, with selectors, ``timeoutSeconds`` and bookmarks.

        Errors raised before the first chunk reach the client as plain error answers.
        """
        res = self._require_known(request.resource)
        selector = self._selector(request)
        since = request.params.get("resourceVersion") or ""
        if since not in ("", "0") and not since.isdigit():
            raise bad_request(f"invalid resourceVersion: {since!r}")
        loop = asyncio.get_running_loop()
        timeout = request.params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        yield b""  # send the headers now: clients wait for them before anything happens

        if since in ("", "0"):
            last = self._revision
            for _, body in self._select(request, res):
                yield {"type": "ADDED", "object": body}
            if request.params.get("sendInitialEvents") == "true":
                yield self._bookmark(res, last, initial_events_end=True)
        else:
            last = int(since)
            if last < self._watches.compacted(res):
                yield {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "Expired", "code": 410,
                    "message": f"too old resource version: {last} "
                               f"({self._watches.compacted(res)})"}}
                return
        while not self._watches.closing:
            tick = self._watches.tick(res)
            changes = self._watches.after(res, last)
            for change in changes:
                last = change.revision
                event = watch_event(change, selector)
                if event is not None:
                    yield event
            if changes:
                continue
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await tick.wait()  # no yield inside: a timeout cannot land mid-response
            except TimeoutError:
                break
        if request.params.get("allowWatchBookmarks") == "true" and not self._watches.closing:
            yield self._bookmark(res, max(last, self._revision))

    def _bookmark(self, res: kmock.resource, revision: int, *,
                  initial_events_end: bool = False) -> JsonDict:
        meta: JsonDict = {"resourceVersion": str(revision)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"apiVersion": self._api_version(res),
                                               "kind": self._kind(res), "metadata": meta}}
