//! The object store: objects per resource, the global resourceVersion, change history and write semantics.

use super::patch::{json_patch, merge_patch};
use super::route::Target;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// `(group, plural)`.
pub type ResKey = (String, String);
/// `(namespace or "" when cluster-scoped, name)`.
pub type ObjKey = (String, String);

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated (including deletion being requested on an object with finalizers).
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One committed change, kept in the history and broadcast to watches.
#[derive(Debug)]
pub struct Change {
    /// resourceVersion of the change.
    pub rv: u64,
    /// API group of the object.
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// Kind of change.
    pub kind: ChangeType,
    /// The object after the change (for deletions: the final state, stamped with `rv`).
    pub object: Value,
    /// The object before a modification (for selector transitions).
    pub old: Option<Value>,
    /// When it was committed (a lagging watch delivers it later, see
    /// [`crate::MemKube::lag_watches`]).
    pub at: tokio::time::Instant,
}

/// What was learned about a resource from requests.
#[derive(Clone, Debug, Default)]
pub struct KindInfo {
    /// `kind` of its objects.
    pub kind: String,
    /// API versions it was addressed with.
    pub versions: BTreeSet<String>,
    /// Whether it was addressed under a namespace.
    pub namespaced: bool,
}

/// Broadcast capacity for live watch events; a watch that lags further is closed
/// (its client resumes from the history).
const BROADCAST_CAPACITY: usize = 1024;

/// Shared mutable state, always used under one lock.
#[derive(Debug)]
pub struct State {
    rv: u64,
    resources: BTreeMap<ResKey, BTreeMap<ObjKey, Value>>,
    kinds: BTreeMap<ResKey, KindInfo>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Every change with `rv > history_start` is in `history`.
    history_start: u64,
    tx: broadcast::Sender<Arc<Change>>,
    rng: u64,
}

/// Groups served by kube-apiserver itself (not custom resources).
fn is_builtin_group(group: &str) -> bool {
    group.is_empty()
        || group == "k8s.io"
        || group.ends_with(".k8s.io")
        || matches!(
            group,
            "apps" | "batch" | "autoscaling" | "policy" | "extensions"
        )
}

/// Whether writes are split between the main endpoint and `/status`.
pub fn has_status_subresource(group: &str, plural: &str) -> bool {
    if !is_builtin_group(group) {
        return true;
    }
    matches!(
        (group, plural),
        (
            "",
            "pods"
                | "services"
                | "nodes"
                | "namespaces"
                | "persistentvolumes"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        ) | (
            "apps",
            "deployments" | "statefulsets" | "daemonsets" | "replicasets"
        ) | ("batch", "jobs" | "cronjobs")
            | ("autoscaling", "horizontalpodautoscalers")
            | ("policy", "poddisruptionbudgets")
            | ("networking.k8s.io", "ingresses")
            | ("apiextensions.k8s.io", "customresourcedefinitions")
            | ("certificates.k8s.io", "certificatesigningrequests")
    )
}

