"""Every call the operator makes to the Kubernetes API, in one place.

The official client is synchronous: reads run in a worker thread (``asyncio.to_thread``) so
kopf's event loop never blocks. The writes every admission makes (Secret, Job, Event, status)
go out on the event loop itself over aiohttp, with the same client's configuration (server, TLS,
refreshed bearer token): a thread hop and urllib3 per write were a third of the operator's CPU
per admission. ``ApiException`` and HTTP errors are converted here, once, into ``KubeError``
(retry later) or ``KubeNotFound``; callers never see the clients' exceptions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from fx_operator.domain.conditions import Reason
from fx_operator.domain.job_spec import GROUP, LABEL_RUN, VERSION
from fx_operator.exceptions import FxError

log = logging.getLogger(__name__)
T = TypeVar("T")
CONNECTIONS = 32  # API connections, and worker threads for blocking calls (see OperatorApp)
# How long the writes reuse the client's auth headers. Asking the client each time runs its
# refresh hook, which rebuilds the whole configuration (a quarter of a millisecond, a tenth of
# the operator's CPU at full admission rate). Tokens rotate on a scale of minutes to hours
# (in-cluster, the client itself re-reads its token file once a minute), so ten seconds is
# well inside their lifetime.
AUTH_HEADERS_SECONDS = 10.0
#: How long one call waits for the API server's answer (its own request timeout is 60 s): an
#: answer that never comes (a black hole, a half-open connection) fails the call, to be retried,
#: instead of holding its handler, and what waits on it, forever.
REQUEST_TIMEOUT_SECONDS = 60.0


class KubeError(FxError):
    """The API server refused or failed a call; retrying later may succeed."""

    reason = Reason.API_ERROR
    retry_after = 10.0
    http_status = 502

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def after_retries(self) -> str:
        return f"the API server kept failing: {self}"

    @property
    def forbidden(self) -> bool:
        """Refused by the API server's authenticator or authorizer (401, 403): the operator's
        credentials or RBAC rules do not allow the call, and retrying does not help until an
        administrator changes them."""
        return self.status in (401, 403)


class KubeNotFound(KubeError):
    """The object does not exist (any more)."""


@dataclass(frozen=True)
class PodIdentity:
    """Who a run pod's projected token says it is (from a TokenReview)."""

    namespace: str
    pod_name: str
    pod_uid: str
    service_account: str


def load_api_client() -> client.ApiClient:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    # Every call runs in a worker thread; the default pool of 4 connections would serialise them.
    configuration.connection_pool_maxsize = CONNECTIONS
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException:
        # $KUBECONFIG read now: the client's own default was fixed when it was imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                client_configuration=configuration)
        return client.ApiClient(configuration)


