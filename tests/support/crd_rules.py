"""What a real API server checks in a CustomResourceDefinition's schemas, offline.

A CRD that only has to look like a CRD passes ``kubernetes-validate`` (it knows the CRD kind's
fields, not the rules of apiextensions-apiserver) and the emulator's old registration, and is then
refused by a real server. :func:`crd_violations` ports the rules that schemas run into, with the
real server's field paths and messages (Kubernetes 1.29 to 1.37):

* structural schema (``pkg/apiserver/schema/validation.go``, ``complete.go``): every field has a
  ``type`` (unless ``x-kubernetes-int-or-string`` or ``x-kubernetes-preserve-unknown-fields``);
  the root ``metadata`` may only say ``type: object`` and restrict ``name`` and ``generateName``
  (no description, nothing else); ``kind`` and ``apiVersion`` are strings; nothing but value
  validations inside ``allOf``/``anyOf``/``oneOf``/``not`` (the two int-or-string forms aside);
  no field in a value validation that the structure does not declare; no root
  ``additionalProperties``; arrays have ``items``; embedded resources are objects;
* the CRD's own validation (``pkg/apis/apiextensions/validation/validation.go``): known types;
  no ``$ref``, ``definitions``, ``patternProperties``, ``dependencies``, ``additionalItems``,
  ``id``, ``uniqueItems: true``, ``nullable`` at the root; ``properties`` xor
  ``additionalProperties``; ``x-kubernetes-preserve-unknown-fields`` true or absent; list types
  and their map keys; no ``default`` in the root metadata, kind or apiVersion; only some keywords
  at the root when the status subresource is on; patterns that RE2 compiles; defaults valid for
  their schema; each ``x-kubernetes-validations`` entry (a rule, a one-line message, a known
  reason, a fieldPath the schema has);
* CEL rules: parsed (``cel-python``), and every field a rule reads from ``self`` or ``oldSelf``
  (``.name``, ``has()``, ``[index]``, the comprehension macros) declared where the rule sits,
  as the server's compiler requires; ``oldSelf`` only where old and new values correlate.

Not checked here (a real server is needed): CEL type checking beyond field names, CEL cost
estimates (bound lists and strings with maxItems and maxLength), ``format`` names, printer
columns' JSONPath, conversion. ``kubernetes-validate`` checks the CRD object's own fields.

:class:`CelRules` then evaluates a CRD's rules on its objects, as the server does on each write
of a custom resource (see "CEL rules evaluated on objects" below), and :func:`list_violations`
finds the duplicates a server refuses in ``x-kubernetes-list-type`` set and map lists (see "unique
items" at the end); the emulator uses both.

The server reports the schema of a CRD whose versions all have the same schema (one version, say)
as ``spec.validation.openAPIV3Schema`` (its internal form hoists it there), otherwise as
``spec.versions[i].schema.openAPIV3Schema``; so does this module.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import decimal
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeGuard

import celpy
import jsonschema
import re2
from celpy import celtypes
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import CELEvalError, base_functions

from support.emulator.openapi import to_json_schema

__all__ = ["BLOCKING_REASONS", "NOT_CHECKED", "CelRules", "Violation", "crd_violations",
           "list_violations", "schema_violations"]

JsonDict = dict[str, Any]

TYPES: Final = ("array", "boolean", "integer", "number", "object", "string")
INT_OR_STRING: Final = [{"type": "integer"}, {"type": "string"}]
#: Keywords the root schema may hold when the status subresource is on (allowedFieldsAtRootSchema).
ROOT_WITH_STATUS: Final = frozenset({
    "description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "required", "items", "properties", "externalDocs", "example",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations"})
#: What a structural schema keeps of the root metadata besides type and name/generateName rules
#: (neither is compared: externalDocs and example are not part of a structural schema).
METADATA_IGNORED: Final = frozenset({"type", "default", "externalDocs", "example"})
NESTED_FORBIDDEN: Final = (  # key, what a value there must be, message
    ("type", "must be empty to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)
UNSUPPORTED: Final = (("id", "id is not supported"),
                      ("additionalItems", "additionalItems is not supported"),
                      ("patternProperties", "patternProperties is not supported"),
                      ("definitions", "definitions is not supported"),
                      ("dependencies", "dependencies is not supported"),
                      ("$ref", "$ref is not supported"))
VALIDATION_REASONS: Final = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid",
                             "FieldValueRequired")
MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
CEL_RESERVED: Final = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"})
ROOT, ITEM, FIELD = "root", "item", "field"
SET_ITEMS_ATOMIC: Final = "must be atomic as item of a list with x-kubernetes-list-type=set"


@dataclasses.dataclass(frozen=True)
class Violation:
    """One field error, as in the server's 422 (``Status.details.causes``)."""

    reason: str  # FieldValue{Required,Forbidden,Invalid,NotSupported}
    field: str
    message: str  # with the kind of error first, as the server words it: "Forbidden: ..."

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _required(field: str, detail: str) -> Violation:
    return Violation("FieldValueRequired", field, f"Required value: {detail}")


def _forbidden(field: str, detail: str) -> Violation:
    return Violation("FieldValueForbidden", field, f"Forbidden: {detail}")


def _invalid(field: str, value: Any, detail: str) -> Violation:
    return Violation("FieldValueInvalid", field, f"Invalid value: {_shown(value)}: {detail}")


def _not_supported(field: str, value: Any, supported: Iterable[str]) -> Violation:
    listed = ", ".join(_shown(s) for s in supported)
    return Violation("FieldValueNotSupported", field,
                     f"Unsupported value: {_shown(value)}: supported values: {listed}")


def _key(path: str, child: str, key: str) -> str:
    return f"{path}.{child}[{key}]"


def _is_schema(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


# --- the CRD -------------------------------------------------------------------------------------


def crd_violations(crd: Mapping[str, Any]) -> list[Violation]:
    """Everything a real API server would refuse in this CRD's schemas (empty: none)."""
    spec = crd.get("spec") or {}
    versions = [v for v in spec.get("versions") or [] if isinstance(v, Mapping)]
    schemas = [(v.get("schema") or {}).get("openAPIV3Schema") for v in versions]
    hoisted = bool(schemas) and all(s is not None and s == schemas[0] for s in schemas)
    found: list[Violation] = []
    for index, (version, schema) in enumerate(zip(versions, schemas, strict=True)):
        if schema is None:
            continue
        if hoisted and index > 0:
            break  # one schema for every version: reported once, as the server does
        path = ("spec.validation.openAPIV3Schema" if hoisted
                else f"spec.versions[{index}].schema.openAPIV3Schema")
        status = "status" in (version.get("subresources") or {})
        found += schema_violations(schema, path, status_subresource=status)
    return found


def schema_violations(schema: Mapping[str, Any], path: str = "openAPIV3Schema", *,
                      status_subresource: bool = False) -> list[Violation]:
    """A CRD version's ``openAPIV3Schema`` checked as the server does, at ``path``."""
    if not _is_schema(schema):
        return [_invalid(path, schema, "must be a schema object")]
    found: list[Violation] = []
    if status_subresource:
        found += _root_with_status(schema, path)
    if schema.get("nullable"):
        found.append(_forbidden(f"{path}.nullable", "nullable cannot be true at the root"))
    structural = sorted(_structural(schema, ROOT, path) + _completeness(schema, path), key=str)
    found += structural
    if not structural:
        found += _defaults(schema, path)
    found += _api_schema(schema, path, _Context(is_root=True, cel=not structural))
    return found


def _root_with_status(schema: Mapping[str, Any], path: str) -> list[Violation]:
    for key, value in schema.items():
        if value in (None, False, "", [], {}, 0):
            continue  # zero values are not looked at
        if key == "type":
            if value != "object":
                return [_invalid(f"{path}.type", value, 'only "object" is allowed as the type at '
                                 "the root of the schema if the status subresource is enabled")]
            continue
        if key not in ROOT_WITH_STATUS:
            return [_invalid(path, key, f"only {sorted(ROOT_WITH_STATUS)} fields are allowed at "
                             "the root of the schema if the status subresource is enabled")]
    return []


# --- structural schema (apiserver/schema/validation.go, complete.go) -----------------------------


def _structural(s: Mapping[str, Any], level: str, path: str) -> list[Violation]:
    found: list[Violation] = []
    kind = s.get("type")
    if kind == "array" and "items" not in s:
        found.append(_required(f"{path}.items", "must be specified"))
    if _is_schema(s.get("items")):
        found += _structural(s["items"], ITEM, f"{path}.items")
    for name, sub in (s.get("properties") or {}).items():
        if _is_schema(sub):
            found += _structural(sub, FIELD, _key(path, "properties", name))
    additional = s.get("additionalProperties")
    if additional is not None:
        if level == ROOT:
            found.append(_forbidden(f"{path}.additionalProperties", "must not be used at the root"))
        if _is_schema(additional):
            found += _structural(additional, FIELD, f"{path}.additionalProperties")
    int_or_string = bool(s.get("x-kubernetes-int-or-string"))
    preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(s.get("x-kubernetes-embedded-resource"))
    if int_or_string and preserve:
        found.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True,
                              "must be false if x-kubernetes-int-or-string is true"))
    if int_or_string and embedded:
        found.append(_invalid(f"{path}.x-kubernetes-embedded-resource", True,
                              "must be false if x-kubernetes-int-or-string is true"))
    skip_any_of = s.get("anyOf") == INT_OR_STRING
    all_of = s.get("allOf") or []
    skip_first_all_of = bool(all_of) and _is_schema(all_of[0]) and \
        all_of[0].get("anyOf") == INT_OR_STRING
    found += _value_validation(s, skip_any_of, skip_first_all_of, level, path)
    check_metadata = level == ROOT or embedded
    if embedded and kind != "object":
        found.append(_required(f"{path}.type", "must be object if x-kubernetes-embedded-resource "
                               "is true") if not kind else
                     _invalid(f"{path}.type", kind, "must be object if "
                              "x-kubernetes-embedded-resource is true"))
    elif not kind and not int_or_string and not preserve:
        found.append(_required(f"{path}.type", {
            ROOT: "must not be empty at the root",
            ITEM: "must not be empty for specified array items",
            FIELD: "must not be empty for specified object fields"}[level]))
    if embedded and additional is not None:
        found.append(_forbidden(f"{path}.additionalProperties",
                                "must not be used if x-kubernetes-embedded-resource is set"))
    if level == ROOT and kind and kind != "object":
        found.append(_invalid(f"{path}.type", kind, "must be object at the root"))
    properties = s.get("properties") or {}
    for name in ("kind", "apiVersion"):
        sub = properties.get(name)
        if check_metadata and _is_schema(sub) and sub.get("type") != "string":
            found.append(_invalid(f"{_key(path, 'properties', name)}.type", sub.get("type", ""),
                                  "must be string"))
    metadata = properties.get("metadata")
    if _is_schema(metadata):
        found += _metadata(metadata, check_metadata, level, _key(path, "properties", "metadata"))
    if embedded and not preserve and not properties:
        found.append(_required(f"{path}.properties", "must not be empty if "
                               "x-kubernetes-embedded-resource is true without "
                               "x-kubernetes-preserve-unknown-fields"))
    return found


