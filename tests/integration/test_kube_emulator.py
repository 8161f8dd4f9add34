"""The Kubernetes API emulator over real HTTP: the official client and a tiny kopf operator.

Each test gets its own emulator on its own port (a few milliseconds to start); the kopf tests run
the operator with ``KopfRunner`` in a thread of its own, next to the emulator's thread.
"""

from __future__ import annotations

import base64
import collections
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import kubernetes.client
import pytest
from kopf.testing import KopfRunner
from kubernetes import watch
from kubernetes.client import ApiException, BatchV1Api, CoreV1Api, CustomObjectsApi
from support.kube_emulator import KubeEmulator, KubeEmulatorServer, TokenIdentity
from support.waiting import wait_for

CRDS = Path(__file__).resolve().parents[1] / "support" / "testdata" / "crds"
GROUP, VERSION, PLURAL = "emulator.fx.test", "v1", "widgets"
NS = "test"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"  # kopf's default


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1, **spec}}


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


@pytest.fixture
def emulator() -> KubeEmulator:
    emulator = KubeEmulator()
    emulator.load_crds(CRDS)
    return emulator


@pytest.fixture
def server(emulator: KubeEmulator, tmp_path: Path) -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        yield server


@pytest.fixture
def api(server: KubeEmulatorServer) -> Iterator[kubernetes.client.ApiClient]:
    client = server.api_client()
    CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
    yield client
    client.close()


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> CoreV1Api:
    return CoreV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(api)


def create_widget(custom: CustomObjectsApi, name: str, **spec: Any) -> dict[str, Any]:
    created: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, widget(name, **spec))
    return created


def get_widget(custom: CustomObjectsApi, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    return found


def patch_widget(custom: CustomObjectsApi, name: str, patch: Any, **kwargs: Any) -> dict[str, Any]:
    patched: dict[str, Any] = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, name, patch, **kwargs)
    return patched


# --- metadata, lists, watches ---------------------------------------------------------------------

def test_created_objects_get_server_metadata(core: CoreV1Api, custom: CustomObjectsApi) -> None:
    first = core.create_namespaced_config_map(NS, {"metadata": {"generateName": "cm-"}})
    second = create_widget(custom, "w1")

    assert first.metadata.name.startswith("cm-") and len(first.metadata.name) == len("cm-") + 5
    assert first.metadata.uid and first.metadata.creation_timestamp is not None
    assert int(second["metadata"]["resourceVersion"]) > int(first.metadata.resource_version)
    assert second["metadata"]["generation"] == 1
    assert second["metadata"]["uid"] != first.metadata.uid


def test_generation_moves_with_the_spec_only(custom: CustomObjectsApi) -> None:
    created = create_widget(custom, "w1")

    labelled = patch_widget(custom, "w1", {"metadata": {"labels": {"a": "b"}}})
    resized = patch_widget(custom, "w1", {"spec": {"size": 5}})
    unchanged = patch_widget(custom, "w1", {"spec": {"size": 5}})

    assert labelled["metadata"]["generation"] == 1
    assert resized["metadata"]["generation"] == 2
    versions = [int(o["metadata"]["resourceVersion"]) for o in (created, labelled, resized)]
    assert versions == sorted(set(versions))
    assert unchanged["metadata"]["resourceVersion"] == resized["metadata"]["resourceVersion"]


def test_lists_carry_kind_and_current_resource_version(core: CoreV1Api,
                                                       custom: CustomObjectsApi) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    last = create_widget(custom, "w1")

    configmaps = core.list_namespaced_config_map(NS)
    widgets = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)

    assert configmaps.kind == "ConfigMapList" and configmaps.api_version == "v1"
    assert widgets["kind"] == "WidgetList" and widgets["apiVersion"] == f"{GROUP}/{VERSION}"
    assert configmaps.metadata.resource_version == last["metadata"]["resourceVersion"]


