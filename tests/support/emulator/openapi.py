"""A CRD's OpenAPI v3 schema applied as the API server applies it.

Translation to a JSON schema (for ``jsonschema``), pruning of undeclared fields, defaults, and
the server's wording of each violation: a custom resource a real server would change or refuse
is changed or refused the same way here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

import jsonschema
import jsonschema.exceptions
import jsonschema.protocols

from support.emulator.errors import Cause
from support.emulator.kinds import JsonDict

_SCHEMA_MAPS: Final = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE: Final = ("not", "additionalItems")


def to_json_schema(schema: Mapping[str, Any]) -> JsonDict:
    """Translate a CRD's OpenAPI v3 (structural) schema into a JSON schema (draft 4).

    ``x-kubernetes-*`` keys are dropped; ``x-kubernetes-int-or-string`` becomes integer-or-string;
    ``nullable: true`` admits null. Pruning of unknown fields is done apart (:func:`prune`), and
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


def prune(value: Any, schema: Mapping[str, Any], *, embedded: bool = False) -> Any:
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
            result[key] = prune(item, sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune(item, schema["items"]) for item in value]
    return value


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    """Fill absent fields from the schema's ``default`` values, in place, as a server does."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key in value.keys() - properties.keys():
                apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            apply_defaults(item, schema["items"])


def _field_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_JSON_TYPE_NAMES: Final = {bool: "boolean", int: "integer", float: "number", str: "string",
                           list: "array", dict: "object", type(None): "null"}


def schema_causes(error: jsonschema.exceptions.ValidationError) -> list[Cause]:
    """Phrase a jsonschema error the way the API server phrases the same violation."""
    field = _field_path(error.absolute_path)
    instance = error.instance
    if error.validator == "required":
        return [Cause("FieldValueRequired", f"{field}.{name}" if field else str(name),
                       "Required value")
                for name in error.validator_value if name not in instance]
    shown = json.dumps(instance) if not isinstance(instance, dict | list) else repr(instance)
    if error.validator == "type":
        actual = _JSON_TYPE_NAMES.get(type(instance), "unknown")
        return [Cause("FieldValueTypeInvalid", field,
                       f'Invalid value: "{actual}": {field} in body must be of type '
                       f'{error.validator_value}: "{actual}"')]
    if error.validator == "maxLength":
        unit = "byte" if error.validator_value == 1 else "bytes"
        return [Cause("FieldValueTooLong", field,
                       f"Too long: may not be more than {error.validator_value} {unit}")]
    if error.validator in ("maxItems", "maxProperties"):
        unit = "item" if error.validator_value == 1 else "items"
        return [Cause("FieldValueTooMany", field, f"Too many: {len(instance)}: must have at "
                       f"most {error.validator_value} {unit}")]
    if error.validator == "enum":
        supported = ", ".join(json.dumps(v) for v in error.validator_value)
        return [Cause("FieldValueNotSupported", field,
                       f"Unsupported value: {shown}: supported values: {supported}")]
    detail, limit = _OPENAPI_DETAILS.get(str(error.validator)), error.validator_value
    if error.validator in ("minimum", "maximum") and error.schema.get(
            f"exclusive{str(error.validator).capitalize()}"):
        detail = "should be greater than {}" if error.validator == "minimum" else \
            "should be less than {}"
    if error.validator in ("minItems", "minProperties"):
        shown = str(len(instance))
    if detail is not None:
        return [Cause("FieldValueInvalid", field,
                       f"Invalid value: {shown}: {field} in body {detail.format(limit)}")]
    return [Cause("FieldValueInvalid", field,
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
