//! Run (watches): one controller per key kind and scope, triggered by the objects themselves,
//! their Secrets, connections, policy templates, primaries and replicas.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::object::HasSpec;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::managed_key::ManagedKey;
use super::reconcile::{self, object_key};
use super::{Context, Error, Settings};
use crate::api::{
    AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, DEFAULT_CONNECTION, KeyPolicy,
    KeySettings, Pkcs11Token,
};

/// A watched object that may not deserialize: one malformed object must not stop the watch of
/// its kind.
pub(super) type Guarded<K> = DeserializeGuard<K>;

/// Runs the key controllers until `shutdown` completes: over all namespaces, or one pair of
/// controllers per namespace in `settings.watch_namespaces`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    // kube's graceful shutdown wants a Sync future; a oneshot receiver is one.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = ctx.clone();
    let signal = tokio::spawn(async move {
        shutdown.await;
        // In-flight reconciles finish before the controller stops: none may wait out a quota.
        stopping.kms.stop_waiting();
        let _ = tx.send(());
    });
    let shutdown = futures::FutureExt::shared(async move {
        let _ = rx.await;
    });
    let mut controllers = scopes(&ctx.settings)
        .into_iter()
        .flat_map(|ns| {
            // One AwsKey watch and cache per scope, shared by the key and replica controllers.
            let (keys, writer) = reflector::store_shared(SHARED_BUFFER);
            let (for_keys, for_replicas) = (subscribe(&writer), subscribe(&writer));
            [
                watch_keys(ctx.clone(), ns.clone(), writer, shutdown.clone()).boxed(),
                run_keys(
                    ctx.clone(),
                    ns.clone(),
                    keys.clone(),
                    for_keys,
                    shutdown.clone(),
                )
                .boxed(),
                run_replicas(ctx.clone(), ns, keys, for_replicas, shutdown.clone()).boxed(),
            ]
        })
        .chain([super::pkcs11_token::run_tokens(ctx.clone(), shutdown.clone()).boxed()])
        .collect::<Vec<_>>();
    controllers.push(super::connection_status::run(ctx.clone(), shutdown.clone()).boxed());
    controllers.push(super::template_status::run(ctx.clone(), shutdown.clone()).boxed());
    futures::future::join_all(controllers).await;
    signal.abort();
    ctx.readiness.set_controller_running(false);
    info!("controller stopped");
}

/// Changes of the shared AwsKey cache a controller has not taken yet (object references; the
/// watch waits while a controller is this far behind).
const SHARED_BUFFER: usize = 1024;

/// The last-applied annotation `kubectl apply` leaves on an object: a copy of its manifest.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no controller reads before an object enters a cache or a trigger:
/// `managedFields` and the last-applied annotation (together often larger than the object).
fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The watch put an object into a cache (after the reflector stored it): a status write of
/// this instance that it carries is no longer ahead of the cache ([`super::written`]).
fn in_cache<K: Resource>(ctx: &Context, event: &Result<watcher::Event<K>, watcher::Error>) {
    if let Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event {
        ctx.written.seen(obj);
    }
}

/// A subscription to the shared AwsKey cache's changes, as a trigger stream.
fn subscribe(
    writer: &reflector::store::Writer<Guarded<AwsKey>>,
) -> impl futures::Stream<Item = Result<Guarded<AwsKey>, watcher::Error>> + Send + 'static {
    // A shared store's writer always has subscriptions to give.
    futures::stream::iter(writer.subscribe())
        .flatten()
        .map(|key| Ok(Guarded::clone(&key)))
}

/// The AwsKey watch of one scope: fills the shared cache and hands each change to both
/// controllers' subscriptions, until `shutdown`. The operator is ready once the initial list is
/// in the cache (the watcher's InitDone; not `Store::wait_until_ready`, which wakes one waiter).
async fn watch_keys(
    ctx: Arc<Context>,
    namespace: Option<String>,
    writer: reflector::store::Writer<Guarded<AwsKey>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let keys: Api<Guarded<AwsKey>> = scoped(&ctx.client, &namespace);
    let readiness = ctx.readiness.clone();
    watcher(keys, watch_config())
        .default_backoff()
        .modify(slim)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                info!("watch cache synced: reconciling");
                readiness.set_controller_running(true);
            }
        })
        .reflect_shared(writer)
        .inspect(|event| in_cache(&ctx, event))
        .take_until(shutdown)
        .for_each(|_| async {})
        .await;
}

