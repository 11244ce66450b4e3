//! AwsKey reconcile: connection → validate → material → resolve → (observe → plan → execute)* →
//! status and events; cleanup runs the deletion policy behind a finalizer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use tracing::{info, instrument};

use super::status;
use super::{Context, Error, Failure, object_key, secrets};
use crate::api::{AwsKey, AwsKeyStatus, AwsKms, DeletionPolicy, LocalObjectRef};
use crate::kms::execute::{self, DeletionOutcome, ExecuteError, ImportInput};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::{Client, Connection, KmsError};
use crate::material::KeyMaterial;
use crate::plan::{
    self, Action, AliasTarget, Blocker, DesiredKey, KeyState, MaterialFacts, Owner, Ownership,
};
use crate::validate;

/// Finalizer that guarantees the deletion policy runs before the AwsKey disappears.
pub const FINALIZER: &str = "kms.keyfleet.dev/cleanup";

/// Rounds of observe → plan → execute in one reconcile (each round may unlock the next, e.g.
/// CancelKeyDeletion → EnableKey).
const MAX_ROUNDS: usize = 4;

/// Entry point from the controller: apply or clean up behind the finalizer.
#[instrument(skip_all, fields(awskey = %object_key(&*key)))]
pub async fn reconcile(key: Arc<AwsKey>, ctx: Arc<Context>) -> Result<Requeue, Error> {
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
    result
}

/// What one reconcile found and did, for the status and events.
#[derive(Default)]
struct Progress {
    status: AwsKeyStatus,
    /// ARN of a key created in this reconcile.
    created: Option<String>,
    executed: Vec<Action>,
    blocker: Option<Blocker>,
}

