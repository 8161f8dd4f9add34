"""The custom resources as typed models, mirroring ``crds/`` (Package, ScopedSecret, Execution,
Schedule and their status). Pure.

Each handler parses its object once (:func:`parse`) and hands the model to its service; the
kopf-facing and API-facing dicts stay at the edges (handlers, ``storage/kube.py``). Fields keep
the manifests' camelCase names as aliases, so a refusal names the field as the manifest spells
it. Only the types are checked here, as the CRD's structural schema does: what an API server
cannot check (CEL rules on an older server, a script holding a stored value, the scope a
namespace may write) stays with the services, with its own reason.

A malformed object can still arrive (an API server with validation off, a status patched by
hand): :func:`parse` then raises :class:`InvalidResource`, a ``ValidationError`` naming each
field, never a value, and the handler reports it (:func:`not_ready`) instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_camel

from fx_operator.domain.conditions import (
    Outcome,
    Reason,
    mark_failed,
)
from fx_operator.domain.declared_secrets import ScopeName, SecretsSpec
from fx_operator.exceptions import FxError, Problem, ValidationError

# --- what every object has -----------------------------------------------------------------------


class _Model(BaseModel):
    """camelCase aliases (the manifests' names), strict types (JSON's: lists, not tuples),
    unknown fields ignored
    (the API server prunes them; its own, such as ``managedFields``, are not ours)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True,
                              strict=True, extra="ignore")


class ObjectMeta(_Model):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = None


class Condition(_Model):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    last_transition_time: str | None = None


