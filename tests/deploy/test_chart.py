"""The Helm chart (charts/fx-operator), rendered with helm in several value combinations: every
object valid for Kubernetes (kubernetes-validate --strict, and the custom kinds by schema), the
pod restricted, and each setting landing where the operator reads it."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fx_operator.config import Settings
from fx_operator.domain import api_group, job_spec
from support.manifests import (
    CHART,
    NAMESPACE,
    JsonDict,
    ToolFailed,
    find,
    helm_template,
    one,
    permissions,
    pod_specs,
    restricted_violations,
    run,
    validation_errors,
)

EXTERNAL_DB = {"mode": "external", "external": {"existingSecret": "fx-db", "key": "uri"}}

#: The value combinations every check runs on.
COMBOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-db-3-replicas": {"operator": {"replicas": 3}, "database": EXTERNAL_DB},
    "watch-namespaces": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "watch-namespaces-2-replicas": {
        "operator": {"replicas": 2, "watchNamespaces": ["team-a"],
                     "platformNamespace": "fx-platform"},
        "database": EXTERNAL_DB},
    "existing-master-key": {"masterKey": {"existingSecret": "my-master-key", "key": "key.b64"}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True,
                                                       "labels": {"release": "prometheus"}}}},
    "no-network-policy-no-metrics-service": {"broker": {"networkPolicy": {"enabled": False}},
                                             "metrics": {"service": {"enabled": False}}},
    "existing-claim": {"database": {"sidecar": {"persistence": {"existingClaim": "pg-data"}}}},
    "no-rbac-existing-account": {"rbac": {"create": False},
                                 "serviceAccount": {"create": False, "name": "fx-sa"}},
    "everything-set": {
        "fullnameOverride": "fx",
        "image": {"operator": {"repository": "registry.example/fx-operator", "tag": "1.2.3",
                               "pullPolicy": "Always"},
                  "runtime": {"repository": "registry.example/fx-runtime", "tag": "1.2.3"}},
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {"platformWriters": ["team-a/writer"], "jobTtlSeconds": 60,
                     "logFormat": "json", "verbose": True, "priorityClassName": "critical",
                     "nodeSelector": {"kubernetes.io/os": "linux"},
                     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "fx",
                                      "effect": "NoSchedule"}],
                     "affinity": {"nodeAffinity": {
                         "requiredDuringSchedulingIgnoredDuringExecution": {
                             "nodeSelectorTerms": [{"matchExpressions": [{
                                 "key": "kubernetes.io/arch", "operator": "In",
                                 "values": ["amd64"]}]}]}}},
                     "podAnnotations": {"example.com/team": "platform"},
                     "podLabels": {"example.com/tier": "control"},
                     "extraEnv": [{"name": "FX_POOL_MAX_SIZE", "value": "20"}],
                     "resources": {"requests": {"cpu": "50m", "memory": "200Mi"},
                                   "limits": {"cpu": 1, "memory": "1Gi"}}},
        "database": {"sidecar": {"uid": 999, "image": {"repository": "postgres",
                                                       "tag": "17-bookworm",
                                                       "pullPolicy": "Always"},
                                 "persistence": {"size": "20Gi", "storageClass": "-"}}},
        "broker": {"port": 9443, "audience": "fx-broker-prod", "clusterDomain": "k8s.internal",
                   "networkPolicy": {"metricsFrom": [{
                       "namespaceSelector": {"matchLabels": {
                           "kubernetes.io/metadata.name": "monitoring"}},
                       "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]}},
        "metrics": {"port": 9191, "serviceMonitor": {"enabled": True, "interval": "1m"}},
        "serviceAccount": {"name": "fx-operator-sa", "annotations": {"example.com/role": "fx"}},
    },
}

Render = Callable[[str], list[JsonDict]]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    cache: dict[str, list[JsonDict]] = {}

    def rendered(combo: str) -> list[JsonDict]:
        if combo not in cache:
            cache[combo] = helm_template(helm, COMBOS[combo])
        return copy.deepcopy(cache[combo])
    return rendered


def _values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def _merged(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    merged = copy.deepcopy(base if base is not None else _values())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(value, merged[key])
        else:
            merged[key] = value
    return merged


def _deployment(objects: list[JsonDict]) -> JsonDict:
    return one(objects, "Deployment")


def _container(objects: list[JsonDict], name: str = "operator") -> JsonDict:
    pod = _deployment(objects)["spec"]["template"]["spec"]
    (found,) = [c for c in [*(pod.get("initContainers") or []), *pod["containers"]]
                if c["name"] == name]
    return dict(found)


def _env(objects: list[JsonDict]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom"))
            for e in _container(objects)["env"]}


# --- every combination ----------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_every_object_is_valid(render: Render, combo: str) -> None:
    objects = render(combo)
    assert objects
    assert validation_errors(objects) == []
    assert all(o["metadata"].get("namespace") in (None, NAMESPACE)
               or o["kind"] in ("Role", "RoleBinding", "KopfPeering") for o in objects)


@pytest.mark.parametrize("combo", COMBOS)
def test_the_pod_is_restricted(render: Render, combo: str) -> None:
    specs = pod_specs(render(combo))
    assert len(specs) == 1
    for where, pod in specs.items():
        assert restricted_violations(pod) == [], where
        assert pod["automountServiceAccountToken"] is False
        mounts = {c["name"]: {m["name"] for m in c.get("volumeMounts") or []}
                  for c in [*(pod.get("initContainers") or []), *pod["containers"]]}
        # The API token and the master key reach the operator container only.
        assert {n for n, m in mounts.items() if "kube-api-access" in m} == {"operator"}
        assert {n for n, m in mounts.items() if "master-key" in m} == {"operator"}


@pytest.mark.parametrize("combo", COMBOS)
def test_every_env_var_is_a_setting_of_the_operator(render: Render, combo: str) -> None:
    settings = {f"FX_{name.upper()}" for name in Settings.model_fields}
    assert set(_env(render(combo))) <= settings


@pytest.mark.parametrize("combo", COMBOS)
def test_the_values_match_the_schema(combo: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(_merged(COMBOS[combo]))


def test_the_schema_declares_exactly_the_values() -> None:
    """Every key of values.yaml is in the schema (it validates, unknown keys refused) and every
    key the schema declares is in values.yaml (documented there, with its default)."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def declared(node: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for key, sub in (node.get("properties") or {}).items():
            found.add(prefix + key)
            found |= declared(sub, f"{prefix}{key}.")
        return found

    def present(values: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for key, value in values.items():
            found.add(prefix + key)
            if isinstance(value, dict):
                found |= present(value, f"{prefix}{key}.")
        return found
    values = _values()
    assert declared(schema, "") - {"global"} <= present(values, "")
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator(schema).validate(values)


def test_helm_lint(helm: str, tmp_path: Path) -> None:
    run([helm, "lint", str(CHART), "--strict"])
    for combo in ("external-db-3-replicas", "watch-namespaces", "everything-set"):
        values = tmp_path / f"{combo}.json"
        values.write_text(json.dumps(COMBOS[combo]))
        run([helm, "lint", str(CHART), "--strict", "--values", str(values)])


# --- defaults -------------------------------------------------------------------------------------


def test_defaults_make_a_cluster_wide_operator_with_a_sidecar_database(render: Render) -> None:
    objects = render("defaults")
    assert sorted(o["kind"] for o in objects) == sorted([
        "ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy",
        "PersistentVolumeClaim", "Secret", "Service", "Service", "ServiceAccount"])
    deployment = _deployment(objects)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    operator = _container(objects)
    assert operator["args"] == ["fxctl", "operator", "--liveness=http://0.0.0.0:8080/healthz",
                                "--log-format=full"]
    assert operator["image"] == "ghcr.io/fx-dev/fx-operator:0.1.0"
    env = _env(objects)
    assert env["FX_DATABASE_URL"] == "postgresql:///fx?host=/var/run/postgresql&user=fx"
    assert env["FX_MASTER_KEY_FILE"] == "/etc/fx/master-key/master.key"
    assert env["FX_HOME"].startswith("/tmp/")
    assert env["FX_PLATFORM_NAMESPACE"] == NAMESPACE
    assert json.loads(env["FX_PLATFORM_WRITERS"]) == []
    assert env["FX_RUNTIME_IMAGE"] == "ghcr.io/fx-dev/fx-runtime:0.1.0"
    assert env["FX_BROKER_AUDIENCE"] == "fx-broker"
    assert env["FX_JOB_TTL_SECONDS"] == "3600" and env["FX_METRICS_PORT"] == "9090"
    # Each value parses as the operator's settings would parse it.
    settings = Settings(**{k[3:].lower(): json.loads(v) if v.startswith("[") else v
                           for k, v in env.items()})
    assert settings.broker_port == 8443 and settings.platform_writers == []


def test_the_broker_is_reached_by_its_service_names(render: Render) -> None:
    objects = render("everything-set")
    env = _env(objects)
    service = one(objects, "Service", "fx-broker")
    url = f"https://fx-broker.{NAMESPACE}.svc:9443"
    assert env["FX_BROKER_URL"] == url and env["FX_BROKER_PORT"] == "9443"
    assert json.loads(env["FX_BROKER_DNS_NAMES"]) == [
        "fx-broker", f"fx-broker.{NAMESPACE}", f"fx-broker.{NAMESPACE}.svc",
        f"fx-broker.{NAMESPACE}.svc.k8s.internal"]
    assert service["spec"]["ports"] == [{"name": "https", "port": 9443, "targetPort": "broker",
                                         "protocol": "TCP"}]
    ports = {p["name"]: p["containerPort"] for p in _container(objects)["ports"]}
    assert ports == {"broker": 9443, "metrics": 9191, "health": 8080}
    pod_labels = _deployment(objects)["spec"]["template"]["metadata"]["labels"]
    for svc in find(objects, "Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_the_sidecar_database_is_reachable_only_in_the_pod(render: Render) -> None:
    objects = render("defaults")
    postgres = _container(objects, "postgres")
    assert postgres["restartPolicy"] == "Always"  # a native sidecar
    assert "listen_addresses=" in postgres["args"]
    assert "ports" not in postgres
    assert postgres["securityContext"]["runAsUser"] == 70
    socket_users = {c["name"] for c in [postgres, _container(objects)]
                    if any(m["name"] == "postgres-socket" for m in c["volumeMounts"])}
    assert socket_users == {"postgres", "operator"}
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "storageClassName" not in claim["spec"]
    pod = _deployment(objects)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert pod["securityContext"]["fsGroup"] == 70
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"


def test_a_generated_master_key_is_32_random_bytes_kept_on_uninstall(render: Render) -> None:
    objects = render("defaults")
    secret = one(objects, "Secret")
    key = base64.b64decode(base64.b64decode(secret["data"]["master.key"]), validate=True)
    assert len(key) == 32
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volume = {v["name"]: v for v in _deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volume["master-key"]["secret"]["secretName"] == secret["metadata"]["name"]
    # Kept on upgrades: the template reuses the key it finds in the cluster.
    template = (CHART / "templates" / "master-key-secret.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template and "randBytes 32" in template


def test_the_network_policy_admits_run_pods_to_the_broker(render: Render) -> None:
    objects = render("defaults")
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    broker, metrics = policy["ingress"]
    (peer,) = broker["from"]
    assert peer["namespaceSelector"] == {}
    assert broker["ports"] == [{"port": "broker", "protocol": "TCP"}]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    # The selector matches the pods of a real run's Job, and not the operator's own pods.
    plan = job_spec.RunPlan(namespace="team-a", execution="e1", execution_uid="u", package="p",
                            run_id="r1", entrypoint="main.py", script_names=("main.py",))
    job = job_spec.run_job(plan, job_spec.RunPodSettings("img", "https://b", "fx-broker", "ca"))
    run_labels = job["spec"]["template"]["metadata"]["labels"]

    def selected(labels: dict[str, str]) -> bool:
        selector = peer["podSelector"]
        return (selector["matchLabels"].items() <= labels.items()
                and all(e["operator"] == "Exists" and e["key"] in labels
                        for e in selector["matchExpressions"]))
    assert selected(run_labels)
    assert not selected(_deployment(objects)["spec"]["template"]["metadata"]["labels"])
    assert not selected({k: v for k, v in run_labels.items() if k != api_group.LABEL_RUN})


# --- the other combinations -----------------------------------------------------------------------


def test_standby_replicas_use_kopf_peering_and_the_external_database(render: Render) -> None:
    objects = render("external-db-3-replicas")
    deployment = _deployment(objects)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = _container(objects)["args"]
    assert "--peering=fx-operator" in args and "--priority=random" in args
    assert one(objects, "ClusterKopfPeering", "fx-operator")
    assert _env(objects)["FX_DATABASE_URL"] == {"secretKeyRef": {"name": "fx-db", "key": "uri"}}
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod and not find(objects, "PersistentVolumeClaim")
    assert {v["name"] for v in pod["volumes"]} == {"master-key", "kube-api-access", "tmp"}
    assert pod["securityContext"]["fsGroup"] == 10001
    extra = (permissions(one(objects, "ClusterRole")["rules"])
             - permissions(one(render("defaults"), "ClusterRole")["rules"]))
    assert extra == {("kopf.dev", "clusterkopfpeerings", v)
                     for v in ("list", "watch", "patch")}


def test_watched_namespaces_get_a_role_each(render: Render) -> None:
    objects = render("watch-namespaces")
    args = _container(objects)["args"]
    watched = ["team-a", "team-b", NAMESPACE]  # the platform namespace is always watched
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={n}" for n in watched]
    roles = {r["metadata"]["namespace"]: r for r in find(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in find(objects, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == sorted(watched)
    cluster_role = permissions(one(objects, "ClusterRole")["rules"])
    assert {r for _, r, _ in cluster_role} == {"tokenreviews", "customresourcedefinitions",
                                               "namespaces"}
    everything = permissions(one(render("defaults"), "ClusterRole")["rules"])
    for role in roles.values():
        assert permissions(role["rules"]) | cluster_role - {
            ("", "namespaces", "list"), ("", "namespaces", "watch")} == everything
    for binding in [*bindings.values(), one(objects, "ClusterRoleBinding")]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fx-operator",
                                        "namespace": NAMESPACE}]


def test_watched_namespaces_with_standby_replicas_peer_in_each(render: Render) -> None:
    objects = render("watch-namespaces-2-replicas")
    peerings = find(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["fx-platform", "team-a"]
    assert not find(objects, "ClusterKopfPeering")
    assert _env(objects)["FX_PLATFORM_NAMESPACE"] == "fx-platform"
    for role in find(objects, "Role"):
        assert {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")} <= \
            permissions(role["rules"])


def test_an_existing_master_key_is_mounted_under_the_fixed_name(render: Render) -> None:
    objects = render("existing-master-key")
    assert not find(objects, "Secret")
    volumes = {v["name"]: v for v in _deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["master-key"]["secret"]["secretName"] == "my-master-key"
    assert volumes["master-key"]["secret"]["items"] == [{"key": "key.b64", "path": "master.key"}]


def test_the_service_monitor_scrapes_the_metrics_service(render: Render) -> None:
    objects = render("service-monitor")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selected = [s for s in find(objects, "Service") if monitor["spec"]["selector"][
        "matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["fx-operator-metrics"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert not find(render("defaults"), "ServiceMonitor")


def test_optional_objects_can_be_left_out(render: Render) -> None:
    objects = render("no-network-policy-no-metrics-service")
    assert not find(objects, "NetworkPolicy")
    assert [s["metadata"]["name"] for s in find(objects, "Service")] == ["fx-operator-broker"]
    objects = render("existing-claim")
    assert not find(objects, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in _deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "pg-data"
    objects = render("no-rbac-existing-account")
    assert not {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"} & {
        o["kind"] for o in objects}
    assert _deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "fx-sa"


def test_every_setting_lands_where_it_is_read(render: Render) -> None:
    objects = render("everything-set")
    deployment = _deployment(objects)
    pod = deployment["spec"]["template"]["spec"]
    operator = _container(objects)
    env = _env(objects)
    assert deployment["metadata"]["name"] == "fx"
    assert operator["image"] == "registry.example/fx-operator:1.2.3"
    assert operator["imagePullPolicy"] == "Always"
    assert env["FX_RUNTIME_IMAGE"] == "registry.example/fx-runtime:1.2.3"
    assert json.loads(env["FX_PLATFORM_WRITERS"]) == ["team-a/writer"]
    assert env["FX_JOB_TTL_SECONDS"] == "60" and env["FX_POOL_MAX_SIZE"] == "20"
    assert env["FX_BROKER_AUDIENCE"] == "fx-broker-prod" and env["FX_METRICS_PORT"] == "9191"
    assert "--log-format=json" in operator["args"] and "--verbose" in operator["args"]
    assert operator["resources"]["limits"] == {"cpu": 1, "memory": "1Gi"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "critical"
    assert pod["serviceAccountName"] == "fx-operator-sa"
    template_meta = deployment["spec"]["template"]["metadata"]
    assert template_meta["annotations"]["example.com/team"] == "platform"
    assert template_meta["labels"]["example.com/tier"] == "control"
    postgres = _container(objects, "postgres")
    assert postgres["image"] == "postgres:17-bookworm"
    assert postgres["securityContext"]["runAsUser"] == 999 and \
        pod["securityContext"]["fsGroup"] == 999
    assert one(objects, "PersistentVolumeClaim")["spec"]["storageClassName"] == ""
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"example.com/role": "fx"}
    metrics_rule = one(objects, "NetworkPolicy")["spec"]["ingress"][1]
    assert metrics_rule["from"] == COMBOS["everything-set"]["broker"]["networkPolicy"][
        "metricsFrom"]
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == "1m"


# --- refused values -------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "message"), [
    ({"operator": {"replicas": 2}}, "database.mode"),
    ({"database": {"mode": "external"}}, "existingSecret"),
    ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "watchNamespaces"),
    ({"operator": {"replica": 2}}, "replica"),
    ({"metrics": {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}},
     "metrics.service.enabled"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name"),
    ({"database": {"mode": "embedded"}}, "database.mode"),
])
def test_the_schema_refuses_bad_values(helm: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolFailed) as refused:
        helm_template(helm, values)
    assert message in refused.value.stderr


@pytest.mark.parametrize(("values", "message"), [
    ({"operator": {"replicas": 2}}, "needs database.mode=external"),
    ({"database": {"mode": "external"}}, "needs database.external.existingSecret"),
    ({"serviceAccount": {"create": False}}, "needs serviceAccount.name"),
])
def test_the_templates_refuse_them_without_the_schema(helm: str, values: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ToolFailed) as refused:
        helm_template(helm, values, extra=["--skip-schema-validation"])
    assert message in refused.value.stderr


# --- NOTES.txt ------------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", ["defaults", "watch-namespaces-2-replicas"])
def test_the_notes_give_the_next_steps(helm: str, tmp_path: Path, combo: str) -> None:
    # helm template does not print NOTES.txt (helm install needs a cluster): render it as a
    # ConfigMap in a copy of the chart.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_test_notes.tpl").write_text(
        '{{- define "test.notes" }}' + notes + "{{- end }}\n")
    (chart / "templates" / "test-notes.yaml").write_text(
        'kind: Notes\ntext: |\n{{- include "test.notes" . | nindent 2 }}\n')
    (rendered,) = helm_template(helm, COMBOS[combo], chart=chart,
                                extra=["--show-only", "templates/test-notes.yaml"])
    text = rendered["text"]
    for step in ("kubectl -n fx-system rollout status deployment/fx-operator", "fxctl seal",
                 "kubectl apply", "fxctl run", "kubectl get executions"):
        assert step in text, step
    if combo == "defaults":
        assert "fx-operator-master-key" in text and "whole cluster" in text
    else:
        assert "team-a, fx-platform" in text and "FX_PLATFORM_NAMESPACE=fx-platform" in text
