"""The broker's own small PKI: a self-signed CA and a serving certificate it signs.

Run pods trust only this CA (published to them as ``contract.POD_CA_FILE``), so the broker needs no
cluster-wide or public certificate. EC P-256 keys and SHA-256 signatures: what Python's ``ssl``
and every TLS stack accept, with the extensions a strict verifier asks for (basic constraints, key
usage, subject and authority key identifiers). Pure: PEM text in, PEM text out; no files.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fx_operator.exceptions import IntegrityError

CA_VALIDITY = timedelta(days=3650)
SERVING_VALIDITY = timedelta(days=365)
CLOCK_SKEW = timedelta(minutes=5)  # certificates start a little in the past: clocks differ
DEFAULT_CA_NAME = "fx-broker CA"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM. The key is never shown by ``repr``."""

    certificate_pem: str
    private_key_pem: str

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.certificate_pem)

    def __repr__(self) -> str:
        return f"KeyPair(subject={self.certificate.subject.rfc4514_string()!r})"


def load_certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as e:
        raise IntegrityError(f"not a PEM certificate: {e}") from None


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise IntegrityError(f"not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IntegrityError("the private key is not an elliptic-curve key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def make_ca(common_name: str = DEFAULT_CA_NAME, *, validity: timedelta = CA_VALIDITY,
            now: datetime | None = None) -> KeyPair:
    """A new self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now(now) - CLOCK_SKEW
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def make_serving_certificate(ca: KeyPair, dns_names: Sequence[str],
                             ip_addresses: Sequence[str] = ("127.0.0.1",), *,
                             validity: timedelta = SERVING_VALIDITY,
                             now: datetime | None = None) -> KeyPair:
    """A TLS server certificate for ``dns_names`` and ``ip_addresses``, signed by ``ca``."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_certificate, ca_key = ca.certificate, _load_key(ca.private_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now(now) - CLOCK_SKEW
    # Never outlive the CA: a chain with an expired CA does not verify.
    end = min(start + validity, ca_certificate.not_valid_after_utc)
    common_name = (list(dns_names) or list(ip_addresses))[0][:64]
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def expires_within(certificate_pem: str, days: float, *, now: datetime | None = None) -> bool:
    """True when the certificate is no longer valid ``days`` from now: time to renew it."""
    return load_certificate(certificate_pem).not_valid_after_utc <= _now(now) + timedelta(days=days)


def covers(certificate_pem: str, dns_names: Sequence[str],
           ip_addresses: Sequence[str] = ()) -> bool:
    """True when every name and address is in the certificate (renew when the names change)."""
    try:
        san = load_certificate(certificate_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    return (set(dns_names) <= have_dns
            and {ipaddress.ip_address(ip) for ip in ip_addresses} <= have_ips)


def signed_by(certificate_pem: str, ca_certificate_pem: str) -> bool:
    """True when ``ca`` issued the certificate (renew the serving one after the CA changed)."""
    certificate = load_certificate(certificate_pem)
    try:
        certificate.verify_directly_issued_by(load_certificate(ca_certificate_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def private_key_matches(pair: KeyPair) -> bool:
    """True when the pair's key is the one its certificate was made for."""
    public = pair.certificate.public_key()
    return _load_key(pair.private_key_pem).public_key() == public