def _metadata(s: Mapping[str, Any], check_metadata: bool, level: str,
              path: str) -> list[Violation]:
    """The root metadata may restrict name and generateName, nothing else: it is ObjectMeta,
    which the server validates itself (validateStructuralMetadataInvariants)."""
    found = []
    if check_metadata and s.get("type") != "object":
        found.append(_invalid(f"{path}.type", s.get("type", ""), "must be object"))
    if level == ROOT:
        properties = s.get("properties") or {}
        restricts_only_names = bool(properties) and set(properties) <= {"name", "generateName"}
        rest = {k: v for k, v in s.items() if k not in METADATA_IGNORED
                and not (k == "properties" and (restricts_only_names or not properties))}
        if rest:
            found.append(_forbidden(path, "must not specify anything other than name and "
                                    "generateName, but metadata is implicitly specified"))
    return found


def _value_validation(v: Mapping[str, Any], skip_any_of: bool, skip_first_all_of_any_of: bool,
                      level: str, path: str) -> list[Violation]:
    found: list[Violation] = []
    if not skip_any_of:
        for i, sub in enumerate(v.get("anyOf") or []):
            found += _nested(sub, False, level, f"{path}.anyOf[{i}]")
    for i, sub in enumerate(v.get("allOf") or []):
        found += _nested(sub, skip_first_all_of_any_of and i == 0, level, f"{path}.allOf[{i}]")
    for i, sub in enumerate(v.get("oneOf") or []):
        found += _nested(sub, False, level, f"{path}.oneOf[{i}]")
    if v.get("not") is not None:
        found += _nested(v["not"], False, level, f"{path}.not")
    pattern = v.get("pattern")
    if isinstance(pattern, str) and pattern:
        error = _regexp_error(pattern)
        if error:
            found.append(_invalid(f"{path}.pattern", pattern,
                                  f"must be a valid regular expression, but isn't: {error}"))
    return found


def _nested(v: Any, skip_any_of: bool, level: str, path: str) -> list[Violation]:
    """A schema inside allOf/anyOf/oneOf/not: value validation only."""
    if not _is_schema(v):
        return []
    found = _value_validation(v, skip_any_of, False, level, path)
    if v.get("items") is not None:
        found += _nested(v["items"], False, level, f"{path}.items")
    for name, sub in (v.get("properties") or {}).items():
        found += _nested(sub, False, FIELD, _key(path, "properties", name))
    for key, message in NESTED_FORBIDDEN:
        if v.get(key) is not None and (key == "default" or v[key] not in (False, "", [], {})):
            found.append(_forbidden(f"{path}.{key}", message))
    if v.get("additionalProperties") is not None:
        found.append(_forbidden(f"{path}.additionalProperties",
                                "must be undefined to be structural"))
    if "metadata" in (v.get("properties") or {}):
        found.append(_forbidden(_key(path, "properties", "metadata"),
                                "must not be specified in a nested context"))
    return found


def _completeness(s: Mapping[str, Any], path: str) -> list[Violation]:
    """Every field a root value validation names is declared by the structure (complete.go)."""
    return _value_completeness(s, s, path, path)


def _value_completeness(v: Mapping[str, Any], s: Mapping[str, Any] | None, s_path: str,
                        v_path: str) -> list[Violation]:
    if s is None:
        return [_required(s_path, f"because it is defined in {v_path}")]
    found: list[Violation] = []
    if _is_schema(v.get("not")):
        found += _nested_completeness(v["not"], s, s_path, f"{v_path}.not")
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(v.get(junctor) or []):
            if _is_schema(sub):
                found += _nested_completeness(sub, s, s_path, f"{v_path}.{junctor}[{i}]")
    return found


def _nested_completeness(v: Mapping[str, Any], s: Mapping[str, Any] | None, s_path: str,
                         v_path: str) -> list[Violation]:
    if s is None:
        return [_required(s_path, f"because it is defined in {v_path}")]
    found = _value_completeness(v, s, s_path, v_path)
    if _is_schema(v.get("items")):
        items = s.get("items") if _is_schema(s.get("items")) else None
        found += _nested_completeness(v["items"], items, f"{s_path}.items", f"{v_path}.items")
    declared = s.get("properties") or {}
    for name, sub in (v.get("properties") or {}).items():
        if not _is_schema(sub):
            continue
        if name not in declared:
            found.append(_required(_key(s_path, "properties", name), "because it is defined in "
                                   f"{_key(v_path, 'properties', name)}"))
        else:
            found += _nested_completeness(sub, declared[name], _key(s_path, "properties", name),
                                          _key(v_path, "properties", name))
    return found


def _regexp_error(pattern: str) -> str | None:
    """Go's regexp is RE2: a pattern RE2 refuses (lookarounds, backreferences) is refused."""
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as e:
        detail = e.args[0] if e.args else e
        return detail.decode() if isinstance(detail, bytes) else str(detail)
    return None


def _defaults(s: Mapping[str, Any], path: str) -> list[Violation]:
    """Each ``default`` must be valid for its own schema (structuraldefaulting.ValidateDefaults)."""
    found: list[Violation] = []
    if s.get("default") is not None:
        validator = jsonschema.Draft4Validator(to_json_schema(
            {k: v for k, v in s.items() if k != "default"}))
        for error in validator.iter_errors(s["default"]):
            where = ".".join(map(str, error.absolute_path))
            found.append(_invalid(f"{path}.default", s["default"],
                                  f"{where + ' ' if where else ''}{error.message}"))
    for name, sub in (s.get("properties") or {}).items():
        if _is_schema(sub):
            found += _defaults(sub, _key(path, "properties", name))
    for key in ("items", "additionalProperties"):
        if _is_schema(s.get(key)):
            found += _defaults(s[key], f"{path}.{key}")
    return found


# --- the CRD's own validation (apiextensions/validation/validation.go) ---------------------------


@dataclasses.dataclass(frozen=True)
class _Context:
    """specStandardValidatorV3's state on the way down."""

    is_root: bool = False
    allow_defaults: bool = True
    defaults_forbidden_because: str = ""
    inside_resource_meta: bool = False
    uncorrelatable: str | None = None  # the first path below which oldSelf cannot be used
    cel: bool = True  # the schema is structural: CEL rules can be compiled

    def below(self, **changes: Any) -> _Context:
        return dataclasses.replace(self, is_root=False, **changes)

    def not_correlatable(self, path: str) -> _Context:
        return self if self.uncorrelatable is not None else \
            dataclasses.replace(self, uncorrelatable=path)


