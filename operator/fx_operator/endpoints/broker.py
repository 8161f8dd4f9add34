"""The broker: the HTTPS endpoint run pods call for their one-time key and their channel.

A pod proves who it is with its projected, audience-bound service-account token; the injected
``PodAuthenticator`` (a TokenReview and a pod lookup in a cluster, a fake in tests) turns that into
a pod and the run it belongs to, so no Kubernetes code lives here. The key goes out once, to the
run's own live pod (``RunKeyService``); channel requests go to ``channel.dispatch`` with the run's
grant, so the tenancy rules (P5) and the state limits (``domain.state_limits``) are the local
channel's. A body is bounded before it is read: refused unread past ``MAX_BODY_BYTES`` by its
``Content-Length``, or as a chunked one passes it (``client_max_size``). The store is synchronous:
every call to it runs in a worker thread. Logs carry run ids, pod names and outcomes, never a
token, key or value.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from fx_ef import contract
from fx_operator.domain.token_claims import claimed_pod
from fx_operator.exceptions import FxError
from fx_operator.services.channel import MAX_BODY_BYTES, dispatch
from fx_operator.services.run_keys import Caller, Refusal, RunKeyService, RunRefused
from fx_operator.services.runs import RunService
from fx_operator.storage.kube import PodIdentity

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NO_STORE = {"Cache-Control": "no-store"}

__all__ = ["BrokerServer", "PodAuthenticator", "PodIdentity", "make_app", "server_ssl_context",
           "start_broker"]


class PodAuthenticator(Protocol):
    """How the broker learns who is calling; the cluster's answer, injected."""

    async def authenticate(self, token: str) -> Caller | None:
        """The pod a token belongs to (TokenReview with the broker's audience); None: invalid."""
        ...

    async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
        """The pod's ``fx.dev/run-id`` label if it exists with that uid and has not finished."""
        ...


