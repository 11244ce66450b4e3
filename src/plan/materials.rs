//! Materials step of the plan: what the key's other materials need, from the inventory
//! (`ObservedKey::materials`) — retiring the ones `keyMaterial.retire` lists, renewing (or
//! bringing back) the ones `keyMaterial.retained` Secrets hold, and reporting the ones that
//! will expire with nobody to renew them.

use super::facts::{expiry_needs_import, expiry_warning, import_valid_to};
use super::{
    Action, Blocker, DesiredKey, ExpiringMaterial, KeyState, MaterialFacts, MaterialState,
    ObservedKey, Plan,
};
use crate::api::ExpiringMaterialPolicy;

/// Plans deletions of retired materials and imports of retained ones, lists the materials
/// that will expire unrenewed, and says why a key stays PendingImport when a material it was
/// rotated through is gone. Without an inventory (not read this round, or KMS lists no ids)
/// nothing is planned.
pub(super) fn plan_materials(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
    plan: &mut Plan,
) {
    let Some(listed) = &observed.materials else {
        if material.unlisted && !desired.retire.is_empty() {
            plan.block(Blocker::MaterialInventoryUnavailable);
        }
        return;
    };
    let valid_to = import_valid_to(desired, material.now);
    let warn_within = expiry_warning(desired, material.renew_before);
    let (mut retired, mut missing, mut expiring) = (vec![], vec![], vec![]);
    for m in listed {
        let id = &m.key_material_id;
        let retiring = desired.retire.contains(id);
        match m.state {
            MaterialState::NonCurrent if retiring && m.imported => {
                plan.actions.push(Action::DeleteMaterial {
                    key_material_id: id.clone(),
                });
            }
            MaterialState::NonCurrent if retiring => retired.push(id.clone()),
            state if retiring => plan.block(Blocker::MaterialRetirementRefused {
                key_material_id: id.clone(),
                state: state.as_str(),
            }),
            MaterialState::NonCurrent => {
                let retained = material
                    .retained
                    .iter()
                    .position(|r| r.key_material_id.as_ref() == Some(id));
                match retained {
                    Some(index)
                        if !m.imported || expiry_needs_import(desired, m.valid_to, material) =>
                    {
                        plan.actions.push(Action::ImportRetainedMaterial {
                            retained: index,
                            key_material_id: id.clone(),
                            valid_to,
                        });
                    }
                    Some(_) => {}
                    None if !m.imported => missing.push(id.clone()),
                    None => {
                        if let Some(t) = m.valid_to.filter(|_| m.expires)
                            && t.duration_since(material.now) < warn_within
                        {
                            expiring.push(ExpiringMaterial {
                                key_material_id: id.clone(),
                                valid_to: t,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    plan.expiring = Some(expiring);
    if observed.state == KeyState::PendingImport {
        if !retired.is_empty() {
            plan.block(Blocker::MaterialRetired(retired));
        } else if !missing.is_empty() {
            plan.block(Blocker::NonCurrentMaterialMissing(missing));
        }
    }
}

/// Whether a PendingImport key holds its current material and lacks only NON_CURRENT ones (per
/// the inventory): importing the current material again cannot make it usable.
pub(super) fn lacks_only_other_material(observed: &ObservedKey) -> bool {
    let Some(listed) = &observed.materials else {
        return false;
    };
    let current_imported = listed
        .iter()
        .any(|m| m.state == MaterialState::Current && m.imported);
    let other_missing = listed
        .iter()
        .any(|m| m.state == MaterialState::NonCurrent && !m.imported);
    current_imported && other_missing
}

/// Whether rotating now would leave the material the key rotates away from to expire: the
/// key's material expires, that material is in no `retained` Secret, and the spec does not
/// accept the loss.
pub(super) fn rotation_loses_material(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
) -> bool {
    let expires = desired.valid_to.is_some()
        || desired.rolling_validity.is_some()
        || observed.material_expires;
    let retained = material
        .retained
        .iter()
        .any(|r| Some(r.fingerprint.as_str()) == material.imported_fingerprint);
    expires && !retained && desired.expiring_previous_material == ExpiringMaterialPolicy::Refuse
}
