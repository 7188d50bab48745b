{{/* Base name for all demo resources: "<release>-demo", max 50 chars. */}}
{{- define "demos.fullname" -}}
{{- printf "%s-demo" .Release.Name | trunc 50 | trimSuffix "-" }}
{{- end }}

{{- define "demos.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: ollyscale-demos
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "frontend"). */}}
{{- define "demos.selectorLabels" -}}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