/// How every keyfleet watch lists and watches: a (re)list may be served from the API server's
/// watch cache (any resourceVersion, no etcd read per restart), in pages of [`LIST_PAGE`]
/// objects rather than kube's 500. A page is held whole while it is decoded (its bytes, then
/// its objects), and the connection's read buffer grows to the largest response it has read and
/// stays so while the connection serves a watch; smaller pages keep both down. (An API server
/// that serves a cached list in one response, as before Kubernetes 1.33, ignores the limit.)
pub(super) fn watch_config() -> watcher::Config {
    watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE)
}

/// Objects per list page of every watch (see [`watch_config`]).
const LIST_PAGE: u32 = 100;

/// The namespaces watched: each of `watch_namespaces`, or all (None).
pub(super) fn scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    }
}

/// An Api for `K` in one namespace, or in all.
pub(super) fn scoped<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles a guarded object: a malformed one is reported once and waits for a change.
async fn reconcile_guarded<K: ManagedKey>(
    guarded: Arc<Guarded<K>>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    match &guarded.0 {
        Ok(obj) => reconcile::reconcile(Arc::new(obj.clone()), ctx).await,
        Err(invalid) => {
            warn!(object = %object_key(&*guarded), error = %invalid, "cannot read the object; waiting for a change");
            let note = format!("keyfleet cannot read this object: {invalid}");
            ctx.publish(
                &*guarded,
                EventType::Warning,
                "ObjectInvalid",
                note,
                "Reconcile",
            )
            .await;
            Ok(Requeue::await_change())
        }
    }
}

fn error_policy<K: ManagedKey>(obj: Arc<Guarded<K>>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let key = object_key(&*obj);
    let delay = ctx.next_backoff(key.clone());
    warn!(object = %key, %error, retry_in = ?delay, "reconcile failed; retrying");
    Requeue::requeue(delay)
}

/// The parts of an object whose change calls for a reconcile: generation (spec), finalizers,
/// deletion, annotations (`kubectl annotate` forces a reconcile). Status changes are excluded.
pub(super) fn reconcile_relevant<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut h);
    obj.finalizers().hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    obj.annotations().hash(&mut h);
    Some(h.finish())
}

/// The objects in `store` that `select` picks (malformed ones are never picked).
fn refs_where<K>(
    store: &reflector::Store<Guarded<K>>,
    select: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<Guarded<K>>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|obj| obj.0.as_ref().is_ok_and(&select))
        .map(|obj| ObjectRef::from_obj(&*obj))
        .collect()
}

/// [`refs_where`], for a change a watch saw after the start: the objects it concerns also get a
/// first check still waiting for its place at once ([`Context::check_soon`]).
fn woken_where<K>(
    ctx: &Context,
    store: &reflector::Store<Guarded<K>>,
    select: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<Guarded<K>>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    refs_where(store, |key| {
        let picked = select(key);
        if let Some(uid) = key.meta().uid.as_deref().filter(|_| picked) {
            ctx.check_soon(uid);
        }
        picked
    })
}

/// The changes of the shared AwsKey cache that concern the replicas of a primary
/// ([`replica_relevant`]), not the first sighting of each primary: at start every replica is
/// reconciled by its own watch, and the cache also hands on every primary of its first listing
/// (which made each replica reconcile twice after a restart). A re-list passes the primaries that
/// changed meanwhile.
fn primary_changes_for_replicas(
    changes: impl futures::Stream<Item = Result<Guarded<AwsKey>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<Guarded<AwsKey>, watcher::Error>> + Send + 'static {
    use futures::TryStreamExt;
    use std::hash::{Hash, Hasher};
    // Per primary (a hash of its namespace and name): what its replicas last saw of it.
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    changes.try_filter(move |guarded| {
        let pass = guarded.0.as_ref().is_ok_and(|key| {
            let mut id = std::collections::hash_map::DefaultHasher::new();
            (key.namespace(), key.name_any()).hash(&mut id);
            let version = replica_relevant(key);
            seen.insert(id.finish(), version)
                .is_some_and(|before| before != version)
        });
        futures::future::ready(pass)
    })
}

/// A hash of what a primary's replicas read of it: its spec's generation, its key, its
/// materials (by fingerprint and id) and its Ready verdict; not, e.g., a deep read's
/// confirmation of its material list.
fn replica_relevant(key: &AwsKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.metadata.generation.hash(&mut h);
    if let Some(s) = key.status.as_deref() {
        (&s.arn, &s.key_state, &s.material_fingerprint).hash(&mut h);
        (&s.pending_material_fingerprint, &s.key_material_id).hash(&mut h);
        (&s.pending_key_material_id, &s.previous_key_material_id).hash(&mut h);
        for m in &s.materials {
            (&m.fingerprint, &m.key_material_id, m.retired).hash(&mut h);
        }
        let ready =
            crate::api::conditions::find_condition(&s.conditions, crate::api::conditions::READY);
        ready.map(|c| (&c.status, &c.reason)).hash(&mut h);
    }
    h.finish()
}

