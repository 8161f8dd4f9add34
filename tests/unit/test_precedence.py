"""The precedence rule (domain/precedence.py), pure: package beats project beats platform, and a
name pinned to one scope never falls back to another."""

from __future__ import annotations

from typing import Literal

from fx_operator.domain.declared_secrets import DeclaredSecret, SecretsSpec
from fx_operator.domain.precedence import Candidate, most_specific
from fx_operator.domain.secret_finder import Findings
from fx_operator.domain.secret_needs import SecretNeeds

PACKAGE = ("package", "DB_PASS", 3, b"package-blob")
PROJECT = ("project", "DB_PASS", 7, b"project-blob")
PLATFORM = ("platform", "DB_PASS", 12, b"platform-blob")


def _winner(*candidates: Candidate, needs: SecretNeeds | None = None) -> Candidate | None:
    allowed = needs.allows if needs is not None and needs.restricted else None
    winners = most_specific([list(candidates)], allowed)
    assert len(winners) <= 1
    return winners[0] if winners else None


def test_package_beats_project_beats_platform() -> None:
    assert _winner(PLATFORM, PROJECT, PACKAGE) == PACKAGE
    assert _winner(PLATFORM, PROJECT) == PROJECT
    assert _winner(PROJECT, PLATFORM) == PROJECT
    assert _winner(PLATFORM) == PLATFORM
    assert _winner() is None


def test_the_version_does_not_matter_only_the_scope() -> None:
    """A newer version at a wider scope does not shadow an older one at a narrower scope."""
    assert _winner(("platform", "DB_PASS", 99, b"new"), ("package", "DB_PASS", 1, b"old")) == \
        ("package", "DB_PASS", 1, b"old")


def _pinned(scope: Literal["package", "project", "platform"]) -> SecretNeeds:
    return SecretNeeds.of(SecretsSpec(names=(DeclaredSecret(name="DB_PASS", scope=scope),)),
                          Findings())


def test_a_pinned_name_comes_from_its_scope_only() -> None:
    assert _winner(PLATFORM, PROJECT, PACKAGE, needs=_pinned("project")) == PROJECT
    assert _winner(PLATFORM, PROJECT, PACKAGE, needs=_pinned("platform")) == PLATFORM
    # never a fallback: pinned to package scope, set only wider, it is not delivered
    assert _winner(PLATFORM, PROJECT, needs=_pinned("package")) is None


def test_platform_values_only_for_declared_names_when_the_operator_says_so() -> None:
    needs = SecretNeeds.of(SecretsSpec(), Findings(names={"DB_PASS": ()}),
                           platform_declared_only=True)
    assert _winner(PLATFORM, needs=needs) is None
    assert _winner(PLATFORM, PROJECT, needs=needs) == PROJECT


def test_each_name_on_its_own_in_name_order() -> None:
    rows: list[Candidate] = [("platform", "B", 1, b""), ("project", "A", 1, b""),
                             ("package", "B", 2, b""), ("platform", "A", 5, b"")]
    assert most_specific([rows[:2], rows[2:]]) == [("project", "A", 1, b""),
                                                   ("package", "B", 2, b"")]
