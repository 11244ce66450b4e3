//! Pure planning core (no I/O): desired key + observed KMS state → the ordered KMS actions.
//!
//! `observe` (in `kms`) produces an [`ObservedKey`]; `validate` produces a [`DesiredKey`];
//! [`plan_key`] compares them and either returns the actions that bring KMS to the desired
//! state, or says why it cannot. Everything here is table-tested.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::api::{KeyFamily, KeySpec, KeyUsage, MaterialChangePolicy, TAG_PREFIX};
use crate::policy::{self, DesiredPolicy, KeyIdentity};

/// Tag that carries the uid of the AwsKey that owns a KMS key.
pub const OWNER_UID_TAG: &str = "keyfleet.dev/owner-uid";
/// Tag that carries `<namespace>/<name>` of the AwsKey that owns a KMS key.
pub const OWNER_TAG: &str = "keyfleet.dev/owner";
/// Tag that carries the id of the cluster whose keyfleet owns a KMS key.
pub const CLUSTER_TAG: &str = "keyfleet.dev/cluster";

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

/// Who a KMS key says it belongs to (from its `keyfleet.dev/*` tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The ownership tags keyfleet puts on every key it manages.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (OWNER_UID_TAG.to_string(), self.uid.clone()),
            (
                OWNER_TAG.to_string(),
                format!("{}/{}", self.namespace, self.name),
            ),
            (CLUSTER_TAG.to_string(), self.cluster.clone()),
        ])
    }
}

/// How a key found in KMS relates to the AwsKey looking at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Tagged with this AwsKey's uid.
    Mine,
    /// Tagged by this cluster for an AwsKey of the same namespace and name that was deleted and
    /// applied again (a new uid): the same declared key.
    PreviousIncarnation,
    /// No keyfleet tags.
    Unowned,
    /// Owned by another AwsKey or another cluster; the string says which.
    Elsewhere(String),
}

/// Classifies a key's ownership from its tags.
pub fn ownership(tags: &BTreeMap<String, String>, me: &Owner) -> Ownership {
    let uid = tags.get(OWNER_UID_TAG);
    let owner = tags.get(OWNER_TAG);
    let cluster = tags.get(CLUSTER_TAG);
    if uid.is_none() && owner.is_none() && cluster.is_none() {
        return Ownership::Unowned;
    }
    let same_cluster = cluster.is_some_and(|c| *c == me.cluster);
    if same_cluster && uid.is_some_and(|u| *u == me.uid) {
        return Ownership::Mine;
    }
    let me_name = format!("{}/{}", me.namespace, me.name);
    if same_cluster && owner.is_some_and(|o| *o == me_name) {
        return Ownership::PreviousIncarnation;
    }
    Ownership::Elsewhere(format!(
        "AwsKey {} in cluster {}",
        owner.map(String::as_str).unwrap_or("<unknown>"),
        cluster.map(String::as_str).unwrap_or("<unknown>")
    ))
}

/// A KMS key as observed, reduced to what planning needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedKey {
    pub key_id: String,
    pub arn: String,
    pub account_id: String,
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
    /// `tags` and `aliases` were read (a drift read); otherwise they are empty and not planned.
    pub metadata_read: bool,
    /// `policy` was read; otherwise the policy is not planned.
    pub policy_read: bool,
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
    pub enabled: bool,
}

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
}

impl Action {
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
        }
    }
}

/// What a reconcile must do next for one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Writes to perform now, in order.
    pub actions: Vec<Action>,
    /// Set when the key cannot become Ready by these actions alone.
    pub blocker: Option<Blocker>,
}

impl Plan {
    pub fn converged(&self) -> bool {
        self.actions.is_empty() && self.blocker.is_none()
    }
}

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

/// The alias as KMS sees it, when the desired alias is not on this key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasTarget {
    /// The desired alias does not exist.
    Free,
    /// It points at another key.
    OtherKey(String),
}

