"""Bad manifests (P8): each gets a status condition and an Event naming the problem, nothing
stored is lost, and the operator keeps serving the rest.

The manifests that break a CRD's CEL rules (``x-kubernetes-validations``) never reach the
operator: the API server refuses them (422, the rule's message), as the emulator now does. The
operator checks them all the same (defence in depth, e.g. on an API server older than 1.25 or
with CEL off); those checks are run against an emulator with CEL off (``KubeEmulator(cel=False)``).

A Package naming a script twice never reaches the operator either, CEL or not: ``spec.scripts``
is a list-type map keyed by name, whose duplicates every server since 1.18 refuses (422,
``Duplicate value``). The operator's own check of it is covered by the unit tests of
``package_definition`` (tests/unit/test_job_spec.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fx_operator.cli.cluster import sealed_manifest
from fx_operator.domain.sealing import SealingKeyPair
from kubernetes.client import ApiException
from support.cluster import PLATFORM_NAMESPACE, Cluster, cluster
from support.kube_emulator import KubeEmulator
from support.postgres import PostgresServer

STORED_VALUE = "stored-value-that-must-not-be-lost-77"
NS = "team-a"


@pytest.fixture(scope="module")
def k8s(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        postgres_server: PostgresServer) -> Iterator[Cluster]:
    """The cluster, CEL on as on any API server since 1.25; ``"cel-off"`` (indirect
    parametrization) for one with CEL off, whose API lets the CRD rules' cases through. One at a
    time: pytest tears one down before it starts the other (the tests with CEL off come last)."""
    cel = getattr(request, "param", "cel") != "cel-off"
    database = "e2e_bad_manifests" if cel else "e2e_bad_manifests_cel_off"
    dsn = postgres_server.create_database(database)
    with cluster(tmp_path_factory.mktemp("bad"), dsn, emulator=KubeEmulator(cel=cel)) as machine:
        machine.sealed_secret(NS, "keep", {"KEEP": STORED_VALUE}, "package", package="good")
        machine.ready("scopedsecrets", NS, "keep")
        machine.sealed_secret(NS, "project-secrets", {"PROJECT_TOKEN": "project-token-value-1"},
                              "project")
        machine.ready("scopedsecrets", NS, "project-secrets")
        yield machine
    postgres_server.drop_database(database)


def _sealed(k8s: Cluster, values: dict[str, Any], *, namespace: str = NS,
            scope: str = "package", package: str | None = "pkg") -> dict[str, str]:
    key = k8s.public_key()
    assert key is not None
    manifest = sealed_manifest(values, key, namespace=namespace, scope=scope, package=package,
                               name="x")
    data: dict[str, str] = manifest["spec"]["encryptedData"]
    return data


def _scripts(**scripts: str) -> list[dict[str, str]]:
    return [{"name": n.replace("_py", ".py"), "content": c} for n, c in scripts.items()]


#: Manifests the API server accepts and the operator refuses: name -> (spec, reason, words).
PACKAGE_CASES: dict[str, tuple[Callable[[Cluster], dict[str, Any]], str, str]] = {
    "two-scripts-no-entrypoint": (lambda k: {"scripts": _scripts(a_py="1", b_py="2")},
                                  "NoEntrypoint", "spec.entrypoint"),
    "oversized-scripts": (lambda k: {"scripts": [
        {"name": f"s{i}.py", "content": "#" * 250_000} for i in range(4)],
        "entrypoint": "s0.py"}, "InvalidSpec", "spec.scripts"),
    "package-secret-in-script": (lambda k: {"scripts": _scripts(
        main_py=f"password = {STORED_VALUE!r}\n")}, "SecretInScript", "KEEP"),
    "project-secret-in-script": (lambda k: {"scripts": _scripts(
        main_py="token = 'project-token-value-1'\n")}, "SecretInScript", "PROJECT_TOKEN"),
}

SECRET_CASES: dict[str, tuple[Callable[[Cluster], dict[str, Any]], str, str]] = {
    "platform-scope-outside-platform-namespace": (
        lambda k: {"scope": "platform", "encryptedData": _sealed(k, {"A": "v"}, scope="platform",
                                                                 package=None)},
        "PlatformScopeNotAllowed", "platform namespace"),
    "sealed-for-another-namespace": (
        lambda k: {"scope": "package", "package": "pkg",
                   "encryptedData": _sealed(k, {"A": "v"}, namespace="team-b")},
        "SealedForAnotherObject", "A"),
    "sealed-for-another-name": (
        lambda k: {"scope": "package", "package": "pkg",
                   "encryptedData": {"B": _sealed(k, {"A": "v"})["A"]}},
        "SealedForAnotherObject", "B"),
    "sealed-for-another-package": (
        lambda k: {"scope": "package", "package": "pkg",
                   "encryptedData": _sealed(k, {"A": "v"}, package="other")},
        "SealedForAnotherObject", "A"),
    "sealed-for-another-scope": (
        lambda k: {"scope": "package", "package": "pkg",
                   "encryptedData": _sealed(k, {"A": "v"}, scope="project", package=None)},
        "SealedForAnotherObject", "A"),
    "sealed-with-another-key": (
        lambda k: {"scope": "project", "encryptedData": sealed_manifest(
            {"A": "v"}, SealingKeyPair.generate().public, namespace=NS, scope="project",
            package=None, name="x")["spec"]["encryptedData"]},
        "SealedForAnotherObject", "another operator key"),
    "not-base64": (lambda k: {"scope": "project", "encryptedData": {"A": "not base64!"}},
                   "SealedForAnotherObject", "not base64"),
    "truncated": (lambda k: {"scope": "project", "encryptedData": {
        "A": base64.b64encode(base64.b64decode(_sealed(
            k, {"A": "v"}, scope="project", package=None)["A"])[:30]).decode()}},
        "SealedForAnotherObject", "truncated"),
    "bad-secret-name": (
        lambda k: {"scope": "project",
                   "encryptedData": _sealed(k, {"bad name": "v"}, scope="project",
                                            package=None)},
        "InvalidSecret", "bad name"),
}

#: Manifests that break a CRD's CEL rule: name -> (plural, kind, spec, the rule's message, the
#: operator's reason and words when the API lets them through).
RULE_CASES: dict[str, tuple[str, str, Callable[[Cluster], dict[str, Any]], str, str, str]] = {
    "entrypoint-not-a-script": (
        "packages", "Package",
        lambda k: {"scripts": _scripts(main_py="print(1)"), "entrypoint": "other.py"},
        "entrypoint must name one of the scripts", "NoEntrypoint", "spec.entrypoint"),
    "secrets-json-in-package": (
        "packages", "Package",
        lambda k: {"scripts": [*_scripts(main_py="print(1)"),
                               {"name": "secrets.json", "content": '{"A": "b"}'}]},
        "a Package carries no secrets.json; seal it into a ScopedSecret",
        "SecretsFileInPackage", "secrets.json"),
    "package-scope-without-package": (
        "scopedsecrets", "ScopedSecret",
        lambda k: {"scope": "package", "encryptedData": _sealed(k, {"A": "v"})},
        "package scope needs spec.package", "InvalidSecret", "spec.package"),
    "project-scope-with-package": (
        "scopedsecrets", "ScopedSecret",
        lambda k: {"scope": "project", "package": "pkg",
                   "encryptedData": _sealed(k, {"A": "v"}, scope="project", package=None)},
        "spec.package is only for package scope", "InvalidSecret", "spec.package"),
}

EXECUTION_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown-package": ({"package": "nope"}, "PackageNotFound", "nope"),
    "package-of-another-namespace": ({"package": "only-in-team-b"}, "PackageNotFound",
                                     "only-in-team-b"),
    "package-not-ready": ({"package": "not-ready"}, "PackageNotReady", "NoEntrypoint"),
}


def _refused(k8s: Cluster, plural: str, name: str, reason: str, words: str) -> None:
    body = k8s.ready(plural, NS, name) if plural != "executions" else k8s.finished(NS, name)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False", ready
    assert ready["reason"] == reason, ready
    assert words in ready["message"], ready
    events = [e for e in k8s.events(NS, name, reason) if e["reason"] == reason]
    assert events and events[0]["type"] == "Warning"
    assert words in events[0]["message"]


@pytest.mark.parametrize("name", sorted(PACKAGE_CASES))
def test_bad_packages(k8s: Cluster, name: str) -> None:
    spec, reason, words = PACKAGE_CASES[name]
    if name == "package-secret-in-script":  # the package's own secret, stored before it
        k8s.sealed_secret(NS, f"{name}-secrets", {"KEEP": STORED_VALUE}, "package",
                          package=name)
        k8s.ready("scopedsecrets", NS, f"{name}-secrets")
    k8s.apply("packages", NS, {"kind": "Package", "metadata": {"name": name}, "spec": spec(k8s)})
    _refused(k8s, "packages", name, reason, words)


@pytest.mark.parametrize("name", sorted(SECRET_CASES))
def test_bad_scoped_secrets(k8s: Cluster, name: str) -> None:
    spec, reason, words = SECRET_CASES[name]
    k8s.apply("scopedsecrets", NS, {"kind": "ScopedSecret", "metadata": {"name": name},
                                    "spec": spec(k8s)})
    _refused(k8s, "scopedsecrets", name, reason, words)


@pytest.mark.parametrize("name", sorted(EXECUTION_CASES))
def test_bad_executions(k8s: Cluster, name: str) -> None:
    if name == "package-of-another-namespace":
        k8s.package("team-b", "only-in-team-b", {"main.py": "print(1)"})
    if name == "package-not-ready":  # accepted by the API, refused by the operator
        k8s.package(NS, "not-ready", {"a.py": "print(1)", "b.py": "print(2)"})
        k8s.ready("packages", NS, "not-ready")
    spec, reason, words = EXECUTION_CASES[name]
    k8s.execution(NS, name, **spec)
    body = k8s.finished(NS, name)
    assert body["status"]["phase"] == "Failed"
    _refused(k8s, "executions", name, reason, words)


def test_a_bad_update_keeps_what_was_stored(k8s: Cluster) -> None:
    body = k8s.get("scopedsecrets", NS, "keep")
    body["spec"]["encryptedData"]["KEEP"] = "not base64!"
    k8s.custom.replace_namespaced_custom_object("fx.dev", "v1alpha1", NS, "scopedsecrets",
                                                "keep", body)
    _refused(k8s, "scopedsecrets", "keep", "SealedForAnotherObject", "KEEP")
    k8s.package(NS, "good", {"main.py": "from fx_ef import context\n"
                                        "print(context.secrets.get('KEEP') is not None)\n"})
    k8s.ready("packages", NS, "good")
    k8s.execution(NS, "good-1", "good")
    status = k8s.finished(NS, "good-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["outputTail"].strip() == "True"
    assert status["manifest"]["KEEP"]["version"] == 1


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_the_api_refuses_what_the_crd_rules_forbid(k8s: Cluster, name: str) -> None:
    plural, kind, spec, message, _, _ = RULE_CASES[name]

    with pytest.raises(ApiException) as refused:
        k8s.apply(plural, NS, {"kind": kind, "metadata": {"name": name}, "spec": spec(k8s)})

    assert refused.value.status == 422
    status = json.loads(refused.value.body)
    assert status["reason"] == "Invalid"
    assert status["message"] == f'{kind}.fx.dev "{name}" is invalid: spec: Invalid value: {message}'
    assert status["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "field": "spec", "message": f"Invalid value: {message}"}]
    with pytest.raises(ApiException) as missing:
        k8s.get(plural, NS, name)
    assert missing.value.status == 404
    assert k8s.events(NS, name) == []


def _refused_for_a_script_name_twice(k8s: Cluster, name: str) -> None:
    spec = {"scripts": _scripts(main_py="1") + _scripts(main_py="2")}

    with pytest.raises(ApiException) as refused:
        k8s.apply("packages", NS, {"kind": "Package", "metadata": {"name": name}, "spec": spec})

    assert refused.value.status == 422
    status = json.loads(refused.value.body)
    assert status["reason"] == "Invalid"
    assert status["message"] == (f'Package.fx.dev "{name}" is invalid: spec.scripts[1]: '
                                 'Duplicate value: {"name":"main.py"}')
    assert status["details"]["causes"] == [
        {"reason": "FieldValueDuplicate", "field": "spec.scripts[1]",
         "message": 'Duplicate value: {"name":"main.py"}'}]
    with pytest.raises(ApiException) as missing:
        k8s.get("packages", NS, name)
    assert missing.value.status == 404
    assert k8s.events(NS, name) == []


def test_the_api_refuses_a_script_name_twice(k8s: Cluster) -> None:
    _refused_for_a_script_name_twice(k8s, "duplicate-script-names")


def test_the_api_refuses_to_change_an_execution(k8s: Cluster) -> None:
    k8s.package(NS, "immutable", {"main.py": "print(1)\n"})
    k8s.ready("packages", NS, "immutable")
    k8s.execution(NS, "immutable-1", "immutable")

    with pytest.raises(ApiException) as refused:
        k8s.custom.patch_namespaced_custom_object(
            "fx.dev", "v1alpha1", NS, "executions", "immutable-1", {"spec": {"params": {"x": 1}}})

    assert refused.value.status == 422
    assert json.loads(refused.value.body)["message"] == (
        'Execution.fx.dev "immutable-1" is invalid: spec: Invalid value: an Execution cannot be '
        "changed once created; create another")
    assert k8s.finished(NS, "immutable-1")["spec"] == {"package": "immutable"}


def test_the_operator_keeps_serving(k8s: Cluster) -> None:
    assert len(PACKAGE_CASES) + len(SECRET_CASES) + len(RULE_CASES) + \
        len(EXECUTION_CASES) >= 20
    k8s.assert_still_serving(NS)
    assert PLATFORM_NAMESPACE  # the platform namespace exists, and nothing above touched it


# --- the operator's own checks behind the CRD rules: an API server with CEL off ------------------

@pytest.mark.parametrize("k8s", ["cel-off"], indirect=True)
@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_the_operator_refuses_what_the_crd_rules_forbid_when_the_api_lets_it_through(
        k8s: Cluster, name: str) -> None:
    plural, kind, spec, _, reason, words = RULE_CASES[name]

    k8s.apply(plural, NS, {"kind": kind, "metadata": {"name": name}, "spec": spec(k8s)})

    _refused(k8s, plural, name, reason, words)


@pytest.mark.parametrize("k8s", ["cel-off"], indirect=True)
def test_with_cel_off_the_api_still_refuses_a_script_name_twice(k8s: Cluster) -> None:
    """Unique keys of list-type map lists are older than CEL: no API server lets them through."""
    _refused_for_a_script_name_twice(k8s, "duplicate-script-names")


@pytest.mark.parametrize("k8s", ["cel-off"], indirect=True)
def test_with_cel_off_the_operator_keeps_serving(k8s: Cluster) -> None:
    k8s.assert_still_serving(NS)
