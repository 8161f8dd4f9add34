"""The chart's RBAC rules grant exactly what the operator uses.

The operator (kopf, its services, the broker) runs end to end against the emulated API server
with a bearer token of its own, and the emulator records every request it makes (``ApiCall``: the
verb, group, resource and namespace an authorizer sees). One scenario covers what the operator
does: its start (sealing key), Packages (created, then changed: the scripts' ConfigMap is
patched), ScopedSecrets at three scopes (one deleted: kopf's finalizer, the removal handler), an
Execution run to the end (Job, Secret, CA ConfigMap, Events; the broker's TokenReview and pod
read), and Executions whose Package admission must read from the API because its watch has not
shown it Ready: one missing, one refused, one not published yet (admission retries, and kopf
records its progress on the Execution). It runs cluster-wide (the chart's ClusterRole) and
watching given namespaces (its Roles and small ClusterRole); a shorter one runs with kopf peering
(operator.replicas > 1). Every recorded call must be allowed, and every rule used, or named in
NOT_EXERCISED with the reason it is not.

The emulator answers nothing with 403 while recording; a real server does. The last tests
enforce the chart's rules in the emulator (``rbac_authorizer``), as a real server would: with
them an Execution of a missing Package gets its PackageNotFound (the ClusterRole once lacked
``get packages``, and a real server answered admission 403), and without a rule the operator
needs, the Execution fails with the refusal in its status and an Event instead of being retried
without a status for ten minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fx_operator.domain.api_group import GROUP, VERSION
from fx_operator.domain.resources import Package
from fx_operator.handlers.executions import FORBIDDEN_TRIES
from fx_operator.services.packages import PackageService
from fx_operator.storage.kube import KubeError
from kubernetes import client
from kubernetes import config as kubernetes_config
from support.clock import schedule_clock
from support.cluster import PLATFORM_NAMESPACE, Cluster, cluster
from support.kube_emulator import ApiCall, KubeEmulator, KubeEmulatorServer
from support.manifests import (
    CHART,
    Permission,
    find,
    helm_template,
    one,
    permissions,
    rbac_authorizer,
)
from support.postgres import PostgresServer

OPERATOR_TOKEN = "fx-operator-under-test"
WATCHED = ("team-a", PLATFORM_NAMESPACE)

#: Rules the scenario cannot reach, and why they are needed all the same.
NOT_EXERCISED: dict[Permission, str] = {
    ("", "secrets", "update"): "a run's sealed bundle is replaced only when a restarted operator "
                               "finds the one it made before (create answers 409)",
    ("batch", "jobs", "get"): "an Execution's Job is read only when it is admitted again "
                              "(a restarted operator resuming it)",
    **{(GROUP, f"{owner}/finalizers", "update"):
       "no request needs it: the OwnerReferencesPermissionEnforcement admission plugin (not in "
       "a default kube-apiserver; on in OpenShift) checks it when the operator creates an object "
       f"whose ownerReference to a {owner[:-1]} sets blockOwnerDeletion"
       for owner in ("packages", "executions")},
}
#: Rules of the namespaced mode only (the scenario runs it too; listed for the cluster-wide one).
NAMESPACED_MODE_ONLY: set[Permission] = {("", "namespaces", "list"), ("", "namespaces", "watch")}
#: kopf's peering (operator.replicas > 1): keep-alives patched into the peering object, which
#: kopf lists and watches. Recorded cluster-wide (ClusterKopfPeering); watching namespaces, kopf
#: does the same with the KopfPeering of each.
PEERING_VERBS = ("list", "watch", "patch")
PEERING = {("kopf.dev", f"{kind}kopfpeerings", verb) for kind in ("cluster", "")
           for verb in PEERING_VERBS}
PEERING_NAME = "fx-operator"

SCRIPT = "from fx_ef import context\nprint('token:', context.secrets.get('TOKEN'))\n"
#: A Package whose publication waits (see _held_package): an Execution of it meets a Package
#: not published yet, and admission retries.
HELD = "rbac-held"


def _gone(k8s: Cluster, plural: str, namespace: str, name: str) -> bool:
    try:
        k8s.get(plural, namespace, name)
    except client.ApiException as e:
        return bool(e.status == 404)
    return False


def _scenario(k8s: Cluster, namespace: str, release: threading.Event) -> None:
    """Everything the operator does, once (see the module's docstring)."""
    k8s.sealed_secret(PLATFORM_NAMESPACE, "platform", {"SHARED": "platform-value"}, "platform")
    k8s.sealed_secret(namespace, "project", {"SHARED": "project-value"}, "project")
    k8s.package(namespace, "rbac", {"main.py": SCRIPT})
    k8s.sealed_secret(namespace, "rbac-secrets", {"TOKEN": "package-value"}, "package",
                      package="rbac")
    for ns, plural, name in [(PLATFORM_NAMESPACE, "scopedsecrets", "platform"),
                             (namespace, "scopedsecrets", "project"),
                             (namespace, "scopedsecrets", "rbac-secrets"),
                             (namespace, "packages", "rbac")]:
        k8s.ready(plural, ns, name)
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "packages", "rbac", {
        "spec": {"scripts": [{"name": "main.py", "content": SCRIPT + "print('again')\n"}]}})
    k8s.ready("packages", namespace, "rbac")
    k8s.execution(namespace, "rbac-1", "rbac")
    status = k8s.finished(namespace, "rbac-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert "token: ***" in status["result"]["outputTail"]
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "scopedsecrets",
                                               "rbac-secrets")
    k8s.wait_for(lambda: _gone(k8s, "scopedsecrets", namespace, "rbac-secrets"),
                 "the ScopedSecret's finalizer")
    _packages_read_from_the_api(k8s, namespace, release)
    _schedule(k8s, namespace)