def test_namespaces_are_listable_and_required(core: CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", NS} <= names
    assert core.read_namespace(NS).status.phase == "Active"

    with pytest.raises(ApiException) as missing:
        core.create_namespaced_config_map("absent", {"metadata": {"name": "a"}})
    assert missing.value.status == 404


def test_watch_from_a_resource_version_replays_only_newer_events(core: CoreV1Api) -> None:
    old = core.create_namespaced_config_map(NS, {"metadata": {"name": "old"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "new"}})
    core.patch_namespaced_config_map("old", NS, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("new", NS)

    stream = watch.Watch().stream(core.list_namespaced_config_map, NS,
                                  resource_version=old.metadata.resource_version,
                                  timeout_seconds=1)
    events = [(event["type"], event["object"].metadata.name) for event in stream]

    # The stream ended by itself: timeoutSeconds is honoured.
    assert events == [("ADDED", "new"), ("MODIFIED", "old"), ("DELETED", "new")]


def test_watch_older_than_the_history_is_gone(tmp_path: Path) -> None:
    with KubeEmulatorServer(KubeEmulator(history_size=2), kubeconfig=tmp_path / "kc") as server:
        client = server.api_client()
        core = CoreV1Api(client)
        first = core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
        for value in "xyz":
            core.patch_namespaced_config_map("a", "default", {"data": {"k": value}})

        with pytest.raises(ApiException) as gone:
            list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                      resource_version=first.metadata.resource_version,
                                      timeout_seconds=1))
        client.close()

    assert gone.value.status == 410


def test_label_and_field_selectors(core: CoreV1Api) -> None:
    for name, labels in {"a": {"app": "web", "tier": "front"}, "b": {"app": "web", "tier": "db"},
                         "c": {"app": "batch"}, "d": {}}.items():
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(NS, **kwargs).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,tier!=db") == ["a"]
    assert names(label_selector="app in (web, batch),tier notin (front)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!app") == ["d"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.name!=c,metadata.namespace=test") == ["a", "b", "d"]
    with pytest.raises(ApiException) as bad:
        names(label_selector="app in web")
    assert bad.value.status == 400


def test_watch_turns_selector_transitions_into_added_and_deleted(core: CoreV1Api) -> None:
    start = core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", NS, {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_config_map("a", NS, {"metadata": {"labels": {"app": "batch"}}})

    stream = watch.Watch().stream(core.list_namespaced_config_map, NS, label_selector="app=web",
                                  resource_version=start.metadata.resource_version,
                                  timeout_seconds=10)

    assert [event["type"] for _, event in zip(range(2), stream, strict=False)] == [
        "ADDED", "DELETED"]


# --- writes: conflicts, patches, PUT, /status, schemas --------------------------------------------

def test_stale_writes_conflict(custom: CustomObjectsApi) -> None:
    created = create_widget(custom, "w1")
    patch_widget(custom, "w1", {"spec": {"size": 2}})
    stale = created["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as merge:
        patch_widget(custom, "w1", {"metadata": {"resourceVersion": stale}, "spec": {"size": 3}})
    with pytest.raises(ApiException) as put:
        custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1", created)
    with pytest.raises(ApiException) as again:
        create_widget(custom, "w1")

    assert (merge.value.status, status_of(merge)["reason"]) == (409, "Conflict")
    assert (put.value.status, status_of(put)["reason"]) == (409, "Conflict")
    assert (again.value.status, status_of(again)["reason"]) == (409, "AlreadyExists")
    assert get_widget(custom, "w1")["spec"]["size"] == 2


def test_failed_json_patch_test_is_unprocessable(custom: CustomObjectsApi) -> None:
    created = create_widget(custom, "w1")
    patch_widget(custom, "w1", {"metadata": {"labels": {"moved": "on"}}})
    ops = [{"op": "test", "path": "/metadata/resourceVersion",
            "value": created["metadata"]["resourceVersion"]},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]

    with pytest.raises(ApiException) as failed:
        patch_widget(custom, "w1", ops, _content_type="application/json-patch+json")

    assert failed.value.status == 422
    assert "finalizers" not in get_widget(custom, "w1")["metadata"]


def test_put_replaces_the_object(custom: CustomObjectsApi) -> None:
    current = create_widget(custom, "w1", tags={"a": "1"})
    current["spec"] = {"size": 7}

    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1", current)

    assert replaced["spec"] == {"size": 7, "colour": "red"}  # tags gone, default re-applied
    assert replaced["metadata"]["generation"] == 2


def test_status_is_written_through_its_subresource_only(custom: CustomObjectsApi) -> None:
    create_widget(custom, "w1")

    through_main = patch_widget(custom, "w1", {"status": {"phase": "Lost"}})
    through_status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "w1", {"status": {"phase": "Ready"}, "spec": {"size": 9}})
    created_with_status = custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, {**widget("w2"), "status": {"phase": "Fake"}})

    assert "status" not in through_main
    assert through_status["status"] == {"phase": "Ready"}
    assert through_status["spec"]["size"] == 1
    assert through_status["metadata"]["generation"] == 1
    assert "status" not in created_with_status


