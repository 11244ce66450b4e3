//! The part of a reconcile shared by every kind that manages one KMS key (AwsKey,
//! AwsReplicaKey): the observe → plan → execute rounds, the Ready verdict, action events, and
//! the connection lookup.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::{Api, Resource};

use super::{Context, Error, Failure, status};
use crate::api::conditions::{condition, find_condition, set_condition};
use crate::api::{AwsKeyPolicyTemplate, AwsKms, KeyPolicy, KmsKeyStatus, LocalObjectRef};
use crate::kms::execute::{self, ExecuteError, ImportInput};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::verify::{self, Verification};
use crate::kms::{Client, Connection, KmsError};
use crate::plan::{
    self, Action, AliasTarget, Blocker, DesiredKey, KeyState, MaterialFacts, ObservedKey,
    RotationFacts,
};
use crate::policy;

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
    /// Allow cancelling a pending deletion (the resource was applied again).
    pub restore: bool,
    /// The fingerprint the key must hold when it is not the one recorded in `status` (a
    /// replica must hold its primary's material).
    pub expected_fingerprint: Option<&'a str>,
    /// What the user can do when the key is gone (kind-specific advice).
    pub gone_advice: &'static str,
    /// Read tags, aliases and policy besides DescribeKey (see [`Context::deep_read_due`]).
    pub deep_read: bool,
    /// Clock, renewal threshold, and the key's place in rotations and verification.
    pub lifecycle: Lifecycle<'a>,
}

/// The material-lifecycle inputs of a sync.
pub struct Lifecycle<'a> {
    /// The time of this reconcile (from the controller's clock).
    pub now: Timestamp,
    /// Renew rolling-validity material when less than this remains (see
    /// [`plan::renew_threshold`]).
    pub renew_before: SignedDuration,
    pub role: Role<'a>,
}

/// Whose material record a key follows.
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

