"""The operator's own keys: the sealing key pair (ScopedSecrets) and the broker's CA.

Made once, on the first start, and kept in the store wrapped under the master key (P2), so every
replica and every restart uses the same ones: manifests sealed last year still open, and run pods
keep trusting the broker. The serving certificate is issued at each start from the CA, for the
names the configuration gives.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fx_operator.domain import pki
from fx_operator.domain.sealing import SealingKeyPair
from fx_operator.services.key_ring import OPERATOR_WRAPPED_META
from fx_operator.services.secret_service import SecretService

log = logging.getLogger(__name__)

_SEALING_META, _CA_KEY_META = OPERATOR_WRAPPED_META  # rewrapped by master-key rotation
_CA_CERT_META = "operator.broker_ca_certificate"  # public: not wrapped


@dataclass(frozen=True)
class OperatorKeys:
    sealing: SealingKeyPair
    ca_certificate_pem: str
    serving_certificate_pem: str
    serving_key_pem: str

    def __repr__(self) -> str:
        return f"OperatorKeys(sealing={self.sealing.public.key_id})"


def load_or_create_operator_keys(service: SecretService, names: Sequence[str]) -> OperatorKeys:
    """The stored keys, made (under a lock, once) when the store has none."""
    keys = service.keys
    with service.store.transaction() as tx:
        sealing_raw = keys.load_operator_key(tx, _SEALING_META)
        if sealing_raw is None:
            sealing = SealingKeyPair.generate()
            keys.save_operator_key(tx, _SEALING_META, sealing.private_bytes())
            log.info("made the sealing key pair %s", sealing.public.key_id)
        else:
            sealing = SealingKeyPair(sealing_raw)
        ca_cert = service.store.get_meta(tx, _CA_CERT_META)
        ca_key = keys.load_operator_key(tx, _CA_KEY_META)
        if ca_cert is None or ca_key is None or pki.expires_within(ca_cert, 30):
            ca = pki.make_ca()
            service.store.set_meta(tx, _CA_CERT_META, ca.certificate_pem)
            keys.save_operator_key(tx, _CA_KEY_META, ca.private_key_pem.encode())
            log.info("made the broker's CA")
        else:
            ca = pki.KeyPair(ca_cert, ca_key.decode())
    dns = [n for n in names if not _is_ip(n)]
    ips = [n for n in names if _is_ip(n)] or ["127.0.0.1"]
    serving = pki.make_serving_certificate(ca, dns or ["localhost"], ips)
    return OperatorKeys(sealing, ca.certificate_pem, serving.certificate_pem,
                        serving.private_key_pem)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
