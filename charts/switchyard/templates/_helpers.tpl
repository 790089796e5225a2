{{/* Names --------------------------------------------------------------------------- */}}

{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-switchyard, or the release name when it already says switchyard. */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "switchyard.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.edge.fullname" -}}{{ include "switchyard.fullname" . }}-edge{{- end -}}
{{- define "switchyard.operator.fullname" -}}{{ include "switchyard.fullname" . }}-operator{{- end -}}
{{- define "switchyard.redis.fullname" -}}{{ include "switchyard.fullname" . }}-redis{{- end -}}
{{- define "switchyard.collector.fullname" -}}{{ include "switchyard.fullname" . }}-otel-collector{{- end -}}

{{/* Labels: pass (dict "ctx" $ "component" "edge"). */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchyard.labels" -}}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/part-of: switchyard
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Images --------------------------------------------------------------------------- */}}

{{/* A Switchyard image: (dict "ctx" $ "name" "adapter-vllm" "override" .Values.images.adapterVllm). */}}
{{- define "switchyard.image" -}}
{{- if .override -}}
{{- .override -}}
{{- else -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.images.registry) .name (default .ctx.Chart.AppVersion .ctx.Values.images.tag) -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.pullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Hardening ------------------------------------------------------------------------ */}}

{{/* Every pod: non-root, its own uid/gid, the runtime's default seccomp profile. */}}
{{- define "switchyard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container: no privilege escalation, no capabilities, a read-only root filesystem. */}}
{{- define "switchyard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Wiring --------------------------------------------------------------------------- */}}

{{/* Where the services send OTLP: tracing.endpoint, else the chart's collector, else "". */}}
{{- define "switchyard.otlpEndpoint" -}}
{{- if .Values.tracing.endpoint -}}
{{- .Values.tracing.endpoint -}}
{{- else if .Values.otelCollector.enabled -}}
{{- printf "http://%s.%s.svc:4317" (include "switchyard.collector.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* OTEL_* for a container: (dict "ctx" $ "service" "edge"). */}}
{{- define "switchyard.otelEnv" -}}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),service.namespace=switchyard"
{{- with include "switchyard.otlpEndpoint" .ctx }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.ctx.Values.tracing.sampleRatio | quote }}
{{- end }}
{{- end -}}

{{/* Whether the edge shares its limits through Redis, and where the URL comes from. */}}
{{- define "switchyard.edge.redisSecret" -}}
{{- if .Values.edge.rateLimit.existingSecret -}}
{{- .Values.edge.rateLimit.existingSecret -}}
{{- else if or .Values.edge.rateLimit.redisUrl .Values.redis.enabled -}}
{{- include "switchyard.edge.fullname" . }}-redis
{{- end -}}
{{- end -}}

{{- define "switchyard.edge.redisSecretKey" -}}
{{- if .Values.edge.rateLimit.existingSecret -}}
{{- .Values.edge.rateLimit.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{- define "switchyard.edge.keysSecret" -}}
{{- default (printf "%s-keys" (include "switchyard.edge.fullname" .)) .Values.edge.keys.existingSecret -}}
{{- end -}}

{{/* Values the schema cannot check alone. */}}
{{/* edge.cache.mode, with YAML's bare `off` (read as false) taken for "off". */}}
{{- define "switchyard.edge.cacheMode" -}}
{{- .Values.edge.cache.mode | default "off" -}}
{{- end -}}

{{- define "switchyard.validate" -}}
{{- $shared := include "switchyard.edge.redisSecret" . -}}
{{- $many := or (gt (int .Values.edge.replicas) 1) (gt (int .Values.edge.workers) 1) .Values.edge.autoscaling.enabled -}}
{{- if and $many (not $shared) -}}
{{- fail "edge: several replicas or workers need shared rate limits (each would admit the full limit alone): set redis.enabled=true, edge.rateLimit.redisUrl or edge.rateLimit.existingSecret" -}}
{{- end -}}
{{- if and (eq (include "switchyard.edge.cacheMode" .) "redis") (not $shared) -}}
{{- fail "edge.cache.mode=redis keeps the cache in the rate limits' Redis: set redis.enabled=true, edge.rateLimit.redisUrl or edge.rateLimit.existingSecret (or use mode memory)" -}}
{{- end -}}
{{- if and .Values.edge.autoscaling.enabled (lt (int .Values.edge.autoscaling.maxReplicas) (int .Values.edge.autoscaling.minReplicas)) -}}
{{- fail "edge.autoscaling: maxReplicas must not be below minReplicas" -}}
{{- end -}}
{{- end -}}

{{/* The operator's RBAC rules: exactly switchyard.operator.rbac.RULES (a test compares
them), plus kopf's peering objects only when operator.peering is set. */}}
{{- define "switchyard.operator.rules" -}}
- apiGroups: [switchyard.dev]
  resources: [modelbackends]
  verbs: [get, list, watch, patch]
- apiGroups: [switchyard.dev]
  resources: [modelbackends/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.operator.peering }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings, clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* GOMEMLIMIT for a Go container: 80% of its memory limit (e.g. "512Mi" -> "409MiB"). */}}
{{- define "switchyard.goMemLimit" -}}
{{- $limit := (.limits | default dict).memory | default "" | toString -}}
{{- if hasSuffix "Gi" $limit -}}
{{- printf "%dMiB" (div (mul (trimSuffix "Gi" $limit | int) 1024 8) 10) -}}
{{- else if hasSuffix "Mi" $limit -}}
{{- printf "%dMiB" (div (mul (trimSuffix "Mi" $limit | int) 8) 10) -}}
{{- else -}}
{{- "" -}}
{{- end -}}
{{- end -}}
