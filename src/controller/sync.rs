//! Sync step (KMS reads and writes): rounds of observe → plan → execute on one key until
//! nothing is left to do or a blocker stops it; what KMS reports is recorded in status.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::inventory::{self, Listing};
use super::managed_key::Source;
use super::{Error, Failure, status, verification};
use crate::api::{KmsKeyStatus, MaterialChangePolicy};
use crate::desired;
use crate::kms::execute::{self, ExecuteError, ImportInput};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::verify::Verification;
use crate::kms::{Client, Connection, KmsError};
use crate::plan::{
    self, Action, AliasTarget, Blocker, DesiredKey, KeyState, MaterialFacts, MaterialState,
    ObservedKey, Owner, RotationFacts,
};
use crate::policy;
use crate::tenancy::{self, Claim};

/// Rounds of observe → plan → execute in one reconcile (each round may unlock the next, e.g.
/// CancelKeyDeletion → EnableKey).
const MAX_ROUNDS: usize = 4;

/// One key to bring to its desired state.
pub struct KeySync<'a> {
    pub client: &'a Client,
    pub key_id: &'a str,
    pub region: &'a str,
    pub desired: &'a DesiredKey,
    pub import: ImportInput<'a>,
    /// The materials of the `keyMaterial.retained` Secrets, in their order.
    pub retained: Vec<ImportInput<'a>>,
    /// Allow cancelling a pending deletion (the resource was applied again).
    pub restore: bool,
    /// The object, as KMS tags name it.
    pub owner: &'a Owner,
    /// What entitles the object to change the key (checked against its tags before writes).
    pub claim: Claim,
    /// The connection (its policy limits are checked before every PutKeyPolicy).
    pub connection: &'a Connection,
    /// What the user can do when the key is gone (kind-specific advice).
    pub gone_advice: &'static str,
    /// Read tags, aliases and policy besides DescribeKey (see
    /// [`super::Context::deep_read_due`]).
    pub deep_read: bool,
    /// The key as this reconcile's CreateKey or ReplicateKey answered: the first round plans
    /// from it without reading, and later rounds describe only (tags, aliases and policy are
    /// what this reconcile wrote).
    pub created: Option<&'a ObservedKey>,
    /// The desired alias was looked up by this reconcile and points at no key.
    pub alias_free: bool,
    /// The time of this reconcile (from the controller's clock).
    pub now: Timestamp,
    /// Renew rolling-validity material when less than this remains (see
    /// [`plan::renew_threshold`]).
    pub renew_before: SignedDuration,
    /// Whose material record the key follows.
    pub role: Role<'a>,
}

/// Whose material record a key follows.
#[derive(Clone, Copy)]
pub enum Role<'a> {
    /// A primary or single-region key: its own status records imports and rotations.
    Primary,
    /// A replica: follows the material its primary recorded (status of the primary AwsKey);
    /// `primary_rotates` when the primary's `keyMaterial.onChange` is Rotate.
    Replica {
        primary: &'a KmsKeyStatus,
        primary_rotates: bool,
    },
}

impl<'a> Role<'a> {
    /// The role of a key whose connection and material come from `source`.
    pub fn of(source: &'a Source<'_>) -> Role<'a> {
        match source {
            Source::Own(_) => Role::Primary,
            Source::Primary { key, status } => Role::Replica {
                primary: status,
                primary_rotates: key.spec.key_material.on_change == MaterialChangePolicy::Rotate,
            },
        }
    }

    /// The fingerprint the key must hold when it is not the one recorded in its own status (a
    /// replica must hold its primary's material).
    /// The primary's status, for a replica.
    fn primary(self) -> Option<&'a KmsKeyStatus> {
        match self {
            Role::Primary => None,
            Role::Replica { primary, .. } => Some(primary),
        }
    }

    fn expected_fingerprint(self) -> Option<&'a str> {
        match self {
            Role::Primary => None,
            Role::Replica { primary, .. } => primary.material_fingerprint.as_deref(),
        }
    }
}

