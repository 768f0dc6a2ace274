{{/*
Names, labels and the pieces the Deployment and the migration Job share.

The service a chart runs is its chart name (`platformd <chart name>`): charts/intake runs
intake. platformd accepts the hyphenated names (git-publisher, cluster-bootstrapper).
*/}}

{{- define "platform-lib.services" -}}
{{- list "gateway" "intake" "policy" "approval" "renderer" "git-publisher" "cluster-bootstrapper" | toJson -}}
{{- end -}}

{{- define "platform-lib.serviceName" -}}
{{- if not (has .Chart.Name (include "platform-lib.services" . | fromJsonArray)) -}}
{{- fail (printf "platform-lib: chart %q is not a platformd service" .Chart.Name) -}}
{{- end -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "platform-lib.isGateway" -}}
{{- if eq .Chart.Name "gateway" }}true{{ end -}}
{{- end -}}

{{- define "platform-lib.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "platform-lib.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "platform-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "platform-lib.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "platform-lib.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "platform-lib.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: platform-control-plane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "platform-lib.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "platform-lib.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "platform-lib.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/*
The one port of a service: the gateway's API (which also serves /healthz, /readyz and
/metrics), or a backend service's ops port.
*/}}
{{- define "platform-lib.port" -}}
{{- if include "platform-lib.isGateway" . -}}
{{- int .Values.ports.http -}}
{{- else -}}
{{- int .Values.ports.ops -}}
{{- end -}}
{{- end -}}

{{- define "platform-lib.portName" -}}
{{- if include "platform-lib.isGateway" . }}http{{ else }}ops{{ end -}}
{{- end -}}

{{- define "platform-lib.listenVariable" -}}
{{- if include "platform-lib.isGateway" . }}PLATFORM_ADDRESS{{ else }}PLATFORM_HEALTH_ADDRESS{{ end -}}
{{- end -}}

{{/*
Settings the code marks secret (`setting(..., secret=True)`). They may only be references
into a Secret; tests/unit/test_charts.py fails when this list and the code disagree.
*/}}
{{- define "platform-lib.secretSettings" -}}
{{- list "PLATFORM_POSTGRES_DSN" "PLATFORM_NATS_URL" "PLATFORM_JWT_HS256_SECRET" "PLATFORM_APPROVAL_HMAC_SECRET" "PLATFORM_ATTESTATION_HMAC_SECRET" "PLATFORM_GITOPS_REPO_URL" "PLATFORM_GIT_TOKEN" "PLATFORM_NATS_NKEY_SEED" | toJson -}}
{{- end -}}

{{- define "platform-lib.kubeconfigDir" -}}/etc/platform/kubeconfig{{- end -}}

{{- define "platform-lib.natsIdentityDir" -}}/etc/platform/nats{{- end -}}

{{- define "platform-lib.provisionerIdentityDir" -}}/etc/platform/nats-provisioner{{- end -}}

