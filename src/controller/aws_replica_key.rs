//! AwsReplicaKey reconcile: primary → validate → material (the primary's Secret) → find or
//! ReplicateKey → (observe → plan → execute)* in the replica region → status and events;
//! cleanup runs the deletion policy behind a finalizer.

use std::sync::Arc;

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument};

use super::aws_key::FINALIZER;
use super::key_sync::{self, KeySync, Lifecycle, Role, Synced};
use super::{Context, Error, Failure, object_key, secrets, status};
use crate::api::{AwsKey, AwsReplicaKey, AwsReplicaKeyStatus, DeletionPolicy};
use crate::desired;
use crate::kms::Client;
use crate::kms::execute::{self, DeletionOutcome, ImportInput};
use crate::kms::observe::{self, ReadDepth};
use crate::plan::{self, Owner, Ownership};

const KIND: &str = "AwsReplicaKey";

/// Entry point from the controller: apply or clean up behind the finalizer.
#[instrument(skip_all, fields(awsreplicakey = %object_key(&*replica)))]
pub async fn reconcile(replica: Arc<AwsReplicaKey>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let namespace = replica.namespace().unwrap_or_default();
    let api: Api<AwsReplicaKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, replica.clone(), |event| async {
        match event {
            Finalizer::Apply(replica) => apply(&api, &replica, &ctx).await,
            Finalizer::Cleanup(replica) => cleanup(&replica, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&object_key(&*replica));
    } else {
        ctx.metrics.reconciled(KIND, "error", started.elapsed());
    }
    result
}

#[derive(Default)]
struct Progress {
    status: AwsReplicaKeyStatus,
    /// ARN of a replica created in this reconcile.
    created: Option<String>,
    synced: Synced,
}

async fn apply(
    api: &Api<AwsReplicaKey>,
    replica: &AwsReplicaKey,
    ctx: &Context,
) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let mut progress = Progress {
        status: replica.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let outcome = converge(api, replica, ctx, &mut progress).await;
    if let Some(arn) = &progress.created {
        ctx.publish(
            replica,
            EventType::Normal,
            "KeyReplicated",
            format!("replicated the primary into {arn}"),
            "ReplicateKey",
        )
        .await;
    }
    key_sync::finish(
        ctx,
        KIND,
        api,
        replica,
        replica.status.as_ref(),
        progress.status,
        outcome,
        &progress.synced,
        started,
    )
    .await
}

/// Brings the replica to its spec with the primary's material; fills `progress`.
async fn converge(
    api: &Api<AwsReplicaKey>,
    replica: &AwsReplicaKey,
    ctx: &Context,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let spec = &replica.spec;
    let namespace = replica.namespace().unwrap_or_default();

    // The primary: same namespace only (the reference has no namespace field).
    let primaries: Api<AwsKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(primary) = primaries
        .get_opt(&spec.primary_key_ref.name)
        .await
        .map_err(Failure::kube)?
    else {
        return Err(Failure::permanent(
            "PrimaryNotReady",
            format!(
                "the primary AwsKey {namespace}/{} does not exist (yet)",
                spec.primary_key_ref.name
            ),
        ));
    };
    let owner = Owner {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: namespace.clone(),
        name: replica.name_any(),
        uid: replica.uid().unwrap_or_default(),
    };
    let now = ctx.clock.now();
    let template = key_sync::policy_template(ctx, spec.policy.as_ref()).await?;
    let mut desired = desired::desired_replica(spec, &primary.spec, &owner, template.as_ref(), now)
        .map_err(|e| Failure::permanent(e.reason, e.to_string()))?;
    let connection = key_sync::connection(ctx, primary.spec.kms_ref.as_ref()).await?;
    key_sync::check_region(&connection, &spec.region)?;
    key_sync::keep_manageable(ctx, &connection, &spec.region, &mut desired).await;
    key_sync::precheck_policy(&desired, &spec.region)?;

    let primary_status = primary.status.clone().unwrap_or_default();
    let (Some(primary_arn), Some("Enabled")) = (
        primary_status.arn.clone(),
        primary_status.key_state.as_deref(),
    ) else {
        return Err(Failure::permanent(
            "PrimaryNotReady",
            format!(
                "waiting for the primary AwsKey {} to be Enabled (it is {})",
                spec.primary_key_ref.name,
                primary_status
                    .key_state
                    .as_deref()
                    .unwrap_or("not created yet")
            ),
        ));
    };
    progress.status.primary_arn = Some(primary_arn.clone());

    let import_settings =
        desired::import_settings(&primary.spec.key_material, primary.spec.key_spec)
            .map_err(|e| Failure::permanent(e.reason, e.to_string()))?;
    let material = secrets::load_material(
        &ctx.client,
        &namespace,
        &primary.spec.key_material,
        primary.spec.key_spec,
    )
    .await?;
    let client = ctx.kms.client(&connection, &spec.region).await;
    let primary_client = ctx.kms.client(&connection, &primary.spec.region).await;

    let (key_id, restore) = match progress.status.key_id.clone() {
        Some(id) => (id, false),
        None => match find_replica(
            &primary_client,
            &client,
            &primary_arn,
            &primary.uid().unwrap_or_default(),
            &spec.region,
            &owner,
        )
        .await?
        {
            Some(id) => (id, true),
            None => {
                let created =
                    execute::replicate_key(&primary_client, &primary_arn, &spec.region, &desired)
                        .await
                        .map_err(Failure::kms)?;
                progress.status.key_id = Some(created.key_id.clone());
                progress.status.arn = Some(created.arn.clone());
                progress.status.region = Some(spec.region.clone());
                progress.created = Some(created.arn.clone());
                // Record the replica at once: a second ReplicateKey would fail (AlreadyExists).
                status::write(
                    api,
                    &replica.name_any(),
                    replica.status.as_ref(),
                    &progress.status,
                )
                .await
                .map_err(Failure::kube)?;
                info!(arn = %created.arn, "replicated the primary");
                (created.key_id, false)
            }
        },
    };
    let deep_read = ctx.deep_read_due(&owner.uid, replica.meta().generation)
        || key_sync::policy_changed(&desired, &progress.status.key);
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
        expected_fingerprint: primary_status.material_fingerprint.as_deref(),
        gone_advice: "Delete this AwsReplicaKey and apply it again to replicate the primary anew",
        lifecycle: Lifecycle {
            now,
            renew_before: ctx.renew_before(),
            role: Role::Replica {
                primary: &primary_status,
                primary_rotates: primary.spec.key_material.on_change
                    == crate::api::MaterialChangePolicy::Rotate,
            },
        },
        deep_read,
    };
    let result = key_sync::sync(sync, &mut progress.status.key, &mut progress.synced).await;
    let generation = replica.meta().generation;
    key_sync::record_read(
        ctx,
        &owner.uid,
        generation,
        deep_read,
        &result,
        &progress.synced,
    );
    result
}