/// Decides the KMS writes for one key.
///
/// `restore` allows cancelling a pending deletion: it is set when this AwsKey was (re)applied
/// after the deletion was scheduled — the declared intent is that the key exists.
pub fn plan_key(
    desired: &DesiredKey,
    observed: &ObservedKey,
    material: &MaterialFacts<'_>,
    desired_alias_target: Option<&AliasTarget>,
    restore: bool,
) -> Plan {
    let mut actions = Vec::new();

    if let Some(why) = incompatibility(desired, observed) {
        return Plan {
            actions,
            blocker: Some(Blocker::KeyIncompatible(why)),
        };
    }

    match &observed.state {
        KeyState::PendingDeletion | KeyState::PendingReplicaDeletion if restore => {
            // Cancelling leaves the key Disabled; the next round enables it.
            return Plan {
                actions: vec![Action::CancelKeyDeletion],
                blocker: None,
            };
        }
        KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
            return Plan {
                actions,
                blocker: Some(Blocker::KeyPendingDeletion),
            };
        }
        KeyState::Creating | KeyState::Updating | KeyState::Unavailable | KeyState::Other(_) => {
            return Plan {
                actions,
                blocker: Some(Blocker::Waiting(observed.state.as_str().to_string())),
            };
        }
        KeyState::Enabled | KeyState::Disabled | KeyState::PendingImport => {}
    }

    let mismatch = material
        .imported_fingerprint
        .is_some_and(|f| f != material.secret_fingerprint);
    let mut blocker = None;
    let valid_to = import_valid_to(desired, material.now);
    let holds_material = matches!(observed.state, KeyState::Enabled | KeyState::Disabled);

    if mismatch {
        // The Secret holds other material: rotate when asked to (and possible), else refuse.
        match material.rotation {
            RotationFacts::PrimaryPending { fingerprint, ready }
                if fingerprint == material.secret_fingerprint && holds_material =>
            {
                if ready {
                    actions.push(Action::RotateOnDemand);
                } else {
                    blocker = Some(Blocker::RotationPending);
                }
            }
            RotationFacts::ReplicaPending {
                fingerprint,
                key_material_id,
                imported,
            } if fingerprint == material.secret_fingerprint => {
                // The replica keeps serving its current material until the primary rotates.
                if !holds_material {
                    blocker = Some(Blocker::MaterialMismatch);
                } else if !imported {
                    actions.push(Action::ImportRotationMaterial {
                        valid_to,
                        key_material_id: key_material_id.map(str::to_string),
                    });
                }
            }
            RotationFacts::ReplicaAwaitingPrimary if holds_material => {
                blocker = Some(Blocker::RotationPending);
            }
            _ if desired.on_change == MaterialChangePolicy::Rotate => {
                if desired.key_spec.family() != KeyFamily::Symmetric {
                    blocker = Some(Blocker::RotationUnsupported(desired.key_spec));
                } else if !holds_material {
                    // New material needs the current one in place; KMS has none to rotate from.
                    blocker = Some(Blocker::MaterialMismatch);
                } else {
                    actions.push(Action::ImportNewMaterial { valid_to });
                }
            }
            _ => blocker = Some(Blocker::MaterialMismatch),
        }
    } else {
        // Material: import when the key has none, or when the expiry calls for it.
        let needs_import = match observed.state {
            KeyState::PendingImport => true,
            _ => expiry_needs_import(desired, observed, material),
        };
        if needs_import {
            actions.push(Action::ImportMaterial { valid_to });
        }
    }

    // Enabled state. A key in PendingImport becomes Enabled by the import.
    let will_be_enabled = match observed.state {
        KeyState::Enabled => true,
        KeyState::PendingImport => !mismatch,
        _ => false,
    };
    let has_material = observed.state != KeyState::PendingImport || !mismatch;
    if has_material {
        if desired.enabled && observed.state == KeyState::Disabled {
            actions.push(Action::EnableKey);
        } else if !desired.enabled && will_be_enabled {
            actions.push(Action::DisableKey);
        }
    }

    if observed.description != desired.description {
        actions.push(Action::UpdateDescription(desired.description.clone()));
    }

    // Tags and aliases only when they were read (a drift read; a resync only describes).
    if observed.metadata_read {
        plan_metadata(
            desired,
            observed,
            desired_alias_target,
            &mut actions,
            &mut blocker,
        );
    }

    if let Some(policy) = &desired.policy
        && observed.policy_read
        && let Some(rendered) = rendered_policy(policy, observed)
        && observed.policy.as_ref() != Some(&rendered)
    {
        let text = rendered.to_string();
        let lockout = policy
            .keep_manageable_by
            .as_ref()
            .filter(|_| !desired.bypass_policy_lockout_safety_check)
            .and_then(|caller| policy::lockout::check(&rendered, caller).err());
        if text.len() > policy::MAX_POLICY_BYTES {
            blocker.get_or_insert(Blocker::PolicyTooLarge(text.len()));
        } else if let Some(why) = lockout {
            blocker.get_or_insert(Blocker::PolicyLockout(why));
        } else {
            actions.push(Action::PutKeyPolicy {
                policy: text,
                bypass_lockout_check: desired.bypass_policy_lockout_safety_check,
            });
        }
    }

    Plan { actions, blocker }
}

