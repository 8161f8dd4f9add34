"""Scenarios both cluster tiers run (the emulator's and the real control plane's), written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

# A package reading names at every scope: which are set, which won, and the package-scope canary
# (masked in its output).
SCOPES_SCRIPT = """
import json
from fx_ef import context
# Each name read literally: runs receive only the names their package declares or reads so.
values = {"CANARY_PLATFORM": context.secrets.get("CANARY_PLATFORM"),
          "CANARY_PROJECT": context.secrets.get("CANARY_PROJECT"),
          "CANARY_PACKAGE": context.secrets.get("CANARY_PACKAGE"),
          "SHARED": context.secrets.get("SHARED"),
          "ONLY_PLATFORM": context.secrets.get("ONLY_PLATFORM"),
          "EMPTY": context.secrets.get("EMPTY"), "MISSING": context.secrets.get("MISSING")}
print("canary:", values["CANARY_PACKAGE"])
print(json.dumps({n: (None if v is None else ("empty" if v == "" else "set"))
                  for n, v in values.items()}))
print("shared is", "package" if values["SHARED"] == "shared-package-value" else "other")
"""
# What it prints on its second line when the platform, project and package secrets below are in.
SCOPES_SEEN = {"CANARY_PLATFORM": "set", "CANARY_PROJECT": "set", "CANARY_PACKAGE": "set",
               "SHARED": "set", "ONLY_PLATFORM": "set", "EMPTY": "empty", "MISSING": None}


def platform_secrets(canary: str) -> dict[str, Any]:
    return {"CANARY_PLATFORM": canary, "SHARED": "shared-platform-value",
            "ONLY_PLATFORM": "platform-only-value"}


def project_secrets(canary: str) -> dict[str, Any]:
    return {"CANARY_PROJECT": canary, "SHARED": "shared-project-value", "EMPTY": ""}


def package_secrets(canary: str) -> dict[str, Any]:
    return {"CANARY_PACKAGE": canary, "SHARED": "shared-package-value"}


def run_closed(dsn: str, run_id: str) -> bool:
    """The run is finished in the store and its key erased (never to be handed out again)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT finished_at, wrapped_key FROM run_keys WHERE run_id = %s",
                           (run_id,)).fetchone()
    return row is not None and row[0] is not None and row[1] is None


def is_settled(body: dict[str, Any]) -> bool:
    """The operator has judged this generation of the object (its Ready condition is about it)."""
    return any(c["type"] == "Ready" and c.get("observedGeneration") ==
               body["metadata"]["generation"]
               for c in (body.get("status") or {}).get("conditions") or [])


def is_finished(body: dict[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class ClusterView:
    """What both cluster tiers offer alike, over their own ``api``, ``get`` and ``wait_for``:
    the API groups, and waiting for an object to settle or an Execution to end (the real control
    plane's waits are longer: real controllers, containers)."""

    api: client.ApiClient
    settle_timeout: float = 60
    run_timeout: float = 90

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        raise NotImplementedError

    def ready(self, plural: str, namespace: str, name: str,
              timeout: float | None = None) -> dict[str, Any]:
        """The object once the operator has judged its current generation."""
        def check() -> dict[str, Any] | None:
            body = self.get(plural, namespace, name)
            return body if is_settled(body) else None
        found: dict[str, Any] = self.wait_for(check, f"{plural} {namespace}/{name} to settle",
                                              timeout or self.settle_timeout)
        return found

    def finished(self, namespace: str, name: str,
                 timeout: float | None = None) -> dict[str, Any]:
        """The Execution once it has ended."""
        def check() -> dict[str, Any] | None:
            body = self.get("executions", namespace, name)
            return body if is_finished(body) else None
        found: dict[str, Any] = self.wait_for(check, f"execution {namespace}/{name}",
                                              timeout or self.run_timeout)
        return found


#: A seed-like script (fx_ef and ferris_ef spellings, ferris argv) that prints which names it
#: received, and reads one more name dynamically: what least privilege delivers, shown.
LEAST_PRIVILEGE_SCRIPT = """\
import json, os, sys
from fx_ef import context
from ferris_ef import get_secret
print("DB NAME:", context.secrets.get("DB_NAME"))
print("DB PASS:", get_secret("DB_PASS"))
with open(os.environ["FX_BUNDLE"]) as f:
    print("bundle:", json.dumps(sorted(json.load(f)["secrets"])))
print("argv:", json.dumps(sorted(json.loads(sys.argv[1])["secrets"])))
name = "CANARY_" + "PLATFORM"  # a dynamic read: neither declared nor found
print("undelivered:", context.secrets.get(name))
"""
