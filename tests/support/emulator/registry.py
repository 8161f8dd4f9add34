"""The resources the emulator serves: kmock's built-in kinds and registered CRDs.

Knowing a resource (its kind, scope, subresources, and for a CRD its schema and CEL rules) is
separate from storing its objects, so this is the lowest layer of :class:`KubeEmulator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import kmock

from support.crd_rules import CelRules, crd_violations
from support.emulator.admission import CustomResource
from support.emulator.errors import Cause, failure, invalid
from support.emulator.kinds import CUSTOM_VERBS
from support.emulator.openapi import to_json_schema


@attrs.define(kw_only=True)
class ResourceRegistry(kmock.KubernetesEmulator):
    """kmock's resource catalogue, plus what the emulator keeps of each CRD's served versions."""

    #: Evaluate CRDs' ``x-kubernetes-validations`` CEL rules on custom resources (create,
    #: update, patch, /status), as every API server since 1.25 does. ``cel=False`` plays an API
    #: server older than 1.25, or one with CEL off: the rules are still checked in the CRD, but
    #: objects that break them are stored, so that tests reach a client's own checks behind them.
    #: Duplicates in list-type set and map lists are refused either way (checked since 1.18).
    cel: bool = True

    _custom: dict[kmock.resource, CustomResource] = attrs.field(factory=dict, init=False)

    def _require_known(self, res: kmock.resource | None) -> kmock.resource:
        if res is None or res not in self.resources:
            raise failure(404, "NotFound", "the server could not find the requested resource")
        return res

    def _namespaced(self, res: kmock.resource) -> bool:
        return bool(self.resources[res].namespaced) if res in self.resources else False

    def _kind(self, res: kmock.resource) -> str:
        kind = self.resources[res].kind if res in self.resources else None
        return kind or (res.plural or "").capitalize()

    @staticmethod
    def _api_version(res: kmock.resource) -> str:
        return f"{res.group}/{res.version}" if res.group else str(res.version)

    def _has_status(self, res: kmock.resource) -> bool:
        return res in self.resources and "status" in self.resources[res].subresources

    def _register_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (group and plural and kind):
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                           (crd.get("metadata") or {}).get("name"),
                           [Cause("FieldValueRequired", "spec", "group, names.plural and "
                                   "names.kind are required")])
        violations = crd_violations(crd)  # what a real server refuses in the schemas
        if violations:
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                           (crd.get("metadata") or {}).get("name"),
                           [Cause(v.reason, v.field, v.message) for v in violations])
        registered = []
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            res = kmock.resource(group, version["name"], plural)
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            validator = None
            if schema is not None:
                json_schema = to_json_schema(schema)
                try:
                    jsonschema.Draft4Validator.check_schema(json_schema)
                except jsonschema.exceptions.SchemaError as exc:
                    raise invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                                   (crd.get("metadata") or {}).get("name"),
                                   [Cause("FieldValueInvalid", "spec.versions.schema",
                                           exc.message)]) from exc
                validator = jsonschema.Draft4Validator(json_schema)
            subresources = set((version.get("subresources") or {}).keys())
            self.resources[res] = kmock.ResourceInfo(
                namespaced=spec.get("scope", "Namespaced") == "Namespaced", kind=kind,
                singular=names.get("singular", kind.lower()), verbs=CUSTOM_VERBS,
                shortnames=names.get("shortNames", []), categories=names.get("categories", []),
                subresources=subresources)
            rules = CelRules(schema) if self.cel and schema is not None else None
            self._custom[res] = CustomResource(kind=kind, group=group, schema=schema,
                                                validator=validator, rules=rules or None)
            registered.append(res)
        return registered
