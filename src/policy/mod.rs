//! Key policies: the three forms of `spec.policy` rendered into one document per key, and the lockout check.
//!
//! Pure code, no I/O. `desired` turns a spec's policy (a raw document, a template's document
//! or shortcuts) into a [`DesiredPolicy`]: a JSON document that may still hold placeholders
//! (`${AccountId}`, `${KeyArn}`, …). `plan` fills them in with the [`KeyIdentity`] KMS reports,
//! compares with the key's policy, and checks with [`lockout`] that the policy leaves keyfleet
//! able to manage the key before it asks for PutKeyPolicy.

pub mod document;
pub mod lockout;
pub mod principal;
pub mod shortcuts;

pub use document::{KeyIdentity, PolicyDocumentError, hash, parse_document};
pub use lockout::Caller;
pub use principal::PrincipalError;

use serde_json::Value;

/// Largest key policy KMS accepts, in bytes.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Tag on keys whose policy comes from an `AwsKeyPolicyTemplate`: its name.
pub const POLICY_TEMPLATE_TAG: &str = "keyfleet.dev/policy-template";

/// The policy a key must have, before its identity is known.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPolicy {
    /// The policy document; string values may hold placeholders.
    pub document: Value,
    /// The `AwsKeyPolicyTemplate` it comes from, if any.
    pub template: Option<String>,
    /// The principal that must keep managing the key (keyfleet's own); None skips keyfleet's
    /// lockout check (`bypassPolicyLockoutSafetyCheck`, or the caller could not be determined —
    /// KMS still runs its own check unless bypassed).
    pub keep_manageable_by: Option<Caller>,
}

impl DesiredPolicy {
    /// The document for one key, placeholders filled in.
    pub fn render(&self, key: &KeyIdentity) -> Value {
        document::fill_placeholders(&self.document, key)
    }
}
