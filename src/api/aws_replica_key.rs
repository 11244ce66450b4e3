//! `AwsReplicaKey` (namespaced): a replica of a multi-region AwsKey in another region, with the
//! primary's material imported into it whenever KMS reports it PendingImport.

use std::collections::BTreeMap;

use super::key_settings::KeySettings;
use super::key_status::KmsKeyStatus;
use super::refs::LocalObjectRef;

keyfleet_key_kind! {
kube(
    kind = "AwsReplicaKey",
    shortname = "ark",
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

    /// Region, alias, description, policy, enabled state and deletion settings of the
    /// replica: its own, not the primary's.
    #[serde(flatten)]
    pub settings: KeySettings,

    /// Tags of the replica (its own; AWS does not share tags between primary and replicas).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 40").message("at most 40 tags (AWS allows 50; keyfleet reserves some)"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('keyfleet.dev/'))").message("tag keys starting with aws: or keyfleet.dev/ are reserved"))]
    pub tags: BTreeMap<String, String>,
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