def _api_schema(s: Mapping[str, Any], path: str, ctx: _Context) -> list[Violation]:
    found = _standard(s, path, ctx)
    kind = s.get("type")
    if s.get("uniqueItems"):
        found.append(_forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since "
                                "the runtime complexity becomes quadratic"))
    additional = s.get("additionalProperties")
    properties = s.get("properties") or {}
    if additional is not None:
        if properties and (additional is False or _is_schema(additional)):
            found.append(_forbidden(f"{path}.additionalProperties",
                                    "additionalProperties and properties are mutual exclusive"))
        if _is_schema(additional):
            sub_ctx = ctx.below()
            if ctx.inside_resource_meta:
                sub_ctx = sub_ctx.below(allow_defaults=False, defaults_forbidden_because=(
                    "inside additionalProperties applying to object metadata"))
            found += _api_schema(additional, f"{path}.additionalProperties", sub_ctx)
    for name, sub in properties.items():
        if not _is_schema(sub):
            continue
        sub_ctx = ctx.below()
        if s.get("x-kubernetes-map-type") == "atomic":
            sub_ctx = sub_ctx.not_correlatable(path)
        if (ctx.is_root or s.get("x-kubernetes-embedded-resource")) and \
                name in ("metadata", "kind", "apiVersion"):
            sub_ctx = sub_ctx.below(inside_resource_meta=True)
            if ctx.is_root:
                sub_ctx = sub_ctx.below(allow_defaults=False,
                                        defaults_forbidden_because=f"in top-level {name}")
        found += _api_schema(sub, _key(path, "properties", name), sub_ctx)
    for junctor in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(s.get(junctor) or []):
            if _is_schema(sub):
                found += _api_schema(sub, f"{path}.{junctor}[{i}]", ctx.below(cel=False))
    if _is_schema(s.get("not")):
        found += _api_schema(s["not"], f"{path}.not", ctx.below(cel=False))
    items = s.get("items")
    if _is_schema(items):
        sub_ctx = ctx.below()
        if s.get("x-kubernetes-list-type") != "map":
            sub_ctx = sub_ctx.not_correlatable(path)
        found += _api_schema(items, f"{path}.items", sub_ctx)
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        found.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False,
                              "must be true or undefined"))
    found += _map_and_list_types(s, path, kind)
    found += _validation_rules(s, path, ctx, errors_below=bool(found))
    return found


def _standard(s: Mapping[str, Any], path: str, ctx: _Context) -> list[Violation]:
    found = []
    kind = s.get("type")
    if kind is not None and kind not in TYPES:
        found.append(_not_supported(f"{path}.type", kind, TYPES))
    if "default" in s and not ctx.allow_defaults:
        found.append(_forbidden(f"{path}.default", " ".join(
            ["must not be set", ctx.defaults_forbidden_because]).strip()))
    for key, message in UNSUPPORTED:
        if s.get(key) not in (None, {}, ""):
            found.append(_forbidden(f"{path}.{key}", message))
    if kind == "null":
        found.append(_forbidden(f"{path}.type",
                                "type cannot be set to null, use nullable as an alternative"))
    if isinstance(s.get("items"), list):
        found.append(_forbidden(f"{path}.items", "items must be a schema object and not an array"))
    if ctx.inside_resource_meta and s.get("x-kubernetes-embedded-resource"):
        found.append(_forbidden(f"{path}.x-kubernetes-embedded-resource",
                                "must not be used inside of resource meta"))
    return found


def _map_and_list_types(s: Mapping[str, Any], path: str, kind: Any) -> list[Violation]:
    found = []
    map_type = s.get("x-kubernetes-map-type")
    if map_type is not None and kind != "object":
        found.append(_required(f"{path}.type", "must be object if x-kubernetes-map-type is "
                               "specified") if not kind else
                     _invalid(f"{path}.type", kind, "must be object if x-kubernetes-map-type is "
                              "specified"))
    if map_type is not None and map_type not in ("atomic", "granular"):
        found.append(_not_supported(f"{path}.x-kubernetes-map-type", map_type,
                                    ["atomic", "granular"]))
    list_type = s.get("x-kubernetes-list-type")
    items = s.get("items") if _is_schema(s.get("items")) else None
    if list_type is not None and kind != "array":
        found.append(_required(f"{path}.type", "must be array if x-kubernetes-list-type is "
                               "specified") if not kind else
                     _invalid(f"{path}.type", kind, "must be array if x-kubernetes-list-type is "
                              "specified"))
    elif list_type == "set" and items is not None:
        if items.get("type") == "array" and items.get("x-kubernetes-list-type", "atomic") != \
                "atomic":
            found.append(_invalid(f"{path}.items.x-kubernetes-list-type",
                                  items.get("x-kubernetes-list-type"),
                                  SET_ITEMS_ATOMIC))
        if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            found.append(_invalid(f"{path}.items.x-kubernetes-map-type",
                                  items.get("x-kubernetes-map-type"),
                                  SET_ITEMS_ATOMIC))
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        found.append(_not_supported(f"{path}.x-kubernetes-list-type", list_type,
                                    ["atomic", "set", "map"]))
    keys = s.get("x-kubernetes-list-map-keys") or []
    if keys and list_type is None:
        found.append(_required(f"{path}.x-kubernetes-list-type",
                               "must be map if x-kubernetes-list-map-keys is non-empty"))
    elif keys and list_type != "map":
        found.append(_invalid(f"{path}.x-kubernetes-list-type", list_type,
                              "must be map if x-kubernetes-list-map-keys is non-empty"))
    if list_type == "map":
        if not keys:
            found.append(_required(f"{path}.x-kubernetes-list-map-keys",
                                   "must not be empty if x-kubernetes-list-type is map"))
        if items is None:
            found.append(_required(f"{path}.items",
                                   "must have a schema if x-kubernetes-list-type is map"))
        elif items.get("type") != "object":
            found.append(_invalid(f"{path}.items.type", items.get("type", ""),
                                  "must be object if parent array's x-kubernetes-list-type is map"))
        else:
            item_properties = items.get("properties") or {}
            required = set(items.get("required") or [])
            seen: set[str] = set()
            for key in keys:
                sub = item_properties.get(key)
                if not _is_schema(sub):
                    found.append(_invalid(f"{path}.x-kubernetes-list-map-keys", keys,
                                          "entries must all be names of item properties"))
                else:
                    if sub.get("type") in ("array", "object"):
                        found.append(_invalid(f"{_key(path + '.items', 'properties', key)}.type",
                                              "object", "must be a scalar type if parent array's "
                                              "x-kubernetes-list-type is map"))
                    if key not in required and "default" not in sub:
                        found.append(_required(
                            f"{_key(path + '.items', 'properties', key)}.default",
                            "this property is in x-kubernetes-list-map-keys, so it must have a "
                            "default or be a required property"))
                    if sub.get("nullable"):
                        found.append(_forbidden(
                            f"{_key(path + '.items', 'properties', key)}.nullable",
                            "this property is in x-kubernetes-list-map-keys, so it cannot be "
                            "nullable"))
                if key in seen:
                    found.append(_invalid(f"{path}.x-kubernetes-list-map-keys", keys,
                                          "must not contain duplicate entries"))
                seen.add(key)
    if list_type in ("set", "map") and items is not None and items.get("nullable"):
        found.append(_forbidden(f"{path}.items.nullable",
                                f"cannot be nullable when x-kubernetes-list-type is {list_type}"))
    return found


