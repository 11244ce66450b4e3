//! AwsKey reconcile: connection → validate → material → resolve → (observe → plan → execute)* →
//! status and events; cleanup runs the deletion policy behind a finalizer.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument};

use super::key_sync::{self, KeySync, Lifecycle, Role, Synced};
use super::status;
use super::{Context, Error, Failure, object_key, secrets};
use crate::api::{AwsKey, AwsKeyStatus, DeletionPolicy};
use crate::desired;
use crate::kms::execute::{self, DeletionOutcome, ImportInput};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::{Client, KmsError};
use crate::plan::{self, DesiredKey, Owner, Ownership};

/// Finalizer that guarantees the deletion policy runs before the AwsKey disappears.
pub const FINALIZER: &str = "kms.keyfleet.dev/cleanup";

/// Entry point from the controller: apply or clean up behind the finalizer.
#[instrument(skip_all, fields(awskey = %object_key(&*key)))]
pub async fn reconcile(key: Arc<AwsKey>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let namespace = key.namespace().unwrap_or_default();
    let api: Api<AwsKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, key.clone(), |event| async {
        match event {
            Finalizer::Apply(key) => apply(&api, &key, &ctx).await,
            Finalizer::Cleanup(key) => cleanup(&key, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&object_key(&*key));
    }
    if result.is_err() {
        // Successful reconciles are recorded by apply (ready / not_ready) and cleanup (deleted).
        ctx.metrics.reconciled("AwsKey", "error", started.elapsed());
    }
    result
}

/// What one reconcile found and did, for the status and events.
#[derive(Default)]
struct Progress {
    status: AwsKeyStatus,
    /// ARN of a key created in this reconcile.
    created: Option<String>,
    synced: Synced,
}

async fn apply(api: &Api<AwsKey>, key: &AwsKey, ctx: &Context) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let mut progress = Progress {
        status: key.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let outcome = converge(api, key, ctx, &mut progress).await;
    if let Some(arn) = &progress.created {
        ctx.publish(
            key,
            EventType::Normal,
            "KeyCreated",
            format!("created KMS key {arn} (origin EXTERNAL)"),
            "CreateKey",
        )
        .await;
    }
    key_sync::finish(
        ctx,
        "AwsKey",
        api,
        key,
        key.status.as_ref(),
        progress.status,
        outcome,
        &progress.synced,
        started,
    )
    .await
}

/// Brings KMS to the spec; fills `progress` with what it saw and did.
async fn converge(
    api: &Api<AwsKey>,
    key: &AwsKey,
    ctx: &Context,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let spec = &key.spec;
    let namespace = key.namespace().unwrap_or_default();

    let connection = key_sync::connection(ctx, spec.kms_ref.as_ref()).await?;
    key_sync::check_region(&connection, &spec.region)?;
    let owner = Owner {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: namespace.clone(),
        name: key.name_any(),
        uid: key.uid().unwrap_or_default(),
    };
    let now = ctx.clock.now();
    let template = key_sync::policy_template(ctx, spec.policy.as_ref()).await?;
    let mut desired = desired::desired_key(spec, &owner, template.as_ref(), now)
        .map_err(|e| Failure::permanent(e.reason, e.to_string()))?;
    key_sync::keep_manageable(ctx, &connection, &spec.region, &mut desired).await;
    key_sync::precheck_policy(&desired, &spec.region)?;
    let import_settings = desired::import_settings(&spec.key_material, spec.key_spec)
        .map_err(|e| Failure::permanent(e.reason, e.to_string()))?;
    let material =
        secrets::load_material(&ctx.client, &namespace, &spec.key_material, spec.key_spec).await?;
    let client = ctx.kms.client(&connection, &spec.region).await;

    let deep_read = ctx.deep_read_due(&owner.uid, key.meta().generation)
        || key_sync::policy_changed(&desired, &progress.status.key);
    let (key_id, restore) = match resolve(&client, key, &owner).await? {
        Resolved::Existing { key_id, restore } => (key_id, restore),
        Resolved::Create => (
            create(api, key, &client, &desired, progress, now).await?,
            false,
        ),
    };
    let sync = KeySync {
        client: &client,
        key_id: &key_id,
        region: &spec.region,
        desired: &desired,
        import: ImportInput {
            material: &material,
            algorithm: import_settings.algorithm,
            wrapping_key_spec: import_settings.wrapping_key_spec,
        },
        restore,
        expected_fingerprint: None,
        gone_advice: "Delete this AwsKey (or point adoptKeyArn at a replacement) to continue",
        lifecycle: Lifecycle {
            now,
            renew_before: ctx.renew_before(),
            role: Role::Primary,
        },
        deep_read,
    };
    let result = key_sync::sync(sync, &mut progress.status.key, &mut progress.synced).await;
    key_sync::record_read(
        ctx,
        &owner.uid,
        key.meta().generation,
        deep_read,
        &result,
        &progress.synced,
    );
    if let Some(observed) = &progress.synced.observed {
        progress.status.create_started_at = None;
        progress.status.replicas = status::replicas(observed);
    }
    result
}

/// Which KMS key this AwsKey is.
enum Resolved {
    Existing { key_id: String, restore: bool },
    Create,
}

/// Finds the key: the one in status; an adopted ARN; the key behind the alias when it belongs to
/// this AwsKey (or its previous incarnation); a key created just before a crash; else none.
async fn resolve(client: &Client, key: &AwsKey, owner: &Owner) -> Result<Resolved, Failure> {
    let status = key.status.clone().unwrap_or_default();
    if let Some(key_id) = status.key_id.clone() {
        return Ok(Resolved::Existing {
            key_id,
            restore: false,
        });
    }
    if let Some(arn) = &key.spec.adopt_key_arn {
        desired::adopt_key_region(&key.spec)
            .map_err(|e| Failure::permanent(e.reason, e.message))?;
        return match owned_key(client, arn, owner).await? {
            None => Err(Failure::permanent(
                "AdoptKeyNotFound",
                format!("KMS key {arn} does not exist"),
            )),
            Some((key_id, Ownership::Elsewhere(other))) => Err(Failure::permanent(
                "AdoptionRefused",
                format!(
                    "KMS key {key_id} is owned by {other}; keyfleet never takes a key from another owner"
                ),
            )),
            Some((key_id, _)) => Ok(Resolved::Existing {
                key_id,
                restore: true,
            }),
        };
    }
    if let Some(alias) = &key.spec.alias {
        match owned_key(client, alias, owner).await? {
            Some((key_id, Ownership::Mine | Ownership::PreviousIncarnation)) => {
                return Ok(Resolved::Existing {
                    key_id,
                    restore: true,
                });
            }
            Some((key_id, Ownership::Unowned)) => {
                return Err(Failure::permanent(
                    "AliasInUse",
                    format!(
                        "{alias} already points at KMS key {key_id}, which keyfleet does not manage; set spec.adoptKeyArn to adopt that key, or choose another alias"
                    ),
                ));
            }
            Some((key_id, Ownership::Elsewhere(other))) => {
                return Err(Failure::permanent(
                    "AliasInUse",
                    format!("{alias} already points at KMS key {key_id}, owned by {other}"),
                ));
            }
            None => {}
        }
    }
    if status.create_started_at.is_some()
        && let Some(key_id) = observe::find_by_owner_uid(client, &owner.uid)
            .await
            .map_err(Failure::kms)?
    {
        info!(%key_id, "found the key created before an interrupted reconcile");
        return Ok(Resolved::Existing {
            key_id,
            restore: false,
        });
    }
    Ok(Resolved::Create)
}

/// Describes `key` (id, ARN or alias) and classifies who owns it.
async fn owned_key(
    client: &Client,
    key: &str,
    owner: &Owner,
) -> Result<Option<(String, Ownership)>, Failure> {
    let Some(observed) = observe::observe(
        client,
        key,
        ReadDepth {
            metadata: true,
            policy: false,
        },
    )
    .await
    .map_err(Failure::kms)?
    else {
        return Ok(None);
    };
    let ownership = plan::ownership(&observed.tags, owner);
    Ok(Some((observed.key_id, ownership)))
}

/// Records the intent, creates the key, records its id — so that a crash at any point leaves
/// either no key or a key this AwsKey finds again.
async fn create(
    api: &Api<AwsKey>,
    key: &AwsKey,
    client: &Client,
    desired: &DesiredKey,
    progress: &mut Progress,
    now: jiff::Timestamp,
) -> Result<String, Failure> {
    let name = key.name_any();
    progress.status.create_started_at = Some(Time(now));
    status::write(api, &name, key.status.as_ref(), &progress.status)
        .await
        .map_err(Failure::kube)?;
    let written = progress.status.clone();

    let created = match execute::create_key(client, desired).await {
        Ok(created) => created,
        Err(e) => {
            // KMS answered with an error: nothing was created, so there is nothing to find
            // later. Only a timeout or 5xx leaves it open whether the key exists.
            if !matches!(e, KmsError::Unavailable { .. }) {
                progress.status.create_started_at = None;
            }
            return Err(Failure::kms(e));
        }
    };
    progress.status.key_id = Some(created.key_id.clone());
    progress.status.arn = Some(created.arn.clone());
    progress.status.region = Some(key.spec.region.clone());
    progress.created = Some(created.arn.clone());
    status::write(api, &name, Some(&written), &progress.status)
        .await
        .map_err(Failure::kube)?;
    info!(key_id = %created.key_id, "created KMS key");
    Ok(created.key_id)
}

/// Runs the deletion policy. Works whatever the spec says: only status, region and connection
/// are needed.
async fn cleanup(key: &AwsKey, ctx: &Context) -> Result<Requeue, Error> {
    ctx.forget_deep_read(&key.uid().unwrap_or_default());
    ctx.metrics.key_observed(
        "AwsKey",
        &key.namespace().unwrap_or_default(),
        &key.name_any(),
        None,
        None,
    );
    ctx.metrics
        .reconciled("AwsKey", "deleted", std::time::Duration::ZERO);
    let status = key.status.clone().unwrap_or_default();
    if key.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.publish(
            key,
            EventType::Normal,
            "KeyRetained",
            format!(
                "deletionPolicy Retain: KMS key {} is left in place",
                status.key_id.as_deref().unwrap_or("(none)")
            ),
            "Cleanup",
        )
        .await;
        return Ok(Requeue::await_change());
    }
    let connection = match key_sync::connection(ctx, key.spec.kms_ref.as_ref()).await {
        Ok(c) => c,
        Err(Failure::Permanent { reason, message }) => {
            ctx.publish(
                key,
                EventType::Warning,
                &reason,
                format!("cannot schedule deletion of the KMS key: {message}"),
                "Cleanup",
            )
            .await;
            return Err(Error::Other(message));
        }
        Err(Failure::Transient(e)) => return Err(e),
    };
    let client = ctx.kms.client(&connection, &key.spec.region).await;
    let key_id = match status.key_id.clone() {
        Some(id) => Some(id),
        None if status.create_started_at.is_some() => {
            observe::find_by_owner_uid(&client, &key.uid().unwrap_or_default())
                .await
                .map_err(Error::Kms)?
        }
        None => None,
    };
    let Some(key_id) = key_id else {
        return Ok(Requeue::await_change());
    };
    if key.spec.deletion_policy == DeletionPolicy::DeleteMaterial {
        return delete_material(ctx, key, &client, &key_id).await;
    }
    match execute::schedule_deletion(&client, &key_id, key.spec.pending_window_days).await {
        Ok(DeletionOutcome::Scheduled) => {
            ctx.publish(key, EventType::Normal, "KeyDeletionScheduled", if status.replicas.is_empty() {
                format!("KMS key {key_id} is scheduled for deletion in {} days; re-apply the AwsKey within that window to restore it", key.spec.pending_window_days)
            } else {
                format!("KMS key {key_id} is scheduled for deletion in {} days; AWS keeps it in PendingReplicaDeletion until its {} replica(s) are deleted", key.spec.pending_window_days, status.replicas.len())
            }, "Cleanup").await;
        }
        Ok(DeletionOutcome::AlreadyGone) => {
            ctx.publish(
                key,
                EventType::Normal,
                "KeyAlreadyGone",
                format!("KMS key {key_id} was already deleted or pending deletion"),
                "Cleanup",
            )
            .await;
        }
        Err(e) if e.is_transient() => return Err(Error::Kms(e)),
        Err(e) => {
            ctx.publish(
                key,
                EventType::Warning,
                e.reason(),
                format!("cannot schedule deletion of KMS key {key_id}: {e}"),
                "Cleanup",
            )
            .await;
            return Err(Error::Kms(e));
        }
    }
    Ok(Requeue::await_change())
}