async fn apply(api: &Api<AwsKey>, key: &AwsKey, ctx: &Context) -> Result<Requeue, Error> {
    let mut progress = Progress {
        status: key.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let outcome = converge(api, key, ctx, &mut progress).await;
    let generation = key.metadata.generation;

    // Events for every change made in KMS.
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
    for action in &progress.executed {
        let (reason, note) = describe_action(action);
        ctx.publish(key, EventType::Normal, reason, note, action.name())
            .await;
    }

    let (ready, reason, message, requeue) = match &outcome {
        Ok(()) => match &progress.blocker {
            None if progress.status.key_state.as_deref() == Some("Disabled") => (
                true,
                "KeyDisabled".to_string(),
                "the key is disabled as requested (spec.enabled: false); material and spec are applied".to_string(),
                Requeue::requeue(ctx.settings.resync_interval),
            ),
            None => (
                true,
                "KeyReady".to_string(),
                "the key is Enabled, its material is imported and the spec is applied".to_string(),
                Requeue::requeue(ctx.settings.resync_interval),
            ),
            Some(blocker @ Blocker::Waiting(_)) => {
                (false, blocker.reason().to_string(), blocker.message(), Requeue::requeue(Duration::from_secs(10)))
            }
            Some(blocker) => (
                false,
                blocker.reason().to_string(),
                blocker.message(),
                Requeue::requeue(ctx.settings.blocked_recheck_interval),
            ),
        },
        Err(Failure::Permanent { reason, message }) => {
            (false, reason.clone(), message.clone(), Requeue::requeue(ctx.settings.blocked_recheck_interval))
        }
        Err(Failure::Transient(_)) => {
            // Keep the previous condition, but persist what was learned (a new key id above all).
            status::write(api, key, &progress.status).await.map_err(Error::Kube)?;
            return match outcome {
                Err(Failure::Transient(e)) => Err(e),
                _ => Err(Error::Other("unreachable".into())),
            };
        }
    };

    let changed = status::set_ready(&mut progress.status, ready, &reason, &message, generation);
    status::write(api, key, &progress.status)
        .await
        .map_err(Error::Kube)?;
    if changed {
        let type_ = if ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.publish(key, type_, &reason, message.clone(), "Reconcile")
            .await;
        info!(ready, %reason, "Ready changed");
    }
    Ok(requeue)
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

    let connection = connection(ctx, spec.kms_ref.as_ref()).await?;
    if !connection.spec.allows_region(&spec.region) {
        return Err(Failure::permanent(
            "RegionNotAllowed",
            format!(
                "region {} is not allowed by {} (allowed: {})",
                spec.region,
                connection.describe(),
                connection.spec.regions.join(", ")
            ),
        ));
    }

    let owner = Owner {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: namespace.clone(),
        name: key.name_any(),
        uid: key.uid().unwrap_or_default(),
    };
    let desired = validate::desired_key(spec, &owner, jiff::Timestamp::now())
        .map_err(|e| Failure::permanent(e.reason, e.to_string()))?;
    let import_settings = validate::import_settings(&spec.key_material, spec.key_spec)
        .map_err(|e| Failure::permanent(e.reason, e.to_string()))?;
    let material =
        secrets::load_material(&ctx.client, &namespace, &spec.key_material, spec.key_spec).await?;
    let fingerprint = material.fingerprint();
    let client = ctx.kms.client(&connection, &spec.region).await;

    let (key_id, mut restore) = match resolve(&client, key, &owner).await? {
        Resolved::Existing { key_id, restore } => (key_id, restore),
        Resolved::Create => (create(api, key, &client, &desired, progress).await?, false),
    };

    let import = ImportInput {
        material: &material,
        algorithm: import_settings.algorithm,
        wrapping_key_spec: import_settings.wrapping_key_spec,
    };
    let depth = ReadDepth {
        metadata: true,
        policy: desired.policy.is_some(),
    };
    for _ in 0..MAX_ROUNDS {
        let Some(mut observed) = observe::observe(&client, &key_id, depth)
            .await
            .map_err(Failure::kms)?
        else {
            return Err(Failure::permanent(
                "KeyGone",
                format!(
                    "KMS key {key_id} no longer exists in {}; keyfleet does not replace it with a new key because consumers hold its ARN. Delete this AwsKey (or point adoptKeyArn at a replacement) to continue",
                    spec.region
                ),
            ));
        };
        if observed.material_expires && observed.valid_to.is_none() {
            // Some KMS implementations (LocalStack) report the expiration model without the
            // date: fall back to the expiry keyfleet imported with.
            observed.valid_to = progress.status.material_valid_to.as_ref().map(|t| t.0);
        }
        status::record_observed(&mut progress.status, &observed, &spec.region);
        progress.status.create_started_at = None;
        if progress.status.material_fingerprint.is_none()
            && observed.state != KeyState::PendingImport
        {
            // An adopted or recovered key that already holds material: remember what the
            // Secret holds now, so a later change of the Secret is caught.
            progress.status.material_fingerprint = Some(fingerprint.as_str().to_string());
        }
        let alias_target = alias_target(&client, &desired, &observed).await?;
        let facts = MaterialFacts {
            secret_fingerprint: fingerprint.as_str(),
            imported_fingerprint: progress.status.material_fingerprint.as_deref(),
        };
        let plan = plan::plan_key(&desired, &observed, &facts, alias_target.as_ref(), restore);
        restore = false;
        if plan.actions.is_empty() {
            progress.blocker = plan.blocker;
            return Ok(());
        }
        for action in &plan.actions {
            run_action(&client, &key_id, action, &import, &material, progress).await?;
        }
    }
    Err(Failure::Transient(Error::Other(format!(
        "key {key_id} did not settle within {MAX_ROUNDS} rounds; retrying"
    ))))
}

async fn run_action(
    client: &Client,
    key_id: &str,
    action: &Action,
    import: &ImportInput<'_>,
    material: &KeyMaterial,
    progress: &mut Progress,
) -> Result<(), Failure> {
    match execute::execute(client, key_id, action, import).await {
        Ok(()) => {}
        Err(ExecuteError::Material(e)) => {
            return Err(Failure::permanent(e.reason(), e.to_string()));
        }
        Err(ExecuteError::Kms(KmsError::IncorrectKeyMaterial { .. })) => {
            return Err(Failure::permanent(
                "MaterialMismatch",
                Blocker::MaterialMismatch.message(),
            ));
        }
        Err(ExecuteError::Kms(e)) => return Err(Failure::kms(e)),
    }
    if let Action::ImportMaterial { valid_to } = action {
        progress.status.material_valid_to = valid_to.map(Time);
        progress.status.material_fingerprint = Some(material.fingerprint().as_str().to_string());
        progress.status.last_import_time = Some(Time(jiff::Timestamp::now()));
    }
    progress.executed.push(action.clone());
    Ok(())
}

/// The AwsKms named by the key, or the operator's own credentials.
async fn connection(
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

/// Which KMS key this AwsKey is.
enum Resolved {
    Existing { key_id: String, restore: bool },
    Create,
}

/// Finds the key: the one in status; an adopted ARN; the key behind the alias when it belongs to
/// this AwsKey (or its previous incarnation); a key created just before a crash; else none.
async fn resolve(client: &Client, key: &AwsKey, owner: &Owner) -> Result<Resolved, Failure> {
    let status = key.status.clone().unwrap_or_default();
    if let Some(key_id) = status.key_id {
        return Ok(Resolved::Existing {
            key_id,
            restore: false,
        });
    }
    if let Some(arn) = &key.spec.adopt_key_arn {
        validate::adopt_key_region(&key.spec)
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
) -> Result<String, Failure> {
    progress.status.create_started_at = Some(Time(jiff::Timestamp::now()));
    status::write(api, key, &progress.status)
        .await
        .map_err(Failure::kube)?;
    let mut written = key.clone();
    written.status = Some(progress.status.clone());

    let created = execute::create_key(client, desired)
        .await
        .map_err(Failure::kms)?;
    progress.status.key_id = Some(created.key_id.clone());
    progress.status.arn = Some(created.arn.clone());
    progress.status.region = Some(key.spec.region.clone());
    progress.created = Some(created.arn.clone());
    status::write(api, &written, &progress.status)
        .await
        .map_err(Failure::kube)?;
    info!(key_id = %created.key_id, "created KMS key");
    Ok(created.key_id)
}

/// Where the desired alias points, when it is not on this key already.
async fn alias_target(
    client: &Client,
    desired: &DesiredKey,
    observed: &plan::ObservedKey,
) -> Result<Option<AliasTarget>, Failure> {
    let Some(alias) = &desired.alias else {
        return Ok(None);
    };
    if observed.aliases.contains(alias) {
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

/// Runs the deletion policy. Works whatever the spec says: only status, region and connection
/// are needed.
async fn cleanup(key: &AwsKey, ctx: &Context) -> Result<Requeue, Error> {
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
    let connection = match connection(ctx, key.spec.kms_ref.as_ref()).await {
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
    let key_id = match status.key_id {
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
    match execute::schedule_deletion(&client, &key_id, key.spec.pending_window_days).await {
        Ok(DeletionOutcome::Scheduled) => {
            ctx.publish(key, EventType::Normal, "KeyDeletionScheduled", format!("KMS key {key_id} is scheduled for deletion in {} days; re-apply the AwsKey within that window to restore it", key.spec.pending_window_days), "Cleanup").await;
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