def _validation_rules(s: Mapping[str, Any], path: str, ctx: _Context, *,
                      errors_below: bool) -> list[Violation]:
    """``x-kubernetes-validations``: each entry's fields, then (when the schema has no other
    error, as the server does) each rule's field references."""
    rules = s.get("x-kubernetes-validations") or []
    found: list[Violation] = []
    for i, rule in enumerate(rules):
        where = f"{path}.x-kubernetes-validations[{i}]"
        if not isinstance(rule, Mapping):
            found.append(_invalid(where, rule, "must be an object with a rule"))
            continue
        text = str(rule.get("rule") or "").strip()
        message = rule.get("message")
        if not text:
            found.append(_required(f"{where}.rule", "rule is not specified"))
        elif message is not None and message != "" and not str(message).strip():
            found.append(_invalid(f"{where}.message", message,
                                  "message must be non-empty if specified"))
        elif re.search(r"[\n\r]", str(message or "").strip()):
            found.append(_invalid(f"{where}.message", message,
                                  "message must not contain line breaks"))
        elif re.search(r"[\n\r]", text) and not str(message or "").strip():
            found.append(_required(f"{where}.message",
                                   "message must be specified if rule contains line breaks"))
        expression = rule.get("messageExpression")
        if expression is not None and expression != "" and not str(expression).strip():
            found.append(_required(f"{where}.messageExpression",
                                   "messageExpression must be non-empty if specified"))
        reason = rule.get("reason")
        if reason is not None and reason not in VALIDATION_REASONS:
            found.append(_not_supported(f"{where}.reason", reason, VALIDATION_REASONS))
        field_path = rule.get("fieldPath")
        if field_path is not None and field_path != "":
            if not str(field_path).strip():
                found.append(_invalid(f"{where}.fieldPath", field_path,
                                      "fieldPath must be non-empty if specified"))
            elif re.search(r"[\n\r]", str(field_path)):
                found.append(_invalid(f"{where}.fieldPath", field_path,
                                      "fieldPath must not contain line breaks"))
            elif not _field_path_valid(s, str(field_path)):
                found.append(_invalid(f"{where}.fieldPath", field_path,
                                      "fieldPath must be a valid path"))
    if found or errors_below or not ctx.cel:
        return found
    for i, rule in enumerate(rules):
        where = f"{path}.x-kubernetes-validations[{i}]"
        for key in ("rule", "messageExpression"):
            expression = str(rule.get(key) or "").strip()
            if not expression:
                continue
            problems, uses_old_self = _CelReferences(s, is_root=ctx.is_root).check(expression)
            for problem in problems:
                found.append(_invalid(f"{where}.{key}", expression,
                                      f"compilation failed: ERROR: <input>:{problem}"))
            if key == "rule" and not problems and uses_old_self and ctx.uncorrelatable:
                found.append(_invalid(f"{where}.rule", expression, "oldSelf cannot be used on the "
                                      "uncorrelatable portion of the schema within "
                                      f"{ctx.uncorrelatable}"))
            if key == "rule" and not problems and not uses_old_self and \
                    rule.get("optionalOldSelf") is not None:
                found.append(_invalid(f"{where}.optionalOldSelf", rule["optionalOldSelf"],
                                      "may not be set if oldSelf is not used in rule"))
    return found


def _field_path_valid(s: Mapping[str, Any], field_path: str) -> bool:
    """A rule's fieldPath (``.a.b``, ``.a['b-c']``, ``.map.key``) names a field of the schema."""
    return normalized_field_path(s, field_path) is not None


def _field_path_tokens(text: str) -> list[str]:
    """ValidFieldPath's scanner: ``.``, ``[`` and ``]`` alone; a token starting with a single
    quote runs to the next unescaped quote; anything else runs to the next delimiter."""
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position] == "'":
            end = position + 1
            while end < len(text) and not (text[end] == "'" and text[end - 1] != "\\"):
                end += 1
            tokens.append(text[position:end + 1])
            position = end + 1
        elif text[position] in ".[]":
            tokens.append(text[position])
            position += 1
        else:
            end = position
            while end < len(text) and text[end] not in ".[]":
                end += 1
            tokens.append(text[position:end])
            position = end
    return tokens


_QUOTE_ESCAPES: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                         "v": "\v", "'": "'", "\\": "\\"}


def _unescape_single_quote(text: str) -> str | None:
    out, position = [], 0
    while position < len(text):
        if text[position] == "\\" and position + 1 < len(text):
            escaped = _QUOTE_ESCAPES.get(text[position + 1])
            if escaped is None:
                return None
            out.append(escaped)
            position += 2
        else:
            out.append(text[position])
            position += 1
    return "".join(out)


def _child(path: str, name: str) -> str:
    """Go's ``field.Path.Child``, rendered; ``""`` is the nil path."""
    return f"{path}.{name}" if path else name


def normalized_field_path(s: Mapping[str, Any], field_path: str) -> str | None:
    """A rule's fieldPath as the server reports it below the rule's node (``.tags['a-b']`` is
    ``tags[a-b]``), or None when the server refuses it (``cel.ValidFieldPath``: only ``.name``
    and ``['quoted name']`` steps, through properties and additionalProperties; no list index)."""
    tokens = _field_path_tokens(field_path)
    schema: Mapping[str, Any] = s
    path = ""
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "[":
            if position + 3 > len(tokens) or tokens[position + 2] != "]":
                return None
            quoted = tokens[position + 1]
            if len(quoted) < 2 or quoted[0] != "'" or quoted[-1] != "'":
                return None
            name = _unescape_single_quote(quoted[1:-1])
            if name is None:
                return None
            position += 3
        elif token == ".":
            if position + 2 > len(tokens):
                return None
            name = tokens[position + 1]
            position += 2
        else:
            return None
        if schema.get("properties") is not None:
            properties = schema["properties"]
            if not _is_schema(properties.get(name)):
                return None
            path, schema = _child(path, name), properties[name]
        elif schema.get("additionalProperties") is not None:
            additional = schema["additionalProperties"]
            path, schema = f"{path}[{name}]", additional if _is_schema(additional) else {}
        else:
            return None
    return path or None


# --- CEL field references ------------------------------------------------------------------------


class _Dynamic:
    """A value whose fields are not known (preserved unknown fields, int-or-string, a result)."""


DYNAMIC: Final = _Dynamic()
Type = Mapping[str, Any] | _Dynamic
_PARSER: CELParser | None = None


def _parser() -> CELParser:
    global _PARSER  # built once: building lark's parser takes ~0.2 s
    if _PARSER is None:
        _PARSER = CELParser()
    return _PARSER


def _cel_name(identifier: str) -> str:
    """Kubernetes' CEL escaping of property names (``x__dash__y`` is ``x-y``)."""
    match = re.fullmatch(r"__([a-z]+)__", identifier)
    if match and match[1] in CEL_RESERVED:
        return match[1]
    return (identifier.replace("__underscores__", "__").replace("__dot__", ".")
            .replace("__dash__", "-").replace("__slash__", "/"))


class _CelReferences:
    """Resolve every field a rule reads against the schema the rule sits on."""

    def __init__(self, schema: Mapping[str, Any], *, is_root: bool) -> None:
        self.schema: Mapping[str, Any] = schema
        if is_root:  # at the root a rule sees apiVersion, kind, metadata.name and generateName
            properties = dict(schema.get("properties") or {})
            properties["metadata"] = {"type": "object", "properties": {
                "name": {"type": "string"}, "generateName": {"type": "string"}}}
            self.schema = {**schema, "properties": properties}
        self.problems: list[str] = []
        self.uses_old_self = False

    def check(self, expression: str) -> tuple[list[str], bool]:
        try:
            tree = _parser().parse(expression)
        except CELParseError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "syntax error"
            return [f"1:1: Syntax error: {first}"], False
        self._type(tree, {"self": self.schema, "oldSelf": self.schema})
        return self.problems, self.uses_old_self

    def _problem(self, token: Any, message: str) -> None:
        line, column = getattr(token, "line", 1) or 1, getattr(token, "column", 1) or 1
        self.problems.append(f"{line}:{column}: {message}")

    def _type(self, node: Any, env: Mapping[str, Type]) -> Type:
        if not _is_tree(node):
            return DYNAMIC
        kids = node.children
        if node.data == "ident":
            name = str(kids[0])
            if name == "oldSelf":
                self.uses_old_self = True
            return env.get(name, DYNAMIC)
        if node.data == "member_dot":
            return self._field(self._type(kids[0], env), kids[1])
        if node.data == "member_dot_arg":
            return self._call(kids[0], kids[1], _args(kids[2:]), env)
        if node.data == "ident_arg":
            name, args = str(kids[0]), _args(kids[1:])
            if name == "has":
                if len(args) != 1 or _single(args[0], "member_dot") is None:
                    self._problem(kids[0], "invalid argument to has() macro")
                for arg in args:
                    self._type(arg, env)
                return {"type": "boolean"}
            for arg in args:
                self._type(arg, env)
            return DYNAMIC
        if node.data == "member_index":
            base = self._type(kids[0], env)
            for kid in kids[1:]:
                self._type(kid, env)
            return _element(base)
        if len(kids) == 1:
            return self._type(kids[0], env)
        for kid in kids:
            self._type(kid, env)
        return DYNAMIC

    def _field(self, base: Type, token: Any) -> Type:
        if isinstance(base, _Dynamic):
            return DYNAMIC
        name = _cel_name(str(token))
        properties = base.get("properties") or {}
        if name in properties:
            found: Mapping[str, Any] = properties[name]
            return DYNAMIC if found.get("x-kubernetes-int-or-string") else found
        additional = base.get("additionalProperties")
        if _is_schema(additional):
            return additional
        if base.get("x-kubernetes-preserve-unknown-fields") or \
                (base.get("x-kubernetes-embedded-resource") and
                 name in ("apiVersion", "kind", "metadata")):
            return DYNAMIC
        kind = base.get("type")
        if kind not in (None, "object"):
            self._problem(token, f"type '{_cel_type(kind)}' does not support field selection")
        else:
            self._problem(token, f"undefined field '{token}'")
        return DYNAMIC

    def _call(self, target: Any, method: Any, args: list[Any], env: Mapping[str, Type]) -> Type:
        base = self._type(target, env)
        name = str(method)
        variable = _single(args[0], "ident") if args else None
        if name in MACROS and variable is not None and len(args) >= 2:
            inner = {**env, str(variable.children[0]): _iterated(base)}
            for arg in args[1:]:
                self._type(arg, inner)
            return {"type": "boolean"} if name in ("all", "exists", "exists_one") else DYNAMIC
        for arg in args:
            self._type(arg, env)
        return DYNAMIC


