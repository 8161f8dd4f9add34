"""A package's own settings: ``package.yaml`` in a local folder (later, a Package's spec).

Every field is optional::

    name: etl               # default: the folder's name
    project: default        # the project (a namespace); default "default"
    entrypoint: main.py     # default: the folder's only .py file
    params: {day: monday}   # default params; a run's --param overrides them
    config: {...}           # read with context.config.get
    compat: ferris          # opt in to ferris_ef's sys.argv[1] JSON (holds the secrets!)
    timeout: 600            # seconds before the script is stopped
    secrets:                # the secret names runs receive (besides those the scripts read)
      names:
        - {name: DB_PASS}                    # required (the default), any scope
        - {name: REGION, required: false}    # delivered when it exists somewhere
        - {name: API_KEY, scope: project}    # must exist at project scope, no fallback
      all: false            # true: every name in the chain (scripts reading names dynamically)

It is read as JSON values (:mod:`fx_operator.domain.yaml_values`): unquoted dates stay text,
and NaN, infinities, binary data, sets or nesting deeper than the operator allows are refused,
each with its field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fx_operator.domain.conditions import Reason
from fx_operator.domain.nesting import too_deep
from fx_operator.domain.resources import DeclaredSecret as DeclaredSecret  # moved; kept here
from fx_operator.domain.resources import PackageResourceSpec, field_problems
from fx_operator.domain.resources import SecretsSpec as SecretsSpec
from fx_operator.domain.retries import check_retries
from fx_operator.domain.scopes import OWNER_NAME_PATTERN
from fx_operator.domain.yaml_values import TooDeepError, json_problems, load_json_values
from fx_operator.exceptions import Problem, ValidationError

ENTRYPOINT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.py$"


class PackageSpec(BaseModel):
    # Rust regex (pydantic's default, pinned): there ``$`` is the end of the text, whereas
    # Python's ``$`` would also match before a trailing "\n" and accept "team-a\n".
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="rust-regex")

    name: str | None = Field(default=None, pattern=OWNER_NAME_PATTERN.pattern,
                             description="The package's name, a DNS-1123 label.")
    project: str | None = Field(default=None, pattern=OWNER_NAME_PATTERN.pattern,
                                description="The project (namespace) the package belongs to.")
    entrypoint: str | None = Field(default=None, pattern=ENTRYPOINT_PATTERN,
                                   description="The script to run, a .py file of the package.")
    params: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    compat: Literal["ferris"] | None = Field(
        default=None, description="'ferris': pass sys.argv[1] JSON with the secrets (opt-in).")
    timeout: float | None = Field(default=None, gt=0, le=7 * 24 * 3600,
                                  description="Seconds before the script is stopped.")
    secrets: SecretsSpec = Field(default_factory=SecretsSpec,
                                 description="Secret names the package declares.")


def parse_package_spec(text: str, *, source: str = "package.yaml") -> PackageSpec:
    """Parse and check a package.yaml; every problem names its field."""
    try:
        document = load_json_values(text) if text.strip() else {}
    except TooDeepError as e:
        raise ValidationError(Problem(e.field, str(e)), source=source) from None
    except yaml.YAMLError as e:
        raise ValidationError(Problem("", f"not valid YAML: {e}"), source=source) from None
    if not isinstance(document, dict):
        raise ValidationError(Problem("", f"must be a mapping, got {type(document).__name__}"),
                              source=source)
    problems = json_problems(document, "")
    for key in ("params", "config"):
        if not problems and (nesting := too_deep(document.get(key))) is not None:
            problems.append(Problem(key, nesting))
    if problems:
        raise ValidationError(problems, source=source)
    try:
        return PackageSpec.model_validate(document)
    except PydanticValidationError as e:
        problems = [Problem(".".join(str(p) for p in error["loc"]) or "(document)",
                            _message(error)) for error in e.errors()]
        raise ValidationError(problems, source=source) from None


def _message(error: Any, top: type[BaseModel] = PackageSpec) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown field (known: {', '.join(_model_at(top, error['loc']).model_fields)})"
    if error["type"] == "string_pattern_mismatch":
        return f"{error['input']!r} does not match {error['ctx']['pattern']}"
    return str(error["msg"])


def _model_at(top: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model an unknown field at ``loc`` was found in (``loc`` ends with the field)."""
    path = [p for p in loc[:-1] if not isinstance(p, int)]
    if top is PackageSpec and path[:1] == ["secrets"]:
        top, path = SecretsSpec, path[1:]
    return DeclaredSecret if top is SecretsSpec and path[:1] == ["names"] else top


