{{/*
The one pod template, shared by the head and every worker group.
Call with (dict "root" $ "group" $groupValues "nodeType" "head"|"worker").
*/}}
{{- define "slm-cascade.podTemplate" -}}
{{- $root := .root }}
{{- $group := .group }}
{{- $isHead := eq .nodeType "head" }}
{{- $values := $root.Values }}
metadata:
  labels:
    {{- include "slm-cascade.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "ray-head" "ray-worker" $isHead }}
    {{- with $group.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $group.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if or $values.serviceAccount.create $values.serviceAccount.name }}
  serviceAccountName: {{ include "slm-cascade.serviceAccountName" $root }}
  {{- end }}
  {{- if not $isHead }}
  automountServiceAccountToken: false
  {{- end }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $values.podSecurityContext | nindent 4 }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $isHead }}
      image: "{{ $values.image.repository }}:{{ $values.image.tag | default $root.Chart.AppVersion }}"
      imagePullPolicy: {{ $values.image.pullPolicy }}
      securityContext:
        {{- toYaml $values.securityContext | nindent 8 }}
      ports:
        {{- if $isHead }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ include "slm-cascade.servePort" $root }}}
        - {name: metrics, containerPort: {{ $values.metrics.port }}}
      env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: SLM_CASCADE_CACHE, value: {{ $values.modelCache.mountPath | quote }}}
        - {name: HF_HOME, value: {{ printf "%s/huggingface" $values.modelCache.mountPath | quote }}}
        - {name: XDG_CACHE_HOME, value: {{ $values.modelCache.mountPath | quote }}}
        {{- if $values.otel.endpoint }}
        - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ $values.otel.endpoint | quote }}}
        - {name: OTEL_EXPORTER_OTLP_PROTOCOL, value: {{ $values.otel.protocol | quote }}}
        - {name: OTEL_SERVICE_NAME, value: {{ $values.otel.serviceName | quote }}}
        - name: OTEL_RESOURCE_ATTRIBUTES
          value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),service.instance.id=$(POD_NAME)"
        {{- end }}
        {{- range $values.apiKeys }}
        - name: {{ .envVar }}
          valueFrom:
            secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .key | quote }}}
        {{- end }}
        {{- with $values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- $resources := deepCopy ($group.resources | default dict) }}
        {{- if and (not $isHead) (not $group.cpuOnly) }}
        {{- $gpus := dict "nvidia.com/gpu" (int $group.gpus) }}
        {{- $_ := set $resources "requests" (merge (deepCopy ($resources.requests | default dict)) $gpus) }}
        {{- $_ := set $resources "limits" (merge (deepCopy ($resources.limits | default dict)) $gpus) }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      volumeMounts:
        - {name: tmp, mountPath: /tmp}
        - {name: dshm, mountPath: /dev/shm}
        - {name: model-cache, mountPath: {{ $values.modelCache.mountPath | quote }}}
  volumes:
    - name: tmp
      emptyDir: {sizeLimit: {{ $values.tmpVolume.sizeLimit }}}
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ $values.shmVolume.sizeLimit }}}
    - name: model-cache
      {{- if $values.modelCache.existingClaim }}
      persistentVolumeClaim: {claimName: {{ $values.modelCache.existingClaim | quote }}}
      {{- else }}
      emptyDir: {sizeLimit: {{ $values.modelCache.sizeLimit }}}
      {{- end }}
{{- end }}

{{/* rayStartParams of a group: its own, metrics port and the custom resources it advertises. */}}
{{- define "slm-cascade.rayStartParams" -}}
{{- $params := deepCopy (.group.rayStartParams | default dict) }}
{{- $_ := set $params "metrics-export-port" (toString .root.Values.metrics.port) }}
{{- with .group.customResources }}
{{- $_ := set $params "resources" (printf "%q" (toJson .)) }}
{{- end }}
{{- range $key, $value := $params }}{{ $_ := set $params $key (toString $value) }}{{ end }}
{{- toYaml $params }}
{{- end }}
