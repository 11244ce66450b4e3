//! Inventory step (one KMS read): every material KMS holds for a key, recorded in
//! `status.materials` — from ListKeyRotations where KMS lists materials with ids, else from
//! keyfleet's own record of what it imported (`confirmed: false`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Failure;
use crate::api::{KeyFamily, KeyMaterialEntry, KmsKeyStatus};
use crate::desired::described_fingerprint;
use crate::kms::execute::ImportInput;
use crate::kms::{Client, observe};
use crate::plan::{KeyState, MaterialState, ObservedKey, ObservedMaterial, RetainedFacts};

/// What one inventory read found.
#[derive(Clone, Debug, PartialEq)]
pub enum Listing {
    /// KMS listed the materials with their ids.
    Listed(Vec<ObservedMaterial>),
    /// KMS lists none with ids (LocalStack), the key is not SYMMETRIC_DEFAULT (KMS lists no
    /// materials for it), or the read was refused (no `kms:ListKeyRotations`).
    Unlisted,
}

/// Reads the materials of a symmetric key; a refusal is [`Listing::Unlisted`] (status shows
/// keyfleet's own record), throttling and 5xx are retried.
pub async fn read(client: &Client, key_id: &str, family: KeyFamily) -> Result<Listing, Failure> {
    if family != KeyFamily::Symmetric {
        return Ok(Listing::Unlisted);
    }
    match observe::materials(client, key_id).await {
        Ok(Some(materials)) => Ok(Listing::Listed(materials)),
        Ok(None) => Ok(Listing::Unlisted),
        Err(e) if e.is_transient() => Err(Failure::kms(e)),
        Err(_) => Ok(Listing::Unlisted),
    }
}

/// Whether this round reads the inventory: on deep reads, after an import, rotation or
/// retirement, and always for a key holding more than one material (DescribeKey's ValidTo is
/// then the earliest of them, not the current material's).
pub fn due(deep_read: bool, changed: bool, status: &KmsKeyStatus) -> bool {
    deep_read || changed || status.materials.len() > 1
}

/// The retained Secrets' materials as planning sees them: each with the KeyMaterialId of the
/// key's material of the same fingerprint, looked up in this key's inventory and (for a
/// replica, which may never have held it) in its primary's.
pub fn retained_facts(
    retained: &[ImportInput<'_>],
    status: &KmsKeyStatus,
    primary: Option<&KmsKeyStatus>,
) -> Vec<RetainedFacts> {
    retained
        .iter()
        .map(|input| {
            let fingerprint = input.material.fingerprint().as_str().to_string();
            let key_material_id = std::iter::once(status)
                .chain(primary)
                .flat_map(|s| &s.materials)
                .find(|e| e.fingerprint.as_ref() == Some(&fingerprint))
                .and_then(|e| e.key_material_id.clone());
            RetainedFacts {
                fingerprint,
                key_material_id,
            }
        })
        .collect()
}

/// Records `listing` in `status.materials` (and `materialCount`).
pub fn record(
    status: &mut KmsKeyStatus,
    observed: &ObservedKey,
    family: KeyFamily,
    listing: &Listing,
    retire: &[String],
) {
    let materials = match listing {
        Listing::Listed(materials) => materials
            .iter()
            .map(|m| confirmed_entry(status, m, retire))
            .collect(),
        Listing::Unlisted if family == KeyFamily::Symmetric => own_record(status, observed),
        Listing::Unlisted => single_material(status, observed),
    };
    status.material_count = Some(i64::try_from(materials.len()).unwrap_or(i64::MAX));
    status.materials = materials;
}

/// An entry KMS reported, with the fingerprint keyfleet knows for it: from its description,
/// an earlier entry, or keyfleet's record of the current and pending material.
fn confirmed_entry(
    status: &KmsKeyStatus,
    m: &ObservedMaterial,
    retire: &[String],
) -> KeyMaterialEntry {
    let id = m.key_material_id.as_str();
    let fingerprint = m
        .description
        .as_deref()
        .and_then(described_fingerprint)
        .map(str::to_string)
        .or_else(|| {
            status
                .materials
                .iter()
                .find(|e| e.key_material_id.as_deref() == Some(id))
                .and_then(|e| e.fingerprint.clone())
        })
        .or_else(|| {
            if status.key_material_id.as_deref() == Some(id) {
                status.material_fingerprint.clone()
            } else if status.pending_key_material_id.as_deref() == Some(id) {
                status.pending_material_fingerprint.clone()
            } else {
                None
            }
        });
    KeyMaterialEntry {
        key_material_id: Some(id.to_string()),
        state: Some(m.state.as_str().to_string()),
        import_state: Some(import_state(m.imported).to_string()),
        expiration_model: Some(expiration_model(m.expires).to_string()),
        valid_to: m.valid_to.map(Time),
        description: m.description.clone(),
        rotation_date: m.rotation_date.map(Time),
        fingerprint,
        confirmed: true,
        retired: !m.imported && retire.iter().any(|r| r == id),
    }
}

/// keyfleet's record of a symmetric key whose materials KMS does not list: the current
/// material, the one before the last rotation and one pending rotation.
fn own_record(status: &KmsKeyStatus, observed: &ObservedKey) -> Vec<KeyMaterialEntry> {
    let Some(fingerprint) = status.material_fingerprint.clone() else {
        return vec![];
    };
    let mut out = vec![];
    if let Some(previous) = &status.previous_key_material_id {
        let known = status
            .materials
            .iter()
            .find(|e| e.key_material_id.as_ref() == Some(previous));
        out.push(KeyMaterialEntry {
            key_material_id: Some(previous.clone()),
            state: Some(MaterialState::NonCurrent.as_str().to_string()),
            fingerprint: known.and_then(|e| e.fingerprint.clone()),
            ..KeyMaterialEntry::default()
        });
    }
    let mut current = single_material(status, observed);
    if let Some(entry) = current.first_mut() {
        entry.key_material_id.clone_from(&status.key_material_id);
        entry.fingerprint = Some(fingerprint);
        entry.confirmed = false;
    }
    out.extend(current);
    if let Some(pending) = &status.pending_material_fingerprint {
        out.push(KeyMaterialEntry {
            key_material_id: status.pending_key_material_id.clone(),
            state: Some(
                MaterialState::PendingRotation { every_region: true }
                    .as_str()
                    .into(),
            ),
            fingerprint: Some(pending.clone()),
            ..KeyMaterialEntry::default()
        });
    }
    out
}

/// The one material of a key KMS gives no id (RSA, ECC, HMAC), from DescribeKey.
fn single_material(status: &KmsKeyStatus, observed: &ObservedKey) -> Vec<KeyMaterialEntry> {
    if status.material_fingerprint.is_none() && observed.state == KeyState::PendingImport {
        return vec![];
    }
    vec![KeyMaterialEntry {
        key_material_id: None,
        state: Some(MaterialState::Current.as_str().to_string()),
        import_state: Some(import_state(observed.state != KeyState::PendingImport).to_string()),
        expiration_model: Some(expiration_model(observed.material_expires).to_string()),
        valid_to: observed.valid_to.map(Time),
        description: None,
        rotation_date: None,
        fingerprint: status.material_fingerprint.clone(),
        confirmed: true,
        retired: false,
    }]
}

fn import_state(imported: bool) -> &'static str {
    if imported {
        "IMPORTED"
    } else {
        "PENDING_IMPORT"
    }
}

fn expiration_model(expires: bool) -> &'static str {
    if expires {
        "KEY_MATERIAL_EXPIRES"
    } else {
        "KEY_MATERIAL_DOES_NOT_EXPIRE"
    }
}
