//! Report step (writes status and events): the Ready verdict of a finished reconcile, one event
//! per KMS change, metrics, and the status write.

use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;

use super::managed_key::ManagedKey;
use super::reconcile::{Outcome, Queued};
use super::sync::Synced;
use super::{Category, Context, Error, Failure, status};
use crate::plan::{Action, Blocker};
use crate::policy;

/// The Ready condition a finished reconcile leads to, and when to look again.
pub struct Verdict {
    pub ready: bool,
    /// kstatus: not Ready until someone changes the spec, the Secret or AWS.
    pub stalled: bool,
    /// kstatus: not Ready yet, waiting for something that clears on its own.
    pub reconciling: bool,
    pub reason: &'static str,
    pub message: String,
    pub requeue: Duration,
    /// The event when Ready changes is a Warning (else Normal): not Ready for a reason worth a
    /// look, not a key at work or merely waiting for its turn.
    pub warning: bool,
}

/// The verdict for an outcome; a transient failure gives no verdict (the condition stays as it
/// was) and comes back as the error to retry.
fn verdict(
    outcome: Result<(), Failure>,
    synced: &Synced,
    key_state: Option<&str>,
    ctx: &Context,
    waiter: &str,
) -> Result<Verdict, Error> {
    let settings = &ctx.settings;
    if !synced.blocker.as_ref().is_some_and(waits) || outcome.is_err() {
        ctx.stop_waiting(waiter);
    }
    let verdict = match outcome {
        Ok(()) => match &synced.blocker {
            None if key_state == Some("Disabled") => Verdict {
                ready: true,
                stalled: false,
                reconciling: false,
                reason: "KeyDisabled",
                message: "the key is disabled as requested (spec.enabled: false); material and spec are applied".into(),
                requeue: settings.resync_interval,
                warning: false,
            },
            None => Verdict {
                ready: true,
                stalled: false,
                reconciling: false,
                reason: "KeyReady",
                message: "the key is Enabled, its material is imported and the spec is applied"
                    .into(),
                requeue: settings.resync_interval,
                warning: false,
            },
            Some(blocker) => Verdict {
                ready: false,
                stalled: !waits(blocker),
                reconciling: waits(blocker),
                reason: blocker.reason(),
                message: blocker.message(),
                requeue: if waits(blocker) {
                    ctx.next_wait(waiter)
                } else {
                    settings.blocked_recheck_interval
                },
                warning: true,
            },
        },
        Err(Failure::Blocked(blocked)) => Verdict {
            ready: false,
            stalled: blocked.category != Category::Waiting,
            reconciling: blocked.category == Category::Waiting,
            reason: blocked.reason,
            message: blocked.message,
            requeue: settings.blocked_recheck_interval,
            warning: true,
        },
        Err(Failure::Transient(e)) => return Err(e),
    };
    Ok(verdict)
}

/// Blockers that clear without anyone changing anything (a key state, a rotation).
fn waits(blocker: &Blocker) -> bool {
    matches!(blocker, Blocker::Waiting(_) | Blocker::RotationPending)
}

/// Finishes a reconcile of any key kind: events for the KMS changes, the Ready verdict, metrics
/// and the status write. A transient failure keeps the condition but persists what was learned
/// (a new key id above all) and is returned for the error policy's backoff.
pub async fn finish<K: ManagedKey>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    status: K::Status,
    outcome: Result<(), Failure>,
    synced: &Synced,
) -> Result<(Outcome, Requeue), Error> {
    let name = obj.meta().name.clone().unwrap_or_default();
    publish_actions(ctx, obj, &synced.executed).await;
    let waiter = super::reconcile::object_key(obj);
    let verdict = match verdict(outcome, synced, status.key_state.as_deref(), ctx, &waiter) {
        Ok(verdict) => verdict,
        Err(e) => {
            let version = status::write(api, &name, obj.status(), &status)
                .await
                .map_err(Error::Kube)?;
            ctx.written.wrote(obj, version);
            return Err(e);
        }
    };
    conclude(ctx, api, obj, status, verdict, synced.expiring.as_deref()).await
}

