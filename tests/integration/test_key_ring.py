"""One key ring per process: the secret service, the run keys and the operator keys share the
master key, so a rotation changes it for all of them at once (no service keeps a copy)."""

from __future__ import annotations

import os

from fx_operator.domain.crypto import MasterKey
from fx_operator.endpoints.broker import PodIdentity
from fx_operator.services import rotation
from fx_operator.services.operator_keys import load_or_create_operator_keys
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage import run_keys

NS = "team-a"


def test_run_keys_use_the_rotated_master_key_at_once(service: SecretService) -> None:
    keys = RunKeyService(service.store, service.keys)
    new = MasterKey.generate()
    rotation.rotate_store_master_key(service.keys, new, actor=service.actor)
    key = os.urandom(32)
    # Registered under the store's new key: no second, stale copy refuses or wraps under the old.
    assert keys.register("run-1", NS, "nightly", "fx-run-1", "etl", key, False)
    with service.store.transaction() as tx:
        record = run_keys.get(tx, "run-1")
    assert record is not None and record.master_key_id == new.key_id
    pod = PodIdentity(NS, "fx-run-1-abc", "uid-1", "default")
    assert keys.claim("run-1", pod, "run-1") == key


def test_operator_keys_open_after_a_rotation_in_the_same_process(service: SecretService) -> None:
    made = load_or_create_operator_keys(service, ["localhost"])
    rotation.rotate_store_master_key(service.keys, MasterKey.generate(), actor=service.actor)
    again = load_or_create_operator_keys(service, ["localhost"])
    assert again.sealing.public.key_id == made.sealing.public.key_id
    assert again.ca_certificate_pem == made.ca_certificate_pem