class _Refused(Exception):
    """Ends a request early with an error answer (internal to this module)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, headers=_NO_STORE)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


#: Told, after the answer, that a run's key went to its pod (the Execution's delivery step).
DeliveryObserver = Callable[[str], Awaitable[None]]


class _Broker:
    """The request handlers, over their collaborators."""

    def __init__(self, authenticator: PodAuthenticator, run_keys: RunKeyService,
                 runs: RunService, on_delivered: DeliveryObserver | None = None) -> None:
        self.authenticator = authenticator
        self.run_keys = run_keys
        self.runs = runs
        self.on_delivered = on_delivered
        self.telling: set[asyncio.Task[None]] = set()

    def _tell_delivered(self, run_id: str) -> None:
        """``on_delivered`` in a task of its own: the pod has its key without waiting for it."""
        if self.on_delivered is None:
            return
        task = asyncio.get_running_loop().create_task(self._told(self.on_delivered, run_id))
        self.telling.add(task)
        task.add_done_callback(self.telling.discard)

    @staticmethod
    async def _told(observer: DeliveryObserver, run_id: str) -> None:
        try:
            await observer(run_id)
        except FxError as e:  # the Execution's step only: its run goes on, its end is recorded
            log.warning("the delivery of run %s not recorded on its Execution (%s): %s", run_id,
                        type(e).__name__, e)

    async def health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def key(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        if not _RUN_ID.fullmatch(run_id):
            return _json(404, {"error": "no such run"})
        if request.headers.get(contract.RUN_HEADER, run_id) != run_id:
            return _json(400, {"error": f"the {contract.RUN_HEADER} header names another run"})
        try:
            caller, pod_run_id = await self._identify(request)
            if caller is None:
                refused = await asyncio.to_thread(self.run_keys.refuse, run_id,
                                                  Refusal.UNAUTHENTICATED)
                return _json(refused.status, {"error": str(refused)})
            key = await asyncio.to_thread(self.run_keys.claim, run_id, caller, pod_run_id)
        except RunRefused as e:
            return _json(e.status, {"error": str(e)})
        except _Refused as e:
            return _json(e.status, {"error": e.message})
        except FxError as e:
            return self._failed("key request", run_id, e)
        self._tell_delivered(run_id)
        return _json(200, {"key": base64.b64encode(key).decode()})

    async def channel(self, request: web.Request) -> web.Response:
        run_id = request.headers.get(contract.RUN_HEADER, "")
        if not _RUN_ID.fullmatch(run_id):
            return _json(400, {"error": f"the {contract.RUN_HEADER} header must name the run"})
        if (request.content_length or 0) > MAX_BODY_BYTES:  # refused unread, not even buffered
            return _json(413, {"error": f"request body of {request.content_length} bytes is "
                                        f"larger than the limit of {MAX_BODY_BYTES} bytes"})
        try:
            caller, pod_run_id = await self._identify(request)
            if caller is None:
                log.warning("channel request of run %s refused: invalid token", run_id)
                return _json(401, {"error": "the pod's token is not valid for the broker"})
            grant = await asyncio.to_thread(self.run_keys.channel_grant, run_id, caller,
                                            pod_run_id)
            raw = await request.read()  # a chunked body: 413 past client_max_size
            status, body = await asyncio.to_thread(dispatch, self.runs, grant, request.method,
                                                   request.path, raw)
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": f"request body larger than {MAX_BODY_BYTES} bytes"})
        except RunRefused as e:
            return _json(e.status, {"error": str(e)})
        except _Refused as e:
            return _json(e.status, {"error": e.message})
        except FxError as e:
            return self._failed("channel request", run_id, e)
        log.info("channel %s %s of run %s by pod %s/%s: %d", request.method, request.path,
                 run_id, caller.namespace, caller.pod_name, status)
        return _json(status, body)

    async def _identify(self, request: web.Request) -> tuple[Caller | None, str | None]:
        """The calling pod and its run, or (None, None) for a missing or invalid token."""
        token = _bearer(request)
        if token is None:
            return None, None
        # The pod the token claims is read while the token is reviewed (one round trip off a
        # run's start), and what was read is used only for the pod the review names.
        claimed = claimed_pod(token)
        early = None if claimed is None else \
            asyncio.ensure_future(self.authenticator.pod_run_id(*claimed))
        try:
            caller = await self.authenticator.authenticate(token)
            if caller is None:
                return None, None
            verified = (caller.namespace, caller.pod_name, caller.pod_uid)
            if early is not None and verified == claimed:
                pod_run_id = await early
            else:
                pod_run_id = await self.authenticator.pod_run_id(*verified)
        except FxError as e:
            # Only the class: an API error's text may echo the TokenReview, token included.
            log.warning("cannot verify a run pod's token now: %s", e.__class__.__name__)
            raise _Refused(503, "the broker cannot verify the pod's token now; retry") from None
        finally:
            if early is not None:
                _settle(early)
        return caller, pod_run_id

    @staticmethod
    def _failed(what: str, run_id: str, error: FxError) -> web.Response:
        """An error of ours past the refusals: the pod may retry what its class says may pass
        (the store, say); the rest is the broker's own failure, told to the log only."""
        if error.retry_after is not None:
            log.warning("%s of run %s failed for now (%s): %s", what, run_id,
                        type(error).__name__, error)
            return _json(503, {"error": "the broker cannot answer now; retry"})
        log.error("%s of run %s failed (%s): %s", what, run_id, type(error).__name__, error)
        return _json(500, {"error": "the broker failed to answer"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _settle(task: asyncio.Future[Any]) -> None:
    """An early read whose answer was not needed: stopped, or its error taken (not logged)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, wrong method) as JSON, like ours."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json(e.status, {"error": e.reason})


def make_app(*, authenticator: PodAuthenticator, run_keys: RunKeyService,
             runs: RunService, on_delivered: DeliveryObserver | None = None) -> web.Application:
    """The broker's routes: health, the key (once per run), and the run channel."""
    broker = _Broker(authenticator, run_keys, runs, on_delivered)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
    app[_HANDLERS] = broker
    app.on_shutdown.append(_stop_telling)
    app.router.add_get(HEALTH_PATH, broker.health)
    app.router.add_post(contract.BROKER_KEY_PATH, broker.key)
    app.router.add_post(contract.CHANNEL_SECRETS_PATH, broker.channel)
    app.router.add_get(contract.CHANNEL_STATE_PATH, broker.channel)
    app.router.add_post(contract.CHANNEL_STATE_PATH, broker.channel)
    return app


_HANDLERS = web.AppKey("handlers", _Broker)


async def _stop_telling(app: web.Application) -> None:
    """Shutting down: the deliveries not yet written to their Executions are left to the pods'
    own progress (which records delivery too), not to a task the loop would drop."""
    tasks = list(app[_HANDLERS].telling)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextmanager
def _pem_files(certificate_pem: str, private_key_pem: str) -> Iterator[tuple[str, str]]:
    """Paths ``ssl`` can load: memory-only files on Linux, a private temp folder elsewhere."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("fx-broker-crt", "fx-broker-key")]
        try:
            for fd, text in zip(fds, (certificate_pem, private_key_pem), strict=True):
                os.write(fd, text.encode())
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="fx-broker-") as folder:  # mode 0700
        paths = [Path(folder) / "tls.crt", Path(folder) / "tls.key"]
        for path, text in zip(paths, (certificate_pem, private_key_pem), strict=True):
            path.touch(mode=0o600)
            path.write_text(text)
        yield str(paths[0]), str(paths[1])


def server_ssl_context(certificate_pem: str, private_key_pem: str) -> ssl.SSLContext:
    """TLS 1.2+ with the broker's serving certificate (from ``domain.pki``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _pem_files(certificate_pem, private_key_pem) as (certificate_file, key_file):
        context.load_cert_chain(certificate_file, key_file)
    return context


@dataclass
class BrokerServer:
    """A running broker; ``port`` is the one bound (useful when asked for port 0)."""

    runner: web.AppRunner
    host: str
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()
        log.info("broker on port %d stopped", self.port)


async def start_broker(*, certificate_pem: str, private_key_pem: str,
                       authenticator: PodAuthenticator, run_keys: RunKeyService, runs: RunService,
                       on_delivered: DeliveryObserver | None = None,
                       host: str = "0.0.0.0", port: int = 8443,  # noqa: S104 (pods connect)
                       shutdown_timeout: float = 10.0) -> BrokerServer:
    """Serve the broker over HTTPS until ``stop()``; no access log (paths carry run ids only).
    ``on_delivered`` is told each run whose key went out (after the answer, in a task)."""
    app = make_app(authenticator=authenticator, run_keys=run_keys, runs=runs,
                   on_delivered=on_delivered)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port,
                           ssl_context=server_ssl_context(certificate_pem, private_key_pem))
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    log.info("broker listening on %s:%d (https)", host, bound)
    return BrokerServer(runner, host, bound)