/// Reports a key waiting for its turn at its Region's import quota, with nothing created yet:
/// not Ready, reconciling, and back when its turn comes.
pub async fn queued<K: ManagedKey>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    status: K::Status,
    queued: &Queued,
) -> Result<(Outcome, Requeue), Error> {
    ctx.stop_waiting(&super::reconcile::object_key(obj));
    let verdict = Verdict {
        ready: false,
        stalled: false,
        reconciling: true,
        reason: "ImportQueued",
        message: format!(
            "waiting for its turn at the import quota: {} keys ahead in line for GetParametersForImport in {} under this connection's account (about {} s); the KMS key is created and its material imported when the turn comes",
            queued.ahead,
            queued.region,
            queued.wait.as_secs().max(1)
        ),
        requeue: queued.wait,
        warning: false,
    };
    conclude(ctx, api, obj, status, verdict, None).await
}

/// Records a verdict: metrics, the Ready and progress conditions, the status write, and an
/// event when Ready changed.
async fn conclude<K: ManagedKey>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    mut status: K::Status,
    verdict: Verdict,
    expiring: Option<&[crate::plan::ExpiringMaterial]>,
) -> Result<(Outcome, Requeue), Error> {
    let name = obj.meta().name.clone().unwrap_or_default();
    let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
    ctx.metrics.key_observed(
        K::KIND,
        namespace,
        &name,
        status.key_state.as_deref(),
        status.material_valid_to.as_ref().map(|t| t.0),
    );
    ctx.metrics
        .key_ready(K::KIND, namespace, &name, verdict.ready, verdict.reason);
    let changed = status::set_ready(
        &mut status,
        verdict.ready,
        verdict.reason,
        &verdict.message,
        obj.meta().generation,
    );
    status::set_progress(
        &mut status,
        verdict.stalled,
        verdict.reconciling,
        verdict.reason,
        &verdict.message,
        obj.meta().generation,
    );
    let warn = expiring
        .and_then(|expiring| status::set_expiring(&mut status, expiring, obj.meta().generation));
    let version = status::write(api, &name, obj.status(), &status)
        .await
        .map_err(Error::Kube)?;
    let written = version.is_some();
    ctx.written.wrote(obj, version);
    // Where each reconcile ends and when the next comes: tests read it as the proof that a
    // refused object rests instead of looping.
    tracing::debug!(
        reason = verdict.reason,
        status_written = written,
        requeue_in_s = verdict.requeue.as_secs(),
        "reconciled"
    );
    if changed {
        publish_verdict(ctx, obj, &verdict).await;
    }
    if let Some(message) = warn {
        let reason = crate::api::conditions::MATERIAL_WILL_EXPIRE;
        ctx.publish(obj, EventType::Warning, reason, message, "Reconcile")
            .await;
    }
    let outcome = if verdict.ready {
        Outcome::Ready
    } else {
        Outcome::NotReady
    };
    Ok((outcome, Requeue::requeue(verdict.requeue)))
}

/// Publishes one Normal event per KMS change.
async fn publish_actions<K: ManagedKey>(ctx: &Context, obj: &K, executed: &[Action]) {
    for action in executed {
        let (reason, note) = describe_action(action);
        ctx.publish(obj, EventType::Normal, reason, note, action.name())
            .await;
    }
}

/// Publishes the Ready transition.
async fn publish_verdict<K: ManagedKey>(ctx: &Context, obj: &K, verdict: &Verdict) {
    let type_ = if verdict.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    ctx.publish(
        obj,
        type_,
        verdict.reason,
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
        Action::ImportRetainedMaterial {
            key_material_id,
            valid_to,
            ..
        } => (
            "RetainedMaterialImported",
            match valid_to {
                Some(t) => format!(
                    "imported retained material {key_material_id} (EXISTING_KEY_MATERIAL), valid to {t}"
                ),
                None => format!(
                    "imported retained material {key_material_id} (EXISTING_KEY_MATERIAL; does not expire)"
                ),
            },
        ),
        Action::DeleteMaterial { key_material_id } => (
            "MaterialRetired",
            format!(
                "deleted NON_CURRENT material {key_material_id} (keyMaterial.retire): what it encrypted no longer decrypts, and KMS keeps the key PendingImport without it"
            ),
        ),
    }
}
