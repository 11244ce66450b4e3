//! Controller wiring: shared context, watches (AwsKey, Secret metadata, AwsKms), error policy.

pub mod aws_key;
pub mod aws_replica_key;
pub mod key_sync;
pub mod secrets;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, KeyPolicy};
use crate::clock::Clock;
use crate::http::Readiness;
use crate::kms::{KmsClients, KmsError};
use crate::metrics::Metrics;

/// Operator settings (from `keyfleet run` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Identifies this cluster in the ownership tags of the keys it creates.
    pub cluster_id: String,
    /// How often a Ready key is re-read from KMS (DescribeKey: state, material, description).
    pub resync_interval: Duration,
    /// How often a resync also reads tags, aliases and the policy to repair their drift (also
    /// done after every spec change and until the key is Ready).
    pub drift_interval: Duration,
    /// How long a key that waits for a change (invalid spec, missing Secret) waits at most.
    pub blocked_recheck_interval: Duration,
    /// Parallel reconciles.
    pub concurrency: u16,
    /// Name reported in events.
    pub reporter: String,
    /// Namespaces whose AwsKeys and Secrets are watched; empty: all namespaces.
    pub watch_namespaces: Vec<String>,
    /// Rolling-validity material is imported again when less than this validity remains
    /// (never more than a third of the rolling validity).
    pub material_renew_before: Duration,
}

impl Settings {
    pub fn new(cluster_id: impl Into<String>) -> Settings {
        Settings {
            cluster_id: cluster_id.into(),
            resync_interval: Duration::from_secs(300),
            drift_interval: Duration::from_secs(600),
            blocked_recheck_interval: Duration::from_secs(600),
            concurrency: 8,
            reporter: "keyfleet".into(),
            watch_namespaces: vec![],
            material_renew_before: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// State shared by every reconcile: clients, recorder, settings, backoff counters.
pub struct Context {
    pub client: kube::Client,
    pub kms: KmsClients,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// What reconciles read the time from (tests set a manual clock).
    pub clock: Clock,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    /// Per object uid: the generation and time of the last deep drift read that found the key
    /// converged. In memory: a restarted operator reads every key deeply once.
    deep_reads: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl Context {
    pub fn new(client: kube::Client, kms: KmsClients, settings: Settings) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: settings.reporter.clone(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            kms,
            settings,
            metrics: Metrics::shared(),
            readiness: Arc::new(Readiness::default()),
            clock: Clock::system(),
            recorder,
            failures: Mutex::new(HashMap::new()),
            deep_reads: Mutex::new(HashMap::new()),
        }
    }

    /// Uses these metrics and readiness (shared with the HTTP endpoints) instead of private ones.
    pub fn with_telemetry(mut self, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Context {
        self.metrics = metrics;
        self.readiness = readiness;
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Context {
        self.clock = clock;
        self
    }

    /// The renewal threshold setting as a signed duration.
    pub fn renew_before(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.settings.material_renew_before)
            .unwrap_or(jiff::SignedDuration::MAX)
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "failed to publish event");
        }
    }

    fn deep_reads(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<i64>, Instant)>> {
        self.deep_reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this reconcile of object `uid` at `generation` must read tags, aliases and the
    /// policy: never done since the operator started, the spec changed since, or the drift
    /// interval elapsed.
    pub fn deep_read_due(&self, uid: &str, generation: Option<i64>) -> bool {
        match self.deep_reads().get(uid) {
            Some((g, at)) => *g != generation || at.elapsed() >= self.settings.drift_interval,
            None => true,
        }
    }

    /// Records a deep read that found object `uid` converged (Ready).
    pub fn deep_read_done(&self, uid: &str, generation: Option<i64>) {
        self.deep_reads()
            .insert(uid.to_string(), (generation, Instant::now()));
    }

    /// Forgets an object (deleted, or not converged: its next reconcile reads deeply).
    pub fn forget_deep_read(&self, uid: &str) {
        self.deep_reads().remove(uid);
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exponential backoff for transient failures of one object: 2 s, 4 s, ... capped at 5 min.
    fn next_backoff(&self, key: String) -> Duration {
        let mut failures = self.failures();
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n).min(8)).min(Duration::from_secs(300))
    }

    fn reset_backoff(&self, key: &str) {
        self.failures().remove(key);
    }
}

/// Why a reconcile did not bring the key to Ready.
#[derive(Debug)]
pub enum Failure {
    /// Needs a change by someone (spec, Secret, IAM, AWS): Ready=False with this reason, and
    /// the key waits for a change instead of retrying in a loop.
    Permanent { reason: String, message: String },
    /// Throttling, 5xx, timeouts, API conflicts: retried with backoff.
    Transient(Error),
}

impl Failure {
    pub fn permanent(reason: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::Permanent {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn kube(e: kube::Error) -> Failure {
        Failure::Transient(Error::Kube(e))
    }

    pub fn kms(e: KmsError) -> Failure {
        match e {
            e if e.is_transient() => Failure::Transient(Error::Kms(e)),
            KmsError::Rejected { ref code, .. } => Failure::permanent(
                match code.as_str() {
                    "MalformedPolicyDocumentException" => "PolicyRejected",
                    "LimitExceededException" => "KmsLimitExceeded",
                    "AlreadyExistsException" => "AliasInUse",
                    _ => "KmsRejected",
                },
                e.to_string(),
            ),
            KmsError::NotFound { .. } => Failure::permanent("KeyGone", e.to_string()),
            e => Failure::permanent(e.reason(), e.to_string()),
        }
    }
}

/// Errors that end a reconcile early and are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Kms(KmsError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Other(String),
}

fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let delay = ctx.next_backoff(object_key(&*obj));
    warn!(object = %object_key(&*obj), %error, retry_in = ?delay, "reconcile failed; retrying");
    Requeue::requeue(delay)
}

fn object_key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The parts of an AwsKey whose change calls for a reconcile: generation (spec), finalizers,
/// deletion, annotations (`kubectl annotate` forces a reconcile). Status changes are excluded.
fn reconcile_relevant<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut h);
    obj.finalizers().hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    obj.annotations().hash(&mut h);
    Some(h.finish())
}

