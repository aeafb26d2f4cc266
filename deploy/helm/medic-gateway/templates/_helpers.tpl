{{/*
Names, labels, and the configuration file that the gateway and the workers share.
*/}}

{{- define "medic-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: resources are named "<fullname>-<component>". */}}
{{- define "medic-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "medic-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that never change for a release's component: the selectors. Call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "medic-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medic-gateway.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of a component's resources. Call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "medic-gateway.labels" -}}
helm.sh/chart: {{ include "medic-gateway.chart" .ctx }}
{{ include "medic-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: medic-gateway
{{- end -}}

{{- define "medic-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "medic-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "medic-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "medic-gateway.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "medic-gateway.fullname" .)) .Values.gateway.apiKeys.secretName -}}
{{- end -}}

{{- define "medic-gateway.judgeHost" -}}
{{- printf "%s-judge" (include "medic-gateway.fullname" .) -}}
{{- end -}}

{{- define "medic-gateway.judgeModelName" -}}
{{- default .Values.judgeServer.model .Values.judgeServer.servedModelName -}}
{{- end -}}

{{- define "medic-gateway.redisHost" -}}
{{- printf "%s-redis" (include "medic-gateway.fullname" .) -}}
{{- end -}}

{{/* The sample stream and the consumer group: the configuration's queue keys, else the gateway's defaults. */}}
{{- define "medic-gateway.stream" -}}
{{- dig "queue" "stream" "medic:samples" (.Values.config | default dict) -}}
{{- end -}}

{{- define "medic-gateway.group" -}}
{{- dig "queue" "group" "judges" (.Values.config | default dict) -}}
{{- end -}}

{{/*
The medic-gateway configuration file (docs/configuration.md): .Values.config, with the keys the chart owns
set from the chart's values: where the gateway and the workers listen, the variable holding the Redis URL,
the gateway keys of gateway.apiKeys and, with judgeServer.enabled, the judge model of judging.llm.
*/}}
{{- define "medic-gateway.config" -}}
{{- include "medic-gateway.validate" . -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $server := deepCopy (get $cfg "server" | default dict) -}}
{{- $_ := set $server "host" "0.0.0.0" -}}
{{- $_ := set $server "port" (int .Values.gateway.port) -}}
{{- $_ := set $cfg "server" $server -}}
{{- $queue := deepCopy (get $cfg "queue" | default dict) -}}
{{- $_ := set $queue "redis_url_env" "MEDIC_REDIS_URL" -}}
{{- $_ := set $queue "stream" (include "medic-gateway.stream" .) -}}
{{- $_ := set $queue "group" (include "medic-gateway.group" .) -}}
{{- $_ := set $cfg "queue" $queue -}}
{{- $worker := deepCopy (get $cfg "worker" | default dict) -}}
{{- $_ := set $worker "host" "0.0.0.0" -}}
{{- $_ := set $worker "port" (int .Values.workers.port) -}}
{{- $_ := set $cfg "worker" $worker -}}
{{- $keys := list -}}
{{- range (get $cfg "keys" | default list) -}}
{{- $keys = append $keys . -}}
{{- end -}}
{{- range $i, $tenant := keys (.Values.gateway.apiKeys.tenants | default dict) | sortAlpha -}}
{{- $keys = append $keys (dict "tenant" $tenant "key_env" (printf "MEDIC_GATEWAY_KEY_%d" $i)) -}}
{{- end -}}
{{- $_ := set $cfg "keys" $keys -}}
{{- if .Values.gateway.adminKey.secretName -}}
{{- $results := deepCopy (get $cfg "results" | default dict) -}}
{{- $_ := set $results "admin_key_env" "MEDIC_ADMIN_KEY" -}}
{{- $_ := set $cfg "results" $results -}}
{{- end -}}
{{- if .Values.judgeServer.enabled -}}
{{- $judging := deepCopy (get $cfg "judging" | default dict) -}}
{{- $llm := deepCopy (get $judging "llm" | default dict) -}}
{{- $_ := set $llm "model" (include "medic-gateway.judgeModelName" .) -}}
{{- $_ := set $llm "backend" "openai" -}}
{{- $_ := set $llm "base_url" (printf "http://%s:%d/v1" (include "medic-gateway.judgeHost" .) (int .Values.judgeServer.port)) -}}
{{- if .Values.judgeServer.apiKey.secretName -}}
{{- $_ := set $llm "api_key_env" "JUDGE_API_KEY" -}}
{{- end -}}
{{- $_ := set $judging "llm" $llm -}}
{{- $_ := set $cfg "judging" $judging -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Environment shared by the gateway and the workers: the Redis URL, the judge server's key, .Values.env. */}}
{{- define "medic-gateway.sharedEnv" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.existingSecretKey }}
- name: MEDIC_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "medic-gateway.redisHost" .) | quote }}
{{- else }}
- name: MEDIC_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "medic-gateway.redisHost" .) | quote }}
{{- end }}
{{- else if .Values.redis.existingSecret }}
- name: MEDIC_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else }}
- name: MEDIC_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- if and .Values.judgeServer.enabled .Values.judgeServer.apiKey.secretName }}
- name: JUDGE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.judgeServer.apiKey.secretName }}
      key: {{ .Values.judgeServer.apiKey.secretKey }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The security context of the gateway's and the workers' containers. */}}
{{- define "medic-gateway.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{/* Volumes of the gateway and the workers: the configuration, a writable working directory, /tmp. */}}
{{- define "medic-gateway.volumes" -}}
- name: config
  configMap:
    name: {{ include "medic-gateway.fullname" . }}-config
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "medic-gateway.volumeMounts" -}}
- name: config
  mountPath: /etc/medic-gateway
  readOnly: true
- name: data
  mountPath: /var/lib/medic-gateway
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Render-time checks: a wrong combination of values fails with a message naming the values to change. */}}
{{- define "medic-gateway.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
{{- fail "Redis is required: set redis.url (or redis.existingSecret) to an external Redis, or redis.enabled=true" -}}
{{- end -}}
{{- if and (not .Values.gateway.apiKeys.tenants) (not .Values.config.keys) (not .Values.gateway.allowUnauthenticated) -}}
{{- fail "no gateway keys: list tenants in gateway.apiKeys.tenants or keys in config.keys, or set gateway.allowUnauthenticated=true" -}}
{{- end -}}
{{- if and .Values.workers.keda.enabled (not .Values.workers.enabled) -}}
{{- fail "workers.keda.enabled needs workers.enabled" -}}
{{- end -}}
{{- if and .Values.workers.keda.enabled (not .Values.workers.keda.lagCount) (not .Values.workers.keda.pendingEntriesCount) -}}
{{- fail "workers.keda.enabled needs workers.keda.lagCount or workers.keda.pendingEntriesCount" -}}
{{- end -}}
{{- if and .Values.workers.keda.enabled (not .Values.redis.enabled) .Values.redis.existingSecret (not .Values.workers.keda.address) -}}
{{- fail "with redis.existingSecret the chart cannot read the Redis address: set workers.keda.address (host:port)" -}}
{{- end -}}
{{- if and .Values.judgeServer.enabled (not .Values.judgeServer.model) -}}
{{- fail "judgeServer.enabled needs judgeServer.model" -}}
{{- end -}}
{{- if and .Values.metrics.prometheusRule.enabled (not (.Files.Get "files/alerts.yml")) -}}
{{- fail "metrics.prometheusRule.enabled: files/alerts.yml is missing or empty" -}}
{{- end -}}
{{- end -}}
