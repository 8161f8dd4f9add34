{{/* The operator's RBAC rules (templates/rbac.yaml), each with what uses it. */}}
{{- define "fx-operator.namespacedRules" -}}
# kopf: watches the four kinds (list, watch), writes its finalizer and its progress annotations
# (patch). Admission reads a Package that its watch has not shown Ready (missing, refused or not
# published yet: get); the Execution service reads an Execution when its run pod or Job changes.
- apiGroups: [fx.dev]
  resources: [packages, executions]
  verbs: [get, list, watch, patch]
- apiGroups: [fx.dev]
  resources: [scopedsecrets, schedules]
  verbs: [list, watch, patch]
# A Schedule makes its Executions, deletes the active ones under concurrencyPolicy Replace, and
# prunes finished ones beyond its history limits.
- apiGroups: [fx.dev]
  resources: [executions]
  verbs: [create, delete]
# The scripts' ConfigMap and a run's Secret and Job name their Package or Execution as owner with
# blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin (off in a
# default kube-apiserver, on in OpenShift) allows only with update on the owner's finalizers.
- apiGroups: [fx.dev]
  resources: [packages/finalizers, executions/finalizers]
  verbs: [update]
# kopf and the services: conditions, steps and results, through the status subresource.
- apiGroups: [fx.dev]
  resources: [packages/status, scopedsecrets/status, executions/status, schedules/status]
  verbs: [patch]
# A Package's scripts (fx-pkg-*), the broker's CA in each run's namespace (fx-broker-ca) and the
# sealing key in the platform namespace (fx-sealing-key): read, created, patched when changed.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# A run's sealed bundle (ciphertext only): created; replaced when a restarted operator finds it.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, update]
# Run Jobs: created; read when an Execution is admitted again; kopf watches them for failures.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
# Run pods: kopf watches them to follow a run; the broker reads the pod asking for a run key.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Events on Packages, ScopedSecrets, Executions and Schedules (the services' and kopf's).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
{{- define "fx-operator.clusterRules" -}}
# The broker: whom a run pod's projected token belongs to.
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
# kopf: notices CRDs created or changed while it runs.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