/// What the rounds did and where they stopped.
#[derive(Debug, Default)]
pub struct Synced {
    pub executed: Vec<Action>,
    pub blocker: Option<Blocker>,
    pub observed: Option<ObservedKey>,
    /// The material verification of this reconcile, when one ran.
    pub verification: Option<Verification>,
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
    for _ in 0..MAX_ROUNDS {
        let Some(mut observed) = observe::observe(key.client, key.key_id, depth)
            .await
            .map_err(Failure::kms)?
        else {
            return Err(Failure::permanent(
                "KeyGone",
                format!(
                    "KMS key {} no longer exists in {}; keyfleet does not replace it with a new key because consumers hold its ARN. {}",
                    key.key_id, key.region, key.gone_advice
                ),
            ));
        };
        if observed.material_expires && observed.valid_to.is_none() {
            // Some KMS implementations (LocalStack) report the expiration model without the
            // date: fall back to the expiry keyfleet imported with.
            observed.valid_to = status.material_valid_to.as_ref().map(|t| t.0);
        }
        status::record_observed(status, &observed, key.region);
        if status.material_fingerprint.is_none() && observed.state != KeyState::PendingImport {
            // An adopted or recovered key that already holds material: remember what the
            // Secret holds now, so a later change of the Secret is caught.
            status.material_fingerprint = Some(fingerprint.as_str().to_string());
        }
        if let Role::Replica { primary, .. } = key.lifecycle.role {
            promote_rotated_replica(status, primary);
        }
        let alias_target = alias_target(key.client, key.desired, &observed).await?;
        let rotation = rotation_facts(&key, status, &observed, fingerprint.as_str()).await?;
        let facts = MaterialFacts {
            secret_fingerprint: fingerprint.as_str(),
            imported_fingerprint: key
                .expected_fingerprint
                .or(status.material_fingerprint.as_deref()),
            now: key.lifecycle.now,
            renew_before: key.lifecycle.renew_before,
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
        if plan.actions.is_empty() {
            synced.blocker = plan.blocker;
            return verify_material(&key, depth, imported, status, synced).await;
        }
        for action in &plan.actions {
            run_action(&key, action, status).await?;
            imported |= matches!(
                action,
                Action::ImportMaterial { .. }
                    | Action::ImportNewMaterial { .. }
                    | Action::ImportRotationMaterial { .. }
            );
            synced.executed.push(action.clone());
        }
    }
    Err(Failure::Transient(Error::Other(format!(
        "key {} did not settle within {MAX_ROUNDS} rounds; retrying",
        key.key_id
    ))))
}

async fn run_action(
    key: &KeySync<'_>,
    action: &Action,
    status: &mut KmsKeyStatus,
) -> Result<(), Failure> {
    let key_material_id = match execute::execute(key.client, key.key_id, action, &key.import).await
    {
        Ok(id) => id,
        Err(ExecuteError::Material(e)) => {
            return Err(Failure::permanent(e.reason(), e.to_string()));
        }
        Err(ExecuteError::Kms(KmsError::Rejected { code, .. }))
            if code == "AlreadyExistsException"
                && matches!(action, Action::CreateAlias(_))
                && created_alias_is_ours(key, action).await? =>
        {
            None
        }
        Err(ExecuteError::Kms(KmsError::IncorrectKeyMaterial { .. })) => {
            return Err(Failure::permanent(
                "MaterialMismatch",
                Blocker::MaterialMismatch.message(),
            ));
        }
        Err(ExecuteError::Kms(e)) => return Err(Failure::kms(e)),
    };
    let now = Time(key.lifecycle.now);
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
    match key.lifecycle.role {
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

/// After the rounds: proves that KMS holds the Secret's material, after an import and on every
/// deep (metadata) read; records `MaterialVerified` and turns a mismatch into the blocker.
/// Between deep reads a previous mismatch stays in force.
async fn verify_material(
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
            && let Some(previous) = find_condition(
                &status.conditions,
                crate::api::conditions::MATERIAL_VERIFIED,
            )
            && previous.status == "False"
        {
            synced.blocker = Some(Blocker::MaterialVerificationFailed(
                previous.message.clone(),
            ));
        }
        return Ok(());
    }
    let (expected_id, previous_id) = match key.lifecycle.role {
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
        crate::api::conditions::MATERIAL_VERIFIED,
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

/// Records the hash of the managed policy once it is in place (None: not managed).
fn record_policy_hash(status: &mut KmsKeyStatus, desired: &DesiredKey, observed: &ObservedKey) {
    let Some(desired_policy) = &desired.policy else {
        status.policy_hash = None;
        return;
    };
    if let Some(rendered) = plan::rendered_policy(desired_policy, observed)
        && observed.policy.as_ref() == Some(&rendered)
    {
        status.policy_hash = Some(policy::hash(&rendered));
    }
}

/// The `AwsKeyPolicyTemplate` a policy names; None when it names none or the template does
/// not exist (validation then reports `PolicyTemplateNotFound`).
pub async fn policy_template(
    ctx: &Context,
    policy: Option<&KeyPolicy>,
) -> Result<Option<AwsKeyPolicyTemplate>, Failure> {
    let Some(template_ref) = policy.and_then(|p| p.template_ref.as_ref()) else {
        return Ok(None);
    };
    let api: Api<AwsKeyPolicyTemplate> = Api::all(ctx.client.clone());
    api.get_opt(&template_ref.name).await.map_err(Failure::kube)
}

/// Names keyfleet's own principal as the one the policy must keep able to manage the key
/// (unless the lockout check is bypassed).
pub async fn keep_manageable(
    ctx: &Context,
    connection: &Connection,
    region: &str,
    desired: &mut DesiredKey,
) {
    if desired.bypass_policy_lockout_safety_check {
        return;
    }
    if let Some(policy) = &mut desired.policy {
        policy.keep_manageable_by = ctx.kms.caller(connection, region).await;
    }
}

/// Refuses a policy that would lock keyfleet out before any key is created for it: the policy
/// rendered for a key of the caller's account in `region` must pass the lockout check (the
/// check runs again on the real key before every PutKeyPolicy).
pub fn precheck_policy(desired: &DesiredKey, region: &str) -> Result<(), Failure> {
    let Some(policy) = &desired.policy else {
        return Ok(());
    };
    let Some(caller) = &policy.keep_manageable_by else {
        return Ok(());
    };
    let preview = policy::KeyIdentity::preview(&caller.account_id, region, "new-key");
    policy::lockout::check(&policy.render(&preview), caller).map_err(|why| {
        let blocker = Blocker::PolicyLockout(why);
        Failure::permanent(blocker.reason(), blocker.message())
    })
}

/// Whether the policy keyfleet would render now differs from the one it last kept in place
/// (`status.policyHash`): a template or spec change, seen by the next reconcile even between
/// drift reads. A key without a known ARN is read deeply anyway.
pub fn policy_changed(desired: &DesiredKey, status: &KmsKeyStatus) -> bool {
    let Some(desired_policy) = &desired.policy else {
        return false;
    };
    let Some(key) = status
        .arn
        .as_deref()
        .and_then(policy::KeyIdentity::from_arn)
    else {
        return true;
    };
    status.policy_hash.as_deref() != Some(policy::hash(&desired_policy.render(&key)).as_str())
}

/// Remembers a deep read that found the key converged; anything else (a blocker, a failure)
/// makes the next reconcile read deeply again, so a blocker is never forgotten by a resync.
pub fn record_read(
    ctx: &Context,
    uid: &str,
    generation: Option<i64>,
    deep_read: bool,
    result: &Result<(), Failure>,
    synced: &Synced,
) {
    match (result, &synced.blocker) {
        (Ok(()), None) if deep_read => ctx.deep_read_done(uid, generation),
        (Ok(()), None) => {}
        _ => ctx.forget_deep_read(uid),
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

/// Where the desired alias points, when it is not on this key already.
async fn alias_target(
    client: &Client,
    desired: &DesiredKey,
    observed: &ObservedKey,
) -> Result<Option<AliasTarget>, Failure> {
    let Some(alias) = &desired.alias else {
        return Ok(None);
    };
    if !observed.metadata_read || observed.aliases.contains(alias) {
        return Ok(None);
    }
    Ok(Some(
        match observe::alias_target(client, alias)
            .await
            .map_err(Failure::kms)?
        {
            None => AliasTarget::Free,
            Some(id) if id == observed.key_id => AliasTarget::Free,
            Some(id) => AliasTarget::OtherKey(id),
        },
    ))
}

/// The AwsKms named by `kms_ref`, or the operator's own credentials.
pub async fn connection(
    ctx: &Context,
    kms_ref: Option<&LocalObjectRef>,
) -> Result<Connection, Failure> {
    let Some(kms_ref) = kms_ref else {
        return Ok(Connection::operator_default());
    };
    let api: Api<AwsKms> = Api::all(ctx.client.clone());
    match api.get_opt(&kms_ref.name).await.map_err(Failure::kube)? {
        Some(kms) => Ok(Connection::from_aws_kms(&kms)),
        None => Err(Failure::permanent(
            "KmsConnectionNotFound",
            format!(
                "AwsKms {} does not exist; create it or remove spec.kmsRef",
                kms_ref.name
            ),
        )),
    }
}

/// Refuses a region the connection does not allow.
pub fn check_region(connection: &Connection, region: &str) -> Result<(), Failure> {
    if connection.spec.allows_region(region) {
        return Ok(());
    }
    Err(Failure::permanent(
        "RegionNotAllowed",
        format!(
            "region {region} is not allowed by {} (allowed: {})",
            connection.describe(),
            connection.spec.regions.join(", ")
        ),
    ))
}

/// The Ready condition a finished reconcile leads to, and when to look again.
pub struct Verdict {
    pub ready: bool,
    pub reason: String,
    pub message: String,
    pub requeue: Requeue,
}

/// The verdict for an outcome; None for a transient failure (the condition stays as it was).
pub fn verdict(
    outcome: &Result<(), Failure>,
    synced: &Synced,
    key_state: Option<&str>,
    ctx: &Context,
) -> Option<Verdict> {
    let settings = &ctx.settings;
    let (ready, reason, message, requeue) = match outcome {
        Ok(()) => match &synced.blocker {
            None if key_state == Some("Disabled") => (
                true,
                "KeyDisabled".to_string(),
                "the key is disabled as requested (spec.enabled: false); material and spec are applied".to_string(),
                settings.resync_interval,
            ),
            None => (
                true,
                "KeyReady".to_string(),
                "the key is Enabled, its material is imported and the spec is applied".to_string(),
                settings.resync_interval,
            ),
            Some(blocker @ (Blocker::Waiting(_) | Blocker::RotationPending)) => {
                (false, blocker.reason().to_string(), blocker.message(), Duration::from_secs(10))
            }
            Some(blocker) => (false, blocker.reason().to_string(), blocker.message(), settings.blocked_recheck_interval),
        },
        Err(Failure::Permanent { reason, message }) => {
            (false, reason.clone(), message.clone(), settings.blocked_recheck_interval)
        }
        Err(Failure::Transient(_)) => return None,
    };
    Some(Verdict {
        ready,
        reason,
        message,
        requeue: Requeue::requeue(requeue),
    })
}

/// Publishes one Normal event per KMS change.
pub async fn publish_actions<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    executed: &[Action],
) {
    for action in executed {
        let (reason, note) = describe_action(action);
        ctx.publish(obj, EventType::Normal, reason, note, action.name())
            .await;
    }
}

/// Publishes the Ready transition, when the condition changed.
pub async fn publish_verdict<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    verdict: &Verdict,
) {
    let type_ = if verdict.ready {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.publish(
        obj,
        type_,
        &verdict.reason,
        verdict.message.clone(),
        "Reconcile",
    )
    .await;
    tracing::info!(ready = verdict.ready, reason = %verdict.reason, "Ready changed");
}

/// Event reason and note for an executed action.
fn describe_action(action: &Action) -> (&'static str, String) {
    match action {
        Action::ImportMaterial { valid_to: Some(t) } => (
            "MaterialImported",
            format!("imported the key material, valid to {t}"),
        ),
        Action::ImportMaterial { valid_to: None } => (
            "MaterialImported",
            "imported the key material (does not expire)".into(),
        ),
        Action::CancelKeyDeletion => (
            "KeyDeletionCanceled",
            "cancelled the scheduled deletion of the KMS key".into(),
        ),
        Action::EnableKey => ("KeyEnabled", "enabled the KMS key".into()),
        Action::DisableKey => ("KeyDisabled", "disabled the KMS key".into()),
        Action::UpdateDescription(_) => ("DescriptionUpdated", "set the key description".into()),
        Action::TagResource(tags) => (
            "TagsUpdated",
            format!(
                "set tags: {}",
                tags.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
        Action::UntagResource(keys) => (
            "TagsRemoved",
            format!("removed tags not in the spec: {}", keys.join(", ")),
        ),
        Action::CreateAlias(alias) => ("AliasCreated", format!("pointed {alias} at the key")),
        Action::DeleteAlias(alias) => (
            "AliasDeleted",
            format!("removed {alias}, which is not in the spec"),
        ),
        Action::PutKeyPolicy { policy, .. } => (
            "PolicyUpdated",
            format!(
                "applied the key policy ({})",
                serde_json::from_str(policy)
                    .map(|p| policy::hash(&p))
                    .unwrap_or_default()
            ),
        ),
        Action::ImportNewMaterial { .. } => (
            "RotationMaterialImported",
            "imported the Secret's new key material (NEW_KEY_MATERIAL) for a rotation".into(),
        ),
        Action::ImportRotationMaterial { .. } => (
            "RotationMaterialImported",
            "imported the primary's new key material (EXISTING_KEY_MATERIAL) for its rotation"
                .into(),
        ),
        Action::RotateOnDemand => (
            "KeyRotated",
            "rotated the key to the new material (RotateKeyOnDemand); older material still decrypts"
                .into(),
        ),
    }
}

/// Finishes a reconcile of any key kind: events for the KMS changes, the Ready verdict, metrics
/// and the status write. A transient failure keeps the condition but persists what was learned
/// (a new key id above all) and is returned for the error policy's backoff.
#[allow(clippy::too_many_arguments)]
pub async fn finish<K, S>(
    ctx: &Context,
    kind: &'static str,
    api: &Api<K>,
    obj: &K,
    old: Option<&S>,
    mut status: S,
    outcome: Result<(), Failure>,
    synced: &Synced,
    started: std::time::Instant,
) -> Result<Requeue, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq + std::ops::DerefMut<Target = KmsKeyStatus>,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    publish_actions(ctx, obj, &synced.executed).await;
    let Some(verdict) = verdict(&outcome, synced, status.key_state.as_deref(), ctx) else {
        status::write(api, &name, old, &status)
            .await
            .map_err(Error::Kube)?;
        return match outcome {
            Err(Failure::Transient(e)) => Err(e),
            _ => Err(Error::Other("a transient failure without an error".into())),
        };
    };
    ctx.metrics.key_observed_at(
        kind,
        obj.meta().namespace.as_deref().unwrap_or_default(),
        &name,
        status.key_state.as_deref(),
        status.material_valid_to.as_ref().map(|t| t.0),
        ctx.clock.now(),
    );
    let changed = status::set_ready(
        &mut status,
        verdict.ready,
        &verdict.reason,
        &verdict.message,
        obj.meta().generation,
    );
    status::write(api, &name, old, &status)
        .await
        .map_err(Error::Kube)?;
    ctx.metrics.reconciled(
        kind,
        if verdict.ready { "ready" } else { "not_ready" },
        started.elapsed(),
    );
    if changed {
        publish_verdict(ctx, obj, &verdict).await;
    }
    Ok(verdict.requeue)
}
