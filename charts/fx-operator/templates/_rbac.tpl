{{/* The operator's RBAC rules (templates/rbac.yaml), each with what uses it. */}}
{{- define "fx-operator.namespacedRules" -}}
# kopf: watches the three kinds (list, watch), writes its finalizer and its progress annotations
# (patch); the Execution service reads an Execution when its run pod or Job changes (get).
- apiGroups: [fx.dev]
  resources: [packages, scopedsecrets]
  verbs: [list, watch, patch]
- apiGroups: [fx.dev]
  resources: [executions]
  verbs: [get, list, watch, patch]
# kopf and the services: conditions, steps and results, through the status subresource.
- apiGroups: [fx.dev]
  resources: [packages/status, scopedsecrets/status, executions/status]
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
# Events on Packages, ScopedSecrets and Executions (the services' and kopf's).
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
