//! What happens to the KMS key when its Kubernetes resource is deleted.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to the KMS key when the Kubernetes resource is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Schedule deletion of the KMS key with `pendingWindowDays`. Re-applying the resource
    /// within the window cancels the deletion and restores the key.
    #[default]
    Delete,
    /// Leave the KMS key untouched in AWS; only the Kubernetes resource goes away.
    Retain,
    /// Crypto-shred: delete the imported key material (DeleteImportedKeyMaterial) and keep the
    /// key, which goes to PendingImport and cannot be used. Re-applying the resource imports
    /// the material from the Secret again.
    DeleteMaterial,
}