# --- a Package resource's spec -------------------------------------------------------------------

SECRETS_FILE_NAME = "secrets.json"
MAX_TOTAL_SCRIPT_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB, metadata included


@dataclass(frozen=True)
class PackageDefinition:
    """A Package resource's spec, checked: what a run of it needs."""

    name: str
    scripts: dict[str, str]
    entrypoint: str
    image: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    compat: str | None = None
    timeout_seconds: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    secrets: SecretsSpec = field(default_factory=SecretsSpec)
    #: ``spec.retries``: the default of its runs' retries (``domain.retries``), if it sets one.
    retries: dict[str, Any] | None = None


def package_definition(name: str, spec: dict[str, Any]) -> PackageDefinition:
    """Check a Package's spec given as JSON; a ValidationError lists every problem with its
    field."""
    try:
        typed = PackageResourceSpec.model_validate(spec)
    except PydanticValidationError as e:
        raise ValidationError(field_problems(e, "spec"), source=f"Package {name}") from None
    return definition_of(name, typed)


def definition_of(name: str, spec: PackageResourceSpec) -> PackageDefinition:
    """Check what a Package's schema cannot (see the CRD's CEL rules, which an older API server
    skips); a ValidationError lists every problem with its field."""
    source = f"Package {name}"
    problems: list[Problem] = []
    scripts: dict[str, str] = {}
    if not spec.scripts:
        problems.append(Problem("spec.scripts", "must list at least one script"))
    for index, item in enumerate(spec.scripts):
        where = f"spec.scripts[{index}]"
        script_name = item.name
        if script_name == SECRETS_FILE_NAME:
            problems.append(Problem(f"{where}.name", "a Package carries no secrets.json: seal it "
                                    "into a ScopedSecret (fxctl seal)",
                                    Reason.SECRETS_FILE_IN_PACKAGE))
        elif "/" in script_name or script_name.startswith("."):
            problems.append(Problem(f"{where}.name", f"{script_name!r} must be a plain file name"))
        elif script_name in scripts:
            problems.append(Problem(f"{where}.name", f"{script_name!r} appears twice"))
        else:
            scripts[script_name] = item.content
    total = sum(len(c.encode()) for c in scripts.values())
    if total > MAX_TOTAL_SCRIPT_BYTES:
        problems.append(Problem("spec.scripts", f"{total} bytes in all; at most "
                                f"{MAX_TOTAL_SCRIPT_BYTES} fit in the ConfigMap"))
    entrypoint = spec.entrypoint
    python_scripts = sorted(n for n in scripts if n.endswith(".py"))
    if entrypoint is None:
        if len(python_scripts) == 1:
            entrypoint = python_scripts[0]
        elif scripts:
            problems.append(Problem("spec.entrypoint", "name the script to run: the package has "
                                    f"{len(python_scripts)} .py scripts", Reason.NO_ENTRYPOINT))
    elif entrypoint not in scripts:
        problems.append(Problem("spec.entrypoint", f"{entrypoint!r} is not one of the scripts",
                                Reason.NO_ENTRYPOINT))
    compat = spec.compat
    if compat not in (None, "ferris"):
        problems.append(Problem("spec.compat", f"{compat!r} is not 'ferris'"))
    timeout = spec.timeout_seconds
    if timeout is not None and timeout < 1:
        problems.append(Problem("spec.timeoutSeconds", "must be a positive whole number"))
    for key, value in (("params", spec.params), ("config", spec.config),
                       ("resources", spec.resources)):
        if (nesting := too_deep(value)) is not None:
            problems.append(Problem(f"spec.{key}", nesting))
    problems.extend(check_retries(spec.retries, "spec.retries"))
    if problems:
        raise ValidationError(problems, source=source)
    return PackageDefinition(name, scripts, str(entrypoint), spec.image, dict(spec.params),
                             dict(spec.config), compat, timeout, dict(spec.resources),
                             spec.secrets, spec.retries)
