"""The watch history: recent changes per resource, and waking the watchers.

Every committed change is appended here; each open WATCH reads the changes after its
resourceVersion and sleeps on its resource's event until the next one. A watch from before the
oldest change kept gets 410 Gone, as from a compacted etcd.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses

import kmock

from support.emulator.kinds import JsonDict
from support.emulator.selectors import Selector


@dataclasses.dataclass(frozen=True)
class Change:
    """One entry of the watch history: the object after the change and before it."""

    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: JsonDict  # for DELETED: the last state
    old: JsonDict | None


class WatchHistory:
    """The changes kept per resource, and one event per resource that the next change sets."""

    def __init__(self) -> None:
        self.closing = False  # set by close(): open watches end, new ones answer nothing more
        self._changes: dict[kmock.resource, collections.deque[Change]] = {}
        self._compacted: dict[kmock.resource, int] = {}
        self._ticks: dict[kmock.resource, asyncio.Event] = {}

    def append(self, res: kmock.resource, change: Change, *, keep: int) -> None:
        """Record a change (the oldest beyond ``keep`` is dropped) and wake the watchers."""
        history = self._changes.setdefault(res, collections.deque(maxlen=keep))
        if len(history) == history.maxlen:
            self._compacted[res] = history[0].revision
        history.append(change)
        tick = self._ticks.pop(res, None)
        if tick is not None:
            tick.set()

    def after(self, res: kmock.resource, revision: int) -> list[Change]:
        """The changes newer than ``revision``, oldest first."""
        history = self._changes.get(res) or ()
        newer: list[Change] = []
        for change in reversed(history):
            if change.revision <= revision:
                break
            newer.append(change)
        return newer[::-1]

    def compacted(self, res: kmock.resource) -> int:
        """The oldest revision a watch can resume from (0: nothing dropped yet)."""
        return self._compacted.get(res, 0)

    def tick(self, res: kmock.resource) -> asyncio.Event:
        """The event the next change of ``res`` sets."""
        return self._ticks.setdefault(res, asyncio.Event())

    def close(self) -> None:
        """End every open watch, so that the HTTP server can shut down without waiting."""
        self.closing = True
        for tick in self._ticks.values():
            tick.set()


def watch_event(change: Change, selector: Selector) -> JsonDict | None:
    """The event one watcher sees: moving into or out of its selector is ADDED or DELETED."""
    if change.type == "DELETED":
        return {"type": "DELETED", "object": change.obj} if selector(change.obj) else None
    now = selector(change.obj)
    before = change.old is not None and selector(change.old)
    if now and before:
        return {"type": "MODIFIED", "object": change.obj}
    if now:
        return {"type": "ADDED", "object": change.obj}
    if before:
        return {"type": "DELETED", "object": change.obj}
    return None