/// Tags and aliases: the desired tags are set, the desired alias points here, no other does.
fn plan_metadata(
    desired: &DesiredKey,
    observed: &ObservedKey,
    desired_alias_target: Option<&AliasTarget>,
    actions: &mut Vec<Action>,
    blocker: &mut Option<Blocker>,
) {
    let (to_tag, to_untag) = tag_changes(&desired.tags, &observed.tags);
    if !to_tag.is_empty() {
        actions.push(Action::TagResource(to_tag));
    }
    if !to_untag.is_empty() {
        actions.push(Action::UntagResource(to_untag));
    }
    if let Some(alias) = &desired.alias
        && !observed.aliases.contains(alias)
    {
        match desired_alias_target {
            Some(AliasTarget::OtherKey(_)) => {
                blocker.get_or_insert(Blocker::AliasInUse(alias.clone()));
            }
            _ => actions.push(Action::CreateAlias(alias.clone())),
        }
    }
    for alias in &observed.aliases {
        if desired.alias.as_ref() != Some(alias) {
            actions.push(Action::DeleteAlias(alias.clone()));
        }
    }
}

/// The desired policy for this key (placeholders filled in from its ARN); None when the ARN
/// is not a KMS key ARN.
pub fn rendered_policy(
    policy: &DesiredPolicy,
    observed: &ObservedKey,
) -> Option<serde_json::Value> {
    KeyIdentity::from_arn(&observed.arn).map(|key| policy.render(&key))
}

