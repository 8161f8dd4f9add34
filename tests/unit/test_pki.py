"""The broker's PKI: a CA and a serving certificate that Python's TLS client accepts."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fx_operator.domain import pki
from fx_operator.exceptions import IntegrityError

NAMES = ("fx-broker.fx-system.svc", "fx-broker.fx-system.svc.cluster.local", "localhost")


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.make_ca()


@pytest.fixture(scope="module")
def serving(ca: pki.KeyPair) -> pki.KeyPair:
    return pki.make_serving_certificate(ca, NAMES, ["127.0.0.1"])


def test_ca_is_a_p256_ca_for_ten_years(ca: pki.KeyPair) -> None:
    cert = ca.certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == pki.CA_VALIDITY
    assert cert.issuer == cert.subject
    assert pki.signed_by(ca.certificate_pem, ca.certificate_pem)


def test_serving_certificate_names_usage_and_lifetime(ca: pki.KeyPair,
                                                      serving: pki.KeyPair) -> None:
    cert = serving.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(NAMES)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == pki.SERVING_VALIDITY
    assert cert.issuer == ca.certificate.subject
    assert pki.signed_by(serving.certificate_pem, ca.certificate_pem)
    assert not pki.signed_by(serving.certificate_pem, pki.make_ca().certificate_pem)
    assert pki.private_key_matches(serving) and pki.private_key_matches(ca)
    assert not pki.private_key_matches(pki.KeyPair(serving.certificate_pem, ca.private_key_pem))


def test_covers_tells_when_the_names_changed(serving: pki.KeyPair) -> None:
    assert pki.covers(serving.certificate_pem, NAMES[:1], ["127.0.0.1"])
    assert not pki.covers(serving.certificate_pem, ["other.svc"])
    assert not pki.covers(serving.certificate_pem, [], ["10.0.0.1"])


def test_expires_within(serving: pki.KeyPair) -> None:
    assert not pki.expires_within(serving.certificate_pem, 30)
    assert pki.expires_within(serving.certificate_pem, 400)
    later = datetime.now(UTC) + timedelta(days=340)
    assert pki.expires_within(serving.certificate_pem, 30, now=later)


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    short_ca = pki.make_ca(validity=timedelta(days=10))
    cert = pki.make_serving_certificate(short_ca, ["localhost"]).certificate
    assert cert.not_valid_after_utc == short_ca.certificate.not_valid_after_utc


def test_bad_input_is_refused(ca: pki.KeyPair) -> None:
    with pytest.raises(IntegrityError):
        pki.load_certificate("not a certificate")
    with pytest.raises(IntegrityError):
        pki.make_serving_certificate(pki.KeyPair(ca.certificate_pem, "garbage"), ["localhost"])
    with pytest.raises(ValueError, match="at least one"):
        pki.make_serving_certificate(ca, [], [])


def test_repr_shows_no_private_key(ca: pki.KeyPair) -> None:
    assert "PRIVATE" not in repr(ca) and "fx-broker CA" in repr(ca)


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext,
               hostname: str) -> None:
    """A full TLS handshake in memory, no sockets."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end, out, peer_in in (("client", client, c_out, s_in),
                                        ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("hostname", [*NAMES, "127.0.0.1"])
def test_python_tls_client_accepts_the_chain(ca: pki.KeyPair, serving: pki.KeyPair,
                                             tmp_path: Path, hostname: str) -> None:
    (tmp_path / "tls.crt").write_text(serving.certificate_pem)
    (tmp_path / "tls.key").write_text(serving.private_key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=ca.certificate_pem)
    if hasattr(ssl, "VERIFY_X509_STRICT"):
        client.verify_flags |= ssl.VERIFY_X509_STRICT
    _handshake(server, client, hostname)


def test_python_tls_client_refuses_other_names_and_cas(ca: pki.KeyPair, serving: pki.KeyPair,
                                                       tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text(serving.certificate_pem)
    (tmp_path / "tls.key").write_text(serving.private_key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, ssl.create_default_context(cadata=ca.certificate_pem), "evil.svc")
    other = ssl.create_default_context(cadata=pki.make_ca().certificate_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, other, "localhost")