def test_schema_violations_are_rejected_naming_the_field(custom: CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as wrong_type:
        create_widget(custom, "w1", size="big")
    with pytest.raises(ApiException) as missing:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                               {**widget("w2"), "spec": {"colour": "red"}})
    with pytest.raises(ApiException) as not_in_enum:
        create_widget(custom, "w3", colour="purple")
    created = create_widget(custom, "w4", port="http", unknown="pruned")
    with pytest.raises(ApiException) as patched_wrong:
        patch_widget(custom, "w4", {"spec": {"size": 0}})

    assert wrong_type.value.status == 422
    invalid = status_of(wrong_type)
    assert invalid["kind"] == "Status" and invalid["reason"] == "Invalid"
    assert invalid["message"].startswith('Widget.emulator.fx.test "w1" is invalid: spec.size:')
    assert invalid["details"]["causes"][0]["field"] == "spec.size"
    assert status_of(missing)["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"}]
    assert status_of(not_in_enum)["details"]["causes"][0]["field"] == "spec.colour"
    assert created["spec"] == {"size": 1, "port": "http", "colour": "red"}
    assert status_of(patched_wrong)["details"]["causes"][0]["field"] == "spec.size"


def test_metadata_is_validated_for_every_kind(core: CoreV1Api) -> None:
    with pytest.raises(ApiException) as bad_name:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "Not_A_Name"}})
    with pytest.raises(ApiException) as bad_label:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "a",
                                                            "labels": {"k": "no spaces"}}})
    with pytest.raises(ApiException) as bad_owner:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "a", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": ""}]}})

    assert [status_of(e)["details"]["causes"][0]["field"] for e in (bad_name, bad_label)] == [
        "metadata.name", "metadata.labels"]
    assert status_of(bad_owner)["details"]["causes"][0]["field"] == "metadata.ownerReferences.uid"


def test_secret_string_data_becomes_base64_data(core: CoreV1Api) -> None:
    secret = core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "data": {
        "kept": base64.b64encode(b"old").decode()}, "stringData": {"plain": "text"}})

    assert secret.string_data is None
    assert {k: base64.b64decode(v) for k, v in secret.data.items()} == {
        "kept": b"old", "plain": b"text"}


# --- deletion: finalizers, garbage collection -----------------------------------------------------

def test_finalizers_hold_deletion_until_removed(custom: CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
        **widget("w1"), "metadata": {"name": "w1", "finalizers": ["test/hold"]}})

    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1")
    marked = get_widget(custom, "w1")
    with pytest.raises(ApiException) as forbidden:
        patch_widget(custom, "w1", {"metadata": {"finalizers": ["test/hold", "test/more"]}})
    patch_widget(custom, "w1", {"metadata": {"finalizers": None}})

    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["uid"] == created["metadata"]["uid"]
    assert forbidden.value.status == 422
    with pytest.raises(ApiException) as gone:
        get_widget(custom, "w1")
    assert gone.value.status == 404


def test_owned_objects_are_collected_with_their_owner(api: kubernetes.client.ApiClient,
                                                      custom: CustomObjectsApi,
                                                      core: CoreV1Api) -> None:
    owner = create_widget(custom, "w1")
    reference = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": "w1",
                 "uid": owner["metadata"]["uid"], "controller": True}
    job = {"metadata": {"name": "j1", "ownerReferences": [reference]},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    BatchV1Api(api).create_namespaced_job(NS, job)
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "other-uid"}
    core.create_namespaced_config_map(NS, {"metadata": {"name": "shared",
                                                        "ownerReferences": [reference, other]}})

    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1")

    assert BatchV1Api(api).list_namespaced_job(NS).items == []
    shared = core.read_namespaced_config_map("shared", NS)
    assert [ref.uid for ref in shared.metadata.owner_references] == ["other-uid"]


