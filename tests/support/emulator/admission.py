"""What the API server checks and converts on every written object.

ObjectMeta checks (names, labels, annotations size, ownerReferences), a custom resource's schema,
list-type and CEL rules (``support.crd_rules``), and Secret ``stringData``: the emulator's
writes all pass through here, so a body a real server refuses is refused with the same causes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jsonschema
import jsonschema.exceptions
import jsonschema.protocols

from support.crd_rules import BLOCKING_REASONS, NOT_CHECKED, CelRules, list_violations
from support.emulator.errors import Cause, bad_request
from support.emulator.kinds import JsonDict
from support.emulator.openapi import schema_causes

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@dataclasses.dataclass(frozen=True)
class CustomResource:
    """What the emulator keeps of one served version of a CRD."""

    kind: str
    group: str
    schema: Mapping[str, Any] | None  # the structural schema, for pruning and defaults
    validator: jsonschema.protocols.Validator | None
    rules: CelRules | None = None  # its x-kubernetes-validations; None: none, or CEL off

    def causes(self, body: Mapping[str, Any], old: Mapping[str, Any] | None = None,
               found: Sequence[Cause] = ()) -> list[Cause]:
        """The schema's errors, the duplicates in its set and map lists, then its CEL rules'
        (``old``: on an update), as a server lists them after ``found`` (the metadata's): no
        rule runs after an error that blocks them. The list duplicates are checked with CEL off
        too (a server has done so since 1.18), and not at all on an update of an object stored
        with some (the server's ratchet)."""
        causes: list[Cause] = []
        if self.validator is not None:
            errors = sorted(self.validator.iter_errors(body),
                            key=lambda e: list(map(str, e.path)))
            causes = [cause for error in errors for cause in schema_causes(error)]
        if self.schema is not None and (old is None or not list_violations(self.schema, old)):
            causes += [Cause(v.reason, v.field, v.message)
                       for v in list_violations(self.schema, body)]
        if self.rules:
            if any(c.reason in BLOCKING_REASONS for c in (*found, *causes)):
                causes.append(Cause(NOT_CHECKED.reason, NOT_CHECKED.field, NOT_CHECKED.message))
            else:
                causes += [Cause(v.reason, v.field, v.message)
                           for v in self.rules.violations(body, old)]
        return causes


def metadata_causes(body: Mapping[str, Any], *, namespaces: bool) -> list[Cause]:
    """The ObjectMeta checks every real server applies: names, labels, ownerReferences."""
    meta: Mapping[str, Any] = body.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name", "")
    pattern, limit = (_DNS_LABEL, 63) if namespaces else (_DNS_SUBDOMAIN, 253)
    if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
        causes.append(Cause("FieldValueInvalid", "metadata.name",
                             f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 "
                             f"{'label' if namespaces else 'subdomain'} must consist of lower case "
                             "alphanumeric characters, '-' or '.', and must start and end with an "
                             "alphanumeric character"))
    labels = meta.get("labels") or {}
    for key, value in labels.items() if isinstance(labels, Mapping) else ():
        if not _is_qualified_name(key):
            causes.append(Cause("FieldValueInvalid", "metadata.labels",
                                 f"Invalid value: {json.dumps(key)}: name part must consist of "
                                 "alphanumeric characters, '-', '_' or '.'"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            causes.append(Cause("FieldValueInvalid", "metadata.labels",
                                 f"Invalid value: {json.dumps(value)}: a valid label must be an "
                                 "empty string or consist of alphanumeric characters, '-', '_' or "
                                 "'.', and must start and end with an alphanumeric character"))
    references = [ref if isinstance(ref, Mapping) else {}
                  for ref in meta.get("ownerReferences") or []]
    for reference in references:
        for field, noun in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"),
                            ("uid", "uid")):
            if not reference.get(field):
                causes.append(Cause("FieldValueInvalid", f"metadata.ownerReferences.{field}",
                                     f'Invalid value: "": {noun} must not be empty'))
    if sum(1 for reference in references if reference.get("controller")) > 1:
        causes.append(Cause("FieldValueInvalid", "metadata.ownerReferences",
                             "Only one reference can have Controller set to true"))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, Mapping) and sum(
            len(str(k).encode()) + len(str(v).encode())
            for k, v in annotations.items()) > ANNOTATIONS_MAX_BYTES:
        causes.append(Cause("FieldValueTooLong", "metadata.annotations",
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


def convert_string_data(secret: JsonDict) -> None:
    """Secret ``stringData`` is write-only: the server merges it into base64 ``data``."""
    data = secret.get("data") or {}
    for key, value in (data.items() if isinstance(data, dict) else ()):
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: "
                               f"illegal base64 data in data[{key!r}]") from exc
    string_data = secret.pop("stringData", None) or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        secret["data"] = data
