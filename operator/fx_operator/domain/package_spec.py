"""A package's own settings: ``package.yaml`` in a local folder (later, a Package's spec).

Every field is optional::

    name: etl               # default: the folder's name
    project: default        # the project (a namespace); default "default"
    entrypoint: main.py     # default: the folder's only .py file
    params: {day: monday}   # default params; a run's --param overrides them
    config: {...}           # read with context.config.get
    compat: ferris          # opt in to ferris_ef's sys.argv[1] JSON (holds the secrets!)
    timeout: 600            # seconds before the script is stopped
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fx_operator.domain.scopes import OWNER_NAME_PATTERN
from fx_operator.exceptions import Problem, ValidationError

ENTRYPOINT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.py$"


class PackageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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


def parse_package_spec(text: str, *, source: str = "package.yaml") -> PackageSpec:
    """Parse and check a package.yaml; every problem names its field."""
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ValidationError(Problem("", f"not valid YAML: {e}"), source=source) from None
    if not isinstance(document, dict):
        raise ValidationError(Problem("", f"must be a mapping, got {type(document).__name__}"),
                              source=source)
    try:
        return PackageSpec.model_validate(document)
    except PydanticValidationError as e:
        problems = [Problem(".".join(str(p) for p in error["loc"]) or "(document)",
                            _message(error)) for error in e.errors()]
        raise ValidationError(problems, source=source) from None


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown field (known: {', '.join(PackageSpec.model_fields)})"
    if error["type"] == "string_pattern_mismatch":
        return f"{error['input']!r} does not match {error['ctx']['pattern']}"
    return str(error["msg"])