def _schedule(k8s: Cluster, namespace: str) -> None:
    """A Schedule makes its Execution (create), and prunes it once finished (delete)."""
    with schedule_clock() as clock:
        k8s.apply("schedules", namespace, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Schedule",
            "metadata": {"name": "rbac-every-minute", "namespace": namespace},
            "spec": {"package": "rbac", "schedule": "* * * * *",
                     "successfulExecutionsHistoryLimit": 0}})
        minute = clock.just_after_next_minute()
        made = f"rbac-every-minute-{int(minute.timestamp()) // 60}"
        k8s.events(namespace, "rbac-every-minute", "ExecutionCreated")
        k8s.wait_for(lambda: _gone(k8s, "executions", namespace, made),
                     "the history limit (0) to prune it once finished")


def _packages_read_from_the_api(k8s: Cluster, namespace: str, release: threading.Event) -> None:
    """Admission reads the Package from the API (get) when its watch has not shown it Ready:
    missing, refused, or not published yet (then admission is retried, and kopf patches its
    progress into the Execution's annotations)."""
    k8s.execution(namespace, "rbac-missing", "does-not-exist")
    k8s.package(namespace, "rbac-refused", {"a.py": "1", "b.py": "2"})  # which one to run?
    k8s.ready("packages", namespace, "rbac-refused")
    k8s.execution(namespace, "rbac-refused-1", "rbac-refused")
    k8s.package(namespace, HELD, {"main.py": SCRIPT})
    k8s.execution(namespace, "rbac-held-1", HELD)
    k8s.wait_for(lambda: any(key.startswith("fx.dev/admission") for key in (
        k8s.get("executions", namespace, "rbac-held-1")["metadata"].get("annotations") or {})),
        "admission to be retried (the Package is not published yet)")
    release.set()
    for name, phase, reason in [("rbac-missing", "Failed", "PackageNotFound"),
                                ("rbac-refused-1", "Failed", "PackageNotReady"),
                                ("rbac-held-1", "Succeeded", "Completed")]:
        status = k8s.finished(namespace, name)["status"]
        assert (status["phase"], _reason(status, "Succeeded")) == (phase, reason), status


def _reason(status: dict[str, Any], condition: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or []
                 if c["type"] == condition), None)


@contextlib.contextmanager
def _held_package() -> Iterator[threading.Event]:
    """The operator publishes the Package HELD only once the event yielded is set."""
    release = threading.Event()
    reconcile = PackageService.reconcile

    async def held(self: PackageService, body: Package) -> Any:
        if body.metadata.name == HELD:
            await asyncio.to_thread(release.wait, 60)
        return await reconcile(self, body)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(PackageService, "reconcile", held)
        try:
            yield release
        finally:
            release.set()


def _peered(k8s: Cluster) -> None:
    """The operator joins the peering, then handles a Package (it is not paused)."""
    def keepalive() -> bool:
        peering = k8s.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                                       PEERING_NAME)
        return any(entry.get("priority") == 100
                   for entry in (peering.get("status") or {}).values())
    k8s.wait_for(keepalive, "the operator's keep-alive")
    k8s.package("team-a", "peered", {"main.py": SCRIPT})
    k8s.ready("packages", "team-a", "peered")


