//! The part of a reconcile shared by every kind that manages one KMS key (AwsKey,
//! AwsReplicaKey): the observe → plan → execute rounds, the Ready verdict, action events, and
//! the connection lookup.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::{Api, Resource};

use super::{Context, Error, Failure, status};
use crate::api::{AwsKms, KmsKeyStatus, LocalObjectRef};
use crate::kms::execute::{self, ExecuteError, ImportInput};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::{Client, Connection, KmsError};
use crate::plan::{
    self, Action, AliasTarget, Blocker, DesiredKey, KeyState, MaterialFacts, ObservedKey,
};

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
}

/// What the rounds did and where they stopped.
#[derive(Debug, Default)]
pub struct Synced {
    pub executed: Vec<Action>,
    pub blocker: Option<Blocker>,
    pub observed: Option<ObservedKey>,
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
        let alias_target = alias_target(key.client, key.desired, &observed).await?;
        let facts = MaterialFacts {
            secret_fingerprint: fingerprint.as_str(),
            imported_fingerprint: key
                .expected_fingerprint
                .or(status.material_fingerprint.as_deref()),
        };
        let plan = plan::plan_key(
            key.desired,
            &observed,
            &facts,
            alias_target.as_ref(),
            restore,
        );
        synced.observed = Some(observed);
        restore = false;
        if plan.actions.is_empty() {
            synced.blocker = plan.blocker;
            return Ok(());
        }
        for action in &plan.actions {
            run_action(&key, action, status).await?;
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
    match execute::execute(key.client, key.key_id, action, &key.import).await {
        Ok(()) => {}
        Err(ExecuteError::Material(e)) => {
            return Err(Failure::permanent(e.reason(), e.to_string()));
        }
        Err(ExecuteError::Kms(KmsError::Rejected { code, .. }))
            if code == "AlreadyExistsException"
                && matches!(action, Action::CreateAlias(_))
                && created_alias_is_ours(key, action).await? => {}
        Err(ExecuteError::Kms(KmsError::IncorrectKeyMaterial { .. })) => {
            return Err(Failure::permanent(
                "MaterialMismatch",
                Blocker::MaterialMismatch.message(),
            ));
        }
        Err(ExecuteError::Kms(e)) => return Err(Failure::kms(e)),
    }
    if let Action::ImportMaterial { valid_to } = action {
        status.material_valid_to = valid_to.map(Time);
        status.material_fingerprint = Some(key.import.material.fingerprint().as_str().to_string());
        status.last_import_time = Some(Time(jiff::Timestamp::now()));
    }
    Ok(())
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
            Some(blocker @ Blocker::Waiting(_)) => {
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
        Action::PutKeyPolicy { .. } => ("PolicyUpdated", "applied the key policy".into()),
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
    ctx.metrics.key_observed(
        kind,
        obj.meta().namespace.as_deref().unwrap_or_default(),
        &name,
        status.key_state.as_deref(),
        status.material_valid_to.as_ref().map(|t| t.0),
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
