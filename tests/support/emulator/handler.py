""":class:`KubeEmulator`: kmock's routing in front of the emulator's layers.

The layers, each on the one before: :class:`~support.emulator.registry.ResourceRegistry` (what is
served), :class:`~support.emulator.store.ObjectStore` (versions and watch history),
:class:`~support.emulator.tokens.Authentication`, :class:`~support.emulator.reads.Reads`,
:class:`~support.emulator.deletion.Deletion`, :class:`~support.emulator.writes.Writes`; this one
adds request plumbing (kmock's path parser, its request log, its reaction DSL), recording and
authorizing requests, and the public synchronous API.
"""

from __future__ import annotations

import copy
import gzip
import importlib.resources
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

# kmock exports Response but leaves it out of __all__; kmock is pinned (==0.8) and used through
# its internals anyway, so it is imported from where it is defined.
from kmock._internal.rendering import Response

from support.emulator.access import ApiCall, api_call, forbidden
from support.emulator.kinds import CRDS, DEFAULT_NAMESPACES, NAMESPACES, JsonDict
from support.emulator.writes import Writes

# kmock's path parser reads /api/v1/namespaces[/NAME[/status|finalize]] as a namespace prefix.
_NAMESPACE_OBJECT_PATH = re.compile(r"/api/v1/namespaces(/[^/]+(/(status|finalize))?)?/?")
_NAMESPACES_PREFIX = "/api/v1/namespaces"
_NAMESPACES_ALIAS = "/api/v1/namespaces//namespaces"


