{{- define "observability.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: platform-control-plane
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- /*
The chart's files/ is a link to deploy/observability. A checkout without symlinks
(core.symlinks=false, common on Windows) or a copy that did not follow it leaves a plain
file there, and the chart would render no dashboard and no rule without a word: refuse.
*/ -}}
{{- define "observability.requireFiles" -}}
{{- $hint := "charts/observability/files must be the link to deploy/observability (check out with core.symlinks=true, copy with links followed, or helm package the chart)" }}
{{- if not (.Files.Glob "files/dashboards/*.json") }}
{{- fail (printf "no dashboards in files/dashboards/*.json: %s" $hint) }}
{{- end }}
{{- $rules := .Files.Get "files/alerts.yaml" | fromYaml }}
{{- if not (get $rules "groups") }}
{{- fail (printf "files/alerts.yaml is missing or has no rule groups: %s" $hint) }}
{{- end }}
{{- end -}}
