"""Rendering and checking the install: the Helm chart, the kustomize base, their objects.

* :func:`find_tool` finds helm and kubectl (``$FX_HELM`` / ``$FX_KUBECTL``, ``.cache/tools`` where
  ``.ci/run`` puts them, then PATH);
* :func:`helm_template` and :func:`kustomize` render to a list of objects;
* :func:`validation_errors` validates every object: built-in kinds with ``kubernetes-validate
  --strict`` (its Python API), the custom resources the install makes against a schema of their
  own (:data:`CUSTOM_KINDS`), and anything else is an error, never silently passed;
* :func:`restricted_violations` checks a pod spec against the restricted Pod Security Standard
  (and a read-only root filesystem);
* :func:`permissions` expands RBAC rules into (apiGroup, resource, verb) triples, and
  :func:`rbac_authorizer` enforces them in the emulator for one bearer token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from support.emulator.access import ApiCall
from support.emulator.openapi import prune, to_json_schema

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "fx-operator"
RELEASE = "fx-operator"
NAMESPACE = "fx-system"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native sidecars) and the
#: newest kubernetes-validate knows: every object must be valid for both.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

JsonDict = dict[str, Any]


# --- tools ---------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """``$FX_<NAME>``, else ``.cache/tools/<name>`` (fetched by .ci/run), else PATH."""
    configured = os.environ.get(f"FX_{name.upper()}")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    cached = REPO / ".cache" / "tools" / name
    if os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which(name)


def run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; its stderr is in the error when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise ToolFailed(argv, done.returncode, done.stderr)
    return done


class ToolFailed(AssertionError):
    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}:\n{stderr}")
        self.stderr = stderr


def load_objects(text: str) -> list[JsonDict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(helm: str, values: Mapping[str, Any] | None = None, *,
                  chart: Path = CHART, extra: Iterable[str] = ()) -> list[JsonDict]:
    """``helm template`` of the chart with these values (release fx-operator in fx-system)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as file:
        json.dump(dict(values or {}), file)
        file.flush()
        done = run([helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE,
                    "--values", file.name, *extra])
    return load_objects(done.stdout)


def kustomize(kubectl: str, folder: Path) -> list[JsonDict]:
    return load_objects(run([kubectl, "kustomize", str(folder)]).stdout)


def find(objects: Iterable[JsonDict], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[JsonDict]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objects: Iterable[JsonDict], kind: str, name: str | None = None,
        namespace: str | None = None) -> JsonDict:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def identity(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


# --- validation ----------------------------------------------------------------------------------


class CustomResourceCheck:
    """Check a custom resource against its CRD's openAPIV3Schema as the API server would (CEL
    rules aside): schema errors, and fields the server would silently drop."""

    def __init__(self, crd_file: Path, kind: str) -> None:
        crds = [doc for doc in load_objects(crd_file.read_text(encoding="utf-8"))
                if doc["spec"]["names"]["kind"] == kind]
        assert len(crds) == 1, f"no CRD of kind {kind} in {crd_file}"
        spec = crds[0]["spec"]
        (version,) = spec["versions"]
        self.api_version = f"{spec['group']}/{version['name']}"
        self.structural = version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft4Validator(to_json_schema(self.structural))
        self.namespaced = spec["scope"] == "Namespaced"

    def __call__(self, obj: JsonDict) -> list[str]:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in self.validator.iter_errors(obj)]
        if prune(obj, self.structural, embedded=True) != obj:
            errors.append("fields the schema does not declare (the API server would drop them)")
        if obj.get("apiVersion") != self.api_version:
            errors.append(f"apiVersion {obj.get('apiVersion')} is not {self.api_version}")
        if bool(obj["metadata"].get("namespace")) != self.namespaced:
            errors.append("namespace given to a cluster-scoped object, or missing")
        return errors


def _service_monitor_errors(obj: JsonDict) -> list[str]:
    """prometheus-operator's CRD is not available offline: the fields this chart writes, checked
    by hand against its documented API (monitoring.coreos.com/v1, ServiceMonitorSpec)."""
    errors = []
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        errors.append(f"apiVersion {obj.get('apiVersion')}")
    spec = obj.get("spec") or {}
    known = {"endpoints", "selector", "namespaceSelector", "jobLabel", "targetLabels",
             "podTargetLabels", "sampleLimit"}
    errors += [f"spec.{key}: not a ServiceMonitor field" for key in set(spec) - known]
    if not (spec.get("selector") or {}).get("matchLabels"):
        errors.append("spec.selector.matchLabels: missing")
    endpoint_fields = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                       "relabelings", "metricRelabelings", "tlsConfig", "bearerTokenSecret"}
    for i, endpoint in enumerate(spec.get("endpoints") or [None]):
        if not isinstance(endpoint, dict) or not isinstance(endpoint.get("port"), str):
            errors.append(f"spec.endpoints[{i}]: a named port is required")
            continue
        errors += [f"spec.endpoints[{i}].{k}: not an Endpoint field"
                   for k in set(endpoint) - endpoint_fields]
        if endpoint.get("scheme", "http") not in ("http", "https"):
            errors.append(f"spec.endpoints[{i}].scheme: {endpoint['scheme']}")
    return errors