/// The objects in `store` whose policy names `template`.
fn users_of_template<K>(
    store: &reflector::Store<K>,
    template: &str,
    policy: impl Fn(&K) -> Option<&KeyPolicy>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|obj| {
            policy(obj)
                .and_then(|p| p.template_ref.as_ref())
                .is_some_and(|t| t.name == template)
        })
        .map(|obj| ObjectRef::from_obj(&*obj))
        .collect()
}

/// Runs the AwsKey controller until `shutdown` completes: over all namespaces, or one
/// controller per namespace in `settings.watch_namespaces`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    // kube's graceful shutdown wants a Sync future; a oneshot receiver is one.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let shutdown = futures::FutureExt::shared(async move {
        let _ = rx.await;
    });
    let scopes: Vec<Option<String>> = if ctx.settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        ctx.settings
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let controllers = scopes
        .into_iter()
        .flat_map(|ns| {
            [
                run_keys(ctx.clone(), ns.clone(), shutdown.clone()).boxed(),
                run_replicas(ctx.clone(), ns, shutdown.clone()).boxed(),
            ]
        })
        .collect::<Vec<_>>();
    futures::future::join_all(controllers).await;
    signal.abort();
    ctx.readiness.set_controller_running(false);
    info!("controller stopped");
}

async fn run_keys(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (keys, secrets, replicas): (
        Api<AwsKey>,
        Api<PartialObjectMeta<Secret>>,
        Api<AwsReplicaKey>,
    ) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let (store, writer) = reflector::store();
    // Only changes of the spec, finalizers, deletion or annotations trigger a reconcile: the
    // controller's own status writes do not (no self-triggered loops), resyncs come from the
    // requeue, and Secrets and connections have their own watches below.
    // Ready once the initial list is in the cache (the watcher's InitDone). Not through
    // `Store::wait_until_ready`: it wakes only one waiter, and the controller waits on it too.
    let readiness = ctx.readiness.clone();
    let triggers = watcher(keys, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                info!("watch cache synced: reconciling");
                readiness.set_controller_running(true);
            }
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(reconcile_relevant, PredicateConfig::default());
    let controller = Controller::for_stream(triggers, store.clone());
    let by_secret = store.clone();
    let by_kms = store.clone();
    let by_template = store.clone();
    // Metadata only: Secret data never enters the operator's caches.
    let secrets = watcher(secrets, watcher::Config::default().any_semantic()).touched_objects();
    controller
        .watches_stream(secrets, move |secret| {
            let (ns, name) = (secret.namespace(), secret.name_any());
            by_secret
                .state()
                .into_iter()
                .filter(|k| k.namespace() == ns && k.spec.key_material.secret_ref.name == name)
                .map(|k| ObjectRef::from_obj(&*k))
                .collect::<Vec<_>>()
        })
        .watches(
            Api::<AwsKms>::all(client.clone()),
            watcher::Config::default().any_semantic(),
            move |kms| {
                let name = kms.name_any();
                by_kms
                    .state()
                    .into_iter()
                    .filter(|k| k.spec.kms_ref.as_ref().is_some_and(|r| r.name == name))
                    .map(|k| ObjectRef::from_obj(&*k))
                    .collect::<Vec<_>>()
            },
        )
        // A replica that imported its primary's pending rotation material lets the primary
        // rotate now rather than at its next recheck.
        .watches(
            replicas,
            watcher::Config::default().any_semantic(),
            |replica| {
                let pending = replica
                    .status
                    .as_ref()
                    .is_some_and(|s| s.pending_material_fingerprint.is_some());
                let namespace = replica.namespace().unwrap_or_default();
                pending
                    .then(|| ObjectRef::new(&replica.spec.primary_key_ref.name).within(&namespace))
            },
        )
        // A template's change (or deletion) re-renders the policy of every key using it.
        .watches(
            Api::<AwsKeyPolicyTemplate>::all(client),
            watcher::Config::default().any_semantic(),
            move |template| {
                users_of_template(&by_template, &template.name_any(), |k| {
                    k.spec.policy.as_ref()
                })
            },
        )
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(aws_key::reconcile, error_policy::<AwsKey>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(awskey = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

/// The AwsReplicaKey controller of one scope: replicas, their primaries (status included: a
/// primary becoming Enabled releases its replicas) and the primaries' Secrets.
async fn run_replicas(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (replicas, keys, secrets): (
        Api<AwsReplicaKey>,
        Api<AwsKey>,
        Api<PartialObjectMeta<Secret>>,
    ) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let (store, writer) = reflector::store();
    let triggers = watcher(replicas, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(reconcile_relevant, PredicateConfig::default());
    let (primaries, primaries_writer) = reflector::store::<AwsKey>();
    let primary_changes = watcher(keys, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(primaries_writer)
        .touched_objects();
    let secrets = watcher(secrets, watcher::Config::default().any_semantic()).touched_objects();
    let by_primary = store.clone();
    let by_secret = store.clone();
    let by_template = store.clone();
    let replicas_of =
        move |store: &reflector::Store<AwsReplicaKey>, ns: Option<String>, primary: String| {
            store
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.primary_key_ref.name == primary)
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        };
    Controller::for_stream(triggers, store)
        .watches(
            Api::<AwsKeyPolicyTemplate>::all(client),
            watcher::Config::default().any_semantic(),
            move |template| {
                users_of_template(&by_template, &template.name_any(), |r| {
                    r.spec.policy.as_ref()
                })
            },
        )
        .watches_stream(primary_changes, move |key: AwsKey| {
            replicas_of(&by_primary, key.namespace(), key.name_any())
        })
        .watches_stream(secrets, move |secret| {
            let ns = secret.namespace();
            primaries
                .state()
                .into_iter()
                .filter(|k| {
                    k.namespace() == ns && k.spec.key_material.secret_ref.name == secret.name_any()
                })
                .flat_map(|k| replicas_of(&by_secret, ns.clone(), k.name_any()))
                .collect::<Vec<_>>()
        })
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            aws_replica_key::reconcile,
            error_policy::<AwsReplicaKey>,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "replica reconcile error");
            }
        })
        .await;
}
