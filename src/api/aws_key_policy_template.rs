//! `AwsKeyPolicyTemplate` (cluster-scoped): a reusable key policy — a document with placeholders or a set of shortcuts.
// kube's `printcolumn(...)` arguments repeat `type_ = ...`, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::key_policy::PolicyShortcuts;

/// A key policy shared by many keys (CCKM policy templates). An `AwsKey` or `AwsReplicaKey`
/// names it in `spec.policy.templateRef`; keyfleet renders it for each key (its account, region
/// and ARN) and re-applies it to every such key when the template changes.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kms.keyfleet.dev",
    version = "v1alpha1",
    kind = "AwsKeyPolicyTemplate",
    plural = "awskeypolicytemplates",
    singular = "awskeypolicytemplate",
    shortname = "akpt",
    category = "keyfleet",
    doc = "A reusable AWS KMS key policy: a document with placeholders, or principal shortcuts.",
    printcolumn(
        name = "Description",
        type_ = "string",
        json_path = ".spec.description"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("[has(self.document), {}].filter(x, x).size() == 1", super::key_policy::HAS_SHORTCUTS)).message("a policy template takes exactly one of: document, or the shortcuts (keyAdmins, keyAdminsRoles, keyUsers, keyUsersRoles, externalAccounts)"))]
pub struct AwsKeyPolicyTemplateSpec {
    /// What the template is for (shown by `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// A key policy document (JSON) with placeholders, filled in for each key:
    /// `${AccountId}`, `${Region}`, `${KeyArn}`, `${KeyId}` and `${Partition}`. IAM policy
    /// variables such as `${aws:username}` are left as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32768))]
    pub document: Option<String>,
    /// Principal shortcuts, rendered for each key like `spec.policy` shortcuts of an AwsKey.
    #[serde(flatten)]
    pub shortcuts: PolicyShortcuts,
}
