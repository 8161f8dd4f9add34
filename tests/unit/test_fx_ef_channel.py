"""secrets.set and state over the run's channel, against a real little HTTP server.

The server speaks the protocol of ``fx_ef.contract`` over a Unix socket (as in a local run), plain
HTTP on the loopback, and HTTPS with its own CA (as in a pod), and records every request.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fx_ef import Context, PlatformWriteNotAllowedError, SecretWriteError, StateError

TOKEN = "run-token-0123"
Answer = tuple[int, bytes]


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body


class FakeChannel:
    """The operator's side of the channel: a secrets endpoint and an atomic state store."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.state: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.override: Callable[[Recorded], Answer | None] = lambda request: None
        self.url = ""

    def answer(self, request: Recorded) -> Answer:
        with self.lock:
            self.requests.append(request)
            special = self.override(request)
            if special is not None:
                return special
            if request.path == "/v1/secrets" and request.method == "POST":
                return 200, json.dumps({"version": len(self.requests)}).encode()
            if request.path == "/v1/state" and request.method == "GET":
                return 200, json.dumps({"state": self.state}).encode()
            if request.path == "/v1/state" and request.method == "POST":
                self.state[request.body["key"]] = request.body["value"]
                return 200, json.dumps({"state": self.state}).encode()
            return 404, b'{"error": "no such endpoint"}'

    def handler(self) -> type[BaseHTTPRequestHandler]:
        channel = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Recorded(self.command, self.path, dict(self.headers.items()),
                                   json.loads(raw) if raw else None)
                status, body = channel.answer(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a Unix socket's client has no address to log

        return Handler


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _serve(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def unix_channel() -> Iterator[FakeChannel]:
    channel = FakeChannel()
    folder = tempfile.mkdtemp(prefix="fxch", dir="/tmp")  # sun_path holds ~100 bytes only
    try:
        socket_path = os.path.join(folder, "channel.sock")
        server = _UnixHTTPServer(socket_path, channel.handler())
        channel.url = f"unix:{socket_path}"
        yield from _with(server, channel)
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def http_channel() -> Iterator[FakeChannel]:
    channel = FakeChannel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), channel.handler())
    channel.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield from _with(server, channel)


def _with(server: socketserver.BaseServer, channel: FakeChannel) -> Iterator[FakeChannel]:
    for _ in _serve(server):
        yield channel


def write_bundle(tmp_path: Path, channel: dict[str, str | None] | None,
                 environ: dict[str, str] | None = None, **overrides: Any) -> Context:
    """A context reading a fresh bundle with one secret at each scope."""
    document: dict[str, Any] = {
        "format": 1,
        "run_id": "run-7",
        "package": {"name": "etl", "id": "default/etl", "project": "default"},
        "params": {},
        "config": {},
        "secrets": {"PKG": "package-value", "PROJ": "project-value", "PLAT": "platform-value"},
        "scopes": {"PKG": "package", "PROJ": "project", "PLAT": "platform"},
        "channel": channel,
        "allow_platform_write": True,
    }
    document.update(overrides)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(document))
    return Context(environ={"FX_BUNDLE": str(path), **(environ or {})})


def channel_context(tmp_path: Path, channel: FakeChannel, **overrides: Any) -> Context:
    spec: dict[str, str | None] = {"url": channel.url, "token": TOKEN, "token_file": None,
                                   "ca_file": None}
    return write_bundle(tmp_path, spec, **overrides)


# --- secrets.set -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["unix_channel", "http_channel"])
def test_set_sends_an_authenticated_request(tmp_path: Path, fixture: str,
                                            request: pytest.FixtureRequest) -> None:
    channel: FakeChannel = request.getfixturevalue(fixture)
    context = channel_context(tmp_path, channel)
    context.secrets.set(name="platform_secret", value={"somekey": "someval"}, context="platform")
    context.secrets.set("project_secret", ["a", 1, None])
    first, second = channel.requests
    assert (first.method, first.path) == ("POST", "/v1/secrets")
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["X-FX-Run"] == "run-7"
    assert first.headers["Content-Type"] == "application/json"
    assert first.body == {"name": "platform_secret", "value": {"somekey": "someval"},
                          "scope": "platform"}
    assert second.body == {"name": "project_secret", "value": ["a", 1, None], "scope": "project"}


def test_the_token_file_is_read_at_every_call(tmp_path: Path, unix_channel: FakeChannel) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    context = write_bundle(tmp_path, {"url": unix_channel.url, "token": None,
                                      "token_file": str(token_file), "ca_file": None})
    context.secrets.set("A", "value-one")
    token_file.write_text("rotated-token\n")  # the kubelet rotates projected tokens
    context.state.put("k", 1)
    assert [r.headers["Authorization"] for r in unix_channel.requests] == [
        "Bearer first-token", "Bearer rotated-token"]
    token_file.unlink()
    with pytest.raises(SecretWriteError, match=rf"cannot read the run's token {token_file}"):
        context.secrets.set("A", "value-two")