class Kube:
    """The operator's view of the cluster: a few typed calls, nothing more."""

    def __init__(self, api_client: client.ApiClient, *,
                 timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.auth = client.AuthenticationV1Api(api_client)
        self._http: aiohttp.ClientSession | None = None
        self._auth_headers: dict[str, str] = {}
        self._auth_headers_until = float("-inf")

    async def open(self) -> None:
        """Keep one HTTP session for the writes (the operator); without it, each write opens
        its own (the CLI, which runs one event loop per call)."""
        if self._http is None:
            self._http = self._new_session()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _new_session(self) -> aiohttp.ClientSession:
        conf = self.api_client.configuration
        context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
        if conf.cert_file:
            context.load_cert_chain(conf.cert_file, conf.key_file)
        if not conf.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context,
                                                                    limit=CONNECTIONS),
                                     timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def _send(self, what: str, method: str, path: str, body: dict[str, Any], *,
                    content_type: str = "application/json") -> None:
        """POST, PUT or PATCH a plain JSON object on the event loop; errors as ``KubeError``."""
        conf = self.api_client.configuration
        headers = {"Accept": "application/json", "Content-Type": content_type,
                   **self._auth()}
        session = self._http or self._new_session()
        try:
            async with session.request(method, conf.host + path, data=json.dumps(body),
                                       headers=headers, proxy=conf.proxy,
                                       server_hostname=conf.tls_server_name) as response:
                answer = await response.read()
        except (aiohttp.ClientError, OSError) as e:
            raise KubeError(f"{what}: {e}") from e
        finally:
            if session is not self._http:
                await session.close()
        if not 200 <= response.status <= 299:
            raise _refused(what, response.status, answer, response.reason)

    def _auth(self) -> dict[str, str]:
        """The bearer token's header (or none), refreshed by the client when due."""
        now = time.monotonic()
        if now >= self._auth_headers_until:
            settings = self.api_client.configuration.auth_settings().values()
            self._auth_headers = {setting["key"]: setting["value"] for setting in settings}
            self._auth_headers_until = now + AUTH_HEADERS_SECONDS
        return self._auth_headers

    async def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except ApiException as e:
            raise _refused(what, e.status, e.body, e.reason) from e
        except urllib3.exceptions.HTTPError as e:  # no answer: timed out, refused, reset
            raise KubeError(f"{what}: {e}") from e

    async def _read(self, what: str, call: Callable[..., Any]) -> dict[str, Any] | None:
        """An object as plain JSON (not the client's models); None when it does not exist."""
        def read() -> dict[str, Any]:
            response = call(_preload_content=False, _request_timeout=self.timeout)
            try:
                return dict(json.loads(response.data))
            finally:
                response.release_conn()
        try:
            return await self._call(what, read)
        except KubeNotFound:
            return None

    # --- custom resources ------------------------------------------------------------------

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._call(f"reading {plural} {namespace}/{name}", lambda: dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                     _request_timeout=self.timeout)))

    async def create_custom(self, plural: str, namespace: str,
                            body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(f"creating {plural} in {namespace}", lambda: dict(
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body,
                                                        _request_timeout=self.timeout)))

    async def patch_custom_status(self, plural: str, namespace: str, name: str,
                                  status: dict[str, Any], *,
                                  resource_version: str | None = None) -> None:
        """Merge ``status`` in; with ``resource_version``, only into that version of the object
        (a 409 ``KubeError`` when it changed since: read again, decide again)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        await self._send(f"updating the status of {plural} {namespace}/{name}", "PATCH",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
                         body, content_type="application/merge-patch+json")

    async def list_custom(self, plural: str, namespace: str,
                          label_selector: str) -> list[dict[str, Any]]:
        """The objects of ``plural`` in ``namespace`` with these labels, as plain JSON."""
        found = await self._read(f"listing {plural} in {namespace}", lambda **kw: (
            self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                      label_selector=label_selector, **kw)))
        return list((found or {}).get("items") or [])

    async def delete_custom(self, plural: str, namespace: str, name: str) -> bool:
        """Delete one object (its dependents in the background); False when already gone."""
        try:
            await self._call(f"deleting {plural} {namespace}/{name}", lambda: (
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name,
                    propagation_policy="Background")))
        except KubeNotFound:
            return False
        return True

    async def patch_custom(self, plural: str, namespace: str, name: str,
                           patch: dict[str, Any]) -> None:
        """A JSON merge patch of the object itself (e.g. a Schedule's ``spec.suspend``)."""
        await self._send(f"updating {plural} {namespace}/{name}", "PATCH",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}",
                         patch, content_type="application/merge-patch+json")

    # --- ConfigMaps and Secrets ------------------------------------------------------------

    async def apply_config_map(self, body: dict[str, Any]) -> None:
        """Create the ConfigMap, or patch it when its content differs (also when another writer
        created it between our read and our create)."""
        meta = body["metadata"]
        what = f"writing ConfigMap {meta['namespace']}/{meta['name']}"
        for _ in range(2):
            try:
                current = await self._call(what, lambda: self.core.read_namespaced_config_map(
                    meta["name"], meta["namespace"], _request_timeout=self.timeout))
            except KubeNotFound:
                try:
                    await self._call(what, lambda: self.core.create_namespaced_config_map(
                        meta["namespace"], body, _request_timeout=self.timeout))
                    return
                except KubeError as e:
                    if e.status != 409:
                        raise
                    continue  # created meanwhile: read it and compare
            if (current.data or {}) == body.get("data", {}) and \
                    (current.metadata.annotations or {}) == meta.get("annotations", {}):
                return
            await self._call(what, lambda: self.core.patch_namespaced_config_map(
                meta["name"], meta["namespace"],
                {"metadata": {"annotations": meta.get("annotations", {})}, "data": body["data"]},
                _request_timeout=self.timeout))
            return
        raise KubeError(f"{what}: created and deleted again while being written", 409)

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading ConfigMap {namespace}/{name}",
                                lambda **kw: self.core.read_namespaced_config_map(name, namespace,
                                                                                  **kw))

    # --- Jobs and Pods ----------------------------------------------------------------------

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading Job {namespace}/{name}",
                                lambda **kw: self.batch.read_namespaced_job(name, namespace, **kw))

    async def create_run_objects(self, secret: dict[str, Any], job: dict[str, Any]) -> bool:
        """A run's sealed-bundle Secret (replaced if there) then its Job; False when the Job
        exists already (a restarted operator)."""
        meta = job["metadata"]
        namespace, secret_name = meta["namespace"], secret["metadata"]["name"]
        what = f"creating the run objects of Job {namespace}/{meta['name']}"
        try:
            await self._send(what, "POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
        except KubeError as e:
            if e.status != 409:
                raise
            await self._send(what, "PUT", f"/api/v1/namespaces/{namespace}/secrets/{secret_name}",
                             secret)
        try:
            await self._send(what, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def run_pods(self, namespace: str, run_id: str) -> list[dict[str, Any]]:
        """The pods of one run (by its label), as plain JSON."""
        found = await self._read(
            f"listing the pods of run {run_id} in {namespace}",
            lambda **kw: self.core.list_namespaced_pod(
                namespace, label_selector=f"{LABEL_RUN}={run_id}", **kw))
        return list((found or {}).get("items") or [])

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading Pod {namespace}/{name}",
                                lambda **kw: self.core.read_namespaced_pod(name, namespace, **kw))

    # --- run pods' identity (the broker's PodAuthenticator) --------------------------------

    async def review_token(self, token: str, audience: str) -> PodIdentity | None:
        """Ask the API server who a projected token belongs to; None when it is not valid."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token, "audiences": [audience]}}
        try:
            answer = await asyncio.to_thread(self.auth.create_token_review, review,
                                             _request_timeout=self.timeout)
        except ApiException as e:  # its body may echo the request, token included: not shown
            raise KubeError(f"reviewing a run pod's token: {e.status}", e.status) from None
        except urllib3.exceptions.HTTPError as e:
            raise KubeError(f"reviewing a run pod's token: {e}") from e
        status = self.api_client.sanitize_for_serialization(answer).get("status") or {}
        if not status.get("authenticated") or audience not in (status.get("audiences") or
                                                               [audience]):
            return None
        user = status.get("user") or {}
        extra = user.get("extra") or {}
        username = str(user.get("username", ""))
        parts = username.split(":")  # system:serviceaccount:NAMESPACE:NAME
        pod_name = (extra.get("authentication.kubernetes.io/pod-name") or [""])[0]
        pod_uid = (extra.get("authentication.kubernetes.io/pod-uid") or [""])[0]
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not pod_name:
            return None
        return PodIdentity(parts[2], pod_name, pod_uid, parts[3])

    async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
        """The run a live pod belongs to (its run label), if it is that pod and still running."""
        pod = await self.read_pod(namespace, pod_name)
        if pod is None:
            return None
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if pod_uid and meta.get("uid") != pod_uid:
            return None
        if status.get("phase") in ("Succeeded", "Failed"):
            return None
        run_id = (meta.get("labels") or {}).get(LABEL_RUN)
        return str(run_id) if run_id else None

    # --- Events ----------------------------------------------------------------------------

    async def post_event(self, involved: dict[str, Any], event_type: str, reason: str,
                         message: str) -> None:
        """An Event about a custom resource; losing one is logged, never fatal."""
        meta = involved.get("metadata") or {}
        now = datetime.now(UTC)
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{meta.get('name', 'fx')}.",
                             "namespace": meta.get("namespace")},
                "involvedObject": {"apiVersion": involved.get("apiVersion"),
                                   "kind": involved.get("kind"), "name": meta.get("name"),
                                   "namespace": meta.get("namespace"), "uid": meta.get("uid")},
                "type": event_type, "reason": reason, "message": message[:1024],
                "source": {"component": "fx-operator"}, "firstTimestamp": now.isoformat(),
                "lastTimestamp": now.isoformat(), "count": 1}
        try:
            await self._send("posting an Event", "POST",
                             f"/api/v1/namespaces/{meta.get('namespace')}/events", body)
        except KubeError as e:
            log.warning("event %s on %s/%s not posted: %s", reason, meta.get("namespace"),
                        meta.get("name"), e)


def _refused(what: str, status: int | None, body: str | bytes | None,
             reason: object) -> KubeError:
    """A refused call as our error, whichever client made it: the API server's own message
    from its Status answer, else the HTTP reason."""
    if status == 404:
        return KubeNotFound(f"{what}: not found", 404)
    try:
        message = str(json.loads(body or b"").get("message") or reason)
    except (TypeError, ValueError, AttributeError):
        message = str(reason)
    return KubeError(f"{what}: {status} {message}", status)