/// `deletionPolicy: DeleteMaterial`: crypto-shreds the key by deleting its imported material;
/// the key stays (PendingImport) and re-applying the AwsKey imports the material again.
pub(super) async fn delete_material<K: kube::Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    client: &Client,
    key_id: &str,
) -> Result<Requeue, Error> {
    match execute::delete_material(client, key_id).await {
        Ok(DeletionOutcome::Scheduled) => {
            let note = format!(
                "deletionPolicy DeleteMaterial: deleted the imported material of KMS key {key_id}; the key is unusable (PendingImport) until the resource is applied again, which imports the material from the Secret"
            );
            ctx.publish(obj, EventType::Normal, "MaterialDeleted", note, "Cleanup")
                .await;
        }
        Ok(DeletionOutcome::AlreadyGone) => {
            let note = format!("KMS key {key_id} was already deleted");
            ctx.publish(obj, EventType::Normal, "KeyAlreadyGone", note, "Cleanup")
                .await;
        }
        Err(e) if e.is_transient() => return Err(Error::Kms(e)),
        Err(e) => {
            let note = format!("cannot delete the imported material of KMS key {key_id}: {e}");
            ctx.publish(obj, EventType::Warning, e.reason(), note, "Cleanup")
                .await;
            return Err(Error::Kms(e));
        }
    }
    Ok(Requeue::await_change())
}
