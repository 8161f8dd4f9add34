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

The server reports the schema of a CRD whose versions all have the same schema (one version, say)
as ``spec.validation.openAPIV3Schema`` (its internal form hoists it there), otherwise as
``spec.versions[i].schema.openAPIV3Schema``; so does this module.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeGuard

import jsonschema
import re2
from celpy.celparser import CELParseError, CELParser

__all__ = ["Violation", "crd_violations", "schema_violations"]

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
    from support.kube_emulator import to_json_schema  # the emulator imports this module

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


_FIELD_PATH_STEP: Final = re.compile(
    r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?:'(?P<quoted>[^']*)'|\"(?P<double>[^\"]*)\"|"
    r"(?P<index>\d+))\]")


def _field_path_valid(s: Mapping[str, Any], field_path: str) -> bool:
    """A rule's fieldPath (``.a.b``, ``.a['b-c']``, ``.list[0]``) names a field of the schema."""
    current: Mapping[str, Any] | None = s
    position = 0
    while position < len(field_path):
        step = _FIELD_PATH_STEP.match(field_path, position)
        if step is None or current is None:
            return False
        position = step.end()
        name = step["name"] or step["quoted"] or step["double"]
        if name is not None:
            properties = current.get("properties") or {}
            if name in properties:
                current = properties[name]
            elif _is_schema(current.get("additionalProperties")):
                current = current["additionalProperties"]
            else:
                return False
        else:
            current = current.get("items") if _is_schema(current.get("items")) else None
    return current is not None and position > 0


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
        if _is_schema(base.get("additionalProperties")):
            return base["additionalProperties"]  # type: ignore[no-any-return]
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
    if _is_schema(base.get("items")):
        return base["items"]  # type: ignore[no-any-return]
    if _is_schema(base.get("additionalProperties")):
        return base["additionalProperties"]  # type: ignore[no-any-return]
    return DYNAMIC


def _iterated(base: Type) -> Type:
    """What a comprehension's variable is: a list's item, a map's key."""
    if isinstance(base, _Dynamic):
        return DYNAMIC
    if base.get("type") == "array" and _is_schema(base.get("items")):
        return base["items"]  # type: ignore[no-any-return]
    if base.get("type") == "object":
        return {"type": "string"}
    return DYNAMIC


def _cel_type(kind: str) -> str:
    return {"integer": "int", "number": "double", "boolean": "bool", "array": "list",
            "string": "string"}.get(kind, kind)