def _is_tree(node: Any) -> bool:
    """A node of cel-python's parse tree (a lark Tree), not a token."""
    return hasattr(node, "data") and isinstance(getattr(node, "children", None), list)


def _args(kids: list[Any]) -> list[Any]:
    """The arguments of a call: the expressions of its exprlist."""
    for kid in kids:
        if _is_tree(kid) and kid.data == "exprlist":
            return list(kid.children)
    return []


def _single(node: Any, data: str) -> Any:
    """The one node of kind ``data`` an expression is made of alone (through the wrappers)."""
    while _is_tree(node):
        if node.data == data:
            return node
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return None


def _element(base: Type) -> Type:
    """What indexing a value gives: a list's item, a map's value."""
    if isinstance(base, _Dynamic):
        return DYNAMIC
    items, additional = base.get("items"), base.get("additionalProperties")
    if _is_schema(items):
        return items
    if _is_schema(additional):
        return additional
    return DYNAMIC


def _iterated(base: Type) -> Type:
    """What a comprehension's variable is: a list's item, a map's key."""
    if isinstance(base, _Dynamic):
        return DYNAMIC
    items = base.get("items")
    if base.get("type") == "array" and _is_schema(items):
        return items
    if base.get("type") == "object":
        return {"type": "string"}
    return DYNAMIC


def _cel_type(kind: str) -> str:
    return {"integer": "int", "number": "double", "boolean": "bool", "array": "list",
            "string": "string"}.get(kind, kind)


# --- CEL rules evaluated on objects (apiserver/schema/cel/validation.go) -------------------------
#
# A real server evaluates every x-kubernetes-validations rule on each create and update of a
# custom resource (status updates included), after the schema checks; the emulator does the same
# with CelRules. What is ported, and from where (Kubernetes 1.37):
#
# * values (apiserver/pkg/cel/common/valuesunstructured.go): an object with properties exposes
#   its declared fields (names escaped as in rules: ``x-y`` is ``x__dash__y``), a map with
#   additionalProperties its keys, any other object nothing (but equality compares it whole);
#   ``x-kubernetes-list-type`` map and set lists compare regardless of order; ``format``
#   date/date-time strings are timestamps, duration durations, byte bytes; numbers are doubles;
#   at a resource's root, ``self.metadata`` holds only name and generateName;
# * where rules run: every node, ``self`` bound to the node's value, null values skipped; map
#   values and map-list items correlate with the old object's (by key), so a rule using
#   ``oldSelf`` runs only on updates and only where the old value exists (``optionalOldSelf``:
#   also without it, with ``oldSelf`` an optional);
# * answers: a failed rule is ``Invalid`` (or the rule's ``reason``) at the node's path, or at
#   ``fieldPath`` below it, with ``messageExpression``'s text, else ``message``, else
#   ``failed rule: <rule>``; the value is shown for scalars only; an evaluation error names the
#   node's type; ratcheting: on an update, a rule without ``oldSelf`` that fails on a value equal
#   to the old one is a warning, not an error (CRDValidationRatcheting, on since 1.30).
#
# Not ported: cost budgets (a real server stops a rule that runs too long), the exact text of
# most evaluation errors (``no such key`` is exact), and CEL libraries beyond the standard
# functions, the string and list extensions listed in CEL_FUNCTIONS, and optionals' hasValue,
# value and orValue (a rule calling another function is refused when the CRD is loaded, rather
# than answered wrongly).

MESSAGE_EXPRESSION_MAX_BYTES: Final = 5 * 1024
NOT_CHECKED: Final = Violation(
    "FieldValueInvalid", "<nil>", "Invalid value: null: some validation rules were not checked "
    "because the object was invalid; correct the existing errors to complete validation")
#: Schema errors after which the server evaluates no rule (customresource/strategy.go).
BLOCKING_REASONS: Final = frozenset({"FieldValueNotSupported", "FieldValueRequired",
                                     "FieldValueTooLong", "FieldValueTooMany",
                                     "FieldValueTypeInvalid"})


class _Omitted:
    """Go's ``field.OmitValueType``: the bad value of an object or a list is not shown."""


OMITTED: Final = _Omitted()


def _go_value(value: Any) -> str:
    """A bad value as ``field.Error`` prints it: numbers and booleans with %v, strings %q, the
    rest as Go's ``json.Marshal`` writes it (null for nil)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    value = _go_number(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, json_style=False)
    if isinstance(value, str):
        return _go_quote(value)
    return _go_json(value)


def _go_number(value: Any) -> Any:
    """A JSON number as the server decodes it: int64 when it fits, else float64."""
    if isinstance(value, int) and not isinstance(value, bool) and \
            not -(2 ** 63) <= value < 2 ** 63:
        return float(value)
    return value


def _go_float(value: float, *, json_style: bool) -> str:
    """A float64 as Go's %v prints it (``json_style``: as ``json.Marshal`` writes it): the
    shortest digits that read back, %e below 1e-4 and from 1e6 (JSON: below 1e-6, from 1e21)."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0"
    exact = decimal.Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, exact.digits)).rstrip("0")
    point = len(exact.digits) + int(exact.exponent)  # the decimal point's place in the digits
    exponent = point - 1
    if json_style:
        scientific = abs(value) < 1e-6 or abs(value) >= 1e21
    else:
        scientific = exponent < -4 or exponent >= 6
    if scientific:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        shown = f"{abs(exponent)}" if json_style and exponent < 0 else f"{abs(exponent):02d}"
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{shown}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


_GO_ESCAPES: Final = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                      "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def _go_quote(text: str) -> str:
    """``strconv.Quote`` (%q): printable characters as they are, the others escaped."""
    quoted = []
    for char in text:
        if char in _GO_ESCAPES:
            quoted.append(_GO_ESCAPES[char])
        elif char.isprintable():
            quoted.append(char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            quoted.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            quoted.append(f"\\u{ord(char):04x}")
        else:
            quoted.append(f"\\U{ord(char):08x}")
    return f'"{"".join(quoted)}"'


def _go_json(value: Any) -> str:
    """``json.Marshal`` of a decoded JSON value: keys sorted, no spaces, <, >, &, U+2028 and
    U+2029 escaped, numbers as Go writes int64 and float64."""
    value = _go_number(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, json_style=True)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char in "<>&\u2028\u2029":
            text = text.replace(char, f"\\u{ord(char):04x}")
        return text
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_go_json(str(k))}:{_go_json(v)}"
                              for k, v in sorted(value.items())) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    return json.dumps(value, default=str)


def field_error(reason: str | None, field: str, value: Any, detail: str) -> Violation:
    """``fieldErrorForReason``: a failed rule's error of the rule's reason (default Invalid)."""
    shown = "" if value is OMITTED else f": {_go_value(value)}"
    if reason == "FieldValueForbidden":
        return Violation(reason, field, f"Forbidden: {detail}")
    if reason == "FieldValueRequired":
        return Violation(reason, field, f"Required value: {detail}")
    if reason == "FieldValueDuplicate":
        return Violation(reason, field, f"Duplicate value{shown}")
    return Violation("FieldValueInvalid", field, f"Invalid value{shown}: {detail}")


def _escape(name: str) -> str | None:
    """``cel.Escape``: how a property is named in a rule (None: it cannot be)."""
    if not name or name[0].isdigit():
        return None
    if name in CEL_RESERVED:
        return f"__{name}__"
    if re.fullmatch(r"[A-Za-z0-9_./-]*", name) is None:
        return None
    return re.sub(r"__|[-./]", lambda m: {"__": "__underscores__", ".": "__dot__",
                                         "-": "__dash__", "/": "__slash__"}[m[0]], name)


