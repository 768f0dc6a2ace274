{{- define "platform-lib.notes" -}}
{{- $service := include "platform-lib.serviceName" . -}}
{{ $service }} runs as Deployment {{ include "platform-lib.fullname" . }} in namespace {{ .Release.Namespace }}.
{{- if .Values.migration.enabled }}
Migrations ran before it as hook Job {{ printf "%s-migrate" (include "platform-lib.fullname" .) | trunc 63 | trimSuffix "-" }}
(kubectl logs job/{{ printf "%s-migrate" (include "platform-lib.fullname" .) | trunc 63 | trimSuffix "-" }}).
{{- end }}

It reads these Secret keys (create them before installing; the chart renders no Secret):
{{- $default := .Values.secrets.existingSecret }}
{{- range $name, $ref := .Values.secrets.env }}
{{- if not (kindIs "invalid" $ref) }}
  {{ $name }} <- secret {{ $ref.name | default $default }}, key {{ $ref.key }}{{ if $ref.optional }} (optional){{ end }}
{{- end }}
{{- end }}
{{- with .Values.kubeconfig }}{{ if .existingSecret }}
  PLATFORM_KUBECONFIG <- secret {{ .existingSecret }}, key {{ .key | default "config" }} (mounted as a file)
{{- end }}{{ end }}

Settings and their defaults: docker run --rm {{ include "platform-lib.image" . }} platformd config {{ $service }}
Health: kubectl port-forward deploy/{{ include "platform-lib.fullname" . }} {{ include "platform-lib.port" . }} && curl localhost:{{ include "platform-lib.port" . }}/readyz
{{- end -}}
