"""The object store: versions, the global resourceVersion, and the watch history.

kmock keeps the objects; this layer stamps each change with the next resourceVersion (one counter
for the whole server, as etcd's revision) and appends it to the watch history, in one step with no
await, so that each request is atomic.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterator

import attrs
import kmock

from support.emulator.errors import not_found
from support.emulator.history import Change, WatchHistory
from support.emulator.kinds import JsonDict, ObjectKey
from support.emulator.registry import ResourceRegistry


def utc_now() -> str:
    """A timestamp as the API server writes one (seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class ObjectStore(ResourceRegistry):
    """Reading and committing objects by key; every committed change goes to the watch history."""

    #: Watch events kept per resource; a watch from an older resourceVersion gets 410 Gone.
    history_size: int = 10_000

    _revision: int = attrs.field(default=0, init=False)
    _watches: WatchHistory = attrs.field(factory=WatchHistory, init=False)

    def dump_objects(self, *, current_only: bool = False) -> list[JsonDict]:
        """Every stored object, deep-copied: all versions ever written (deleted objects too),
        or only the live objects' current state with ``current_only=True``."""
        dumped: list[JsonDict] = []
        for _, obj in self.objects.items():
            if current_only:
                if not obj.deleted:
                    dumped.append(copy.deepcopy(obj.last.raw))
            else:
                dumped.extend(copy.deepcopy(v.raw) for v in obj.history if v is not None)
        return dumped

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion handed out."""
        return str(self._revision)

    def close_watches(self) -> None:
        """End every open watch, so that the HTTP server can shut down without waiting."""
        self._watches.close()

    def _key(self, res: kmock.resource, namespace: str | None, name: str | None) -> ObjectKey:
        return (res, namespace if self._namespaced(res) else None, name or "")

    def _current(self, key: ObjectKey) -> JsonDict | None:
        if key in self.objects:
            obj = self.objects[key]
            if not obj.deleted:
                return obj.last.raw
        return None

    def _existing(self, key: ObjectKey) -> JsonDict:
        body = self._current(key)
        if body is None:
            raise not_found(key[0], key[2])
        return body

    def _live(self, res: kmock.resource) -> Iterator[tuple[ObjectKey, JsonDict]]:
        for key, obj in self.objects.items():
            if key[0] == res and not obj.deleted:
                yield key, obj.last.raw

    def _commit(self, key: ObjectKey, body: JsonDict, old: JsonDict | None,
                change: str) -> JsonDict:
        """Stamp a new resourceVersion, store the version, and append it to the watch history."""
        self._revision += 1
        body["metadata"]["resourceVersion"] = str(self._revision)
        if change == "DELETED":
            self.objects[key].history.append(body)  # the last state stays visible in the history
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(body)
        else:
            self.objects[key] = body
        self._watches.append(key[0], Change(self._revision, change, body, old),
                             keep=self.history_size)
        return body
