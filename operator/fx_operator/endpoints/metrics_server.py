"""The metrics server: the registry of ``services.metrics`` on ``/metrics``, in a daemon thread."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServer:
    """``/metrics`` of one registry on one port, from ``start`` until ``close``."""

    def __init__(self, registry: CollectorRegistry, port: int,
                 host: str = "0.0.0.0") -> None:  # noqa: S104 (a pod's port)
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