/// What the rounds did and where they stopped.
#[derive(Debug, Default)]
pub struct Synced {
    pub executed: Vec<Action>,
    pub blocker: Option<Blocker>,
    pub observed: Option<ObservedKey>,
    /// The material verification of this reconcile, when one ran.
    pub verification: Option<Verification>,
    /// NON_CURRENT materials about to expire that keyfleet cannot renew; None when the
    /// inventory was not read.
    pub expiring: Option<Vec<plan::ExpiringMaterial>>,
}

/// Runs observe → plan → execute until nothing is left to do (or a blocker), recording what KMS
/// reports in `status` and what was done in `synced`.
pub async fn sync(
    key: KeySync<'_>,
    status: &mut KmsKeyStatus,
    synced: &mut Synced,
) -> Result<(), Failure> {
    let fingerprint = key.import.material.fingerprint();
    let depth = ReadDepth {
        metadata: key.deep_read,
        policy: key.deep_read && key.desired.policy.is_some(),
    };
    let mut restore = key.restore;
    let mut imported = false;
    // An import, rotation or retirement happened in an earlier round: read the inventory.
    let mut materials_changed = false;
    let family = key.desired.key_spec.family();
    // A key this reconcile created is planned from the creation's answer, then described.
    let mut known = key.created.cloned();
    let later_depth = if known.is_some() {
        ReadDepth::DESCRIBE
    } else {
        depth
    };
    for round in 0..MAX_ROUNDS {
        let depth = if round == 0 { depth } else { later_depth };
        let observed = match known.take() {
            Some(created) => Some(created),
            None => observe::observe(key.client, key.key_id, depth)
                .await
                .map_err(Failure::kms)?,
        };
        let Some(mut observed) = observed else {
            return Err(Failure::conflict(
                "KeyGone",
                format!(
                    "KMS key {} no longer exists in {}; keyfleet does not replace it with a new key because consumers hold its ARN. {}",
                    key.key_id, key.region, key.gone_advice
                ),
            ));
        };
        let listing = if key.created.is_some() {
            // A key this reconcile created holds no material, then exactly the one it just
            // imported (its KeyMaterialId from the import's answer): recorded without a read,
            // as not yet confirmed by a listing, which its next deep read brings. Two KMS reads
            // less per key in a roll-out.
            materials_changed.then_some(Listing::Unlisted)
        } else if inventory::due(key.deep_read, materials_changed, status) {
            Some(inventory::read(key.client, key.key_id, family).await?)
        } else {
            None
        };
        if let Some(Listing::Listed(materials)) = &listing {
            // DescribeKey's ValidTo is the earliest of every material's; the current
            // material's own expiry is what its renewal follows.
            if let Some(current) = materials
                .iter()
                .find(|m| m.state == MaterialState::Current && m.imported)
            {
                observed.valid_to = current.valid_to;
                observed.material_expires = current.expires;
            }
            observed.materials = Some(materials.clone());
        }
        if observed.material_expires && observed.valid_to.is_none() {
            // Some KMS implementations (LocalStack) report the expiration model without the
            // date: fall back to the expiry keyfleet imported with.
            observed.valid_to = status.material_valid_to.as_ref().map(|t| t.0);
        }
        status::record_observed(status, &observed, key.region);
        if let Some(listing) = &listing {
            inventory::record(status, &observed, family, listing, &key.desired.retire);
        }
        if status.material_fingerprint.is_none() && observed.state != KeyState::PendingImport {
            // An adopted or recovered key that already holds material: remember what the
            // Secret holds now, so a later change of the Secret is caught.
            status.material_fingerprint = Some(fingerprint.as_str().to_string());
        }
        if let Role::Replica { primary, .. } = key.role {
            promote_rotated_replica(status, primary);
        }
        let alias_target = alias_target(&key, &observed).await?;
        let rotation = rotation_facts(&key, status, &observed, fingerprint.as_str()).await?;
        let retained = inventory::retained_facts(&key.retained, status, key.role.primary());
        // An adopted symmetric key: what KMS holds is proven by importing the Secret's material
        // (the KeyMaterialId of that import is recorded), not taken on trust.
        let unproven = matches!(key.role, Role::Primary)
            && status.key_material_id.is_none()
            && observed.current_key_material_id.is_some();
        let facts = MaterialFacts {
            unproven,
            unlisted: matches!(listing, Some(Listing::Unlisted)),
            retained: &retained,
            secret_fingerprint: fingerprint.as_str(),
            imported_fingerprint: key
                .role
                .expected_fingerprint()
                .or(status.material_fingerprint.as_deref()),
            now: key.now,
            renew_before: key.renew_before,
            rotation,
        };
        let plan = plan::plan_key(
            key.desired,
            &observed,
            &facts,
            alias_target.as_ref(),
            restore,
        );
        record_policy_hash(status, key.desired, &observed);
        synced.observed = Some(observed);
        restore = false;
        if plan.expiring.is_some() {
            synced.expiring = plan.expiring.clone();
        }
        if plan.actions.is_empty() {
            synced.blocker = plan.blocker;
            return verification::verify_material(&key, depth, imported, status, synced).await;
        }
        check_writes(&key, &plan.actions, synced.observed.as_ref()).await?;
        for action in &plan.actions {
            run_action(&key, action, status).await?;
            imported |= matches!(
                action,
                Action::ImportMaterial { .. }
                    | Action::ImportNewMaterial { .. }
                    | Action::ImportRotationMaterial { .. }
            );
            materials_changed |= action.changes_materials();
            synced.executed.push(action.clone());
        }
    }
    Err(Failure::Transient(Error::Unsettled {
        key_id: key.key_id.to_string(),
        rounds: MAX_ROUNDS,
    }))
}

