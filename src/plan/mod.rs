//! Plan step (pure, no I/O): desired key + observed KMS state → the ordered KMS actions.
//!
//! `kms::observe` produces an [`ObservedKey`]; `desired` produces a [`DesiredKey`];
//! [`plan_key`] runs the named steps below in order and returns the writes that bring KMS to
//! the desired state, or the [`Blocker`] that says why it cannot. Everything here is
//! table-tested (`tests.rs`).

mod action;
mod facts;
mod key;
mod materials;
mod metadata;
mod ownership;
mod policy;
#[cfg(test)]
mod tests;

pub use action::{Action, Blocker};
pub use facts::{MaterialFacts, RetainedFacts, RotationFacts, import_valid_to, renew_threshold};
pub use key::{DesiredKey, KeyState, MaterialState, ObservedKey, ObservedMaterial};
pub use metadata::AliasTarget;
pub use ownership::{
    CLUSTER_TAG, OWNER_TAG, OWNER_UID_TAG, Owner, Ownership, is_keyfleet_tag, ownership,
};
pub use policy::rendered_policy;

use crate::api::{KeyFamily, MaterialChangePolicy};
use facts::expiry_needs_import;

/// What a reconcile must do next for one key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Writes to perform now, in order.
    pub actions: Vec<Action>,
    /// Set when the key cannot become Ready by these actions alone.
    pub blocker: Option<Blocker>,
    /// NON_CURRENT materials that expire within the renewal threshold and that keyfleet cannot
    /// renew (no `retained` Secret holds them); None when the inventory was not read.
    pub expiring: Option<Vec<ExpiringMaterial>>,
}

/// A material about to expire that keyfleet cannot renew (`MaterialWillExpire`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiringMaterial {
    pub key_material_id: String,
    pub valid_to: jiff::Timestamp,
}

impl Plan {
    pub fn converged(&self) -> bool {
        self.actions.is_empty() && self.blocker.is_none()
    }

    fn blocked(blocker: Blocker) -> Plan {
        Plan {
            actions: vec![],
            blocker: Some(blocker),
            expiring: None,
        }
    }

    /// Records `blocker` unless an earlier step already blocked the key.
    fn block(&mut self, blocker: Blocker) {
        self.blocker.get_or_insert(blocker);
    }
}

/// Decides the KMS writes for one key, step by step: compatibility, key state, material,
/// enabled state, description, tags and aliases, policy.
///
/// `restore` allows cancelling a pending deletion: it is set when the object was (re)applied
/// after the deletion was scheduled — the declared intent is that the key exists.
pub fn plan_key(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
    desired_alias_target: Option<&AliasTarget>,
    restore: bool,
) -> Plan {
    if let Some(why) = incompatibility(desired, observed) {
        return Plan::blocked(Blocker::KeyIncompatible(why));
    }
    if let Some(plan) = settle_key_state(observed, restore) {
        return plan;
    }
    let mut plan = Plan::default();
    plan_material(desired, observed, material, &mut plan);
    materials::plan_materials(desired, observed, material, &mut plan);
    plan_enabled_state(desired, observed, material.mismatch(), &mut plan);
    if observed.description != desired.description {
        plan.actions
            .push(Action::UpdateDescription(desired.description.clone()));
    }
    // Tags and aliases only when they were read (a drift read; a resync only describes).
    if observed.metadata_read {
        metadata::plan_metadata(desired, observed, desired_alias_target, &mut plan);
    }
    policy::plan_policy(desired, observed, &mut plan);
    if observed.state == KeyState::PendingImport {
        import_last(&mut plan);
    }
    plan
}

/// A key without material becomes usable by its import: its intended policy, alias and tags go
/// in first, and when any of them cannot, nothing is imported (the key stays PendingImport).
fn import_last(plan: &mut Plan) {
    let is_import = |a: &Action| {
        matches!(
            a,
            Action::ImportMaterial { .. }
                | Action::ImportNewMaterial { .. }
                | Action::ImportRotationMaterial { .. }
                | Action::ImportRetainedMaterial { .. }
        )
    };
    let is_state = |a: &Action| matches!(a, Action::EnableKey | Action::DisableKey);
    let (material, rest): (Vec<Action>, Vec<Action>) = std::mem::take(&mut plan.actions)
        .into_iter()
        .partition(|a| is_import(a) || is_state(a));
    let (imports, states): (Vec<Action>, Vec<Action>) = material.into_iter().partition(is_import);
    plan.actions = rest;
    let policy_or_alias_refused = matches!(
        plan.blocker,
        Some(Blocker::PolicyLockout(_) | Blocker::PolicyTooLarge(_) | Blocker::AliasInUse(_))
    );
    if !policy_or_alias_refused {
        plan.actions.extend(imports);
        plan.actions.extend(states);
    }
}

