{{/*
The gateway's API, or a backend service's ops port (what a ServiceMonitor scrapes; backend
services take no other traffic: they talk over NATS).
*/}}
{{- define "platform-lib.service" -}}
{{- $portName := include "platform-lib.portName" . -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "platform-lib.fullname" . }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: server
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "platform-lib.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: server
  ports:
    - name: {{ $portName }}
      port: {{ .Values.service.port | default (include "platform-lib.port" .) }}
      targetPort: {{ $portName }}
      protocol: TCP
{{- end -}}
