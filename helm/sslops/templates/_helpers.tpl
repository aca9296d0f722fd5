{{/* Names and labels shared by every template. */}}

{{- define "sslops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sslops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "sslops.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "sslops.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sslops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sslops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sslops
{{- end }}

{{/* The labels every pod of this release carries (its pipeline tasks, training pods, the
     audit-registry CronJob's, the test pod); the NetworkPolicies select them. The release's
     name tells two releases in one namespace apart: the chart adds it to the compiled
     pipelines' task pods and to their config's platform.pod_labels, which the launcher
     gives the training pods. */}}
{{- define "sslops.workloadSelector" -}}
app.kubernetes.io/part-of: sslops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The training jobs' pods (the launcher's sslops.k8s.specs labels them so): the only
     sslops pods that accept connections, from each other. */}}
{{- define "sslops.trainingSelector" -}}
{{ include "sslops.workloadSelector" . }}
app.kubernetes.io/component: pretrain
{{- end }}

{{- define "sslops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-launcher" (include "sslops.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag[-cuda][@digest]; a digest pins the image. */}}
{{- define "sslops.image" -}}
{{- $root := index . 0 }}{{- $variant := index . 1 }}
{{- $image := $root.Values.image }}
{{- $tag := default $root.Chart.AppVersion $image.tag }}
{{- if eq $variant "cuda" }}{{ $tag = printf "%s-cuda" $tag }}{{ end }}
{{- $digest := ternary $image.cudaDigest $image.digest (eq $variant "cuda") }}
{{- printf "%s/%s:%s" $image.registry $image.repository $tag }}{{ if $digest }}@{{ $digest }}{{ end }}
{{- end }}

{{- /* runAsUser null: the platform assigns the UID (OpenShift's restricted-v2 SCC refuses a
     fixed one); int64, since a values number is a float and would print as 1.00068e+09. */}}
{{- define "sslops.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ int64 . }}
runAsGroup: {{ int64 . }}
fsGroup: {{ int64 . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "sslops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ int64 . }}
{{- end }}
capabilities:
  drop:
    - ALL
{{- end }}

{{- /* Names of the objects two releases in one namespace would otherwise share: derived
     from the release (`<fullname>-...`), so release "sslops" keeps the names the compiled
     pipelines and the kustomize overlays use, and another release gets its own. */}}
{{- define "sslops.workspaceName" -}}
{{- default (printf "%s-workspace" (include "sslops.fullname" .)) .Values.workspace.name }}
{{- end }}

{{- define "sslops.trainingRuntimeName" -}}
{{- default (printf "%s-torch-distributed" (include "sslops.fullname" .)) .Values.trainingRuntime.name }}
{{- end }}

{{- /* A compiled pipeline's name ("sslops-ssl-pipeline") under this release's prefix. KFP's
     webhook labels each version with it, so it must fit a label value (63 characters): a
     long prefix is cut, as Helm cuts a long fullname. */}}
{{- define "sslops.pipelineName" -}}
{{- $root := index . 0 }}{{- $compiled := index . 1 }}
{{- $suffix := trimPrefix "sslops" $compiled }}
{{- $prefix := default (include "sslops.fullname" $root) $root.Values.pipelines.namePrefix }}
{{- printf "%s%s" ($prefix | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- /* platform.gpu_pool's default (sslops.k8s.settings.GpuPoolConfig), which the compiled
     pipelines' tasks and config_json carry: the chart's gpuPool default is the same (a test
     holds the three together). */}}
{{- define "sslops.compiledGpuPool" -}}
nodeSelector:
  sslops.io/node-pool: gpu
tolerations:
  - key: nvidia.com/gpu
    operator: Exists
    effect: NoSchedule
{{- end }}

{{- /* The GPU pool in effect: gpuPool's settings, each empty one the compiled default. */}}
{{- define "sslops.gpuPool" -}}
{{- $compiled := include "sslops.compiledGpuPool" . | fromYaml }}
nodeSelector:
  {{- toYaml (default $compiled.nodeSelector .Values.gpuPool.nodeSelector) | nindent 2 }}
tolerations:
  {{- toYaml (default $compiled.tolerations .Values.gpuPool.tolerations) | nindent 2 }}
{{- end }}
