"""Deletion as a real server does it: finalizers, then garbage collection.

An object with finalizers is only marked (``deletionTimestamp``) until the last one goes; removing
it collects its dependents by ``ownerReferences`` (background, or orphan), and a namespace takes
its contents with it. Operators rely on all three.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import kmock

# kmock exports Response but leaves it out of __all__; kmock is pinned (==0.8) and used through
# its internals anyway, so it is imported from where it is defined.
from kmock._internal.rendering import Response

from support.emulator.errors import conflict
from support.emulator.kinds import NAMESPACES, PODS, JsonDict, ObjectKey
from support.emulator.reads import Reads
from support.emulator.store import utc_now


def spec_part(body: Mapping[str, Any]) -> JsonDict:
    """What ``metadata.generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in body.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def without_version(body: Mapping[str, Any]) -> JsonDict:
    meta = dict(body.get("metadata") or {})
    meta.pop("resourceVersion", None)
    return {**body, "metadata": meta}


@attrs.define(kw_only=True)
class Deletion(Reads):
    """Replacing, deleting and collecting objects (the writes that may end an object's life)."""

    RETURNS_DELETED_OBJECT: ClassVar[frozenset[kmock.resource]] = frozenset({PODS})

    def _replace(self, key: ObjectKey, new: JsonDict, old: JsonDict) -> JsonDict:
        """Store a changed object; a no-op change bumps nothing, as on a real server."""
        if without_version(new) == without_version(old):
            return old
        if spec_part(new) != spec_part(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(key, new, old)
        return self._commit(key, new, old, "MODIFIED")

    def _delete_request(self, request: kmock.Request, key: ObjectKey) -> Response:
        options = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or options.get("propagationPolicy")
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        body, removed = self._delete(key, policy=policy or "Background",
                                     preconditions=options.get("preconditions") or {})
        res = key[0]
        if not removed or res in self._custom or res in self.RETURNS_DELETED_OBJECT:
            return Response(status=200, payload=body)
        return Response(status=200, payload={
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": key[2], "group": res.group, "kind": res.plural,
                        "uid": body["metadata"]["uid"]}})

    def _delete(self, key: ObjectKey, *, policy: str = "Background",
                preconditions: Mapping[str, Any] | None = None) -> tuple[JsonDict, bool]:
        """Delete, or mark for deletion while finalizers remain. Returns (body, removed now)."""
        old = self._existing(key)
        meta = old["metadata"]
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted is not None and wanted != meta.get(field):
                raise conflict(key[0], key[2], f"Precondition failed: {field}: {wanted}, "
                                                f"{field} in object meta: {meta.get(field)}")
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old, False
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=utc_now(), deletionGracePeriodSeconds=0)
            return self._commit(key, new, old, "MODIFIED"), False
        return self._remove(key, copy.deepcopy(old), old, orphan=policy == "Orphan"), True

    def _remove(self, key: ObjectKey, last: JsonDict, old: JsonDict, *,
                orphan: bool = False) -> JsonDict:
        """Remove the object for good, then collect what depended on it."""
        body = self._commit(key, last, old, "DELETED")
        self._collect_dependents(body["metadata"]["uid"], orphan=orphan)
        if key[0] == NAMESPACES:  # a namespace takes its contents with it
            for dependent in list(self.objects.keys()):
                if dependent[1] == key[2] and self._current(dependent) is not None:
                    self._delete(dependent)
        return body

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """The garbage collector: drop the owner's references; delete what has no owner left."""
        for key in list(self.objects.keys()):
            body = self._current(key)  # fresh: collecting one dependent can change another
            if body is None:
                continue
            references = body["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in references):
                continue
            remaining = [ref for ref in references if ref.get("uid") != owner_uid]
            if remaining or orphan:
                new = copy.deepcopy(body)
                new["metadata"]["ownerReferences"] = remaining
                if not remaining:
                    del new["metadata"]["ownerReferences"]
                self._replace(key, new, body)
            else:
                self._delete(key)

    def _delete_collection(self, request: kmock.Request) -> JsonDict:
        res = self._require_known(request.resource)
        deleted = [self._delete(key)[0] for key, _ in self._select(request, res)]
        return self._list_body(res, deleted, str(self._revision))
