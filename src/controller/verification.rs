//! Verification at the end of a sync (KMS reads): proves that KMS holds the Secret's material
//! and records the `MaterialVerified` condition.

use super::Failure;
use super::sync::{KeySync, Role, Synced};
use crate::api::KmsKeyStatus;
use crate::api::conditions::{self, condition, find_condition, set_condition};
use crate::kms::observe::ReadDepth;
use crate::kms::verify::{self, Verification};
use crate::plan::{Action, Blocker, KeyState};

/// Verifies after an import and on every deep (metadata) read; a mismatch becomes the blocker.
/// Between deep reads a previous mismatch stays in force.
pub async fn verify_material(
    key: &KeySync<'_>,
    depth: ReadDepth,
    imported: bool,
    status: &mut KmsKeyStatus,
    synced: &mut Synced,
) -> Result<(), Failure> {
    let Some(observed) = &synced.observed else {
        return Ok(());
    };
    let rotated = synced
        .executed
        .iter()
        .any(|a| matches!(a, Action::RotateOnDemand));
    let holds_material = matches!(observed.state, KeyState::Enabled | KeyState::Disabled);
    if synced.blocker.is_some() || !holds_material || rotated || !(depth.metadata || imported) {
        if synced.blocker.is_none()
            && let Some(previous) =
                find_condition(&status.conditions, conditions::MATERIAL_VERIFIED)
            && previous.status == "False"
        {
            synced.blocker = Some(Blocker::MaterialVerificationFailed(
                previous.message.clone(),
            ));
        }
        return Ok(());
    }
    let (expected_id, previous_id) = match key.role {
        Role::Primary => {
            if status.key_material_id.is_none() {
                // Adopted or recovered key: what it holds now is the reference from here on.
                status.key_material_id = observed.current_key_material_id.clone();
            }
            (
                status.key_material_id.as_deref(),
                status.previous_key_material_id.as_deref(),
            )
        }
        Role::Replica { primary, .. } => (
            primary.key_material_id.as_deref(),
            primary.previous_key_material_id.as_deref(),
        ),
    };
    let evidence = verify::gather(key.client, observed, key.desired.key_spec)
        .await
        .map_err(Failure::kms)?;
    let expected = verify::Expected {
        material: key.import.material,
        key_material_id: expected_id,
        previous_key_material_id: previous_id,
    };
    let verification = verify::judge(&expected, &evidence);
    let (state, reason, message) = match &verification {
        Verification::Verified(method) => (
            "True",
            method.verified_reason(),
            format!("{} matches the Secret's material", method.describe()),
        ),
        Verification::Mismatch { method, detail } => {
            let message = format!("{} in {}: {detail}", method.describe(), key.region);
            synced.blocker = Some(Blocker::MaterialVerificationFailed(message.clone()));
            ("False", "MaterialVerificationFailed", message)
        }
        Verification::Unverified { method, why } => (
            "Unknown",
            "Unverified",
            format!("{} could not verify the material: {why}", method.describe()),
        ),
    };
    let mut verified = condition(
        conditions::MATERIAL_VERIFIED,
        state == "True",
        reason,
        message,
        None,
    );
    verified.status = state.to_string();
    set_condition(&mut status.conditions, verified);
    synced.verification = Some(verification);
    Ok(())
}
