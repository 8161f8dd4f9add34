"""Crafted ScopedSecrets (P8, issue 20 item 5): anyone may seal, the operator's key being public.
Each crafted object below is accepted by the API server (the CRD bounds neither what a sealed
value holds nor the length of a key of ``spec.encryptedData``; a value is at most 1 MiB), and the
operator gives it ``Ready=False`` (InvalidSecret) and a Warning Event naming the key and the
problem, logs no traceback, stores nothing (a crafted update keeps what was stored) and keeps
serving. Before, each logged an uncaught exception on every retry and got no condition or Event.

Values are sealed by hand with the operator's public key only, as anyone could
(``tests/unit/test_sealed_value_opening.py`` has the same helper and the domain's cases).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator

import pytest
from fx_operator.domain.sealing import SealingPublicKey, SealTarget
from support.cluster import Cluster, cluster
from support.postgres import PostgresServer

NS = "team-a"
STORED_VALUE = "stored-value-that-must-not-be-lost-51"
CANARY = "canary-crafted-value-93"
LONG_NAME = "K" * 65_536


def _zero_key(sealed: str) -> str:
    raw = base64.b64decode(sealed)
    return base64.b64encode(raw[:9] + bytes(32) + raw[41:]).decode()


def _plain(plaintext: bytes, package: str = "pkg") -> Callable[[SealingPublicKey, str], str]:
    return lambda key, name: key.seal_plaintext(SealTarget(NS, "package", package, name),
                                                plaintext)


#: case -> (the sealed value of a name, the words its condition and Event must hold).
CASES: dict[str, tuple[Callable[[SealingPublicKey, str], str], str]] = {
    "integer-of-5000-digits": (_plain(b"7" * 5000), "holds an integer of 5000 digits"),
    # 100,000 levels opened (unclosed, so that the object's spec, which kopf copies into an
    # annotation, stays under a real API server's 256 KiB limit for annotations).
    "nested-100000-levels": (_plain(b"[" * 100_000), "nested more than 32 levels deep"),
    "invalid-utf-8": (_plain(f'"{CANARY}\xff"'.encode("latin-1")), "is not UTF-8"),
    "not-json": (_plain(f"{CANARY} is not JSON".encode()), "is not JSON"),
    "zero-x25519-key": (
        lambda key, name: _zero_key(key.seal(SealTarget(NS, "package", "pkg", name), CANARY)),
        "invalid ephemeral X25519 public key"),
}


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory,
        postgres_server: PostgresServer) -> Iterator[Cluster]:
    dsn = postgres_server.create_database("e2e_crafted_secrets")
    with cluster(tmp_path_factory.mktemp("crafted"), dsn) as machine:
        machine.sealed_secret(NS, "keep", {"KEEP": STORED_VALUE}, "package", package="good")
        machine.ready("scopedsecrets", NS, "keep")
        yield machine
    postgres_server.drop_database("e2e_crafted_secrets")


def _public_key(k8s: Cluster) -> SealingPublicKey:
    key = k8s.public_key()
    assert key is not None
    return key


def _refused(k8s: Cluster, name: str, key: str, words: str) -> str:
    body = k8s.ready("scopedsecrets", NS, name)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSecret"), ready
    assert words in ready["message"] and key in ready["message"], ready
    events = [e for e in k8s.events(NS, name, "InvalidSecret") if e["reason"] == "InvalidSecret"]
    assert events and events[0]["type"] == "Warning"
    assert events[0]["message"] == ready["message"]
    message: str = ready["message"]
    return message


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_scoped_secret_is_not_ready_with_a_warning_event(k8s: Cluster,
                                                                   case: str) -> None:
    seal, words = CASES[case]
    name = f"{case}-secrets"
    k8s.apply("scopedsecrets", NS, {"kind": "ScopedSecret", "metadata": {"name": name}, "spec": {
        "scope": "package", "package": "pkg",
        "encryptedData": {"CRAFTED": seal(_public_key(k8s), "CRAFTED")}}})

    message = _refused(k8s, name, "CRAFTED", words)

    assert CANARY not in message
    assert "secrets" not in k8s.get("scopedsecrets", NS, name)["status"]


def test_a_key_name_over_65535_bytes_is_not_ready_with_a_warning_event(k8s: Cluster) -> None:
    """Accepted by the API server: the CRD's schema cannot bound the keys of a map."""
    sealed = _public_key(k8s).seal(SealTarget(NS, "package", "pkg", "SHORT"), CANARY)
    k8s.apply("scopedsecrets", NS, {"kind": "ScopedSecret", "metadata": {"name": "long-key"},
                                    "spec": {"scope": "package", "package": "pkg",
                                             "encryptedData": {LONG_NAME: sealed}}})

    message = _refused(k8s, "long-key", "KKKK", "65536 characters long")

    assert len(message) < 1000


def test_a_crafted_update_keeps_what_was_stored(k8s: Cluster) -> None:
    body = k8s.get("scopedsecrets", NS, "keep")
    body["spec"]["encryptedData"]["KEEP"] = _plain(b"[" * 100_000, package="good")(
        _public_key(k8s), "KEEP")
    k8s.custom.replace_namespaced_custom_object("fx.dev", "v1alpha1", NS, "scopedsecrets",
                                                "keep", body)

    _refused(k8s, "keep", "KEEP", "nested more than 32 levels deep")

    assert k8s.get("scopedsecrets", NS, "keep")["status"]["secrets"] == [
        {"name": "KEEP", "version": 1}]
    k8s.package(NS, "good", {"main.py": (  # a digest: the value itself in a script is refused
        "import hashlib\nfrom fx_ef import context\n"
        "print(hashlib.sha256(context.secrets.get('KEEP').encode()).hexdigest())\n")})
    k8s.ready("packages", NS, "good")
    k8s.execution(NS, "good-1", "good")
    status = k8s.finished(NS, "good-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["outputTail"].strip() == hashlib.sha256(
        STORED_VALUE.encode()).hexdigest()
    assert status["manifest"]["KEEP"]["version"] == 1


def test_no_traceback_and_the_operator_keeps_serving(k8s: Cluster) -> None:
    key = _public_key(k8s)
    k8s.apply("scopedsecrets", NS, {"kind": "ScopedSecret", "metadata": {"name": "all-crafted"},
                                    "spec": {"scope": "package", "package": "pkg",
                                             "encryptedData": {
                                                 f"C{i}": seal(key, f"C{i}")
                                                 for i, (seal, _) in enumerate(CASES.values())}}})
    _refused(k8s, "all-crafted", "C0", CASES[next(iter(CASES))][1])

    k8s.assert_still_serving(NS)
    assert [line for line in k8s.logs.lines if "Traceback" in line] == []
    assert CANARY not in "\n".join(k8s.logs.lines)
