//! Reconcile: the one pipeline every key kind runs — dereference → desired → locate → sync
//! (observe → plan → execute) → report — with cleanup behind a finalizer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource};
use tracing::instrument;

use super::context::{ImportTurn, KmsRead};
use super::dereference::{Dereferenced, dereference};
use super::managed_key::{FINALIZER, ManagedKey, Scope};
use super::sync::{self, KeySync, Role, Synced};
use super::{Context, Error, Failure, cleanup, report};
use crate::api::{KmsKeyStatus, effective_deletion_policy};
use crate::desired::{self, ImportSettings};
use crate::kms::execute::ImportInput;
use crate::kms::{Connection, Requester};
use crate::metrics::Metrics;
use crate::plan::{Blocker, DesiredKey, Owner};
use crate::policy;
use crate::tenancy;

/// How a reconcile ended (the `result` label of the reconcile metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    NotReady,
    Deleted,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ready => "ready",
            Outcome::NotReady => "not_ready",
            Outcome::Deleted => "deleted",
            Outcome::Error => "error",
        }
    }
}

/// Times one reconcile and records it when dropped, whatever path it ended on.
struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    started: Instant,
    outcome: Mutex<Outcome>,
}

impl<'a> ReconcileTimer<'a> {
    fn start(metrics: &'a Metrics, kind: &'static str) -> Self {
        ReconcileTimer {
            metrics,
            kind,
            started: Instant::now(),
            outcome: Mutex::new(Outcome::Error),
        }
    }

    fn set(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let outcome = *self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        self.metrics
            .reconciled(self.kind, outcome.as_str(), self.started.elapsed());
    }
}

/// `kind/namespace/name`: the object's identity in logs and backoff counters.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Entry point from the controller: apply or clean up behind the finalizer.
#[instrument(skip_all, fields(object = %object_key(&*obj)))]
pub async fn reconcile<K: ManagedKey>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let timer = ReconcileTimer::start(&ctx.metrics, K::KIND);
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    // Never from a copy older than this instance's own last status write.
    let Some(obj) = ctx.written.fresh(&api, obj).await.map_err(Error::Kube)? else {
        timer.set(Outcome::Deleted);
        return Ok(Requeue::await_change());
    };
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Finalizer::Apply(obj) => {
                let (outcome, requeue) = apply(&api, &obj, &ctx).await?;
                timer.set(outcome);
                Ok(requeue)
            }
            Finalizer::Cleanup(obj) => {
                let requeue = cleanup::cleanup(&*obj, &ctx).await?;
                timer.set(Outcome::Deleted);
                Ok(requeue)
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&object_key(&*obj));
    }
    result
}

/// Brings KMS to the object's spec, then reports.
async fn apply<K: ManagedKey>(
    api: &Api<K>,
    obj: &K,
    ctx: &Context,
) -> Result<(Outcome, Requeue), Error> {
    let mut status = obj.status().cloned().unwrap_or_default();
    let mut synced = Synced::default();
    let mut created = None;
    let outcome = match converge(api, obj, ctx, &mut status, &mut synced, &mut created).await {
        Ok(Converged::Later(wait)) => return Ok(first_check_later(ctx, obj, wait)),
        Ok(Converged::Queued(queued)) => {
            return report::queued(ctx, api, obj, status, &queued).await;
        }
        Ok(Converged::Synced) => Ok(()),
        Err(failure) => Err(failure),
    };
    if let Some(arn) = &created {
        let (reason, action) = K::CREATED;
        ctx.publish(obj, EventType::Normal, reason, K::created_note(arn), action)
            .await;
    }
    report::finish(ctx, api, obj, status, outcome, &synced).await
}

/// How far a reconcile went.
enum Converged {
    /// Synced with KMS (and what it saw is in the status).
    Synced,
    /// Nothing read: the key was Ready and nothing changed; its first check after the start comes
    /// after this wait ([`Context::read_due`]).
    Later(std::time::Duration),
    /// Nothing created yet: the key waits for its turn at the import quota
    /// ([`Context::import_turn`]).
    Queued(Queued),
}

