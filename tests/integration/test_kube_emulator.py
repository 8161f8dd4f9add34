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
from contextlib import contextmanager
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


# --- CEL rules (x-kubernetes-validations) on custom resources -------------------------------------
#
# Every expected answer below is a literal copied from a real kube-apiserver v1.37 (the control
# plane of tests/realk8s) given the same CRDs and the same requests.

REPO = Path(__file__).resolve().parents[2]
FX_GROUP, FX_VERSION = "fx.dev", "v1alpha1"
PROBE_GROUP, PROBE_VERSION = "probe.fx.test", "v1"
BLOCKED = {"reason": "FieldValueInvalid", "field": "<nil>", "message": (
    "Invalid value: null: some validation rules were not checked because the object was "
    "invalid; correct the existing errors to complete validation")}

#: A CRD with rules of every kind the server has, for the emulator's CEL evaluation.
GADGETS_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.probe.fx.test
spec:
  group: probe.fx.test
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-validations:
            - rule: "self.metadata.name != 'forbidden-name'"
              message: root rule refuses this name
            - rule: "!has(self.spec.a) || self.spec.a != 'root-no-message'"
          properties:
            spec:
              type: object
              x-kubernetes-validations:
                - rule: "self.count <= 10"
                  messageExpression: >-
                    self.count > 100 ? 'count is far more than 10' : 'count is more than 10'
                - rule: "self.count != 7"
                  fieldPath: ".count"
                  reason: FieldValueForbidden
                  message: seven is forbidden
                - rule: "self.count != 8"
                  reason: FieldValueRequired
                  message: eight needs something
                - rule: "self.count != 9"
                  reason: FieldValueDuplicate
                  message: nine is a duplicate
                - rule: "self.count != 3 || self.missing == 'x'"
                  message: three reads a missing field
                - rule: "self.count != 4"
                  messageExpression: "self.nope"
                  message: four has a broken messageExpression
                - rule: "self.count != 5"
                  messageExpression: "'  '"
                  message: five has an empty messageExpression
                - rule: "self.count != 11"
                  messageExpression: "'eleven ' + self.nope"
                - rule: "self.count != 12"
                  fieldPath: ".tags['dash-key']"
                  message: twelve points at a tag
                - rule: "self.count != 13"
                - rule: "!has(self.dashed__dash__name) || self.dashed__dash__name != 'x'"
                  message: dashed name is x
                - rule: "!has(oldSelf.limit) || (has(self.limit) && self.limit >= oldSelf.limit)"
                  message: limit may only grow
              properties:
                count:
                  type: integer
                  x-kubernetes-validations:
                    - rule: "self >= 0"
                      message: count must not be negative
                a: {type: string, maxLength: 20}
                missing: {type: string, maxLength: 20}
                nope: {type: string, maxLength: 20}
                dashed-name: {type: string, maxLength: 20}
                limit: {type: integer}
                when:
                  type: string
                  format: date-time
                  maxLength: 40
                  x-kubernetes-validations:
                    - rule: "self > timestamp('2000-01-01T00:00:00Z')"
                      message: when is before 2000
                name:
                  type: string
                  maxLength: 20
                  x-kubernetes-validations:
                    - rule: "self == oldSelf"
                      message: name is immutable
                words:
                  type: array
                  maxItems: 10
                  items:
                    type: string
                    maxLength: 20
                    x-kubernetes-validations:
                      - rule: "self != 'bad'"
                        message: no bad words
                items:
                  type: array
                  maxItems: 10
                  x-kubernetes-list-type: map
                  x-kubernetes-list-map-keys: [key]
                  items:
                    type: object
                    required: [key]
                    x-kubernetes-validations:
                      - rule: "self.value >= oldSelf.value"
                        message: an item's value may only grow
                      - rule: "self.key != 'bad'"
                        message: no bad keys
                    properties:
                      key: {type: string, maxLength: 20}
                      value: {type: integer}
                tags:
                  type: object
                  maxProperties: 10
                  additionalProperties:
                    type: string
                    maxLength: 20
                    x-kubernetes-validations:
                      - rule: "self.size() <= 5"
                        message: tag too long
                frozen:
                  type: object
                  x-kubernetes-validations:
                    - rule: "self == oldSelf"
                      message: frozen is immutable
                  properties:
                    params:
                      type: object
                      x-kubernetes-preserve-unknown-fields: true
                    items:
                      type: array
                      maxItems: 10
                      x-kubernetes-list-type: map
                      x-kubernetes-list-map-keys: [key]
                      items:
                        type: object
                        required: [key]
                        properties:
                          key: {type: string, maxLength: 20}
                          value: {type: integer}
                    set:
                      type: array
                      maxItems: 10
                      x-kubernetes-list-type: set
                      items: {type: string, maxLength: 20}
            status:
              type: object
              properties:
                phase: {type: string}
"""

#: A CRD with list-type set and map lists of every shape, for the unique items of such lists.
ROSTERS_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: rosters.probe.fx.test
spec:
  group: probe.fx.test
  scope: Namespaced
  names: {plural: rosters, singular: roster, kind: Roster}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-validations:
                - rule: "!has(self.note) || self.note != 'bad'"
                  message: no bad notes
              properties:
                note: {type: string, maxLength: 20}
                legacy:
                  type: array
                  maxItems: 10
                  items: {type: string, maxLength: 20}
                words:
                  type: array
                  maxItems: 10
                  x-kubernetes-list-type: set
                  items: {type: string, maxLength: 20}
                numbers:
                  type: array
                  maxItems: 20
                  x-kubernetes-list-type: set
                  items: {type: number}
                flags:
                  type: array
                  maxItems: 10
                  x-kubernetes-list-type: set
                  items: {type: boolean}
                points:
                  type: array
                  maxItems: 10
                  x-kubernetes-list-type: set
                  items:
                    type: object
                    x-kubernetes-map-type: atomic
                    properties:
                      x: {type: number}
                      label: {type: string, maxLength: 20}
                ports:
                  type: array
                  maxItems: 10
                  x-kubernetes-list-type: map
                  x-kubernetes-list-map-keys: [port, protocol]
                  items:
                    type: object
                    required: [port]
                    properties:
                      port: {type: integer}
                      protocol: {type: string, default: TCP, maxLength: 20}
                      name: {type: string, maxLength: 20}
                groups:
                  type: object
                  maxProperties: 10
                  additionalProperties:
                    type: array
                    maxItems: 10
                    x-kubernetes-list-type: set
                    items: {type: string, maxLength: 20}
                matrix:
                  type: array
                  maxItems: 10
                  items:
                    type: array
                    maxItems: 10
                    x-kubernetes-list-type: set
                    items: {type: integer}
            status:
              type: object
              properties:
                conditions:
                  type: array
                  maxItems: 10
                  x-kubernetes-list-type: map
                  x-kubernetes-list-map-keys: [type]
                  items:
                    type: object
                    required: [type]
                    properties:
                      type: {type: string, maxLength: 20}
                      status: {type: string, maxLength: 20}
"""


