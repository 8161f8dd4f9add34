"""Secret scopes, their owners, and the precedence used when resolving a name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from fx_operator.exceptions import Problem, ValidationError

DEFAULT_PROJECT = "default"

# A project is a Kubernetes namespace, a package a DNS-1123 label: both follow that rule.
# Check with ``fullmatch``: Python's ``$`` also matches before a trailing "\n", so ``.match``
# would accept "team-a\n". The anchors stay for pydantic (package_spec), which searches.
OWNER_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Scope(StrEnum):
    """Where a secret lives; resolution looks in this order: package, project, platform."""

    PACKAGE = "package"
    PROJECT = "project"
    PLATFORM = "platform"


PRECEDENCE: tuple[Scope, ...] = (Scope.PACKAGE, Scope.PROJECT, Scope.PLATFORM)


def _check_owner_name(field: str, value: str) -> None:
    if not OWNER_NAME_PATTERN.fullmatch(value):
        raise ValidationError(
            Problem(field, f"{value!r} is not a valid name (lowercase letters, digits and '-', "
                    "1-63 characters, starting and ending with a letter or digit)"),
            source=field,
        )


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a secret or data key belongs to. Unused parts are empty strings, never None."""

    scope: Scope
    project: str = ""
    package: str = ""

    @classmethod
    def of(cls, scope: Scope | str, project: str | None = None,
           package: str | None = None) -> Owner:
        """Build an owner from user input, checking the parts the scope needs (and only those)."""
        try:
            scope = Scope(scope)
        except ValueError:
            raise ValidationError(
                Problem("scope", f"{scope!r} is not one of package, project, platform"),
                source="scope",
            ) from None
        if scope is Scope.PLATFORM:
            return cls(scope)
        project = project or DEFAULT_PROJECT
        _check_owner_name("project", project)
        if scope is Scope.PROJECT:
            return cls(scope, project)
        if not package:
            raise ValidationError(Problem("package", "package scope needs a package name"),
                                  source="package")
        _check_owner_name("package", package)
        return cls(scope, project, package)

    @classmethod
    def chain(cls, project: str, package: str) -> tuple[Owner, Owner, Owner]:
        """The three owners a package's run sees, most specific first."""
        return (
            cls.of(Scope.PACKAGE, project, package),
            cls.of(Scope.PROJECT, project),
            cls(Scope.PLATFORM),
        )

    def __str__(self) -> str:
        parts = [self.scope.value, self.project, self.package]
        return "/".join(p for p in parts if p)
