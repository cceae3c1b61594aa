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

{{/*
The annotation on an APIService this release took over: the previous
owner's labels, annotations and spec as JSON, which the pre-delete hook
restores.
*/}}
{{- define "gms.takenOverFrom" -}}gpu-metrics-server.io/taken-over-from{{- end -}}

{{/*
The APIServices of custom.metrics.k8s.io this release holds by a takeover:
a JSON object, version -> the previous owner's {labels, annotations, spec}
(from the annotation gms.takenOverFrom of the APIService, which routes to
this release's aggregator). Empty ({}) in `helm template`.
*/}}
{{- define "gms.heldAPIServices" -}}
{{- $svc := include "gms.aggregator.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- $key := include "gms.takenOverFrom" . -}}
{{- $held := dict -}}
{{- range $version, $_ := include "gms.apiVersions" . | fromYaml -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" (printf "%s.custom.metrics.k8s.io" $version) -}}
{{- if $existing -}}
{{- $s := $existing.spec.service -}}
{{- $ann := default (dict) $existing.metadata.annotations -}}
{{- if and $s (eq $s.name $svc) (eq $s.namespace $ns) (hasKey $ann $key) -}}
{{- $_ := set $held $version (get $ann $key | fromJson) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $held -}}
{{- end -}}

{{/*
What a takeover starts from: version -> {labels, annotations, spec} of each
APIService of the group that routes to another Service (the previous
owner), plus those this release already holds (gms.heldAPIServices). JSON;
{} when there is nothing to take over or in `helm template`.
*/}}
{{- define "gms.previousOwners" -}}
{{- $svc := include "gms.aggregator.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- $owners := include "gms.heldAPIServices" . | fromJson -}}
{{- range $version, $_ := include "gms.apiVersions" . | fromYaml -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" (printf "%s.custom.metrics.k8s.io" $version) -}}
{{- if $existing -}}
{{- $s := $existing.spec.service -}}
{{- if and $s (not (and (eq $s.name $svc) (eq $s.namespace $ns))) -}}
{{- $_ := set $owners $version (dict "labels" (default (dict) $existing.metadata.labels) "annotations" (default (dict) $existing.metadata.annotations) "spec" $existing.spec) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $owners -}}
{{- end -}}

{{/*
Whether this render takes the group over (or keeps it taken over): "true"
or "". Fails when a takeover is held but the values would drop it
(apiService.takeOver=false or apiService.create=false): the pre-delete hook
that hands the group back would be lost.
*/}}
{{- define "gms.takingOver" -}}
{{- $held := include "gms.heldAPIServices" . | fromJson -}}
{{- $on := and .Values.aggregator.enabled .Values.apiService.create .Values.apiService.takeOver -}}
{{- if and $held (not $on) -}}
{{- fail (printf "\n\nThis release took custom.metrics.k8s.io over (%s) and would drop it with apiService.takeOver=false, apiService.create=false or aggregator.enabled=false, losing the hook that hands it back. Hand it back first: `helm uninstall %s -n %s` (its pre-delete hook restores the previous owner), or the commands in the install notes; or keep apiService.takeOver=true.\n" (keys $held | sortAlpha | join ", ") .Release.Name .Release.Namespace) -}}
{{- end -}}
{{- if and $on (include "gms.previousOwners" . | fromJson) -}}true{{- end -}}
{{- end -}}

{{/*
The delegate the aggregator forwards to, as YAML {to, caBundle, insecure}:
delegate.* when delegate.to is set; else, in a takeover, the previous
owner's Service, caBundle and insecureSkipTLSVerify (what kube-apiserver
used to reach it); else to is empty.
*/}}
{{- define "gms.delegate" -}}
{{- $d := dict "to" .Values.delegate.to "caBundle" .Values.delegate.caBundle "insecure" .Values.delegate.insecureSkipTLSVerify -}}
{{- if and (not $d.to) (include "gms.takingOver" .) -}}
{{- $targets := dict -}}
{{- $first := dict -}}
{{- range $version, $owner := include "gms.previousOwners" . | fromJson -}}
{{- $s := $owner.spec.service -}}
{{- $to := printf "%s/%s:%d" $s.namespace $s.name (int (default 443 $s.port)) -}}
{{- $_ := set $targets $to $version -}}
{{- if not $first -}}{{- $first = $owner -}}{{- end -}}
{{- end -}}
{{- if gt (len $targets) 1 -}}
{{- fail (printf "\n\nThe APIServices of custom.metrics.k8s.io route to different Services (%s): take over one server at a time, or set delegate.to.\n" (keys $targets | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $s := $first.spec.service -}}
{{- $d = dict "to" (printf "%s/%s:%d" $s.namespace $s.name (int (default 443 $s.port))) "caBundle" (default "" $first.spec.caBundle) "insecure" (default false $first.spec.insecureSkipTLSVerify) -}}
{{- end -}}
{{- toYaml $d -}}
{{- end -}}

{{/*
"true" when the agents serve TLS from the chart's values (agent.tls), else "".
*/}}
{{- define "gms.agent.tls" -}}
{{- if and .Values.agent.enabled .Values.agent.tls.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The Secret holding the agents' certificate (tls.crt, tls.key, ca.crt).
*/}}
{{- define "gms.agent.tlsSecretName" -}}
{{- if eq .Values.agent.tls.source "secret" -}}
{{- required "agent.tls.secretName is required when agent.tls.source is \"secret\"" .Values.agent.tls.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "gms.agent.name" .) -}}
{{- end -}}
{{- end -}}

{{/*
The DNS name the agents' certificate carries and is verified against: the
agents are scraped by pod IP, which no certificate names.
*/}}
{{- define "gms.agent.serverName" -}}
{{- default (printf "%s.%s.svc" (include "gms.agent.name" .) .Release.Namespace) .Values.agent.tls.serverName -}}
{{- end -}}

{{/*
The scheme the agents are scraped with (aggregator, ServiceMonitor).
*/}}
{{- define "gms.agentScheme" -}}
{{- if include "gms.agent.tls" . -}}https{{- else -}}{{ .Values.aggregator.agentScheme }}{{- end -}}
{{- end -}}

{{/*
Where the agent finds its web config and certificate.
*/}}
{{- define "gms.agent.webConfigDir" -}}/etc/gpu-metrics-server/web{{- end -}}
{{- define "gms.agent.tlsDir" -}}/etc/gpu-metrics-server/tls{{- end -}}