def _fx_emulator(tmp_path: Path, *, cel: bool = True) -> KubeEmulator:
    emulator = KubeEmulator(cel=cel)
    emulator.load_crds(REPO / "crds")
    (tmp_path / "gadgets.yaml").write_text(GADGETS_CRD)
    emulator.load_crds(tmp_path / "gadgets.yaml")
    (tmp_path / "rosters.yaml").write_text(ROSTERS_CRD)
    emulator.load_crds(tmp_path / "rosters.yaml")
    return emulator


@contextmanager
def _served(emulator: KubeEmulator, tmp_path: Path) -> Iterator[kubernetes.client.ApiClient]:
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig-fx") as server:
        client = server.api_client()
        CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
        yield client
        client.close()


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[CustomObjectsApi]:
    """The project's CRDs, the Gadget and the Roster CRDs, with CEL on (the default)."""
    with _served(_fx_emulator(tmp_path), tmp_path) as client:
        yield CustomObjectsApi(client)


def _package(name: str, scripts: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{FX_GROUP}/{FX_VERSION}", "kind": "Package",
            "metadata": {"name": name},
            "spec": {"scripts": [{"name": n, "content": c} for n, c in scripts.items()], **spec}}


def _scoped_secret(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{FX_GROUP}/{FX_VERSION}", "kind": "ScopedSecret",
            "metadata": {"name": name}, "spec": {"encryptedData": {"A": "eA=="}, **spec}}


def _execution(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{FX_GROUP}/{FX_VERSION}", "kind": "Execution",
            "metadata": {"name": name}, "spec": {"package": "p", **spec}}


def _gadget(object_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{PROBE_GROUP}/{PROBE_VERSION}", "kind": "Gadget",
            "metadata": {"name": object_name}, "spec": {"count": 1, **spec}}