def _record(tmp_path: Path, dsn: str, mode: str) -> list[ApiCall]:
    emulator = KubeEmulator(recorded_calls=[])
    peering = None
    if mode == "peering":
        emulator.load_crds(CHART / "crds" / "kopf-peering.yaml")
        emulator.create("kopf.dev/v1/clusterkopfpeerings", {"metadata": {"name": PEERING_NAME}})
        peering = PEERING_NAME
    with _held_package() as release, \
            cluster(tmp_path, dsn, emulator=emulator, operator_token=OPERATOR_TOKEN,
                    watched=WATCHED if mode == "namespaced" else (), peering=peering) as k8s:
        if peering:
            _peered(k8s)
        else:
            _scenario(k8s, "team-a", release)
        calls = k8s.server.call(lambda: list(emulator.recorded_calls or []))
    assert {c.token for c in calls} >= {OPERATOR_TOKEN, k8s.server.token}
    return [c for c in calls if c.token == OPERATOR_TOKEN]


@pytest.fixture(scope="module")
def recordings(helm: str, tmp_path_factory: pytest.TempPathFactory,
               postgres_server: PostgresServer) -> Iterator[dict[str, list[ApiCall]]]:
    """The operator's calls, cluster-wide and watching WATCHED (helm first: without it there
    is nothing to compare them with)."""
    recorded = {}
    for mode in ("cluster-wide", "namespaced", "peering"):
        database = f"rbac_{mode.replace('-', '_')}"
        dsn = postgres_server.create_database(database)
        try:
            recorded[mode] = _record(tmp_path_factory.mktemp(mode), dsn, mode)
        finally:
            postgres_server.drop_database(database)
    yield recorded


def _needed(calls: list[ApiCall]) -> set[Permission]:
    return {(c.group, c.rbac_resource, c.verb) for c in calls if c.resource}


def _shown(permissions_: set[Permission]) -> list[str]:
    return sorted(f"{verb} {resource}.{group or 'core'}" for group, resource, verb in permissions_)


def test_the_recorder_sees_requests_as_rbac_does(tmp_path: Path) -> None:
    """Each kind of request, as the verb, resource and namespace an RBAC rule must name."""
    emulator = KubeEmulator(recorded_calls=[])
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        server.write_kubeconfig(tmp_path / "other", token="other-client")
        api = server.api_client()
        core = client.CoreV1Api(api)
        body = {"metadata": {"name": "cm"}, "data": {"a": "1"}}
        core.create_namespaced_config_map("default", body)
        core.read_namespaced_config_map("cm", "default")
        core.list_config_map_for_all_namespaces()
        watch = core.list_namespaced_config_map("default", watch=True, timeout_seconds=0,
                                                _preload_content=False)
        watch.read()
        watch.release_conn()
        core.replace_namespaced_config_map("cm", "default", body)
        core.patch_namespaced_config_map("cm", "default", {"data": {"b": "2"}})
        core.delete_namespaced_config_map("cm", "default")
        core.delete_collection_namespaced_config_map("default")
        core.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "i"}]}})
        core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"}})
        core.list_namespace()
        with contextlib.suppress(client.ApiException):  # recorded, whatever the answer
            client.CoreApi(api).get_api_versions()
        other = kubernetes_config.new_client_from_config(config_file=str(tmp_path / "other"))
        client.CoreV1Api(other).read_namespace("default")
        calls = server.call(lambda: list(emulator.recorded_calls or []))
    seen = [(c.verb, c.rbac_resource, c.namespace, c.namespaced) for c in calls
            if c.token == server.token]
    assert seen == [
        ("create", "configmaps", "default", True), ("get", "configmaps", "default", True),
        ("list", "configmaps", None, True), ("watch", "configmaps", "default", True),
        ("update", "configmaps", "default", True), ("patch", "configmaps", "default", True),
        ("delete", "configmaps", "default", True),
        ("deletecollection", "configmaps", "default", True),
        ("create", "pods", "default", True), ("patch", "pods/status", "default", True),
        ("list", "namespaces", None, False), ("get", "", None, False)]
    assert calls[-2].path.rstrip("/") == "/api"
    assert [(c.verb, c.resource, c.namespace) for c in calls if c.token == "other-client"] == [
        ("get", "namespaces", None)]


