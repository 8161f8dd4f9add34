"""A Kubernetes API server for tests: kmock's ``KubernetesEmulator`` minus the gaps that break kopf.

No real API server can run on the project's machines (see ``/work/shared/ENVIRONMENT.md``), so the
operator is tested against this emulator over real HTTP. Plain kmock 0.8 breaks kopf in several
ways; :class:`KubeEmulator` keeps kmock's routing, reaction DSL, discovery and object store, and
replaces the state logic so that it behaves the way a real server does where operators notice:

* metadata: ``uid``, ``resourceVersion`` (one global counter, bumped on every change),
  ``creationTimestamp``, ``generation`` (bumped on spec changes only), ``generateName``;
* LIST answers ``<Kind>List`` with the current resourceVersion, selectors and pagination;
  WATCH resumes from a resourceVersion (410 Gone when the history no longer reaches back),
  honours ``timeoutSeconds``, and turns selector transitions into ADDED/DELETED as a server does;
* finalizers and ``deletionTimestamp``; ownerReference garbage collection (background/orphan);
* JSON-patch ``test`` failures are 422, stale ``metadata.resourceVersion`` is 409, PUT works;
* ``/status`` is isolated from the main resource when the resource declares it;
* ``GET /api/v1/namespaces`` works (kmock's path parser reads it as a namespace prefix);
* custom resources are pruned, defaulted and validated against the CRD's ``openAPIV3Schema``
  (422 with a ``Status`` naming the field, in the server's words for the usual violations);
  Secret ``stringData`` becomes base64 ``data``;
* the CRD's ``x-kubernetes-validations`` CEL rules are evaluated on every create, update, patch
  and ``/status`` write of its custom resources (``support.crd_rules.CelRules``: rules at any
  node, transition rules on updates where the old value exists, messageExpression, fieldPath,
  reason, ratcheting), each failure a cause of the 422 in the real server's words; no rule runs
  after a schema error that blocks them, as there. ``KubeEmulator(cel=False)`` plays an API
  server older than 1.25, or one with CEL off: objects breaking the rules are stored, so that a
  test can reach a client's own checks behind them;
* ``x-kubernetes-list-type`` set and map lists hold no item twice and no two items with the same
  map keys (``support.crd_rules.list_violations``): ``Duplicate value`` at the later index, in
  the real server's words, after the schema's errors and before the CEL rules'; with CEL off too
  (older than CEL, a server has checked them since 1.18); not on an update of an object stored
  with a duplicate (the server skips the check when the old object fails it);
* TokenReview and TokenRequest answer from a token registry or a pluggable callback;
* an opt-in request recorder (``recorded_calls``): each request as an authorizer sees it (token,
  verb, group, resource, subresource, namespace), to check RBAC rules against real calls;
* an opt-in authorizer (``authorizer``): a request it refuses is answered 403 Forbidden with the
  real server's message, to see how a client copes with a rule its RBAC lacks;
* CRDs are checked as the real server checks them (``support.crd_rules``: structural schema,
  the CRD's own validation, the field names of CEL rules); a refused CRD is a 422, as there;
* kmock's request log is trimmed to the last few requests: kmock matches every request against
  the whole log, which made the server slow down linearly (ENVIRONMENT.md, item 6).

Usage::

    emulator = KubeEmulator()
    emulator.load_crds(REPO / "crds")
    emulator.register_token("t0k3n", namespace="ns", service_account="runner", pod_name="p")
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        api = server.api_client()       # kubernetes.client.ApiClient for this server
        ...
        objects = server.dump_objects()  # every version of every object, for canary checks

The emulator's state belongs to its event loop: while the server runs, touch it from other
threads only through :meth:`KubeEmulatorServer.call` (``dump_objects`` and friends do that).

Pitfall: ``kubernetes.config`` reads ``$KUBECONFIG`` once, at import
(``kube_config.KUBE_CONFIG_DEFAULT_LOCATION``), so setting the variable in a test does not reach
``load_kube_config()`` or kopf's default ``login_via_client``. Build clients from the file
explicitly (:meth:`KubeEmulatorServer.api_client`), log kopf in with
:meth:`KubeEmulatorServer.kopf_connection_info` from an ``@kopf.on.login`` handler, or set the
variable before ``kubernetes`` is first imported.

Not emulated (a real cluster or the e2e suite covers them): controllers (Jobs never run, Pods
never start: set their status through ``/status`` to play one), RBAC and authentication of
callers (unless an ``authorizer`` is given), admission webhooks, CEL cost budgets, ratcheting
of schema errors on updates, schemas of built-in kinds, strategic-merge list semantics (treated
as a JSON merge patch), server-side apply, ``dryRun``, conversion between CRD versions (each
served version is stored apart), removing a CRD's resources when the CRD is deleted, foreground
deletion (treated as background), and a namespace's Terminating phase (its objects are deleted
at once; those with finalizers stay marked).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import copy
import dataclasses
import datetime
import gzip
import importlib.resources
import json
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import kmock
import yaml
from kmock import Response  # type: ignore[attr-defined]  # exported, but not in kmock.__all__

from support.crd_rules import (
    BLOCKING_REASONS,
    NOT_CHECKED,
    CelRules,
    crd_violations,
    list_violations,
)

if TYPE_CHECKING:
    import kopf
    import kubernetes.client

__all__ = [
    "ApiCall",
    "KubeEmulator",
    "KubeEmulatorServer",
    "TokenIdentity",
    "TokenReviewer",
]

JsonDict = dict[str, Any]
T = TypeVar("T")

NAMESPACES: Final = kmock.resource("", "v1", "namespaces")
PODS: Final = kmock.resource("", "v1", "pods")
SECRETS: Final = kmock.resource("", "v1", "secrets")
SERVICEACCOUNTS: Final = kmock.resource("", "v1", "serviceaccounts")
CRDS: Final = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
TOKENREVIEWS: Final = kmock.resource("authentication.k8s.io", "v1", "tokenreviews")

DEFAULT_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_AUDIENCES: Final = ("https://kubernetes.default.svc.cluster.local",)
CUSTOM_VERBS: Final = frozenset(
    {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})
SERVER_MANAGED_META: Final = (
    "uid", "creationTimestamp", "generation", "resourceVersion",
    "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields",
)
GENERATE_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # as the API server's

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# kmock's path parser reads /api/v1/namespaces[/NAME[/status|finalize]] as a namespace prefix.
_NAMESPACE_OBJECT_PATH = re.compile(r"/api/v1/namespaces(/[^/]+(/(status|finalize))?)?/?")
_NAMESPACES_PREFIX = "/api/v1/namespaces"
_NAMESPACES_ALIAS = "/api/v1/namespaces//namespaces"


# --- errors --------------------------------------------------------------------------------------


def _failure(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Kubernetes ``Status`` failure, rendered by kmock exactly as a real server sends it."""
    return kmock.KubernetesError(status=code, reason=reason, message=message,
                                 details={k: v for k, v in details.items() if v is not None})


