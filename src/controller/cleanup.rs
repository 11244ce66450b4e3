//! Cleanup (behind the finalizer, KMS writes): runs the deletion policy of any key kind.
//! Works whatever the spec says: status, region and connection are all it needs.

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;

use super::dereference;
use super::managed_key::ManagedKey;
use super::{Context, Error, Failure};
use crate::api::DeletionPolicy;
use crate::kms::execute::{self, DeletionOutcome};
use crate::kms::observe;
use crate::kms::{Client, KmsError};

pub async fn cleanup<K: ManagedKey>(obj: &K, ctx: &Context) -> Result<Requeue, Error> {
    let meta = obj.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    ctx.forget_deep_read(&uid);
    ctx.metrics.key_observed(
        K::KIND,
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        None,
        None,
    );
    let status = obj.status().cloned().unwrap_or_default();
    if obj.deletion_policy() == DeletionPolicy::Retain {
        let key = status
            .arn
            .as_deref()
            .or(status.key_id.as_deref())
            .unwrap_or("(none)");
        let note = format!("deletionPolicy Retain: KMS key {key} is left in place");
        ctx.publish(obj, EventType::Normal, "KeyRetained", note, "Cleanup")
            .await;
        return Ok(Requeue::await_change());
    }
    let client = match client(obj, ctx).await {
        Ok(client) => client,
        Err(Failure::Blocked(blocked)) => {
            let note = format!("cannot clean up the KMS key: {}", blocked.message);
            ctx.publish(obj, EventType::Warning, blocked.reason, note, "Cleanup")
                .await;
            return Err(Error::CleanupBlocked(blocked));
        }
        Err(Failure::Transient(e)) => return Err(e),
    };
    let key_id = match status.key_id.clone() {
        Some(id) => Some(id),
        None if K::creation_in_doubt(&status) => observe::find_by_owner_uid(&client, &uid)
            .await
            .map_err(Error::Kms)?,
        None => None,
    };
    let Some(key_id) = key_id else {
        return Ok(Requeue::await_change());
    };
    let (outcome, done, verb) = if obj.deletion_policy() == DeletionPolicy::DeleteMaterial {
        let outcome = execute::delete_material(&client, &key_id).await;
        let done = (
            "MaterialDeleted",
            format!(
                "deletionPolicy DeleteMaterial: deleted the imported material of KMS key {key_id}; the key is unusable (PendingImport) until the resource is applied again, which imports the material from the Secret"
            ),
        );
        (outcome, done, "delete the imported material of")
    } else {
        let days = obj.pending_window_days();
        let outcome = execute::schedule_deletion(&client, &key_id, days).await;
        let done = ("KeyDeletionScheduled", obj.deletion_note(&key_id, &status));
        (outcome, done, "schedule deletion of")
    };
    report(ctx, obj, &key_id, outcome, done, verb).await
}

/// The client of the key's region through the connection of its source (for a replica whose
/// primary is gone: the operator's own credentials).
async fn client<K: ManagedKey>(obj: &K, ctx: &Context) -> Result<Client, Failure> {
    let source = obj.cleanup_source(ctx).await?;
    let kms_ref = source.as_ref().and_then(|s| s.spec().kms_ref.as_ref());
    let connection = dereference::connection(ctx, kms_ref).await?;
    Ok(ctx.kms.client(&connection, obj.region()).await)
}

/// One event for the outcome; transient failures are retried quietly, refusals reported.
async fn report<K: ManagedKey>(
    ctx: &Context,
    obj: &K,
    key_id: &str,
    outcome: Result<DeletionOutcome, KmsError>,
    (reason, note): (&'static str, String),
    verb: &str,
) -> Result<Requeue, Error> {
    match outcome {
        Ok(DeletionOutcome::Scheduled) => {
            ctx.publish(obj, EventType::Normal, reason, note, "Cleanup")
                .await;
        }
        Ok(DeletionOutcome::AlreadyGone) => {
            let note = format!("KMS key {key_id} was already deleted or pending deletion");
            ctx.publish(obj, EventType::Normal, "KeyAlreadyGone", note, "Cleanup")
                .await;
        }
        Err(e) if e.is_transient() => return Err(Error::Kms(e)),
        Err(e) => {
            let note = format!("cannot {verb} KMS key {key_id}: {e}");
            ctx.publish(obj, EventType::Warning, e.reason(), note, "Cleanup")
                .await;
            return Err(Error::Kms(e));
        }
    }
    Ok(Requeue::await_change())
}