class Status(_Model):
    """What every kind's status has: the generation it describes, and its conditions."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def condition_dicts(self) -> list[dict[str, Any]]:
        """The conditions as the status patch carries them (``with_condition``'s input)."""
        return [c.model_dump(by_alias=True, exclude_none=True) for c in self.conditions]


class Resource(_Model):
    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    status: Status = Field(default_factory=Status)

    @property
    def generation(self) -> int | None:
        return self.metadata.generation


class ResourceHeader(Resource):
    """What any object of ours has (metadata, conditions), parsed when the whole cannot be."""


# --- Package -------------------------------------------------------------------------------------


class Script(_Model):
    name: str
    content: str


class PackageResourceSpec(_Model):
    """A Package's spec as the API server stores it; :func:`package_definition.definition_of` checks
    what its schema cannot (entrypoint, secrets.json, sizes, nesting)."""

    scripts: list[Script] = Field(default_factory=list)
    entrypoint: str | None = None
    image: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    compat: str | None = None  # the CRD's enum [ferris]: checked with the others, by name
    resources: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int | None = None
    secrets: SecretsSpec = Field(default_factory=SecretsSpec)
    retries: dict[str, Any] | None = None  # checked by ``domain.retries.check_retries``


class PackageStatus(Status):
    script_count: int | None = None
    entrypoint: str | None = None
    config_map: str | None = None
    content_hash: str | None = None
    secrets_found: list[str] = Field(default_factory=list)
    secrets_dynamic: list[str] = Field(default_factory=list)


class Package(Resource):
    spec: PackageResourceSpec = Field(default_factory=PackageResourceSpec)
    status: PackageStatus = Field(default_factory=PackageStatus)


# --- ScopedSecret --------------------------------------------------------------------------------


class ScopedSecretSpec(_Model):
    scope: ScopeName
    package: str | None = None
    encrypted_data: dict[str, str] = Field(default_factory=dict)


class StoredSecret(_Model):
    name: str | None = None
    version: int | None = None


class ScopedSecretStatus(Status):
    secret_count: int | None = None
    secrets: list[StoredSecret] = Field(default_factory=list)


class ScopedSecret(Resource):
    spec: ScopedSecretSpec
    status: ScopedSecretStatus = Field(default_factory=ScopedSecretStatus)


# --- Execution -----------------------------------------------------------------------------------


class ExecutionSpec(_Model):
    package: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int | None = None
    retries: dict[str, Any] | None = None  # checked by ``domain.retries.check_retries``


class Step(_Model):
    name: str
    phase: str
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None


class ManifestEntry(_Model):
    scope: str | None = None
    version: int | None = None
    key_id: str | None = None


class RunResult(_Model):
    output_tail: str | None = None
    truncated: bool | None = None
    unmasked_secrets: list[str] = Field(default_factory=list)
    missing_secrets: list[str] = Field(default_factory=list)


class ExecutionStatus(Status):
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    run_id: str | None = None
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    exit_code: int | None = None
    steps: list[Step] = Field(default_factory=list)
    manifest: dict[str, ManifestEntry] = Field(default_factory=dict)
    result: RunResult | None = None
    # the tries of a run retried (``domain.retries`` reads them as the API spells them)
    tries: list[dict[str, Any]] = Field(default_factory=list)
    try_count: int | None = None
    retry_policy: dict[str, Any] | None = None
    next_try_at: str | None = None


class Execution(Resource):
    spec: ExecutionSpec = Field(default_factory=ExecutionSpec)
    status: ExecutionStatus = Field(default_factory=ExecutionStatus)


# --- Schedule ------------------------------------------------------------------------------------


class ScheduleStatus(Status):
    last_schedule_time: str | None = None
    next_schedule_time: str | None = None
    last_execution: str | None = None
    active: list[str] = Field(default_factory=list)
    active_count: int | None = None


class Schedule(Resource):
    """A Schedule; its spec is checked by ``domain.schedules.parse_schedule_spec`` (cron, time
    zone, bounds: what the schema cannot check), the one validator of it."""

    spec: dict[str, Any] = Field(default_factory=dict)
    status: ScheduleStatus = Field(default_factory=ScheduleStatus)


# --- parsing, and what a refusal says ------------------------------------------------------------

R = TypeVar("R", bound=Resource)

#: The reason a kind's malformed object is refused with.
_REASONS: dict[str, Reason] = {"ScopedSecret": Reason.INVALID_SECRET}


class InvalidResource(ValidationError):
    """An object its own kind's schema refuses: each problem names its field, never a value.
    ``header`` is what could be read of it (metadata, conditions), to report the refusal on."""

    def __init__(self, problems: list[Problem], *, source: str,
                 header: ResourceHeader) -> None:
        super().__init__(problems, source=source)
        self.header = header


def parse(model: type[R], body: Mapping[str, Any]) -> R:
    """``body`` (a kopf body or an API answer) as ``model``, or :class:`InvalidResource`."""
    try:
        return model.model_validate(dict(body))
    except PydanticValidationError as e:
        header = _header(body)
        kind = header.kind or model.__name__
        reason = _REASONS.get(model.__name__, Reason.INVALID_SPEC)
        problems = [Problem(_where(error["loc"]), _what(error), reason)
                    for error in e.errors(include_url=False, include_input=False)]
        raise InvalidResource(problems, source=f"{kind} {header.metadata.name}".strip(),
                              header=header) from None


def field_problems(error: PydanticValidationError, prefix: str) -> list[Problem]:
    """A pydantic refusal of part of an object as problems under ``prefix`` (e.g. ``spec``)."""
    return [Problem(_where((prefix, *e["loc"])), _what(e))
            for e in error.errors(include_url=False, include_input=False)]


def _header(body: Mapping[str, Any]) -> ResourceHeader:
    try:
        return ResourceHeader.model_validate(dict(body))
    except PydanticValidationError:
        pass
    try:  # the status is what failed, most likely (patched by hand): without it
        return ResourceHeader.model_validate({k: v for k, v in body.items() if k != "status"})
    except PydanticValidationError:
        return ResourceHeader()


def _where(loc: tuple[int | str, ...]) -> str:
    """The field's path as a manifest spells it; a key that would break a log line escaped."""
    return ".".join(str(part).encode("utf-8", "backslashreplace").decode() for part in loc)


def _what(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "string_pattern_mismatch":
        return f"does not match {error['ctx']['pattern']}"
    return str(error["msg"])


def not_ready(resource: Resource, error: FxError, default: Reason) -> Outcome:
    """The status and Warning Event of an object refused: Ready=False with the error's reason
    (else ``default``) and its message, for the generation it describes."""
    return mark_failed(resource.status.condition_dicts(), generation=resource.generation,
                       reason=error.reason or default, message=str(error))
