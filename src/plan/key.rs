//! The planner's two inputs: the desired key (from the spec) and the key as KMS reports it.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::api::{ExpiringMaterialPolicy, KeySpec, KeyUsage, MaterialChangePolicy};
use crate::policy::{DesiredPolicy, KeyIdentity};

/// KMS key states (KMS `KeyState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    Creating,
    Enabled,
    Disabled,
    PendingDeletion,
    PendingReplicaDeletion,
    PendingImport,
    Unavailable,
    Updating,
    Other(String),
}

impl KeyState {
    pub fn from_kms(name: &str) -> KeyState {
        match name {
            "Creating" => KeyState::Creating,
            "Enabled" => KeyState::Enabled,
            "Disabled" => KeyState::Disabled,
            "PendingDeletion" => KeyState::PendingDeletion,
            "PendingReplicaDeletion" => KeyState::PendingReplicaDeletion,
            "PendingImport" => KeyState::PendingImport,
            "Unavailable" => KeyState::Unavailable,
            "Updating" => KeyState::Updating,
            other => KeyState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            KeyState::Creating => "Creating",
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingReplicaDeletion => "PendingReplicaDeletion",
            KeyState::PendingImport => "PendingImport",
            KeyState::Unavailable => "Unavailable",
            KeyState::Updating => "Updating",
            KeyState::Other(s) => s,
        }
    }
}
/// A KMS key as observed, reduced to what planning needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedKey {
    /// Key id, ARN, account, Region and partition: what the key's ARN says.
    pub identity: KeyIdentity,
    pub state: KeyState,
    /// `EXTERNAL` for keys with imported material.
    pub origin: String,
    pub key_spec: Option<KeySpec>,
    pub key_usage: Option<KeyUsage>,
    pub multi_region: bool,
    pub description: String,
    /// When the imported material expires (None: does not expire, no material, or not reported).
    pub valid_to: Option<Timestamp>,
    /// KMS reports `KEY_MATERIAL_EXPIRES` for the key's material.
    pub material_expires: bool,
    pub tags: BTreeMap<String, String>,
    /// Aliases pointing at this key.
    pub aliases: BTreeSet<String>,
    /// The key policy, parsed (None when it was not read).
    pub policy: Option<serde_json::Value>,
    /// Replicas of a multi-region primary: (region, ARN).
    pub replicas: Vec<(String, String)>,
    /// KMS `CurrentKeyMaterialId` (symmetric keys; None when KMS does not report it).
    pub current_key_material_id: Option<String>,
    /// Every material KMS holds for the key (ListKeyRotations ALL_KEY_MATERIAL); None when it
    /// was not read in this round, or KMS does not list materials with ids (LocalStack, keys
    /// other than SYMMETRIC_DEFAULT).
    pub materials: Option<Vec<ObservedMaterial>>,
    /// `tags` and `aliases` were read (a drift read); otherwise they are empty and not planned.
    pub metadata_read: bool,
    /// `policy` was read; otherwise the policy is not planned.
    pub policy_read: bool,
}
/// KMS `KeyMaterialState` of one material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaterialState {
    Current,
    NonCurrent,
    /// Imported for a rotation that has not happened (PENDING_ROTATION, or
    /// PENDING_MULTI_REGION_IMPORT_AND_ROTATION while a replica lacks it).
    PendingRotation {
        every_region: bool,
    },
}

impl MaterialState {
    pub fn from_kms(name: &str) -> Option<MaterialState> {
        Some(match name {
            "CURRENT" => MaterialState::Current,
            "NON_CURRENT" => MaterialState::NonCurrent,
            "PENDING_ROTATION" => MaterialState::PendingRotation { every_region: true },
            "PENDING_MULTI_REGION_IMPORT_AND_ROTATION" => MaterialState::PendingRotation {
                every_region: false,
            },
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MaterialState::Current => "CURRENT",
            MaterialState::NonCurrent => "NON_CURRENT",
            MaterialState::PendingRotation { every_region: true } => "PENDING_ROTATION",
            MaterialState::PendingRotation {
                every_region: false,
            } => "PENDING_MULTI_REGION_IMPORT_AND_ROTATION",
        }
    }
}

/// One key material as ListKeyRotations reports it for the key of one Region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedMaterial {
    pub key_material_id: String,
    pub state: MaterialState,
    /// ImportState IMPORTED in this Region (false: PENDING_IMPORT).
    pub imported: bool,
    /// ExpirationModel KEY_MATERIAL_EXPIRES.
    pub expires: bool,
    pub valid_to: Option<Timestamp>,
    pub description: Option<String>,
    pub rotation_date: Option<Timestamp>,
}

/// The desired key, validated from an AwsKey spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredKey {
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub description: String,
    /// User tags plus keyfleet's ownership tags.
    pub tags: BTreeMap<String, String>,
    pub alias: Option<String>,
    /// Policy to keep in place; None keeps whatever the key has.
    pub policy: Option<DesiredPolicy>,
    pub bypass_policy_lockout_safety_check: bool,
    pub multi_region: bool,
    pub valid_to: Option<Timestamp>,
    /// Rolling validity: every import expires this long after it (exclusive with `valid_to`).
    pub rolling_validity: Option<SignedDuration>,
    /// What to do when the Secret holds other material (replicas never rotate on their own).
    pub on_change: MaterialChangePolicy,
    /// KeyMaterialIds of NON_CURRENT materials to delete (`keyMaterial.retire`; a replica
    /// takes its primary's).
    pub retire: Vec<String>,
    /// What a rotation does when the material it rotates away from expires unretained.
    pub expiring_previous_material: ExpiringMaterialPolicy,
    pub enabled: bool,
}
