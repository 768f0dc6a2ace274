{{/*
The gateway's API from outside the cluster. Only the paths listed are routed: the default
is /v1, so /metrics and /readyz (same port) stay inside the cluster.
*/}}
{{- define "platform-lib.ingress" -}}
{{- if .Values.ingress.enabled -}}
{{- $fullname := include "platform-lib.fullname" . -}}
{{- $portName := include "platform-lib.portName" . -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
  {{- with .Values.ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with .Values.ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- with .Values.ingress.tls }}
  tls:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  rules:
    {{- range .Values.ingress.hosts }}
    - host: {{ .host | quote }}
      http:
        paths:
          {{- range .paths }}
          - path: {{ .path }}
            pathType: {{ .pathType | default "Prefix" }}
            backend:
              service:
                name: {{ $fullname }}
                port:
                  name: {{ $portName }}
          {{- end }}
    {{- end }}
{{- end -}}
{{- end -}}