/// A key waiting for its turn to be created and imported into: `ahead` keys before it in line
/// for GetParametersForImport in `region`, its turn in about `wait`.
pub struct Queued {
    pub region: String,
    pub ahead: usize,
    pub wait: std::time::Duration,
}

/// A key whose first check after a start comes later: nothing to write, the Ready verdict of its
/// status stands (and its metrics say so); requeued for the check.
fn first_check_later<K: ManagedKey>(
    ctx: &Context,
    obj: &K,
    wait: std::time::Duration,
) -> (Outcome, Requeue) {
    let meta = obj.meta();
    let (namespace, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    if let Some(status) = obj.status() {
        ctx.metrics.key_observed(
            K::KIND,
            namespace,
            name,
            status.key_state.as_deref(),
            status.material_valid_to.as_ref().map(|t| t.0),
        );
        let ready = crate::api::conditions::find_condition(
            &status.conditions,
            crate::api::conditions::READY,
        );
        let reason = match ready.map(|c| c.reason.as_str()) {
            Some("KeyDisabled") => "KeyDisabled",
            _ => "KeyReady",
        };
        ctx.metrics
            .key_ready(K::KIND, namespace, name, true, reason);
        tracing::debug!(
            reason,
            status_written = false,
            requeue_in_s = wait.as_secs(),
            "reconciled"
        );
    }
    (Outcome::Ready, Requeue::requeue(wait))
}

/// The pipeline; fills `status`, `synced` and `created` with what it saw and did.
async fn converge<K: ManagedKey>(
    api: &Api<K>,
    obj: &K,
    ctx: &Context,
    status: &mut K::Status,
    synced: &mut Synced,
    created: &mut Option<String>,
) -> Result<Converged, Failure> {
    let meta = obj.meta();
    let was_ready = ready_at(status, meta.generation);
    let inputs = dereference(obj, ctx).await?;
    K::record_inputs(status, &inputs);
    let owner = Owner {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    };
    let now = ctx.clock.now();
    let (desired, import) = desired(obj, &inputs, &owner, now, ctx).await?;
    let client = ctx
        .kms
        .client(&inputs.connection, obj.region(), &Requester::of(obj))
        .await;

    let scope = Scope {
        ctx,
        api,
        obj,
        inputs: &inputs,
        desired: &desired,
        owner: &owner,
        client: &client,
        now,
    };
    // A key about to be created waits for its turn at its Region's import quota off the worker
    // pool; the place it goes with is given up when this reconcile is over.
    let _place = match status.key_id {
        Some(_) => None,
        None if !K::TAKES_IMPORT_TURN => None,
        None => match ctx.import_turn(&owner.uid, &inputs.connection, obj.region()) {
            ImportTurn::Go(place) => place,
            ImportTurn::Later { ahead, wait } => {
                return Ok(Converged::Queued(Queued {
                    region: obj.region().to_string(),
                    ahead,
                    wait,
                }));
            }
        },
    };
    let located = K::locate(&scope, status).await?;
    *created = located.created.as_ref().map(|c| c.arn.clone());
    status.connection = Some(inputs.connection.name.clone());
    status.deletion_policy = Some(effective_deletion_policy(
        obj.deletion_policy(),
        status.adopted == Some(true),
        inputs.namespace.default_deletion_policy.as_deref(),
        ctx.settings.default_deletion_policy,
    ));

    let policy_changed = policy_changed(&desired, status);
    let unchanged = was_ready
        && !policy_changed
        && obj.status() == Some(&*status)
        && material_unchanged(&inputs, status);
    let deep_read = match ctx.read_due(&owner.uid, meta.generation, was_ready, unchanged) {
        KmsRead::Later(wait) => return Ok(Converged::Later(wait)),
        KmsRead::Now { deep } => deep || policy_changed,
    };
    let description = desired::material_description(
        inputs.material.fingerprint().as_str(),
        &inputs.material_source,
        K::KIND,
        &owner.namespace,
        &owner.name,
    );
    let retained_descriptions: Vec<String> = inputs
        .retained
        .iter()
        .map(|(material, source)| {
            desired::material_description(
                material.fingerprint().as_str(),
                source,
                K::KIND,
                &owner.namespace,
                &owner.name,
            )
        })
        .collect();
    let retained = inputs
        .retained
        .iter()
        .zip(&retained_descriptions)
        .map(|((material, _), description)| ImportInput {
            material,
            algorithm: import.algorithm,
            wrapping_key_spec: import.wrapping_key_spec,
            description: Some(description),
        })
        .collect();
    let sync = KeySync {
        client: &client,
        key_id: &located.key_id,
        region: obj.region(),
        desired: &desired,
        import: ImportInput {
            material: &*inputs.material,
            algorithm: import.algorithm,
            wrapping_key_spec: import.wrapping_key_spec,
            description: Some(&description),
        },
        retained,
        restore: located.restore,
        owner: &owner,
        claim: located.claim.clone(),
        connection: &inputs.connection,
        gone_advice: K::GONE_ADVICE,
        deep_read,
        created: located.created.as_ref().and_then(|c| c.observed.as_ref()),
        alias_free: located.alias_free,
        now,
        renew_before: ctx.renew_before(),
        role: Role::of(&inputs.source),
    };
    let result = sync::sync(sync, status, synced).await;
    // Metrics: when rolling-validity material is re-imported next.
    let renewal = desired
        .rolling_validity
        .zip(status.material_valid_to.as_ref());
    ctx.metrics.material_renewal_at(
        K::KIND,
        &owner.namespace,
        &owner.name,
        renewal.map(|(rolling, valid_to)| {
            valid_to.0 - crate::plan::renew_threshold(rolling, ctx.renew_before())
        }),
    );
    record_read(ctx, &owner.uid, meta.generation, deep_read, &result, synced);
    if let Some(observed) = &synced.observed {
        K::record_observed(status, observed);
    }
    result.map(|()| Converged::Synced)
}

/// Whether the key holds what its Secrets hold, as far as its status (and a replica's primary's)
/// tells without asking KMS: the Secret's material is the one imported, no rotation is under
/// way, and every retained Secret's material is in the key's material list.
fn material_unchanged(inputs: &Dereferenced<'_>, status: &KmsKeyStatus) -> bool {
    let fingerprint = inputs.material.fingerprint();
    let imported = status.material_fingerprint.as_deref() == Some(fingerprint.as_str());
    let primary_settled = match Role::of(&inputs.source) {
        Role::Primary => true,
        Role::Replica { primary, .. } => {
            primary.pending_material_fingerprint.is_none()
                && primary.material_fingerprint == status.material_fingerprint
        }
    };
    let retained_listed = inputs.retained.iter().all(|(material, _)| {
        let fingerprint = material.fingerprint();
        status
            .materials
            .iter()
            .any(|m| m.fingerprint.as_deref() == Some(fingerprint.as_str()))
    });
    imported && primary_settled && retained_listed && status.pending_material_fingerprint.is_none()
}

/// Desired step: the spec (pure) → the desired key and how its material is wrapped, checked
/// against the connection and kept manageable by keyfleet's own principal.
async fn desired<K: ManagedKey>(
    obj: &K,
    inputs: &Dereferenced<'_>,
    owner: &Owner,
    now: jiff::Timestamp,
    ctx: &Context,
) -> Result<(DesiredKey, ImportSettings), Failure> {
    let connection = &inputs.connection;
    check_region(connection, obj.region())?;
    let mut desired = obj
        .desired(&inputs.source, owner, inputs.template.as_ref(), now)
        .map_err(Failure::spec)?;
    let limits = connection.spec.key_policy.as_ref();
    tenancy::alias(
        &connection.name,
        desired.alias.as_deref(),
        connection.spec.alias_prefix.as_deref(),
        &owner.namespace,
    )
    .and_then(|()| {
        tenancy::bypass(
            &connection.name,
            desired.bypass_policy_lockout_safety_check,
            limits,
        )
    })
    .map_err(|r| Failure::blocked(r.reason, super::Category::Spec, r.message))?;
    keep_manageable(
        ctx,
        connection,
        obj.region(),
        &Requester::of(obj),
        &mut desired,
    )
    .await;
    precheck_policy(&desired, connection, obj.region())?;
    let spec = inputs.source.spec();
    let mut import =
        desired::import_settings(&spec.key_material, spec.key_spec).map_err(Failure::spec)?;
    // A source that cannot do the default (an HSM without SHA-256 OAEP) picks what it can,
    // unless the spec names the algorithm.
    if spec.key_material.wrapping_algorithm.is_none()
        && let Some((algorithm, wrapping_key_spec)) = inputs.material.preferred_wrapping()
    {
        import.algorithm = algorithm;
        if spec.key_material.wrapping_key_spec.is_none() {
            import.wrapping_key_spec = wrapping_key_spec;
        }
    }
    Ok((desired, import))
}

/// Refuses a region the connection does not allow.
fn check_region(connection: &Connection, region: &str) -> Result<(), Failure> {
    if connection.spec.allows_region(region) {
        return Ok(());
    }
    Err(Failure::blocked(
        "RegionNotAllowed",
        super::Category::Spec,
        format!(
            "region {region} is not allowed by {} (allowed: {})",
            connection.describe(),
            connection.spec.regions.join(", ")
        ),
    ))
}

/// Names keyfleet's own principal as the one the policy must keep able to manage the key
/// (unless the lockout check is bypassed).
async fn keep_manageable(
    ctx: &Context,
    connection: &Connection,
    region: &str,
    requester: &Requester,
    desired: &mut DesiredKey,
) {
    if desired.bypass_policy_lockout_safety_check {
        return;
    }
    if let Some(policy) = &mut desired.policy {
        policy.keep_manageable_by = ctx.kms.caller(connection, region, requester).await;
    }
}

/// Refuses a policy before any key is created for it: rendered for a key of the caller's
/// account in `region`, it must name only principals the connection permits and must not lock
/// keyfleet out (both checks run again on the real key before every PutKeyPolicy).
fn precheck_policy(
    desired: &DesiredKey,
    connection: &Connection,
    region: &str,
) -> Result<(), Failure> {
    let Some(policy) = &desired.policy else {
        return Ok(());
    };
    let Some(caller) = &policy.keep_manageable_by else {
        return Ok(());
    };
    let preview = policy::KeyIdentity::preview(&caller.account_id, region, "new-key");
    let rendered = policy.render(&preview);
    tenancy::policy_principals(
        &connection.name,
        &rendered,
        connection.spec.key_policy.as_ref(),
    )
    .map_err(|r| Failure::blocked(r.reason, super::Category::Spec, r.message))?;
    policy::lockout::check(&rendered, caller)
        .map_err(|why| Failure::blocker(&Blocker::PolicyLockout(why)))
}

/// Whether the policy keyfleet would render now differs from the one it last kept in place
/// (`status.policyHash`): a template or spec change, seen by the next reconcile even between
/// drift reads. A key without a known ARN is read deeply anyway.
fn policy_changed(desired: &DesiredKey, status: &KmsKeyStatus) -> bool {
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
fn record_read(
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
        _ => ctx.read_deeply_next(uid),
    }
}

/// Whether a status says its key was Ready at `generation` (the spec it has now).
fn ready_at(status: &KmsKeyStatus, generation: Option<i64>) -> bool {
    crate::api::conditions::find_condition(&status.conditions, crate::api::conditions::READY)
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
}
