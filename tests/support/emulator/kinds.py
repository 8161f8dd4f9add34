"""The resources the emulator treats apart, and the shapes its parts share.

Kept apart so that every part (store, admission, writes, reads) names a built-in resource the same
way without importing another part.
"""

from __future__ import annotations

from typing import Any, Final

import kmock

JsonDict = dict[str, Any]
#: How the store keys an object: (resource, namespace or None when cluster-scoped, name).
ObjectKey = tuple[kmock.resource, str | None, str]

NAMESPACES: Final = kmock.resource("", "v1", "namespaces")
PODS: Final = kmock.resource("", "v1", "pods")
SECRETS: Final = kmock.resource("", "v1", "secrets")
SERVICEACCOUNTS: Final = kmock.resource("", "v1", "serviceaccounts")
CRDS: Final = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
TOKENREVIEWS: Final = kmock.resource("authentication.k8s.io", "v1", "tokenreviews")

DEFAULT_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
CUSTOM_VERBS: Final = frozenset(
    {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})
SERVER_MANAGED_META: Final = (
    "uid", "creationTimestamp", "generation", "resourceVersion",
    "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields",
)
GENERATE_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # as the API server's
