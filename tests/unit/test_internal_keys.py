"""Operator-internal secrets wrapped under the master key, bound to what and whose they are."""

from __future__ import annotations

import os

import pytest
from fx_operator.domain import internal_keys
from fx_operator.domain.crypto import MasterKey
from fx_operator.exceptions import IntegrityError, MasterKeyError

MASTER = MasterKey.generate()
SECRET = os.urandom(32)


def test_round_trip_and_format() -> None:
    wrapped = internal_keys.wrap(MASTER, internal_keys.RUN_KEY, "run-1", SECRET)
    assert wrapped[0] == 1
    assert wrapped[1:9].hex() == MASTER.key_id == internal_keys.wrapped_by(wrapped)
    assert len(wrapped) == 1 + 8 + 12 + len(SECRET) + 16
    assert SECRET not in wrapped
    assert internal_keys.unwrap(MASTER, internal_keys.RUN_KEY, "run-1", wrapped) == SECRET
    assert wrapped != internal_keys.wrap(MASTER, internal_keys.RUN_KEY, "run-1", SECRET)


@pytest.mark.parametrize(("purpose", "item_id"), [
    (internal_keys.RUN_KEY, "run-2"),            # copied to another run
    (internal_keys.SEALING_KEY, "run-1"),        # offered as another kind of secret
    (internal_keys.RUN_KEY, "run-1\x00"),
])
def test_a_copied_blob_does_not_open(purpose: str, item_id: str) -> None:
    wrapped = internal_keys.wrap(MASTER, internal_keys.RUN_KEY, "run-1", SECRET)
    with pytest.raises(IntegrityError, match="does not open"):
        internal_keys.unwrap(MASTER, purpose, item_id, wrapped)


def test_the_encoding_of_purpose_and_id_does_not_collide() -> None:
    wrapped = internal_keys.wrap(MASTER, "ab", "c", SECRET)
    with pytest.raises(IntegrityError):
        internal_keys.unwrap(MASTER, "a", "bc", wrapped)


def test_tampering_and_truncation_are_detected() -> None:
    wrapped = bytearray(internal_keys.wrap(MASTER, internal_keys.RUN_KEY, "run-1", SECRET))
    wrapped[-1] ^= 1
    with pytest.raises(IntegrityError):
        internal_keys.unwrap(MASTER, internal_keys.RUN_KEY, "run-1", bytes(wrapped))
    with pytest.raises(IntegrityError, match="truncated"):
        internal_keys.unwrap(MASTER, internal_keys.RUN_KEY, "run-1", bytes(wrapped[:20]))
    wrapped[0] = 2
    with pytest.raises(IntegrityError, match="format version"):
        internal_keys.unwrap(MASTER, internal_keys.RUN_KEY, "run-1", bytes(wrapped))


def test_another_master_key_is_named_not_tried() -> None:
    wrapped = internal_keys.wrap(MASTER, internal_keys.RUN_KEY, "run-1", SECRET)
    other = MasterKey.generate()
    with pytest.raises(MasterKeyError, match=MASTER.key_id):
        internal_keys.unwrap(other, internal_keys.RUN_KEY, "run-1", wrapped)


def test_rewrap_moves_to_the_new_master_key() -> None:
    new = MasterKey.generate()
    wrapped = internal_keys.wrap(MASTER, internal_keys.BROKER_CA_KEY, "ca", SECRET)
    rewrapped = internal_keys.rewrap(MASTER, new, internal_keys.BROKER_CA_KEY, "ca", wrapped)
    assert internal_keys.wrapped_by(rewrapped) == new.key_id
    assert internal_keys.unwrap(new, internal_keys.BROKER_CA_KEY, "ca", rewrapped) == SECRET
    with pytest.raises(MasterKeyError):
        internal_keys.unwrap(MASTER, internal_keys.BROKER_CA_KEY, "ca", rewrapped)
    with pytest.raises(IntegrityError):  # the binding survives the rewrap
        internal_keys.rewrap(MASTER, new, internal_keys.BROKER_CA_KEY, "other", wrapped)
