"""Which secret names a run receives: least privilege, decided before anything is decrypted.

A run receives the names its package *declares* (``secrets.names`` of a Package or package.yaml)
and the names its scripts read literally (*found* by :mod:`fx_operator.domain.secret_finder`),
nothing else — unless the package opts into ``secrets.all``. Two rules narrow where a name may
come from:

* a declared ``scope`` pins the name: only a value at exactly that scope is delivered, even when
  a more specific scope holds the name too (a "must be set by the project" policy);
* ``platform_declared_only`` (an operator setting): a platform-scope value is delivered only for
  names the package declares, never for names merely found in its scripts.

A required declared name (the default) that has no value where it may come from fails the run
before its Job exists (:meth:`SecretNeeds.missing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from fx_operator.domain.declared_secrets import DeclaredSecret, SecretsSpec
from fx_operator.domain.secret_finder import Findings, find_in_sources

PLATFORM = "platform"


def find_in_scripts(scripts: Mapping[str, str | bytes]) -> Findings:
    """The names a package's ``.py`` scripts read (cached: a Package's runs share them)."""
    return _found(tuple(sorted((n, c) for n, c in scripts.items() if n.endswith(".py"))))


@lru_cache(maxsize=256)
def _found(scripts: tuple[tuple[str, str | bytes], ...]) -> Findings:
    return find_in_sources(dict(scripts))


class Origin(StrEnum):
    """Why a name is asked for."""

    DECLARED = "declared"
    FOUND = "found"
    BOTH = "both"


@dataclass(frozen=True)
class MissingSecret:
    """A required name with no value where it may come from. No value, ever."""

    name: str
    scope: str | None  # the pinned scope, or None: any scope of the chain

    @property
    def where(self) -> str:
        return f"at {self.scope} scope" if self.scope else "at any scope"

    def __str__(self) -> str:
        return f"required secret {self.name!r} is not set {self.where}"


@dataclass(frozen=True)
class SecretNeeds:
    """The names a package's runs ask for, and the rules of where each may come from."""

    declared: Mapping[str, DeclaredSecret] = field(default_factory=dict)
    found: Findings = field(default_factory=Findings)
    all: bool = False
    platform_declared_only: bool = False

    @classmethod
    def of(cls, spec: SecretsSpec, found: Findings, *,
           platform_declared_only: bool = False) -> SecretNeeds:
        return cls({d.name: d for d in spec.names}, found, spec.all, platform_declared_only)

    @property
    def names(self) -> tuple[str, ...] | None:
        """The names to resolve, sorted; None for every name of the chain (``all``)."""
        if self.all:
            return None
        return tuple(sorted({*self.declared, *self.found.names}))

    def origin(self, name: str) -> Origin | None:
        declared, found = name in self.declared, name in self.found.names
        if declared and found:
            return Origin.BOTH
        return Origin.DECLARED if declared else Origin.FOUND if found else None

    @property
    def restricted(self) -> bool:
        """Whether some name may not come from every scope (else :meth:`allows` is moot)."""
        return self.platform_declared_only or any(d.scope for d in self.declared.values())

    def allows(self, scope: str, name: str) -> bool:
        """Whether a value of ``name`` at ``scope`` may be delivered."""
        declared = self.declared.get(name)
        if declared is not None and declared.scope is not None:
            return scope == declared.scope
        return not (self.platform_declared_only and scope == PLATFORM and declared is None)

    def why_not(self, scope: str, name: str) -> str | None:
        """Why a value at ``scope`` is not delivered; None when it may be."""
        if self.allows(scope, name):
            return None
        declared = self.declared.get(name)
        if declared is not None and declared.scope is not None:
            return f"pinned to {declared.scope} scope"
        return "platform scope is delivered only for declared names (operator setting)"

    def missing(self, delivered: Iterable[str]) -> list[MissingSecret]:
        """The required declared names not among ``delivered``, in name order."""
        got = set(delivered)
        return [MissingSecret(name, d.scope) for name, d in sorted(self.declared.items())
                if d.required and name not in got]

    def unused(self) -> list[str]:
        """Declared names no script reads literally (they may still be read dynamically)."""
        return sorted(set(self.declared) - set(self.found.names))


@dataclass(frozen=True)
class NameReport:
    """One name of a package, explained: where it would come from, and why (never a value)."""

    name: str
    origin: Origin | None  # None: only delivered because of ``all``
    required: bool
    pinned: str | None
    scope: str | None  # the scope it is delivered from; None when not delivered
    version: int | None
    shadows: tuple[tuple[str, int], ...]  # (scope, version) set for the name but not winning
    delivered: bool
    why: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "origin": self.origin.value if self.origin else "all",
                "required": self.required, "pinned": self.pinned, "scope": self.scope,
                "version": self.version, "delivered": self.delivered, "why": self.why,
                "shadows": [f"{scope} v{version}" for scope, version in self.shadows]}


_ORDER = ("package", "project", "platform")


def explain(needs: SecretNeeds, chain: Mapping[str, Mapping[str, int]]) -> list[NameReport]:
    """Each name a package's runs ask for (or, with ``all``, every name of its chain), given
    ``chain``: name -> {scope: current version} over the package's three owners."""
    names = set(needs.declared) | set(needs.found.names)
    if needs.all:
        names |= set(chain)
    reports = []
    for name in sorted(names):
        declared = needs.declared.get(name)
        at = chain.get(name, {})
        allowed = [s for s in _ORDER if s in at and needs.allows(s, name)]
        winner = allowed[0] if allowed else None
        shadows = tuple((s, at[s]) for s in _ORDER
                        if winner is not None and s in at and s != winner)
        fails = " (required: runs fail before they start)" if declared and declared.required \
            else ""
        if winner is not None:
            why = "declared" if declared else "read by the scripts" if name in needs.found.names \
                else "the package opts into all names"
            why = f"delivered from {winner} scope ({why})"
        elif at:
            refused = [f"{s}: {needs.why_not(s, name)}" for s in _ORDER if s in at]
            why = "not delivered: " + "; ".join(refused) + fails
        else:
            pin = f"at {declared.scope} scope" if declared and declared.scope else "at any scope"
            why = f"not delivered: set nowhere {pin}{fails}"
        reports.append(NameReport(
            name, needs.origin(name), bool(declared and declared.required),
            declared.scope if declared else None, winner,
            at[winner] if winner else None, shadows, winner is not None, why))
    return reports
