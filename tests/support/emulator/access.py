"""Requests as an authorizer sees them: recording them, and refusing them.

``KubeEmulator.recorded_calls`` collects each request's RBAC attributes (:class:`ApiCall`), so a
test checks the chart's RBAC rules against the calls the operator really makes; an
``authorizer`` refusing one is answered with the real server's 403.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

import kmock

from support.emulator.errors import failure
from support.emulator.tokens import TokenIdentity


@dataclasses.dataclass(frozen=True)
class ApiCall:
    """One request as the API server's authorizer sees it (RBAC's request attributes).

    ``verb`` is RBAC's: get, list, watch (a GET with ``watch=true``), create, update (PUT), patch,
    delete, deletecollection; for a non-resource URL (discovery: ``/api``, ``/apis/...``) it is
    the HTTP method in lower case and ``resource`` is empty. ``namespace`` is None for a
    cluster-scoped object and for a request across all namespaces; ``namespaced`` says whether
    the resource itself is namespaced.
    """

    token: str  # the bearer token that made the request; "" without one
    verb: str
    group: str  # "" for the core group
    resource: str  # the plural; "" for a non-resource URL
    subresource: str | None
    namespace: str | None
    namespaced: bool
    path: str

    @property
    def rbac_resource(self) -> str:
        """``pods``, or ``pods/status`` for a subresource: how an RBAC rule names it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def bearer_token(request: kmock.Request) -> str:
    value = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


RBAC_VERBS: Final = {kmock.method.POST: "create", kmock.method.PUT: "update",
                 kmock.method.PATCH: "patch"}


def api_call(request: kmock.Request, namespaced: Callable[[kmock.resource], bool]) -> ApiCall:
    """The request as RBAC sees it (see :class:`ApiCall`)."""
    res, method, path = request.resource, request.method, request.url.path
    if res is None or not res.plural:
        return ApiCall(bearer_token(request), str(method.value).lower(), "", "", None, None,
                       False, path)
    if method == kmock.method.GET:
        watching = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = "watch" if watching else "list" if request.name is None else "get"
    elif method == kmock.method.DELETE:
        verb = "delete" if request.name is not None else "deletecollection"
    else:
        verb = RBAC_VERBS.get(method, str(method.value).lower())
    return ApiCall(bearer_token(request), verb, res.group or "", res.plural,
                   request.subresource, request.namespace, namespaced(res), path)


def forbidden(call: ApiCall, name: str | None,
              identity: TokenIdentity | None) -> kmock.KubernetesError:
    """The real server's 403 (``responsewriters.forbiddenMessage`` and ``NewForbidden``)."""
    user = (f"system:serviceaccount:{identity.namespace}:{identity.service_account}"
            if identity is not None else call.token or "system:anonymous")
    if not call.resource:
        return failure(403, "Forbidden",
                       f'forbidden: User "{user}" cannot {call.verb} path "{call.path}"')
    where = (f'in the namespace "{call.namespace}"' if call.namespace is not None
             else "at the cluster scope")
    why = (f'User "{user}" cannot {call.verb} resource "{call.rbac_resource}" in API group '
           f'"{call.group}" {where}')
    qualified = f"{call.resource}.{call.group}" if call.group else call.resource
    subject = f'{qualified} "{name}"' if name else qualified
    return failure(403, "Forbidden", f"{subject} is forbidden: {why}", name=name or None,
                   group=call.group, kind=call.resource)
