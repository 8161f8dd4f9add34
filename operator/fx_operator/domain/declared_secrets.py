"""What a package declares of its secrets, in ``package.yaml`` and in a Package's
``spec.secrets``: one model for both.

A module of its own so that ``fxctl run``, which reads package.yaml, does not build the custom
resources' models (:mod:`fx_operator.domain.resources`, about twenty pydantic models): with the
Package spec's check moved to :mod:`fx_operator.domain.package_definition`, fxctl's own process
runs 7% fewer instructions (1,221 M to 1,133 M, callgrind) and bench_cli's ``fxctl run`` takes
~20 ms less CPU (p50 343 to 325 ms, interleaved, load 2.4; wall p50 427 to 407 ms).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fx_operator.domain.secrets_file import NAME_PATTERN as SECRET_NAME_PATTERN

ScopeName = Literal["package", "project", "platform"]


class DeclaredSecret(BaseModel):
    """One name a package declares: required or not, pinned to one scope or not."""

    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="rust-regex")

    name: str = Field(pattern=SECRET_NAME_PATTERN.pattern, description="The secret's name.")
    required: bool = Field(default=True, description="A run fails before it starts when a "
                           "required name resolves nowhere (or not at its pinned scope).")
    scope: ScopeName | None = Field(
        default=None, description="Pins the name to exactly this scope: no fallback.")


class SecretsSpec(BaseModel):
    """What a package declares of its secrets: ``names`` (besides those its scripts read
    literally, found by :mod:`fx_operator.domain.secret_finder`) and the ``all`` opt-in.

    One object rather than a bare list so that both forms, the list and ``{all: true}``, have
    one structural schema in the Package CRD (which cannot say "a list or an object").
    """

    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="rust-regex")

    names: tuple[DeclaredSecret, ...] = Field(default=(), description="Names the package uses.")
    all: bool = Field(default=False, description="Deliver every name in the package's chain "
                      "(for scripts whose names cannot be found statically).")

    @model_validator(mode="after")
    def _each_name_once(self) -> SecretsSpec:
        seen: set[str] = set()
        for declared in self.names:
            if declared.name in seen:
                raise ValueError(f"{declared.name!r} is declared twice")
            seen.add(declared.name)
        return self