/// A kind for a resource nobody told us about.
fn guess_kind(plural: &str) -> String {
    let known = [
        ("configmaps", "ConfigMap"),
        ("secrets", "Secret"),
        ("events", "Event"),
        ("leases", "Lease"),
        ("pods", "Pod"),
        ("namespaces", "Namespace"),
        ("services", "Service"),
        ("serviceaccounts", "ServiceAccount"),
        ("deployments", "Deployment"),
        ("customresourcedefinitions", "CustomResourceDefinition"),
    ];
    if let Some((_, k)) = known.iter().find(|(p, _)| *p == plural) {
        return (*k).to_string();
    }
    let singular = plural.strip_suffix('s').unwrap_or(plural);
    let mut c = singular.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The current time as a Kubernetes `Time` (RFC 3339, seconds).
pub fn now_timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// `metadata`, created if missing or not an object (the object itself too).
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(root) = obj else {
        unreachable!("made an object above")
    };
    let m = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    let Value::Object(m) = m else {
        unreachable!("made an object above")
    };
    m
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

/// `metadata.resourceVersion`, `""` if unset.
pub fn rv_of(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion").unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_deleting(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

/// Standard base64 with padding (Secret `data` values).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What kube-apiserver's built-in strategies do to a few core types on every write:
/// Secrets get `stringData` folded into `data` and a default `type`.
fn builtin_defaults(group: &str, plural: &str, obj: &mut Value) {
    if group.is_empty()
        && plural == "secrets"
        && let Some(o) = obj.as_object_mut()
    {
        if let Some(Value::Object(string_data)) = o.remove("stringData") {
            let data = o.entry("data").or_insert_with(|| Value::Object(Map::new()));
            if !data.is_object() {
                *data = Value::Object(Map::new());
            }
            if let Value::Object(data) = data {
                for (k, v) in string_data {
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    data.insert(k, json!(base64(text.as_bytes())));
                }
            }
        }
        if o.get("type")
            .is_none_or(|t| t.as_str().is_none_or(str::is_empty))
        {
            o.insert("type".into(), json!("Opaque"));
        }
    }
}

/// ConfigMaps and Secrets marked `immutable` keep their data and stay immutable.
fn immutable_violation(group: &str, plural: &str, old: &Value, new: &Value) -> Option<String> {
    if !group.is_empty() || !matches!(plural, "configmaps" | "secrets") {
        return None;
    }
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return None;
    }
    if new.get("immutable") != Some(&Value::Bool(true)) {
        return Some("immutable: Forbidden: field is immutable when `immutable` is set".into());
    }
    ["data", "binaryData"]
        .iter()
        .any(|f| old.get(f) != new.get(f))
        .then(|| "data: Forbidden: field is immutable when `immutable` is set".to_string())
}

/// Drops empty metadata collections, like Go's `omitempty` does on the wire.
fn normalize(obj: &mut Value) {
    let m = meta_mut(obj);
    for f in ["finalizers", "labels", "annotations", "ownerReferences"] {
        let empty = match m.get(f) {
            Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(f);
        }
    }
}

/// Everything but metadata and status: what `metadata.generation` tracks.
fn spec_part(obj: &Value) -> Value {
    match obj {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn copy_field(dst: &mut Map<String, Value>, src: Option<&Map<String, Value>>, f: &str) {
    match src.and_then(|s| s.get(f)) {
        Some(v) => {
            dst.insert(f.to_string(), v.clone());
        }
        None => {
            dst.remove(f);
        }
    }
}

/// Parses a request body as JSON (or YAML, for apply patches sent by other clients).
pub fn parse_body(body: &[u8], yaml_ok: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if yaml_ok => serde_saphyr::from_slice::<Value>(body)
            .map_err(|_| ApiError::bad_request(format!("error decoding request body: {e}"))),
        Err(e) => Err(ApiError::bad_request(format!(
            "error decoding request body: {e}"
        ))),
    }
}

/// Options common to writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
}

fn not_found_sub(t: &Target) -> ApiError {
    ApiError::new(404, "the server could not find the requested resource")
        .with_details(json!({"kind": t.plural, "name": t.name}))
}

impl ApiError {
    fn with_details(mut self, d: Value) -> Self {
        self.details = Some(Box::new(d));
        self
    }
}

impl State {
    /// An empty store keeping `history_limit` changes for watch resumption.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        State {
            rv: 1,
            resources: BTreeMap::new(),
            kinds: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            history_start: 1,
            tx,
            rng: seed | 1,
        }
    }

    /// The latest resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Sets how many changes are kept.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.trim_history();
    }

    /// Drops the whole history: watches resuming from an older resourceVersion get 410 Gone.
    pub fn compact_history(&mut self) {
        self.history.clear();
        self.history_start = self.rv;
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.history_start = c.rv;
            }
        }
    }

    /// Changes with `rv > since`, or `Err(history_start)` if some were already dropped.
    pub fn history_since(&self, since: u64) -> Result<Vec<Arc<Change>>, u64> {
        if since < self.history_start {
            return Err(self.history_start);
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > since)
            .cloned()
            .collect())
    }

    /// A receiver of every change committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn new_uid(&mut self) -> String {
        let a = self.next_rand();
        let b = self.next_rand();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.next_rand();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn learn(&mut self, t: &Target, obj: &Value) {
        let info = self
            .kinds
            .entry((t.group.clone(), t.plural.clone()))
            .or_default();
        if let Some(k) = obj.get("kind").and_then(Value::as_str) {
            info.kind = k.to_string();
        }
        info.versions.insert(t.version.clone());
        info.namespaced |= t.namespace.is_some();
    }

    /// Resources seen so far.
    pub fn kinds(&self) -> &BTreeMap<ResKey, KindInfo> {
        &self.kinds
    }

    /// The kind of a resource's objects (learned, else guessed from the plural).
    pub fn kind_of(&self, group: &str, plural: &str) -> String {
        self.kinds
            .get(&(group.to_string(), plural.to_string()))
            .map(|k| k.kind.clone())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| guess_kind(plural))
    }

    /// All objects of a resource (every namespace), ordered by namespace and name.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<&Value> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// Objects of a resource, optionally in one namespace.
    pub fn objects_in<'a>(
        &'a self,
        group: &str,
        plural: &str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|want| want == ns))
    }

    /// One object.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Commits a change: bumps the resourceVersion, stamps it, stores or removes the
    /// object, records it in the history and broadcasts it to watches.
    fn commit(
        &mut self,
        t: &Target,
        name: &str,
        kind: ChangeType,
        mut obj: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let ns = t.namespace.clone().unwrap_or_default();
        let res = self
            .resources
            .entry((t.group.clone(), t.plural.clone()))
            .or_default();
        let key = (ns.clone(), name.to_string());
        match kind {
            ChangeType::Deleted => {
                res.remove(&key);
            }
            ChangeType::Added | ChangeType::Modified => {
                res.insert(key, obj.clone());
            }
        }
        if kind != ChangeType::Deleted {
            self.learn(t, &obj);
        }
        let change = Arc::new(Change {
            rv,
            group: t.group.clone(),
            plural: t.plural.clone(),
            namespace: ns,
            kind,
            object: obj.clone(),
            old,
            at: tokio::time::Instant::now(),
        });
        self.history.push_back(change.clone());
        self.trim_history();
        // No receivers is fine.
        let _ = self.tx.send(change);
        obj
    }

    fn lookup(&self, t: &Target) -> Result<(String, Value), ApiError> {
        let name = t
            .name
            .clone()
            .ok_or_else(|| ApiError::new(405, "a resource name is required"))?;
        let ns = t.namespace.as_deref().unwrap_or("");
        self.object(&t.group, &t.plural, ns, &name)
            .cloned()
            .map(|o| (name.clone(), o))
            .ok_or_else(|| ApiError::not_found(&t.group, &t.plural, &name))
    }

    fn check_subresource(t: &Target) -> Result<bool, ApiError> {
        match t.subresource.as_deref() {
            None => Ok(false),
            Some("status") if has_status_subresource(&t.group, &t.plural) => Ok(true),
            Some(_) => Err(not_found_sub(t)),
        }
    }

    /// GET of one object (or its `/status`, which is the whole object).
    pub fn get(&self, t: &Target) -> Result<Value, ApiError> {
        Self::check_subresource(t)?;
        self.lookup(t).map(|(_, o)| o)
    }

    /// LIST with selectors and `limit`/`continue` paging.
    pub fn list(
        &self,
        t: &Target,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (list_rv, after) = match cont.filter(|c| !c.is_empty()) {
            None => (self.rv, None),
            Some(c) => {
                let mut parts = c.splitn(3, '|');
                match (
                    parts.next().and_then(|r| r.parse::<u64>().ok()),
                    parts.next(),
                    parts.next(),
                ) {
                    (Some(rv), Some(ns), Some(name)) => {
                        (rv, Some((ns.to_string(), name.to_string())))
                    }
                    _ => return Err(ApiError::bad_request("invalid continue token")),
                }
            }
        };
        let matching: Vec<(&ObjKey, &Value)> = self
            .objects_in(&t.group, &t.plural, t.namespace.as_deref())
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .collect();
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<Value> = matching
            .iter()
            .take(limit)
            .map(|(_, o)| (*o).clone())
            .collect();
        let remaining = matching.len() - page.len();
        let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
        if remaining > 0
            && let Some(((ns, name), _)) = matching.get(page.len().saturating_sub(1))
        {
            metadata["continue"] = json!(format!("{list_rv}|{ns}|{name}"));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let items = page;
        Ok(json!({
            "apiVersion": t.api_version(),
            "kind": format!("{}List", self.kind_of(&t.group, &t.plural)),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// POST: creates an object.
    pub fn create(&mut self, t: &Target, body: Value, opts: &WriteOpts) -> Result<Value, ApiError> {
        if t.subresource.is_some() || t.name.is_some() {
            return Err(ApiError::new(
                405,
                "the server does not allow this method on the requested resource",
            ));
        }
        let mut obj = body;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.kind_of(&t.group, &t.plural));
        if obj.get("apiVersion").is_none() {
            obj["apiVersion"] = json!(t.api_version());
        }
        if obj.get("kind").is_none() {
            obj["kind"] = json!(kind);
        }
        let m = meta_mut(&mut obj);
        match (&t.namespace, m.get("namespace").and_then(Value::as_str)) {
            (Some(url_ns), Some(body_ns)) if !body_ns.is_empty() && body_ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(url_ns), _) => {
                m.insert("namespace".into(), json!(url_ns));
            }
            (None, _) => {
                m.remove("namespace");
            }
        }
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            return Err(ApiError::new(
                500,
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = m.get("name").and_then(Value::as_str).map(str::to_string);
        let generate = m
            .get("generateName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ns = t.namespace.clone().unwrap_or_default();
        let name = match (name.filter(|n| !n.is_empty()), generate) {
            (Some(n), _) => n,
            (None, Some(prefix)) if !prefix.is_empty() => {
                let mut candidate = String::new();
                for _ in 0..16 {
                    candidate = format!("{prefix}{}", self.random_suffix());
                    if self.object(&t.group, &t.plural, &ns, &candidate).is_none() {
                        break;
                    }
                }
                candidate
            }
            _ => {
                return Err(ApiError::invalid(
                    &t.group,
                    &t.plural,
                    &kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        if self.object(&t.group, &t.plural, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&t.group, &t.plural, &name));
        }
        let uid = self.new_uid();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now_timestamp()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if has_status_subresource(&t.group, &t.plural)
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        builtin_defaults(&t.group, &t.plural, &mut obj);
        normalize(&mut obj);
        if opts.dry_run {
            return Ok(obj);
        }
        Ok(self.commit(t, &name, ChangeType::Added, obj, None))
    }

    /// PUT: replaces an object (or its status).
    pub fn replace(
        &mut self,
        t: &Target,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        Self::check_subresource(t)?;
        let (name, old) = self.lookup(t)?;
        // Custom resources do not allow unconditional updates (main or status).
        let require_rv = !is_builtin_group(&t.group);
        self.update_existing(t, &name, old, body, require_rv, opts)
    }

    /// PATCH with any of the four content types kube sends.
    /// Returns the HTTP code (201 when an apply created the object) and the object.
    pub fn patch(
        &mut self,
        t: &Target,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
    ) -> Result<(u16, Value), ApiError> {
        let status = Self::check_subresource(t)?;
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let is_apply = ct == "application/apply-patch+yaml";
        let patch = parse_body(body, is_apply)?;
        if is_apply && opts.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "patchoptions",
                "PatchOptions.meta.k8s.io",
                "",
                "fieldManager: Required value: is required for apply patch",
            ));
        }
        let existing = self.lookup(t);
        let (name, old) = match existing {
            Ok(found) => found,
            Err(e) if is_apply && !status && e.code == 404 => {
                let mut obj = patch;
                if !obj.is_object() {
                    return Err(ApiError::bad_request("apply patch must be a JSON object"));
                }
                let m = meta_mut(&mut obj);
                if let Some(n) = &t.name {
                    match m.get("name").and_then(Value::as_str) {
                        Some(body_name) if body_name != n => {
                            return Err(ApiError::bad_request(format!(
                                "the name of the object ({body_name}) does not match the name on the URL ({n})"
                            )));
                        }
                        _ => {
                            m.insert("name".into(), json!(n));
                        }
                    }
                }
                m.remove("resourceVersion");
                let collection = Target {
                    name: None,
                    ..t.clone()
                };
                return self.create(&collection, obj, opts).map(|o| (201, o));
            }
            Err(e) => return Err(e),
        };
        let mut patched = old.clone();
        match ct.as_str() {
            "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml" => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("patch must be a JSON object"));
                }
                merge_patch(&mut patched, &patch);
            }
            "application/json-patch+json" => {
                json_patch(&mut patched, &patch).map_err(|e| ApiError::new(422, e))?;
            }
            other => {
                return Err(ApiError::new(
                    415,
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                    ),
                ));
            }
        }
        self.update_existing(t, &name, old, patched, false, opts)
            .map(|o| (200, o))
    }

    /// The update path shared by PUT and PATCH.
    fn update_existing(
        &mut self,
        t: &Target,
        name: &str,
        old: Value,
        mut new: Value,
        require_rv: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let (group, plural) = (t.group.as_str(), t.plural.as_str());
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let kind = old
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for f in ["apiVersion", "kind"] {
            if new.get(f).is_none()
                && let Some(v) = old.get(f)
            {
                new[f] = v.clone();
            }
        }
        let m = meta_mut(&mut new);
        match m.get("name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                m.insert("name".into(), json!(name));
            }
        }
        match (&t.namespace, m.get("namespace").and_then(Value::as_str)) {
            (Some(url_ns), Some(body_ns)) if !body_ns.is_empty() && body_ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(url_ns), _) => {
                m.insert("namespace".into(), json!(url_ns));
            }
            (None, _) => {
                m.remove("namespace");
            }
        }
        let old_rv = rv_of(&old).to_string();
        let new_rv = rv_of(&new).to_string();
        if new_rv.is_empty() {
            if require_rv {
                return Err(ApiError::invalid(
                    group,
                    plural,
                    &kind,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
        } else if new_rv != old_rv {
            return Err(ApiError::conflict(group, plural, name));
        }
        let old_uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        if let Some(uid) = meta_str(&new, "uid")
            && !uid.is_empty()
            && uid != old_uid
        {
            return Err(ApiError::conflict_msg(
                group,
                plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        let status_only = t.subresource.as_deref() == Some("status");
        let mut result = if status_only {
            let mut r = old.clone();
            match (new.get("status"), r.as_object_mut()) {
                (Some(s), _) => r["status"] = s.clone(),
                (None, Some(o)) => {
                    o.remove("status");
                }
                (None, None) => {}
            }
            r
        } else {
            let mut r = new;
            builtin_defaults(group, plural, &mut r);
            if let Some(why) = immutable_violation(group, plural, &old, &r) {
                return Err(ApiError::invalid(group, plural, &kind, name, &why));
            }
            let old_meta = meta(&old);
            let m = meta_mut(&mut r);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                copy_field(m, old_meta, f);
            }
            if has_status_subresource(group, plural)
                && let Some(o) = r.as_object_mut()
            {
                match old.get("status") {
                    Some(s) => {
                        o.insert("status".into(), s.clone());
                    }
                    None => {
                        o.remove("status");
                    }
                }
            }
            if is_deleting(&old) {
                let before = finalizers(&old);
                let added: Vec<String> = finalizers(&r)
                    .into_iter()
                    .filter(|f| !before.contains(f))
                    .collect();
                if !added.is_empty() {
                    return Err(ApiError::invalid(
                        group,
                        plural,
                        &kind,
                        name,
                        &format!(
                            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                        ),
                    ));
                }
            }
            if spec_part(&r) != spec_part(&old) {
                let generation = meta(&old)
                    .and_then(|m| m.get("generation"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut r).insert("generation".into(), json!(generation + 1));
            }
            r
        };
        normalize(&mut result);
        meta_mut(&mut result).insert("resourceVersion".into(), json!(old_rv));
        if result == old {
            // Like etcd's GuaranteedUpdate: an update that changes nothing writes nothing.
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(result);
        }
        if is_deleting(&result) && finalizers(&result).is_empty() {
            let removed = self.commit(t, name, ChangeType::Deleted, result, None);
            self.collect_garbage(&removed, t, false);
            return Ok(removed);
        }
        Ok(self.commit(t, name, ChangeType::Modified, result, Some(old)))
    }

    /// Whether any stored object has this uid.
    fn uid_exists(&self, uid: &str) -> bool {
        self.resources
            .values()
            .flat_map(|m| m.values())
            .any(|o| meta_str(o, "uid") == Some(uid))
    }

    /// A synchronous stand-in for the garbage collector and namespace controller, run after
    /// `removed` left the store: dependents (by `ownerReferences`) whose owners are all gone
    /// are deleted (or, for `orphan`, just lose the reference), and deleting a Namespace
    /// deletes everything in it. Deletion honours finalizers as usual.
    fn collect_garbage(&mut self, removed: &Value, t: &Target, orphan: bool) {
        let Some(uid) = meta_str(removed, "uid").map(str::to_string) else {
            return;
        };
        let removed_ns = (t.group.is_empty() && t.plural == "namespaces")
            .then(|| meta_str(removed, "name").unwrap_or_default().to_string());
        let mut dependents = Vec::new();
        for ((group, plural), objs) in &self.resources {
            for ((ns, name), obj) in objs {
                let owned = meta(obj)
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                    });
                let in_ns = removed_ns.as_deref().is_some_and(|r| r == ns);
                if owned || in_ns {
                    let version = obj
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .and_then(|v| v.rsplit('/').next())
                        .unwrap_or("v1")
                        .to_string();
                    let target = Target {
                        group: group.clone(),
                        version,
                        plural: plural.clone(),
                        namespace: (!ns.is_empty()).then(|| ns.clone()),
                        name: Some(name.clone()),
                        subresource: None,
                    };
                    dependents.push((target, obj.clone(), in_ns));
                }
            }
        }
        for (target, obj, in_ns) in dependents {
            let refs: Vec<Value> = meta(&obj)
                .and_then(|m| m.get("ownerReferences"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let others_alive = refs.iter().any(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u != uid && self.uid_exists(u))
            });
            if !in_ns && (orphan || others_alive) {
                // Drop the dangling reference only.
                let kept: Vec<Value> = refs
                    .into_iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                    .collect();
                let mut new = obj.clone();
                meta_mut(&mut new).insert("ownerReferences".into(), Value::Array(kept));
                normalize(&mut new);
                if let Some(name) = target.name.clone() {
                    self.commit(&target, &name, ChangeType::Modified, new, Some(obj));
                }
            } else {
                // Already gone (e.g. removed by an earlier cascade step) is fine.
                let _ = self.delete(&target, &json!({}), &WriteOpts::default());
            }
        }
    }

    /// DELETE of one object: marks it for deletion while it has finalizers, else removes it.
    /// Returns the HTTP code and the body (object or `Status`).
    pub fn delete(
        &mut self,
        t: &Target,
        options: &Value,
        opts: &WriteOpts,
    ) -> Result<(u16, Value), ApiError> {
        if t.subresource.is_some() {
            return Err(not_found_sub(t));
        }
        let (name, old) = self.lookup(t)?;
        let (group, plural) = (t.group.as_str(), t.plural.as_str());
        if let Some(pre) = options.get("preconditions") {
            let uid = meta_str(&old, "uid").unwrap_or_default();
            if let Some(want) = pre.get("uid").and_then(Value::as_str)
                && want != uid
            {
                return Err(ApiError::conflict_msg(
                    group,
                    plural,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
            let rv = rv_of(&old);
            if let Some(want) = pre.get("resourceVersion").and_then(Value::as_str)
                && want != rv
            {
                return Err(ApiError::conflict_msg(
                    group,
                    plural,
                    &name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                    ),
                ));
            }
        }
        if !finalizers(&old).is_empty() {
            if is_deleting(&old) {
                return Ok((202, old));
            }
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(now_timestamp()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if opts.dry_run {
                return Ok((202, new));
            }
            let obj = self.commit(t, &name, ChangeType::Modified, new, Some(old));
            return Ok((202, obj));
        }
        let mut details = json!({
            "name": name,
            "kind": plural,
            "uid": meta_str(&old, "uid").unwrap_or_default(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        if !opts.dry_run {
            let removed = self.commit(t, &name, ChangeType::Deleted, old, None);
            let orphan = options.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan");
            self.collect_garbage(&removed, t, orphan);
        }
        Ok((
            200,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }),
        ))
    }

    /// DELETE on a collection: deletes every matching object; answers the list of
    /// objects as they were when deletion was requested.
    pub fn delete_collection(
        &mut self,
        t: &Target,
        labels: &LabelSelector,
        fields: &FieldSelector,
        options: &Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let keys: Vec<(ObjKey, Value)> = self
            .objects_in(&t.group, &t.plural, t.namespace.as_deref())
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        let mut items = Vec::new();
        for ((ns, name), obj) in keys {
            let one = Target {
                namespace: (!ns.is_empty()).then_some(ns),
                name: Some(name),
                ..t.clone()
            };
            self.delete(&one, options, opts)?;
            items.push(obj);
        }
        Ok(json!({
            "apiVersion": t.api_version(),
            "kind": format!("{}List", self.kind_of(&t.group, &t.plural)),
            "metadata": { "resourceVersion": self.rv.to_string() },
            "items": items,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = json!({"data": {"a": "YQ=="}, "stringData": {"b": "hello"}});
        builtin_defaults("", "secrets", &mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "YQ==", "b": "aGVsbG8="}, "type": "Opaque"})
        );
        let mut cm = json!({"stringData": {"b": "x"}});
        builtin_defaults("", "configmaps", &mut cm);
        assert!(cm.get("stringData").is_some());
    }
}