#: The custom resources the install makes, and how each is checked (kubernetes-validate knows
#: only the built-in kinds and CRDs themselves).
CUSTOM_KINDS: dict[tuple[str, str], Callable[[JsonDict], list[str]]] = {
    ("kopf.dev/v1", "ClusterKopfPeering"): CustomResourceCheck(
        CHART / "crds" / "kopf-peering.yaml", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"): CustomResourceCheck(
        CHART / "crds" / "kopf-peering.yaml", "KopfPeering"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _service_monitor_errors,
}


def validation_errors(objects: Iterable[JsonDict]) -> list[str]:
    """Every problem found in these objects, for each Kubernetes version in KUBE_VERSIONS."""
    errors: list[str] = []
    for obj in objects:
        key = (str(obj.get("apiVersion")), str(obj.get("kind")))
        if key in CUSTOM_KINDS:
            errors += [f"{identity(obj)}: {e}" for e in CUSTOM_KINDS[key](obj)]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{identity(obj)} (Kubernetes {version}): {path}: {e.message}")
            except SchemaNotFoundError as e:
                errors.append(f"{identity(obj)}: no schema, and not a known custom kind: "
                              f"{e.message}")
    return errors


# --- the restricted Pod Security Standard ---------------------------------------------------------

RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                     "persistentVolumeClaim", "projected", "secret"})
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                          "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                          "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """What in a pod spec breaks the restricted Pod Security Standard (baseline included), or
    leaves a container's root filesystem writable."""
    found: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field} is set")
    for volume in pod.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: type {sorted(types)} not allowed")
    pod_context = pod.get("securityContext") or {}
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')} is not a safe one")
    found += _context_violations("pod", pod_context, pod_level=True)
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or []),
                  *(pod.get("ephemeralContainers") or [])]
    if not containers:
        found.append("no containers")
    for container in containers:
        name = f"container {container['name']}"
        context = container.get("securityContext") or {}
        found += _context_violations(name, context, pod_level=False)
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        user = context.get("runAsUser", pod_context.get("runAsUser"))
        if not isinstance(user, int) or user <= 0:
            found.append(f"{name}: no non-root runAsUser ({user!r})")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {})
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp.get('type')!r}")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {context['procMount']}")
        if context.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: the root filesystem is writable")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
    return found


def _context_violations(where: str, context: Mapping[str, Any], *, pod_level: bool) -> list[str]:
    found = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"{where}: hostProcess")
    if context.get("runAsUser") == 0:
        found.append(f"{where}: runAsUser 0")
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append(f"{where}: seccompProfile Unconfined")
    if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.append(f"{where}: appArmorProfile Unconfined")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where}: seLinuxOptions {selinux}")
    if pod_level and context.get("runAsNonRoot") is False:
        found.append(f"{where}: runAsNonRoot false")
    return found


def pod_specs(objects: Iterable[JsonDict]) -> dict[str, JsonDict]:
    """The pod spec of every workload among the objects, by the workload's identity."""
    specs = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            specs[identity(obj)] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            specs[identity(obj)] = obj["spec"]
        elif obj["kind"] == "CronJob":
            specs[identity(obj)] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


# --- RBAC ----------------------------------------------------------------------------------------

Permission = tuple[str, str, str]  # apiGroup, resource (or resource/subresource), verb


def permissions(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    """Every (group, resource, verb) the rules grant; wildcards and resourceNames are refused
    (this chart uses neither)."""
    granted: set[Permission] = set()
    for rule in rules:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"a wildcard in {rule}"
                    granted.add((group, resource, verb))
    return granted


def rbac_authorizer(token: str, cluster_wide: set[Permission],
                    by_namespace: Mapping[str, set[Permission]] | None = None,
                    ) -> Callable[[ApiCall], bool]:
    """An authorizer for :attr:`KubeEmulator.authorizer`: the requests made with ``token`` get
    what a ClusterRole (``cluster_wide``, through a ClusterRoleBinding) and Roles (``by_namespace``,
    through RoleBindings) grant, as a real server's RBAC does; discovery is everyone's (the
    default ClusterRole system:discovery); other tokens (the tests' own) may do anything."""
    namespaced = dict(by_namespace or {})

    def allowed(call: ApiCall) -> bool:
        if call.token != token:
            return True
        if not call.resource:
            return call.verb == "get"
        wanted = (call.group, call.rbac_resource, call.verb)
        return wanted in cluster_wide or (
            call.namespaced and call.namespace is not None
            and wanted in namespaced.get(call.namespace, set()))

    return allowed
