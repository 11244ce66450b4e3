//! What the specs of the key kinds (AwsKey, AwsReplicaKey) both declare: region, alias,
//! description, policy, enabled state and deletion settings, one struct flattened into each.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::deletion::DeletionPolicy;
use super::key_policy::KeyPolicy;

/// The settings every key kind's spec holds under the same names, flattened into it (and read
/// through it: each spec dereferences to its settings).
#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySettings {
    /// AWS region of the key, e.g. `eu-west-1`; a replica's must differ from its primary's
    /// (CCKM `replica_region`). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    #[x_kube(validation = Rule::new(super::aws_kms::region_rule()).message(super::aws_kms::REGION_RULE_MESSAGE))]
    #[schemars(length(min = 1, max = 32))]
    pub region: String,

    /// Alias of the key in its region, `alias/<name>` (aliases are regional). Kept pointing at
    /// this key; an alias that already points at a key keyfleet does not own is refused
    /// (`AliasInUse`).
    #[schemars(
        length(min = 7, max = 256),
        regex(pattern = r"^alias/[a-zA-Z0-9/_-]+$")
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('alias/aws/')").message("alias/aws/ is reserved for AWS managed keys"))]
    pub alias: Option<String>,

    /// Description of the key. Drift in AWS is repaired.
    #[schemars(length(max = 8192))]
    pub description: Option<String>,

    /// Key policy (a replica's has the same shape as its primary's). Unset: the AWS default key
    /// policy (the account may use and manage the key through IAM).
    pub policy: Option<KeyPolicy>,

    /// Skip AWS's check that the policy still lets the caller manage the key. Only for policies
    /// that deliberately hand management to another principal.
    #[serde(default)]
    pub bypass_policy_lockout_safety_check: bool,

    /// Whether the key is enabled for cryptographic operations.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// What happens to the KMS key when this resource is deleted. Unset: Retain for an adopted
    /// key; else the namespace annotation `keyfleet.dev/default-deletion-policy`; else the
    /// operator's `--default-deletion-policy` (Delete unless the administrator chose otherwise).
    /// `status.deletionPolicy` shows the one in effect.
    pub deletion_policy: Option<DeletionPolicy>,

    /// Waiting period, in days, between scheduling deletion and AWS deleting the key (7-30).
    #[serde(default = "default_pending_window_days")]
    #[schemars(range(min = 7, max = 30))]
    pub pending_window_days: i32,
}

// Each key kind's spec holds its settings under `settings` (flattened) next to its own fields,
// and reads as one.
deref_to_flattened!(
    KeySettings,
    settings: super::aws_key::AwsKeySpec,
    super::aws_replica_key::AwsReplicaKeySpec
);

/// Default of `enabled`: a key is enabled unless the spec says otherwise.
fn default_true() -> bool {
    true
}

/// Default of `pendingWindowDays`: AWS's maximum waiting period, 30 days.
fn default_pending_window_days() -> i32 {
    30
}