def _json_equal(a: Any, b: Any) -> bool:
    """reflect.DeepEqual on decoded JSON: 1 and 1.0, or true and 1, differ."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# --- CEL values --------------------------------------------------------------------------------


class _Object(celtypes.MapType):
    """An object: its declared fields by their escaped names. Equality as unstructuredMap's:
    the same number of fields, declared ones equal as CEL values, the others as JSON."""

    def __init__(self, raw: Mapping[str, Any], values: Mapping[str, Any],
                 names: Mapping[str, str]) -> None:
        super().__init__({celtypes.StringType(names[k]): v for k, v in values.items()})
        for name in values.keys() & CEL_RESERVED:  # self.package and self.__package__ alike
            self[celtypes.StringType(name)] = values[name]  # (recognizeKeywordAsFieldName)
        self.raw = raw
        self.fields = values  # raw name -> CEL value, declared non-null fields only
        self.declared = frozenset(names)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Mapping):
            raise TypeError(f"no such overload: map == {type(other)}")
        if len(self.raw) != len(other.raw if isinstance(other, _Object) else other):
            return False
        for key, raw in self.raw.items():
            if key in self.declared:
                mine, theirs = self.fields.get(key), _found(other, key)
                if (mine is None) != (theirs is None) or (mine is not None and mine != theirs):
                    return False
            elif not isinstance(other, _Object):
                raise TypeError("no such overload")
            elif key in other.raw and not _json_equal(raw, other.raw[key]):
                return False
        return True

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # unhashable (own __eq__)


def _found(other: Mapping[Any, Any], key: str) -> Any:
    if isinstance(other, _Object):
        return other.fields.get(key)
    return other.get(celtypes.StringType(key)) if celtypes.StringType(key) in other else None


class _List(celtypes.ListType):
    """A list, and its JSON (list-type map and set lists compare regardless of order)."""

    def __init__(self, items: Iterable[Any], raw: list[Any], list_type: str | None,
                 keys: Sequence[str]) -> None:
        super().__init__(items)
        self.raw = raw
        self.list_type = list_type
        self.keys = tuple(keys)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and not 0 <= index < len(self):
            raise IndexError(f"index out of bounds: {index}")
        return super().__getitem__(index)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, list):
            raise TypeError(f"no such overload: list == {type(other)}")
        if len(self) != len(other):
            return False
        if self.list_type == "map":
            mine = {_item_key(raw, self.keys): item
                    for raw, item in zip(self.raw, self, strict=True)}
            seen = set()
            for item in other:
                key = _item_key(item.raw if isinstance(item, _Object) else item, self.keys)
                if key not in mine or mine[key] != item:
                    return False
                seen.add(key)
            return len(seen) == len(mine)
        if self.list_type == "set":
            theirs = other.raw if isinstance(other, _List) else list(other)
            return {json.dumps(v, sort_keys=True) for v in self.raw} == \
                {json.dumps(v, sort_keys=True) for v in theirs}
        return super().__eq__(other)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # unhashable (own __eq__)


def _item_key(item: Any, keys: Sequence[str]) -> str:
    if not isinstance(item, Mapping):
        return json.dumps(item, sort_keys=True)
    return json.dumps([item.get(k) for k in keys], sort_keys=True)


class _Preserved:
    """A value kept by x-kubernetes-preserve-unknown-fields without a type: only compared."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __eq__(self, other: Any) -> bool:
        theirs = other.raw if isinstance(other, _Preserved | _Object | _List) else other
        return _json_equal(self.raw, theirs)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # unhashable (own __eq__)


class _Optional:
    """``oldSelf`` of an ``optionalOldSelf`` rule: ``optional.none()`` or ``optional.of(v)``."""

    def __init__(self, value: Any = None, *, present: bool = False) -> None:
        self.value, self.present = value, present


def _with_type_and_meta(schema: Mapping[str, Any]) -> JsonDict:
    """``model.WithTypeAndObjectMeta``: what a rule sees of a resource's kind and metadata."""
    properties = dict(schema.get("properties") or {})
    properties["kind"] = properties["apiVersion"] = {"type": "string"}
    properties["metadata"] = {"type": "object", "properties": {
        "name": {"type": "string"}, "generateName": {"type": "string"}}}
    return {**schema, "properties": properties}


def cel_value(value: Any, schema: Mapping[str, Any]) -> Any:
    """``UnstructuredToVal``: a JSON value as a rule sees it, under its structural schema."""
    if value is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, str):
            return celtypes.StringType(value)
        return celtypes.IntType(value) if isinstance(value, int) else _Preserved(value)
    kind = schema.get("type")
    if kind == "object" and isinstance(value, Mapping):
        if schema.get("x-kubernetes-embedded-resource"):
            schema = _with_type_and_meta(schema)
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and _is_schema(additional):
            return celtypes.MapType({celtypes.StringType(k): cel_value(v, additional)
                                     for k, v in value.items() if v is not None})
        declared: Mapping[str, Any] = properties or {}
        names = {k: escaped for k in declared if (escaped := _escape(k)) is not None}
        values = {k: cel_value(v, declared[k]) for k, v in value.items()
                  if k in names and v is not None}
        return _Object(value, values, names)
    if kind == "array" and isinstance(value, list) and _is_schema(schema.get("items")):
        items = schema["items"]
        return _List([cel_value(v, items) for v in value], value,
                     schema.get("x-kubernetes-list-type"),
                     schema.get("x-kubernetes-list-map-keys") or [])
    if kind == "string" and isinstance(value, str):
        return _string(value, schema.get("format"))
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return celtypes.IntType(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    if kind == "boolean" and isinstance(value, bool):
        return celtypes.BoolType(value)
    return _Preserved(value)


def _string(value: str, form: Any) -> Any:
    try:
        if form in ("date", "date-time"):
            return celtypes.TimestampType(value if form == "date-time" else f"{value}T00:00:00Z")
        if form == "duration":
            return celtypes.DurationType(value)
        if form == "byte":
            return celtypes.BytesType(base64.b64decode(value, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return _Preserved(value)  # an error value: a rule reading it fails to evaluate
    return celtypes.StringType(value)


# --- CEL functions beyond celpy's standard ones -------------------------------------------------


def _list_or_string_index(target: Any, item: Any, *, last: bool) -> Any:
    if isinstance(target, str):
        found = target.rfind(item) if last else target.find(item)
        return celtypes.IntType(found)
    positions = [i for i, v in enumerate(target) if v == item]
    return celtypes.IntType((positions[-1] if last else positions[0]) if positions else -1)


def _substring(text: str, start: int, end: int | None = None) -> Any:
    if start < 0 or start > len(text) or (end is not None and (end < start or end > len(text))):
        raise IndexError(f"index out of range: {end if end is not None else start}")
    return celtypes.StringType(text[start:end])


def _optional_value(optional: Any) -> Any:
    if not isinstance(optional, _Optional) or not optional.present:
        raise ValueError("optional.none() dereference")
    return optional.value


#: The k8s CEL libraries' functions the emulator evaluates (strings and lists extensions).
CEL_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "charAt": lambda s, i: _substring(s, i, min(i + 1, len(s))),
    "indexOf": lambda t, v: _list_or_string_index(t, v, last=False),
    "lastIndexOf": lambda t, v: _list_or_string_index(t, v, last=True),
    "lowerAscii": lambda s: celtypes.StringType("".join(
        c.lower() if c.isascii() else c for c in s)),
    "upperAscii": lambda s: celtypes.StringType("".join(
        c.upper() if c.isascii() else c for c in s)),
    "replace": lambda s, old, new, n=-1: celtypes.StringType(s.replace(old, new, n)),
    "split": lambda s, sep, n=-1: celtypes.ListType(
        [celtypes.StringType(p) for p in (s.split(sep, n - 1) if n > 0 else
                                          [] if n == 0 else s.split(sep))]),
    "substring": _substring,
    "trim": lambda s: celtypes.StringType(s.strip()),
    "join": lambda items, sep="": celtypes.StringType(sep.join(items)),
    "isSorted": lambda items: celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items))),
    "sum": lambda items: sum(items[1:], items[0]) if items else celtypes.IntType(0),
    "min": lambda items: min(items),
    "max": lambda items: max(items),
    "hasValue": lambda o: celtypes.BoolType(isinstance(o, _Optional) and o.present),
    "value": _optional_value,
    "orValue": lambda o, default: o.value if isinstance(o, _Optional) and o.present else default,
}
_CEL_BUILTINS: Final = frozenset({"has", *MACROS})


def _environment() -> celpy.Environment:
    global _ENVIRONMENT  # built once: its parser takes ~0.1 s to build
    if _ENVIRONMENT is None:
        _ENVIRONMENT = celpy.Environment()
    return _ENVIRONMENT


_ENVIRONMENT: celpy.Environment | None = None


def _functions_called(tree: Any) -> set[str]:
    """The names of the functions and methods an expression calls."""
    found: set[str] = set()
    if not _is_tree(tree):
        return found
    if tree.data in ("member_dot_arg", "ident_arg"):
        found.add(str(tree.children[1] if tree.data == "member_dot_arg" else tree.children[0]))
    for kid in tree.children:
        found |= _functions_called(kid)
    return found


