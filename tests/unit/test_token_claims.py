"""The unverified pod claims of a projected token: a hint the broker may start a read with."""

from __future__ import annotations

import base64
import json

import pytest
from fx_operator.domain.token_claims import MAX_TOKEN_CHARS, claimed_pod


def jwt(payload: object) -> str:
    """A JWT's shape (header.payload.signature); nothing here verifies a signature."""
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2lnbmF0dXJl"


POD = {"kubernetes.io": {"namespace": "team-a", "pod": {"name": "etl-1", "uid": "u-1"},
                         "serviceaccount": {"name": "default", "uid": "s-1"}}}


def test_a_projected_token_names_its_pod() -> None:
    assert claimed_pod(jwt(POD)) == ("team-a", "etl-1", "u-1")


@pytest.mark.parametrize("token", [
    "not-a-token", "a.b", "a.b.c.d", "a.!!!.c", jwt([1, 2]), jwt({"sub": "x"}),
    jwt({"kubernetes.io": {"namespace": "team-a"}}),
    jwt({"kubernetes.io": {"namespace": "team-a", "pod": {"name": 7, "uid": "u"}}}),
    jwt({"kubernetes.io": {"namespace": "", "pod": {"name": "p", "uid": "u"}}}),
    jwt({"kubernetes.io": "text"}), "a." + "e" * MAX_TOKEN_CHARS + ".c",
    "a." + base64.urlsafe_b64encode(b"[" * 5_000).decode() + ".c",
], ids=["opaque", "two-parts", "four-parts", "not-base64", "array", "no-claims",
        "no-pod", "name-not-text", "empty-namespace", "claims-not-object", "oversized",
        "deep"])
def test_anything_else_names_no_pod(token: str) -> None:
    assert claimed_pod(token) is None