/// Before a round of writes: the key must still be this object's (its owner tags, read in this
/// round), and a policy about to be put must name only principals the connection permits.
/// Either refusal stops the round before anything changes in KMS.
async fn check_writes(
    key: &KeySync<'_>,
    actions: &[Action],
    observed: Option<&ObservedKey>,
) -> Result<(), Failure> {
    let tags = match observed {
        Some(observed) if observed.metadata_read => observed.tags.clone(),
        _ => {
            match observe::observe(key.client, key.key_id, ReadDepth::METADATA)
                .await
                .map_err(Failure::kms)?
            {
                Some(observed) => observed.tags,
                None => Default::default(),
            }
        }
    };
    tenancy::may_modify(key.key_id, &tags, key.owner, &key.claim)
        .map_err(|r| Failure::conflict(r.reason, r.message))?;
    for action in actions {
        if let Action::PutKeyPolicy { policy, .. } = action {
            let rendered: serde_json::Value = serde_json::from_str(policy).map_err(|e| {
                Failure::blocked(
                    "PolicyInvalid",
                    super::Category::Spec,
                    format!("the rendered policy is not JSON: {e}"),
                )
            })?;
            tenancy::policy_principals(
                &key.connection.name,
                &rendered,
                key.connection.spec.key_policy.as_ref(),
            )
            .map_err(|r| Failure::blocked(r.reason, super::Category::Spec, r.message))?;
        }
    }
    Ok(())
}

