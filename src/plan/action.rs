//! The planner's outputs: KMS writes ([`Action`]) and reasons a key cannot converge ([`Blocker`]).

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::api::KeySpec;
use crate::policy;

/// One KMS write. `observe`/`execute` in `kms` turn these into SDK calls.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// GetParametersForImport + ImportKeyMaterial of the Secret's material.
    ImportMaterial {
        valid_to: Option<Timestamp>,
    },
    CancelKeyDeletion,
    EnableKey,
    DisableKey,
    UpdateDescription(String),
    TagResource(BTreeMap<String, String>),
    UntagResource(Vec<String>),
    CreateAlias(String),
    DeleteAlias(String),
    PutKeyPolicy {
        policy: String,
        bypass_lockout_check: bool,
    },
    /// Import of the Secret's (new) material with ImportType NEW_KEY_MATERIAL: the first step
    /// of a rotation on the primary.
    ImportNewMaterial {
        valid_to: Option<Timestamp>,
    },
    /// Import of the primary's pending rotation material into a replica (ImportType
    /// EXISTING_KEY_MATERIAL with the primary's KeyMaterialId).
    ImportRotationMaterial {
        valid_to: Option<Timestamp>,
        key_material_id: Option<String>,
    },
    /// RotateKeyOnDemand: the pending material becomes current (on the primary and, through
    /// AWS, on its replicas).
    RotateOnDemand,
    /// DeleteImportedKeyMaterial of one NON_CURRENT material (`keyMaterial.retire`).
    DeleteMaterial {
        key_material_id: String,
    },
    /// Import of the material of the `retained`-th `keyMaterial.retained` Secret (ImportType
    /// EXISTING_KEY_MATERIAL with its KeyMaterialId): renews its expiry, or brings it back
    /// where KMS lacks it.
    ImportRetainedMaterial {
        retained: usize,
        key_material_id: String,
        valid_to: Option<Timestamp>,
    },
}

impl Action {
    /// Whether the action changes which materials the key holds (an import, a rotation, a
    /// retirement): the inventory is read again after it.
    pub fn changes_materials(&self) -> bool {
        matches!(
            self,
            Action::ImportMaterial { .. }
                | Action::ImportNewMaterial { .. }
                | Action::ImportRotationMaterial { .. }
                | Action::RotateOnDemand
                | Action::DeleteMaterial { .. }
                | Action::ImportRetainedMaterial { .. }
        )
    }

    /// Stable CamelCase name, used for events and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Action::ImportMaterial { .. } => "ImportMaterial",
            Action::CancelKeyDeletion => "CancelKeyDeletion",
            Action::EnableKey => "EnableKey",
            Action::DisableKey => "DisableKey",
            Action::UpdateDescription(_) => "UpdateDescription",
            Action::TagResource(_) => "TagResource",
            Action::UntagResource(_) => "UntagResource",
            Action::CreateAlias(_) => "CreateAlias",
            Action::DeleteAlias(_) => "DeleteAlias",
            Action::PutKeyPolicy { .. } => "PutKeyPolicy",
            Action::ImportNewMaterial { .. } => "ImportNewMaterial",
            Action::ImportRotationMaterial { .. } => "ImportRotationMaterial",
            Action::RotateOnDemand => "RotateKeyOnDemand",
            Action::DeleteMaterial { .. } => "DeleteImportedKeyMaterial",
            Action::ImportRetainedMaterial { .. } => "ImportRetainedMaterial",
        }
    }
}
/// Why a key cannot be brought to the desired state by keyfleet on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// Scheduled for deletion outside keyfleet; reported, not fought.
    KeyPendingDeletion,
    /// The Secret holds other material than the key was imported with.
    MaterialMismatch,
    /// The key in KMS cannot be this AwsKey's key (origin, spec, usage, multi-region).
    KeyIncompatible(String),
    /// The alias already points at another key.
    AliasInUse(String),
    /// The key is in a state keyfleet must wait out (Creating, Updating) or cannot fix
    /// (Unavailable).
    Waiting(String),
    /// The rendered policy would stop keyfleet from managing the key; the string says why.
    PolicyLockout(String),
    /// The rendered policy is larger than KMS accepts (bytes).
    PolicyTooLarge(usize),
    /// The Secret changed and `onChange: Rotate` asks for a rotation KMS cannot do.
    RotationUnsupported(KeySpec),
    /// New material is imported into the primary; the rotation waits until every replica
    /// holds it.
    RotationPending,
    /// KMS holds other material than the Secret (found by verification); the message says
    /// where and how it was found.
    MaterialVerificationFailed(String),
    /// `keyMaterial.retire` lists a material that is not NON_CURRENT (the current one, or one
    /// pending rotation); nothing is deleted.
    MaterialRetirementRefused {
        key_material_id: String,
        state: &'static str,
    },
    /// Retired materials are gone, and KMS keeps the key PendingImport without them.
    MaterialRetired(Vec<String>),
    /// NON_CURRENT materials are gone (expired, deleted, never imported into this replica) and
    /// no `retained` Secret holds them: KMS keeps the key PendingImport.
    NonCurrentMaterialMissing(Vec<String>),
    /// `keyMaterial.retire` lists materials, but KMS lists none with ids for this key, so
    /// nothing can be matched or retired.
    MaterialInventoryUnavailable,
    /// `onChange: Rotate` would leave the expiring previous material to expire: its Secret is
    /// not in `retained` and `expiringPreviousMaterial` is not Accept.
    PreviousMaterialNotRetained,
}

