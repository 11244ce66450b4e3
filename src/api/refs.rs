//! References from one object to another: by name, and to a key inside a Secret.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object by name (same namespace, or cluster-scoped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key inside a Secret in the same namespace as the resource that references it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret. It is always read from the namespace of the referencing resource;
    /// Secrets in other namespaces cannot be referenced.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data` whose value is the key material.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}
