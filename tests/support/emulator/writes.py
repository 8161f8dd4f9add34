"""Create, update and patch, as a real API server applies them.

Server-managed metadata, ``generateName``, admission (:mod:`support.emulator.admission`), JSON
patch / merge patch / PUT with their 409 and 422 answers, ``/status`` kept apart from the main
resource: each write is applied whole or not at all.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import jsonpatch
import jsonpointer
import kmock

# kmock exports Response but leaves it out of __all__; kmock is pinned (==0.8) and used through
# its internals anyway, so it is imported from where it is defined.
from kmock._internal.rendering import Response

from support.emulator.admission import convert_string_data, metadata_causes
from support.emulator.deletion import Deletion
from support.emulator.errors import (
    Cause,
    bad_request,
    conflict,
    failure,
    invalid,
    not_found,
    qualified,
)
from support.emulator.kinds import (
    CRDS,
    GENERATE_NAME_ALPHABET,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVER_MANAGED_META,
    SERVICEACCOUNTS,
    JsonDict,
    ObjectKey,
)
from support.emulator.openapi import apply_defaults, prune
from support.emulator.store import utc_now


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (kmock's own merge refuses a dict replacing a scalar)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@attrs.define(kw_only=True)
class Writes(Deletion):
    """The write verbs: each request's change applied to the store, or refused as a server would."""

    #: Refuse namespaced objects in namespaces that do not exist (a real server's 404).
    namespaces_must_exist: bool = True

    def _write(self, request: kmock.Request) -> Response:
        """Apply one write request to the state; return the answer a real server gives."""
        res = self._require_known(request.resource)
        name, sub, method = request.name, request.subresource, request.method
        if method == kmock.method.POST and name is None:
            if self.resources[res].verbs == {"create"}:
                return Response(status=201, payload=self._review(res, self._body(request)))
            created = self._create(res, request.namespace, self._body(request))
            return Response(status=201, payload=created)
        if name is None:
            if method == kmock.method.DELETE:
                return Response(status=200, payload=self._delete_collection(request))
            raise failure(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        key = self._key(res, request.namespace, name)
        if method == kmock.method.POST and res == SERVICEACCOUNTS and sub == "token":
            return Response(status=201, payload=self._token_request(key, self._body(request)))
        if sub not in (None, "status") or (sub == "status" and not self._has_status(res)):
            raise failure(404, "NotFound", "the server could not find the requested resource")
        if method in (kmock.method.PATCH, kmock.method.PUT):
            return Response(status=200, payload=self._update(request, key))
        if method == kmock.method.DELETE and sub is None:
            return self._delete_request(request, key)
        raise failure(405, "MethodNotAllowed", f"{method} is not allowed here")

    @staticmethod
    def _body(request: kmock.Request) -> JsonDict:
        if not isinstance(request.data, dict):
            raise bad_request("the request body must be a JSON object")
        return copy.deepcopy(request.data)

    def _create(self, res: kmock.resource, url_namespace: str | None, body: JsonDict) -> JsonDict:
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = body["metadata"] = {}
        namespace: str | None = None
        if self._namespaced(res):
            namespace = url_namespace or meta.get("namespace")
            if meta.get("namespace") and url_namespace and meta["namespace"] != url_namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                   "namespace sent on the request")
            if not namespace:
                raise bad_request("a namespace is required for a namespaced resource")
            if self.namespaces_must_exist and self._current((NAMESPACES, None, namespace)) is None:
                raise not_found(NAMESPACES, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(self._kind(res), res.group or "", "", [Cause(
                    "FieldValueRequired", "metadata.name", "name or generateName is required")])
            meta["name"] = self._generate_name(res, namespace, meta["generateName"])
        key = self._key(res, namespace, meta["name"])
        if self._current(key) is not None:
            raise failure(409, "AlreadyExists",
                           f'{qualified(res)} "{meta["name"]}" already exists',
                           name=meta["name"], group=res.group, kind=res.plural)
        for field in SERVER_MANAGED_META:
            meta.pop(field, None)
        body.setdefault("apiVersion", self._api_version(res))
        body.setdefault("kind", self._kind(res))
        if self._has_status(res):
            body.pop("status", None)  # status is written through /status only
        body = self._admit(res, body)
        meta = body["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=utc_now(), generation=1)
        if res == NAMESPACES:
            body["status"] = {"phase": "Active"}
        elif res == PODS:
            body.setdefault("status", {"phase": "Pending"})
        elif res == CRDS:
            self._register_crd(body)
        return self._commit(key, body, None, "ADDED")

    def _generate_name(self, res: kmock.resource, namespace: str | None, prefix: str) -> str:
        while True:
            suffix = "".join(secrets.choice(GENERATE_NAME_ALPHABET) for _ in range(5))
            if self._current(self._key(res, namespace, prefix + suffix)) is None:
                return prefix + suffix

    def _admit(self, res: kmock.resource, body: JsonDict,
               old: JsonDict | None = None) -> JsonDict:
        """What the server does to every written object: conversions, pruning, defaults, checks
        (``old``: the stored object, on an update, for CEL transition rules and ratcheting)."""
        if res == SECRETS:
            convert_string_data(body)
        custom = self._custom.get(res)
        if custom is not None and custom.schema is not None:
            body = prune(body, custom.schema, embedded=True)
            apply_defaults(body, custom.schema)
        causes = metadata_causes(body, namespaces=res == NAMESPACES)
        if custom is not None:
            causes += custom.causes(body, old, causes)
        if causes:
            raise invalid(self._kind(res), res.group or "", body["metadata"].get("name"), causes)
        return body

    def _update(self, request: kmock.Request, key: ObjectKey) -> JsonDict:
        """PATCH (JSON, merge, strategic-as-merge) or PUT, of the object or of its /status."""
        res, name = key[0], key[2]
        old = self._existing(key)
        new, expected_version = self._patched(request, res, old)
        if expected_version is not None and expected_version != old["metadata"]["resourceVersion"]:
            raise conflict(res, name, "the object has been modified; please apply your changes "
                                       "to the latest version and try again")
        if not isinstance(new, dict):
            raise bad_request("the patched object is not a JSON object")
        if request.subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
        elif self._has_status(res):
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        for field in ("name", "namespace"):
            if meta.get(field, old["metadata"].get(field)) != old["metadata"].get(field):
                raise bad_request(f"the {field} of the object does not match the {field} of "
                                   f"the existing object ({old['metadata'].get(field)})")
        for field in (*SERVER_MANAGED_META, "name", "namespace"):
            meta.pop(field, None)
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))
        if old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise invalid(self._kind(res), res.group or "", name, [Cause(
                    "FieldValueForbidden", "metadata.finalizers",
                    f"Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {sorted(added)}")])
        new = self._admit(res, new, old)
        if res == CRDS:
            self._register_crd(new)
        return self._replace(key, new, old)

    def _patched(self, request: kmock.Request, res: kmock.resource,
                 old: JsonDict) -> tuple[Any, str | None]:
        """The body after the request's patch or replacement, and the version it insists on."""
        if request.method == kmock.method.PUT:
            body = self._body(request)
            return body, (body.get("metadata") or {}).get("resourceVersion")
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"),
                            "").split(";")[0].strip()
        if content_type == "application/json-patch+json":
            if not isinstance(request.data, list):
                raise bad_request("a JSON patch must be a list of operations")
            try:
                return jsonpatch.apply_patch(copy.deepcopy(old), request.data), None
            except jsonpatch.InvalidJsonPatch as exc:
                raise bad_request(str(exc)) from exc
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise failure(422, "Invalid", f"the server rejected our request due to an error "
                                               f"in our request: {exc}") from exc
        merge_types = ["application/merge-patch+json"]
        if res not in self._custom:  # a real server refuses strategic merge on custom resources
            merge_types.append("application/strategic-merge-patch+json")
        if content_type in merge_types:
            if not isinstance(request.data, dict):
                raise bad_request("a merge patch must be a JSON object")
            expected = (request.data.get("metadata") or {}).get("resourceVersion")
            return merge_patch(copy.deepcopy(old), request.data), expected
        raise failure(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types "
                       f"include: {', '.join(['application/json-patch+json', *merge_types])}")
