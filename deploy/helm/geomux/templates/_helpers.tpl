{{/* The labels of everything the release makes. */}}
{{- define "geomux.labels" -}}
app.kubernetes.io/part-of: geomux
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* A process's selector: dict "root" $ "name" name. */}}
{{- define "geomux.selector" -}}
app.kubernetes.io/name: geomux-{{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "geomux.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "geomux.configMap" -}}
{{ .Values.existingConfigMap | default (printf "%s-config" .Release.Name) }}
{{- end -}}

{{/*
The pod of a process: dict "root" $ "name" name "p" the process's values
"restartPolicy" (optional).
*/}}
{{- define "geomux.pod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "geomux.labels" $root | nindent 4 }}
    app.kubernetes.io/name: geomux-{{ .name }}
    {{- if .p.reachesRegions }}
    geomux.io/reaches-regions: "true"
    {{- end }}
spec:
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  # Kubernetes would otherwise set GEOMUX_* variables for a Service named
  # geomux, and geomux reads every GEOMUX_* variable as a setting.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532}
  containers:
    - name: geomux
      image: {{ include "geomux.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: {{ toJson .p.args }}
      {{- with .p.envSecret }}
      envFrom:
        - secretRef: {name: {{ . }}}
      {{- end }}
      {{- if .long }}
      ports:
        {{- if .p.public }}
        - {name: http, containerPort: 8080}
        {{- end }}
        - {name: admin, containerPort: 8081}
      livenessProbe:
        httpGet: {path: /healthz, port: admin}
        periodSeconds: 10
      readinessProbe:
        httpGet: {path: /readyz, port: {{ if .p.public }}http{{ else }}admin{{ end }}}
        periodSeconds: {{ if .p.public }}2{{ else }}5{{ end }}
      {{- end }}
      {{- with .p.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - {name: config, mountPath: /etc/geomux/config, readOnly: true}
        {{- if .p.natsSecret }}
        - {name: nats, mountPath: /etc/geomux/nats, readOnly: true}
        {{- end }}
        - {name: nats-ca, mountPath: /etc/geomux/tls, readOnly: true}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
  volumes:
    - name: config
      configMap: {name: {{ include "geomux.configMap" $root }}}
    {{- with .p.natsSecret }}
    - name: nats
      secret: {secretName: {{ . }}, defaultMode: 0440}
    {{- end }}
    - name: nats-ca
      secret: {secretName: {{ $root.Values.natsCASecret }}, defaultMode: 0444}
{{- end -}}
