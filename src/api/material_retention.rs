//! What keeps a rotated key's earlier materials alive: the Secrets that still hold them
//! (`keyMaterial.retained`) and what a rotation may do to an expiring previous material.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key_material::MaterialEncoding;
use super::refs::SecretKeySelector;

/// A Secret holding an earlier material of the key (one it was rotated away from).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetainedMaterial {
    /// The Secret key holding the material, in this resource's namespace.
    pub secret_ref: SecretKeySelector,
    /// How the Secret value is encoded: `Raw` bytes (default), or `Base64` / `Hex` text.
    #[serde(default)]
    pub encoding: MaterialEncoding,
}

// What a rotation (`onChange: Rotate`) of a key whose material expires does when the material
// it rotates away from is not in `retained`. A plain comment: the field carries the description.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExpiringMaterialPolicy {
    /// Refuse to rotate (`PreviousMaterialNotRetained`) until the previous material's Secret is
    /// listed in `retained`.
    #[default]
    Refuse,
    /// Rotate anyway: the previous material expires at its ValidTo, and what it encrypted
    /// becomes undecryptable (and the key PendingImport).
    Accept,
}
