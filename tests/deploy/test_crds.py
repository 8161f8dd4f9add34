"""Every CRD the project ships, in every copy, is one a real API server accepts.

The copies: ``crds/`` (the source), the chart's ``crds/`` (with kopf's peering CRDs) and
``deploy/base/crds/``, as files and as ``helm template --include-crds`` and ``kubectl
kustomize`` render them. A real kube-apiserver refused all three of the project's CRDs once,
because the root ``metadata`` schema carried a ``description``: only ``type: object`` and rules on
``name``/``generateName`` may be there. The other rules it applies to schemas (structural schema,
the CRD's own validation, the fields CEL rules read) are checked offline by
``support.crd_rules``; the emulator applies them when it registers a CRD, and refuses a bad one
with the real server's 422, which the last tests check.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes import client
from support.crd_rules import crd_violations
from support.kube_emulator import KubeEmulator, KubeEmulatorServer
from support.manifests import CHART, REPO, JsonDict, helm_template, kustomize, load_objects

COPIES = (REPO / "crds", CHART / "crds", REPO / "deploy" / "base" / "crds")
CRD_FILES = sorted(path for folder in COPIES for path in folder.glob("*.yaml"))
#: Folders that hold no CRD of the project's: tools, caches, the emulator's own test CRD.
NOT_SEARCHED = {".git", ".cache", "node_modules", "testdata"}
ALLOWED_AT_ROOT_METADATA = {"type", "properties"}


def _crds(path: Path) -> list[JsonDict]:
    return [doc for doc in load_objects(path.read_text(encoding="utf-8"))
            if doc.get("kind") == "CustomResourceDefinition"]


def _documents() -> list[tuple[str, JsonDict]]:
    return [(f"{path.relative_to(REPO)}:{crd['metadata']['name']}", crd)
            for path in CRD_FILES for crd in _crds(path)]


DOCUMENTS = _documents()


def _schemas(crd: JsonDict) -> list[JsonDict]:
    return [version["schema"]["openAPIV3Schema"] for version in crd["spec"]["versions"]]


def _bare_root_metadata_problems(crd: JsonDict) -> list[str]:
    """What the root metadata schema holds besides ``type: object`` (and properties that only
    restrict name and generateName)."""
    problems = []
    for schema in _schemas(crd):
        metadata = (schema.get("properties") or {}).get("metadata")
        if metadata is None:
            continue
        if metadata.get("type") != "object":
            problems.append(f"type is {metadata.get('type')!r}, not object")
        extra = set(metadata) - ALLOWED_AT_ROOT_METADATA
        if extra:
            problems.append(f"root metadata holds {sorted(extra)}")
        restricted = set(metadata.get("properties") or {})
        if restricted - {"name", "generateName"}:
            problems.append(f"root metadata restricts {sorted(restricted)}")
    return problems


# --- the copies ----------------------------------------------------------------------------------


def _repository_yaml() -> list[Path]:
    """The YAML files of the work tree that git does not ignore (every file, without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.yaml",
                                 "*.yml"], cwd=REPO, capture_output=True, text=True, check=True,
                                timeout=60).stdout.splitlines()
        return [REPO / name for name in listed]
    except (OSError, subprocess.SubprocessError):
        return [p for p in REPO.rglob("*.y*ml")
                if not any(part.startswith(".venv") for part in p.relative_to(REPO).parts)]


def test_every_crd_of_the_repository_is_in_a_checked_copy() -> None:
    """A CRD added anywhere else (another copy, a new chart) is not left out of these tests."""
    found = set()
    for path in _repository_yaml():
        if set(path.relative_to(REPO).parts) & NOT_SEARCHED or not path.is_file():
            continue
        if "CustomResourceDefinition" in path.read_text(encoding="utf-8", errors="replace"):
            found.add(path)
    assert found <= set(CRD_FILES), sorted(str(p.relative_to(REPO)) for p in found - set(CRD_FILES))
    assert len(DOCUMENTS) == 4 + 4 + 2 + 4  # crds/, chart (+ kopf's two), deploy/base


