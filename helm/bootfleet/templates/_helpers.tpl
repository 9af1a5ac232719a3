{{/* The release's base name: <release>-bootfleet, or the release name when it already says bootfleet. */}}
{{- define "bootfleet.fullname" -}}
{{- if contains "bootfleet" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-bootfleet" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of one component; call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "bootfleet.selectorLabels" -}}
app.kubernetes.io/name: bootfleet
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bootfleet.labels" -}}
{{ include "bootfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{/* An image reference from {repository, tag}. */}}
{{- define "bootfleet.image" -}}
{{- printf "%s:%s" .repository (.tag | toString) -}}
{{- end -}}

{{- define "bootfleet.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" (include "bootfleet.fullname" .) -}}
{{- else -}}
{{- required "nats.externalUrl is required when nats.enabled is false" .Values.nats.externalUrl -}}
{{- end -}}
{{- end -}}

{{- define "bootfleet.natsSecret" -}}
{{- .Values.nats.auth.existingSecret | default (printf "%s-nats" (include "bootfleet.fullname" .)) -}}
{{- end -}}

{{- define "bootfleet.jwtSecret" -}}
{{- .Values.jwt.existingSecret | default (printf "%s-jwt" (include "bootfleet.fullname" .)) -}}
{{- end -}}

{{- define "bootfleet.databaseSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s-postgres" (include "bootfleet.fullname" .) -}}
{{- else -}}
{{- required "externalDatabase.existingSecret is required when postgresql.enabled is false" .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "bootfleet.databaseKey" -}}
{{- if .Values.postgresql.enabled -}}DATABASE_URL{{- else -}}{{ .Values.externalDatabase.secretKey }}{{- end -}}
{{- end -}}

{{/* What every service, builder and the gateway gets: NATS as `services`, the database, logging. */}}
{{- define "bootfleet.env" -}}
- name: NATS_URL
  value: {{ include "bootfleet.natsUrl" . | quote }}
- name: NATS_USER
  value: services
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "bootfleet.natsSecret" . }}
      key: services-password
- name: BOOTFLEET_JETSTREAM_REPLICAS
  value: {{ .Values.nats.jetstreamReplicas | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "bootfleet.databaseSecret" . }}
      key: {{ include "bootfleet.databaseKey" . }}
- name: BOOTFLEET_LOG
  value: {{ .Values.log.filter | quote }}
- name: BOOTFLEET_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
# Prometheus scrapes each pod here without a token (see "bootfleet.metricsAnnotations").
- name: BOOTFLEET_METRICS_LISTEN
  value: "0.0.0.0:9464"
{{- end -}}

{{/* Where Prometheus's usual pod discovery finds the tokenless metrics listener. */}}
{{- define "bootfleet.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "9464"
prometheus.io/path: /metrics
{{- end -}}

{{/* Pod settings shared by the bootfleet images (uid 10001 in docker/*.Dockerfile). */}}
{{- define "bootfleet.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "bootfleet.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Rolls the pods when a secret this chart renders changes. */}}
{{- define "bootfleet.secretsChecksum" -}}
checksum/secrets: {{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end -}}

{{/* A value kept across upgrades: the given one, else the one in the existing Secret, else random. */}}
{{- define "bootfleet.keep" -}}
{{- $value := .value -}}
{{- if not $value -}}
{{- $previous := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if $previous -}}
{{- if $previous.data -}}
{{- if hasKey $previous.data .key -}}
{{- $value = index $previous.data .key | b64dec -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $value | default (randAlphaNum 40) -}}
{{- end -}}
