//! Settings of a `keyfleet validate` run.

use jiff::Timestamp;

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace of objects that do not set `metadata.namespace` (what `kubectl apply -n`
    /// would use). Default: `default`.
    pub default_namespace: String,
    /// Report references to an `AwsKms` or a Secret that is not in the input. Off by default:
    /// connections are often managed elsewhere and Secrets often come from an external store
    /// (External Secrets, Sealed Secrets, Vault), so their absence is normal.
    pub require_refs: bool,
    /// The time `spec.expiration.validTo` must lie after.
    pub now: Timestamp,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_namespace: "default".into(),
            require_refs: false,
            now: Timestamp::now(),
        }
    }
}
