//! Cleanup (behind the finalizer, KMS writes): runs the deletion policy of any key kind, through
//! the connection recorded in status, after checking that the key is still this object's.
//! Works whatever the spec says: status, region and connection are all it needs.

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;

use super::dereference;
use super::managed_key::ManagedKey;
use super::{Blocked, Category, Context, Error, Failure};
use crate::api::{DeletionPolicy, effective_deletion_policy};
use crate::kms::execute::{self, DeletionOutcome};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::{Client, Connection, KmsError, Requester};
use crate::plan::Owner;
use crate::policy::KeyIdentity;
use crate::tenancy::{self, Claim};

pub async fn cleanup<K: ManagedKey>(obj: &K, ctx: &Context) -> Result<Requeue, Error> {
    let meta = obj.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    ctx.forget(&uid);
    ctx.metrics.key_observed(
        K::KIND,
        &namespace,
        meta.name.as_deref().unwrap_or_default(),
        None,
        None,
    );
    let status = obj.status().cloned().unwrap_or_default();
    let adopted = status.adopted == Some(true);
    let facts = dereference::namespace_facts(ctx, &namespace)
        .await
        .map_err(into_error)?;
    let policy = effective_deletion_policy(
        obj.deletion_policy(),
        adopted,
        facts.default_deletion_policy.as_deref(),
        ctx.settings.default_deletion_policy,
    );
    if policy == DeletionPolicy::Retain {
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
    let (connection, client) = match client(obj, &status, ctx).await {
        Ok(found) => found,
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

    // Ownership is read again right before the destructive call.
    let depth = ReadDepth {
        metadata: true,
        policy: false,
    };
    let Some(observed) = observe::observe(&client, &key_id, depth)
        .await
        .map_err(Error::Kms)?
    else {
        return gone(ctx, obj, &key_id, status.arn.as_deref(), &connection).await;
    };
    let owner = Owner {
        cluster: ctx.settings.cluster_id.clone(),
        namespace,
        name: meta.name.clone().unwrap_or_default(),
        uid,
    };
    let claim = if adopted {
        Claim::Adopted
    } else {
        Claim::Recorded
    };
    if let Err(refusal) = tenancy::may_modify(&key_id, &observed.tags, &owner, &claim) {
        let note = format!(
            "{}; the finalizer is released without touching the key",
            refusal.message
        );
        ctx.publish(obj, EventType::Warning, refusal.reason, note, "Cleanup")
            .await;
        return Ok(Requeue::await_change());
    }

    let (outcome, done, verb) = if policy == DeletionPolicy::DeleteMaterial {
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

fn into_error(failure: Failure) -> Error {
    match failure {
        Failure::Transient(e) => e,
        Failure::Blocked(blocked) => Error::CleanupBlocked(blocked),
    }
}

/// The connection recorded in status (cleanup never guesses), else the one the object names
/// now; and the client of the key's region through it.
async fn client<K: ManagedKey>(
    obj: &K,
    status: &K::Status,
    ctx: &Context,
) -> Result<(Connection, Client), Failure> {
    let connection = match &status.connection {
        Some(name) => dereference::connection_named(ctx, name).await?,
        None => {
            let source = obj.cleanup_source(ctx).await?;
            let kms_ref = source.as_ref().and_then(|s| s.spec().kms_ref.as_ref());
            dereference::connection(ctx, kms_ref).await?
        }
    };
    let client = ctx
        .kms
        .client(&connection, obj.region(), &Requester::of(obj))
        .await;
    Ok((connection, client))
}

/// KMS does not know the key. That proves it gone only when the key's ARN is in the account the
/// connection reaches; otherwise the finalizer stays and the mismatch is reported.
async fn gone<K: ManagedKey>(
    ctx: &Context,
    obj: &K,
    key_id: &str,
    arn: Option<&str>,
    connection: &Connection,
) -> Result<Requeue, Error> {
    let key_account = arn
        .and_then(KeyIdentity::from_arn)
        .map(|key| key.account_id);
    let connection_account = match connection.account() {
        Some(account) => Some(account),
        None => ctx
            .kms
            .caller(connection, obj.region(), &Requester::of(obj))
            .await
            .map(|c| c.account_id),
    };
    if key_account.is_some() && key_account == connection_account {
        let note = format!("KMS key {key_id} was already deleted");
        ctx.publish(obj, EventType::Normal, "KeyAlreadyGone", note, "Cleanup")
            .await;
        return Ok(Requeue::await_change());
    }
    let blocked = Blocked {
        reason: "KeyNotFoundInConnectionAccount",
        category: Category::Reference,
        message: format!(
            "KMS key {} is not found through {}, which reaches account {}; the key may still exist. Restore the connection the key was created with, or remove the finalizer by hand once the key is dealt with",
            arn.unwrap_or(key_id),
            connection.describe(),
            connection_account.as_deref().unwrap_or("(unknown)")
        ),
    };
    ctx.publish(
        obj,
        EventType::Warning,
        blocked.reason,
        blocked.message.clone(),
        "Cleanup",
    )
    .await;
    Err(Error::CleanupBlocked(blocked))
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
