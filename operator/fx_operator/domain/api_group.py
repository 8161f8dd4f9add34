"""The operator's API as Kubernetes names it: group, version, the kinds' plurals, and the labels
and annotations it puts on what it makes. One place, so the CRDs, the handlers, the storage
calls and the Job builder cannot drift apart (the CRDs under ``crds/`` spell the same)."""

from __future__ import annotations

from typing import Final

GROUP: Final = "fx.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

#: the plural (the API path segment) of each kind the operator serves
PLURALS: Final = {"Package": "packages", "ScopedSecret": "scopedsecrets",
                  "Execution": "executions", "Schedule": "schedules"}

LABEL_RUN: Final = f"{GROUP}/run-id"
LABEL_EXECUTION: Final = f"{GROUP}/execution"
LABEL_PACKAGE: Final = f"{GROUP}/package"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGER: Final = "fx-operator"
ANNOTATION_CONTENT_HASH: Final = f"{GROUP}/content-hash"