def test_orphan_propagation_keeps_dependents(core: CoreV1Api, custom: CustomObjectsApi) -> None:
    owner = create_widget(custom, "w1")
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cm", "ownerReferences": [
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": "w1",
         "uid": owner["metadata"]["uid"]}]}})

    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1",
                                           propagation_policy="Orphan")

    assert core.read_namespaced_config_map("cm", NS).metadata.owner_references is None


# --- other kinds, tokens, dumps -------------------------------------------------------------------

KINDS = {
    "events.v1": ("/api/v1/namespaces/test/events",
                  {"metadata": {"generateName": "ev-"}, "reason": "R", "message": "m",
                   "involvedObject": {"kind": "Pod", "name": "p", "namespace": NS}}),
    "events.v1.events.k8s.io": ("/apis/events.k8s.io/v1/namespaces/test/events",
                                {"metadata": {"generateName": "ev-"}, "reason": "R", "note": "n",
                                 "eventTime": "2024-01-01T00:00:00.000000Z",
                                 "reportingController": "c", "reportingInstance": "i",
                                 "action": "A", "type": "Normal"}),
    "jobs.v1.batch": ("/apis/batch/v1/namespaces/test/jobs",
                      {"metadata": {"generateName": "job-"}, "spec": {"template": {}}}),
    "pods.v1": ("/api/v1/namespaces/test/pods",
                {"metadata": {"generateName": "pod-"}, "spec": {"containers": []}}),
    "configmaps.v1": ("/api/v1/namespaces/test/configmaps", {"metadata": {"generateName": "c-"}}),
    "secrets.v1": ("/api/v1/namespaces/test/secrets", {"metadata": {"generateName": "s-"}}),
    "serviceaccounts.v1": ("/api/v1/namespaces/test/serviceaccounts",
                           {"metadata": {"generateName": "sa-"}}),
    "leases.v1.coordination.k8s.io": ("/apis/coordination.k8s.io/v1/namespaces/test/leases",
                                      {"metadata": {"generateName": "lease-"},
                                       "spec": {"holderIdentity": "me"}}),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kinds_are_creatable_listable_watchable(api: kubernetes.client.ApiClient,
                                                kind: str) -> None:
    path, body = KINDS[kind]

    def call(method: str, url: str, **kwargs: Any) -> Any:
        response = api.call_api(method, api.configuration.host + url, **kwargs)
        response.read()
        return json.loads(response.data)

    before = call("GET", path)["metadata"]["resourceVersion"]
    created = call("POST", path, header_params={"Content-Type": "application/json"}, body=body)
    listed = call("GET", path)
    response = api.rest_client.pool_manager.request(
        "GET", f"{api.configuration.host}{path}?watch=true&resourceVersion={before}",
        preload_content=False)
    event = json.loads(next(watch.watch.iter_resp_lines(response)))
    response.release_conn()

    assert [item["metadata"]["name"] for item in listed["items"]] == [created["metadata"]["name"]]
    assert listed["kind"] == f"{created['kind']}List"
    assert (event["type"], event["object"]["metadata"]["uid"]) == (
        "ADDED", created["metadata"]["uid"])


def test_token_review_answers_from_registered_tokens(emulator: KubeEmulator,
                                                     api: kubernetes.client.ApiClient,
                                                     core: CoreV1Api) -> None:
    emulator.register_token("t-valid", namespace=NS, service_account="runner", pod_name="p1",
                            pod_uid="uid-1", audiences=["fx"])
    auth = kubernetes.client.AuthenticationV1Api(api)

    def review(token: str, audiences: list[str] | None = None) -> Any:
        return auth.create_token_review(
            {"spec": {"token": token, "audiences": audiences or []}}).status

    valid = review("t-valid", ["fx"])
    assert valid.authenticated is True
    assert valid.user.username == f"system:serviceaccount:{NS}:runner"
    assert valid.user.extra == {"authentication.kubernetes.io/pod-name": ["p1"],
                                "authentication.kubernetes.io/pod-uid": ["uid-1"]}
    assert valid.audiences == ["fx"]
    assert review("t-valid", ["other"]).authenticated is False
    assert review("t-unknown").authenticated is False

    # A token bound to a pod dies with the pod, once the emulator has seen that pod.
    core.create_namespaced_pod(NS, {"metadata": {"name": "p1"}, "spec": {"containers": []}})
    assert review("t-valid", ["fx"]).authenticated is False  # another uid: not the bound pod


def test_token_review_through_a_callback_and_token_requests(emulator: KubeEmulator,
                                                            api: kubernetes.client.ApiClient,
                                                            core: CoreV1Api) -> None:
    asked: list[tuple[str, list[str]]] = []

    def reviewer(token: str, audiences: Any) -> TokenIdentity | None:
        asked.append((token, list(audiences)))
        return TokenIdentity(namespace=NS, service_account="cb") if token == "t-cb" else None

    emulator.token_reviewer = reviewer
    auth = kubernetes.client.AuthenticationV1Api(api)
    assert auth.create_token_review({"spec": {"token": "t-cb"}}).status.user.username == (
        f"system:serviceaccount:{NS}:cb")
    assert asked == [("t-cb", [])]

    emulator.token_reviewer = None
    core.create_namespaced_service_account(NS, {"metadata": {"name": "runner"}})
    issued = core.create_namespaced_service_account_token("runner", NS, {
        "spec": {"audiences": ["fx"], "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                         "name": "p2", "uid": "uid-2"}}})
    status = auth.create_token_review({"spec": {"token": issued.status.token}}).status
    assert status.authenticated is True
    assert status.user.extra["authentication.kubernetes.io/pod-name"] == ["p2"]


def test_dump_objects_sees_every_version(server: KubeEmulatorServer, core: CoreV1Api) -> None:
    canary = "canary-4b1d-never-stored"
    core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}, "data": {"k": canary}})
    core.patch_namespaced_config_map("a", NS, {"data": {"k": "clean"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "b"}, "data": {"k": "clean"}})

    everything = json.dumps(server.dump_objects())
    current = json.dumps(server.dump_objects(current_only=True))

    assert canary in everything  # the check a canary test does: here it must find it
    assert canary not in current


def test_request_log_keeps_only_the_last_requests(emulator: KubeEmulator,
                                                  server: KubeEmulatorServer,
                                                  core: CoreV1Api) -> None:
    for index in range(3 * emulator.request_log_size):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"c{index}"}})

    assert server.call(lambda: len(emulator)) <= emulator.request_log_size
    assert server.call(lambda: len(emulator["post"])) > 0  # kmock's DSL still sees recent ones


