{{/*
ocrstream.name: the chart name, or nameOverride.
*/}}
{{- define "ocrstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
ocrstream.fullname: resource name prefix; the release name alone when it already holds the chart name.
*/}}
{{- define "ocrstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
ocrstream.component: the name of one component's objects. Call with (dict "root" $ "component" "encoder").
*/}}
{{- define "ocrstream.component" -}}
{{- printf "%s-%s" (include "ocrstream.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
ocrstream.selectorLabels: the immutable labels a Deployment selects on. Call with (dict "root" $ "component" "encoder").
*/}}
{{- define "ocrstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ocrstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
ocrstream.labels: every object's labels (selector labels + chart, version, manager, user labels).
Call with (dict "root" $ "component" "encoder").
*/}}
{{- define "ocrstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ocrstream.selectorLabels" . }}
app.kubernetes.io/part-of: ocrstream
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
ocrstream.serviceAccountName: the account every ocrstream pod uses.
*/}}
{{- define "ocrstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ocrstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
ocrstream.image: full image reference. Call with (dict "root" $ "image" .Values.encoder.image).
*/}}
{{- define "ocrstream.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
ocrstream.kafkaBootstrap: the bootstrap servers the services and KEDA use (the dev broker when dev.enabled).
*/}}
{{- define "ocrstream.kafkaBootstrap" -}}
{{- if .Values.kafka.bootstrap -}}
{{- .Values.kafka.bootstrap -}}
{{- else if .Values.dev.enabled -}}
{{- printf "%s:9092" (include "ocrstream.component" (dict "root" . "component" "kafka")) -}}
{{- end -}}
{{- end -}}

{{/*
ocrstream.otlpEndpoint: OTLP/HTTP endpoint the services export to (the chart's collector when enabled).
*/}}
{{- define "ocrstream.otlpEndpoint" -}}
{{- if .Values.otel.collector.enabled -}}
{{- printf "http://%s:4318" (include "ocrstream.component" (dict "root" . "component" "otel-collector")) -}}
{{- else -}}
{{- .Values.otel.endpoint -}}
{{- end -}}
{{- end -}}

{{/*
ocrstream.topicSuffixes: kafka.topics key -> the message's topic (ocrstream.messages TOPIC constants;
tests/charts/test_alignment.py keeps them in step).
*/}}
{{- define "ocrstream.topicSuffixes" -}}
references: document.refs
submitted: document.submitted
rasterized: page.rasterized
encoded: page.encoded
decoded: page.decoded
completed: document.completed
deadletter: dead-letter
{{- end -}}

{{/*
ocrstream.stages: component -> consumer stage (handler.stage in services/), input and output topic keys.
The services name their group `<topicPrefix><stage>`.
*/}}
{{- define "ocrstream.stages" -}}
ingest: {stage: ingest-refs, input: references, output: submitted}
rasterizer: {stage: rasterize, input: submitted, output: rasterized}
encoder: {stage: encode, input: rasterized, output: encoded}
decoder: {stage: decode, input: encoded, output: decoded}
assembler: {stage: assemble, input: decoded, output: completed}
{{- end -}}

{{/*
ocrstream.topic: a topic's full name from its kafka.topics key. Call with (dict "root" $ "key" "encoded").
*/}}
{{- define "ocrstream.topic" -}}
{{- $suffixes := include "ocrstream.topicSuffixes" .root | fromYaml -}}
{{- printf "%s%s" .root.Values.kafka.topicPrefix (get $suffixes .key) -}}
{{- end -}}

{{/*
ocrstream.consumer: a component's consumer facts as YAML {group, inputKey, input, output, partitions}.
Call with (dict "root" $ "component" "encoder"); read with fromYaml.
*/}}
{{- define "ocrstream.consumer" -}}
{{- $s := get (include "ocrstream.stages" .root | fromYaml) .component -}}
group: {{ printf "%s%s" .root.Values.kafka.topicPrefix $s.stage | quote }}
inputKey: {{ $s.input }}
input: {{ include "ocrstream.topic" (dict "root" .root "key" $s.input) | quote }}
output: {{ include "ocrstream.topic" (dict "root" .root "key" $s.output) | quote }}
partitions: {{ (get .root.Values.kafka.topics $s.input).partitions | int }}
{{- end -}}

{{/*
ocrstream.credentialsSecret: the Secret the chart writes for credentials not taken from an existingSecret.
*/}}
{{- define "ocrstream.credentialsSecret" -}}
{{- include "ocrstream.component" (dict "root" . "component" "credentials") -}}
{{- end -}}

{{/*
ocrstream.sharedEnv: environment every ocrstream container gets: the shared ConfigMap plus the
credentials, each from the chart's Secret or the user's existingSecret.
*/}}
{{- define "ocrstream.sharedEnv" -}}
{{- $secret := include "ocrstream.credentialsSecret" . -}}
- name: OCRSTREAM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret | default $secret }}
      key: {{ ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") }}
- name: OCRSTREAM_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.objectStore.existingSecret | default $secret }}
      key: {{ ternary .Values.objectStore.accessKeyKey "s3-access-key" (ne .Values.objectStore.existingSecret "") }}
- name: OCRSTREAM_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.objectStore.existingSecret | default $secret }}
      key: {{ ternary .Values.objectStore.secretKeyKey "s3-secret-key" (ne .Values.objectStore.existingSecret "") }}
{{- end -}}

{{/*
ocrstream.serviceEnv: a service's own OCRSTREAM_<SERVICE>_<KEY> variables from a values map.
Call with (dict "prefix" "OCRSTREAM_ENCODER" "env" .Values.encoder.env).
*/}}
{{- define "ocrstream.serviceEnv" -}}
{{- range $key, $value := .env }}
- name: {{ printf "%s_%s" $.prefix ($key | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
ocrstream.scratchVolumes: the writable emptyDirs every container mounts (root fs is read-only).
*/}}
{{- define "ocrstream.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
{{- end -}}

{{/*
ocrstream.scratchMounts: mounts for ocrstream.scratchVolumes; HOME in every image is /var/lib/ocrstream.
*/}}
{{- define "ocrstream.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /var/lib/ocrstream
{{- end -}}

{{/*
ocrstream.podSpecCommon: pod-level fields shared by every ocrstream pod.
*/}}
{{- define "ocrstream.podSpecCommon" -}}
serviceAccountName: {{ include "ocrstream.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
ocrstream.httpProbes: startup, liveness and readiness probes on /healthz and /readyz of a named port.
Call with (dict "port" "metrics" "startupFailures" 30).
*/}}
{{- define "ocrstream.httpProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 5
  failureThreshold: {{ .startupFailures | default 30 }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/*
ocrstream.consumerAnnotations: what `ocrstream cluster status` reads to pair a Deployment with its
consumer group, input topic, lag threshold and partition ceiling. Call with (dict "root" $ "component" "encoder"
"autoscaling" <values or nil>).
*/}}
{{- define "ocrstream.consumerAnnotations" -}}
{{- $c := include "ocrstream.consumer" (dict "root" .root "component" .component) | fromYaml -}}
ocrstream.io/consumer-group: {{ $c.group | quote }}
ocrstream.io/input-topic: {{ $c.input | quote }}
ocrstream.io/partitions: {{ $c.partitions | quote }}
{{- with .autoscaling }}{{ with .lagThreshold }}
ocrstream.io/lag-threshold: {{ . | quote }}
{{- end }}{{ end }}
{{- end -}}