/// Executes one action and records its effect on the material bookkeeping in `status`.
async fn run_action(
    key: &KeySync<'_>,
    action: &Action,
    status: &mut KmsKeyStatus,
) -> Result<(), Failure> {
    let input = match action {
        Action::ImportRetainedMaterial { retained, .. } => &key.retained[*retained],
        _ => &key.import,
    };
    let key_material_id = match execute::execute(key.client, key.key_id, action, input).await {
        Ok(id) => id,
        Err(ExecuteError::Kms(e)) if recoverable(action, &e) => {
            match recover_lost_answer(key, action, status).await? {
                Some(id) => id,
                None => return Err(Failure::kms(e)),
            }
        }
        Err(ExecuteError::Material(e)) => {
            let message = e.to_string();
            return Err(Failure::material(&e, message));
        }
        Err(ExecuteError::Kms(KmsError::Rejected { code, .. }))
            if code == "AlreadyExistsException"
                && matches!(action, Action::CreateAlias(_))
                && created_alias_is_ours(key, action).await? =>
        {
            None
        }
        Err(ExecuteError::Kms(e)) => return Err(Failure::kms(e)),
    };
    let now = Time(key.now);
    let fingerprint = key.import.material.fingerprint().as_str().to_string();
    match action {
        Action::ImportMaterial { valid_to } => {
            status.material_valid_to = valid_to.map(Time);
            status.material_fingerprint = Some(fingerprint);
            status.last_import_time = Some(now);
            if key_material_id.is_some() {
                status.key_material_id = key_material_id;
            }
        }
        Action::ImportNewMaterial { .. } | Action::ImportRotationMaterial { .. } => {
            status.pending_material_fingerprint = Some(fingerprint);
            status.pending_key_material_id = key_material_id.or_else(|| match action {
                Action::ImportRotationMaterial {
                    key_material_id, ..
                } => key_material_id.clone(),
                _ => None,
            });
            status.last_import_time = Some(now);
        }
        Action::PutKeyPolicy { policy, .. } => {
            status.policy_hash = serde_json::from_str(policy).ok().map(|p| policy::hash(&p));
        }
        Action::RotateOnDemand => {
            status.previous_key_material_id = status.key_material_id.take();
            status.key_material_id = status.pending_key_material_id.take();
            status.material_fingerprint = status.pending_material_fingerprint.take();
            status.rotation_count = Some(status.rotation_count.unwrap_or(0) + 1);
            status.last_rotation_time = Some(now);
        }
        _ => {}
    }
    Ok(())
}

/// A refusal that may answer a retry of a call whose first answer was lost (a 500 after the
/// call took effect, retried by the SDK): KMS refuses to import the same new material twice,
/// and to rotate once more.
fn recoverable(action: &Action, e: &KmsError) -> bool {
    matches!(
        (action, e),
        (
            Action::ImportNewMaterial { .. },
            KmsError::IncorrectKeyMaterial { .. }
        ) | (Action::RotateOnDemand, KmsError::InvalidState { .. })
    )
}

/// Whether a refused rotation step had in fact been done by an earlier attempt: the Secret's
/// material is pending rotation (its KeyMaterialDescription names its fingerprint), or the key
/// already rotated to the pending material. `Some(key material id)` when it was.
async fn recover_lost_answer(
    key: &KeySync<'_>,
    action: &Action,
    status: &KmsKeyStatus,
) -> Result<Option<Option<String>>, Failure> {
    match action {
        Action::ImportNewMaterial { .. } => {
            let fingerprint = key.import.material.fingerprint();
            let listing = inventory::read(key.client, key.key_id, key.desired.key_spec.family());
            let Listing::Listed(materials) = listing.await? else {
                return Ok(None);
            };
            Ok(materials
                .into_iter()
                .find(|m| {
                    matches!(m.state, MaterialState::PendingRotation { .. })
                        && m.description
                            .as_deref()
                            .and_then(desired::described_fingerprint)
                            == Some(fingerprint.as_str())
                })
                .map(|m| Some(m.key_material_id)))
        }
        Action::RotateOnDemand => {
            let observed = observe::observe(key.client, key.key_id, ReadDepth::DESCRIBE)
                .await
                .map_err(Failure::kms)?;
            let current = observed.and_then(|o| o.current_key_material_id);
            Ok((current.is_some() && current == status.pending_key_material_id).then_some(None))
        }
        _ => Ok(None),
    }
}

/// A replica that imported its primary's pending material takes it as current once the
/// primary has rotated to it.
fn promote_rotated_replica(status: &mut KmsKeyStatus, primary: &KmsKeyStatus) {
    if status.pending_material_fingerprint.is_some()
        && status.pending_material_fingerprint == primary.material_fingerprint
    {
        status.previous_key_material_id = status.key_material_id.take();
        status.key_material_id = status.pending_key_material_id.take();
        status.material_fingerprint = status.pending_material_fingerprint.take();
    }
}

