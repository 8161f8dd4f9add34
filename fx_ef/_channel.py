"""The run's channel to the operator: authenticated JSON over HTTP (protocol in ``contract``).

``unix:/path`` speaks HTTP over a Unix socket (a local run); ``https://host:port`` verifies the
server against the bundle's ``ca_file`` (a pod). Plain ``http://`` is accepted for loopback hosts
only, where the token never leaves the machine. The bearer token is the bundle's ``token``, or is
read from ``token_file`` at every call, because a projected service-account token rotates.
Imported on first write only: ``http.client`` is a heavy import.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from fx_ef import contract
from fx_ef._errors import _RequestError
from fx_ef._rundata import ChannelSpec

TIMEOUT_SECONDS = 30.0
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket; the Host header is a placeholder."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def call(spec: ChannelSpec, run_id: str, method: str, path: str, body: dict[str, Any] | None,
         error: type[_RequestError], action: str) -> dict[str, Any]:
    """One request; the answer's JSON object, or ``error`` saying what failed and why.

    ``action`` says what was tried ("write secret 'X'") and starts every message.
    """
    connection, prefix = _connect(spec, error, action)
    headers = {
        "Authorization": f"Bearer {_token(spec, error, action)}",
        contract.RUN_HEADER: run_id,
        "Accept": "application/json",
    }
    payload = None
    if body is not None:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, prefix + path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise error(f"cannot {action}: the run's channel at {spec.url} did not answer ({e})"
                    ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw.strip() else {}
    except ValueError:
        answer = None
    if not 200 <= response.status < 300:
        server_message = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(server_message, str):
            server_message = None
        raise error(f"cannot {action}: the run's channel refused ({response.status}): "
                    f"{server_message or response.reason}", status=response.status,
                    server_message=server_message)
    if not isinstance(answer, dict):
        raise error(f"cannot {action}: the run's channel answered {response.status} without "
                    "a JSON object", status=response.status)
    return answer


def _connect(spec: ChannelSpec, error: type[_RequestError],
             action: str) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the channel and the URL's path prefix."""
    if spec.url.startswith("unix:"):
        return _UnixHTTPConnection(spec.url[len("unix:"):], TIMEOUT_SECONDS), ""
    parts = urlsplit(spec.url)
    prefix = parts.path.rstrip("/")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname:
        raise error(f"cannot {action}: the channel URL {spec.url!r} names no host")
    if parts.scheme == "https":
        try:
            tls = ssl.create_default_context(cafile=spec.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise error(f"cannot {action}: cannot load the channel's CA {spec.ca_file}: {e}"
                        ) from None
        return http.client.HTTPSConnection(parts.hostname, port, context=tls,
                                           timeout=TIMEOUT_SECONDS), prefix
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return http.client.HTTPConnection(parts.hostname, port, timeout=TIMEOUT_SECONDS), prefix
    raise error(f"cannot {action}: the channel URL {spec.url!r} must be unix:/PATH, "
                "https://HOST[:PORT], or http:// on a loopback host")


def _token(spec: ChannelSpec, error: type[_RequestError], action: str) -> str:
    """The bearer token, read afresh from its file each time (projected tokens rotate)."""
    if spec.token:
        return spec.token
    if not spec.token_file:
        raise error(f"cannot {action}: the run's channel has neither a token nor a token file")
    try:
        with open(spec.token_file, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as e:
        raise error(f"cannot {action}: cannot read the run's token {spec.token_file}: "
                    f"{e.strerror or e}") from None
    if not token:
        raise error(f"cannot {action}: the run's token file {spec.token_file} is empty")
    return token
