{{/* The chart's name, and the base name of every object it makes. */}}
{{- define "fx-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fx-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-<suffix>, within the 63 characters of a DNS label. */}}
{{- define "fx-operator.suffixed" -}}
{{- printf "%s-%s" (include "fx-operator.fullname" .root) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fx-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fx-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fx
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fx-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fx-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Without serviceAccount.create, serviceAccount.name is required (fx-operator.validate). */}}
{{- define "fx-operator.serviceAccountName" -}}
{{- default (include "fx-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "fx-operator.platformNamespace" -}}
{{- default .Release.Namespace .Values.operator.platformNamespace }}
{{- end }}

{{/* The namespaces the operator watches, as a JSON list: [] means the whole cluster. The platform
namespace is always among them (platform-scope ScopedSecrets live there). */}}
{{- define "fx-operator.watchedNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- append .Values.operator.watchNamespaces (include "fx-operator.platformNamespace" .) | uniq | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{- define "fx-operator.peering" -}}
{{- if gt (int .Values.operator.replicas) 1 }}true{{ end }}
{{- end }}

{{- define "fx-operator.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operator.repository (default .Chart.AppVersion .Values.image.operator.tag) }}
{{- end }}

{{- define "fx-operator.runtimeImage" -}}
{{- printf "%s:%s" .Values.image.runtime.repository (default .Chart.AppVersion .Values.image.runtime.tag) }}
{{- end }}

{{- define "fx-operator.brokerName" -}}
{{- include "fx-operator.suffixed" (dict "root" . "suffix" "broker") }}
{{- end }}

{{/* Every name the broker's Service answers to: the names in its certificate. */}}
{{- define "fx-operator.brokerDnsNames" -}}
{{- $service := include "fx-operator.brokerName" . }}
{{- $ns := .Release.Namespace }}
{{- list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.%s" $service $ns .Values.broker.clusterDomain) | toJson }}
{{- end }}

{{- define "fx-operator.masterKeySecret" -}}
{{- default (include "fx-operator.suffixed" (dict "root" . "suffix" "master-key")) .Values.masterKey.existingSecret }}
{{- end }}

{{- define "fx-operator.masterKeyKey" -}}
{{- if .Values.masterKey.existingSecret }}{{ .Values.masterKey.key }}{{ else }}master.key{{ end }}
{{- end }}

{{- define "fx-operator.databaseClaim" -}}
{{- default (include "fx-operator.suffixed" (dict "root" . "suffix" "postgres")) .Values.database.sidecar.persistence.existingClaim }}
{{- end }}

{{/* The checks values.schema.json cannot make (and a second line of defence for those it makes:
`helm template --skip-schema-validation` skips the schema, not these). */}}
{{- define "fx-operator.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (ne .Values.database.mode "external") }}
{{- fail "operator.replicas > 1 needs database.mode=external: the standby replicas' brokers serve runs from the shared store, and a sidecar database lives in one pod" }}
{{- end }}
{{- if and (eq .Values.database.mode "external") (not .Values.database.external.existingSecret) }}
{{- fail "database.mode=external needs database.external.existingSecret: the Secret with the database URL" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the operator must not run as the namespace's default account" }}
{{- end }}
{{- end }}