/// The replica of `primary_arn` that already exists in `region` (listed by the primary), if
/// this AwsReplicaKey may take it: adopted, never duplicated. A replica tagged with the primary
/// AwsKey's uid is adoptable too: some KMS implementations copy the primary's tags to replicas.
async fn find_replica(
    primary_client: &Client,
    client: &Client,
    primary_arn: &str,
    primary_uid: &str,
    region: &str,
    owner: &Owner,
) -> Result<Option<String>, Failure> {
    let Some(primary) = observe::observe(
        primary_client,
        primary_arn,
        ReadDepth {
            metadata: false,
            policy: false,
        },
    )
    .await
    .map_err(Failure::kms)?
    else {
        return Ok(None);
    };
    let Some((_, arn)) = primary.replicas.iter().find(|(r, _)| r == region) else {
        return Ok(None);
    };
    let Some(existing) = observe::observe(
        client,
        arn,
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
    let tagged_by_primary =
        existing.tags.get(plan::OWNER_UID_TAG).map(String::as_str) == Some(primary_uid);
    match plan::ownership(&existing.tags, owner) {
        Ownership::Elsewhere(other) if !tagged_by_primary => Err(Failure::permanent(
            "AdoptionRefused",
            format!(
                "the replica {arn} is owned by {other}; keyfleet never takes a key from another owner"
            ),
        )),
        _ => {
            info!(%arn, "adopting the existing replica");
            Ok(Some(existing.key_id))
        }
    }
}

/// Runs the deletion policy on the replica.
async fn cleanup(replica: &AwsReplicaKey, ctx: &Context) -> Result<Requeue, Error> {
    ctx.forget_deep_read(&replica.uid().unwrap_or_default());
    ctx.metrics.key_observed(
        KIND,
        &replica.namespace().unwrap_or_default(),
        &replica.name_any(),
        None,
        None,
    );
    ctx.metrics
        .reconciled(KIND, "deleted", std::time::Duration::ZERO);
    let status = replica.status.clone().unwrap_or_default();
    let Some(key_id) = status.key_id.clone() else {
        return Ok(Requeue::await_change());
    };
    if replica.spec.deletion_policy == DeletionPolicy::Retain {
        let note = format!(
            "deletionPolicy Retain: replica {} is left in place",
            status.arn.as_deref().unwrap_or(&key_id)
        );
        ctx.publish(replica, EventType::Normal, "KeyRetained", note, "Cleanup")
            .await;
        return Ok(Requeue::await_change());
    }
    // The replica's connection is its primary's; a primary already gone leaves the operator's
    // own credentials.
    let namespace = replica.namespace().unwrap_or_default();
    let primaries: Api<AwsKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let kms_ref = primaries
        .get_opt(&replica.spec.primary_key_ref.name)
        .await
        .map_err(Error::Kube)?
        .and_then(|p| p.spec.kms_ref);
    let connection = match key_sync::connection(ctx, kms_ref.as_ref()).await {
        Ok(c) => c,
        Err(Failure::Permanent { message, .. }) => return Err(Error::Other(message)),
        Err(Failure::Transient(e)) => return Err(e),
    };
    let client = ctx.kms.client(&connection, &replica.spec.region).await;
    if replica.spec.deletion_policy == DeletionPolicy::DeleteMaterial {
        return super::aws_key::delete_material(ctx, replica, &client, &key_id).await;
    }
    match execute::schedule_deletion(&client, &key_id, replica.spec.pending_window_days).await {
        Ok(DeletionOutcome::Scheduled) => {
            let note = format!(
                "replica {key_id} in {} is scheduled for deletion in {} days",
                replica.spec.region, replica.spec.pending_window_days
            );
            ctx.publish(
                replica,
                EventType::Normal,
                "KeyDeletionScheduled",
                note,
                "Cleanup",
            )
            .await;
        }
        Ok(DeletionOutcome::AlreadyGone) => {
            let note = format!("replica {key_id} was already deleted or pending deletion");
            ctx.publish(
                replica,
                EventType::Normal,
                "KeyAlreadyGone",
                note,
                "Cleanup",
            )
            .await;
        }
        Err(e) => {
            let note = format!("cannot schedule deletion of replica {key_id}: {e}");
            ctx.publish(replica, EventType::Warning, e.reason(), note, "Cleanup")
                .await;
            return Err(Error::Kms(e));
        }
    }
    Ok(Requeue::await_change())
}
