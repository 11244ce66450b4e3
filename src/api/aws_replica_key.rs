//! `AwsReplicaKey` (namespaced): a replica of a multi-region AwsKey in another region, with the
//! primary's material imported into it whenever KMS reports it PendingImport.

use std::collections::BTreeMap;

use super::deletion::DeletionPolicy;
use super::key_policy::KeyPolicy;
use super::key_status::KmsKeyStatus;
use super::refs::LocalObjectRef;

keyfleet_key_kind! {
kube(
    kind = "AwsReplicaKey",
    shortname = "ark",
    namespaced,
    status = "AwsReplicaKeyStatus",
    doc = "A replica of a multi-region AwsKey in another region, kept holding the primary's material.",
),
first_column(printcolumn(name = "Primary", type_ = "string", json_path = ".spec.primaryKeyRef.name")),
columns_after(),
/// A replica of a multi-region `AwsKey` in another region (CCKM "replicate multi-region key").
/// AWS never copies imported material to a replica: keyfleet imports the primary's material
/// into it after ReplicateKey and again whenever it falls back to PendingImport (expired or
/// deleted material).
pub struct AwsReplicaKeySpec {
    /// The primary: an `AwsKey` in this namespace with `multiRegion: true`. Its Secret is the
    /// replica's material and its `kmsRef` the replica's connection. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("primaryKeyRef is immutable"))]
    pub primary_key_ref: LocalObjectRef,

    /// Region of the replica (CCKM `replica_region`); must differ from the primary's. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    #[x_kube(validation = Rule::new(super::aws_kms::region_rule()).message(super::aws_kms::REGION_RULE_MESSAGE))]
    #[schemars(length(min = 1, max = 32))]
    pub region: String,

    /// Alias of the replica in its region, `alias/<name>` (aliases are regional).
    #[schemars(
        length(min = 7, max = 256),
        regex(pattern = r"^alias/[a-zA-Z0-9/_-]+$")
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('alias/aws/')").message("alias/aws/ is reserved for AWS managed keys"))]
    pub alias: Option<String>,

    /// Description of the replica. Drift in AWS is repaired.
    #[schemars(length(max = 8192))]
    pub description: Option<String>,

    /// Tags of the replica (its own; AWS does not share tags between primary and replicas).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 40").message("at most 40 tags (AWS allows 50; keyfleet reserves some)"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('keyfleet.dev/'))").message("tag keys starting with aws: or keyfleet.dev/ are reserved"))]
    pub tags: BTreeMap<String, String>,

    /// Key policy of the replica, same shape as AwsKey's. Unset: the AWS default key policy.
    pub policy: Option<KeyPolicy>,

    /// Skip AWS's check that the policy still lets the caller manage the key.
    #[serde(default)]
    pub bypass_policy_lockout_safety_check: bool,

    /// Whether the replica is enabled for cryptographic operations.
    #[serde(default = "super::key_settings::default_true")]
    pub enabled: bool,

    /// What happens to the replica when this resource is deleted. Unset: Retain for an adopted
    /// key; else the namespace annotation `keyfleet.dev/default-deletion-policy`; else the
    /// operator's `--default-deletion-policy` (Delete unless the administrator chose otherwise).
    /// `status.deletionPolicy` shows the one in effect.
    pub deletion_policy: Option<DeletionPolicy>,

    /// Waiting period, in days, between scheduling deletion and AWS deleting the replica (7-30).
    #[serde(default = "super::key_settings::default_pending_window_days")]
    #[schemars(range(min = 7, max = 30))]
    pub pending_window_days: i32,
}

/// Observed state of an AwsReplicaKey, as seen in KMS.
pub struct AwsReplicaKeyStatus {
    /// What KMS reports about the replica, and the Ready condition.
    #[serde(flatten)]
    pub key: KmsKeyStatus,
    /// ARN of the primary key.
    pub primary_arn: Option<String>,
}
}
