//! Status shared by every kind that manages one KMS key (AwsKey, AwsReplicaKey).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// What KMS reports about a managed key, what keyfleet imported, and the Ready condition.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsKeyStatus {
    /// KMS key id.
    pub key_id: Option<String>,
    /// KMS key ARN: what consumers use.
    pub arn: Option<String>,
    /// KMS key state: Enabled, Disabled, PendingImport, PendingDeletion, ...
    pub key_state: Option<String>,
    /// Region of the key.
    pub region: Option<String>,
    /// AWS account that holds the key.
    pub account_id: Option<String>,
    /// Key spec reported by KMS.
    pub key_spec: Option<String>,
    /// Key usage reported by KMS.
    pub key_usage: Option<String>,
    /// When the imported material expires; unset when it does not.
    pub material_valid_to: Option<Time>,
    /// When keyfleet last imported material into the key.
    pub last_import_time: Option<Time>,
    /// Non-secret fingerprint of the imported material (public-key digest for RSA/ECC, a keyed
    /// digest for symmetric/HMAC). A Secret whose material has another fingerprint is refused
    /// with `MaterialMismatch`.
    pub material_fingerprint: Option<String>,
    /// `sha256:<hex>` of the key policy keyfleet rendered and keeps in place, over its RFC 8785
    /// (JCS) canonical JSON; compare with `keyfleet render-policy`. Unset: the policy is not
    /// managed (AWS default).
    pub policy_hash: Option<String>,
    /// KMS KeyMaterialId of the current material (symmetric keys), as recorded at import and
    /// rotation; verification compares it with what KMS reports for the key and its replicas.
    pub key_material_id: Option<String>,
    /// Fingerprint of new material imported for a rotation that has not completed yet (a
    /// multi-region key rotates once every replica holds it).
    pub pending_material_fingerprint: Option<String>,
    /// KMS KeyMaterialId of that pending material.
    pub pending_key_material_id: Option<String>,
    /// KeyMaterialId of the material before the last rotation (still decrypts old ciphertexts).
    pub previous_key_material_id: Option<String>,
    /// How many times keyfleet rotated the key to new material.
    pub rotation_count: Option<i64>,
    /// When keyfleet last rotated the key to new material.
    pub last_rotation_time: Option<Time>,
    /// Every key material KMS holds for this key (in this Region), read with ListKeyRotations
    /// (`IncludeKeyMaterial=ALL_KEY_MATERIAL`) on deep reads and after every import, rotation
    /// and retirement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub materials: Vec<super::KeyMaterialEntry>,
    /// How many materials `materials` lists (the `Materials` column of `kubectl get -o wide`).
    pub material_count: Option<i64>,
    /// The AwsKms this key is managed through, recorded when the key was located or created;
    /// cleanup uses exactly this connection.
    pub connection: Option<String>,
    /// The key was adopted (`adoptKeyArn` of a key keyfleet did not create): an unset
    /// `deletionPolicy` then means Retain.
    pub adopted: Option<bool>,
    /// The deletion policy that applies when the object is deleted: the spec's, else (for an
    /// adopted key) Retain, else the namespace annotation
    /// `keyfleet.dev/default-deletion-policy`, else the operator's `--default-deletion-policy`.
    pub deletion_policy: Option<crate::api::DeletionPolicy>,
    /// The generation of the spec last reconciled.
    pub observed_generation: Option<i64>,
    /// `Ready` is True only when the key is Enabled (or Disabled on purpose) with the material
    /// imported and the whole spec applied; otherwise its reason says what is wrong. `Stalled`
    /// (True: a change to the spec, the Secret or AWS is needed) and `Reconciling` (True: keyfleet
    /// waits for something that clears on its own) carry the same reason, as kstatus reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

// The status of each key kind holds a `KmsKeyStatus` under `key` (flattened) next to its own
// fields, and reads as one.
deref_to_flattened!(
    KmsKeyStatus,
    key: super::aws_key::AwsKeyStatus,
    super::aws_replica_key::AwsReplicaKeyStatus
);