/// Key states that decide the plan on their own: a pending deletion (cancelled when the object
/// was re-applied, else reported) and states keyfleet must wait out.
fn settle_key_state(observed: &ObservedKey, restore: bool) -> Option<Plan> {
    match &observed.state {
        KeyState::PendingDeletion | KeyState::PendingReplicaDeletion if restore => {
            // Cancelling leaves the key Disabled; the next round enables it.
            Some(Plan {
                actions: vec![Action::CancelKeyDeletion],
                blocker: None,
                expiring: None,
            })
        }
        KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
            Some(Plan::blocked(Blocker::KeyPendingDeletion))
        }
        KeyState::Creating | KeyState::Updating | KeyState::Unavailable | KeyState::Other(_) => {
            Some(Plan::blocked(Blocker::Waiting(
                observed.state.as_str().to_string(),
            )))
        }
        KeyState::Enabled | KeyState::Disabled | KeyState::PendingImport => None,
    }
}

/// The material step: the Secret holds the imported material (import when the key has none or
/// its expiry calls for it), or other material (rotate when asked to and possible, else refuse).
fn plan_material(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
    plan: &mut Plan,
) {
    let valid_to = import_valid_to(desired, material.now);
    if !material.mismatch() {
        let needs_import = match observed.state {
            // A key that holds its current material but lacks another one stays PendingImport
            // whatever is imported again; the materials step says what is missing.
            KeyState::PendingImport => !materials::lacks_only_other_material(observed),
            _ => expiry_needs_import(desired, observed.valid_to, material) || material.unproven,
        };
        if needs_import {
            plan.actions.push(Action::ImportMaterial { valid_to });
        }
        return;
    }
    let holds_material = matches!(observed.state, KeyState::Enabled | KeyState::Disabled);
    match material.rotation {
        RotationFacts::PrimaryPending { fingerprint, ready }
            if fingerprint == material.secret_fingerprint && holds_material =>
        {
            if ready {
                plan.actions.push(Action::RotateOnDemand);
            } else {
                plan.block(Blocker::RotationPending);
            }
        }
        RotationFacts::ReplicaPending {
            fingerprint,
            key_material_id,
            imported,
        } if fingerprint == material.secret_fingerprint => {
            // The replica keeps serving its current material until the primary rotates.
            if !holds_material {
                plan.block(Blocker::MaterialMismatch);
            } else if !imported {
                plan.actions.push(Action::ImportRotationMaterial {
                    valid_to,
                    key_material_id: key_material_id.map(str::to_string),
                });
            }
        }
        RotationFacts::ReplicaAwaitingPrimary if holds_material => {
            plan.block(Blocker::RotationPending);
        }
        _ if desired.on_change == MaterialChangePolicy::Rotate => {
            if desired.key_spec.family() != KeyFamily::Symmetric {
                plan.block(Blocker::RotationUnsupported(desired.key_spec));
            } else if !holds_material {
                // New material needs the current one in place; KMS has none to rotate from.
                plan.block(Blocker::MaterialMismatch);
            } else if materials::rotation_loses_material(desired, observed, material) {
                plan.block(Blocker::PreviousMaterialNotRetained);
            } else {
                plan.actions.push(Action::ImportNewMaterial { valid_to });
            }
        }
        _ => plan.block(Blocker::MaterialMismatch),
    }
}

/// Enable or disable the key as the spec says. A key in PendingImport becomes Enabled by the
/// import (unless the import is refused for other material).
fn plan_enabled_state(
    desired: &DesiredKey,
    observed: &ObservedKey,
    mismatch: bool,
    plan: &mut Plan,
) {
    let will_be_enabled = match observed.state {
        KeyState::Enabled => true,
        KeyState::PendingImport => !mismatch,
        _ => false,
    };
    let has_material = observed.state != KeyState::PendingImport || !mismatch;
    if !has_material {
        return;
    }
    if desired.enabled && observed.state == KeyState::Disabled {
        plan.actions.push(Action::EnableKey);
    } else if !desired.enabled && will_be_enabled {
        plan.actions.push(Action::DisableKey);
    }
}

/// Why an observed key cannot serve as the desired key, if it cannot.
fn incompatibility(desired: &DesiredKey, observed: &ObservedKey) -> Option<String> {
    if observed.origin != "EXTERNAL" {
        return Some(format!(
            "its origin is {}, keyfleet manages keys with imported material (origin EXTERNAL)",
            observed.origin
        ));
    }
    if observed.key_spec != Some(desired.key_spec) {
        return Some(format!(
            "its key spec is {}, the AwsKey asks for {}",
            observed.key_spec.map(|s| s.as_str()).unwrap_or("unknown"),
            desired.key_spec
        ));
    }
    if observed.key_usage != Some(desired.key_usage) {
        return Some(format!(
            "its key usage is {}, the AwsKey asks for {}",
            observed.key_usage.map(|u| u.as_str()).unwrap_or("unknown"),
            desired.key_usage
        ));
    }
    if observed.multi_region != desired.multi_region {
        return Some(format!(
            "multiRegion is {} in KMS and {} in the AwsKey",
            observed.multi_region, desired.multi_region
        ));
    }
    None
}
