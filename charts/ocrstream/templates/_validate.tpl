{{/*
ocrstream.validateValues: cross-field checks values.schema.json cannot express. Collects every
problem, then fails once listing them all (called from common/configmap.yaml, always rendered).
*/}}
{{- define "ocrstream.validateValues" -}}
{{- $msgs := list -}}
{{- $v := .Values -}}
{{- $topics := $v.kafka.topics -}}
{{- $bootstrap := include "ocrstream.kafkaBootstrap" . -}}

{{- /* Consumers scaled on lag: name -> (values holding consumerGroup/topics, autoscaling, replicas) */ -}}
{{- $consumers := list -}}
{{- if $v.rasterizer.enabled }}{{ $consumers = append $consumers (dict "name" "rasterizer" "c" $v.rasterizer "as" $v.rasterizer.autoscaling "replicas" $v.rasterizer.replicas) }}{{ end -}}
{{- if $v.encoder.enabled }}{{ $consumers = append $consumers (dict "name" "encoder" "c" $v.encoder "as" $v.encoder.autoscaling "replicas" $v.encoder.replicas) }}{{ end -}}
{{- if $v.decoder.enabled }}{{ $consumers = append $consumers (dict "name" "decoder" "c" $v.decoder.consumer "as" $v.decoder.autoscaling "replicas" $v.decoder.replicas) }}{{ end -}}
{{- if $v.assembler.enabled }}{{ $consumers = append $consumers (dict "name" "assembler" "c" $v.assembler "as" $v.assembler.autoscaling "replicas" $v.assembler.replicas) }}{{ end -}}
{{- $all := $consumers -}}
{{- if $v.ingest.enabled }}{{ $all = append $all (dict "name" "ingest" "c" $v.ingest) }}{{ end -}}

{{- $groups := dict -}}
{{- range $all -}}
{{- $name := .name -}}
{{- $c := .c -}}
{{- range $dir := list "inputTopic" "outputTopic" -}}
{{- $key := get $c $dir -}}
{{- if not (hasKey $topics $key) -}}
{{- $msgs = append $msgs (printf "%s.%s=%q is not a key of kafka.topics (%s)" $name $dir $key (keys $topics | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $groups .c.consumerGroup -}}
{{- $msgs = append $msgs (printf "%s and %s share consumer group %q; each service needs its own" (get $groups .c.consumerGroup) $name .c.consumerGroup) -}}
{{- else -}}
{{- $_ := set $groups .c.consumerGroup $name -}}
{{- end -}}
{{- end -}}

{{- range $consumers -}}
{{- $t := get $topics .c.inputTopic -}}
{{- if $t -}}
{{- $parts := int $t.partitions -}}
{{- if .as.enabled -}}
{{- if gt (int .as.maxReplicas) $parts -}}
{{- $msgs = append $msgs (printf "%s: autoscaling.maxReplicas=%d exceeds the %d partitions of topic %s (replicas beyond partitions sit idle); lower it or add partitions" .name (int .as.maxReplicas) $parts $t.name) -}}
{{- end -}}
{{- if gt (int .as.minReplicas) (int .as.maxReplicas) -}}
{{- $msgs = append $msgs (printf "%s: autoscaling.minReplicas=%d is above maxReplicas=%d" .name (int .as.minReplicas) (int .as.maxReplicas)) -}}
{{- end -}}
{{- else if gt (int .replicas) $parts -}}
{{- $msgs = append $msgs (printf "%s: replicas=%d exceeds the %d partitions of topic %s" .name (int .replicas) $parts $t.name) -}}
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

{{- if $v.decoder.enabled -}}
{{- $e := $v.decoder.experts -}}
{{- if or (lt (int $e.shards) 1) (gt (int $e.shards) (int $e.count)) -}}
{{- $msgs = append $msgs (printf "decoder.experts.shards=%d must be between 1 and experts.count=%d" (int $e.shards) (int $e.count)) -}}
{{- else if ne (mod (int $e.count) (int $e.shards)) 0 -}}
{{- $msgs = append $msgs (printf "decoder.experts.shards=%d does not divide experts.count=%d (every shard must hold the same number of experts)" (int $e.shards) (int $e.count)) -}}
{{- end -}}
{{- end -}}

{{- if $msgs -}}
{{- fail (printf "\n\nocrstream values are invalid:\n  - %s\n" (join "\n  - " $msgs)) -}}
{{- end -}}
{{- end -}}