fn same_second(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.as_second() == b.as_second(),
        _ => false,
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

/// Tags to set (new or changed values) and tag keys to remove. Tags AWS reserves (`aws:`) are
/// never touched.
fn tag_changes(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let to_tag = desired
        .iter()
        .filter(|(k, v)| observed.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let to_untag = observed
        .keys()
        .filter(|k| !desired.contains_key(*k) && !k.starts_with("aws:"))
        .cloned()
        .collect();
    (to_tag, to_untag)
}

/// True for tag keys keyfleet itself manages.
pub fn is_keyfleet_tag(key: &str) -> bool {
    key.starts_with(TAG_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            cluster: "c1".into(),
            namespace: "team".into(),
            name: "orders".into(),
            uid: "uid-1".into(),
        }
    }

    fn desired() -> DesiredKey {
        let mut tags = owner().tags();
        tags.insert("team".into(), "payments".into());
        DesiredKey {
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            description: "orders key".into(),
            tags,
            alias: Some("alias/orders".into()),
            policy: None,
            bypass_policy_lockout_safety_check: false,
            multi_region: false,
            valid_to: None,
            rolling_validity: None,
            on_change: MaterialChangePolicy::Refuse,
            enabled: true,
        }
    }

    fn converged_observed() -> ObservedKey {
        let d = desired();
        ObservedKey {
            key_id: "k1".into(),
            arn: "arn:aws:kms:eu-west-1:000000000000:key/k1".into(),
            account_id: "000000000000".into(),
            state: KeyState::Enabled,
            origin: "EXTERNAL".into(),
            key_spec: Some(d.key_spec),
            key_usage: Some(d.key_usage),
            multi_region: false,
            description: d.description.clone(),
            valid_to: None,
            material_expires: false,
            tags: d.tags.clone(),
            aliases: BTreeSet::from(["alias/orders".to_string()]),
            policy: None,
            replicas: vec![],
            current_key_material_id: None,
            metadata_read: true,
            policy_read: true,
        }
    }

    const FP: MaterialFacts<'static> = MaterialFacts {
        secret_fingerprint: "fp-a",
        imported_fingerprint: Some("fp-a"),
        now: Timestamp::UNIX_EPOCH,
        renew_before: SignedDuration::from_hours(30 * 24),
        rotation: RotationFacts::None,
    };

    fn plan(d: &DesiredKey, o: &ObservedKey) -> Plan {
        plan_key(d, o, &FP, None, false)
    }

    fn doc_policy(document: serde_json::Value) -> DesiredPolicy {
        DesiredPolicy {
            document,
            template: None,
            keep_manageable_by: None,
        }
    }

    fn keyfleet_role() -> crate::policy::Caller {
        crate::policy::Caller {
            arn: "arn:aws:sts::000000000000:assumed-role/keyfleet/keyfleet".into(),
            account_id: "000000000000".into(),
        }
    }

    #[test]
    fn policy_placeholders_are_filled_from_the_key_arn_before_comparing() {
        let mut d = desired();
        let mut o = converged_observed();
        d.policy = Some(doc_policy(serde_json::json!({"Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:${Partition}:iam::${AccountId}:root"},
            "Action": "kms:*", "Resource": "${KeyArn}"}]})));
        let expected = serde_json::json!({"Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
            "Action": "kms:*", "Resource": "arn:aws:kms:eu-west-1:000000000000:key/k1"}]});
        assert_eq!(
            plan(&d, &o).actions,
            vec![Action::PutKeyPolicy {
                policy: expected.to_string(),
                bypass_lockout_check: false
            }]
        );
        o.policy = Some(expected);
        assert!(plan(&d, &o).converged());
    }

    #[test]
    fn a_policy_that_locks_keyfleet_out_is_not_applied_unless_bypassed() {
        let mut d = desired();
        let o = converged_observed();
        let mut policy = doc_policy(serde_json::json!({"Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:role/someone-else"},
            "Action": "kms:*", "Resource": "*"}]}));
        policy.keep_manageable_by = Some(keyfleet_role());
        d.policy = Some(policy);
        d.description = "changed".into();
        let p = plan(&d, &o);
        assert_eq!(p.actions, vec![Action::UpdateDescription("changed".into())]);
        let Some(Blocker::PolicyLockout(why)) = &p.blocker else {
            panic!("expected PolicyLockout, got {:?}", p.blocker);
        };
        assert!(why.contains("kms:PutKeyPolicy"), "{why}");
        assert_eq!(p.blocker.as_ref().unwrap().reason(), "PolicyLockout");

        d.bypass_policy_lockout_safety_check = true;
        let p = plan(&d, &o);
        assert_eq!(p.blocker, None);
        assert!(matches!(
            p.actions.last(),
            Some(Action::PutKeyPolicy {
                bypass_lockout_check: true,
                ..
            })
        ));
    }

    #[test]
    fn a_rendered_policy_over_32_kb_is_refused() {
        let mut d = desired();
        let long_arns: Vec<String> = (0..600)
            .map(|i| {
                format!("arn:aws:iam::${{AccountId}}:role/application-role-with-a-long-name-{i:04}")
            })
            .collect();
        d.policy = Some(doc_policy(serde_json::json!({"Statement": [{
            "Effect": "Allow", "Principal": {"AWS": long_arns}, "Action": "kms:*", "Resource": "*"}]})));
        let p = plan(&d, &converged_observed());
        assert!(
            matches!(p.blocker, Some(Blocker::PolicyTooLarge(n)) if n > policy::MAX_POLICY_BYTES)
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn a_describe_only_read_plans_no_tag_alias_or_policy_change() {
        let mut d = desired();
        d.policy = Some(doc_policy(
            serde_json::json!({"Version": "2012-10-17", "Statement": []}),
        ));
        // What DescribeKey alone shows: no tags, aliases or policy.
        let mut o = converged_observed();
        o.tags.clear();
        o.aliases.clear();
        o.policy = None;
        o.metadata_read = false;
        o.policy_read = false;
        assert_eq!(plan(&d, &o).actions, vec![]);
        // The same key after a drift read gets everything repaired.
        o.metadata_read = true;
        o.policy_read = true;
        let names: Vec<&str> = plan(&d, &o).actions.iter().map(Action::name).collect();
        assert_eq!(names, ["TagResource", "CreateAlias", "PutKeyPolicy"]);
        // State drift is repaired on a describe-only read too.
        o.metadata_read = false;
        o.policy_read = false;
        o.state = KeyState::Disabled;
        assert_eq!(plan(&d, &o).actions, vec![Action::EnableKey]);
    }

    #[test]
    fn converged_key_needs_nothing() {
        let p = plan(&desired(), &converged_observed());
        assert!(p.converged(), "{p:?}");
    }

    #[test]
    fn table_of_single_differences() {
        let valid_to: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        type Case = (
            &'static str,
            fn(&mut DesiredKey, &mut ObservedKey),
            Vec<Action>,
        );
        let cases: Vec<Case> = vec![
            (
                "pending import imports",
                |_, o| o.state = KeyState::PendingImport,
                vec![Action::ImportMaterial { valid_to: None }],
            ),
            (
                "disabled in AWS is enabled",
                |_, o| o.state = KeyState::Disabled,
                vec![Action::EnableKey],
            ),
            (
                "disable on request",
                |d, _| d.enabled = false,
                vec![Action::DisableKey],
            ),
            (
                "pending import of a key meant to be disabled imports then disables",
                |d, o| {
                    d.enabled = false;
                    o.state = KeyState::PendingImport;
                },
                vec![
                    Action::ImportMaterial { valid_to: None },
                    Action::DisableKey,
                ],
            ),
            (
                "description drift",
                |_, o| o.description = "changed by hand".into(),
                vec![Action::UpdateDescription("orders key".into())],
            ),
            (
                "tag value drift",
                |_, o| {
                    o.tags.insert("team".into(), "other".into());
                },
                vec![Action::TagResource(BTreeMap::from([(
                    "team".into(),
                    "payments".into(),
                )]))],
            ),
            (
                "foreign tag removed, aws: tag kept",
                |_, o| {
                    o.tags.insert("added-by-hand".into(), "x".into());
                    o.tags.insert("aws:cloudformation:stack".into(), "x".into());
                },
                vec![Action::UntagResource(vec!["added-by-hand".into()])],
            ),
            (
                "alias missing",
                |_, o| o.aliases.clear(),
                vec![Action::CreateAlias("alias/orders".into())],
            ),
            (
                "alias renamed",
                |d, _| d.alias = Some("alias/orders-v2".into()),
                vec![
                    Action::CreateAlias("alias/orders-v2".into()),
                    Action::DeleteAlias("alias/orders".into()),
                ],
            ),
            (
                "expiry set re-imports the same material",
                |d, _| d.valid_to = Some("2030-01-01T00:00:00Z".parse().unwrap()),
                vec![Action::ImportMaterial {
                    valid_to: Some(valid_to),
                }],
            ),
            (
                "policy drift",
                |d, o| {
                    d.policy = Some(doc_policy(
                        serde_json::json!({"Version": "2012-10-17", "Statement": []}),
                    ));
                    o.policy = Some(
                        serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}),
                    );
                },
                vec![Action::PutKeyPolicy {
                    policy: r#"{"Version":"2012-10-17","Statement":[]}"#.into(),
                    bypass_lockout_check: false,
                }],
            ),
        ];
        for (name, mutate, expected) in cases {
            let mut d = desired();
            let mut o = converged_observed();
            mutate(&mut d, &mut o);
            let p = plan(&d, &o);
            assert_eq!(p.actions, expected, "case: {name}");
            assert_eq!(p.blocker, None, "case: {name}");
        }
    }

    #[test]
    fn policy_equal_in_meaning_is_not_rewritten() {
        let mut d = desired();
        let mut o = converged_observed();
        d.policy = serde_json::from_str(r#"{"Version":"2012-10-17","Statement":[]}"#)
            .ok()
            .map(doc_policy);
        o.policy =
            serde_json::from_str("{\n  \"Statement\": [],\n  \"Version\": \"2012-10-17\"\n}").ok();
        assert!(plan(&d, &o).converged());
    }

    #[test]
    fn material_mismatch_blocks_import_but_not_metadata() {
        let mut o = converged_observed();
        o.state = KeyState::PendingImport;
        o.description = "x".into();
        let facts = MaterialFacts {
            secret_fingerprint: "fp-b",
            imported_fingerprint: Some("fp-a"),
            ..FP
        };
        let p = plan_key(&desired(), &o, &facts, None, false);
        assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
        assert_eq!(
            p.actions,
            vec![Action::UpdateDescription("orders key".into())]
        );
    }

    #[test]
    fn unknown_imported_fingerprint_is_not_a_mismatch() {
        let mut o = converged_observed();
        o.state = KeyState::PendingImport;
        let facts = MaterialFacts {
            secret_fingerprint: "fp-b",
            imported_fingerprint: None,
            ..FP
        };
        let p = plan_key(&desired(), &o, &facts, None, false);
        assert_eq!(p.actions, vec![Action::ImportMaterial { valid_to: None }]);
    }

    #[test]
    fn pending_deletion_is_reported_unless_restoring() {
        let mut o = converged_observed();
        o.state = KeyState::PendingDeletion;
        let p = plan(&desired(), &o);
        assert_eq!(p.blocker, Some(Blocker::KeyPendingDeletion));
        assert!(p.actions.is_empty());
        let p = plan_key(&desired(), &o, &FP, None, true);
        assert_eq!(p.actions, vec![Action::CancelKeyDeletion]);
        assert_eq!(p.blocker, None);
    }

    #[test]
    fn transitional_states_wait() {
        for state in [
            KeyState::Creating,
            KeyState::Updating,
            KeyState::Unavailable,
        ] {
            let mut o = converged_observed();
            o.state = state.clone();
            let p = plan(&desired(), &o);
            assert!(matches!(p.blocker, Some(Blocker::Waiting(_))), "{state:?}");
            assert!(p.actions.is_empty());
        }
    }

    #[test]
    fn incompatible_keys_are_refused() {
        type Mutation = fn(&mut ObservedKey);
        let cases: [(Mutation, &str); 4] = [
            (|o| o.origin = "AWS_KMS".into(), "origin is AWS_KMS"),
            (
                |o| o.key_spec = Some(KeySpec::Rsa2048),
                "key spec is RSA_2048",
            ),
            (
                |o| o.key_usage = Some(KeyUsage::SignVerify),
                "key usage is SIGN_VERIFY",
            ),
            (|o| o.multi_region = true, "multiRegion is true"),
        ];
        for (mutate, needle) in cases {
            let mut o = converged_observed();
            mutate(&mut o);
            let p = plan(&desired(), &o);
            match p.blocker {
                Some(Blocker::KeyIncompatible(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("expected KeyIncompatible({needle}), got {other:?}"),
            }
            assert!(p.actions.is_empty());
        }
    }

    #[test]
    fn alias_pointing_elsewhere_is_reported_and_not_stolen() {
        let mut o = converged_observed();
        o.aliases.clear();
        let target = AliasTarget::OtherKey("other-key".into());
        let p = plan_key(&desired(), &o, &FP, Some(&target), false);
        assert_eq!(p.blocker, Some(Blocker::AliasInUse("alias/orders".into())));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn rolling_validity_is_renewed_only_below_the_threshold() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let day = SignedDuration::from_hours(24);
        let mut d = desired();
        d.rolling_validity = Some(day * 90);
        let facts = MaterialFacts { now, ..FP };
        // 90d rolling, 30d renew_before: threshold min(30d, 30d) = 30d.
        assert_eq!(renew_threshold(day * 90, day * 30), day * 30);
        // A short validity renews at two thirds of its life.
        assert_eq!(renew_threshold(day * 9, day * 30), day * 3);
        let expect_import = vec![Action::ImportMaterial {
            valid_to: Some(now + day * 90),
        }];
        let cases: [(&str, Option<Timestamp>, bool); 5] = [
            ("plenty left", Some(now + day * 60), false),
            (
                "just above the threshold",
                Some(now + day * 30 + SignedDuration::from_secs(1)),
                false,
            ),
            ("below the threshold", Some(now + day * 29), true),
            ("already expired", Some(now - day), true),
            ("material that does not expire", None, true),
        ];
        for (name, valid_to, renew) in cases {
            let mut o = converged_observed();
            o.valid_to = valid_to;
            let p = plan_key(&d, &o, &facts, None, false);
            let want = if renew { expect_import.clone() } else { vec![] };
            assert_eq!(p.actions, want, "case: {name}");
        }
        // Material in PendingImport gets now + rolling validity.
        let mut o = converged_observed();
        o.state = KeyState::PendingImport;
        assert_eq!(plan_key(&d, &o, &facts, None, false).actions, expect_import);
    }

    #[test]
    fn a_changed_secret_is_refused_or_rotated() {
        let changed = MaterialFacts {
            secret_fingerprint: "fp-b",
            ..FP
        };
        let mut d = desired();
        // Refuse (default): blocked, nothing imported.
        let p = plan_key(&d, &converged_observed(), &changed, None, false);
        assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
        assert!(p.actions.is_empty());
        // Rotate: new material first.
        d.on_change = MaterialChangePolicy::Rotate;
        let p = plan_key(&d, &converged_observed(), &changed, None, false);
        assert_eq!(
            p.actions,
            vec![Action::ImportNewMaterial { valid_to: None }]
        );
        // Imported and every replica holds it: rotate; replicas still importing: wait.
        let pending = |ready| MaterialFacts {
            rotation: RotationFacts::PrimaryPending {
                fingerprint: "fp-b",
                ready,
            },
            ..changed
        };
        let p = plan_key(&d, &converged_observed(), &pending(true), None, false);
        assert_eq!(p.actions, vec![Action::RotateOnDemand]);
        let p = plan_key(&d, &converged_observed(), &pending(false), None, false);
        assert_eq!(p.blocker, Some(Blocker::RotationPending));
        assert!(p.actions.is_empty());
        // Pending material that is not the Secret's (changed again): import the newest.
        let stale = MaterialFacts {
            secret_fingerprint: "fp-c",
            ..pending(true)
        };
        let p = plan_key(&d, &converged_observed(), &stale, None, false);
        assert_eq!(
            p.actions,
            vec![Action::ImportNewMaterial { valid_to: None }]
        );
        // KMS cannot rotate HMAC/RSA/ECC keys.
        let mut hmac = d.clone();
        hmac.key_spec = KeySpec::Hmac256;
        hmac.key_usage = KeyUsage::GenerateVerifyMac;
        let mut o = converged_observed();
        o.key_spec = Some(KeySpec::Hmac256);
        o.key_usage = Some(KeyUsage::GenerateVerifyMac);
        let p = plan_key(&hmac, &o, &changed, None, false);
        assert_eq!(
            p.blocker,
            Some(Blocker::RotationUnsupported(KeySpec::Hmac256))
        );
        assert!(p.actions.is_empty());
        // Without current material there is nothing to rotate from.
        let mut o = converged_observed();
        o.state = KeyState::PendingImport;
        let p = plan_key(&d, &o, &changed, None, false);
        assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn replicas_import_the_primarys_pending_material_once_and_never_rotate() {
        let replica_pending = |imported| MaterialFacts {
            secret_fingerprint: "fp-b",
            rotation: RotationFacts::ReplicaPending {
                fingerprint: "fp-b",
                key_material_id: Some("km-2"),
                imported,
            },
            ..FP
        };
        let p = plan_key(
            &desired(),
            &converged_observed(),
            &replica_pending(false),
            None,
            false,
        );
        assert_eq!(
            p.actions,
            vec![Action::ImportRotationMaterial {
                valid_to: None,
                key_material_id: Some("km-2".into())
            }]
        );
        assert_eq!(p.blocker, None);
        let p = plan_key(
            &desired(),
            &converged_observed(),
            &replica_pending(true),
            None,
            false,
        );
        assert!(p.converged(), "{p:?}");
    }

    #[test]
    fn a_replica_waits_for_its_primarys_rotation_instead_of_reporting_a_mismatch() {
        let awaiting = MaterialFacts {
            secret_fingerprint: "fp-b",
            rotation: RotationFacts::ReplicaAwaitingPrimary,
            ..FP
        };
        let p = plan_key(&desired(), &converged_observed(), &awaiting, None, false);
        assert_eq!(p.blocker, Some(Blocker::RotationPending));
        assert!(p.actions.is_empty(), "{p:?}");
        // Without a rotating primary the same Secret change is a mismatch.
        let refused = MaterialFacts {
            secret_fingerprint: "fp-b",
            ..FP
        };
        let p = plan_key(&desired(), &converged_observed(), &refused, None, false);
        assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
    }

    #[test]
    fn ownership_classification() {
        let me = owner();
        assert_eq!(ownership(&BTreeMap::new(), &me), Ownership::Unowned);
        assert_eq!(ownership(&me.tags(), &me), Ownership::Mine);
        let mut reapplied = me.tags();
        reapplied.insert(OWNER_UID_TAG.into(), "uid-0".into());
        assert_eq!(ownership(&reapplied, &me), Ownership::PreviousIncarnation);
        let mut other = me.tags();
        other.insert(OWNER_TAG.into(), "team/invoices".into());
        other.insert(OWNER_UID_TAG.into(), "uid-9".into());
        assert!(
            matches!(ownership(&other, &me), Ownership::Elsewhere(w) if w.contains("team/invoices"))
        );
        let mut other_cluster = me.tags();
        other_cluster.insert(CLUSTER_TAG.into(), "c2".into());
        assert!(
            matches!(ownership(&other_cluster, &me), Ownership::Elsewhere(w) if w.contains("c2"))
        );
    }
}