/// The objects a watch of `api` touches, except those of its first listing: at start every
/// key is reconciled by its own watch, and a trigger from each Secret, namespace or replica
/// listed then would reconcile it a second time (a second DescribeKey per key after every
/// restart). A later re-list (after the watch lost track) passes: it may carry missed changes.
fn changes_after_start<K>(
    api: Api<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::TryStreamExt;
    let mut listed = false;
    watcher(api, watch_config())
        .default_backoff()
        .try_filter_map(move |event| {
            let touched = match event {
                watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => Some(obj),
                watcher::Event::InitApply(obj) => listed.then_some(obj),
                watcher::Event::InitDone => {
                    listed = true;
                    None
                }
                watcher::Event::Init => None,
            };
            futures::future::ready(Ok(touched))
        })
}

/// Namespaces as they change (metadata only: labels and annotations).
fn namespace_changes(
    client: &kube::Client,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send + 'static
{
    changes_after_start(Api::<PartialObjectMeta<Namespace>>::all(client.clone()))
}

/// The AwsKms changes that matter to keys: a new object (uid), a new spec (generation) or a
/// deletion. Status writes (the connection check's verdicts) are left out: they would wake every
/// key of the connection for nothing.
fn connection_changes(
    client: &kube::Client,
) -> impl futures::Stream<Item = Result<AwsKms, watcher::Error>> + Send + 'static {
    use futures::TryStreamExt;
    let mut seen: std::collections::HashMap<String, (Option<String>, Option<i64>)> =
        std::collections::HashMap::new();
    // The connections of the first listing are only remembered: every key is reconciled at
    // start anyway.
    let mut listed = false;
    watcher(Api::<AwsKms>::all(client.clone()), watch_config())
        .default_backoff()
        .try_filter_map(move |event| {
            let changed = match event {
                watcher::Event::Apply(kms) | watcher::Event::InitApply(kms) => {
                    let identity = (kms.uid(), kms.metadata.generation);
                    let new = seen.insert(kms.name_any(), identity.clone()) != Some(identity);
                    (new && listed).then_some(kms)
                }
                watcher::Event::Delete(kms) => {
                    seen.remove(&kms.name_any());
                    Some(kms)
                }
                watcher::Event::InitDone => {
                    listed = true;
                    None
                }
                watcher::Event::Init => None,
            };
            futures::future::ready(Ok(changed))
        })
}

/// The keys (of either kind) in `store` whose policy names the template `name`: they render
/// again when it changes or goes away.
fn keys_using_template<K>(
    store: &reflector::Store<Guarded<K>>,
    name: &str,
) -> Vec<ObjectRef<Guarded<K>>>
where
    K: Resource<DynamicType = ()> + HasSpec<Spec: Deref<Target = KeySettings>> + Clone + 'static,
{
    refs_where(store, |k| {
        k.spec().policy.as_ref().and_then(KeyPolicy::template_name) == Some(name)
    })
}