impl Blocker {
    /// The `Ready=False` reason for this blocker.
    pub fn reason(&self) -> &'static str {
        match self {
            Blocker::KeyPendingDeletion => "KeyPendingDeletion",
            Blocker::MaterialMismatch => "MaterialMismatch",
            Blocker::KeyIncompatible(_) => "KeyIncompatible",
            Blocker::AliasInUse(_) => "AliasInUse",
            Blocker::Waiting(_) => "KeyNotReady",
            Blocker::PolicyLockout(_) => "PolicyLockout",
            Blocker::PolicyTooLarge(_) => "PolicyTooLarge",
            Blocker::RotationUnsupported(_) => "RotationUnsupported",
            Blocker::RotationPending => "RotationPending",
            Blocker::MaterialVerificationFailed(_) => "MaterialVerificationFailed",
            Blocker::MaterialRetirementRefused { .. } => "MaterialRetirementRefused",
            Blocker::MaterialRetired(_) => "MaterialRetired",
            Blocker::NonCurrentMaterialMissing(_) => "NonCurrentMaterialMissing",
            Blocker::PreviousMaterialNotRetained => "PreviousMaterialNotRetained",
            Blocker::MaterialInventoryUnavailable => "MaterialInventoryUnavailable",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Blocker::KeyPendingDeletion => "the KMS key is scheduled for deletion outside keyfleet; cancel the deletion in AWS (or delete and re-apply this AwsKey) to restore it".into(),
            Blocker::MaterialMismatch => "the Secret now holds different key material than the material imported into the KMS key; restore the original material (KMS only accepts the same material again)".into(),
            Blocker::KeyIncompatible(why) => format!("the KMS key does not match this AwsKey: {why}"),
            Blocker::AliasInUse(alias) => format!("{alias} already points at a KMS key that this AwsKey does not own; choose another alias or delete the existing one"),
            Blocker::Waiting(state) => format!("the KMS key is {state}; waiting for it to settle"),
            Blocker::PolicyLockout(why) => format!("the key policy was not applied: {why}. Fix the policy, or set bypassPolicyLockoutSafetyCheck: true if handing management to another principal is intended"),
            Blocker::PolicyTooLarge(bytes) => format!("the rendered key policy is {bytes} bytes; KMS accepts at most {}", policy::MAX_POLICY_BYTES),
            Blocker::RotationUnsupported(spec) => format!("the Secret holds new material and keyMaterial.onChange is Rotate, but KMS cannot rotate the material of {spec} keys (only SYMMETRIC_DEFAULT keys rotate); restore the original material, or create a new AwsKey for the new material"),
            Blocker::RotationPending => "the Secret holds new key material and the key rotates to it (onChange: Rotate): the primary imports it, every replica imports it, then the primary rotates; old material keeps working meanwhile".into(),
            Blocker::MaterialVerificationFailed(why) => format!("KMS does not hold the Secret's key material: {why}"),
            Blocker::MaterialRetirementRefused { key_material_id, state } => format!("keyMaterial.retire lists {key_material_id}, which is {state}: only NON_CURRENT material is retired (the current material encrypts everything new; material pending rotation is about to). Nothing was deleted; remove it from retire"),
            Blocker::MaterialRetired(ids) => format!("KMS keeps the key PendingImport, unusable for encryption and decryption, because retired material {} is deleted (a key works only while it holds every material it was rotated through). To use the key again, remove the id from keyMaterial.retire and list a Secret holding that material in keyMaterial.retained", ids.join(", ")),
            Blocker::NonCurrentMaterialMissing(ids) => format!("KMS keeps the key PendingImport, unusable, because NON_CURRENT material {} is missing here (expired, deleted, or never imported into this replica) and no keyMaterial.retained Secret holds it; list a Secret holding it in keyMaterial.retained", ids.join(", ")),
            Blocker::MaterialInventoryUnavailable => "keyMaterial.retire lists key materials, but KMS lists no materials with ids for this key (ListKeyRotations refused or not implemented, or a key other than SYMMETRIC_DEFAULT), so nothing was retired; grant kms:ListKeyRotations, or remove retire".into(),
            Blocker::PreviousMaterialNotRetained => "the Secret holds new material and onChange is Rotate, but the key's material expires and the material it would rotate away from is not in keyMaterial.retained: once only NON_CURRENT, nobody would renew it, and at its ValidTo everything it encrypted would become undecryptable. Nothing was imported; list a Secret holding the current material in keyMaterial.retained, or set keyMaterial.expiringPreviousMaterial: Accept".into(),
        }
    }
}
