{{/* The lorag services, in port order; each has a values block of the same name. */}}
{{- define "lorag.services" -}}
gateway embedding indexer retrieval generation training
{{- end -}}

{{- define "lorag.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorag.fullname" -}}
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

{{/* Name of one service's objects: <fullname>-<service>. Call with (dict "root" $ "name" "embedding"). */}}
{{- define "lorag.component" -}}
{{- printf "%s-%s" (include "lorag.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorag.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorag.labels" -}}
helm.sh/chart: {{ include "lorag.chart" . }}
app.kubernetes.io/name: {{ include "lorag.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lorag
{{- end -}}

{{/* Selector labels of one service. Call with (dict "root" $ "name" "embedding"). */}}
{{- define "lorag.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lorag.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "lorag.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lorag.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lorag.secretName" -}}
{{- default (printf "%s-secrets" (include "lorag.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* host:port of a service inside the cluster. Call with (dict "root" $ "name" "embedding"). */}}
{{- define "lorag.address" -}}
{{- $svc := index .root.Values .name -}}
{{- printf "%s:%v" (include "lorag.component" .) $svc.port -}}
{{- end -}}

{{/* The image of one service. Call with (dict "root" $ "name" "embedding"). */}}
{{- define "lorag.image" -}}
{{- $svc := index .root.Values .name -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) $svc.image.tag -}}
{{- $repo := $svc.image.repository -}}
{{- if .root.Values.image.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .root.Values.image.registry) $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
