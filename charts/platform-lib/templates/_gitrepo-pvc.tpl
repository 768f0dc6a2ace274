{{/*
git-publisher's bare repository. Kept on `helm uninstall` (resource-policy keep): with
pushes off it holds the only copy of the GitOps history.
*/}}
{{- define "platform-lib.gitRepoClaim" -}}
{{- with .Values.gitRepo -}}
{{- if and .persistence.enabled (not .persistence.existingClaim) -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ printf "%s-gitops" (include "platform-lib.fullname" $) }}
  labels:
    {{- include "platform-lib.labels" $ | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes:
    - ReadWriteOnce
  {{- with .persistence.storageClassName }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ .persistence.size | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