/// Where a rotation to the Secret's material stands for this key.
async fn rotation_facts<'k: 's, 's>(
    key: &KeySync<'k>,
    status: &'s KmsKeyStatus,
    observed: &ObservedKey,
    secret_fingerprint: &str,
) -> Result<RotationFacts<'s>, Failure> {
    match key.role {
        Role::Primary => {
            let Some(pending) = status.pending_material_fingerprint.as_deref() else {
                return Ok(RotationFacts::None);
            };
            if pending != secret_fingerprint {
                return Ok(RotationFacts::None);
            }
            // Multi-region keys rotate once every replica holds the new material (KMS marks
            // it PENDING_ROTATION); without a KeyMaterialId to look up, RotateKeyOnDemand
            // itself tells.
            let ready = match (
                &status.pending_key_material_id,
                observed.replicas.is_empty(),
            ) {
                (_, true) | (None, false) => true,
                (Some(id), false) => execute::rotation_ready(key.client, key.key_id, id)
                    .await
                    .map_err(Failure::kms)?,
            };
            Ok(RotationFacts::PrimaryPending {
                fingerprint: pending,
                ready,
            })
        }
        Role::Replica {
            primary,
            primary_rotates,
        } => match primary.pending_material_fingerprint.as_deref() {
            Some(pending) => Ok(RotationFacts::ReplicaPending {
                fingerprint: pending,
                key_material_id: primary.pending_key_material_id.as_deref(),
                imported: status.pending_material_fingerprint.as_deref() == Some(pending),
            }),
            // The Secret changed and the primary will rotate to it, but has not imported it
            // yet: the replica waits for the primary instead of reporting a mismatch.
            None if primary_rotates
                && primary.material_fingerprint.as_deref() != Some(secret_fingerprint) =>
            {
                Ok(RotationFacts::ReplicaAwaitingPrimary)
            }
            None => Ok(RotationFacts::None),
        },
    }
}

/// Records the hash of the managed policy once it is in place (None: not managed).
fn record_policy_hash(status: &mut KmsKeyStatus, desired: &DesiredKey, observed: &ObservedKey) {
    let Some(desired_policy) = &desired.policy else {
        status.policy_hash = None;
        return;
    };
    let rendered = plan::rendered_policy(desired_policy, observed);
    if observed.policy.as_ref() == Some(&rendered) {
        status.policy_hash = Some(policy::hash(&rendered));
    }
}

/// A CreateAlias refused as existing whose alias points at this key: an earlier attempt went
/// through although its answer was lost (5xx, timeout), and the SDK retried it.
async fn created_alias_is_ours(key: &KeySync<'_>, action: &Action) -> Result<bool, Failure> {
    let Action::CreateAlias(alias) = action else {
        return Ok(false);
    };
    let target = observe::alias_target(key.client, alias)
        .await
        .map_err(Failure::kms)?;
    Ok(target.as_deref() == Some(key.key_id))
}

/// Where the desired alias points, when it is not on this key already (known without a read
/// when this reconcile looked it up before creating the key).
async fn alias_target(
    key: &KeySync<'_>,
    observed: &ObservedKey,
) -> Result<Option<AliasTarget>, Failure> {
    let Some(alias) = &key.desired.alias else {
        return Ok(None);
    };
    if !observed.metadata_read || observed.aliases.contains(alias) {
        return Ok(None);
    }
    if key.alias_free {
        return Ok(Some(AliasTarget::Free));
    }
    Ok(Some(
        match observe::alias_target(key.client, alias)
            .await
            .map_err(Failure::kms)?
        {
            None => AliasTarget::Free,
            Some(id) if id == observed.identity.key_id => AliasTarget::Free,
            Some(id) => AliasTarget::OtherKey(id),
        },
    ))
}
