{{/*
Shared bodies for the Python services (ingest, rasterizer, encoder, assembler) so their
Deployments, Services, scalers, PDBs and NetworkPolicies cannot drift. The decoder reuses the
scaler, PDB and NetworkPolicy pieces; only its pod (Triton + consumer sidecar) is its own.

Every define takes one dict:
  root       the top-level context ($)
  component  "ingest" | "rasterizer" | "encoder" | "assembler" | "decoder"
  svc        the component's values (.Values.<component>)
  image      the image values to use ({repository, tag})
  port       the container port serving /healthz, /readyz, /metrics
  portName   "http" for ingest, "metrics" for the consumers
  gpu        optional {count, resourceName}: adds the extended resource limit (count 0: none)
  lagScaled  (worker.all) true for Kafka consumers scaled on lag; ingest has its own CPU HPA
  portEnv    env entries telling the service its port (and bind address)
*/}}

{{/*
ocrstream.worker.envPrefix: OCRSTREAM_<SERVICE> for a component name.
*/}}
{{- define "ocrstream.worker.envPrefix" -}}
{{- printf "OCRSTREAM_%s" (.component | upper | replace "-" "_") -}}
{{- end -}}

{{/*
ocrstream.worker.resources: the component's resources plus the GPU limit when .gpu is set.
*/}}
{{- define "ocrstream.worker.resources" -}}
{{- $res := deepCopy (.resources | default dict) -}}
{{- if and .gpu (gt (int .gpu.count) 0) -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $_ := set $limits .gpu.resourceName (.gpu.count | int | toString) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/*
ocrstream.worker.deployment: the Deployment of one Python service.
*/}}
{{- define "ocrstream.worker.deployment" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $prefix := include "ocrstream.worker.envPrefix" . -}}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ocrstream.component" $ctx }}
  labels:
    {{- include "ocrstream.labels" $ctx | nindent 4 }}
  annotations:
    {{- include "ocrstream.consumerAnnotations" (dict "root" $root "component" .component "autoscaling" $svc.autoscaling) | nindent 4 }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "ocrstream.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ocrstream.labels" $ctx | nindent 8 }}
      annotations:
        # Roll pods when the shared endpoints change.
        checksum/config: {{ include (print $root.Template.BasePath "/common/configmap.yaml") $root | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "ocrstream.podSpecCommon" $root | nindent 6 }}
      terminationGracePeriodSeconds: 60
      containers:
        - name: {{ .component }}
          image: {{ include "ocrstream.image" (dict "root" $root "image" .image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "ocrstream.component" (dict "root" $root "component" "config") }}
          env:
            {{- include "ocrstream.sharedEnv" $root | nindent 12 }}
            {{- with .portEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with include "ocrstream.serviceEnv" (dict "prefix" $prefix "env" $svc.env) }}{{ . | nindent 12 }}{{ end }}
          {{- include "ocrstream.httpProbes" (dict "port" .portName) | nindent 10 }}
          resources:
            {{- include "ocrstream.worker.resources" (dict "resources" $svc.resources "gpu" .gpu) | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "ocrstream.scratchMounts" $root | nindent 12 }}
      volumes:
        {{- include "ocrstream.scratchVolumes" $root | nindent 8 }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/*
ocrstream.worker.service: a ClusterIP Service for the component's port(s).
Extra (dict "ports" list-of-{name,port,targetPort}) overrides the single metrics port.
*/}}
{{- define "ocrstream.worker.service" -}}
{{- $ctx := dict "root" .root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ocrstream.component" $ctx }}
  labels:
    {{- include "ocrstream.labels" $ctx | nindent 4 }}
spec:
  type: {{ .type | default "ClusterIP" }}
  selector:
    {{- include "ocrstream.selectorLabels" $ctx | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .targetPort }}
      protocol: TCP
    {{- end }}
{{- end -}}

{{/*
ocrstream.worker.scaler: a KEDA ScaledObject on the component's consumer-group lag, or, with KEDA
off, an autoscaling/v2 HPA on CPU (plus the external lag metric when hpa.lagMetric.enabled).
Group and topic come from ocrstream.consumer (the code fixes them); bounds from .autoscaling.
*/}}
{{- define "ocrstream.worker.scaler" -}}
{{- $root := .root -}}
{{- $as := .autoscaling -}}
{{- $ctx := dict "root" $root "component" .component -}}
{{- $name := include "ocrstream.component" $ctx -}}
{{- $consumer := include "ocrstream.consumer" (dict "root" $root "component" .component) | fromYaml -}}
{{- $topic := $consumer.input -}}
{{- if $root.Values.keda.enabled }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  labels:
    {{- include "ocrstream.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  pollingInterval: {{ $root.Values.keda.pollingInterval }}
  cooldownPeriod: {{ $root.Values.keda.cooldownPeriod }}
  minReplicaCount: {{ $as.minReplicas }}
  maxReplicaCount: {{ $as.maxReplicas }}
  {{- if gt (int $root.Values.keda.fallbackReplicas) 0 }}
  fallback:
    failureThreshold: 3
    replicas: {{ min $root.Values.keda.fallbackReplicas $as.maxReplicas }}
  {{- end }}
  {{- with $as.behavior }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml . | nindent 8 }}
  {{- end }}
  triggers:
    - type: kafka
      metadata:
        bootstrapServers: {{ include "ocrstream.kafkaBootstrap" $root | quote }}
        consumerGroup: {{ $consumer.group | quote }}
        topic: {{ $topic | quote }}
        lagThreshold: {{ $as.lagThreshold | quote }}
        activationLagThreshold: {{ $as.activationLagThreshold | quote }}
        offsetResetPolicy: {{ $root.Values.keda.offsetResetPolicy | quote }}
        # Replicas beyond the partition count would idle; the chart already caps max at partitions.
        allowIdleConsumers: "false"
        excludePersistentLag: {{ $root.Values.keda.excludePersistentLag | toString | quote }}
      {{- with $root.Values.keda.authenticationRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
{{- else }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "ocrstream.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  # The HPA cannot scale to zero without the alpha HPAScaleToZero gate.
  minReplicas: {{ max 1 $as.minReplicas }}
  maxReplicas: {{ $as.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $root.Values.hpa.cpuUtilization }}
    {{- if $root.Values.hpa.lagMetric.enabled }}
    - type: External
      external:
        metric:
          name: {{ $root.Values.hpa.lagMetric.name }}
          selector:
            matchLabels:
              {{ $root.Values.hpa.lagMetric.groupLabel }}: {{ $consumer.group | quote }}
              {{ $root.Values.hpa.lagMetric.topicLabel }}: {{ $topic | quote }}
        target:
          type: AverageValue
          averageValue: {{ $as.lagThreshold | quote }}
    {{- end }}
  {{- with $as.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
ocrstream.worker.pdb: a PodDisruptionBudget (maxUnavailable, so single-replica consumers still drain).
*/}}
{{- define "ocrstream.worker.pdb" -}}
{{- $ctx := dict "root" .root "component" .component -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ocrstream.component" $ctx }}
  labels:
    {{- include "ocrstream.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ocrstream.selectorLabels" $ctx | nindent 6 }}
{{- end -}}

{{/*
ocrstream.worker.networkPolicy: ingress only on the listed ports (metrics from the monitoring
namespaces, the API from ingestFrom); egress limited to DNS, the release and extraEgress when
networkPolicy.restrictEgress. Call with (dict "root" $ "component" "encoder" "metricsPorts" (list 9100)
"apiPorts" (list) "apiFrom" list).
*/}}
{{- define "ocrstream.worker.networkPolicy" -}}
{{- $root := .root -}}
{{- $np := $root.Values.networkPolicy -}}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "ocrstream.component" $ctx }}
  labels:
    {{- include "ocrstream.labels" $ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "ocrstream.selectorLabels" $ctx | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $np.restrictEgress }}
    - Egress
    {{- end }}
  ingress:
    - ports:
        {{- range .metricsPorts }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      from:
        {{- if $np.metricsNamespaceSelector }}
        - namespaceSelector:
            matchLabels:
              {{- toYaml $np.metricsNamespaceSelector | nindent 14 }}
        {{- else }}
        - namespaceSelector: {}
        {{- end }}
    {{- if .apiPorts }}
    - ports:
        {{- range .apiPorts }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with .apiFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
  {{- if $np.restrictEgress }}
  egress:
    - ports:
        - {port: 53, protocol: UDP}
        - {port: 53, protocol: TCP}
    - to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ $root.Release.Name }}
    {{- with $np.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/*
ocrstream.worker.all: everything one Python service renders (Deployment, Service, scaler, PDB,
NetworkPolicy), separated by `---`. The component files call only this.
*/}}
{{- define "ocrstream.worker.all" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{ include "ocrstream.worker.deployment" . }}
---
{{ include "ocrstream.worker.service" (dict "root" $root "component" .component "type" .serviceType "ports" .servicePorts) }}
{{- if and .lagScaled $svc.autoscaling.enabled }}
---
{{- include "ocrstream.worker.scaler" (dict "root" $root "component" .component "autoscaling" $svc.autoscaling) }}
{{- end }}
{{- if $svc.pdb.enabled }}
---
{{ include "ocrstream.worker.pdb" (dict "root" $root "component" .component "pdb" $svc.pdb) }}
{{- end }}
{{- if $root.Values.networkPolicy.enabled }}
---
{{ include "ocrstream.worker.networkPolicy" (dict "root" $root "component" .component "metricsPorts" (list .port) "apiPorts" .apiPorts "apiFrom" .apiFrom) }}
{{- end }}
{{- end -}}
