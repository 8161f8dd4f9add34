"""A package's own settings: ``package.yaml`` in a local folder (a Package resource's spec is
checked by :mod:`fx_operator.domain.package_definition`).

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

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fx_operator.domain.declared_secrets import DeclaredSecret, SecretsSpec
from fx_operator.domain.nesting import too_deep
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
