"""The operator's own keys survive restarts and master-key rotation, wrapped in the store."""

from __future__ import annotations

from fx_operator.domain import internal_keys
from fx_operator.domain.crypto import MasterKey
from fx_operator.services import rotation
from fx_operator.services.operator_keys import load_or_create_operator_keys
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import run_keys


def test_keys_are_made_once_and_survive_master_key_rotation(service: SecretService) -> None:
    first = load_or_create_operator_keys(service, ["fx-broker.fx-system.svc", "127.0.0.1"])
    again = load_or_create_operator_keys(service, ["localhost"])
    assert again.sealing.public == first.sealing.public
    assert again.ca_certificate_pem == first.ca_certificate_pem
    RunKeyService(service.store, service.keys).register(
        "run-1", "team-a", "e", "fx-run-e", "etl", b"k" * 32, False)
    with service.store.transaction() as tx:
        dump = "".join(str(r) for r in tx.execute("SELECT * FROM store_meta"))
    assert first.sealing.private_bytes().hex() not in dump

    new_key = MasterKey.generate()
    rotation.rotate_store_master_key(service.keys, new_key, actor=service.actor)
    rotated = SecretService(service.store, new_key, actor="user:test")
    after = load_or_create_operator_keys(rotated, ["localhost"])
    assert after.sealing.public == first.sealing.public
    assert after.ca_certificate_pem == first.ca_certificate_pem
    with service.store.transaction() as tx:
        record = run_keys.get(tx, "run-1")
    assert record is not None and record.wrapped_key is not None
    assert internal_keys.unwrap(new_key, internal_keys.RUN_KEY, "run-1",
                                record.wrapped_key) == b"k" * 32
