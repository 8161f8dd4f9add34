"""Least privilege's rules: which names a run asks for, where each may come from, what fails."""

from __future__ import annotations

from fx_operator.domain.declared_secrets import DeclaredSecret, SecretsSpec
from fx_operator.domain.secret_finder import find_in_source
from fx_operator.domain.secret_needs import MissingSecret, Origin, SecretNeeds, explain

SCRIPT = 'from fx_ef import context\ncontext.secrets.get("FOUND")\ncontext.secrets.get("BOTH")\n'


def _needs(*declared: DeclaredSecret, all_: bool = False,
           platform_declared_only: bool = False) -> SecretNeeds:
    return SecretNeeds.of(SecretsSpec(names=declared, all=all_),
                          find_in_source(SCRIPT, "main.py"),
                          platform_declared_only=platform_declared_only)


def test_names_are_declared_and_found_or_all() -> None:
    needs = _needs(DeclaredSecret(name="BOTH"), DeclaredSecret(name="DECL", required=False))
    assert needs.names == ("BOTH", "DECL", "FOUND")
    assert [needs.origin(n) for n in ("BOTH", "DECL", "FOUND", "OTHER")] == [
        Origin.BOTH, Origin.DECLARED, Origin.FOUND, None]
    assert _needs(all_=True).names is None


def test_a_pin_allows_exactly_its_scope_and_policy_narrows_platform() -> None:
    needs = _needs(DeclaredSecret(name="BOTH", scope="project"))
    assert [needs.allows(s, "BOTH") for s in ("package", "project", "platform")] == [
        False, True, False]
    assert not needs.restricted or needs.allows("platform", "FOUND")
    policy = _needs(DeclaredSecret(name="BOTH"), platform_declared_only=True)
    assert policy.allows("platform", "BOTH") and not policy.allows("platform", "FOUND")
    assert policy.allows("project", "FOUND")


def test_only_required_declared_names_are_missing() -> None:
    needs = _needs(DeclaredSecret(name="BOTH", scope="platform"),
                   DeclaredSecret(name="OPT", required=False))
    assert needs.missing(["FOUND"]) == [MissingSecret("BOTH", "platform")]
    assert str(needs.missing([])[0]) == "required secret 'BOTH' is not set at platform scope"


def test_explain_names_the_winner_what_it_shadows_and_why_not() -> None:
    needs = _needs(DeclaredSecret(name="BOTH", scope="project"), DeclaredSecret(name="GONE"))
    reports = {r.name: r for r in explain(needs, {
        "BOTH": {"package": 2, "project": 1}, "FOUND": {"project": 3, "platform": 1},
        "UNASKED": {"platform": 1}})}
    assert sorted(reports) == ["BOTH", "FOUND", "GONE"]
    assert (reports["BOTH"].scope, reports["BOTH"].shadows) == ("project", (("package", 2),))
    assert (reports["FOUND"].scope, reports["FOUND"].version) == ("project", 3)
    assert not reports["GONE"].delivered and "runs fail" in reports["GONE"].why
    assert needs.unused() == ["GONE"]
