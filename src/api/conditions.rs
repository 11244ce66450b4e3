//! Status conditions keyfleet writes (`Ready`, `Stalled`, `Reconciling`, `MaterialVerified`,
//! `MaterialWillExpire`)
//! and how they are updated.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `True` when the KMS key exists, is in the desired state, holds the material and has the
/// whole spec applied.
pub const READY: &str = "Ready";
/// kstatus: `True` (with the Ready reason) when the key cannot become Ready until someone
/// changes the spec, the Secret or something in AWS; GitOps tools then report a failure instead
/// of waiting for their timeout.
pub const STALLED: &str = "Stalled";
/// kstatus: `True` (with the Ready reason) while keyfleet waits for something that clears on
/// its own: a KMS key state, the primary of a replica, a rotation across replicas.
pub const RECONCILING: &str = "Reconciling";
/// Whether the material in KMS is proven to be the material in the Secret; the reason names
/// the method (`PublicKeyMatches`, `MacMatches`, `KeyMaterialIdMatches`), a mismatch
/// (`MaterialVerificationFailed`) or `Unverified` (no permission, not supported).
pub const MATERIAL_VERIFIED: &str = "MaterialVerified";
/// `True` (reason `MaterialWillExpire`) from the renewal threshold on while a NON_CURRENT
/// material of the key expires and no `keyMaterial.retained` Secret lets keyfleet renew it;
/// the message names each material id and its ValidTo. Absent otherwise.
pub const MATERIAL_WILL_EXPIRE: &str = "MaterialWillExpire";

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

/// Sets `Ready` and the kstatus conditions that go with it, all with the same reason: when not
/// Ready, `Stalled=True` for a failure that needs a change, `Reconciling=True` for one that
/// clears on its own (`transient`). The message goes on the conditions that are True.
pub fn set_readiness(
    conditions: &mut Vec<Condition>,
    ready: bool,
    transient: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let stalled = !ready && !transient;
    let reconciling = !ready && transient;
    for (type_, on) in [
        (READY, ready),
        (STALLED, stalled),
        (RECONCILING, reconciling),
    ] {
        let message = if on || type_ == READY { message } else { "" };
        set_condition(
            conditions,
            condition(type_, on, reason, message, generation),
        );
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
        let mut first = condition(READY, false, "Reconciling", "a", Some(1));
        first.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        set_condition(&mut conditions, first);
        set_condition(
            &mut conditions,
            condition(READY, false, "KeyGone", "b", Some(2)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "KeyGone");
        assert_eq!(
            conditions[0].last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
        set_condition(
            &mut conditions,
            condition(READY, true, "Ready", "c", Some(2)),
        );
        assert_ne!(
            conditions[0].last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
    }
}
