"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager,
built from Go modules by ``tests/realk8s/build.sh``, started in a temporary folder.

The API server runs as a cluster's does for what the operator touches: RBAC authorization,
ServiceAccount token signing with audiences, TokenRequest and TokenReview, the CRDs' structural
schemas and CEL rules. The controller manager runs the Job, garbage-collector, ServiceAccount,
token, namespace and TTL controllers, each with its own ServiceAccount's credentials. There is no
kubelet and no scheduler: ``support.node_agent`` binds the pods and runs them with podman.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
# Where tests/realk8s/build.sh puts them (its FX_REALK8S_CACHE, default ~/.cache/fx-realk8s).
_CACHE = Path(os.environ.get("FX_REALK8S_CACHE") or
              Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fx-realk8s")
BIN = Path(os.environ.get("FX_REALK8S_BIN") or _CACHE / "bin")
SERVICE_CIDR = "10.96.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = ("job-controller", "garbage-collector-controller", "serviceaccount-controller",
               "serviceaccount-token-controller", "namespace-controller",
               "ttl-after-finished-controller")


class ControlPlaneError(RuntimeError):
    pass


def binaries_missing() -> str | None:
    """Why the control plane cannot start here, or None."""
    missing = [name for name in ("etcd", "etcdctl", "kube-apiserver", "kube-controller-manager")
               if not (BIN / name).is_file()]
    if missing:
        return f"{', '.join(missing)} not built in {BIN}: run tests/realk8s/build.sh"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Issued:
    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class _Authority:
    """A throwaway CA for the cluster: the API server's serving certificate and client certs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fx-test-cluster-ca")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(
                         digital_signature=True, key_cert_sign=True, crl_sign=True,
                         content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = folder / "ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, common_name: str, *, organization: str | None = None,
              server: bool = False) -> _Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attributes))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server else
                        ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.96.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = _Issued(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_pem_key(key))
        issued.key.chmod(0o600)
        return issued


# --- processes -----------------------------------------------------------------------------------

@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ControlPlane:
    """Started by :func:`control_plane`; everything under ``folder`` (logs in ``folder/logs``)."""

    folder: Path
    api_port: int = 0
    etcd_port: int = 0
    processes: list[_Process] = field(default_factory=list)
    ca: Path = Path()
    admin_kubeconfig: Path = Path()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit events so far (request metadata only)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def refused(self, username: str) -> list[str]:
        """The requests of ``username`` that authorization refused (403), as
        ``verb group/resource[/subresource] namespace/name``."""
        found = []
        for event in self.audit_events():
            if event.get("user", {}).get("username") != username:
                continue
            if (event.get("responseStatus") or {}).get("code") != 403:
                continue
            ref = event.get("objectRef") or {}
            resource = "/".join(p for p in (ref.get("apiGroup", ""), ref.get("resource", ""),
                                            ref.get("subresource", "")) if p)
            where = "/".join(p for p in (ref.get("namespace", ""), ref.get("name", "")) if p)
            found.append(f"{event.get('verb')} {resource} {where}".strip())
        return found

    # --- starting ---------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        process = _Process(name, popen, log)
        self.processes.append(process)
        return process

    def _wait(self, process: _Process, ready: Any, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise ControlPlaneError(f"{process.name} exited while {what}:\n{process.tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: S110 (not up yet)
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"{process.name}: timed out {what}:\n{process.tail()}")

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = self.folder / "pki"
        pki.mkdir()
        authority = _Authority(pki)
        self.ca = authority.path
        serving = authority.issue("apiserver", "kube-apiserver", server=True)
        admin = authority.issue("admin", "fx-test-admin", organization="system:masters")
        manager = authority.issue("controller-manager", "system:kube-controller-manager")
        account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_pem_key(account_key))
        (pki / "sa.pub").write_bytes(account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

        self.etcd_port, peer_port = free_port(), free_port()
        etcd = self._spawn("etcd", [
            str(BIN / "etcd"), "--name", "fx-test", "--data-dir", str(self.folder / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"fx-test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait(etcd, lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{self.etcd_port}/health", timeout=2).status == 200,
            "starting")

        # Every request's metadata (who, verb, resource, response code), never a body: the RBAC
        # check reads it for the operator's refused calls.
        policy = self.folder / "audit-policy.yaml"
        policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\n"
                          "omitStages: [RequestReceived]\nrules:\n- level: Metadata\n")
        self.api_port = free_port()
        apiserver = self._spawn("kube-apiserver", [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.ca}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={pki / 'generated'}",
            "--enable-priority-and-fairness=false",
            # 127.0.0.1 cannot be the kubernetes Service's endpoint: nothing reconciles it.
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
            "--profiling=false", "--v=1"])
        self.admin_kubeconfig = self.write_kubeconfig(self.folder / "admin.kubeconfig",
                                                      cert=admin)
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        self._wait(apiserver, lambda: urllib.request.urlopen(  # noqa: S310 (loopback)
            f"{self.server}/readyz", context=context, timeout=5).status == 200,
            "getting ready")

        manager_kubeconfig = self.write_kubeconfig(self.folder / "controller-manager.kubeconfig",
                                                   cert=manager)
        controller_manager = self._spawn("kube-controller-manager", [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={manager_kubeconfig}",
            f"--authentication-kubeconfig={manager_kubeconfig}",
            f"--authorization-kubeconfig={manager_kubeconfig}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={self.ca}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--concurrent-job-syncs=5", "--v=1"])
        self._wait(controller_manager, lambda: self._default_account_exists(context),
                   "creating the default ServiceAccount")

    def _default_account_exists(self, context: ssl.SSLContext) -> bool:
        request = urllib.request.urlopen(  # noqa: S310 (loopback)
            f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", context=context,
            timeout=5)
        return bool(request.status == 200)

    def write_kubeconfig(self, path: Path, *, cert: _Issued | None = None,
                         token: str | None = None) -> Path:
        user: dict[str, str] = {}
        if cert is not None:
            user = {"client-certificate": str(cert.cert), "client-key": str(cert.key)}
        if token is not None:
            user = {"token": token}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fx-test",
            "clusters": [{"name": "fx-test", "cluster": {
                "server": self.server,
                "certificate-authority-data": base64.b64encode(self.ca.read_bytes()).decode()}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "fx-test", "context": {"cluster": "fx-test", "user": "user"}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- reading etcd itself ------------------------------------------------------------------

    def etcd_dump(self) -> bytes:
        """Every key and value in etcd, as stored (protobuf or JSON), concatenated."""
        result = subprocess.run(
            [str(BIN / "etcdctl"), f"--endpoints=http://127.0.0.1:{self.etcd_port}",
             "get", "", "--prefix", "--write-out=simple"],
            capture_output=True, timeout=120, check=True)
        return result.stdout

    def etcd_keys(self, prefix: str = "/registry/") -> list[str]:
        result = subprocess.run(
            [str(BIN / "etcdctl"), f"--endpoints=http://127.0.0.1:{self.etcd_port}",
             "get", prefix, "--prefix", "--keys-only"],
            capture_output=True, text=True, timeout=60, check=True)
        return [line for line in result.stdout.splitlines() if line]

    # --- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def check_alive(self) -> None:
        dead = [p for p in self.processes if not p.alive()]
        if dead:
            raise ControlPlaneError("\n".join(f"{p.name} exited:\n{p.tail()}" for p in dead))


@contextmanager
def control_plane(folder: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(folder)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
