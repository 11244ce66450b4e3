//! Watch streams: initial/replayed events, live events, bookmarks, 410 Gone and timeouts.

use super::Shared;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, ChangeType, State};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// The `PartialObjectMetadata` form of an object: type meta and metadata only.
pub fn to_partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Which changes a watch sends, and how it renders them.
#[derive(Clone, Debug)]
pub struct WatchFilter {
    /// API group.
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// Send `PartialObjectMetadata` objects.
    pub metadata_only: bool,
    /// `apiVersion` for bookmark objects.
    pub api_version: String,
    /// `kind` for bookmark objects.
    pub kind: String,
}

/// Query parameters of a watch.
#[derive(Clone, Debug)]
pub struct WatchParams {
    /// `resourceVersion` (`""`/`"0"`: start from the current state).
    pub resource_version: String,
    /// `sendInitialEvents=true` (streaming list).
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Duration,
}

fn line(typ: &str, object: Value) -> Bytes {
    let mut s = json!({ "type": typ, "object": object }).to_string();
    s.push('\n');
    Bytes::from(s)
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn render(&self, obj: &Value) -> Value {
        if self.metadata_only {
            to_partial(obj)
        } else {
            obj.clone()
        }
    }

    /// A watch event line.
    pub fn event(&self, typ: &str, obj: &Value) -> Bytes {
        line(typ, self.render(obj))
    }

    /// The line for a committed change, if this watch should see it. Selector
    /// transitions turn into ADDED/DELETED like kube-apiserver does.
    pub fn change(&self, c: &Change) -> Option<Bytes> {
        if c.group != self.group || c.plural != self.plural {
            return None;
        }
        if self.namespace.as_ref().is_some_and(|ns| *ns != c.namespace) {
            return None;
        }
        let now = self.matches(&c.object);
        let typ = match c.kind {
            ChangeType::Added => now.then_some("ADDED")?,
            ChangeType::Deleted => now.then_some("DELETED")?,
            ChangeType::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
        };
        Some(self.event(typ, &c.object))
    }

    /// A BOOKMARK line at `rv`.
    pub fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let (api_version, kind) = if self.metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (self.api_version.clone(), self.kind.clone())
        };
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        line(
            "BOOKMARK",
            json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata }),
        )
    }
}

/// An ERROR line carrying a `Status`.
pub fn error_line(err: &ApiError) -> Bytes {
    line("ERROR", err.to_status())
}

/// Receiver of live changes.
pub type ChangeRx = broadcast::Receiver<Arc<Change>>;

/// Computes a watch's first lines and subscribes it to live changes; run under the state lock
/// so that nothing falls between the replay and the subscription.
/// A line of a watch body, with the commit time of the change it carries (None: the initial
/// list, a bookmark or an error), from which a lagging watch counts its lag.
pub struct Line {
    bytes: Bytes,
    at: Option<tokio::time::Instant>,
}

impl Line {
    fn now(bytes: Bytes) -> Line {
        Line { bytes, at: None }
    }
}

pub fn start(
    state: &State,
    f: &WatchFilter,
    p: &WatchParams,
) -> Result<(VecDeque<Line>, Option<ChangeRx>), ApiError> {
    if p.send_initial_events && !p.bookmarks {
        return Err(ApiError::new(
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
        ));
    }
    let mut lines = VecDeque::new();
    let rv = p.resource_version.as_str();
    if p.send_initial_events || rv.is_empty() || rv == "0" {
        for (_, obj) in state.objects_in(&f.group, &f.plural, f.namespace.as_deref()) {
            if f.matches(obj) {
                lines.push_back(Line::now(f.event("ADDED", obj)));
            }
        }
        if p.send_initial_events {
            lines.push_back(Line::now(f.bookmark(state.rv(), true)));
        }
        return Ok((lines, Some(state.subscribe())));
    }
    let since: u64 = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
    match state.history_since(since) {
        Ok(changes) => {
            lines.extend(changes.iter().filter_map(|c| {
                Some(Line {
                    bytes: f.change(c)?,
                    at: Some(c.at),
                })
            }));
            Ok((lines, Some(state.subscribe())))
        }
        Err(oldest) => {
            lines.push_back(Line::now(error_line(&ApiError::expired(format!(
                "too old resource version: {since} ({oldest})"
            )))));
            Ok((lines, None))
        }
    }
}

/// Decrements the active-watch gauge when a watch body is dropped.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

enum Next {
    Timeout,
    End,
    Change(Arc<Change>),
}

struct StreamState {
    shared: Arc<Shared>,
    filter: WatchFilter,
    pending: VecDeque<Line>,
    rx: Option<ChangeRx>,
    close: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    done: bool,
    _guard: ActiveGuard,
}

impl StreamState {
    /// A lagging watch ([`super::MemKube::lag_watches`]) holds a change committed `at` until
    /// its lag has passed.
    async fn lag_behind(&self, at: Option<tokio::time::Instant>) {
        let lag = self.shared.watch_lag(&self.filter.plural);
        if let Some(at) = at
            && !lag.is_zero()
        {
            tokio::time::sleep_until(at + lag).await;
        }
    }

    /// At timeout: deliver what is already committed, then a bookmark at the current
    /// resourceVersion so the client resumes from there.
    fn flush_and_bookmark(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let state = self.shared.lock_state();
        loop {
            match rx.try_recv() {
                Ok(c) => {
                    if let Some(bytes) = self.filter.change(&c) {
                        self.pending.push_back(Line {
                            bytes,
                            at: Some(c.at),
                        });
                    }
                }
                Err(TryRecvError::Lagged(_)) => {
                    // The client resumes from its last seen version instead.
                    return;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if self.bookmarks {
            self.pending
                .push_back(Line::now(self.filter.bookmark(state.rv(), false)));
        }
    }
}

/// The body of a watch response: `pending` first, then live changes until the timeout,
/// [`super::MemKube::close_watches`], or the watch falling too far behind.
pub fn stream(
    shared: Arc<Shared>,
    filter: WatchFilter,
    pending: VecDeque<Line>,
    rx: Option<ChangeRx>,
    params: &WatchParams,
) -> impl Stream<Item = Bytes> + Send + 'static {
    shared.active_watches.fetch_add(1, Ordering::SeqCst);
    let close = shared.closer.subscribe();
    let st = StreamState {
        shared: shared.clone(),
        filter,
        pending,
        done: rx.is_none(),
        rx,
        close,
        deadline: tokio::time::Instant::now() + params.timeout,
        bookmarks: params.bookmarks,
        _guard: ActiveGuard(shared),
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(line) = st.pending.pop_front() {
                st.lag_behind(line.at).await;
                return Some((line.bytes, st));
            }
            if st.done {
                return None;
            }
            let next = {
                let StreamState {
                    rx: Some(rx),
                    close,
                    deadline,
                    ..
                } = &mut st
                else {
                    return None;
                };
                tokio::select! {
                    biased;
                    _ = close.changed() => Next::End,
                    _ = tokio::time::sleep_until(*deadline) => Next::Timeout,
                    msg = rx.recv() => match msg {
                        Ok(c) => Next::Change(c),
                        Err(RecvError::Lagged(_) | RecvError::Closed) => Next::End,
                    },
                }
            };
            match next {
                Next::Timeout => {
                    st.done = true;
                    st.flush_and_bookmark();
                }
                Next::End => return None,
                Next::Change(c) => {
                    if let Some(l) = st.filter.change(&c) {
                        st.lag_behind(Some(c.at)).await;
                        return Some((l, st));
                    }
                }
            }
        }
    })
}