@pytest.mark.parametrize(("where", "crd"), DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_the_root_metadata_says_nothing_but_type_object(where: str, crd: JsonDict) -> None:
    assert _bare_root_metadata_problems(crd) == [], where


@pytest.mark.parametrize(("where", "crd"), DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_a_real_api_server_would_accept_it(where: str, crd: JsonDict) -> None:
    assert [str(v) for v in crd_violations(crd)] == [], where


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_emulator_registers_it(path: Path) -> None:
    registered = KubeEmulator().load_crds(path)
    assert len(registered) == len(_crds(path))


def test_the_rendered_installs_carry_the_same_crds(helm: str, kubectl: str) -> None:
    files = {crd["metadata"]["name"]: crd for _, crd in DOCUMENTS}
    rendered = {"helm": [o for o in helm_template(helm, extra=["--include-crds"])
                         if o["kind"] == "CustomResourceDefinition"],
                "kustomize": [o for o in kustomize(kubectl, REPO / "deploy" / "base")
                              if o["kind"] == "CustomResourceDefinition"]}
    assert len(rendered["helm"]) == 6 and len(rendered["kustomize"]) == 4
    for tool, crds in rendered.items():
        for crd in crds:
            name = crd["metadata"]["name"]
            assert _bare_root_metadata_problems(crd) == [], (tool, name)
            assert [str(v) for v in crd_violations(crd)] == [], (tool, name)
            assert crd["spec"] == files[name]["spec"], (tool, name)


# --- the checks find what a real server refuses ------------------------------------------------

PACKAGE_CRD = next(crd for where, crd in DOCUMENTS if where.startswith("crds/package.yaml"))
ROOT = "spec.validation.openAPIV3Schema"
METADATA_REFUSED = (f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other "
                    "than name and generateName, but metadata is implicitly specified")


def _spec(schema: JsonDict) -> JsonDict:
    spec: JsonDict = schema["properties"]["spec"]
    return spec


def _rule(rule: str) -> Callable[[JsonDict], None]:
    return lambda schema: _spec(schema)["x-kubernetes-validations"].append(
        {"rule": rule, "message": "m"})


def _set(path: list[str], **values: Any) -> Callable[[JsonDict], None]:
    def change(schema: JsonDict) -> None:
        node = schema
        for key in path:
            node = node.setdefault(key, {})
        node.update(values)
    return change


SPEC = ["properties", "spec", "properties"]
#: A change to the Package CRD's schema, and the real server's error for it.
REFUSED: dict[str, tuple[Callable[[JsonDict], None], str]] = {
    "description-on-root-metadata": (_set(["properties", "metadata"], description="meta"),
                                     METADATA_REFUSED),
    "labels-restricted-in-root-metadata": (
        _set(["properties", "metadata", "properties", "labels"], type="object"),
        METADATA_REFUSED),
    "default-on-root-metadata": (_set(["properties", "metadata"], default={}),
                                 f"{ROOT}.properties[metadata].default: Forbidden: must not be set "
                                 "in top-level metadata"),
    "root-metadata-not-an-object": (_set(["properties", "metadata"], type="string"),
                                    f'{ROOT}.properties[metadata].type: Invalid value: "string": '
                                    "must be object"),
    "field-without-type": (_set([*SPEC, "extra"], description="no type"),
                           f"{ROOT}.properties[spec].properties[extra].type: Required value: "
                           "must not be empty for specified object fields"),
    "description-inside-anyOf": (
        _set(["properties", "spec"], anyOf=[{"required": ["image"], "description": "d"}]),
        f"{ROOT}.properties[spec].anyOf[0].description: Forbidden: must be empty to be "
        "structural"),
    "preserve-unknown-fields-false": (
        _set([*SPEC, "config"], **{"x-kubernetes-preserve-unknown-fields": False}),
        f"{ROOT}.properties[spec].properties[config].x-kubernetes-preserve-unknown-fields: "
        "Invalid value: false: must be true or undefined"),
    "int-or-string-and-preserve-unknown-fields": (
        _set([*SPEC, "extra"], **{"x-kubernetes-int-or-string": True,
                                  "x-kubernetes-preserve-unknown-fields": True}),
        f"{ROOT}.properties[spec].properties[extra].x-kubernetes-preserve-unknown-fields: "
        "Invalid value: true: must be false if x-kubernetes-int-or-string is true"),
    "kind-not-a-string": (_set(["properties", "kind"], type="integer"),
                          f'{ROOT}.properties[kind].type: Invalid value: "integer": must be '
                          "string"),
    "properties-and-additionalProperties": (
        _set([*SPEC, "config"], properties={"a": {"type": "string"}},
             additionalProperties={"type": "string"}),
        f"{ROOT}.properties[spec].properties[config].additionalProperties: Forbidden: "
        "additionalProperties and properties are mutual exclusive"),
    "list-map-key-neither-required-nor-defaulted": (
        _set([*SPEC, "scripts", "items"], required=["content"]),
        f"{ROOT}.properties[spec].properties[scripts].items.properties[name].default: Required "
        "value: this property is in x-kubernetes-list-map-keys, so it must have a default or be "
        "a required property"),
    "pattern-that-re2-refuses": (
        _set([*SPEC, "image"], pattern="^(?!latest).*$"),
        f'{ROOT}.properties[spec].properties[image].pattern: Invalid value: "^(?!latest).*$": '
        "must be a valid regular expression"),
    "anyOf-at-the-root-with-status": (
        _set([], anyOf=[{"required": ["spec"]}]),
        f'{ROOT}: Invalid value: "anyOf": only'),
    "cel-rule-reads-an-undefined-field": (
        _rule("has(self.entrypoint) && self.scripts.exists(s, s.nmae == self.entrypoint)"),
        f"{ROOT}.properties[spec].x-kubernetes-validations[2].rule: Invalid value: "
        '"has(self.entrypoint) && self.scripts.exists(s, s.nmae == self.entrypoint)": '
        "compilation failed: ERROR: <input>:1:50: undefined field 'nmae'"),
    "cel-rule-reads-a-field-of-a-string": (
        _rule("self.entrypoint.name == 'x'"),
        "compilation failed: ERROR: <input>:1:17: type 'string' does not support field "
        "selection"),
    "cel-rule-that-does-not-parse": (_rule("self.scripts.size() >"),
                                     "compilation failed: ERROR: <input>:1:1: Syntax error"),
    "cel-rule-with-has-of-no-field": (_rule("has(self)"), "invalid argument to has() macro"),
    "cel-oldSelf-in-an-atomic-list": (
        _set([*SPEC, "tags"], type="array", items={
            "type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}),
        f"{ROOT}.properties[spec].properties[tags].items.x-kubernetes-validations[0].rule: "
        'Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion '
        f"of the schema within {ROOT}.properties[spec].properties[tags]"),
    "cel-rule-with-a-two-line-rule-and-no-message": (
        lambda s: _spec(s)["x-kubernetes-validations"].append({"rule": "true ||\nfalse"}),
        "message must be specified if rule contains line breaks"),
    "cel-rule-with-an-unknown-reason": (
        lambda s: _spec(s)["x-kubernetes-validations"].append(
            {"rule": "true", "reason": "Nope"}),
        'x-kubernetes-validations[2].reason: Unsupported value: "Nope"'),
    "cel-rule-with-a-fieldPath-not-in-the-schema": (
        lambda s: _spec(s)["x-kubernetes-validations"].append(
            {"rule": "true", "fieldPath": ".scripts[0].nmae"}),
        'x-kubernetes-validations[2].fieldPath: Invalid value: ".scripts[0].nmae": fieldPath '
        "must be a valid path"),
}


def _changed(change: Callable[[JsonDict], None]) -> JsonDict:
    crd = copy.deepcopy(PACKAGE_CRD)
    change(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return crd


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_checks_refuse_what_a_real_server_refuses(case: str) -> None:
    change, expected = REFUSED[case]
    crd = _changed(change)
    found = [str(v) for v in crd_violations(crd)]
    assert any(v.startswith(expected) or expected in v for v in found), found


@pytest.mark.parametrize("change", [
    _set(["properties", "metadata", "properties", "name"], type="string", maxLength=40),
    _set(["properties", "metadata", "properties"], name={"type": "string"},
         generateName={"type": "string"}),
    _set([*SPEC, "extra"], **{"x-kubernetes-int-or-string": True}),
    _set([*SPEC, "extra"], **{"x-kubernetes-preserve-unknown-fields": True}),
    _set([*SPEC, "extra"], type="string", anyOf=[{"pattern": "^a"}, {"pattern": "^b"}]),
    _rule("self.config.anything.at.all == 1 && self.resources.limits['cpu'] == '1'"),
    _rule("self.scripts.all(s, s.name.endsWith('.py') || size(s.content) < 10)"),
    _rule("self.scripts.map(s, s.name).exists(n, n == 'main.py')"),
], ids=["name-restricted", "name-and-generateName", "int-or-string", "preserve-unknown",
        "anyOf-of-value-validations", "cel-dynamic-fields-and-maps", "cel-all", "cel-map"])
def test_the_checks_accept_what_a_real_server_accepts(change: Callable[[JsonDict], None]) -> None:
    assert [str(v) for v in crd_violations(_changed(change))] == []


def test_several_versions_are_reported_by_version() -> None:
    crd = _changed(_set(["properties", "metadata"], description="meta"))
    other = copy.deepcopy(crd["spec"]["versions"][0])
    other.update(name="v1alpha2", storage=False)
    other["schema"]["openAPIV3Schema"]["description"] = "another schema"
    crd["spec"]["versions"].append(other)
    assert [v.field for v in crd_violations(crd)] == [
        "spec.versions[0].schema.openAPIV3Schema.properties[metadata]",
        "spec.versions[1].schema.openAPIV3Schema.properties[metadata]"]


# --- the emulator refuses them as a real server does ---------------------------------------------


def test_the_emulator_refuses_a_crd_with_a_description_on_its_root_metadata(
        tmp_path: Path) -> None:
    crd = _changed(REFUSED["description-on-root-metadata"][0])
    path = tmp_path / "package.yaml"
    path.write_text(json.dumps(crd), encoding="utf-8")
    emulator = KubeEmulator()
    with pytest.raises(kmock.KubernetesError) as refused:
        emulator.load_crds(path)
    assert refused.value.status == 422
    assert refused.value.message == (
        f'CustomResourceDefinition.apiextensions.k8s.io "packages.fx.dev" is invalid: '
        f"{METADATA_REFUSED}")
    assert kmock.resource("fx.dev", "v1alpha1", "packages") not in emulator.resources
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        api = server.api_client()
        extensions = client.ApiextensionsV1Api(api)
        with pytest.raises(client.ApiException) as answered:
            extensions.create_custom_resource_definition(crd)
        status = json.loads(answered.value.body)
        assert (answered.value.status, status["reason"]) == (422, "Invalid")
        assert status["details"]["causes"] == [{
            "reason": "FieldValueForbidden",
            "field": f"{ROOT}.properties[metadata]",
            "message": "Forbidden: must not specify anything other than name and generateName, "
                       "but metadata is implicitly specified"}]
        with pytest.raises(client.ApiException) as missing:
            client.CustomObjectsApi(api).list_namespaced_custom_object(
                "fx.dev", "v1alpha1", "default", "packages")
        assert missing.value.status == 404
        # The fixed CRD goes in, and so does a change of it that breaks it: refused again.
        created = extensions.create_custom_resource_definition(PACKAGE_CRD)
        broken = api.sanitize_for_serialization(created)
        broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"][
            "description"] = "meta"
        with pytest.raises(client.ApiException) as replaced:
            extensions.replace_custom_resource_definition("packages.fx.dev", broken)
        assert replaced.value.status == 422
        assert METADATA_REFUSED in json.loads(replaced.value.body)["message"]
