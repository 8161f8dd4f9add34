"""A Kubernetes API server for tests: kmock's ``KubernetesEmulator`` minus the gaps that break kopf.

No real API server can run on the project's machines (see ``/work/shared/ENVIRONMENT.md``), so the
operator is tested against this emulator over real HTTP. Plain kmock 0.8 breaks kopf in several
ways; :class:`KubeEmulator` keeps kmock's routing, reaction DSL, discovery and object store, and
replaces the state logic so that it behaves the way a real server does where operators notice:

* metadata: ``uid``, ``resourceVersion`` (one global counter, bumped on every change),
  ``creationTimestamp``, ``generation`` (bumped on spec changes only), ``generateName``;
* LIST answers ``<Kind>List`` with the current resourceVersion, selectors and pagination;
  WATCH resumes from a resourceVersion (410 Gone when the history no longer reaches back),
  honours ``timeoutSeconds``, and turns selector transitions into ADDED/DELETED as a server does;
* finalizers and ``deletionTimestamp``; ownerReference garbage collection (background/orphan);
* JSON-patch ``test`` failures are 422, stale ``metadata.resourceVersion`` is 409, PUT works;
* ``/status`` is isolated from the main resource when the resource declares it;
* ``GET /api/v1/namespaces`` works (kmock's path parser reads it as a namespace prefix);
* custom resources are pruned, defaulted and validated against the CRD's ``openAPIV3Schema``
  (422 with a ``Status`` naming the field, in the server's words for the usual violations);
  Secret ``stringData`` becomes base64 ``data``;
* the CRD's ``x-kubernetes-validations`` CEL rules are evaluated on every create, update, patch
  and ``/status`` write of its custom resources (``support.crd_rules.CelRules``: rules at any
  node, transition rules on updates where the old value exists, messageExpression, fieldPath,
  reason, ratcheting), each failure a cause of the 422 in the real server's words; no rule runs
  after a schema error that blocks them, as there. ``KubeEmulator(cel=False)`` plays an API
  server older than 1.25, or one with CEL off: objects breaking the rules are stored, so that a
  test can reach a client's own checks behind them;
* ``x-kubernetes-list-type`` set and map lists hold no item twice and no two items with the same
  map keys (``support.crd_rules.list_violations``): ``Duplicate value`` at the later index, in
  the real server's words, after the schema's errors and before the CEL rules'; with CEL off too
  (older than CEL, a server has checked them since 1.18); not on an update of an object stored
  with a duplicate (the server skips the check when the old object fails it);
* TokenReview and TokenRequest answer from a token registry or a pluggable callback;
* an opt-in request recorder (``recorded_calls``): each request as an authorizer sees it (token,
  verb, group, resource, subresource, namespace), to check RBAC rules against real calls;
* an opt-in authorizer (``authorizer``): a request it refuses is answered 403 Forbidden with the
  real server's message, to see how a client copes with a rule its RBAC lacks;
* CRDs are checked as the real server checks them (``support.crd_rules``: structural schema,
  the CRD's own validation, the field names of CEL rules); a refused CRD is a 422, as there;
* kmock's request log is trimmed to the last few requests: kmock matches every request against
  the whole log, which made the server slow down linearly (ENVIRONMENT.md, item 6).

Usage::

    emulator = KubeEmulator()
    emulator.load_crds(REPO / "crds")
    emulator.register_token("t0k3n", namespace="ns", service_account="runner", pod_name="p")
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        api = server.api_client()       # kubernetes.client.ApiClient for this server
        ...
        objects = server.dump_objects()  # every version of every object, for canary checks

The emulator's state belongs to its event loop: while the server runs, touch it from other
threads only through :meth:`KubeEmulatorServer.call` (``dump_objects`` and friends do that).

Pitfall: ``kubernetes.config`` reads ``$KUBECONFIG`` once, at import
(``kube_config.KUBE_CONFIG_DEFAULT_LOCATION``), so setting the variable in a test does not reach
``load_kube_config()`` or kopf's default ``login_via_client``. Build clients from the file
explicitly (:meth:`KubeEmulatorServer.api_client`), log kopf in with
:meth:`KubeEmulatorServer.kopf_connection_info` from an ``@kopf.on.login`` handler, or set the
variable before ``kubernetes`` is first imported.

Not emulated (a real cluster or the e2e suite covers them): controllers (Jobs never run, Pods
never start: set their status through ``/status`` to play one), RBAC and authentication of
callers (unless an ``authorizer`` is given), admission webhooks, CEL cost budgets, ratcheting
of schema errors on updates, schemas of built-in kinds, strategic-merge list semantics (treated
as a JSON merge patch), server-side apply, ``dryRun``, conversion between CRD versions (each
served version is stored apart), removing a CRD's resources when the CRD is deleted, foreground
deletion (treated as background), and a namespace's Terminating phase (its objects are deleted
at once; those with finalizers stay marked).

The emulator is a package, :mod:`support.emulator`, one module per section (errors, selectors,
openapi, admission, registry, store, history, tokens, access, reads, deletion, writes, handler,
server); this module keeps the names the tests import.
"""

from support.emulator.access import ApiCall
from support.emulator.admission import ANNOTATIONS_MAX_BYTES
from support.emulator.handler import KubeEmulator
from support.emulator.openapi import to_json_schema
from support.emulator.selectors import parse_field_selector, parse_label_selector
from support.emulator.server import KubeEmulatorServer
from support.emulator.tokens import DEFAULT_AUDIENCES, TokenIdentity, TokenReviewer

__all__ = [
    "ANNOTATIONS_MAX_BYTES",
    "DEFAULT_AUDIENCES",
    "ApiCall",
    "KubeEmulator",
    "KubeEmulatorServer",
    "TokenIdentity",
    "TokenReviewer",
    "parse_field_selector",
    "parse_label_selector",
    "to_json_schema",
]
