//! Material step of the plan: import, renew for expiry, or rotate to the Secret's material.

use jiff::{SignedDuration, Timestamp};

use super::{Action, Blocker, DesiredKey, KeyState, ObservedKey, Plan};
use crate::api::{KeyFamily, MaterialChangePolicy};

/// Facts about the material and history that planning needs besides spec and KMS state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaterialFacts<'a> {
    /// Fingerprint of the material in the Secret now.
    pub secret_fingerprint: &'a str,
    /// Fingerprint recorded when keyfleet last imported (None: unknown, e.g. adopted key).
    pub imported_fingerprint: Option<&'a str>,
    /// The time planning happens at (rolling validity is measured from it).
    pub now: Timestamp,
    /// Renew rolling-validity material when less than this remains (capped at a third of the
    /// rolling validity, see [`renew_threshold`]).
    pub renew_before: SignedDuration,
    /// Where a rotation to the Secret's material stands.
    pub rotation: RotationFacts<'a>,
}

impl MaterialFacts<'_> {
    /// The Secret holds other material than the key was imported with.
    pub fn mismatch(&self) -> bool {
        self.imported_fingerprint
            .is_some_and(|f| f != self.secret_fingerprint)
    }
}

/// Where a rotation to new material stands, as far as planning needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RotationFacts<'a> {
    /// No rotation in progress.
    #[default]
    None,
    /// Primary: material with this fingerprint is imported as new material and waits for
    /// RotateKeyOnDemand; `ready` when every replica holds it too.
    PrimaryPending { fingerprint: &'a str, ready: bool },
    /// Replica: the primary imported new material with this fingerprint and KeyMaterialId;
    /// `imported` when this replica holds it already.
    ReplicaPending {
        fingerprint: &'a str,
        key_material_id: Option<&'a str>,
        imported: bool,
    },
    /// Replica: the Secret holds new material its primary is about to rotate to (`onChange:
    /// Rotate`), but the primary has not imported it yet.
    ReplicaAwaitingPrimary,
}

/// How much validity may be left before rolling-validity material is imported again: the
/// operator's `renew_before`, but never more than a third of the rolling validity (so that a
/// short validity is renewed at two thirds of its life, not on every reconcile).
pub fn renew_threshold(
    rolling_validity: SignedDuration,
    renew_before: SignedDuration,
) -> SignedDuration {
    renew_before.min(rolling_validity / 3)
}

/// The ValidTo an import made at `now` sets: the fixed expiry, or now plus the rolling validity.
pub fn import_valid_to(desired: &DesiredKey, now: Timestamp) -> Option<Timestamp> {
    desired.valid_to.or_else(|| {
        desired
            .rolling_validity
            .and_then(|r| now.checked_add(r).ok())
    })
}

/// The material step: the Secret holds the imported material (import when the key has none or
/// its expiry calls for it), or other material (rotate when asked to and possible, else refuse).
pub(super) fn plan_material(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
    plan: &mut Plan,
) {
    let valid_to = import_valid_to(desired, material.now);
    if !material.mismatch() {
        let needs_import = match observed.state {
            KeyState::PendingImport => true,
            _ => expiry_needs_import(desired, observed, material),
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
            } else {
                plan.actions.push(Action::ImportNewMaterial { valid_to });
            }
        }
        _ => plan.block(Blocker::MaterialMismatch),
    }
}

/// Whether the material the key holds must be imported again for its expiry: a fixed expiry
/// that differs, or rolling-validity material close to (or past) its renewal threshold.
fn expiry_needs_import(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
) -> bool {
    match desired.rolling_validity {
        None => !same_second(observed.valid_to, desired.valid_to),
        Some(rolling) => match observed.valid_to {
            None => true,
            Some(t) => {
                t.duration_since(material.now) < renew_threshold(rolling, material.renew_before)
            }
        },
    }
}

fn same_second(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.as_second() == b.as_second(),
        _ => false,
    }
}