# --- the rules of a schema, compiled, and their evaluation --------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rule:
    """One x-kubernetes-validations entry, compiled."""

    text: str
    program: celpy.Runner
    message: str  # ruleMessageOrDefault
    error_text: str  # ruleErrorString
    message_program: celpy.Runner | None
    uses_old_self: bool
    optional_old_self: bool
    field_path: str | None  # normalized, below the rule's node
    reason: str | None


@dataclasses.dataclass
class _Node:
    """The rules at one schema node and the nodes below it that hold rules (cel.Validator)."""

    schema: Mapping[str, Any]  # the node's structural schema, for values
    is_resource_root: bool
    rules: list[_Rule] = dataclasses.field(default_factory=list)
    properties: dict[str, _Node] = dataclasses.field(default_factory=dict)
    items: _Node | None = None
    additional: _Node | None = None
    all_of: list[_Node] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rules or self.properties or self.items or self.additional or
                    self.all_of)


def _compile(expression: str, where: str) -> celpy.Runner:
    environment = _environment()
    tree = environment.compile(expression)
    unknown = sorted(_functions_called(tree) - set(base_functions) - set(CEL_FUNCTIONS) -
                     _CEL_BUILTINS)
    if unknown:
        raise NotImplementedError(
            f"{where}: the emulator cannot evaluate {expression!r}: it calls {', '.join(unknown)}, "
            "which support.crd_rules does not implement (add it to CEL_FUNCTIONS, or run the "
            "emulator with cel=False)")
    return environment.program(tree, functions=CEL_FUNCTIONS)


def _node(validation: Mapping[str, Any], schema: Mapping[str, Any], path: str, *,
          is_resource_root: bool) -> _Node | None:
    node = _Node(schema=_with_type_and_meta(schema) if is_resource_root else schema,
                 is_resource_root=is_resource_root)
    for i, rule in enumerate(validation.get("x-kubernetes-validations") or []):
        where = f"{path}.x-kubernetes-validations[{i}]"
        text = str(rule.get("rule") or "").strip()
        if not text:
            continue
        message = str(rule.get("message") or "").strip()
        expression = str(rule.get("messageExpression") or "").strip()
        _, uses_old_self = _CelReferences(schema, is_root=is_resource_root).check(text)
        field_path = str(rule.get("fieldPath") or "")
        node.rules.append(_Rule(
            text=text, program=_compile(text, f"{where}.rule"),
            message=message or f"failed rule: {text}", error_text=message or text,
            message_program=_compile(expression, f"{where}.messageExpression")
            if expression else None,
            uses_old_self=uses_old_self, optional_old_self=bool(rule.get("optionalOldSelf")),
            field_path=normalized_field_path(schema, field_path) if field_path else None,
            reason=rule.get("reason")))
    properties = schema.get("properties") or {}
    for name, sub in (validation.get("properties") or {}).items():
        if _is_schema(sub) and _is_schema(properties.get(name)):
            child = _node(sub, properties[name], _key(path, "properties", name),
                          is_resource_root=bool(properties[name].get(
                              "x-kubernetes-embedded-resource")))
            if child:
                node.properties[name] = child
    for key in ("items", "additionalProperties"):
        if _is_schema(validation.get(key)) and _is_schema(schema.get(key)):
            child = _node(validation[key], schema[key], f"{path}.{key}",
                          is_resource_root=bool(schema[key].get("x-kubernetes-embedded-resource")))
            if key == "items":
                node.items = child
            else:
                node.additional = child
    for i, sub in enumerate(validation.get("allOf") or []):
        if _is_schema(sub):
            child = _node(sub, schema, f"{path}.allOf[{i}]", is_resource_root=is_resource_root)
            if child:
                node.all_of.append(child)
    return node if node else None


class _Correlated:
    """``common.CorrelatedObject``: a value with the old value it corresponds to, for
    ratcheting (a rule's error on a value equal to the old one is only a warning)."""

    def __init__(self, new: Any, old: Any, schema: Mapping[str, Any]) -> None:
        self.new, self.old, self.schema = new, old, schema
        self._children: dict[Any, _Correlated | None] = {}
        self._equal: bool | None = None

    def key(self, name: str) -> _Correlated | None:
        if name not in self._children:
            self._children[name] = self._key(name)
        return self._children[name]

    def _key(self, name: str) -> _Correlated | None:
        if not (isinstance(self.old, Mapping) and isinstance(self.new, Mapping)) or \
                name not in self.old or name not in self.new:
            return None
        properties = self.schema.get("properties") or {}
        if _is_schema(properties.get(name)):
            return _Correlated(self.new[name], self.old[name], properties[name])
        additional = self.schema.get("additionalProperties")
        if _is_schema(additional):
            return _Correlated(self.new[name], self.old[name], additional)
        return None

    def index(self, i: int) -> _Correlated | None:
        if i not in self._children:
            old = _map_list_match(self.schema, self.old, self.new[i]) \
                if isinstance(self.new, list) and i < len(self.new) else None
            items = self.schema.get("items")
            self._children[i] = _Correlated(self.new[i], old, items) \
                if old is not None and _is_schema(items) else None
        return self._children[i]

    def equal(self) -> bool:
        if self._equal is None:
            self._equal = self._deep_equal()
        return self._equal

    def _deep_equal(self) -> bool:
        new, old = self.new, self.old
        if new is None or old is None:
            return new is None and old is None
        if isinstance(new, list) and isinstance(old, list):
            if len(new) != len(old):
                return False
            for i in range(len(new)):
                child = self.index(i)
                if child is None:
                    return self.schema.get("x-kubernetes-list-type") != "map" and \
                        _json_equal(new, old)
                if not child.equal():
                    return False
            return True
        if isinstance(new, Mapping) and isinstance(old, Mapping):
            if len(new) != len(old):
                return False
            return all((child := self.key(k)) is not None and child.equal() for k in new)
        return _json_equal(new, old)


def _map_list_match(schema: Mapping[str, Any], old: Any, item: Any) -> Any:
    """The old item of a list-type map list with the same keys as ``item`` (or None)."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list) \
            or not isinstance(item, Mapping):
        return None
    wanted = _scalar_key(item, keys)
    if wanted is None:
        return None
    return next((o for o in old if isinstance(o, Mapping) and _scalar_key(o, keys) == wanted),
                None)


def _scalar_key(item: Mapping[str, Any], keys: Sequence[str]) -> tuple[Any, ...] | None:
    found = []
    for key in keys:
        value = item.get(key)
        if key not in item or isinstance(value, Mapping | list) or value is None:
            return None
        found.append((type(value).__name__, value))
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class _Ratchet:
    """``ratchetingOptions``: the node's correlation, or the nearest correlated ancestor."""

    current: _Correlated | None = None
    parent: _Correlated | None = None

    def should_ratchet(self) -> bool:
        if self.current is not None:
            return self.current.equal()
        return self.parent is not None and self.parent.equal()

    def key(self, name: str) -> _Ratchet:
        if self.current is None:
            return self
        if self.parent is None and name in ("apiVersion", "kind"):
            return _Ratchet()
        return _Ratchet(self.current.key(name), self.current)

    def index(self, i: int) -> _Ratchet:
        if self.current is None:
            return self
        return _Ratchet(self.current.index(i), self.current)