def test_an_authorizer_refuses_with_the_real_servers_403_and_changes_nothing(
        emulator: KubeEmulator, server: KubeEmulatorServer, core: CoreV1Api,
        custom: CustomObjectsApi, tmp_path: Path) -> None:
    create_widget(custom, "w1")
    emulator.register_token("operator-token", namespace="fx-system", service_account="op")
    emulator.authorizer = lambda call: call.token != "operator-token" or (
        call.verb == "list" or not call.resource)
    other = kubernetes.config.new_client_from_config(config_file=str(
        server.write_kubeconfig(tmp_path / "operator", token="operator-token")))
    user = "system:serviceaccount:fx-system:op"
    refused = {
        "get": lambda: CustomObjectsApi(other).get_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "w1"),
        "create": lambda: CoreV1Api(other).create_namespaced_config_map(
            NS, {"metadata": {"name": "never"}}),
        "watch": lambda: CoreV1Api(other).list_config_map_for_all_namespaces(
            watch=True, timeout_seconds=1),
        "patch": lambda: CustomObjectsApi(other).patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, PLURAL, "w1", {"status": {"x": 1}}),
    }
    messages = {}
    for verb, call in refused.items():
        with pytest.raises(ApiException) as exc:
            call()
        status = status_of(exc)
        assert (exc.value.status, status["reason"], status["code"]) == (403, "Forbidden", 403)
        messages[verb] = status["message"]
    assert messages == {
        "get": f'widgets.{GROUP} "w1" is forbidden: User "{user}" cannot get resource "widgets" '
               f'in API group "{GROUP}" in the namespace "{NS}"',
        "create": f'configmaps is forbidden: User "{user}" cannot create resource "configmaps" '
                  f'in API group "" in the namespace "{NS}"',
        "watch": f'configmaps is forbidden: User "{user}" cannot watch resource "configmaps" in '
                 'API group "" at the cluster scope',
        "patch": f'widgets.{GROUP} "w1" is forbidden: User "{user}" cannot patch resource '
                 f'"widgets/status" in API group "{GROUP}" in the namespace "{NS}"'}
    assert CoreV1Api(other).list_namespaced_config_map(NS).items == []  # allowed, and none made
    assert "status" not in get_widget(custom, "w1")  # the tests' own client may do anything


