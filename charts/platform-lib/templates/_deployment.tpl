{{/*
The service's Deployment: `platformd <service>`, probes on /healthz (liveness, startup) and
/readyz (readiness: NATS, Postgres and the service's own checks), non-root, read-only root
filesystem. Settings come from the ConfigMap (envFrom) and Secret references (env).
*/}}
{{- define "platform-lib.deployment" -}}
{{- include "platform-lib.validate" . -}}
{{- $service := include "platform-lib.serviceName" . -}}
{{- $portName := include "platform-lib.portName" . -}}
{{- $secretEnv := include "platform-lib.secretEnv" . | trim -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "platform-lib.fullname" . }}
  labels:
    {{- include "platform-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: server
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ int .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- if and .Values.gitRepo .Values.gitRepo.persistence.enabled }}
    # One ReadWriteOnce volume: the old pod must let go of it before the new one starts.
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      # Never below the desired replicas during a rollout: consumers keep draining the stream.
      maxUnavailable: 0
      maxSurge: 1
    {{- end }}
  selector:
    matchLabels:
      {{- include "platform-lib.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: server
  template:
    metadata:
      labels:
        {{- include "platform-lib.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/component: server
        app.kubernetes.io/part-of: platform-control-plane
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Settings are read once at start: a changed ConfigMap must roll the pods.
        checksum/config: {{ include "platform-lib.configmap" . | sha256sum }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "platform-lib.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
      terminationGracePeriodSeconds: {{ int .Values.terminationGracePeriodSeconds }}
      {{- with .Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $service }}
          image: {{ include "platform-lib.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["platformd", {{ $service | quote }}]
          ports:
            - name: {{ $portName }}
              containerPort: {{ include "platform-lib.port" . }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "platform-lib.fullname" . }}
          {{- with $secretEnv }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: {{ $portName }}
            {{- toYaml .Values.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ $portName }}
            {{- toYaml .Values.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ $portName }}
            {{- toYaml .Values.probes.readiness | nindent 12 }}
          {{- with .Values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            {{- include "platform-lib.sharedVolumeMounts" . | nindent 12 }}
            {{- with .Values.gitRepo }}
            - name: gitops
              mountPath: {{ .mountPath }}
            {{- end }}
      volumes:
        {{- include "platform-lib.sharedVolumes" . | nindent 8 }}
        {{- with .Values.gitRepo }}
        - name: gitops
          {{- if .persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ .persistence.existingClaim | default (printf "%s-gitops" (include "platform-lib.fullname" $)) }}
          {{- else }}
          # A cache of the remote: every batch fetches first, so a new pod rebuilds it.
          emptyDir:
            sizeLimit: {{ .emptyDirSizeLimit | quote }}
          {{- end }}
        {{- end }}
      {{- with include "platform-lib.scheduling" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        - {{ merge (dict "labelSelector" (dict "matchLabels" (merge (include "platform-lib.selectorLabels" $ | fromYaml) (dict "app.kubernetes.io/component" "server")))) . | toYaml | nindent 10 }}
        {{- end }}
      {{- end }}
{{- end -}}