def test_a_channel_without_any_token_is_refused(tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = write_bundle(tmp_path, {"url": unix_channel.url})
    with pytest.raises(SecretWriteError, match="neither a token nor a token file"):
        context.secrets.set("A", "value")
    assert unix_channel.requests == []


def test_a_server_error_carries_the_servers_message(tmp_path: Path,
                                                    unix_channel: FakeChannel) -> None:
    unix_channel.override = lambda request: (
        403, b'{"error": "run run-7 may not write project scope of project other"}')
    context = channel_context(tmp_path, unix_channel)
    with pytest.raises(SecretWriteError) as caught:
        context.secrets.set("PROJ", "new-value-1234")
    error = caught.value
    assert error.status == 403
    assert error.server_message == "run run-7 may not write project scope of project other"
    assert "403" in str(error)
    assert "may not write project scope" in str(error)
    assert "new-value-1234" not in str(error)
    assert context.secrets.get("PROJ") == "project-value"  # nothing changed


def test_a_server_error_without_json_still_reads_well(tmp_path: Path,
                                                      unix_channel: FakeChannel) -> None:
    unix_channel.override = lambda request: (500, b"<html>oops</html>")
    with pytest.raises(SecretWriteError, match=r"refused \(500\): Internal Server Error") as c:
        channel_context(tmp_path, unix_channel).secrets.set("X", "value")
    assert c.value.server_message is None


def test_an_unreachable_channel_is_a_clear_error(tmp_path: Path) -> None:
    url = f"unix:{tmp_path}/no.sock"
    context = write_bundle(tmp_path, {"url": url, "token": TOKEN})
    with pytest.raises(SecretWriteError, match=rf"channel at {url} did not answer") as caught:
        context.secrets.set("X", "value")
    assert caught.value.status is None


def test_plain_http_is_refused_off_the_loopback(tmp_path: Path) -> None:
    context = write_bundle(tmp_path, {"url": "http://operator.example:8080", "token": TOKEN})
    with pytest.raises(SecretWriteError, match="http:// on a loopback host"):
        context.secrets.set("X", "value")


def test_platform_scope_is_refused_before_calling_when_not_allowed(
        tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel, allow_platform_write=False)
    with pytest.raises(PlatformWriteNotAllowedError, match="not allowed to write platform"):
        context.secrets.set("X", "value", "platform")
    assert unix_channel.requests == []
    context.secrets.set("X", "value", "project")
    assert len(unix_channel.requests) == 1


def test_without_a_channel_secrets_cannot_be_written(tmp_path: Path) -> None:
    context = write_bundle(tmp_path, None)
    with pytest.raises(SecretWriteError, match="cannot be written in this environment"):
        context.secrets.set("X", "value")
    with pytest.raises(StateError, match="not available in this environment"):
        context.state.get()


@pytest.mark.parametrize("scope", ["package", "service", "PROJECT", "", None])
def test_the_scope_must_be_project_or_platform(tmp_path: Path, unix_channel: FakeChannel,
                                               scope: Any) -> None:
    context = channel_context(tmp_path, unix_channel)
    with pytest.raises(ValueError, match=r"context must be 'project' or 'platform'"):
        context.secrets.set("X", "value", scope)
    assert unix_channel.requests == []


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", float("nan"), {"k": {3j}}])
def test_the_value_must_be_json(tmp_path: Path, unix_channel: FakeChannel, value: Any) -> None:
    context = channel_context(tmp_path, unix_channel)
    with pytest.raises(TypeError, match=r"the value of secret 'X' must be JSON-serialisable"):
        context.secrets.set("X", value)
    assert unix_channel.requests == []


def test_the_name_must_be_a_non_empty_string(tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel)
    with pytest.raises(TypeError, match="name must be a string"):
        context.secrets.set(3, "value")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must not be empty"):
        context.secrets.set("", "value")


def test_later_reads_follow_scope_precedence(tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel)
    context.secrets.set("PKG", "project-over-package", "project")
    context.secrets.set("PROJ", "new-project-value", "project")
    context.secrets.set("PLAT", "project-over-platform", "project")
    context.secrets.set("NEW", ("tuple", "becomes", "list"), "platform")
    context.secrets.set("PROJ", "platform-under-project", "platform")
    context.secrets.set("FRESH", "platform-first", "platform")
    context.secrets.set("FRESH", "then-project", "project")
    assert context.secrets.get("PKG") == "package-value"  # package scope still wins
    assert context.secrets.get("PROJ") == "new-project-value"
    assert context.secrets.get("PLAT") == "project-over-platform"
    assert context.secrets.get("NEW") == ["tuple", "becomes", "list"]
    assert context.secrets.get("FRESH") == "then-project"
    assert len(unix_channel.requests) == 7  # every write went to the server, shadowed or not


def test_a_set_value_reads_back_as_a_copy(tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel)
    value = {"k": ["v"]}
    context.secrets.set("S", value)
    value["k"].append("changed by the caller")
    assert context.secrets.get("S") == {"k": ["v"]}


# --- reporting new values for masking -----------------------------------------------------------


@pytest.fixture
def mask_pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # a test may have closed it already
            os.close(fd)


def test_a_new_value_is_reported_on_the_mask_fd(tmp_path: Path, unix_channel: FakeChannel,
                                                mask_pipe: tuple[int, int]) -> None:
    read_end, write_end = mask_pipe
    context = channel_context(tmp_path, unix_channel, environ={"FX_MASK_FD": str(write_end)})
    context.secrets.set("API_KEY", "line\nbreak-ü-secret")
    context.secrets.set("STRUCT", {"somekey": "someval"}, "platform")
    os.close(write_end)
    lines = os.read(read_end, 65536).decode().splitlines(keepends=True)
    assert [json.loads(line) for line in lines] == [
        {"name": "API_KEY", "value": "line\nbreak-ü-secret"},
        {"name": "STRUCT", "value": {"somekey": "someval"}},
    ]
    assert all(line.endswith("\n") for line in lines)


def test_no_report_when_the_write_fails(tmp_path: Path, unix_channel: FakeChannel,
                                        mask_pipe: tuple[int, int]) -> None:
    read_end, write_end = mask_pipe
    unix_channel.override = lambda request: (409, b'{"error": "conflict"}')
    context = channel_context(tmp_path, unix_channel, environ={"FX_MASK_FD": str(write_end)})
    with pytest.raises(SecretWriteError):
        context.secrets.set("API_KEY", "value-123")
    os.close(write_end)
    assert os.read(read_end, 100) == b""


def test_a_broken_mask_fd_stops_the_script(tmp_path: Path, unix_channel: FakeChannel,
                                           mask_pipe: tuple[int, int]) -> None:
    read_end, write_end = mask_pipe
    os.close(read_end)  # the executor is gone: writing now fails with EPIPE
    context = channel_context(tmp_path, unix_channel, environ={"FX_MASK_FD": str(write_end)})
    with pytest.raises(SecretWriteError, match="reporting it to the executor for masking failed"):
        context.secrets.set("API_KEY", "value-123")
    assert context.secrets.get("API_KEY") == "value-123"  # it was stored, and reads back


def test_a_mask_fd_that_is_no_number_stops_the_script(tmp_path: Path,
                                                      unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel, environ={"FX_MASK_FD": "pipe"})
    with pytest.raises(SecretWriteError, match="FX_MASK_FD='pipe' is not a file descriptor"):
        context.secrets.set("API_KEY", "value-123")


# --- state ------------------------------------------------------------------------------------


def test_state_get_and_put(tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel)
    assert context.state.get() == {}
    context.state.put("cursor", {"offset": 10})
    context.state.put("count", 3)
    assert context.state.get() == {"cursor": {"offset": 10}, "count": 3}
    get, put, *_ = unix_channel.requests
    assert (get.method, get.path, get.body) == ("GET", "/v1/state", None)
    assert (put.method, put.path) == ("POST", "/v1/state")
    assert put.body == {"key": "cursor", "value": {"offset": 10}}
    assert put.headers["Authorization"] == f"Bearer {TOKEN}"
    assert put.headers["X-FX-Run"] == "run-7"


def test_state_errors(tmp_path: Path, unix_channel: FakeChannel) -> None:
    context = channel_context(tmp_path, unix_channel)
    with pytest.raises(TypeError, match="key must be a string"):
        context.state.put(1, "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be JSON-serialisable"):
        context.state.put("k", {1, 2})
    unix_channel.override = lambda request: (503, b'{"error": "state store unavailable"}')
    with pytest.raises(StateError, match="state store unavailable") as caught:
        context.state.put("k", "v")
    assert caught.value.status == 503
    unix_channel.override = lambda request: (200, b'{"nostate": 1}')
    with pytest.raises(StateError, match="no state object"):
        context.state.get()


# --- HTTPS with the run's CA ------------------------------------------------------------------


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                    signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_cert = certificate("fx test CA", ca_key, "fx test CA", ca_key, ca=True)
    server_cert = certificate("localhost", server_key, "fx test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    cert_file.write_bytes(server_cert.public_bytes(pem))
    key_file.write_bytes(server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def test_https_verifies_the_server_with_the_runs_ca(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = _tls_files(tmp_path)
    channel = FakeChannel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), channel.handler())
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    for _ in _serve(server):
        spec: dict[str, str | None] = {"url": f"https://localhost:{port}", "token": TOKEN,
                                       "ca_file": str(ca_file)}
        write_bundle(tmp_path, spec).secrets.set("A", "over-tls")
        assert channel.requests[0].body == {"name": "A", "value": "over-tls", "scope": "project"}
        # Without the run's CA the server is not trusted, and nothing is sent.
        spec["ca_file"] = None
        with pytest.raises(SecretWriteError, match="CERTIFICATE_VERIFY_FAILED"):
            write_bundle(tmp_path, spec).secrets.set("A", "over-tls")
        assert len(channel.requests) == 1
