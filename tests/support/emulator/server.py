""":class:`KubeEmulatorServer`: a :class:`KubeEmulator` on a real port, from its own thread.

The clients under test block (the kubernetes client) or own their loops (kopf), so the emulator
serves from a thread and event loop of its own; this module also writes the kubeconfigs that
point the clients at it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import kmock
import yaml

from support.emulator.handler import KubeEmulator
from support.emulator.kinds import JsonDict

if TYPE_CHECKING:
    import kopf
    import kubernetes.client

T = TypeVar("T")


class KubeEmulatorServer:
    """Serve a :class:`KubeEmulator` on a real port from its own thread and event loop.

    Why a thread: the clients under test block (the kubernetes client) or own their loops (kopf
    in ``KopfRunner``); an emulator on pytest's loop would stall while a sync client waits for it.
    A kubeconfig pointing to the server is written on start (to a temporary folder unless a path
    is given). Use as a context manager, or ``start()``/``stop()`` in a fixture.
    """

    def __init__(self, emulator: KubeEmulator | None = None, *,
                 kubeconfig: str | Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, namespace: str = "default",
                 token: str = "kube-emulator-admin",  # noqa: S107  # any token works: no auth
                 timeout: float = 10.0) -> None:
        self.emulator = emulator if emulator is not None else KubeEmulator()
        self.namespace = namespace
        self.token = token
        self.timeout = timeout
        self._host = host
        self._port = port
        self._kubeconfig = Path(kubeconfig) if kubeconfig is not None else None
        self._tempdir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._port is None or self._loop is None:
            raise RuntimeError("the emulator server is not running")
        return f"http://{self._host}:{self._port}"

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig file pointing to this server (written on start)."""
        if self._kubeconfig is None:
            raise RuntimeError("the emulator server is not running")
        return self._kubeconfig

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the emulator server can be started only once")
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError("the emulator server did not start in time")
        if self._failure is not None:
            raise RuntimeError("the emulator server failed to start") from self._failure
        return self

    def stop(self) -> None:
        """End open watches, stop the server and its thread, remove a temporary kubeconfig."""
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                raise RuntimeError("the emulator server did not stop in time")
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator's loop (its state is not thread-safe); return its result."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(self.timeout)

    def dump_objects(self, *, current_only: bool = False) -> list[JsonDict]:
        """:meth:`KubeEmulator.dump_objects`, safely from any thread."""
        return self.call(lambda: self.emulator.dump_objects(current_only=current_only))

    def create(self, resource: kmock.resource | str, body: Mapping[str, Any]) -> JsonDict:
        """:meth:`KubeEmulator.create`, safely from any thread (seeds objects without a client)."""
        return self.call(lambda: self.emulator.create(resource, body))

    def api_client(self) -> kubernetes.client.ApiClient:
        """A kubernetes client built from this server's kubeconfig (not ``$KUBECONFIG``)."""
        import kubernetes  # ~0.5 s to import: only for the tests that use it

        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
            config_file=str(self.kubeconfig))
        return client

    def kopf_connection_info(self, *, token: str | None = None) -> kopf.ConnectionInfo:
        """What an ``@kopf.on.login`` handler returns to point kopf at this server (with
        ``token`` instead of the server's own, to tell its requests apart)."""
        import kopf  # ~1 s to import: only for the tests that run an operator

        return kopf.ConnectionInfo(server=self.url, token=token or self.token,
                                   default_namespace=self.namespace)

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Another kubeconfig for this server, with ``token`` (e.g. one per client, so that
        :attr:`KubeEmulator.recorded_calls` tells the clients apart)."""
        return self._write_config(Path(path), token or self.token)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:
            self._failure = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host=self._host,
                                               port=self._port) as server:
            self._port = server.port
            self._write_kubeconfig()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stopping.wait()
            self.emulator.close_watches()

    def _write_kubeconfig(self) -> None:
        if self._kubeconfig is None:
            self._tempdir = Path(tempfile.mkdtemp(prefix="kube-emulator-"))
            self._kubeconfig = self._tempdir / "kubeconfig"
        self._write_config(self._kubeconfig, self.token)

    def _write_config(self, path: Path, token: str) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kube-emulator",
            "clusters": [{"name": "kube-emulator",
                          "cluster": {"server": f"http://{self._host}:{self._port}"}}],
            "users": [{"name": "kube-emulator", "user": {"token": token}}],
            "contexts": [{"name": "kube-emulator",
                          "context": {"cluster": "kube-emulator", "user": "kube-emulator",
                                      "namespace": self.namespace}}],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path
