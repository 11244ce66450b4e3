//! `AwsKeyPolicyTemplate` (cluster-scoped): a reusable key policy — a document with placeholders or a set of shortcuts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::key_policy::PolicyShortcuts;

keyfleet_kind! {
kube(
    kind = "AwsKeyPolicyTemplate",
    shortname = "akpt",
    doc = "A reusable AWS KMS key policy: a document with placeholders, or principal shortcuts.",
    status = "AwsKeyPolicyTemplateStatus",
),
columns_before(),
columns_between(
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keys"),
    printcolumn(name = "Description", type_ = "string", json_path = ".spec.description"),
),
columns_after(),
/// A key policy shared by many keys (CCKM policy templates). An `AwsKey` or `AwsReplicaKey`
/// names it in `spec.policy.templateRef`; keyfleet renders it for each key (its account, region
/// and ARN) and re-applies it to every such key when the template changes. Its status says
/// whether it renders and how many keys use it.
#[derive(Default)]
#[x_kube(validation = Rule::new(format!("[has(self.document), {}].filter(x, x).size() == 1", super::key_policy::HAS_SHORTCUTS)).message("a policy template takes exactly one of: document, or the shortcuts (keyAdmins, keyAdminsRoles, keyUsers, keyUsersRoles, externalAccounts)"))]
pub struct AwsKeyPolicyTemplateSpec {
    /// What the template is for (shown by `kubectl get`).
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// A key policy document (JSON) with placeholders, filled in for each key:
    /// `${AccountId}`, `${Region}`, `${KeyArn}`, `${KeyId}` and `${Partition}`. IAM policy
    /// variables such as `${aws:username}` are left as they are.
    #[schemars(length(min = 1, max = 32768))]
    pub document: Option<String>,
    /// Principal shortcuts, rendered for each key like `spec.policy` shortcuts of an AwsKey.
    #[serde(flatten)]
    pub shortcuts: PolicyShortcuts,
}

/// Whether the template renders, and how many keys use it.
pub struct AwsKeyPolicyTemplateStatus {
    /// The generation of the spec the conditions describe.
    pub observed_generation: Option<i64>,
    /// How many AwsKeys and AwsReplicaKeys name this template in `spec.policy.templateRef`,
    /// in every namespace keyfleet watches (all, unless the operator runs with
    /// `--watch-namespaces`). A count only: who may read a cluster-scoped template (tenants
    /// choosing one, say) need not read the keys of every namespace, so no key is named.
    #[serde(default)]
    pub keys: i64,
    /// `Ready` is True (reason `Rendered`) when the template renders into a key policy KMS
    /// accepts, checked for a sample key; otherwise False with reason `PolicyTemplateInvalid`
    /// and a message naming the problem (the keys using it report the same reason). `Stalled`
    /// carries the same reason, as kstatus reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
}
