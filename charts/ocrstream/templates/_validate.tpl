{{/*
ocrstream.validateValues: cross-field checks values.schema.json cannot express. Collects every
problem, then fails once listing them all (called from common/configmap.yaml, always rendered).
*/}}
{{- define "ocrstream.validateValues" -}}
{{- $msgs := list -}}
{{- $v := .Values -}}
{{- $bootstrap := include "ocrstream.kafkaBootstrap" . -}}

{{- /* Consumers scaled on lag: the replica ceiling is the input topic's partition count. */ -}}
{{- range $name := list "rasterizer" "encoder" "decoder" "assembler" -}}
{{- $svc := get $v $name -}}
{{- if $svc.enabled -}}
{{- $c := include "ocrstream.consumer" (dict "root" $ "component" $name) | fromYaml -}}
{{- $parts := int $c.partitions -}}
{{- $as := $svc.autoscaling -}}
{{- if $as.enabled -}}
{{- if gt (int $as.maxReplicas) $parts -}}
{{- $msgs = append $msgs (printf "%s: autoscaling.maxReplicas=%d exceeds the %d partitions of topic %s (kafka.topics.%s.partitions; replicas beyond partitions sit idle); lower it or add partitions" $name (int $as.maxReplicas) $parts $c.input $c.inputKey) -}}
{{- end -}}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) -}}
{{- $msgs = append $msgs (printf "%s: autoscaling.minReplicas=%d is above maxReplicas=%d" $name (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}
{{- else if gt (int $svc.replicas) $parts -}}
{{- $msgs = append $msgs (printf "%s: replicas=%d exceeds the %d partitions of topic %s" $name (int $svc.replicas) $parts $c.input) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- if and $v.keda.enabled (not $bootstrap) -}}
{{- $msgs = append $msgs "keda.enabled=true needs kafka.bootstrap (the KEDA kafka scaler reads lag from it), or dev.enabled=true" -}}
{{- else if not $bootstrap -}}
{{- $msgs = append $msgs "kafka.bootstrap is required (or dev.enabled=true for the in-cluster broker)" -}}
{{- end -}}
{{- if not $v.dev.enabled -}}
{{- if not $v.objectStore.endpoint -}}
{{- $msgs = append $msgs "objectStore.endpoint is required (or dev.enabled=true for the in-cluster MinIO)" -}}
{{- end -}}
{{- if and (not $v.objectStore.existingSecret) (or (not $v.objectStore.accessKey) (not $v.objectStore.secretKey)) -}}
{{- $msgs = append $msgs "objectStore.accessKey and objectStore.secretKey are required unless objectStore.existingSecret names a Secret holding them" -}}
{{- end -}}
{{- if and (not $v.redis.existingSecret) (not $v.redis.url) -}}
{{- $msgs = append $msgs "redis.url is required unless redis.existingSecret names a Secret holding it (or dev.enabled=true)" -}}
{{- end -}}
{{- end -}}

{{- /* The ingest API refuses to start without keys (services/ingest/auth.py). */ -}}
{{- if $v.ingest.enabled -}}
{{- $i := $v.ingest -}}
{{- if and $i.apiKeys $i.apiKeysSecret.name -}}
{{- $msgs = append $msgs "ingest: give ingest.apiKeys or ingest.apiKeysSecret.name, not both" -}}
{{- else if not (or $i.apiKeys $i.apiKeysSecret.name $i.devOpen) -}}
{{- $msgs = append $msgs "ingest needs API keys: set ingest.apiKeys (stored in a Secret) or ingest.apiKeysSecret.name (an existing Secret), or ingest.devOpen=true for a development cluster" -}}
{{- end -}}
{{- end -}}

{{- if $v.decoder.enabled -}}
{{- $e := $v.decoder.experts -}}
{{- if or (lt (int $e.shards) 1) (gt (int $e.shards) (int $e.count)) -}}
{{- $msgs = append $msgs (printf "decoder.experts.shards=%d must be between 1 and experts.count=%d" (int $e.shards) (int $e.count)) -}}
{{- else if ne (mod (int $e.count) (int $e.shards)) 0 -}}
{{- $msgs = append $msgs (printf "decoder.experts.shards=%d does not divide experts.count=%d (every shard must hold the same number of experts)" (int $e.shards) (int $e.count)) -}}
{{- end -}}
{{- if and (eq $e.store "configmap") (not $e.moeLayers) -}}
{{- $msgs = append $msgs "decoder.experts.store=configmap needs decoder.experts.moeLayers (the checkpoint's MoE layer indices)" -}}
{{- end -}}
{{- end -}}

{{- if $msgs -}}
{{- fail (printf "\n\nocrstream values are invalid:\n  - %s\n" (join "\n  - " $msgs)) -}}
{{- end -}}
{{- end -}}
