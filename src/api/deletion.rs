//! What happens to the KMS key when its Kubernetes resource is deleted, and which policy applies
//! when the spec sets none.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to the KMS key when the Kubernetes resource is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Schedule deletion of the KMS key with `pendingWindowDays`. Re-applying the resource
    /// within the window cancels the deletion and restores the key.
    Delete,
    /// Leave the KMS key untouched in AWS; only the Kubernetes resource goes away.
    Retain,
    /// Crypto-shred: delete the imported key material (DeleteImportedKeyMaterial) and keep the
    /// key, which goes to PendingImport and cannot be used. Re-applying the resource imports
    /// the material from the Secret again.
    DeleteMaterial,
}

impl std::str::FromStr for DeletionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Delete" => Ok(DeletionPolicy::Delete),
            "Retain" => Ok(DeletionPolicy::Retain),
            "DeleteMaterial" => Ok(DeletionPolicy::DeleteMaterial),
            other => Err(format!(
                "{other:?} is not a deletion policy (Delete, Retain, DeleteMaterial)"
            )),
        }
    }
}

/// Namespace annotation that sets the deletion policy of keys whose spec sets none.
pub const DEFAULT_DELETION_POLICY_ANNOTATION: &str = "keyfleet.dev/default-deletion-policy";

/// The deletion policy in effect: the spec's; for an adopted key Retain; else the namespace's
/// annotation (when it names a policy); else the operator's default.
pub fn effective_deletion_policy(
    spec: Option<DeletionPolicy>,
    adopted: bool,
    namespace_annotation: Option<&str>,
    operator_default: DeletionPolicy,
) -> DeletionPolicy {
    match (spec, adopted) {
        (Some(policy), _) => policy,
        (None, true) => DeletionPolicy::Retain,
        (None, false) => namespace_annotation
            .and_then(|a| a.parse().ok())
            .unwrap_or(operator_default),
    }
}
