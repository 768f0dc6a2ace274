{{/*
What cluster-bootstrapper needs for in-cluster apply (docs/cluster-bootstrapper.md):
server-side apply, read-back and delete of each bundle's objects in environment namespaces
it creates itself (so a ClusterRole), namespaces themselves, and Argo CD Applications and AppProjects in
one namespace only (a Role there). Kinds that policy packs add go in rbac.extraRules.
Granting a Role through a RoleBinding needs the Role's own permissions (or `bind`), which
is why packs that bind roles need matching extraRules.
*/}}
{{- define "platform-lib.clusterRbac" -}}
{{- if .Values.rbac.create -}}
{{- $fullname := include "platform-lib.fullname" . -}}
{{- $verbs := list "get" "list" "create" "patch" "update" "delete" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["namespaces", "resourcequotas", "limitranges", "configmaps", "serviceaccounts"]
    verbs: {{ toJson $verbs }}
  - apiGroups: ["networking.k8s.io"]
    resources: ["networkpolicies"]
    verbs: {{ toJson $verbs }}
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["roles", "rolebindings"]
    verbs: {{ toJson $verbs }}
  {{- with .Values.rbac.extraRules }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ include "platform-lib.serviceAccountName" . }}
    namespace: {{ .Release.Namespace }}
{{- with .Values.rbac.argocdNamespace }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $fullname }}
  namespace: {{ . }}
  labels:
    {{- include "platform-lib.labels" $ | nindent 4 }}
rules:
  - apiGroups: ["argoproj.io"]
    resources: ["applications", "appprojects"]
    verbs: {{ toJson $verbs }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $fullname }}
  namespace: {{ . }}
  labels:
    {{- include "platform-lib.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ include "platform-lib.serviceAccountName" $ }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end -}}
{{- end -}}
