{{/* The port Ray Serve's HTTP proxy listens on: the config's gateway.port (the model's default, 8000). */}}
{{- define "slm-cascade.servePort" -}}
{{- dig "gateway" "port" 8000 .Values.cascade }}
{{- end }}

{{/*
The RayService serveConfigV2: one application built by deployments.app:build_app, whose `args` are
`.Values.cascade` verbatim. No `deployments:` list: build_app computes every deployment's options from the
config at start-up, and Serve keeps options set in code when the config names none. Only what Serve takes from
the config alone is here: the application's name and route prefix, and the HTTP port. Must equal
`cascade render serve-config` (cluster/operations/render.py); tests/helm/test_serve_config.py checks it.
*/}}
{{- define "slm-cascade.serveConfig" -}}
{{- $cascade := .Values.cascade }}
{{- $app := dict "name" ($cascade.app_name | default "slm-cascade") "import_path" "deployments.app:build_app" "route_prefix" "/" "args" $cascade }}
{{- $config := dict "http_options" (dict "host" "0.0.0.0" "port" (include "slm-cascade.servePort" . | int)) "applications" (list $app) }}
{{- toYaml $config }}
{{- end }}

{{/*
Fails the render, naming the field, when a group's bounds are inverted, a deployment (gateway, vLLM tier, route
judge) asks for a custom resource no group advertises (its replicas would never be placed), or a remote tier's
api_key_env has no `apiKeys` entry (the key would be missing at runtime).
*/}}
{{- define "slm-cascade.checkPlacement" -}}
{{- $advertised := deepCopy (.Values.head.customResources | default dict) }}
{{- range $i, $group := .Values.workerGroups }}
{{- if gt (int $group.minReplicas) (int $group.maxReplicas) }}
{{- fail (printf "workerGroups[%d].minReplicas (%d) is greater than maxReplicas (%d)" $i (int $group.minReplicas) (int $group.maxReplicas)) }}
{{- end }}
{{- range $key, $_ := ($group.customResources | default dict) }}{{ $_ := set $advertised $key true }}{{ end }}
{{- end }}
{{- $asks := dict "cascade.gateway" (.Values.cascade.gateway | default dict).deployment }}
{{- range $i, $tier := .Values.cascade.tiers }}
{{- $_ := set $asks (printf "cascade.tiers[%d]" $i) $tier.deployment }}
{{- end }}
{{- range $i, $route := (.Values.cascade.routes | default list) }}
{{- $_ := set $asks (printf "cascade.routes[%d].judge" $i) ($route.judge | default dict).deployment }}
{{- end }}
{{- range $owner, $deployment := $asks }}
{{- range $key, $_ := ((($deployment | default dict).ray_actor_options | default dict).resources | default dict) }}
{{- if not (hasKey $advertised $key) }}
{{- fail (printf "%s.deployment.ray_actor_options.resources.%s: no worker group advertises it in customResources" $owner $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $tier := .Values.cascade.tiers }}
{{- with $tier.api_key_env }}
{{- $env := . }}
{{- $found := false }}
{{- range $.Values.apiKeys }}{{ if eq .envVar $env }}{{ $found = true }}{{ end }}{{ end }}
{{- if not $found }}
{{- fail (printf "cascade.tiers[%d].api_key_env: %s has no apiKeys entry (a Secret reference) that sets it" $i $env) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
