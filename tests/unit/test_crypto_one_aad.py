"""A value's associated data is built in one place (``crypto._value_aad``), for sealing and for
opening alike: a second copy for speed could drift from it unseen (security-critical)."""

from __future__ import annotations

import pytest
from fx_operator.domain import crypto
from fx_operator.domain.crypto import DataKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import IntegrityError


def test_opening_a_value_uses_the_one_aad_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    key = DataKey.generate(Owner.of(Scope.PACKAGE, "team-a", "etl"))
    blob = crypto.encrypt_value(key, "DB_PASS", 1, "s3cret")
    assert crypto.decrypt_value(key, "DB_PASS", 1, blob) == "s3cret"
    built = crypto._value_aad
    monkeypatch.setattr(crypto, "_value_aad", lambda *args: built(*args) + b"changed")
    with pytest.raises(IntegrityError, match="failed its integrity check"):
        crypto.decrypt_value(key, "DB_PASS", 1, blob)