def _qualified(resource: kmock.resource) -> str:
    return str(resource.plural) if not resource.group else f"{resource.plural}.{resource.group}"


def _not_found(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
    return _failure(404, "NotFound", f'{_qualified(resource)} "{name}" not found',
                    name=name, group=resource.group, kind=resource.plural)


def _conflict(resource: kmock.resource, name: str, why: str) -> kmock.KubernetesError:
    return _failure(409, "Conflict",
                    f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}',
                    name=name, group=resource.group, kind=resource.plural)


def _bad_request(message: str) -> kmock.KubernetesError:
    return _failure(400, "BadRequest", message)


@dataclasses.dataclass(frozen=True)
class _Cause:
    """One field error of a 422 answer, as in ``Status.details.causes``."""

    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _invalid(kind: str, group: str, name: str | None,
             causes: Sequence[_Cause]) -> kmock.KubernetesError:
    qualified_kind = f"{kind}.{group}" if group else kind
    text = str(causes[0]) if len(causes) == 1 else f"[{', '.join(map(str, causes))}]"
    return _failure(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {text}',
                    name=name, group=group, kind=kind,
                    causes=[{"reason": c.reason, "message": c.message, "field": c.field}
                            for c in causes])


# --- selectors -----------------------------------------------------------------------------------

Selector = Callable[[Mapping[str, Any]], bool]


def _split_outside_parens(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


@dataclasses.dataclass(frozen=True)
class _LabelRequirement:
    """One requirement of a label selector."""

    key: str
    op: str  # exists, !, =, !=, in, notin, <, >
    values: frozenset[str] = frozenset()

    def __call__(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op in ("<", ">"):
            try:
                number, limit = int(value or ""), int(next(iter(self.values)))
            except ValueError:
                return False
            return number < limit if self.op == "<" else number > limit
        return {
            "exists": value is not None,
            "!": value is None,
            "=": value in self.values,
            "in": value in self.values,
            "!=": value not in self.values,
            "notin": value not in self.values,
        }[self.op]


_LABEL_REQUIREMENT = re.compile(
    r"(?P<absent>!)?\s*(?P<key>[A-Za-z0-9._/-]+)"
    r"(?:\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?")


def parse_label_selector(text: str) -> Selector:
    """A label selector as the API server reads it: ``=``, ``==``, ``!=``, ``in``, ``notin``,
    ``key``, ``!key``, ``<``, ``>``; anything else is a 400."""
    requirements: list[_LabelRequirement] = []
    for requirement in _split_outside_parens(text):
        match = _LABEL_REQUIREMENT.fullmatch(requirement)
        if match is None or (match["absent"] and (match["op"] or match["setop"])):
            raise _bad_request(f"unable to parse requirement: {requirement!r}")
        if match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_LabelRequirement(match["key"], match["setop"], values))
        elif match["op"]:
            op = "=" if match["op"] == "==" else match["op"]
            requirements.append(_LabelRequirement(match["key"], op, frozenset([match["value"]])))
        else:
            op = "!" if match["absent"] else "exists"
            requirements.append(_LabelRequirement(match["key"], op))

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in requirements)

    return matches


@dataclasses.dataclass(frozen=True)
class _FieldRequirement:
    """One requirement of a field selector, on a dotted path."""

    path: tuple[str, ...]
    value: str
    equal: bool

    def __call__(self, obj: Mapping[str, Any]) -> bool:
        found: Any = obj
        for part in self.path:
            found = found.get(part) if isinstance(found, Mapping) else None
        text = "" if found is None else str(found)
        if isinstance(found, bool):
            text = text.lower()  # Go renders booleans as true/false
        return (text == self.value) == self.equal


def parse_field_selector(text: str) -> Selector:
    """A field selector: ``path=value``, ``path==value``, ``path!=value`` on dotted paths
    (``metadata.name``, ``metadata.namespace``, ``status.phase``, ``involvedObject.uid``...)."""
    requirements: list[_FieldRequirement] = []
    for requirement in _split_outside_parens(text):
        match = re.fullmatch(r"(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)",
                             requirement)
        if match is None:
            raise _bad_request(f"invalid field selector: {requirement!r}")
        requirements.append(_FieldRequirement(tuple(match["path"].split(".")), match["value"],
                                              equal=match["op"] != "!="))
    return lambda obj: all(requirement(obj) for requirement in requirements)


# --- CRD schemas ---------------------------------------------------------------------------------

_SCHEMA_MAPS: Final = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE: Final = ("not", "additionalItems")