def _refusal(call: Any) -> dict[str, Any]:
    """The Status of a write that must be refused with a 422."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 422, refused.value.body
    body = status_of(refused)
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status", "Failure", "Invalid", 422)
    return body


def _create(custom: CustomObjectsApi, body: dict[str, Any]) -> Any:
    group, version = body["apiVersion"].split("/")
    plural = body["kind"].lower() + "s"
    return lambda: custom.create_namespaced_custom_object(group, version, NS, plural, body)


def _causes(*causes: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"reason": reason, "field": field, "message": message}
            for reason, field, message in causes]


#: Each rule of the project's CRDs broken on create: the real server's message.
FX_RULES_ON_CREATE: dict[str, tuple[dict[str, Any], str]] = {
    "package-entrypoint-names-a-script": (
        _package("p2", {"main.py": "1"}, entrypoint="other.py"),
        'Package.fx.dev "p2" is invalid: spec: Invalid value: '
        "entrypoint must name one of the scripts"),
    "package-carries-no-secrets-json": (
        _package("p1", {"main.py": "1", "secrets.json": "{}"}),
        'Package.fx.dev "p1" is invalid: spec: Invalid value: '
        "a Package carries no secrets.json; seal it into a ScopedSecret"),
    "scopedsecret-package-scope-needs-a-package": (
        _scoped_secret("s1", scope="package"),
        'ScopedSecret.fx.dev "s1" is invalid: spec: Invalid value: '
        "package scope needs spec.package"),
    "scopedsecret-package-only-for-package-scope": (
        _scoped_secret("s2", scope="project", package="p"),
        'ScopedSecret.fx.dev "s2" is invalid: spec: Invalid value: '
        "spec.package is only for package scope"),
}


@pytest.mark.parametrize("case", sorted(FX_RULES_ON_CREATE))
def test_each_crd_rule_refuses_a_create_as_the_real_server_does(fx: CustomObjectsApi,
                                                                case: str) -> None:
    body, message = FX_RULES_ON_CREATE[case]

    refused = _refusal(_create(fx, body))

    assert refused["message"] == message
    kind, group = body["kind"], FX_GROUP
    assert refused["details"] == {
        "name": body["metadata"]["name"], "group": group, "kind": kind,
        "causes": _causes(("FieldValueInvalid", "spec", message.split(": spec: ", 1)[1]))}
    with pytest.raises(ApiException) as missing:
        fx.get_namespaced_custom_object(FX_GROUP, FX_VERSION, NS, kind.lower() + "s",
                                        body["metadata"]["name"])
    assert missing.value.status == 404


def test_an_execution_cannot_be_changed_as_on_the_real_server(fx: CustomObjectsApi) -> None:
    """The transition rule ``self == oldSelf``: not run on create, run on every update of the
    spec however it is sent (PUT, merge patch, JSON patch), quiet when the spec is unchanged."""
    where = (FX_GROUP, FX_VERSION, NS, "executions", "e1")
    fx.create_namespaced_custom_object(*where[:4], _execution("e1", params={"a": 1}))
    changed = fx.get_namespaced_custom_object(*where)
    changed["spec"]["timeoutSeconds"] = 5

    refusals = [
        _refusal(lambda: fx.replace_namespaced_custom_object(*where, changed)),
        _refusal(lambda: fx.patch_namespaced_custom_object(
            *where, {"spec": {"params": {"a": 2}}},
            _content_type="application/merge-patch+json")),
        _refusal(lambda: fx.patch_namespaced_custom_object(
            *where, [{"op": "replace", "path": "/spec/package", "value": "q"}],
            _content_type="application/json-patch+json"))]
    fx.patch_namespaced_custom_object(*where, {"spec": {"params": {"a": 1}}},
                                      _content_type="application/merge-patch+json")
    fx.patch_namespaced_custom_object(*where, {"metadata": {"labels": {"a": "b"}}},
                                      _content_type="application/merge-patch+json")
    fx.patch_namespaced_custom_object_status(*where, {"status": {"phase": "Running"}},
                                             _content_type="application/merge-patch+json")
    changed["spec"]["timeoutSeconds"] = 0
    changed["metadata"].pop("resourceVersion")
    both = _refusal(lambda: fx.replace_namespaced_custom_object(*where, changed))

    message = ('Execution.fx.dev "e1" is invalid: spec: Invalid value: '
               "an Execution cannot be changed once created; create another")
    assert [r["message"] for r in refusals] == [message] * 3
    assert refusals[0]["details"]["causes"] == _causes((
        "FieldValueInvalid", "spec",
        "Invalid value: an Execution cannot be changed once created; create another"))
    assert both["message"] == (
        'Execution.fx.dev "e1" is invalid: [spec.timeoutSeconds: Invalid value: 0: '
        "spec.timeoutSeconds in body should be greater than or equal to 1, spec: Invalid value: "
        "an Execution cannot be changed once created; create another]")
    assert fx.get_namespaced_custom_object(*where)["spec"] == {"package": "p",
                                                               "params": {"a": 1}}


def test_package_rules_on_updates_and_together(fx: CustomObjectsApi) -> None:
    where = (FX_GROUP, FX_VERSION, NS, "packages", "good")
    fx.create_namespaced_custom_object(*where[:4], _package("good", {"main.py": "1"}))
    with_secrets = fx.get_namespaced_custom_object(*where)
    with_secrets["spec"]["scripts"].append({"name": "secrets.json", "content": "{}"})

    put = _refusal(lambda: fx.replace_namespaced_custom_object(*where, with_secrets))
    merged = _refusal(lambda: fx.patch_namespaced_custom_object(
        *where, {"spec": {"scripts": with_secrets["spec"]["scripts"]}},
        _content_type="application/merge-patch+json"))
    json_patched = _refusal(lambda: fx.patch_namespaced_custom_object(
        *where, [{"op": "add", "path": "/spec/entrypoint", "value": "x.py"}],
        _content_type="application/json-patch+json"))
    both = _refusal(_create(fx, _package("p3", {"main.py": "1", "secrets.json": "{}"},
                                         entrypoint="other.py")))
    fx.patch_namespaced_custom_object_status(*where, {"status": {"scriptCount": 1}},
                                             _content_type="application/merge-patch+json")

    secrets_json = ('Package.fx.dev "good" is invalid: spec: Invalid value: a Package carries '
                    "no secrets.json; seal it into a ScopedSecret")
    assert [put["message"], merged["message"]] == [secrets_json] * 2
    assert json_patched["message"] == ('Package.fx.dev "good" is invalid: spec: Invalid value: '
                                       "entrypoint must name one of the scripts")
    assert both["message"] == (
        'Package.fx.dev "p3" is invalid: [spec: Invalid value: entrypoint must name one of the '
        "scripts, spec: Invalid value: a Package carries no secrets.json; seal it into a "
        "ScopedSecret]")
    assert [c["message"] for c in both["details"]["causes"]] == [
        "Invalid value: entrypoint must name one of the scripts",
        "Invalid value: a Package carries no secrets.json; seal it into a ScopedSecret"]
    assert fx.get_namespaced_custom_object(*where)["spec"] == {
        "scripts": [{"name": "main.py", "content": "1"}]}


#: Schema errors that stop the rules (Required, TypeInvalid, NotSupported, TooLong) and one that
#: does not (a pattern): the real server's answers.
BLOCKING_CASES: dict[str, tuple[dict[str, Any], str, list[dict[str, str]]]] = {
    "required": (
        {**_package("p4", {}), "spec": {"scripts": [{"name": "secrets.json"}]}},
        'Package.fx.dev "p4" is invalid: [spec.scripts[0].content: Required value, <nil>: '
        "Invalid value: null: some validation rules were not checked because the object was "
        "invalid; correct the existing errors to complete validation]",
        [{"reason": "FieldValueRequired", "field": "spec.scripts[0].content",
          "message": "Required value"}, BLOCKED]),
    "type": (
        {**_package("p6", {}), "spec": {"scripts": "nope"}},
        'Package.fx.dev "p6" is invalid: [spec.scripts: Invalid value: "string": spec.scripts '
        'in body must be of type array: "string", <nil>: Invalid value: null: some validation '
        "rules were not checked because the object was invalid; correct the existing errors to "
        "complete validation]",
        [{"reason": "FieldValueTypeInvalid", "field": "spec.scripts", "message":
          'Invalid value: "string": spec.scripts in body must be of type array: "string"'},
         BLOCKED]),
    "enum": (
        _package("p7", {"main.py": "1", "secrets.json": "{}"}, compat="x"),
        'Package.fx.dev "p7" is invalid: [spec.compat: Unsupported value: "x": supported '
        'values: "ferris", <nil>: Invalid value: null: some validation rules were not checked '
        "because the object was invalid; correct the existing errors to complete validation]",
        [{"reason": "FieldValueNotSupported", "field": "spec.compat",
          "message": 'Unsupported value: "x": supported values: "ferris"'}, BLOCKED]),
    "too-long": (
        _package("p8", {"main.py": "1", "secrets.json": "{}"}, image="i" * 600),
        'Package.fx.dev "p8" is invalid: [spec.image: Too long: may not be more than 512 '
        "bytes, <nil>: Invalid value: null: some validation rules were not checked because the "
        "object was invalid; correct the existing errors to complete validation]",
        [{"reason": "FieldValueTooLong", "field": "spec.image",
          "message": "Too long: may not be more than 512 bytes"}, BLOCKED]),
    "pattern-does-not-block": (
        _package("p5", {"main.py": "1"}, entrypoint="other.txt"),
        'Package.fx.dev "p5" is invalid: [spec.entrypoint: Invalid value: "other.txt": '
        "spec.entrypoint in body should match '^[A-Za-z0-9_][A-Za-z0-9_.-]*\\.py$', spec: "
        "Invalid value: entrypoint must name one of the scripts]",
        [{"reason": "FieldValueInvalid", "field": "spec.entrypoint", "message":
          'Invalid value: "other.txt": spec.entrypoint in body should match '
          "'^[A-Za-z0-9_][A-Za-z0-9_.-]*\\.py$'"},
         {"reason": "FieldValueInvalid", "field": "spec",
          "message": "Invalid value: entrypoint must name one of the scripts"}]),
}


@pytest.mark.parametrize("case", sorted(BLOCKING_CASES))
def test_schema_errors_that_block_the_rules(fx: CustomObjectsApi, case: str) -> None:
    body, message, causes = BLOCKING_CASES[case]

    refused = _refusal(_create(fx, body))

    assert refused["message"] == message
    assert refused["details"]["causes"] == causes


#: Gadgets created with one rule or another broken: the real server's causes.
GADGET_CREATES: dict[str, tuple[dict[str, Any], list[dict[str, str]]]] = {
    "root-rule": (_gadget("forbidden-name"), _causes(
        ("FieldValueInvalid", "<nil>", "Invalid value: root rule refuses this name"))),
    "root-rule-without-message": (_gadget("g0", a="root-no-message"), _causes((
        "FieldValueInvalid", "<nil>",
        "Invalid value: failed rule: !has(self.spec.a) || self.spec.a != 'root-no-message'"))),
    "scalar-value-shown": (_gadget("gc9", count=-1), _causes(
        ("FieldValueInvalid", "spec.count", "Invalid value: -1: count must not be negative"))),
    "message-expression": (_gadget("gc111", count=101), _causes(
        ("FieldValueInvalid", "spec", "Invalid value: count is far more than 10"))),
    "field-path-into-a-map": (_gadget("gc22", count=12), _causes(
        ("FieldValueInvalid", "spec", "Invalid value: count is more than 10"),
        ("FieldValueInvalid", "spec.tags[dash-key]", "Invalid value: twelve points at a tag"))),
    "reason-forbidden-and-field-path": (_gadget("gc17", count=7), _causes(
        ("FieldValueForbidden", "spec.count", "Forbidden: seven is forbidden"))),
    "reason-required": (_gadget("gc18", count=8), _causes(
        ("FieldValueRequired", "spec", "Required value: eight needs something"))),
    "reason-duplicate": (_gadget("gc19", count=9), _causes(
        ("FieldValueDuplicate", "spec", "Duplicate value"))),
    "evaluation-error": (_gadget("gc13", count=3), _causes((
        "FieldValueInvalid", "spec", 'Invalid value: "object": no such key: missing evaluating '
        "rule: three reads a missing field"))),
    "message-expression-fails": (_gadget("gc14", count=4), _causes(
        ("FieldValueInvalid", "spec", "Invalid value: four has a broken messageExpression"))),
    "message-expression-empty": (_gadget("gc15", count=5), _causes(
        ("FieldValueInvalid", "spec", "Invalid value: five has an empty messageExpression"))),
    "message-expression-fails-without-message": (_gadget("gc21", count=11), _causes(
        ("FieldValueInvalid", "spec", "Invalid value: count is more than 10"),
        ("FieldValueInvalid", "spec", "Invalid value: failed rule: self.count != 11"))),
    "escaped-field-name": (_gadget("g1", **{"dashed-name": "x"}), _causes(
        ("FieldValueInvalid", "spec", "Invalid value: dashed name is x"))),
    "date-time-as-timestamp": (_gadget("g2", when="1999-01-01T00:00:00Z"), _causes((
        "FieldValueInvalid", "spec.when",
        'Invalid value: "1999-01-01T00:00:00Z": when is before 2000'))),
    "list-items": (_gadget("g3", words=["ok", "bad", "bad"]), _causes(
        ("FieldValueInvalid", "spec.words[1]", 'Invalid value: "bad": no bad words'),
        ("FieldValueInvalid", "spec.words[2]", 'Invalid value: "bad": no bad words'))),
    "map-list-item-transition-rule-skipped": (
        _gadget("g4", items=[{"key": "bad", "value": 1}]), _causes(
            ("FieldValueInvalid", "spec.items[0]", "Invalid value: no bad keys"))),
    "map-values": (_gadget("g5", tags={"dash-key": "toolong", "b": "ok"}), _causes(
        ("FieldValueInvalid", "spec.tags[dash-key]", 'Invalid value: "toolong": tag too long'))),
}


@pytest.mark.parametrize("case", sorted(GADGET_CREATES))
def test_rules_at_every_node_answer_as_the_real_server(fx: CustomObjectsApi, case: str) -> None:
    body, causes = GADGET_CREATES[case]

    refused = _refusal(_create(fx, body))

    assert refused["details"]["causes"] == causes
    text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    assert refused["message"] == (f'Gadget.probe.fx.test "{body["metadata"]["name"]}" is '
                                  f"invalid: {text if len(causes) == 1 else f'[{text}]'}")


def test_transition_rules_compare_with_the_old_object_where_it_has_a_value(
        fx: CustomObjectsApi) -> None:
    where = (PROBE_GROUP, PROBE_VERSION, NS, "gadgets", "g6")
    fx.create_namespaced_custom_object(*where[:4], _gadget(
        "g6", name="n", limit=5, items=[{"key": "a", "value": 5}, {"key": "b", "value": 1}],
        frozen={"params": {"x": [1, 2]}, "items": [{"key": "a", "value": 1},
                                                    {"key": "b", "value": 2}],
                "set": ["x", "y"]}))

    def merge(patch: Any) -> Any:
        return lambda: fx.patch_namespaced_custom_object(
            *where, patch, _content_type="application/merge-patch+json")

    def put(change: Any) -> Any:
        def call() -> Any:
            body = fx.get_namespaced_custom_object(*where)
            change(body["spec"])
            return fx.replace_namespaced_custom_object(*where, body)
        return call

    name = _refusal(merge({"spec": {"name": "m"}}))
    shrunk = _refusal(merge({"spec": {"limit": 4}}))
    removed = _refusal(lambda: fx.patch_namespaced_custom_object(
        *where, [{"op": "remove", "path": "/spec/limit"}],
        _content_type="application/json-patch+json"))
    item = _refusal(put(lambda s: s.update(items=[{"key": "b", "value": 1},
                                                  {"key": "a", "value": 4}])))
    put(lambda s: s.update(items=[{"key": "b", "value": 1}, {"key": "a", "value": 5}]))()
    put(lambda s: s.update(items=[{"key": "c", "value": 0}, {"key": "a", "value": 5},
                                  {"key": "b", "value": 1}]))()  # c: no old value, not compared
    put(lambda s: s["frozen"].update(items=[{"key": "b", "value": 2},
                                            {"key": "a", "value": 1}]))()  # map list: no order
    put(lambda s: s["frozen"].update(set=["y", "x"]))()  # a set: no order either
    params = _refusal(put(lambda s: s["frozen"].update(params={"x": [2, 1]})))
    fx.create_namespaced_custom_object(*where[:4], _gadget("g7"))
    fx.patch_namespaced_custom_object(PROBE_GROUP, PROBE_VERSION, NS, "gadgets", "g7",
                                      {"spec": {"name": "late"}},  # no old name to compare
                                      _content_type="application/merge-patch+json")

    assert name["details"]["causes"] == _causes(
        ("FieldValueInvalid", "spec.name", 'Invalid value: "m": name is immutable'))
    assert shrunk["details"]["causes"] == removed["details"]["causes"] == _causes(
        ("FieldValueInvalid", "spec", "Invalid value: limit may only grow"))
    assert item["details"]["causes"] == _causes(
        ("FieldValueInvalid", "spec.items[1]", "Invalid value: an item's value may only grow"))
    assert params["message"] == ('Gadget.probe.fx.test "g6" is invalid: spec.frozen: Invalid '
                                 "value: frozen is immutable")


def test_errors_on_values_left_unchanged_are_ratcheted(
        fx: CustomObjectsApi, tmp_path: Path) -> None:
    """Rules added to the CRD after an object was stored: an update that leaves a value as it
    was is not refused for it (CRDValidationRatcheting), a new or changed value is."""
    where = (PROBE_GROUP, PROBE_VERSION, NS, "gadgets", "r1")
    fx.create_namespaced_custom_object(*where[:4], _gadget("r1", count=2, a="x",
                                                           tags={"t": "v"}))
    extensions = kubernetes.client.ApiextensionsV1Api(fx.api_client)
    crd = fx.api_client.sanitize_for_serialization(
        extensions.read_custom_resource_definition("gadgets.probe.fx.test"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["x-kubernetes-validations"].append({"rule": "self.count != 2",
                                             "message": "spec says no 2"})
    spec["properties"]["count"]["x-kubernetes-validations"].append(
        {"rule": "self != 2", "message": "count says no 2"})
    spec["properties"]["tags"]["additionalProperties"]["x-kubernetes-validations"].append(
        {"rule": "self != 'v'", "message": "no v tags"})
    extensions.replace_custom_resource_definition("gadgets.probe.fx.test", crd)

    def merge(patch: Any) -> Any:
        return lambda: fx.patch_namespaced_custom_object(
            *where, patch, _content_type="application/merge-patch+json")

    merge({"metadata": {"labels": {"x": "y"}}})()
    fx.patch_namespaced_custom_object_status(*where, {"status": {"phase": "P"}},
                                             _content_type="application/merge-patch+json")
    spec_changed = _refusal(merge({"spec": {"a": "y"}}))
    tag_added = _refusal(merge({"spec": {"tags": {"u": "v"}}}))
    created = _refusal(_create(fx, _gadget("r2", count=2)))

    assert spec_changed["message"] == (
        'Gadget.probe.fx.test "r1" is invalid: spec: Invalid value: spec says no 2')
    assert tag_added["message"] == (
        'Gadget.probe.fx.test "r1" is invalid: [spec: Invalid value: spec says no 2, '
        'spec.tags[u]: Invalid value: "v": no v tags]')
    assert created["message"] == (
        'Gadget.probe.fx.test "r2" is invalid: [spec: Invalid value: spec says no 2, '
        "spec.count: Invalid value: 2: count says no 2]")


def test_with_cel_off_objects_breaking_the_rules_are_stored(tmp_path: Path) -> None:
    """``KubeEmulator(cel=False)``: an API server older than 1.25, or with CEL off."""
    with _served(_fx_emulator(tmp_path, cel=False), tmp_path) as client:
        custom = CustomObjectsApi(client)
        for body, _ in FX_RULES_ON_CREATE.values():
            _create(custom, body)()
        _create(custom, _execution("e1"))()
        changed = custom.patch_namespaced_custom_object(
            FX_GROUP, FX_VERSION, NS, "executions", "e1", {"spec": {"package": "q"}},
            _content_type="application/merge-patch+json")
        required = _refusal(_create(custom, BLOCKING_CASES["required"][0]))

    assert changed["spec"]["package"] == "q"
    assert required["details"]["causes"] == BLOCKING_CASES["required"][2][:1]


def test_a_rule_calling_a_function_the_emulator_lacks_is_refused_at_load(
        tmp_path: Path) -> None:
    crd = GADGETS_CRD.replace("self.count <= 10", "self.count <= 10 && 'a'.format([]) == 'a'")
    (tmp_path / "gadgets.yaml").write_text(crd)

    with pytest.raises(NotImplementedError, match="calls format"):
        KubeEmulator().load_crds(tmp_path / "gadgets.yaml")
    assert KubeEmulator(cel=False).load_crds(tmp_path / "gadgets.yaml")


# --- unique items of list-type set and map lists --------------------------------------------------
#
# As above, every expected answer is a literal from the real kube-apiserver v1.37 given the same
# CRDs and requests.

DUPLICATE_MAIN = 'Duplicate value: {"name":"main.py"}'
NOT_CHECKED_TEXT = ("<nil>: Invalid value: null: some validation rules were not checked because "
                    "the object was invalid; correct the existing errors to complete validation")


def _scripts_package(name: str, *scripts: tuple[str, str], **spec: Any) -> dict[str, Any]:
    """A Package whose scripts may repeat a name (``_package`` takes a dict)."""
    body = _package(name, {}, **spec)
    body["spec"]["scripts"] = [{"name": n, "content": c} for n, c in scripts]
    return body


def _roster(object_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{PROBE_GROUP}/{PROBE_VERSION}", "kind": "Roster",
            "metadata": {"name": object_name}, "spec": spec}


#: Packages with a script name twice (spec.scripts is a map list keyed by name), alone and next
#: to other errors: the real server's message and causes.
PACKAGE_DUPLICATES: dict[str, tuple[dict[str, Any], str, list[dict[str, str]]]] = {
    "duplicate-script-names": (
        _scripts_package("dup", ("main.py", "1"), ("main.py", "2")),
        'Package.fx.dev "dup" is invalid: spec.scripts[1]: Duplicate value: {"name":"main.py"}',
        _causes(("FieldValueDuplicate", "spec.scripts[1]", DUPLICATE_MAIN))),
    "the-second-of-each-name-only": (
        _scripts_package("multi", ("main.py", "1"), ("main.py", "2"), ("a.py", "1"),
                         ("main.py", "3"), ("a.py", "2")),
        'Package.fx.dev "multi" is invalid: [spec.scripts[1]: Duplicate value: '
        '{"name":"main.py"}, spec.scripts[4]: Duplicate value: {"name":"a.py"}]',
        _causes(("FieldValueDuplicate", "spec.scripts[1]", DUPLICATE_MAIN),
                ("FieldValueDuplicate", "spec.scripts[4]", 'Duplicate value: {"name":"a.py"}'))),
    "before-the-rules": (
        _scripts_package("cel2", ("secrets.json", "1"), ("secrets.json", "2")),
        'Package.fx.dev "cel2" is invalid: [spec.scripts[1]: Duplicate value: '
        '{"name":"secrets.json"}, spec: Invalid value: a Package carries no secrets.json; seal '
        "it into a ScopedSecret]",
        _causes(("FieldValueDuplicate", "spec.scripts[1]",
                 'Duplicate value: {"name":"secrets.json"}'),
                ("FieldValueInvalid", "spec", "Invalid value: a Package carries no secrets.json; "
                 "seal it into a ScopedSecret"))),
    "after-a-schema-error-that-blocks-the-rules": (
        {**_package("blk", {}), "spec": {"scripts": [{"name": "main.py"},
                                                     {"name": "main.py", "content": "x"}]}},
        'Package.fx.dev "blk" is invalid: [spec.scripts[0].content: Required value, '
        f'spec.scripts[1]: Duplicate value: {{"name":"main.py"}}, {NOT_CHECKED_TEXT}]',
        [*_causes(("FieldValueRequired", "spec.scripts[0].content", "Required value"),
                  ("FieldValueDuplicate", "spec.scripts[1]", DUPLICATE_MAIN)), BLOCKED]),
    "between-a-pattern-error-and-the-rules": (
        _scripts_package("pat", ("main.py", "1"), ("main.py", "2"), entrypoint="x.txt"),
        'Package.fx.dev "pat" is invalid: [spec.entrypoint: Invalid value: "x.txt": '
        "spec.entrypoint in body should match '^[A-Za-z0-9_][A-Za-z0-9_.-]*\\.py$', "
        'spec.scripts[1]: Duplicate value: {"name":"main.py"}, spec: Invalid value: entrypoint '
        "must name one of the scripts]",
        _causes(("FieldValueInvalid", "spec.entrypoint", 'Invalid value: "x.txt": '
                 "spec.entrypoint in body should match '^[A-Za-z0-9_][A-Za-z0-9_.-]*\\.py$'"),
                ("FieldValueDuplicate", "spec.scripts[1]", DUPLICATE_MAIN),
                ("FieldValueInvalid", "spec",
                 "Invalid value: entrypoint must name one of the scripts"))),
}


@pytest.mark.parametrize("case", sorted(PACKAGE_DUPLICATES))
def test_a_script_name_twice_is_refused_as_on_the_real_server(fx: CustomObjectsApi,
                                                              case: str) -> None:
    body, message, causes = PACKAGE_DUPLICATES[case]

    refused = _refusal(_create(fx, body))

    assert refused["message"] == message
    assert refused["details"] == {"name": body["metadata"]["name"], "group": FX_GROUP,
                                  "kind": "Package", "causes": causes}
    with pytest.raises(ApiException) as missing:
        fx.get_namespaced_custom_object(FX_GROUP, FX_VERSION, NS, "packages",
                                        body["metadata"]["name"])
    assert missing.value.status == 404


def test_a_script_name_twice_is_refused_on_every_kind_of_update(fx: CustomObjectsApi) -> None:
    where = (FX_GROUP, FX_VERSION, NS, "packages", "good")
    fx.create_namespaced_custom_object(*where[:4], _package("good", {"main.py": "1"}))
    twice = fx.get_namespaced_custom_object(*where)
    twice["spec"]["scripts"].append({"name": "main.py", "content": "4"})
    conditions = [{"type": "Ready", "status": status, "reason": "R", "message": "m",
                   "lastTransitionTime": "2020-01-01T00:00:00Z"} for status in ("True", "False")]

    refusals = [
        _refusal(lambda: fx.patch_namespaced_custom_object(
            *where, {"spec": {"scripts": [{"name": "main.py", "content": "1"},
                                          {"name": "main.py", "content": "2"}]}},
            _content_type="application/merge-patch+json")),
        _refusal(lambda: fx.patch_namespaced_custom_object(
            *where, [{"op": "add", "path": "/spec/scripts/-",
                      "value": {"name": "main.py", "content": "3"}}],
            _content_type="application/json-patch+json")),
        _refusal(lambda: fx.replace_namespaced_custom_object(*where, twice))]
    status = _refusal(lambda: fx.patch_namespaced_custom_object_status(
        *where, {"status": {"conditions": conditions}},
        _content_type="application/merge-patch+json"))

    assert [r["message"] for r in refusals] == [
        'Package.fx.dev "good" is invalid: spec.scripts[1]: Duplicate value: '
        '{"name":"main.py"}'] * 3
    assert status["message"] == ('Package.fx.dev "good" is invalid: status.conditions[1]: '
                                 'Duplicate value: {"type":"Ready"}')
    assert status["details"]["causes"] == _causes(
        ("FieldValueDuplicate", "status.conditions[1]", 'Duplicate value: {"type":"Ready"}'))
    stored = fx.get_namespaced_custom_object(*where)
    assert stored["spec"] == {"scripts": [{"name": "main.py", "content": "1"}]}
    assert "status" not in stored


#: Rosters with duplicates in set and map lists of every shape: the real server's causes. Items
#: compare as Go's decoded JSON does (4 and 4.0 differ, {"x": 2} and {"x": 2.0} do not); values
#: show as Go prints them (%v, %q, json.Marshal).
ROSTER_DUPLICATES: dict[str, tuple[dict[str, Any], list[dict[str, str]]]] = {
    "set-of-strings": (_roster("r-words", words=["a", "b", "a", "a", "b"]), _causes(
        ("FieldValueDuplicate", "spec.words[2]", 'Duplicate value: "a"'),
        ("FieldValueDuplicate", "spec.words[4]", 'Duplicate value: "b"'))),
    "set-of-numbers": (_roster("r-numbers", numbers=[
        1.5, 1.5, 2.0, 2.0, 1e6, 1e6, 1234567.0, 1234567.0, 1e21, 1e21, 0.00001, 0.00001, 3, 3,
        4, 4.0, 1e-7, 1e-7, 123456.0, 123456.0]), _causes(
        ("FieldValueDuplicate", "spec.numbers[1]", "Duplicate value: 1.5"),
        ("FieldValueDuplicate", "spec.numbers[3]", "Duplicate value: 2"),
        ("FieldValueDuplicate", "spec.numbers[5]", "Duplicate value: 1e+06"),
        ("FieldValueDuplicate", "spec.numbers[7]", "Duplicate value: 1.234567e+06"),
        ("FieldValueDuplicate", "spec.numbers[9]", "Duplicate value: 1e+21"),
        ("FieldValueDuplicate", "spec.numbers[11]", "Duplicate value: 1e-05"),
        ("FieldValueDuplicate", "spec.numbers[13]", "Duplicate value: 3"),
        ("FieldValueDuplicate", "spec.numbers[17]", "Duplicate value: 1e-07"),
        ("FieldValueDuplicate", "spec.numbers[19]", "Duplicate value: 123456"))),
    "set-of-booleans": (_roster("r-flags", flags=[True, False, True]), _causes(
        ("FieldValueDuplicate", "spec.flags[2]", "Duplicate value: true"))),
    "set-of-atomic-objects": (_roster("r-points", points=[
        {"x": 1, "label": "<a&b>"}, {"x": 1, "label": "<a&b>"}, {"x": 2.0}, {"x": 2},
        {"x": 1e21}, {"x": 1e21}, {"x": 1e-7}, {"x": 1e-7}, {"x": 1, "label": "<a&b>"}]), _causes(
        ("FieldValueDuplicate", "spec.points[1]",
         'Duplicate value: {"label":"\\u003ca\\u0026b\\u003e","x":1}'),
        ("FieldValueDuplicate", "spec.points[3]", 'Duplicate value: {"x":2}'),
        ("FieldValueDuplicate", "spec.points[5]", 'Duplicate value: {"x":1e+21}'),
        ("FieldValueDuplicate", "spec.points[7]", 'Duplicate value: {"x":1e-7}'))),
    "strings-quoted-as-go-does": (_roster("r-strings", words=[
        'é\x01<\t"\\', 'é\x01<\t"\\', "\u00a0x", "\u00a0x", "\u2028", "\u2028"]), _causes(
        ("FieldValueDuplicate", "spec.words[1]", 'Duplicate value: "é\\x01<\\t\\"\\\\"'),
        ("FieldValueDuplicate", "spec.words[3]", 'Duplicate value: "\\u00a0x"'),
        ("FieldValueDuplicate", "spec.words[5]", 'Duplicate value: "\\u2028"'))),
    "map-with-two-keys-one-defaulted": (_roster("r-ports", ports=[
        {"port": 80}, {"port": 80, "protocol": "TCP", "name": "b"}, {"port": 80, "protocol": "UDP"},
        {"port": 443}]), _causes(
        ("FieldValueDuplicate", "spec.ports[1]",
         'Duplicate value: {"port":80,"protocol":"TCP"}'))),
    "set-in-a-map": (_roster("r-groups", groups={"g": ["x", "x"]}), _causes(
        ("FieldValueDuplicate", "spec.groups[g][1]", 'Duplicate value: "x"'))),
    "sets-in-a-list": (_roster("r-matrix", matrix=[[1, 1], [2, 3], [4, 4]]), _causes(
        ("FieldValueDuplicate", "spec.matrix[0][1]", "Duplicate value: 1"),
        ("FieldValueDuplicate", "spec.matrix[2][1]", "Duplicate value: 4"))),
    "map-list-item-not-an-object": (_roster("r-notobject2", ports=[
        {"port": 1}, {"port": 1}, ["x"]]), [*_causes(
            ("FieldValueTypeInvalid", "spec.ports[2]",
             'Invalid value: "array": spec.ports[2] in body must be of type object: "array"'),
            ("FieldValueInvalid", "spec.ports[2]",
             'Invalid value: ["x"]: must be an object for an array of list-type map')), BLOCKED]),
    "null-items-of-a-map-list": (_roster("r-null", ports=[None, None]), [*_causes(
        ("FieldValueTypeInvalid", "spec.ports[0]",
         'Invalid value: "null": spec.ports[0] in body must be of type object: "null"'),
        ("FieldValueTypeInvalid", "spec.ports[1]",
         'Invalid value: "null": spec.ports[1] in body must be of type object: "null"'),
        ("FieldValueDuplicate", "spec.ports[1]", "Duplicate value: {}")), BLOCKED]),
    "null-items-of-a-set": (_roster("r-nullword", words=[None, None]), [*_causes(
        ("FieldValueTypeInvalid", "spec.words[0]",
         'Invalid value: "null": spec.words[0] in body must be of type string: "null"'),
        ("FieldValueTypeInvalid", "spec.words[1]",
         'Invalid value: "null": spec.words[1] in body must be of type string: "null"'),
        ("FieldValueDuplicate", "spec.words[1]", "Duplicate value: null")), BLOCKED]),
}


@pytest.mark.parametrize("case", sorted(ROSTER_DUPLICATES))
def test_duplicates_in_set_and_map_lists_answer_as_the_real_server(fx: CustomObjectsApi,
                                                                   case: str) -> None:
    body, causes = ROSTER_DUPLICATES[case]

    refused = _refusal(_create(fx, body))

    assert refused["details"]["causes"] == causes
    text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    assert refused["message"] == (f'Roster.probe.fx.test "{body["metadata"]["name"]}" is '
                                  f"invalid: {text if len(causes) == 1 else f'[{text}]'}")


def test_lists_without_duplicates_are_stored(fx: CustomObjectsApi) -> None:
    created = fx.create_namespaced_custom_object(
        PROBE_GROUP, PROBE_VERSION, NS, "rosters", _roster(
            "r-ok", words=["a", "b"], numbers=[4, 4.0], legacy=["a", "a"],
            ports=[{"port": 80}, {"port": 80, "protocol": "UDP"}]))

    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP"},
                                        {"port": 80, "protocol": "UDP"}]
    assert created["spec"]["legacy"] == ["a", "a"]  # not a set: duplicates are fine


def test_an_object_stored_with_duplicates_is_not_checked_for_them_on_updates(
        fx: CustomObjectsApi) -> None:
    """A list made a set after an object was stored with a duplicate in it: the server checks no
    list of the object on updates (spec or status) until the stored object has no duplicate."""
    where = (PROBE_GROUP, PROBE_VERSION, NS, "rosters", "rat")
    fx.create_namespaced_custom_object(*where[:4], _roster("rat", legacy=["a", "a"],
                                                           words=["w"]))
    extensions = kubernetes.client.ApiextensionsV1Api(fx.api_client)
    crd = fx.api_client.sanitize_for_serialization(
        extensions.read_custom_resource_definition("rosters.probe.fx.test"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["legacy"]["x-kubernetes-list-type"] = "set"
    extensions.replace_custom_resource_definition("rosters.probe.fx.test", crd)

    def merge(patch: Any, *, status: bool = False) -> Any:
        write = fx.patch_namespaced_custom_object_status if status else \
            fx.patch_namespaced_custom_object
        return lambda: write(*where, patch, _content_type="application/merge-patch+json")

    created = _refusal(_create(fx, _roster("rat2", legacy=["a", "a"])))
    merge({"metadata": {"labels": {"x": "y"}}})()
    merge({"spec": {"note": "n"}})()
    merge({"spec": {"words": ["w", "w"]}})()
    merge({"status": {"conditions": [{"type": "A"}, {"type": "A"}]}}, status=True)()
    merge({"spec": {"legacy": ["a"]}})()  # words still hold a duplicate: nothing checked
    merge({"spec": {"words": ["w"]}})()
    merge({"status": {"conditions": [{"type": "B"}, {"type": "B"}]}}, status=True)()
    merge({"status": {"conditions": [{"type": "A"}]}}, status=True)()
    words = _refusal(merge({"spec": {"words": ["w", "w"]}}))
    conditions = _refusal(merge({"status": {"conditions": [{"type": "C"}, {"type": "C"}]}},
                                status=True))

    assert created["message"] == ('Roster.probe.fx.test "rat2" is invalid: spec.legacy[1]: '
                                  'Duplicate value: "a"')
    assert words["message"] == ('Roster.probe.fx.test "rat" is invalid: spec.words[1]: '
                                'Duplicate value: "w"')
    assert conditions["message"] == ('Roster.probe.fx.test "rat" is invalid: '
                                     'status.conditions[1]: Duplicate value: {"type":"C"}')
    stored = fx.get_namespaced_custom_object(*where)
    assert stored["spec"] == {"legacy": ["a"], "note": "n", "words": ["w"]}
    assert stored["status"] == {"conditions": [{"type": "A"}]}


def test_with_cel_off_duplicates_are_refused_all_the_same(tmp_path: Path) -> None:
    """``KubeEmulator(cel=False)``: unique list items are older than CEL (Kubernetes 1.18), so
    a server with CEL off refuses duplicates too; only the rules' causes are missing."""
    with _served(_fx_emulator(tmp_path, cel=False), tmp_path) as client:
        custom = CustomObjectsApi(client)
        alone = _refusal(_create(custom, PACKAGE_DUPLICATES["duplicate-script-names"][0]))
        with_a_rule = _refusal(_create(custom, PACKAGE_DUPLICATES["before-the-rules"][0]))
        blocking = _refusal(_create(custom, PACKAGE_DUPLICATES[
            "after-a-schema-error-that-blocks-the-rules"][0]))

    assert alone["message"] == ('Package.fx.dev "dup" is invalid: spec.scripts[1]: Duplicate '
                                'value: {"name":"main.py"}')
    assert with_a_rule["details"]["causes"] == PACKAGE_DUPLICATES["before-the-rules"][2][:1]
    assert blocking["details"]["causes"] == PACKAGE_DUPLICATES[
        "after-a-schema-error-that-blocks-the-rules"][2][:2]


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


def test_annotations_over_256_kib_in_all_are_refused_as_a_real_server_does(
        core: CoreV1Api) -> None:
    """Seen on kube-apiserver v1.37: ``metadata.annotations: Too long: may not be more than
    262144 bytes`` (kubectl's client-side apply of a 300 KB object, kopf's copy of a large spec)."""
    body: dict[str, Any] = {"metadata": {"name": "big", "annotations": {"a": "x" * (256 * 1024)}},
                            "data": {}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map(NS, body)
    assert refused.value.status == 422
    assert json.loads(refused.value.body)["message"] == (
        'ConfigMap "big" is invalid: metadata.annotations: Too long: may not be more than '
        "262144 bytes")
    body["metadata"]["annotations"] = {"a": "x" * (256 * 1024 - 1)}
    core.create_namespaced_config_map(NS, body)
