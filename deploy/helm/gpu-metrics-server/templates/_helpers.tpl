{{/*
The chart name, or nameOverride (the app.kubernetes.io/name label).
*/}}
{{- define "gms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: "<release>-<chart>", or the release name when
it already contains the chart name, or fullnameOverride. Kept to 47 characters
so that the longest suffix ("-aggregator-tls", "-selfsigned-ca") still fits in
63.
*/}}
{{- define "gms.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Labels of every object.
*/}}
{{- define "gms.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "gms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpu-metrics-server
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one component: call with (dict "ctx" $ "component" "agent").
*/}}
{{- define "gms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gms.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
All labels of one component's objects: (dict "ctx" $ "component" "agent").
*/}}
{{- define "gms.componentLabels" -}}
{{ include "gms.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The --agent-selector the aggregator finds agent pods with: exactly the agent
DaemonSet's selector labels.
*/}}
{{- define "gms.agentSelector" -}}
{{- $labels := include "gms.selectorLabels" (dict "ctx" . "component" "agent") | fromYaml -}}
{{- $pairs := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/*
The container image, by digest when one is given.
*/}}
{{- define "gms.image" -}}
{{- $tag := .Values.image.tag | default (printf "v%s" .Chart.AppVersion) -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
klog flags shared by both workloads.
*/}}
{{- define "gms.loggingArgs" -}}
- --v={{ .Values.logging.verbosity }}
- --logging-format={{ .Values.logging.format }}
{{- end -}}

{{- define "gms.agent.name" -}}
{{- printf "%s-agent" (include "gms.fullname" .) -}}
{{- end -}}

{{/*
The ConfigMap holding the agent's counters file: the existing one
agent.counters.configMap.name names, the chart's own for agent.counters.csv,
or "" for the built-in list.
*/}}
{{- define "gms.agent.countersConfigMap" -}}
{{- if .Values.agent.counters.configMap.name -}}
{{- .Values.agent.counters.configMap.name -}}
{{- else if .Values.agent.counters.csv -}}
{{- printf "%s-counters" (include "gms.agent.name" .) -}}
{{- end -}}
{{- end -}}

{{- define "gms.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "gms.agent.name" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gms.aggregator.name" -}}
{{- printf "%s-aggregator" (include "gms.fullname" .) -}}
{{- end -}}

{{- define "gms.aggregator.serviceAccountName" -}}
{{- if .Values.aggregator.serviceAccount.create -}}
{{- default (include "gms.aggregator.name" .) .Values.aggregator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.aggregator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The Secret holding the aggregator's serving certificate (all TLS modes but
"unverified").
*/}}
{{- define "gms.aggregator.tlsSecretName" -}}
{{- if eq .Values.aggregator.tls.mode "secret" -}}
{{- required "aggregator.tls.secretName is required when aggregator.tls.mode is \"secret\"" .Values.aggregator.tls.secretName -}}
{{- else -}}
{{- printf "%s-aggregator-tls" (include "gms.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The DNS names kube-apiserver may dial the aggregator's Service by.
*/}}
{{- define "gms.aggregator.dnsNames" -}}
{{- $svc := include "gms.aggregator.name" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) | toYaml -}}
{{- end -}}

{{/*
The custom.metrics.k8s.io versions the aggregator serves, with their
APIService versionPriority (v1beta2 preferred).
*/}}
{{- define "gms.apiVersions" -}}
v1beta1: 100
v1beta2: 200
{{- end -}}

{{/*
Who serves custom.metrics.k8s.io now, if it is not this release: for each
existing APIService of the group whose Service is not this release's
aggregator, one line "<apiservice> -> <namespace>/<service>" (or "-> local"
for an APIService without a Service). Empty when nothing else owns the group,
and always empty in `helm template`, which has no cluster to ask.
*/}}
{{- define "gms.apiServiceConflicts" -}}
{{- $svc := include "gms.aggregator.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- range $version, $_ := include "gms.apiVersions" . | fromYaml -}}
{{- $name := printf "%s.custom.metrics.k8s.io" $version -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" $name -}}
{{- if $existing -}}
{{- $s := $existing.spec.service -}}
{{- if not $s }}
{{ $name }} -> local
{{- else if not (and (eq $s.name $svc) (eq $s.namespace $ns)) }}
{{ $name }} -> {{ $s.namespace }}/{{ $s.name }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
