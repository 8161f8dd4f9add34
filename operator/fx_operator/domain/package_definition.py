"""A Package resource's spec, checked: what a run of it needs (:class:`PackageDefinition`).

Apart from ``package.yaml`` (:mod:`fx_operator.domain.package_spec`), whose reader, ``fxctl run``,
needs none of the custom resources' models this module builds on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from fx_operator.domain.conditions import Reason
from fx_operator.domain.declared_secrets import SecretsSpec
from fx_operator.domain.nesting import too_deep
from fx_operator.domain.resources import PackageResourceSpec, field_problems
from fx_operator.domain.retries import check_retries
from fx_operator.exceptions import Problem, ValidationError

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
