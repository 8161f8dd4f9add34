"""Authentication: bearer tokens, TokenReview and TokenRequest.

The operator checks a run pod's projected token with a TokenReview (``DESIGN.md``, P4), so the
emulator answers reviews as a real server does, pod binding included: a token bound to a pod that
is gone, or replaced, stops being valid.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import kmock

from support.emulator.kinds import PODS, TOKENREVIEWS, JsonDict, ObjectKey
from support.emulator.store import ObjectStore, utc_now

DEFAULT_AUDIENCES: Final = ("https://kubernetes.default.svc.cluster.local",)


@dataclasses.dataclass(frozen=True)
class TokenIdentity:
    """Who a bearer token belongs to, as a TokenReview reports it.

    With ``pod_name`` and ``pod_uid`` the token is bound to that pod: once the emulator has seen
    the pod and it is gone or has another uid, the token stops being valid, as on a real cluster.
    An empty ``audiences`` accepts any audience asked for.
    """

    namespace: str
    service_account: str
    pod_name: str | None = None
    pod_uid: str | None = None
    audiences: tuple[str, ...] = ()
    service_account_uid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))


#: ``(token, audiences asked for) -> identity or None``: plug one in to answer TokenReviews.
TokenReviewer = Callable[[str, Sequence[str]], TokenIdentity | None]


@attrs.define(kw_only=True)
class Authentication(ObjectStore):
    """The token registry, and the virtual resources that read and extend it."""

    #: Valid bearer tokens; TokenRequests add theirs here.
    tokens: dict[str, TokenIdentity] = attrs.field(factory=dict)
    #: Answers TokenReviews instead of ``tokens`` when set.
    token_reviewer: TokenReviewer | None = None

    def register_token(self, token: str, *, namespace: str, service_account: str,
                       pod_name: str | None = None, pod_uid: str | None = None,
                       audiences: Iterable[str] = ()) -> TokenIdentity:
        """Make ``token`` valid for TokenReview, as the service account (and pod) given."""
        identity = TokenIdentity(namespace=namespace, service_account=service_account,
                                 pod_name=pod_name, pod_uid=pod_uid, audiences=tuple(audiences))
        self.tokens[token] = identity
        return identity

    def _review(self, res: kmock.resource, body: JsonDict) -> JsonDict:
        """TokenReview from the token registry or callback; access reviews are always allowed."""
        body.setdefault("apiVersion", self._api_version(res))
        body.setdefault("kind", self._kind(res))
        body["metadata"] = {"creationTimestamp": None}
        if res == TOKENREVIEWS:
            body["status"] = self._token_review_status(body.get("spec") or {})
        elif (res.plural or "").endswith("accessreviews"):
            body["status"] = {"allowed": True, "reason": "the emulator does not enforce RBAC"}
        return body

    def _token_review_status(self, spec: Mapping[str, Any]) -> JsonDict:
        token, wanted = spec.get("token") or "", list(spec.get("audiences") or [])
        reviewer = self.token_reviewer or (lambda t, _: self.tokens.get(t))
        identity = reviewer(token, wanted) if token else None
        if identity is None:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        audiences = list(identity.audiences or DEFAULT_AUDIENCES)
        if wanted:
            audiences = [a for a in wanted if not identity.audiences or a in identity.audiences]
            if not audiences:
                return {"authenticated": False, "user": {},
                        "error": "token audiences are invalid for the target audiences"}
        if identity.pod_name is not None:
            pod_key = (PODS, identity.namespace, identity.pod_name)
            pod = self._current(pod_key)
            other_uid = pod is not None and identity.pod_uid not in (None, pod["metadata"]["uid"])
            if pod_key in self.objects and (pod is None or other_uid):
                return {"authenticated": False, "user": {},
                        "error": f'pod "{identity.pod_name}" not found or has another uid'}
        user = f"system:serviceaccount:{identity.namespace}:{identity.service_account}"
        extra = {}
        if identity.pod_name is not None:
            extra["authentication.kubernetes.io/pod-name"] = [identity.pod_name]
        if identity.pod_uid is not None:
            extra["authentication.kubernetes.io/pod-uid"] = [identity.pod_uid]
        return {
            "authenticated": True,
            "user": {
                "username": user,
                "uid": identity.service_account_uid,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{identity.namespace}",
                           "system:authenticated"],
                "extra": extra,
            },
            "audiences": audiences,
        }

    def _token_request(self, key: ObjectKey, body: JsonDict) -> JsonDict:
        """TokenRequest (``serviceaccounts/NAME/token``): a token that TokenReview then accepts."""
        account = self._existing(key)
        spec = body.get("spec") or {}
        bound = spec.get("boundObjectRef") or {}
        pod = bound if bound.get("kind") == "Pod" else {}
        audiences = tuple(spec.get("audiences") or DEFAULT_AUDIENCES)
        token = f"kube-emulator.{secrets.token_urlsafe(24)}"
        self.tokens[token] = TokenIdentity(
            namespace=key[1] or "", service_account=key[2], pod_name=pod.get("name"),
            pod_uid=pod.get("uid"), audiences=audiences,
            service_account_uid=account["metadata"]["uid"])
        seconds = int(spec.get("expirationSeconds") or 3600)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        return {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": key[2], "namespace": key[1], "creationTimestamp": utc_now()},
            "spec": {**spec, "audiences": list(audiences), "expirationSeconds": seconds},
            "status": {"token": token,
                       "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }
