//! In-memory Kubernetes API server served as a tower `Service`, for tests and the playground.
//!
//! [`MemKube`] keeps objects as JSON keyed by `(group, plural, namespace, name)` and answers
//! the requests `kube::Client` sends. It knows no schemas: any resource is accepted, its
//! scope is taken from the URL, and custom resources (groups other than core, `apps`,
//! `batch`, `autoscaling`, `policy`, `extensions` and `*.k8s.io`) get a status subresource.
//!
//! Supported, following kube-apiserver:
//! - create (`generateName`, uid, timestamps, `generation`, AlreadyExists), get, list
//!   (label/field selectors, `limit`/`continue`), replace (409 on stale or, for custom
//!   resources, 422 on missing resourceVersion), delete and delete-collection (preconditions,
//!   `dryRun`), and merge / JSON (RFC 6902 with `test`) / strategic (as merge) / apply (as
//!   merge, creating missing objects) patches; writes that change nothing write nothing;
//! - one global resourceVersion; `metadata.generation` bumps on changes outside metadata and
//!   status; `/status` writes change only status, main writes never change it;
//! - finalizers: deletion sets `deletionTimestamp`, the object goes when its last finalizer
//!   does, new finalizers are refused meanwhile; ownerReference garbage collection (background
//!   or orphan) and namespace deletion happen synchronously;
//! - watches from a resourceVersion (bounded history, 410 Gone `ERROR` when too old), from
//!   now with synthetic ADDED events, or as a streaming list (`sendInitialEvents`), with
//!   selector transitions, `timeoutSeconds` and a final bookmark;
//! - `PartialObjectMetadata` answers for get, list, watch and patch when the client asks;
//! - Secret `stringData` folding and `type` default, immutable ConfigMaps/Secrets;
//! - minimal discovery (`/version`, `/api`, `/apis`, group resource lists) of what was seen.
//!
//! - RBAC for the clients of a [`MemKube::restricted`] handle (rules of Roles and
//!   ClusterRoles by verb, group, resource/subresource and namespace; 403 Forbidden otherwise).
//!
//! Not supported: schemas, validation and defaulting of other types, admission, resourceNames
//! in RBAC rules,
//! managed fields and apply conflicts (`force` is irrelevant), removal of fields a manager
//! stopped applying, strategic-merge list directives, reads at an older resourceVersion,
//! periodic bookmarks, foreground-deletion ordering, graceful pod deletion, and subresources
//! other than `status`.
//!
//! Tests can inspect objects ([`MemKube::objects`], [`MemKube::get_object`]), read the
//! request log ([`MemKube::requests`], [`MemKube::request_count`]), plan failures
//! ([`MemKube::inject_fault`]), and disturb watches ([`MemKube::close_watches`],
//! [`MemKube::compact_history`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube::Error> {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! let mem = memkube::MemKube::new();
//! let cms: kube::Api<ConfigMap> = kube::Api::namespaced(mem.client(), "default");
//! let all = cms.list(&Default::default()).await?;
//! assert!(all.items.is_empty());
//! # Ok(())
//! # }
//! ```

mod patch;
mod rbac;
mod route;
mod select;
mod server;
mod status;
mod store;
mod watch;

#[cfg(test)]
mod tests;

pub use rbac::Rule;
pub use status::ApiError;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use store::State;

/// Response body type of the service.
pub type MemKubeBody = UnsyncBoxBody<Bytes, Infallible>;

/// Default number of changes kept for watches resuming from an older resourceVersion.
pub const DEFAULT_HISTORY_LIMIT: usize = 4096;

/// A planned failure: the next `times` requests whose method matches (any when `None`) and
/// whose `path?query` contains `path_contains` fail with `status` and a `Status` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// HTTP method to match; `None` matches any.
    pub method: Option<Method>,
    /// Substring of `path?query` to match (`""` matches any).
    pub path_contains: String,
    /// HTTP status to answer (409, 429, 500 ...).
    pub status: u16,
    /// How many requests fail.
    pub times: usize,
    /// How many matching requests pass untouched before the fault applies (e.g. 1: the first
    /// status write succeeds, the second fails).
    pub after: usize,
}

impl Fault {
    /// A fault on requests with `method` whose `path?query` contains `path_contains`.
    pub fn new(
        method: Method,
        path_contains: impl Into<String>,
        status: u16,
        times: usize,
    ) -> Self {
        Fault {
            method: Some(method),
            path_contains: path_contains.into(),
            status,
            times,
            after: 0,
        }
    }

    /// A fault on requests of any method whose `path?query` contains `path_contains`.
    pub fn any_method(path_contains: impl Into<String>, status: u16, times: usize) -> Self {
        Fault {
            method: None,
            path_contains: path_contains.into(),
            status,
            times,
            after: 0,
        }
    }

    /// Lets the first `n` matching requests through before failing.
    pub fn after(mut self, n: usize) -> Self {
        self.after = n;
        self
    }

    fn matches(&self, method: &Method, path_and_query: &str) -> bool {
        self.times > 0
            && self.method.as_ref().is_none_or(|m| m == method)
            && path_and_query.contains(&self.path_contains)
    }
}

/// One served request, as recorded in the request log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: Method,
    /// Path, e.g. `/api/v1/namespaces/default/configmaps/x`.
    pub path: String,
    /// Raw query string (without `?`), `""` if none.
    pub query: String,
    /// HTTP status answered (a watch is logged with 200 when it starts).
    pub status: u16,
    /// Whether the client asked for `PartialObjectMetadata`.
    pub metadata_only: bool,
    /// Whether the request was failed by an injected [`Fault`].
    pub injected: bool,
}

impl RequestRecord {
    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        form_urlencoded::parse(self.query.as_bytes()).any(|(k, v)| k == "watch" && v == "true")
    }
}

/// State shared by every handle, client and open watch.
pub(crate) struct Shared {
    state: Mutex<State>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<RequestRecord>>,
    closer: tokio::sync::watch::Sender<u64>,
    active_watches: AtomicUsize,
    /// Per resource plural: how long after its commit a live change reaches watches.
    watch_lag: Mutex<std::collections::HashMap<String, std::time::Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// How long after its commit a live change of `plural` reaches watches.
    pub(crate) fn watch_lag(&self, plural: &str) -> std::time::Duration {
        lock(&self.watch_lag)
            .get(plural)
            .copied()
            .unwrap_or_default()
    }
}

/// An in-memory Kubernetes API server. Cloning is cheap: clones share the same objects.
#[derive(Clone)]
pub struct MemKube {
    shared: Arc<Shared>,
    /// The RBAC rules of this handle's clients; `None`: cluster-admin.
    rules: Option<Arc<Vec<Rule>>>,
}

impl Default for MemKube {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemKube")
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

impl MemKube {
    /// An empty API server.
    pub fn new() -> MemKube {
        Self::with_history_limit(DEFAULT_HISTORY_LIMIT)
    }

    /// An empty API server keeping the last `limit` changes for resuming watches.
    pub fn with_history_limit(limit: usize) -> MemKube {
        let (closer, _) = tokio::sync::watch::channel(0);
        MemKube {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(limit)),
                faults: Mutex::new(Vec::new()),
                log: Mutex::new(Vec::new()),
                closer,
                active_watches: AtomicUsize::new(0),
                watch_lag: Mutex::new(Default::default()),
            }),
            rules: None,
        }
    }

    /// A handle on the same objects whose clients may do only what `rules` allow (RBAC; every
    /// other request is answered 403 Forbidden as kube-apiserver does). Handles from
    /// [`MemKube::new`] and their clients stay cluster-admin, so a test can restrict the
    /// operator's client and still set up objects with its own.
    pub fn restricted(&self, rules: Vec<Rule>) -> MemKube {
        MemKube {
            shared: Arc::clone(&self.shared),
            rules: Some(Arc::new(rules)),
        }
    }

    /// A `kube::Client` talking to this server, with default namespace `default`.
    ///
    /// Must be called within a tokio runtime (the client spawns its request buffer there).
    pub fn client(&self) -> kube::Client {
        self.client_with_namespace("default")
    }

    /// Serves this API over plain HTTP on `addr` (e.g. `127.0.0.1:0`) until the returned task
    /// is aborted, so that a real `keyfleet run` process can use it through a kubeconfig.
    pub async fn serve_http(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        use tower::Service;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let this = self.clone();
        let service = tower::service_fn(move |req: Request<axum::body::Body>| {
            let mut inner = this.clone();
            async move {
                let response = inner.call(req).await?;
                Ok::<_, Infallible>(response.map(axum::body::Body::new))
            }
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, tower::make::Shared::new(service)).await {
                tracing::warn!(error = %e, "memkube HTTP server stopped");
            }
        });
        Ok((local, task))
    }

    /// A kubeconfig (YAML) pointing at `serve_http`'s address, with no credentials.
    pub fn kubeconfig(addr: std::net::SocketAddr) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: memkube\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: memkube\n  context:\n    cluster: memkube\n    user: memkube\n    namespace: default\ncurrent-context: memkube\nusers:\n- name: memkube\n  user: {{}}\n"
        )
    }

    /// A `kube::Client` talking to this server with the given default namespace.
    pub fn client_with_namespace(&self, namespace: &str) -> kube::Client {
        kube::Client::new(self.clone(), namespace)
    }

    /// All objects of a resource in every namespace (`group` `""` for core), ordered by
    /// namespace then name.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        self.shared
            .lock_state()
            .objects(group, plural)
            .into_iter()
            .cloned()
            .collect()
    }

    /// One object, `namespace` `None` for cluster-scoped ones.
    pub fn get_object(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.shared
            .lock_state()
            .object(group, plural, namespace.unwrap_or(""), name)
            .cloned()
    }

    /// Creates `object` directly in the store, as an apply before anything watches would
    /// (seeding a test's cluster). `namespace` `None` for cluster-scoped kinds.
    pub fn seed(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, String> {
        let target = route::Target {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            name: None,
            subresource: None,
        };
        self.shared
            .lock_state()
            .create(&target, object, &store::WriteOpts::default())
            .map_err(|e| e.message)
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_state().rv()
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// How many requests with `method` (any when `None`) had a `path?query` containing
    /// `path_contains`.
    pub fn request_count(&self, method: Option<Method>, path_contains: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| method.as_ref().is_none_or(|m| *m == r.method))
            .filter(|r| format!("{}?{}", r.path, r.query).contains(path_contains))
            .count()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Plans a failure; faults are matched in the order they were injected.
    pub fn inject_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Failures still planned (sum of remaining `times`).
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).iter().map(|f| f.times).sum()
    }

    /// Drops every planned failure.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Forgets the change history: a watch resuming from an older resourceVersion is then
    /// answered with a 410 Gone `ERROR` event, like after etcd compaction.
    pub fn compact_history(&self) {
        self.shared.lock_state().compact_history();
    }

    /// Changes how many changes are kept for resuming watches.
    pub fn set_history_limit(&self, limit: usize) {
        self.shared.lock_state().set_history_limit(limit);
    }

    /// Ends every open watch stream (clients see the stream close and reconnect).
    pub fn close_watches(&self) {
        self.shared.closer.send_modify(|epoch| *epoch += 1);
    }

    /// Watches of `plural` (e.g. `awskeys`) receive each live change `lag` after it was
    /// committed, as a watch cache that falls behind does; reads answer at once. Zero: no lag.
    pub fn lag_watches(&self, plural: &str, lag: std::time::Duration) {
        lock(&self.shared.watch_lag).insert(plural.to_string(), lag);
    }

    /// Number of watch streams currently open.
    pub fn active_watches(&self) -> usize {
        self.shared.active_watches.load(Ordering::SeqCst)
    }

    /// Takes the first injected fault matching a request, if any.
    fn take_fault(&self, method: &Method, path_and_query: &str) -> Option<u16> {
        let mut faults = lock(&self.shared.faults);
        let i = faults
            .iter()
            .position(|f| f.matches(method, path_and_query))?;
        if faults[i].after > 0 {
            faults[i].after -= 1;
            return None;
        }
        let status = faults[i].status;
        faults[i].times -= 1;
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(status)
    }

    fn record(&self, r: RequestRecord) {
        lock(&self.shared.log).push(r);
    }
}

impl<B> tower::Service<Request<B>> for MemKube
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = Response<MemKubeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(server::handle(this, req).await) })
    }
}