def test_the_scenario_reached_every_part_of_the_operator(
        recordings: dict[str, list[ApiCall]]) -> None:
    for mode in ("cluster-wide", "namespaced"):
        for expected in [("authentication.k8s.io", "tokenreviews", "create"),  # the broker
                         ("", "pods", "get"),  # the broker
                         ("batch", "jobs", "create"), ("", "secrets", "create"),
                         ("", "configmaps", "patch"), ("fx.dev", "scopedsecrets", "patch"),
                         ("fx.dev", "executions/status", "patch"), ("", "events", "create"),
                         ("fx.dev", "packages", "get"),  # admission, Package not Ready
                         ("fx.dev", "executions", "patch")]:  # kopf, admission retried
            assert expected in _needed(recordings[mode]), (mode, expected)


def test_only_discovery_outside_resources(recordings: dict[str, list[ApiCall]]) -> None:
    """Non-resource URLs: only discovery, which every authenticated user may read (the default
    ClusterRole system:discovery), so the chart grants none."""
    for calls in recordings.values():
        paths = {c.path for c in calls if not c.resource}
        assert all(p in ("/api", "/apis", "/version") or p.startswith(("/api/", "/apis/"))
                   for p in paths), paths
        assert {c.verb for c in calls if not c.resource} <= {"get"}


def test_the_cluster_role_grants_exactly_the_calls_made(
        helm: str, recordings: dict[str, list[ApiCall]]) -> None:
    granted = permissions(one(helm_template(helm), "ClusterRole")["rules"])
    needed = _needed(recordings["cluster-wide"])
    assert _shown(needed - granted) == [], "calls the ClusterRole does not allow"
    unused = granted - needed - set(NOT_EXERCISED)
    assert _shown(unused) == [], "rules nothing used (add the reason to NOT_EXERCISED?)"
    assert set(NOT_EXERCISED) <= granted


def test_the_roles_grant_exactly_the_calls_made(
        helm: str, recordings: dict[str, list[ApiCall]]) -> None:
    objects = helm_template(helm, {"operator": {"watchNamespaces": ["team-a"]}})
    roles = {r["metadata"]["namespace"]: permissions(r["rules"]) for r in find(objects, "Role")}
    assert sorted(roles) == sorted(WATCHED)
    cluster_role = permissions(one(objects, "ClusterRole")["rules"])
    calls = recordings["namespaced"]
    missing = set()
    for call in (c for c in calls if c.resource):
        wanted = (call.group, call.rbac_resource, call.verb)
        if call.namespaced:
            assert call.namespace in WATCHED, f"a call outside the watched namespaces: {call}"
            if wanted not in roles[call.namespace]:
                missing.add(wanted)
        elif wanted not in cluster_role:
            missing.add(wanted)
    assert _shown(missing) == [], "calls the Roles and ClusterRole do not allow"
    needed = _needed(calls)
    for namespace, granted in roles.items():
        assert _shown(granted - needed - set(NOT_EXERCISED)) == [], namespace
    assert _shown(cluster_role - needed) == []
    assert needed >= NAMESPACED_MODE_ONLY
    assert not NAMESPACED_MODE_ONLY & _needed(recordings["cluster-wide"])


def test_the_peering_rules_grant_exactly_the_calls_made(
        helm: str, recordings: dict[str, list[ApiCall]]) -> None:
    external = {"mode": "external", "external": {"existingSecret": "db"}}
    granted = permissions(one(helm_template(helm, {"operator": {"replicas": 2},
                                                   "database": external}), "ClusterRole")["rules"])
    needed = _needed(recordings["peering"])
    assert _shown(needed - granted) == [], "calls the ClusterRole does not allow"
    peering_needed = {p for p in needed if p[0] == "kopf.dev"}
    assert peering_needed == {("kopf.dev", "clusterkopfpeerings", v) for v in PEERING_VERBS}
    assert {p for p in granted if p[0] == "kopf.dev"} == peering_needed
    objects = helm_template(helm, {"operator": {"replicas": 2, "watchNamespaces": ["team-a"]},
                                   "database": external})
    for role in find(objects, "Role"):
        assert {p for p in permissions(role["rules"]) if p[0] == "kopf.dev"} == {
            ("kopf.dev", "kopfpeerings", v) for v in PEERING_VERBS}


