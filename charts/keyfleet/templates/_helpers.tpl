{{/* The chart name (nameOverride wins), at most 63 characters. */}}
{{- define "keyfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of namespaced objects: fullnameOverride, else <release>-<name> (just <release>
when it already contains the name), at most 63 characters.
*/}}
{{- define "keyfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name prefix of cluster-scoped objects (ClusterRoles, ClusterRoleBindings): the full name
plus the release namespace, so releases of the same name in two namespaces (one operator per
team with watchNamespaces) do not fight over them.
*/}}
{{- define "keyfleet.clusterName" -}}
{{- printf "%s-%s" (include "keyfleet.fullname" .) .Release.Namespace | trunc 200 | trimSuffix "-" }}
{{- end }}

{{- define "keyfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "keyfleet.labels" -}}
helm.sh/chart: {{ include "keyfleet.chart" . }}
{{ include "keyfleet.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keyfleet
{{- end }}

{{/* Labels that select the operator pods. */}}
{{- define "keyfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The pods' topologySpreadConstraints as a YAML list: the values' list (a constraint without a
labelSelector gets the pods' selector labels), else the soft default (one pod per node when
possible), else nothing when defaultTopologySpread is false.
*/}}
{{- define "keyfleet.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "keyfleet.selectorLabels" . | fromYaml) }}
{{- $constraints := list }}
{{- if .Values.topologySpreadConstraints }}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" $selector }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- else if .Values.defaultTopologySpread }}
{{- $constraints = list (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" $selector) }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{- define "keyfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keyfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keyfleet.leaseName" -}}
{{- default (include "keyfleet.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "keyfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources keyfleet reads and writes: in a ClusterRole when it
watches every namespace, in one Role per namespace in watchNamespaces mode. Every rule says
why it is there; nothing here may use "*" or write Secrets.
*/}}
{{- define "keyfleet.namespacedRules" -}}
# AwsKeys and AwsReplicaKeys: the controllers watch them (list/watch; get reads a replica's
# primary and keeps single reads possible) and add/remove their finalizer with a JSON patch of
# the object (patch). They never create, replace or delete them.
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["awskeys", "awsreplicakeys"]
  verbs: ["get", "list", "watch", "patch"]
# Status: written with a merge patch of the /status subresource (never read there: the watch
# delivers it).
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["awskeys/status", "awsreplicakeys/status"]
  verbs: ["patch"]
# Finalizers: the OwnerReferencesPermissionEnforcement admission plugin (e.g. on OpenShift)
# checks "update" on this subresource when finalizers change.
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["awskeys/finalizers", "awsreplicakeys/finalizers"]
  verbs: ["update"]
# Secrets: a metadata-only watch (list/watch) maps a changed Secret to the AwsKeys that use
# it; each reconcile reads the one Secret its AwsKey names, in the AwsKey's namespace (get).
# keyfleet never changes or deletes a Secret (it creates one only with rbac.secretCreation).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- if and .Values.rbac.secretCreation.enabled (not .Values.rbac.secretCreation.namespaces) }}
{{ include "keyfleet.secretCreationRule" . }}
{{- end }}
# Events about AwsKeys (events.k8s.io/v1, in the AwsKey's namespace): created once, then
# patched when the same event repeats (the recorder folds repeats into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* rbac.secretCreation: the Secrets of keyMaterial.generate. */}}
{{- define "keyfleet.secretCreationRule" -}}
# Secrets of keyMaterial.generate (rbac.secretCreation): created when missing, with generated
# material, immutable and without owner reference. create only: an existing Secret is never
# replaced (create cannot be limited by resourceNames).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped rules, needed in every mode. */}}
{{- define "keyfleet.clusterRules" -}}
# AwsKms (cluster-scoped connections) and AwsKeyPolicyTemplates: read by name during a
# reconcile (get) and watched so an edited connection or template re-reconciles the keys that
# use it (list/watch). Read-only.
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["awskmses", "awskeypolicytemplates"]
  verbs: ["get", "list", "watch"]
# AwsKms status: whether keyfleet can act through the connection (Ready, the caller, the
# account); AwsKeyPolicyTemplate status: whether the template renders and how many keys use
# it. Both written with a merge patch of the /status subresource.
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["awskmses/status", "awskeypolicytemplates/status"]
  verbs: ["patch"]
# Pkcs11Tokens (cluster-scoped HSM tokens): read by name when a key uses one, and watched by
# the token controller, which logs in to each. Read-only.
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["pkcs11tokens"]
  verbs: ["get", "list", "watch"]
# Pkcs11Token status: Ready after a successful login, else the reason (patch only).
- apiGroups: ["kms.keyfleet.dev"]
  resources: ["pkcs11tokens/status"]
  verbs: ["patch"]
# Namespaces, metadata only: their labels grant AwsKms connections and Pkcs11Tokens
# (allowedNamespaces) and their keyfleet.dev/default-deletion-policy annotation sets the
# deletion default; watched so a label change is picked up at once. Also gives the default
# cluster id (the uid of kube-system). Read-only.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
