{{/* Every non-secret setting of the service (see platform-lib.env). */}}
{{- define "platform-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "platform-lib.fullname" . }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
data:
  {{- range $name, $value := include "platform-lib.env" . | fromYaml }}
  {{ $name }}: {{ $value | quote }}
  {{- end }}
{{- end -}}