{{/*
Variables derived from other values, so the probes, the container port and the mounts
cannot disagree with what the process binds and reads.
*/}}
{{- define "platform-lib.derivedEnv" -}}
{{- $port := include "platform-lib.port" . | atoi -}}
{{ include "platform-lib.listenVariable" . }}: {{ printf "0.0.0.0:%d" $port | quote }}
{{- with .Values.gitRepo }}
PLATFORM_GITOPS_REPO_PATH: {{ printf "%s/repo.git" (trimSuffix "/" .mountPath) | quote }}
{{- end }}
{{- with .Values.kubeconfig }}
{{- if .existingSecret }}
PLATFORM_KUBECONFIG: {{ printf "%s/config" (include "platform-lib.kubeconfigDir" $) | quote }}
{{- end }}
{{- end }}
{{- with .Values.natsIdentity }}
{{- if .existingSecret }}
PLATFORM_NATS_NKEY_SEED_FILE: {{ printf "%s/seed" (include "platform-lib.natsIdentityDir" $) | quote }}
{{- /* The replies of this identity's requests: the only inbox it may subscribe to. */}}
PLATFORM_NATS_INBOX_PREFIX: {{ printf "_INBOX_%s" (include "platform-lib.serviceName" $ | replace "-" "_") | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Every non-secret setting as a YAML map of strings: `env` (empty values dropped, so the
code's default applies) plus the derived variables. The ConfigMap holds it; the migration
Job inlines it, because a pre-install hook runs before the ConfigMap exists.
*/}}
{{- define "platform-lib.env" -}}
{{- $secretSettings := include "platform-lib.secretSettings" . | fromJsonArray -}}
{{- $derived := include "platform-lib.derivedEnv" . | fromYaml -}}
{{- $secretEnv := .Values.secrets.env | default dict -}}
{{- $env := dict -}}
{{- range $name, $value := .Values.env -}}
{{- if has $name $secretSettings -}}
{{- fail (printf "env.%s is a secret setting: reference it under secrets.env (a key of an existing Secret), never as a plain value" $name) -}}
{{- end -}}
{{- if hasKey $derived $name -}}
{{- fail (printf "env.%s is set by the chart (from ports, gitRepo or kubeconfig); set those values instead" $name) -}}
{{- end -}}
{{- if and (hasKey $secretEnv $name) (index $secretEnv $name) -}}
{{- fail (printf "%s is under both env and secrets.env; keep one" $name) -}}
{{- end -}}
{{- if not (kindIs "invalid" $value) -}}
{{- if not (kindIs "string" $value) -}}
{{- fail (printf "env.%s must be a quoted string (ConfigMap data is text; Helm would print large numbers as 1e+06)" $name) -}}
{{- end -}}
{{- if ne $value "" -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml (merge $env $derived) -}}
{{- end -}}

{{/*
`env:` entries that reference Secrets. Each reference is a map {key, name, optional}: key of
the Secret `name` (default secrets.existingSecret), e.g. one NATS URL Secret shared by all
releases. Always a map, so an override merges with the chart's default instead of
replacing a map by a string (which Helm warns about). null drops a default reference.
*/}}
{{- define "platform-lib.secretEnv" -}}
{{- $default := .Values.secrets.existingSecret -}}
{{- range $name, $ref := .Values.secrets.env }}
{{- if not (kindIs "invalid" $ref) }}
{{- if not (kindIs "map" $ref) -}}
{{- fail (printf "secrets.env.%s must be a map {key, name, optional}, e.g. {key: %v}" $name $ref) -}}
{{- end -}}
{{- $secretName := $ref.name | default $default -}}
{{- $key := required (printf "secrets.env.%s.key is required" $name) $ref.key -}}
{{- $optional := $ref.optional | default false -}}
{{- if not $secretName -}}
{{- fail (printf "secrets.env.%s: set secrets.existingSecret or a name for this reference" $name) -}}
{{- end }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secretName | quote }}
      key: {{ $key | quote }}
      {{- if $optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Volumes both pods need: a writable /tmp (the root filesystem is read-only; the Kubernetes
client writes CA files there), the kubeconfig Secret, and extraVolumes.
*/}}
{{- define "platform-lib.sharedVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit | quote }}
{{- with .Values.kubeconfig }}
{{- if .existingSecret }}
- name: kubeconfig
  secret:
    secretName: {{ .existingSecret | quote }}
    defaultMode: 0440
    items:
      - key: {{ .key | default "config" | quote }}
        path: config
{{- end }}
{{- end }}
{{- with .Values.natsIdentity }}
{{- if .existingSecret }}
- name: nats-identity
  secret:
    secretName: {{ .existingSecret | quote }}
    defaultMode: 0440
    items:
      - key: {{ .key | default "nkey-seed" | quote }}
        path: seed
{{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "platform-lib.sharedVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .Values.kubeconfig }}
{{- if .existingSecret }}
- name: kubeconfig
  mountPath: {{ include "platform-lib.kubeconfigDir" $ }}
  readOnly: true
{{- end }}
{{- end }}
{{- with .Values.natsIdentity }}
{{- if .existingSecret }}
- name: nats-identity
  mountPath: {{ include "platform-lib.natsIdentityDir" $ }}
  readOnly: true
{{- end }}
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "platform-lib.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
Checks across values that a schema cannot express. Included by the Deployment, so a bad
combination fails `helm install` / `helm template` instead of a rollout.
*/}}
{{- define "platform-lib.validate" -}}
{{- $shutdown := .Values.env.PLATFORM_SHUTDOWN_TIMEOUT_SECONDS | default "20" | float64 -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $shutdown -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed PLATFORM_SHUTDOWN_TIMEOUT_SECONDS (%v): the drain must finish before the kubelet kills the process" .Values.terminationGracePeriodSeconds $shutdown) -}}
{{- end -}}
{{- with .Values.gitRepo }}
{{- if .persistence.enabled }}
{{- if or (gt (int $.Values.replicaCount) 1) $.Values.autoscaling.enabled }}
{{- fail "gitRepo.persistence.enabled uses one ReadWriteOnce volume: set replicaCount to 1 and autoscaling.enabled to false (or use the emptyDir and more replicas)" -}}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.migration.enabled (include "platform-lib.isGateway" .) -}}
{{- fail "the gateway owns no schema: migration.enabled must be false" -}}
{{- end -}}
{{- if eq .Chart.Name "cluster-bootstrapper" -}}
{{- $apply := .Values.env.PLATFORM_K8S_APPLY | default "false" | lower -}}
{{- if and (has $apply (list "1" "true" "yes" "on" "y" "t")) (not .Values.kubeconfig.existingSecret) (not .Values.serviceAccount.automountToken) -}}
{{- fail "PLATFORM_K8S_APPLY is on with in-cluster config (no kubeconfig.existingSecret): serviceAccount.automountToken must be true" -}}
{{- end -}}
{{- end -}}
{{- end -}}
