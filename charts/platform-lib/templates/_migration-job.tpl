{{/*
`platformd migrate <service>` as a pre-install,pre-upgrade hook: the schema is current
before the first pod of a new version starts. The Job must not depend on anything this
release creates, because on install none of it exists yet: settings are inlined rather
than read from the ConfigMap, the ServiceAccount is the namespace's default (or one named
in migration.serviceAccountName that already exists), and only Secrets created out of band
are referenced. It gets the Deployment's exact environment, since migrate validates the
service's full settings first (tests/unit/test_charts.py compares the two), except its
NATS identity: migrate also applies the event stream's configuration, which only the
provisioner's identity (migration.natsIdentity) may change.
*/}}
{{- define "platform-lib.migrationJob" -}}
{{- if .Values.migration.enabled -}}
{{- $service := include "platform-lib.serviceName" . -}}
{{- $env := include "platform-lib.env" . | fromYaml -}}
{{- $provisioner := (.Values.migration.natsIdentity | default dict).existingSecret -}}
{{- if and (.Values.natsIdentity | default dict).existingSecret (not $provisioner) -}}
{{- fail "migration.natsIdentity.existingSecret is required with natsIdentity: the migration Job applies the stream's configuration as the provisioner (docs/security.md)" -}}
{{- end -}}
{{- if $provisioner -}}
{{- $_ := set $env "PLATFORM_NATS_NKEY_SEED_FILE" (printf "%s/seed" (include "platform-lib.provisionerIdentityDir" .)) -}}
{{- $_ := set $env "PLATFORM_NATS_INBOX_PREFIX" "_INBOX_provisioner" -}}
{{- end -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ printf "%s-migrate" (include "platform-lib.fullname" .) | trunc 63 | trimSuffix "-" }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: migration
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    # Keep the last run (and its logs) until the next one replaces it.
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: {{ int .Values.migration.backoffLimit }}
  activeDeadlineSeconds: {{ int .Values.migration.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "platform-lib.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/component: migration
        app.kubernetes.io/part-of: platform-control-plane
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      restartPolicy: Never
      {{- with .Values.migration.serviceAccountName }}
      serviceAccountName: {{ . }}
      {{- end }}
      # Migrations talk to Postgres only, never to the Kubernetes API.
      automountServiceAccountToken: false
      {{- with .Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: migrate
          image: {{ include "platform-lib.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["platformd", "migrate", {{ $service | quote }}]
          env:
            {{- range $name, $value := $env }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
            {{- with include "platform-lib.secretEnv" . | trim }}
            {{- . | nindent 12 }}
            {{- end }}
          {{- with (.Values.migration.resources | default .Values.resources) }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            {{- include "platform-lib.sharedVolumeMounts" . | nindent 12 }}
            {{- if $provisioner }}
            - name: nats-provisioner
              mountPath: {{ include "platform-lib.provisionerIdentityDir" . }}
              readOnly: true
            {{- end }}
      volumes:
        {{- include "platform-lib.sharedVolumes" . | nindent 8 }}
        {{- if $provisioner }}
        - name: nats-provisioner
          secret:
            secretName: {{ $provisioner | quote }}
            defaultMode: 0440
            items:
              - key: {{ .Values.migration.natsIdentity.key | default "nkey-seed" | quote }}
                path: seed
        {{- end }}
      {{- with include "platform-lib.scheduling" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
{{- end -}}
{{- end -}}
