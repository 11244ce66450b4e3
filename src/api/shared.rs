//! Spec and status pieces shared by several kinds: references, policy, deletion, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
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

/// What happens to the KMS key when the Kubernetes resource is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Schedule deletion of the KMS key with `pendingWindowDays`. Re-applying the resource
    /// within the window cancels the deletion and restores the key.
    #[default]
    Delete,
    /// Leave the KMS key untouched in AWS; only the Kubernetes resource goes away.
    Retain,
}

/// The key policy. Leave unset to keep the AWS default key policy.
///
/// Today the policy is a raw JSON document; shortcuts (key admins/users) and templates are
/// alternatives that will be mutually exclusive with `document`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicy {
    /// A complete key policy document (JSON), applied with PutKeyPolicy and kept in place:
    /// changes made in AWS are put back on the next resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32768))]
    pub document: Option<String>,
}

/// Expiration of the imported key material (CCKM `KeyExpiration` + `ValidTo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expiration {
    /// RFC 3339 time at which KMS deletes the imported material and the key becomes unusable
    /// (state PendingImport). Without it the material does not expire. Changing it re-imports
    /// the same material with the new expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<Time>,
}

/// Condition types and reasons written by keyfleet.
pub mod condition {
    /// `True` when the KMS key exists, is in the desired state, holds the material and has the
    /// whole spec applied.
    pub const READY: &str = "Ready";
}

/// Replaces (or adds) the condition of the same type, keeping `lastTransitionTime` when the
/// status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if existing.status == new.status {
            new.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = new;
    } else {
        conditions.push(new);
    }
}

/// Builds a condition stamped with the current time.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// Returns the condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = vec![];
        let mut first = condition(condition::READY, false, "Reconciling", "a", Some(1));
        first.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        set_condition(&mut conditions, first);
        set_condition(
            &mut conditions,
            condition(condition::READY, false, "KeyGone", "b", Some(2)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "KeyGone");
        assert_eq!(
            conditions[0].last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
        set_condition(
            &mut conditions,
            condition(condition::READY, true, "Ready", "c", Some(2)),
        );
        assert_ne!(
            conditions[0].last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
    }
}