def to_json_schema(schema: Mapping[str, Any]) -> JsonDict:
    """Translate a CRD's OpenAPI v3 (structural) schema into a JSON schema (draft 4).

    ``x-kubernetes-*`` keys are dropped; ``x-kubernetes-int-or-string`` becomes integer-or-string;
    ``nullable: true`` admits null. Pruning of unknown fields is done apart (:func:`_prune`), and
    so are the unique items of list-type set and map lists (``support.crd_rules.list_violations``,
    as a real server: its schema validator does not check them).
    """
    result: JsonDict = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            result[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            result[key] = [to_json_schema(sub) for sub in value]
        elif key in (*_SCHEMA_ONE, "items", "additionalProperties") and isinstance(value, Mapping):
            result[key] = to_json_schema(value)
        elif key == "items" and isinstance(value, list):
            result[key] = [to_json_schema(sub) for sub in value]
        else:
            result[key] = copy.deepcopy(value)
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in result:
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and isinstance(result.get("type"), str):
        result["type"] = [result["type"], "null"]
    return result


def _prune(value: Any, schema: Mapping[str, Any], *, embedded: bool = False) -> Any:
    """Drop fields the schema does not declare, and nulls it does not allow, as a server does."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or additional is True
        embedded = embedded or bool(schema.get("x-kubernetes-embedded-resource"))
        result: JsonDict = {}
        for key, item in value.items():
            if embedded and key in ("apiVersion", "kind", "metadata"):
                result[key] = item
                continue
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is None:
                if preserve:
                    result[key] = item  # unknown but preserved: kept whole
                continue
            if item is None and not sub.get("nullable"):
                continue
            result[key] = _prune(item, sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_prune(item, schema["items"]) for item in value]
    return value


def _apply_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    """Fill absent fields from the schema's ``default`` values, in place, as a server does."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key in value.keys() - properties.keys():
                _apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _apply_defaults(item, schema["items"])


def _field_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_JSON_TYPE_NAMES: Final = {bool: "boolean", int: "integer", float: "number", str: "string",
                           list: "array", dict: "object", type(None): "null"}


def _schema_causes(error: jsonschema.exceptions.ValidationError) -> list[_Cause]:
    """Phrase a jsonschema error the way the API server phrases the same violation."""
    field = _field_path(error.absolute_path)
    instance = error.instance
    if error.validator == "required":
        return [_Cause("FieldValueRequired", f"{field}.{name}" if field else str(name),
                       "Required value")
                for name in error.validator_value if name not in instance]
    shown = json.dumps(instance) if not isinstance(instance, dict | list) else repr(instance)
    if error.validator == "type":
        actual = _JSON_TYPE_NAMES.get(type(instance), "unknown")
        return [_Cause("FieldValueTypeInvalid", field,
                       f'Invalid value: "{actual}": {field} in body must be of type '
                       f'{error.validator_value}: "{actual}"')]
    if error.validator == "maxLength":
        unit = "byte" if error.validator_value == 1 else "bytes"
        return [_Cause("FieldValueTooLong", field,
                       f"Too long: may not be more than {error.validator_value} {unit}")]
    if error.validator in ("maxItems", "maxProperties"):
        unit = "item" if error.validator_value == 1 else "items"
        return [_Cause("FieldValueTooMany", field, f"Too many: {len(instance)}: must have at "
                       f"most {error.validator_value} {unit}")]
    if error.validator == "enum":
        supported = ", ".join(json.dumps(v) for v in error.validator_value)
        return [_Cause("FieldValueNotSupported", field,
                       f"Unsupported value: {shown}: supported values: {supported}")]
    detail, limit = _OPENAPI_DETAILS.get(str(error.validator)), error.validator_value
    if error.validator in ("minimum", "maximum") and error.schema.get(
            f"exclusive{str(error.validator).capitalize()}"):
        detail = "should be greater than {}" if error.validator == "minimum" else \
            "should be less than {}"
    if error.validator in ("minItems", "minProperties"):
        shown = str(len(instance))
    if detail is not None:
        return [_Cause("FieldValueInvalid", field,
                       f"Invalid value: {shown}: {field} in body {detail.format(limit)}")]
    return [_Cause("FieldValueInvalid", field,
                   f"Invalid value: {shown}: {field} in body {error.message}")]


#: kube-openapi's words for the value validations that are Invalid errors (errors/schema.go).
_OPENAPI_DETAILS: Final = {
    "pattern": "should match '{}'",
    "minimum": "should be greater than or equal to {}",
    "maximum": "should be less than or equal to {}",
    "minLength": "should be at least {} chars long",
    "minItems": "should have at least {} items",
    "minProperties": "should have at least {} properties",
    "multipleOf": "should be a multiple of {}"}


@dataclasses.dataclass(frozen=True)
class _CustomResource:
    """What the emulator keeps of one served version of a CRD."""

    kind: str
    group: str
    schema: Mapping[str, Any] | None  # the structural schema, for pruning and defaults
    validator: jsonschema.protocols.Validator | None
    rules: CelRules | None = None  # its x-kubernetes-validations; None: none, or CEL off

    def causes(self, body: Mapping[str, Any], old: Mapping[str, Any] | None = None,
               found: Sequence[_Cause] = ()) -> list[_Cause]:
        """The schema's errors, the duplicates in its set and map lists, then its CEL rules'
        (``old``: on an update), as a server lists them after ``found`` (the metadata's): no
        rule runs after an error that blocks them. The list duplicates are checked with CEL off
        too (a server has done so since 1.18), and not at all on an update of an object stored
        with some (the server's ratchet)."""
        causes: list[_Cause] = []
        if self.validator is not None:
            errors = sorted(self.validator.iter_errors(body),
                            key=lambda e: list(map(str, e.path)))
            causes = [cause for error in errors for cause in _schema_causes(error)]
        if self.schema is not None and (old is None or not list_violations(self.schema, old)):
            causes += [_Cause(v.reason, v.field, v.message)
                       for v in list_violations(self.schema, body)]
        if self.rules:
            if any(c.reason in BLOCKING_REASONS for c in (*found, *causes)):
                causes.append(_Cause(NOT_CHECKED.reason, NOT_CHECKED.field, NOT_CHECKED.message))
            else:
                causes += [_Cause(v.reason, v.field, v.message)
                           for v in self.rules.violations(body, old)]
        return causes


# --- metadata checks -----------------------------------------------------------------------------


def _metadata_causes(body: Mapping[str, Any], *, namespaces: bool) -> list[_Cause]:
    """The ObjectMeta checks every real server applies: names, labels, ownerReferences."""
    meta: Mapping[str, Any] = body.get("metadata") or {}
    causes: list[_Cause] = []
    name = meta.get("name", "")
    pattern, limit = (_DNS_LABEL, 63) if namespaces else (_DNS_SUBDOMAIN, 253)
    if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
        causes.append(_Cause("FieldValueInvalid", "metadata.name",
                             f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 "
                             f"{'label' if namespaces else 'subdomain'} must consist of lower case "
                             "alphanumeric characters, '-' or '.', and must start and end with an "
                             "alphanumeric character"))
    labels = meta.get("labels") or {}
    for key, value in labels.items() if isinstance(labels, Mapping) else ():
        if not _is_qualified_name(key):
            causes.append(_Cause("FieldValueInvalid", "metadata.labels",
                                 f"Invalid value: {json.dumps(key)}: name part must consist of "
                                 "alphanumeric characters, '-', '_' or '.'"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            causes.append(_Cause("FieldValueInvalid", "metadata.labels",
                                 f"Invalid value: {json.dumps(value)}: a valid label must be an "
                                 "empty string or consist of alphanumeric characters, '-', '_' or "
                                 "'.', and must start and end with an alphanumeric character"))
    references = [ref if isinstance(ref, Mapping) else {}
                  for ref in meta.get("ownerReferences") or []]
    for reference in references:
        for field, noun in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"),
                            ("uid", "uid")):
            if not reference.get(field):
                causes.append(_Cause("FieldValueInvalid", f"metadata.ownerReferences.{field}",
                                     f'Invalid value: "": {noun} must not be empty'))
    if sum(1 for reference in references if reference.get("controller")) > 1:
        causes.append(_Cause("FieldValueInvalid", "metadata.ownerReferences",
                             "Only one reference can have Controller set to true"))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, Mapping) and sum(
            len(str(k).encode()) + len(str(v).encode())
            for k, v in annotations.items()) > ANNOTATIONS_MAX_BYTES:
        causes.append(_Cause("FieldValueTooLong", "metadata.annotations",
                             f"Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"))
    return causes


#: The API server's limit on all of an object's annotations together (keys and values).
ANNOTATIONS_MAX_BYTES: Final = 256 * 1024


def _is_qualified_name(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (kmock's own merge refuses a dict replacing a scalar)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _spec_part(body: Mapping[str, Any]) -> JsonDict:
    """What ``metadata.generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in body.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _without_version(body: Mapping[str, Any]) -> JsonDict:
    meta = dict(body.get("metadata") or {})
    meta.pop("resourceVersion", None)
    return {**body, "metadata": meta}


# --- tokens --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenIdentity:
    """Who a bearer token belongs to, as a TokenReview reports it.

    With ``pod_name`` and ``pod_uid`` the token is bound to that pod: once the emulator has seen
    the pod and it is gone or has another uid, the token stops being valid, as on a real cluster.
    An empty ``audiences`` accepts any audience asked for.
    """

    namespace: str
    service_account: str
    pod_name: str | None = None
    pod_uid: str | None = None
    audiences: tuple[str, ...] = ()
    service_account_uid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))


#: ``(token, audiences asked for) -> identity or None``: plug one in to answer TokenReviews.
TokenReviewer = Callable[[str, Sequence[str]], TokenIdentity | None]


# --- recording requests --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ApiCall:
    """One request as the API server's authorizer sees it (RBAC's request attributes).

    ``verb`` is RBAC's: get, list, watch (a GET with ``watch=true``), create, update (PUT), patch,
    delete, deletecollection; for a non-resource URL (discovery: ``/api``, ``/apis/...``) it is
    the HTTP method in lower case and ``resource`` is empty. ``namespace`` is None for a
    cluster-scoped object and for a request across all namespaces; ``namespaced`` says whether
    the resource itself is namespaced.
    """

    token: str  # the bearer token that made the request; "" without one
    verb: str
    group: str  # "" for the core group
    resource: str  # the plural; "" for a non-resource URL
    subresource: str | None
    namespace: str | None
    namespaced: bool
    path: str

    @property
    def rbac_resource(self) -> str:
        """``pods``, or ``pods/status`` for a subresource: how an RBAC rule names it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _bearer_token(request: kmock.Request) -> str:
    value = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


_VERBS: Final = {kmock.method.POST: "create", kmock.method.PUT: "update",
                 kmock.method.PATCH: "patch"}


# --- the emulator --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Change:
    """One entry of the watch history: the object after the change and before it."""

    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: JsonDict  # for DELETED: the last state
    old: JsonDict | None


ObjectKey = tuple[kmock.resource, str | None, str]


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the behaviour of a real API server that operators rely on.

    State changes happen synchronously on the emulator's loop, so each request is atomic. kmock's
    reaction DSL still works on top (``emulator["create pods"] << 500`` and so on), with kmock's
    semantics: writes change the state even when a reaction answers them.
    """

    #: How many requests kmock keeps for its request assertions (``list(emulator)``,
    #: ``emulator["post"]``...). kmock scans the whole log on every request, so a long log makes
    #: the server slow down linearly. Count-based slices (``emulator["get"][:3]``) count within
    #: this window: raise it in a test that relies on them.
    request_log_size: int = 20
    #: Watch events kept per resource; a watch from an older resourceVersion gets 410 Gone.
    history_size: int = 10_000
    #: Refuse namespaced objects in namespaces that do not exist (a real server's 404).
    namespaces_must_exist: bool = True
    #: Valid bearer tokens; TokenRequests add theirs here.
    tokens: dict[str, TokenIdentity] = attrs.field(factory=dict)
    #: Answers TokenReviews instead of ``tokens`` when set.
    token_reviewer: TokenReviewer | None = None
    #: Opt-in: set it to a list, and every request is appended to it as an :class:`ApiCall`.
    recorded_calls: list[ApiCall] | None = None
    #: Opt-in RBAC: every request is asked of it (as an :class:`ApiCall`, after it is recorded);
    #: a False answers 403 Forbidden as a real server's authorizer does, and changes nothing.
    authorizer: Callable[[ApiCall], bool] | None = None
    #: Evaluate CRDs' ``x-kubernetes-validations`` CEL rules on custom resources (create,
    #: update, patch, /status), as every API server since 1.25 does. ``cel=False`` plays an API
    #: server older than 1.25, or one with CEL off: the rules are still checked in the CRD, but
    #: objects that break them are stored, so that tests reach a client's own checks behind them.
    #: Duplicates in list-type set and map lists are refused either way (checked since 1.18).
    cel: bool = True

    _revision: int = attrs.field(default=0, init=False)
    _changes: dict[kmock.resource, collections.deque[_Change]] = attrs.field(factory=dict,
                                                                              init=False)
    _compacted: dict[kmock.resource, int] = attrs.field(factory=dict, init=False)
    _ticks: dict[kmock.resource, asyncio.Event] = attrs.field(factory=dict, init=False)
    _custom: dict[kmock.resource, _CustomResource] = attrs.field(factory=dict, init=False)
    _outcomes: dict[int, Response] = attrs.field(factory=dict, init=False)
    _own_payloads: int = attrs.field(default=0, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    RETURNS_DELETED_OBJECT: ClassVar[frozenset[kmock.resource]] = frozenset({PODS})

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's own load_bundled() calls the deprecated importlib.resources.read_binary().
        bundled = importlib.resources.files("kmock._internal") / "resources.json.gz"
        self.resources.load_data(gzip.decompress(bundled.read_bytes()))
        # Above kmock's own fallbacks (same -inf tier, sub-priority 1): the answers to writes.
        (self.fallback ** 1)[self._has_outcome] << self._serve_outcome
        self._own_payloads = len(self._payloads)  # more: a test added reactions of its own
        for name in DEFAULT_NAMESPACES:
            self.create(NAMESPACES, {"metadata": {"name": name}})

    # --- public, synchronous API (call it before the server starts or via server.call) ---------

    def create(self, resource: kmock.resource | str, body: Mapping[str, Any]) -> JsonDict:
        """Create an object as a POST would (validation, defaults, events); return it."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        namespace = (body.get("metadata") or {}).get("namespace")
        return self._create(res, namespace, copy.deepcopy(dict(body)))

    def load_crds(self, path: str | Path) -> list[kmock.resource]:
        """Register every CustomResourceDefinition in a YAML file or a folder of them.

        The CRDs are stored as objects too (as ``kubectl apply`` would leave them), and their
        custom resources are then pruned, defaulted and validated against ``openAPIV3Schema``.
        Documents of other kinds are skipped. Returns the resources registered. A CRD that a real
        server refuses (:func:`support.crd_rules.crd_violations`) raises the server's 422
        (``kmock.KubernetesError``, its message the server's) and is not registered.
        """
        root = Path(path)
        files = [root]
        if root.is_dir():
            files = sorted(root.glob("*.y*ml")) + sorted(root.glob("*.json"))
        registered: list[kmock.resource] = []
        for file in files:
            for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    registered.extend(self._register_crd(doc))
                    key = (CRDS, None, doc["metadata"]["name"])
                    if self._current(key) is None:
                        self.create(CRDS, doc)
        return registered

    def register_token(self, token: str, *, namespace: str, service_account: str,
                       pod_name: str | None = None, pod_uid: str | None = None,
                       audiences: Iterable[str] = ()) -> TokenIdentity:
        """Make ``token`` valid for TokenReview, as the service account (and pod) given."""
        identity = TokenIdentity(namespace=namespace, service_account=service_account,
                                 pod_name=pod_name, pod_uid=pod_uid, audiences=tuple(audiences))
        self.tokens[token] = identity
        return identity

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
        self._closing = True
        for tick in self._ticks.values():
            tick.set()

    # --- request plumbing ------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Route namespace-object URLs around kmock's path parser (it fails on them: a 500)."""
        if _NAMESPACE_OBJECT_PATH.fullmatch(raw_request.path):
            rel_url = raw_request.rel_url
            alias = _NAMESPACES_ALIAS + rel_url.path[len(_NAMESPACES_PREFIX):]
            rel_url = rel_url.with_path(alias).with_query(rel_url.query)
            raw_request = raw_request.clone(rel_url=rel_url)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Apply writes to the state (atomically: no await), then let kmock route the request.

        This replaces kmock's ``KubernetesEmulator._handle`` (its state logic has the gaps this
        module fixes) and goes straight to the generic reaction matching of ``RawHandler``.
        """
        self._trim_logs()
        if request.namespace == "" and request.resource == NAMESPACES:
            self._unalias(request)
        if self.recorded_calls is not None or self.authorizer is not None:
            call = self._api_call(request)
            if self.recorded_calls is not None:
                self.recorded_calls.append(call)
            if self.authorizer is not None and not self.authorizer(call):
                raise self._forbidden(call, request.name)
        if request.resource is not None and request.method != kmock.method.GET:
            outcome = self._write(request)
            if len(self._payloads) == self._own_payloads:
                # No reaction of a test's could intercept it: answer at once, without kmock's
                # matching of every reaction (inspect.signature per criterion per request).
                return await outcome(request)
            self._outcomes[id(request)] = outcome
        try:
            return await kmock.RawHandler._handle(self, request)
        finally:
            self._outcomes.pop(id(request), None)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """Answer API errors as a real server does: no traceback in ``details`` (kmock adds one);
        anything else is an emulator bug and keeps kmock's 500 with the traceback."""
        if not isinstance(exc, kmock.KubernetesError):
            return await super()._render_error(exc)
        status: JsonDict = {"apiVersion": "v1", "kind": "Status", "metadata": {},
                            "status": "Failure", "message": exc.message, "reason": exc.reason,
                            "code": exc.status}
        if exc.details:
            status["details"] = exc.details
        return aiohttp.web.json_response(status, status=exc.status)

    def _trim_logs(self) -> None:
        keep = max(1, self.request_log_size)
        del self._requests[:-keep]
        for payload in self._payloads:
            del payload._requests[:-keep]
        if self._errors:
            del self._errors[-1][:-keep]

    @staticmethod
    def _unalias(request: kmock.Request) -> None:
        # kmock's Request is frozen; this one was parsed from the aliased URL made in __call__.
        url = request.url
        path = url.path.replace(_NAMESPACES_ALIAS, _NAMESPACES_PREFIX, 1)
        object.__setattr__(request, "namespace", None)
        object.__setattr__(request, "url", url.with_path(path).with_query(url.query))

    def _has_outcome(self, request: kmock.Request) -> bool:
        return id(request) in self._outcomes

    def _serve_outcome(self, request: kmock.Request) -> Response:
        return self._outcomes[id(request)]

    def _api_call(self, request: kmock.Request) -> ApiCall:
        """The request as RBAC sees it (see :class:`ApiCall`)."""
        res, method, path = request.resource, request.method, request.url.path
        if res is None or not res.plural:
            return ApiCall(_bearer_token(request), str(method.value).lower(), "", "", None, None,
                           False, path)
        if method == kmock.method.GET:
            watching = str(request.params.get("watch", "")).lower() in ("true", "1")
            verb = "watch" if watching else "list" if request.name is None else "get"
        elif method == kmock.method.DELETE:
            verb = "delete" if request.name is not None else "deletecollection"
        else:
            verb = _VERBS.get(method, str(method.value).lower())
        return ApiCall(_bearer_token(request), verb, res.group or "", res.plural,
                       request.subresource, request.namespace, self._namespaced(res), path)

    def _forbidden(self, call: ApiCall, name: str | None) -> kmock.KubernetesError:
        """The real server's 403 (``responsewriters.forbiddenMessage`` and ``NewForbidden``)."""
        identity = self.tokens.get(call.token)
        user = (f"system:serviceaccount:{identity.namespace}:{identity.service_account}"
                if identity is not None else call.token or "system:anonymous")
        if not call.resource:
            return _failure(403, "Forbidden",
                            f'forbidden: User "{user}" cannot {call.verb} path "{call.path}"')
        where = (f'in the namespace "{call.namespace}"' if call.namespace is not None
                 else "at the cluster scope")
        why = (f'User "{user}" cannot {call.verb} resource "{call.rbac_resource}" in API group '
               f'"{call.group}" {where}')
        qualified = f"{call.resource}.{call.group}" if call.group else call.resource
        subject = f'{qualified} "{name}"' if name else qualified
        return _failure(403, "Forbidden", f"{subject} is forbidden: {why}", name=name or None,
                        group=call.group, kind=call.resource)

    # --- resources -------------------------------------------------------------------------------

    def _require_known(self, res: kmock.resource | None) -> kmock.resource:
        if res is None or res not in self.resources:
            raise _failure(404, "NotFound", "the server could not find the requested resource")
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
            raise _invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                           (crd.get("metadata") or {}).get("name"),
                           [_Cause("FieldValueRequired", "spec", "group, names.plural and "
                                   "names.kind are required")])
        violations = crd_violations(crd)  # what a real server refuses in the schemas
        if violations:
            raise _invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                           (crd.get("metadata") or {}).get("name"),
                           [_Cause(v.reason, v.field, v.message) for v in violations])
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
                    raise _invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                                   (crd.get("metadata") or {}).get("name"),
                                   [_Cause("FieldValueInvalid", "spec.versions.schema",
                                           exc.message)]) from exc
                validator = jsonschema.Draft4Validator(json_schema)
            subresources = set((version.get("subresources") or {}).keys())
            self.resources[res] = kmock.ResourceInfo(
                namespaced=spec.get("scope", "Namespaced") == "Namespaced", kind=kind,
                singular=names.get("singular", kind.lower()), verbs=CUSTOM_VERBS,
                shortnames=names.get("shortNames", []), categories=names.get("categories", []),
                subresources=subresources)
            rules = CelRules(schema) if self.cel and schema is not None else None
            self._custom[res] = _CustomResource(kind=kind, group=group, schema=schema,
                                                validator=validator, rules=rules or None)
            registered.append(res)
        return registered

    # --- the store -------------------------------------------------------------------------------

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
            raise _not_found(key[0], key[2])
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
        history = self._changes.setdefault(key[0], collections.deque(maxlen=self.history_size))
        if len(history) == history.maxlen:
            self._compacted[key[0]] = history[0].revision
        history.append(_Change(self._revision, change, body, old))
        tick = self._ticks.pop(key[0], None)
        if tick is not None:
            tick.set()
        return body

    # --- writes ----------------------------------------------------------------------------------

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
            raise _failure(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        key = self._key(res, request.namespace, name)
        if method == kmock.method.POST and res == SERVICEACCOUNTS and sub == "token":
            return Response(status=201, payload=self._token_request(key, self._body(request)))
        if sub not in (None, "status") or (sub == "status" and not self._has_status(res)):
            raise _failure(404, "NotFound", "the server could not find the requested resource")
        if method in (kmock.method.PATCH, kmock.method.PUT):
            return Response(status=200, payload=self._update(request, key))
        if method == kmock.method.DELETE and sub is None:
            return self._delete_request(request, key)
        raise _failure(405, "MethodNotAllowed", f"{method} is not allowed here")

    @staticmethod
    def _body(request: kmock.Request) -> JsonDict:
        if not isinstance(request.data, dict):
            raise _bad_request("the request body must be a JSON object")
        return copy.deepcopy(request.data)

    def _create(self, res: kmock.resource, url_namespace: str | None, body: JsonDict) -> JsonDict:
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = body["metadata"] = {}
        namespace: str | None = None
        if self._namespaced(res):
            namespace = url_namespace or meta.get("namespace")
            if meta.get("namespace") and url_namespace and meta["namespace"] != url_namespace:
                raise _bad_request("the namespace of the provided object does not match the "
                                   "namespace sent on the request")
            if not namespace:
                raise _bad_request("a namespace is required for a namespaced resource")
            if self.namespaces_must_exist and self._current((NAMESPACES, None, namespace)) is None:
                raise _not_found(NAMESPACES, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid(self._kind(res), res.group or "", "", [_Cause(
                    "FieldValueRequired", "metadata.name", "name or generateName is required")])
            meta["name"] = self._generate_name(res, namespace, meta["generateName"])
        key = self._key(res, namespace, meta["name"])
        if self._current(key) is not None:
            raise _failure(409, "AlreadyExists",
                           f'{_qualified(res)} "{meta["name"]}" already exists',
                           name=meta["name"], group=res.group, kind=res.plural)
        for field in SERVER_MANAGED_META:
            meta.pop(field, None)
        body.setdefault("apiVersion", self._api_version(res))
        body.setdefault("kind", self._kind(res))
        if self._has_status(res):
            body.pop("status", None)  # status is written through /status only
        body = self._admit(res, body)
        meta = body["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
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
            _convert_string_data(body)
        custom = self._custom.get(res)
        if custom is not None and custom.schema is not None:
            body = _prune(body, custom.schema, embedded=True)
            _apply_defaults(body, custom.schema)
        causes = _metadata_causes(body, namespaces=res == NAMESPACES)
        if custom is not None:
            causes += custom.causes(body, old, causes)
        if causes:
            raise _invalid(self._kind(res), res.group or "", body["metadata"].get("name"), causes)
        return body

    def _update(self, request: kmock.Request, key: ObjectKey) -> JsonDict:
        """PATCH (JSON, merge, strategic-as-merge) or PUT, of the object or of its /status."""
        res, name = key[0], key[2]
        old = self._existing(key)
        new, expected_version = self._patched(request, res, old)
        if expected_version is not None and expected_version != old["metadata"]["resourceVersion"]:
            raise _conflict(res, name, "the object has been modified; please apply your changes "
                                       "to the latest version and try again")
        if not isinstance(new, dict):
            raise _bad_request("the patched object is not a JSON object")
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
                raise _bad_request(f"the {field} of the object does not match the {field} of "
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
                raise _invalid(self._kind(res), res.group or "", name, [_Cause(
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
                raise _bad_request("a JSON patch must be a list of operations")
            try:
                return jsonpatch.apply_patch(copy.deepcopy(old), request.data), None
            except jsonpatch.InvalidJsonPatch as exc:
                raise _bad_request(str(exc)) from exc
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise _failure(422, "Invalid", f"the server rejected our request due to an error "
                                               f"in our request: {exc}") from exc
        merge_types = ["application/merge-patch+json"]
        if res not in self._custom:  # a real server refuses strategic merge on custom resources
            merge_types.append("application/strategic-merge-patch+json")
        if content_type in merge_types:
            if not isinstance(request.data, dict):
                raise _bad_request("a merge patch must be a JSON object")
            expected = (request.data.get("metadata") or {}).get("resourceVersion")
            return _merge_patch(copy.deepcopy(old), request.data), expected
        raise _failure(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types "
                       f"include: {', '.join(['application/json-patch+json', *merge_types])}")

    def _replace(self, key: ObjectKey, new: JsonDict, old: JsonDict) -> JsonDict:
        """Store a changed object; a no-op change bumps nothing, as on a real server."""
        if _without_version(new) == _without_version(old):
            return old
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(key, new, old)
        return self._commit(key, new, old, "MODIFIED")

    # --- deletion and garbage collection ---------------------------------------------------------

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
                raise _conflict(key[0], key[2], f"Precondition failed: {field}: {wanted}, "
                                                f"{field} in object meta: {meta.get(field)}")
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old, False
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
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

    # --- virtual resources: reviews and token requests ------------------------------------------

    def _review(self, res: kmock.resource, body: JsonDict) -> JsonDict:
        """TokenReview from the token registry or callback; access reviews are always allowed."""
        body.setdefault("apiVersion", self._api_version(res))
        body.setdefault("kind", self._kind(res))
        body["metadata"] = {"creationTimestamp": None}
        if res == TOKENREVIEWS:
            body["status"] = self._token_review_status(body.get("spec") or {})
        elif (res.plural or "").endswith("accessreviews"):
            body["status"] = {"allowed": True, "reason": "the emulator does not enforce RBAC"}
        return body

    def _token_review_status(self, spec: Mapping[str, Any]) -> JsonDict:
        token, wanted = spec.get("token") or "", list(spec.get("audiences") or [])
        reviewer = self.token_reviewer or (lambda t, _: self.tokens.get(t))
        identity = reviewer(token, wanted) if token else None
        if identity is None:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        audiences = list(identity.audiences or DEFAULT_AUDIENCES)
        if wanted:
            audiences = [a for a in wanted if not identity.audiences or a in identity.audiences]
            if not audiences:
                return {"authenticated": False, "user": {},
                        "error": "token audiences are invalid for the target audiences"}
        if identity.pod_name is not None:
            pod_key = (PODS, identity.namespace, identity.pod_name)
            pod = self._current(pod_key)
            other_uid = pod is not None and identity.pod_uid not in (None, pod["metadata"]["uid"])
            if pod_key in self.objects and (pod is None or other_uid):
                return {"authenticated": False, "user": {},
                        "error": f'pod "{identity.pod_name}" not found or has another uid'}
        user = f"system:serviceaccount:{identity.namespace}:{identity.service_account}"
        extra = {}
        if identity.pod_name is not None:
            extra["authentication.kubernetes.io/pod-name"] = [identity.pod_name]
        if identity.pod_uid is not None:
            extra["authentication.kubernetes.io/pod-uid"] = [identity.pod_uid]
        return {
            "authenticated": True,
            "user": {
                "username": user,
                "uid": identity.service_account_uid,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{identity.namespace}",
                           "system:authenticated"],
                "extra": extra,
            },
            "audiences": audiences,
        }

    def _token_request(self, key: ObjectKey, body: JsonDict) -> JsonDict:
        """TokenRequest (``serviceaccounts/NAME/token``): a token that TokenReview then accepts."""
        account = self._existing(key)
        spec = body.get("spec") or {}
        bound = spec.get("boundObjectRef") or {}
        pod = bound if bound.get("kind") == "Pod" else {}
        audiences = tuple(spec.get("audiences") or DEFAULT_AUDIENCES)
        token = f"kube-emulator.{secrets.token_urlsafe(24)}"
        self.tokens[token] = TokenIdentity(
            namespace=key[1] or "", service_account=key[2], pod_name=pod.get("name"),
            pod_uid=pod.get("uid"), audiences=audiences,
            service_account_uid=account["metadata"]["uid"])
        seconds = int(spec.get("expirationSeconds") or 3600)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        return {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": key[2], "namespace": key[1], "creationTimestamp": _now()},
            "spec": {**spec, "audiences": list(audiences), "expirationSeconds": seconds},
            "status": {"token": token,
                       "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }

    # --- reads -----------------------------------------------------------------------------------

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
                raise _bad_request("invalid continue token") from exc
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
            raise _failure(404, "NotFound", "the server could not find the requested resource")
        return self._existing(self._key(res, request.namespace, request.name))

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[bytes | JsonDict]:
        """WATCH from a resourceVersion, with selectors, ``timeoutSeconds`` and bookmarks.

        Errors raised before the first chunk reach the client as plain error answers.
        """
        res = self._require_known(request.resource)
        selector = self._selector(request)
        since = request.params.get("resourceVersion") or ""
        if since not in ("", "0") and not since.isdigit():
            raise _bad_request(f"invalid resourceVersion: {since!r}")
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
            if last < self._compacted.get(res, 0):
                yield {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "Expired", "code": 410,
                    "message": f"too old resource version: {last} ({self._compacted[res]})"}}
                return
        while not self._closing:
            tick = self._ticks.setdefault(res, asyncio.Event())
            changes = self._changes_after(res, last)
            for change in changes:
                last = change.revision
                event = _watch_event(change, selector)
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
        if request.params.get("allowWatchBookmarks") == "true" and not self._closing:
            yield self._bookmark(res, max(last, self._revision))

    def _changes_after(self, res: kmock.resource, revision: int) -> list[_Change]:
        history = self._changes.get(res) or ()
        newer: list[_Change] = []
        for change in reversed(history):
            if change.revision <= revision:
                break
            newer.append(change)
        return newer[::-1]

    def _bookmark(self, res: kmock.resource, revision: int, *,
                  initial_events_end: bool = False) -> JsonDict:
        meta: JsonDict = {"resourceVersion": str(revision)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"apiVersion": self._api_version(res),
                                               "kind": self._kind(res), "metadata": meta}}


def _watch_event(change: _Change, selector: Selector) -> JsonDict | None:
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


def _convert_string_data(secret: JsonDict) -> None:
    """Secret ``stringData`` is write-only: the server merges it into base64 ``data``."""
    data = secret.get("data") or {}
    for key, value in (data.items() if isinstance(data, dict) else ()):
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise _bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: "
                               f"illegal base64 data in data[{key!r}]") from exc
    string_data = secret.pop("stringData", None) or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        secret["data"] = data


# --- running it over HTTP ------------------------------------------------------------------------


class KubeEmulatorServer:
    """Serve a :class:`KubeEmulator` on a real port from its own thread and event loop.

    Why a thread: the clients under test block (the kubernetes client) or own their loops (kopf
    in ``KopfRunner``); an emulator on pytest's loop would stall while a sync client waits for it.
    A kubeconfig pointing to the server is written on start (to a temporary folder unless a path
    is given). Use as a context manager, or ``start()``/``stop()`` in a fixture.
    """

    def __init__(self, emulator: KubeEmulator | None = None, *,
                 kubeconfig: str | Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, namespace: str = "default",
                 token: str = "kube-emulator-admin",  # noqa: S107  # any token works: no auth
                 timeout: float = 10.0) -> None:
        self.emulator = emulator if emulator is not None else KubeEmulator()
        self.namespace = namespace
        self.token = token
        self.timeout = timeout
        self._host = host
        self._port = port
        self._kubeconfig = Path(kubeconfig) if kubeconfig is not None else None
        self._tempdir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._port is None or self._loop is None:
            raise RuntimeError("the emulator server is not running")
        return f"http://{self._host}:{self._port}"

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig file pointing to this server (written on start)."""
        if self._kubeconfig is None:
            raise RuntimeError("the emulator server is not running")
        return self._kubeconfig

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the emulator server can be started only once")
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError("the emulator server did not start in time")
        if self._failure is not None:
            raise RuntimeError("the emulator server failed to start") from self._failure
        return self

    def stop(self) -> None:
        """End open watches, stop the server and its thread, remove a temporary kubeconfig."""
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                raise RuntimeError("the emulator server did not stop in time")
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator's loop (its state is not thread-safe); return its result."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(self.timeout)

    def dump_objects(self, *, current_only: bool = False) -> list[JsonDict]:
        """:meth:`KubeEmulator.dump_objects`, safely from any thread."""
        return self.call(lambda: self.emulator.dump_objects(current_only=current_only))

    def create(self, resource: kmock.resource | str, body: Mapping[str, Any]) -> JsonDict:
        """:meth:`KubeEmulator.create`, safely from any thread (seeds objects without a client)."""
        return self.call(lambda: self.emulator.create(resource, body))

    def api_client(self) -> kubernetes.client.ApiClient:
        """A kubernetes client built from this server's kubeconfig (not ``$KUBECONFIG``)."""
        import kubernetes  # ~0.5 s to import: only for the tests that use it

        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
            config_file=str(self.kubeconfig))
        return client

    def kopf_connection_info(self, *, token: str | None = None) -> kopf.ConnectionInfo:
        """What an ``@kopf.on.login`` handler returns to point kopf at this server (with
        ``token`` instead of the server's own, to tell its requests apart)."""
        import kopf  # ~1 s to import: only for the tests that run an operator

        return kopf.ConnectionInfo(server=self.url, token=token or self.token,
                                   default_namespace=self.namespace)

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Another kubeconfig for this server, with ``token`` (e.g. one per client, so that
        :attr:`KubeEmulator.recorded_calls` tells the clients apart)."""
        return self._write_config(Path(path), token or self.token)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:
            self._failure = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host=self._host,
                                               port=self._port) as server:
            self._port = server.port
            self._write_kubeconfig()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stopping.wait()
            self.emulator.close_watches()

    def _write_kubeconfig(self) -> None:
        if self._kubeconfig is None:
            self._tempdir = Path(tempfile.mkdtemp(prefix="kube-emulator-"))
            self._kubeconfig = self._tempdir / "kubeconfig"
        self._write_config(self._kubeconfig, self.token)

    def _write_config(self, path: Path, token: str) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kube-emulator",
            "clusters": [{"name": "kube-emulator",
                          "cluster": {"server": f"http://{self._host}:{self._port}"}}],
            "users": [{"name": "kube-emulator", "user": {"token": token}}],
            "contexts": [{"name": "kube-emulator",
                          "context": {"cluster": "kube-emulator", "user": "kube-emulator",
                                      "namespace": self.namespace}}],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path
