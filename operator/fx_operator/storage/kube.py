"""Every call the operator makes to the Kubernetes API, in one place.

One async transport: every call (reads, writes, lists, deletes, TokenReviews, Events) goes out on
the event loop over one aiohttp session, so kopf's event loop never blocks and no call needs a
worker thread. The official client serves only to load the configuration once (in a pod: the
service account's CA and its projected token, re-read by the client's refresh hook; elsewhere:
$KUBECONFIG), never to make a call. HTTP errors are converted here, once, into ``KubeError``
(retry later) or ``KubeNotFound``; callers never see aiohttp's exceptions.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes import client, config

from fx_operator.domain.api_group import GROUP, LABEL_RUN, VERSION
from fx_operator.domain.conditions import Reason
from fx_operator.exceptions import FxError

log = logging.getLogger(__name__)
CONNECTIONS = 32  # API connections, and worker threads for blocking calls (see OperatorApp)
MERGE_PATCH = "application/merge-patch+json"
#: What the official client sent for a ConfigMap's patch (a dict body): maps merge alike.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
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
        self._http: aiohttp.ClientSession | None = None
        self._auth_headers: dict[str, str] = {}
        self._auth_headers_until = float("-inf")

    async def open(self) -> None:
        """Keep one HTTP session for every call (the operator); without it, each call opens
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

    async def _request(self, what: str, method: str, path: str,
                       body: dict[str, Any] | None = None, *,
                       content_type: str = "application/json",
                       query: dict[str, str] | None = None,
                       quiet: bool = False) -> dict[str, Any]:
        """One call on the event loop: the answer as plain JSON; errors as ``KubeError``.

        ``quiet``: the error names the status only, never the server's message (which may echo
        the request, e.g. a token under review)."""
        conf = self.api_client.configuration
        headers = {"Accept": "application/json", **self._auth()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        session = self._http or self._new_session()
        try:
            async with session.request(method, conf.host + path, data=data, params=query,
                                       headers=headers, proxy=conf.proxy,
                                       server_hostname=conf.tls_server_name) as response:
                answer = await response.read()
        except (aiohttp.ClientError, OSError) as e:  # no answer: timed out, refused, reset
            raise KubeError(f"{what}: {e}") from e
        finally:
            if session is not self._http:
                await session.close()
        if not 200 <= response.status <= 299:
            if quiet:
                raise KubeError(f"{what}: {response.status}", response.status)
            raise _refused(what, response.status, answer, response.reason)
        try:
            found = json.loads(answer) if answer else {}
        except ValueError as e:
            raise KubeError(f"{what}: the answer is not JSON ({e})", response.status) from None
        if not isinstance(found, dict):
            raise KubeError(f"{what}: the answer is not a JSON object", response.status)
        return found

    def _auth(self) -> dict[str, str]:
        """The bearer token's header (or none), refreshed by the client's configuration when due:
        in a pod, its in-cluster loader re-reads the projected token file once a minute."""
        now = time.monotonic()
        if now >= self._auth_headers_until:
            settings = self.api_client.configuration.auth_settings().values()
            self._auth_headers = {setting["key"]: setting["value"] for setting in settings}
            self._auth_headers_until = now + AUTH_HEADERS_SECONDS
        return self._auth_headers

    async def _read(self, what: str, path: str,
                    query: dict[str, str] | None = None) -> dict[str, Any] | None:
        """An object as plain JSON; None when it does not exist."""
        try:
            return await self._request(what, "GET", path, query=query)
        except KubeNotFound:
            return None

    # --- custom resources ------------------------------------------------------------------

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(f"reading {plural} {namespace}/{name}", "GET",
                                   _custom_path(namespace, plural, name))

    async def create_custom(self, plural: str, namespace: str,
                            body: dict[str, Any]) -> dict[str, Any]:
        return await self._request(f"creating {plural} in {namespace}", "POST",
                                   _custom_path(namespace, plural), body)

    async def patch_custom_status(self, plural: str, namespace: str, name: str,
                                  status: dict[str, Any], *,
                                  resource_version: str | None = None) -> None:
        """Merge ``status`` in; with ``resource_version``, only into that version of the object
        (a 409 ``KubeError`` when it changed since: read again, decide again)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        await self._request(f"updating the status of {plural} {namespace}/{name}", "PATCH",
                            _custom_path(namespace, plural, name) + "/status",
                            body, content_type=MERGE_PATCH)

    async def list_custom(self, plural: str, namespace: str,
                          label_selector: str) -> list[dict[str, Any]]:
        """The objects of ``plural`` in ``namespace`` with these labels, as plain JSON."""
        found = await self._read(f"listing {plural} in {namespace}",
                                 _custom_path(namespace, plural),
                                 {"labelSelector": label_selector} if label_selector else None)
        return list((found or {}).get("items") or [])

    async def delete_custom(self, plural: str, namespace: str, name: str) -> bool:
        """Delete one object (its dependents in the background); False when already gone."""
        try:
            await self._request(f"deleting {plural} {namespace}/{name}", "DELETE",
                                _custom_path(namespace, plural, name),
                                query={"propagationPolicy": "Background"})
        except KubeNotFound:
            return False
        return True

    async def patch_custom(self, plural: str, namespace: str, name: str,
                           patch: dict[str, Any]) -> None:
        """A JSON merge patch of the object itself (e.g. a Schedule's ``spec.suspend``)."""
        await self._request(f"updating {plural} {namespace}/{name}", "PATCH",
                            _custom_path(namespace, plural, name), patch,
                            content_type=MERGE_PATCH)

    # --- ConfigMaps and Secrets ------------------------------------------------------------

    async def apply_config_map(self, body: dict[str, Any]) -> None:
        """Create the ConfigMap, or patch it when its content differs (also when another writer
        created it between our read and our create)."""
        meta = body["metadata"]
        what = f"writing ConfigMap {meta['namespace']}/{meta['name']}"
        collection = f"/api/v1/namespaces/{meta['namespace']}/configmaps"
        path = f"{collection}/{meta['name']}"
        for _ in range(2):
            current = await self._read(what, path)
            if current is None:
                try:
                    await self._request(what, "POST", collection, body)
                    return
                except KubeError as e:
                    if e.status != 409:
                        raise
                    continue  # created meanwhile: read it and compare
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            if (current.get("data") or {}) == body.get("data", {}) and \
                    annotations == meta.get("annotations", {}):
                return
            await self._request(what, "PATCH", path, {
                "metadata": {"annotations": meta.get("annotations", {})}, "data": body["data"]},
                content_type=STRATEGIC_MERGE_PATCH)
            return
        raise KubeError(f"{what}: created and deleted again while being written", 409)

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading ConfigMap {namespace}/{name}",
                                f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    # --- Jobs and Pods ----------------------------------------------------------------------

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading Job {namespace}/{name}",
                                f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")

    async def create_run_objects(self, secret: dict[str, Any], job: dict[str, Any]) -> bool:
        """A run's sealed-bundle Secret (replaced if there) then its Job; False when the Job
        exists already (a restarted operator)."""
        meta = job["metadata"]
        namespace, secret_name = meta["namespace"], secret["metadata"]["name"]
        what = f"creating the run objects of Job {namespace}/{meta['name']}"
        try:
            await self._request(what, "POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
        except KubeError as e:
            if e.status != 409:
                raise
            await self._request(what, "PUT",
                                f"/api/v1/namespaces/{namespace}/secrets/{secret_name}", secret)
        try:
            await self._request(what, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def run_pods(self, namespace: str, run_id: str) -> list[dict[str, Any]]:
        """The pods of one run (by its label), as plain JSON."""
        found = await self._read(f"listing the pods of run {run_id} in {namespace}",
                                 f"/api/v1/namespaces/{namespace}/pods",
                                 {"labelSelector": f"{LABEL_RUN}={run_id}"})
        return list((found or {}).get("items") or [])

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(f"reading Pod {namespace}/{name}",
                                f"/api/v1/namespaces/{namespace}/pods/{name}")

    # --- run pods' identity (the broker's PodAuthenticator) --------------------------------

    async def review_token(self, token: str, audience: str) -> PodIdentity | None:
        """Ask the API server who a projected token belongs to; None when it is not valid."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token, "audiences": [audience]}}
        # Its refusal's body may echo the request, token included: only the status is shown.
        answer = await self._request("reviewing a run pod's token", "POST",
                                     "/apis/authentication.k8s.io/v1/tokenreviews", review,
                                     quiet=True)
        status = answer.get("status") or {}
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
            await self._request("posting an Event", "POST",
                                f"/api/v1/namespaces/{meta.get('namespace')}/events", body)
        except KubeError as e:
            log.warning("event %s on %s/%s not posted: %s", reason, meta.get("namespace"),
                        meta.get("name"), e)


def _custom_path(namespace: str, plural: str, name: str | None = None) -> str:
    collection = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return collection if name is None else f"{collection}/{name}"


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
