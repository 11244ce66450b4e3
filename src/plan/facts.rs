//! What planning knows about the material besides KMS state: fingerprints, rotation progress,
//! the time, and the expiry rules derived from them.

use jiff::{SignedDuration, Timestamp};

use super::DesiredKey;

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
    /// The materials of `keyMaterial.retained` Secrets, in their order (an action names one
    /// by its index).
    pub retained: &'a [RetainedFacts],
    /// KMS reports a current KeyMaterialId that keyfleet never recorded (an adopted key): the
    /// Secret's material is proven by importing it again, which KMS refuses for other material.
    pub unproven: bool,
    /// The inventory was read this round and KMS listed no materials with ids (LocalStack, no
    /// `kms:ListKeyRotations`, a key other than SYMMETRIC_DEFAULT).
    pub unlisted: bool,
}

/// One `keyMaterial.retained` Secret's material, as far as planning needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedFacts {
    pub fingerprint: String,
    /// The KeyMaterialId of the key's material with this fingerprint (None: no material of
    /// the key has it, as far as keyfleet knows).
    pub key_material_id: Option<String>,
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

/// Whether a material the key holds, valid to `valid_to`, must be imported again for its
/// expiry: a fixed expiry that differs, or rolling-validity material close to (or past) its
/// renewal threshold.
pub(super) fn expiry_needs_import(
    desired: &DesiredKey,
    valid_to: Option<Timestamp>,
    material: &MaterialFacts<'_>,
) -> bool {
    match desired.rolling_validity {
        None => !same_second(valid_to, desired.valid_to),
        Some(rolling) => match valid_to {
            None => true,
            Some(t) => {
                t.duration_since(material.now) < renew_threshold(rolling, material.renew_before)
            }
        },
    }
}

/// How long before its ValidTo a material keyfleet cannot renew is reported
/// (`MaterialWillExpire`): the renewal threshold of the key's own material.
pub(super) fn expiry_warning(desired: &DesiredKey, renew_before: SignedDuration) -> SignedDuration {
    match desired.rolling_validity {
        Some(rolling) => renew_threshold(rolling, renew_before),
        None => renew_before,
    }
}

fn same_second(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.as_second() == b.as_second(),
        _ => false,
    }
}