def test_the_operator_never_reads_secrets_and_grants_itself_nothing(helm: str) -> None:
    """What the chart must never grant, in any mode: reading Secrets (the sealed bundles are
    written, never read back), deleting anything but a Schedule's own Executions, and RBAC or
    impersonation verbs."""
    modes: list[dict[str, Any]] = [
        {}, {"operator": {"watchNamespaces": ["team-a"]}},
        {"operator": {"replicas": 2}, "database": {"mode": "external",
                                                   "external": {"existingSecret": "db"}}}]
    for values in modes:
        objects = helm_template(helm, values)
        granted: set[Permission] = set()
        for role in [*find(objects, "ClusterRole"), *find(objects, "Role")]:
            granted |= permissions(role["rules"])
        assert not {p for p in granted if p[1] == "secrets" and p[2] in ("get", "list", "watch")}
        assert {p for p in granted if p[2] in ("delete", "deletecollection", "escalate",
                                               "bind", "impersonate", "*")} == {
            (GROUP, "executions", "delete")}  # a Schedule's: Replace, and its history limits
        assert granted - PEERING - NAMESPACED_MODE_ONLY <= \
            permissions(one(helm_template(helm), "ClusterRole")["rules"])


# --- the rules enforced, as a real server does ---------------------------------------------------


@contextlib.contextmanager
def _enforcing(tmp_path: Path, postgres_server: PostgresServer, database: str,
               granted: set[Permission]) -> Iterator[tuple[Cluster, KubeEmulator]]:
    """The operator under RBAC, cluster-wide: its requests get what ``granted`` allows (its
    ClusterRole), the rest a real server's 403."""
    emulator = KubeEmulator(recorded_calls=[],
                            authorizer=rbac_authorizer(OPERATOR_TOKEN, granted))
    emulator.register_token(OPERATOR_TOKEN, namespace="fx-system", service_account="fx-operator")
    dsn = postgres_server.create_database(database)
    try:
        with cluster(tmp_path, dsn, emulator=emulator, operator_token=OPERATOR_TOKEN) as k8s:
            yield k8s, emulator
    finally:
        postgres_server.drop_database(database)


def _forbidden_calls(k8s: Cluster, emulator: KubeEmulator) -> list[ApiCall]:
    authorize = emulator.authorizer
    assert authorize is not None
    return [c for c in k8s.server.call(lambda: list(emulator.recorded_calls or []))
            if not authorize(c)]


def test_under_the_charts_rules_an_execution_of_a_missing_package_says_so(
        helm: str, tmp_path: Path, postgres_server: PostgresServer) -> None:
    """What a real server did to the chart that lacked ``get packages``: admission's read of the
    Package answered 403, and the Execution got no status."""
    granted = permissions(one(helm_template(helm), "ClusterRole")["rules"])
    with _enforcing(tmp_path, postgres_server, "rbac_enforced", granted) as (k8s, emulator):
        k8s.execution("team-a", "enforced-missing", "does-not-exist")
        status = k8s.finished("team-a", "enforced-missing")["status"]
        assert (status["phase"], _reason(status, "Succeeded")) == ("Failed", "PackageNotFound")
        assert _forbidden_calls(k8s, emulator) == []


def test_a_call_the_rbac_forbids_fails_the_execution_with_the_refusal(
        helm: str, tmp_path: Path, postgres_server: PostgresServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule missing (here ``get packages``, as the chart once lacked it) is reported on the
    Execution after a few tries: phase Failed, reason ApiError with the server's refusal, and a
    Warning Event; not ten minutes of retries without a status."""
    monkeypatch.setattr(KubeError, "retry_after", 1)  # the tries' delay: 10 s
    granted = permissions(one(helm_template(helm), "ClusterRole")["rules"]) - {
        (GROUP, "packages", "get")}
    with _enforcing(tmp_path, postgres_server, "rbac_forbidden", granted) as (k8s, emulator):
        k8s.execution("team-a", "forbidden-1", "does-not-exist")
        status = k8s.finished("team-a", "forbidden-1", timeout=60)["status"]
        refusal = ('packages.fx.dev "does-not-exist" is forbidden: User '
                   '"system:serviceaccount:fx-system:fx-operator" cannot get resource "packages" '
                   'in API group "fx.dev" in the namespace "team-a"')
        assert status["phase"] == "Failed"
        conditions = {c["type"]: c for c in status["conditions"]}
        for kind in ("Ready", "Succeeded"):
            assert (conditions[kind]["status"], conditions[kind]["reason"]) == ("False",
                                                                                "ApiError")
            assert refusal in conditions[kind]["message"], conditions[kind]
        events = k8s.events("team-a", "forbidden-1", "ApiError")
        assert any(refusal in e["message"] for e in events if e["reason"] == "ApiError")
        forbidden = _forbidden_calls(k8s, emulator)
        assert [(c.verb, c.rbac_resource, c.namespace) for c in forbidden] == \
            [("get", "packages", "team-a")] * FORBIDDEN_TRIES
