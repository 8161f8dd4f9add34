"""Envelope crypto: round trips (property-based), bindings, formats, key ids."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fx_operator.domain import crypto
from fx_operator.domain.crypto import DataKey, MasterKey
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import IntegrityError, MasterKeyError, ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

PKG = Owner.of(Scope.PACKAGE, "team-a", "etl")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
owners = st.one_of(
    st.just(Owner(Scope.PLATFORM)),
    st.builds(lambda p: Owner(Scope.PROJECT, p),
              st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)),
    st.builds(lambda p, k: Owner(Scope.PACKAGE, p, k),
              st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
              st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)),
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, name=names, version=st.integers(1, 2**31 - 1), owner=owners)
def test_round_trip_through_both_layers(value: Any, name: str, version: int, owner: Owner) -> None:
    master = MasterKey.generate()
    data_key = DataKey.generate(owner)
    wrapped = crypto.wrap_data_key(master, data_key)
    opened_key = crypto.unwrap_data_key(master, data_key.key_id, owner, wrapped)
    blob = crypto.encrypt_value(opened_key, name, version, value)
    assert json.dumps(crypto.decrypt_value(data_key, name, version, blob)) == json.dumps(value)
    assert crypto.blob_data_key_id(blob) == data_key.key_id
    assert blob[0] == crypto.FORMAT_VERSION


@pytest.mark.parametrize("text", ["", '"', '""', "\\", 'a"b', "a\\b", "line\nbreak", "tab\t",
                                  "\u0000", "é ü 中文 🙂", "\u2028\u2029", "null", "1", "[]"])
def test_string_values_decode_exactly(text: str) -> None:
    """Plain strings skip the JSON parser; quotes, escapes and control characters must not."""
    assert crypto.decode_value(crypto.encode_value(text)) == text
    assert crypto.decode_value(crypto.encode_value([text])) == [text]


@given(value=st.text())
def test_any_string_round_trips_through_the_value_encoding(value: str) -> None:
    assert crypto.decode_value(crypto.encode_value(value)) == value


@settings(max_examples=100, deadline=None)
@given(value=json_values, name=names, other=names, version=st.integers(1, 1000))
def test_a_blob_opens_only_for_its_own_row(value: Any, name: str, other: str,
                                           version: int) -> None:
    data_key = DataKey.generate(PKG)
    blob = crypto.encrypt_value(data_key, name, version, value)
    if other != name:
        with pytest.raises(IntegrityError):
            crypto.decrypt_value(data_key, other, version, blob)
    with pytest.raises(IntegrityError):
        crypto.decrypt_value(data_key, name, version + 1, blob)
    moved = DataKey(data_key.key_id, Owner.of(Scope.PACKAGE, "team-a", "other"),
                    data_key.material)
    with pytest.raises(IntegrityError):
        crypto.decrypt_value(moved, name, version, blob)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, 200), flip=st.integers(1, 255))
def test_any_flipped_byte_is_an_integrity_error(position: int, flip: int) -> None:
    data_key = DataKey.generate(PKG)
    blob = bytearray(crypto.encrypt_value(data_key, "A", 1, "some value"))
    blob[position % len(blob)] ^= flip
    with pytest.raises(IntegrityError):
        crypto.decrypt_value(data_key, "A", 1, bytes(blob))


def test_owner_encoding_does_not_collide() -> None:
    """("ab", "c") and ("a", "bc") are different owners; their AADs must differ."""
    key = DataKey.generate(Owner(Scope.PACKAGE, "ab", "c"))
    blob = crypto.encrypt_value(key, "N", 1, "v")
    shifted = DataKey(key.key_id, Owner(Scope.PACKAGE, "a", "bc"), key.material)
    with pytest.raises(IntegrityError):
        crypto.decrypt_value(shifted, "N", 1, blob)


def test_a_data_key_moved_to_another_owner_does_not_unwrap() -> None:
    master = MasterKey.generate()
    data_key = DataKey.generate(PKG)
    wrapped = crypto.wrap_data_key(master, data_key)
    with pytest.raises(IntegrityError, match="moved to another owner"):
        crypto.unwrap_data_key(master, data_key.key_id, Owner(Scope.PLATFORM), wrapped)


def test_a_data_key_under_another_master_key_names_both_ids() -> None:
    master, other = MasterKey.generate(), MasterKey.generate()
    data_key = DataKey.generate(PKG)
    wrapped = crypto.wrap_data_key(master, data_key)
    with pytest.raises(MasterKeyError, match=f"{master.key_id}.*{other.key_id}"):
        crypto.unwrap_data_key(other, data_key.key_id, PKG, wrapped)


def test_rewrap_keeps_the_data_key() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    data_key = DataKey.generate(PKG)
    rewrapped = crypto.rewrap_data_key(old, new, data_key.key_id, PKG,
                                       crypto.wrap_data_key(old, data_key))
    assert crypto.wrapped_master_key_id(rewrapped) == new.key_id
    assert crypto.unwrap_data_key(new, data_key.key_id, PKG, rewrapped).material == \
        data_key.material


def test_unknown_format_version_is_refused() -> None:
    data_key = DataKey.generate(PKG)
    blob = b"\x02" + crypto.encrypt_value(data_key, "A", 1, "x")[1:]
    with pytest.raises(IntegrityError, match="format version 2"):
        crypto.decrypt_value(data_key, "A", 1, blob)


def test_key_reprs_hide_material() -> None:
    master = MasterKey.generate()
    assert master.to_base64() not in repr(master)
    assert master.key_id in repr(master)
    data_key = DataKey.generate(PKG)
    assert data_key.material.hex() not in repr(data_key)
    assert MasterKey.from_base64(master.to_base64()).key_id == master.key_id


@pytest.mark.parametrize("scope, project, package, problem", [
    ("cluster", None, None, "scope"),
    ("package", "default", None, "needs a package"),
    ("package", "Bad_Project", "p", "project"),
    ("project", "x" * 64, None, "project"),
    ("package", "default", "-leading", "package"),
])
def test_owner_validation(scope: str, project: str | None, package: str | None,
                          problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Owner.of(scope, project, package)


def test_owner_defaults_and_precedence_chain() -> None:
    assert Owner.of("project") == Owner(Scope.PROJECT, "default")
    assert Owner.of("platform", "ignored", "ignored") == Owner(Scope.PLATFORM)
    assert [o.scope for o in Owner.chain("p", "k")] == [Scope.PACKAGE, Scope.PROJECT,
                                                         Scope.PLATFORM]
