"""The Kubernetes API server emulator, one module per section (see ``support.kube_emulator``).

Layers of :class:`~support.emulator.handler.KubeEmulator`, each on the one before: registry
(what is served), store (versions, watch history), tokens (authentication), reads, deletion,
writes, handler (request plumbing). Beside them, the parts without state: errors, selectors,
openapi, admission, access (RBAC attributes), history, and server (serving it over HTTP). Tests
import from :mod:`support.kube_emulator`.
"""