@attrs.define(kw_only=True)
class KubeEmulator(Writes):
    """kmock's Kubernetes emulator with the behaviour of a real API server that operators rely on.

    State changes happen synchronously on the emulator's loop, so each request is atomic. kmock's
    reaction DSL still works on top (``emulator["create pods"] << 500`` and so on), with kmock's
    semantics: writes change the state even when a reaction answers them.
    """

    #: How many requests kmock keeps for its request assertions (``list(emulator)``,
    #: ``emulator["post"]``...). kmock scans the whole log on every request, so a long log makes
    #: the server slow down linearly. Count-based slices (``emulator["get"][:3]``) count within
    #: this window: raise it in a test that relies on them.
    request_log_size: int = 20
    #: Opt-in: set it to a list, and every request is appended to it as an :class:`ApiCall`.
    recorded_calls: list[ApiCall] | None = None
    #: Opt-in RBAC: every request is asked of it (as an :class:`ApiCall`, after it is recorded);
    #: a False answers 403 Forbidden as a real server's authorizer does, and changes nothing.
    authorizer: Callable[[ApiCall], bool] | None = None

    _outcomes: dict[int, Response] = attrs.field(factory=dict, init=False)
    _own_payloads: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's own load_bundled() calls the deprecated importlib.resources.read_binary().
        bundled = importlib.resources.files("kmock._internal") / "resources.json.gz"
        self.resources.load_data(gzip.decompress(bundled.read_bytes()))
        # Above kmock's own fallbacks (same -inf tier, sub-priority 1): the answers to writes.
        (self.fallback ** 1)[self._has_outcome] << self._serve_outcome
        self._own_payloads = len(self._payloads)  # more: a test added reactions of its own
        for name in DEFAULT_NAMESPACES:
            self.create(NAMESPACES, {"metadata": {"name": name}})

    # --- public, synchronous API (call it before the server starts or via server.call) ---------

    def create(self, resource: kmock.resource | str, body: Mapping[str, Any]) -> JsonDict:
        """Create an object as a POST would (validation, defaults, events); return it."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        namespace = (body.get("metadata") or {}).get("namespace")
        return self._create(res, namespace, copy.deepcopy(dict(body)))

    def load_crds(self, path: str | Path) -> list[kmock.resource]:
        """Register every CustomResourceDefinition in a YAML file or a folder of them.

        The CRDs are stored as objects too (as ``kubectl apply`` would leave them), and their
        custom resources are then pruned, defaulted and validated against ``openAPIV3Schema``.
        Documents of other kinds are skipped. Returns the resources registered. A CRD that a real
        server refuses (:func:`support.crd_rules.crd_violations`) raises the server's 422
        (``kmock.KubernetesError``, its message the server's) and is not registered.
        """
        root = Path(path)
        files = [root]
        if root.is_dir():
            files = sorted(root.glob("*.y*ml")) + sorted(root.glob("*.json"))
        registered: list[kmock.resource] = []
        for file in files:
            for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    registered.extend(self._register_crd(doc))
                    key = (CRDS, None, doc["metadata"]["name"])
                    if self._current(key) is None:
                        self.create(CRDS, doc)
        return registered

    # --- request plumbing ------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Route namespace-object URLs around kmock's path parser (it fails on them: a 500)."""
        if _NAMESPACE_OBJECT_PATH.fullmatch(raw_request.path):
            rel_url = raw_request.rel_url
            alias = _NAMESPACES_ALIAS + rel_url.path[len(_NAMESPACES_PREFIX):]
            rel_url = rel_url.with_path(alias).with_query(rel_url.query)
            raw_request = raw_request.clone(rel_url=rel_url)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Apply writes to the state (atomically: no await), then let kmock route the request.

        This replaces kmock's ``KubernetesEmulator._handle`` (its state logic has the gaps this
        module fixes) and goes straight to the generic reaction matching of ``RawHandler``.
        """
        self._trim_logs()
        if request.namespace == "" and request.resource == NAMESPACES:
            self._unalias(request)
        if self.recorded_calls is not None or self.authorizer is not None:
            call = self._api_call(request)
            if self.recorded_calls is not None:
                self.recorded_calls.append(call)
            if self.authorizer is not None and not self.authorizer(call):
                raise self._forbidden(call, request.name)
        if request.resource is not None and request.method != kmock.method.GET:
            outcome = self._write(request)
            if len(self._payloads) == self._own_payloads:
                # No reaction of a test's could intercept it: answer at once, without kmock's
                # matching of every reaction (inspect.signature per criterion per request).
                return await outcome(request)
            self._outcomes[id(request)] = outcome
        try:
            return await kmock.RawHandler._handle(self, request)
        finally:
            self._outcomes.pop(id(request), None)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """Answer API errors as a real server does: no traceback in ``details`` (kmock adds one);
        anything else is an emulator bug and keeps kmock's 500 with the traceback."""
        if not isinstance(exc, kmock.KubernetesError):
            return await super()._render_error(exc)
        status: JsonDict = {"apiVersion": "v1", "kind": "Status", "metadata": {},
                            "status": "Failure", "message": exc.message, "reason": exc.reason,
                            "code": exc.status}
        if exc.details:
            status["details"] = exc.details
        return aiohttp.web.json_response(status, status=exc.status)

    def _trim_logs(self) -> None:
        keep = max(1, self.request_log_size)
        del self._requests[:-keep]
        for payload in self._payloads:
            del payload._requests[:-keep]
        if self._errors:
            del self._errors[-1][:-keep]

    @staticmethod
    def _unalias(request: kmock.Request) -> None:
        # kmock's Request is frozen; this one was parsed from the aliased URL made in __call__.
        url = request.url
        path = url.path.replace(_NAMESPACES_ALIAS, _NAMESPACES_PREFIX, 1)
        object.__setattr__(request, "namespace", None)
        object.__setattr__(request, "url", url.with_path(path).with_query(url.query))

    def _has_outcome(self, request: kmock.Request) -> bool:
        return id(request) in self._outcomes

    def _serve_outcome(self, request: kmock.Request) -> Response:
        return self._outcomes[id(request)]

    def _api_call(self, request: kmock.Request) -> ApiCall:
        """The request as RBAC sees it (see :class:`ApiCall`)."""
        return api_call(request, self._namespaced)

    def _forbidden(self, call: ApiCall, name: str | None) -> kmock.KubernetesError:
        """The real server's 403 for ``call``, naming the token's service account."""
        return forbidden(call, name, self.tokens.get(call.token))