class CelRules:
    """The ``x-kubernetes-validations`` rules of one CRD version's ``openAPIV3Schema``, compiled
    once, and evaluated on objects as a real API server evaluates them (see above).

    ``violations(new)`` on create, ``violations(new, old)`` on an update (of the object or of
    its status): the field errors the server's 422 lists after the schema's own, in its words.
    A rule that calls a function the emulator lacks raises ``NotImplementedError`` here.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._root = _node(schema, schema, "openAPIV3Schema", is_resource_root=True)

    def __bool__(self) -> bool:
        return self._root is not None

    def violations(self, new: Mapping[str, Any],
                   old: Mapping[str, Any] | None = None) -> list[Violation]:
        if self._root is None:
            return []
        ratchet = _Ratchet() if old is None else _Ratchet(_Correlated(new, old, self.schema))
        return self._validate(self._root, "", new, old, ratchet)

    def _validate(self, node: _Node, path: str, new: Any, old: Any,
                  ratchet: _Ratchet) -> list[Violation]:
        if new is None:
            return []
        found = self._rules(node, path, new, old, ratchet)
        for part in node.all_of:  # allOf's errors are not ratcheted
            found += self._validate(part, path, new, old, _Ratchet(None, ratchet.parent))
        if isinstance(new, list) and node.items is not None:
            for i, item in enumerate(new):
                found += self._validate(node.items, f"{path}[{i}]", item,
                                        _map_list_match(node.schema, old, item), ratchet.index(i))
        elif isinstance(new, Mapping):
            correlatable = node.schema.get("x-kubernetes-map-type") in (None, "granular", "atomic")
            old_map = old if correlatable and isinstance(old, Mapping) else {}
            for name, value in new.items():
                sub = node.properties.get(name) if node.properties else node.additional
                if sub is not None:
                    where = _child(path, name) if node.properties else f"{path}[{name}]"
                    found += self._validate(sub, where, value, old_map.get(name),
                                            ratchet.key(name))
        return found

    def _rules(self, node: _Node, path: str, new: Any, old: Any,
               ratchet: _Ratchet) -> list[Violation]:
        if not node.rules:
            return []
        kind = str(node.schema.get("type") or "")
        value = cel_value(new, node.schema)
        old_value = cel_value(old, node.schema) if old is not None else None
        where = path or "<nil>"
        found: list[Violation] = []
        for rule in node.rules:
            if rule.uses_old_self and old is None and not rule.optional_old_self:
                continue  # a transition rule: nothing to compare with
            activation: dict[str, Any] = {"self": value}
            if rule.uses_old_self:
                activation["oldSelf"] = _Optional(old_value, present=old is not None) \
                    if rule.optional_old_self else old_value
            try:
                result = _evaluate(rule.program, activation)
            except CELEvalError as e:
                found.append(field_error(None, where, kind,
                                         f"{_cel_error(e, rule)} evaluating rule: "
                                         f"{rule.error_text}"))
                continue
            except _NoSuchOverload as e:
                found.append(field_error(None, where, kind,
                                         f"'{e}': call arguments did not match a supported "
                                         "operator, function or macro signature for rule: "
                                         f"{rule.error_text}"))
                continue
            if result is True:
                continue
            field = f"{path}.{rule.field_path}" if path and rule.field_path else \
                rule.field_path or where
            detail = _message(rule, activation) or rule.message
            error = field_error(rule.reason, field,
                                OMITTED if kind in ("object", "array") else new, detail)
            if not rule.uses_old_self and ratchet.should_ratchet():
                continue  # an unchanged value: a warning on a real server
            found.append(error)
        return found


class _NoSuchOverload(Exception):
    """A rule applied an operator or function to values of the wrong types."""


def _evaluate(program: celpy.Runner, activation: Mapping[str, Any]) -> bool:
    """True when the rule holds; raises CELEvalError (or _NoSuchOverload) when it errs."""
    try:
        result = program.evaluate(dict(activation))
    except CELEvalError as e:
        if _is_overload_error(e):
            raise _NoSuchOverload("no such overload") from e
        raise
    except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as e:
        raise CELEvalError(str(e), type(e), e.args) from e
    if isinstance(result, CELEvalError):
        if _is_overload_error(result):
            raise _NoSuchOverload("no such overload") from result
        raise result
    if not isinstance(result, celtypes.BoolType):
        raise _NoSuchOverload("no such overload")
    return bool(result)


def _is_overload_error(error: CELEvalError) -> bool:
    text = str(error.args[0]) if error.args else ""
    return "no matching overload" in text or "no such overload" in text or \
        (len(error.args) > 1 and error.args[1] is TypeError)


def _cel_error(error: CELEvalError, rule: _Rule) -> str:
    """cel-go's words for an evaluation error, where celpy's differ."""
    text = str(error.args[0]) if error.args else "evaluation error"
    missing = re.fullmatch(r"no such member in mapping: '(.*)'", text)
    if missing:
        return f"no such key: {missing[1]}"
    kind = error.args[1] if len(error.args) > 1 else None
    if kind is ZeroDivisionError:
        return "modulus by zero" if "%" in rule.text else "division by zero"
    if kind is IndexError:
        details = error.args[2] if len(error.args) > 2 and error.args[2] else ()
        ours = next((str(d) for d in details if str(d).startswith("index out of ")), None)
        return ours or "index out of bounds"
    return text


def _message(rule: _Rule, activation: Mapping[str, Any]) -> str | None:
    """``evalMessageExpression``: its text, or None to fall back to the rule's message."""
    if rule.message_program is None:
        return None
    try:
        result = rule.message_program.evaluate(dict(activation))
    except Exception:  # any failure: the server logs it and uses the message instead
        return None
    if not isinstance(result, str):
        return None
    text = result.strip()
    if not text or "\n" in text or len(text.encode()) > MESSAGE_EXPRESSION_MAX_BYTES:
        return None
    return text


# --- unique items of list-type set and map lists (apiserver/schema/listtype/validation.go) -------
#
# On each create and update of a custom resource (its /status too), after the schema's checks and
# before the CEL rules (customresource/strategy.go), a real server refuses a list with
# ``x-kubernetes-list-type: set`` that holds an item twice, and one with ``map`` that holds two
# items with the same ``x-kubernetes-list-map-keys``: ``Duplicate value`` at the later item's index
# (the second of three equal items only), showing the item (set) or its keys (map). Items compare
# as Go's decoded JSON does: 4 and 4.0 are not equal scalars, {"x": 4} and {"x": 4.0} are equal
# objects. A map list item that is not an object is ``Invalid``. Older than CEL (Kubernetes 1.18),
# and done with CEL off too. On an update, nothing is checked when the stored object already
# breaks these rules anywhere (a ratchet over the whole object, for objects stored before the CRD
# made a list a set or a map). The server walks an object's fields in Go's random map order, so
# the order of errors at different fields varies there; here it is the object's own order.


class _Unspecified:
    """Go's ``unspecifiedKeyValue``: a map list item without its key, or a null item."""

    def __repr__(self) -> str:
        return "<unspecified>"


_UNSPECIFIED: Final = _Unspecified()


def list_violations(schema: Mapping[str, Any], obj: Any) -> list[Violation]:
    """``ValidateListSetsAndMaps``: the duplicates in ``obj``'s set and map lists, as the server's
    422 lists them (``schema``: the structural schema of the resource, at its root)."""
    return _object_lists("", schema, obj) if isinstance(obj, Mapping) else []


def _object_lists(path: str, schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    additional = schema.get("additionalProperties")
    if _is_schema(additional):
        for key, value in obj.items():
            found += _value_lists(f"{path}[{key}]", additional, value)
    properties = schema.get("properties")
    if _is_schema(properties):
        for key, value in obj.items():
            if _is_schema(properties.get(key)):
                found += _value_lists(_child(path, key), properties[key], value)
    return found


def _value_lists(path: str, schema: Mapping[str, Any], value: Any) -> list[Violation]:
    if isinstance(value, list):
        return _array_lists(path, schema, value)
    if isinstance(value, Mapping):
        return _object_lists(path, schema, value)
    return []


def _array_lists(path: str, schema: Mapping[str, Any], items: list[Any]) -> list[Violation]:
    found: list[Violation] = []
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        found += [field_error("FieldValueDuplicate", f"{path}[{i}]", items[i], "")
                  for i in _repeated(items)]
    elif list_type == "map":
        found += _map_list_duplicates(path, schema.get("x-kubernetes-list-map-keys") or [], items)
    if _is_schema(schema.get("items")):
        for i, item in enumerate(items):
            found += _value_lists(f"{path}[{i}]", schema["items"], item)
    return found


def _map_list_duplicates(path: str, keys: Sequence[str], items: list[Any]) -> list[Violation]:
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, Mapping):
            return [field_error(None, f"{path}[{i}]", item,
                                "must be an object for an array of list-type map")]
    if len(keys) == 1:
        single = [_UNSPECIFIED if item is None or keys[0] not in item else item[keys[0]]
                  for item in items]
        return [field_error("FieldValueDuplicate", f"{path}[{i}]",
                            {} if single[i] is _UNSPECIFIED else {keys[0]: single[i]}, "")
                for i in _repeated(single)]
    several = [{key: item[key] for key in keys if key in item} if item is not None else {}
               for item in items]
    return [field_error("FieldValueDuplicate", f"{path}[{i}]", several[i], "")
            for i in _repeated(several)]


def _repeated(items: Sequence[Any]) -> list[int]:
    """``validateListSet``: the index of each value's second appearance, in order."""
    seen: dict[Any, int] = {}
    repeated: list[int] = []
    for i, item in enumerate(items):
        identity = _go_identity(item)
        seen[identity] = seen.get(identity, 0) + 1
        if seen[identity] == 2:
            repeated.append(i)
    return repeated


def _go_identity(value: Any) -> Any:
    """Equal for equal items as Go compares them: objects and lists by their JSON, scalars by
    their Go type and value (int64 4 and float64 4 differ)."""
    if isinstance(value, Mapping | list):
        return ("json", _go_json(value))
    value = _go_number(value)
    return (type(value).__name__, value)