# --- a tiny kopf operator -------------------------------------------------------------------------

class WidgetOperator:
    """A kopf operator for Widgets: a Job per Widget, an Event, a finalizer via on.delete."""

    def __init__(self, server: KubeEmulatorServer, api: kubernetes.client.ApiClient) -> None:
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.pinged: set[str] = set()
        self.lock = threading.Lock()
        self.registry = kopf.OperatorRegistry()
        batch = BatchV1Api(api)

        @kopf.on.login(registry=self.registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return server.kopf_connection_info()

        @kopf.on.create(GROUP, VERSION, PLURAL, registry=self.registry, id="create_widget")
        def create_fn(body: kopf.Body, name: str, namespace: str, **_: Any) -> dict[str, str]:
            with self.lock:
                self.created.append(name)
            job: dict[str, Any] = {
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{name}-job"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "busybox"}]}}}}
            kopf.adopt(job, owner=body)
            batch.create_namespaced_job(namespace, job)
            kopf.info(body, reason="JobCreated", message=f"created {name}-job")
            return {"job": f"{name}-job"}

        @kopf.on.delete(GROUP, VERSION, PLURAL, registry=self.registry, id="delete_widget")
        def delete_fn(name: str, **_: Any) -> None:
            with self.lock:
                self.deleted.append(name)

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=self.registry, id="ping",
                       annotations={"ping": kopf.PRESENT})
        def ping_fn(name: str, **_: Any) -> None:
            with self.lock:
                self.pinged.add(name)

    def run(self) -> KopfRunner:
        return KopfRunner(["run", "--standalone", "-n", NS], registry=self.registry,
                          settings=kopf.OperatorSettings())


@pytest.fixture
def operator(server: KubeEmulatorServer, api: kubernetes.client.ApiClient) -> WidgetOperator:
    return WidgetOperator(server, api)


def handled(custom: CustomObjectsApi, name: str) -> dict[str, Any] | None:
    body = get_widget(custom, name)
    return body if (body.get("status") or {}).get("create_widget") else None


def test_kopf_handles_existing_and_new_objects_exactly_once(operator: WidgetOperator,
                                                            custom: CustomObjectsApi) -> None:
    create_widget(custom, "before-1")
    create_widget(custom, "before-2")

    with operator.run():
        create_widget(custom, "after-1")
        names = ["before-1", "before-2", "after-1"]
        for name in names:
            wait_for(lambda n=name: handled(custom, n), what=f"{name} handled")
        # Events arrive in order: once the ping is seen, any replayed ADDED was seen before it.
        for name in names:
            patch_widget(custom, name, {"metadata": {"annotations": {"ping": "1"}}})
        wait_for(lambda: operator.pinged == set(names), what="pings seen")

    assert collections.Counter(operator.created) == dict.fromkeys(names, 1)


def test_kopf_status_events_finalizer_adoption_and_cascade(operator: WidgetOperator,
                                                          api: kubernetes.client.ApiClient,
                                                          custom: CustomObjectsApi,
                                                          core: CoreV1Api) -> None:
    batch = BatchV1Api(api)
    with operator.run():
        owner = create_widget(custom, "w1")
        body = wait_for(lambda: handled(custom, "w1"), what="w1 handled")
        job = batch.read_namespaced_job("w1-job", NS)
        event = wait_for(lambda: [e for e in core.list_namespaced_event(NS).items
                                  if e.reason == "JobCreated"], what="kopf.info event")[0]

        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1")
        wait_for(lambda: operator.deleted == ["w1"], what="on.delete ran")
        wait_for(lambda: not custom.list_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL)["items"], what="w1 released by its finalizer")

    assert body["status"]["create_widget"] == {"job": "w1-job"}  # written through /status
    assert FINALIZER in body["metadata"]["finalizers"]
    (reference,) = job.metadata.owner_references
    assert (reference.api_version, reference.kind, reference.name, reference.uid) == (
        f"{GROUP}/{VERSION}", "Widget", "w1", owner["metadata"]["uid"])
    assert reference.controller is True
    assert event.message == "created w1-job"
    assert event.involved_object.uid == owner["metadata"]["uid"]
    assert batch.list_namespaced_job(NS).items == []  # cascade-deleted with the Widget