/// The AwsKey controller of one scope: keys (from the shared cache `store` and its
/// subscription `changes`), their Secrets (metadata only), connections, policy templates and
/// replicas (a new, changed or deleted replica updates its primary's replica list at once).
async fn run_keys(
    ctx: Arc<Context>,
    namespace: Option<String>,
    store: reflector::Store<Guarded<AwsKey>>,
    changes: impl futures::Stream<Item = Result<Guarded<AwsKey>, watcher::Error>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let secrets: Api<PartialObjectMeta<Secret>> = scoped(&client, &namespace);
    let replicas: Api<Guarded<AwsReplicaKey>> = scoped(&client, &namespace);
    // Only changes of the spec, finalizers, deletion or annotations trigger a reconcile: the
    // controller's own status writes do not (no self-triggered loops), resyncs come from the
    // requeue, and Secrets and connections have their own watches below.
    let triggers = changes.predicate_filter(reconcile_relevant, PredicateConfig::default());
    let controller = Controller::for_stream(triggers, store.clone());
    let (by_secret, by_kms, by_template) = (store.clone(), store.clone(), store.clone());
    let by_namespace = store.clone();
    let by_token = store.clone();
    let by_replica = store.clone();
    let (for_secret, for_kms, for_namespace, for_replica) =
        (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    // Metadata only: Secret data never enters the operator's caches.
    let secrets = changes_after_start(secrets);
    controller
        .watches_stream(secrets, move |secret| {
            let (ns, name) = (secret.namespace(), secret.name_any());
            woken_where(&for_secret, &by_secret, |k| {
                k.namespace() == ns && k.spec.key_material.reads_secret(&name)
            })
        })
        .watches_stream(connection_changes(&client), move |kms| {
            let name = kms.name_any();
            woken_where(&for_kms, &by_kms, |k| {
                k.spec
                    .kms_ref
                    .as_ref()
                    .map_or(DEFAULT_CONNECTION, |r| &r.name)
                    == name
            })
        })
        // A namespace's labels grant connections; its annotation sets the deletion default.
        .watches_stream(namespace_changes(&client), move |namespace| {
            let name = namespace.name_any();
            woken_where(&for_namespace, &by_namespace, |k| {
                k.namespace().as_deref() == Some(&name)
            })
        })
        // A Pkcs11Token that changes (its spec, or its Ready condition after a login): the keys
        // whose material it holds try again at once.
        .watches(
            Api::<Pkcs11Token>::all(client.clone()),
            watch_config(),
            move |token| {
                let name = token.name_any();
                refs_where(&by_token, |k| {
                    k.spec
                        .key_material
                        .pkcs11
                        .as_ref()
                        .is_some_and(|p| p.token_ref.name == name)
                })
            },
        )
        // A replica that appears, changes or goes away: its primary lists its replicas from
        // KMS at once (and rotates as soon as every replica holds pending material).
        .watches_stream(changes_after_start(replicas), move |replica| {
            let replica = replica.0.ok()?;
            let (namespace, primary) = (replica.namespace(), &replica.spec.primary_key_ref.name);
            woken_where(&for_replica, &by_replica, |k| {
                k.namespace() == namespace && k.name_any() == *primary
            })
            .pop()
        })
        // A template's change (or deletion) re-renders the policy of every key using it.
        .watches(
            Api::<AwsKeyPolicyTemplate>::all(client),
            watch_config(),
            move |template| keys_using_template(&by_template, &template.name_any()),
        )
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_guarded::<AwsKey>, error_policy::<AwsKey>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(awskey = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

/// The AwsReplicaKey controller of one scope: replicas, their primaries (the shared AwsKey
/// cache `primaries` and its subscription `primary_changes`, status included: a primary
/// becoming Enabled releases its replicas), the primaries' Secrets and the policy templates.
async fn run_replicas(
    ctx: Arc<Context>,
    namespace: Option<String>,
    primaries: reflector::Store<Guarded<AwsKey>>,
    primary_changes: impl futures::Stream<Item = Result<Guarded<AwsKey>, watcher::Error>>
    + Send
    + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let replicas: Api<Guarded<AwsReplicaKey>> = scoped(&client, &namespace);
    let secrets: Api<PartialObjectMeta<Secret>> = scoped(&client, &namespace);
    let (store, writer) = reflector::store();
    let triggers = watcher(replicas, watch_config())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect({
            let ctx = ctx.clone();
            move |event| in_cache(&ctx, event)
        })
        .applied_objects()
        .predicate_filter(reconcile_relevant, PredicateConfig::default());
    let secrets = changes_after_start(secrets);
    let (by_primary, by_secret, by_template) = (store.clone(), store.clone(), store.clone());
    let by_namespace = store.clone();
    let (for_primary, for_secret, for_namespace) = (ctx.clone(), ctx.clone(), ctx.clone());
    let replicas_of = |ctx: &Context,
                       store: &reflector::Store<Guarded<AwsReplicaKey>>,
                       ns: Option<String>,
                       primary: String| {
        woken_where(ctx, store, |r| {
            r.namespace() == ns && r.spec.primary_key_ref.name == primary
        })
    };
    Controller::for_stream(triggers, store)
        .watches_stream(namespace_changes(&client), move |namespace| {
            let name = namespace.name_any();
            woken_where(&for_namespace, &by_namespace, |r| {
                r.namespace().as_deref() == Some(&name)
            })
        })
        .watches(
            Api::<AwsKeyPolicyTemplate>::all(client),
            watch_config(),
            move |template| keys_using_template(&by_template, &template.name_any()),
        )
        .watches_stream(
            primary_changes_for_replicas(primary_changes),
            move |key: Guarded<AwsKey>| {
                replicas_of(&for_primary, &by_primary, key.namespace(), key.name_any())
            },
        )
        .watches_stream(secrets, move |secret| {
            let ns = secret.namespace();
            let name = secret.name_any();
            primaries
                .state()
                .iter()
                .filter_map(|k| k.0.as_ref().ok())
                .filter(|k| k.namespace() == ns && k.spec.key_material.reads_secret(&name))
                .flat_map(|k| replicas_of(&for_secret, &by_secret, ns.clone(), k.name_any()))
                .collect::<Vec<_>>()
        })
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile_guarded::<AwsReplicaKey>,
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
