//! Desired state (pure, no I/O): an AwsKey or AwsReplicaKey spec, with the objects it refers
//! to, → the desired key and its import settings, or a precise refusal ([`SpecError`]). The
//! controller and `keyfleet validate` share this code.
//!
//! - `key`: an AwsKey's own settings (usage, alias, tags, expiry, rotation, adoption);
//! - `replica`: an AwsReplicaKey, from its primary and its own settings;
//! - `policy`: `spec.policy` in its three forms, templates included;
//! - `import`: how material is wrapped for ImportKeyMaterial.

mod import;
mod key;
mod policy;
mod replica;
#[cfg(test)]
mod tests;

pub use import::{
    ImportSettings, MAX_MATERIAL_DESCRIPTION, described_fingerprint, import_settings,
    material_description,
};
pub use key::{adopt_key_region, desired_key, key_usage, spec_errors};
pub use policy::{desired_policy, render_template_sample, sample_key, template_errors};
pub use replica::{desired_replica, replica_relation, replica_spec_errors};

/// A spec keyfleet refuses, with the `Ready=False` reason and an actionable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub reason: &'static str,
    /// The offending field, as a path under the object (`spec.keyUsage`).
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn refuse(
    reason: &'static str,
    field: &'static str,
    message: impl Into<String>,
) -> SpecError {
    SpecError {
        reason,
        field,
        message: message.into(),
    }
}
