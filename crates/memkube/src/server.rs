//! Request handling: decoding, fault injection, dispatch to the store, response encoding.

use super::rbac;
use super::route::{self, Route, Target};
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{WriteOpts, has_status_subresource, parse_body};
use super::watch::{self, WatchFilter, WatchParams, to_partial};
use super::{MemKube, MemKubeBody, RequestRecord};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

/// Default `timeoutSeconds` of a watch that sets none (kube-apiserver's minimum request timeout).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

type EventStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

enum Reply {
    Json(u16, Value),
    Stream(EventStream),
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Self {
        Query(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn json_response(code: u16, body: &Value) -> Response<MemKubeBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response<MemKubeBody> {
    let mut resp = json_response(err.code, &err.to_status());
    if err.code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn stream_response(events: EventStream) -> Response<MemKubeBody> {
    let body = StreamBody::new(events.map(|b| Ok(http_body::Frame::data(b))));
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serves one request.
pub(crate) async fn handle<B>(mk: MemKube, req: Request<B>) -> Response<MemKubeBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    let (parts, body) = req.into_parts();
    let header_str = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let accept = header_str(header::ACCEPT);
    let content_type = header_str(header::CONTENT_TYPE);
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let mut record = RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        status: 200,
        metadata_only,
        injected: false,
    };
    let path_and_query = format!("{path}?{query}");
    let result = if let Some(code) = mk.take_fault(&method, &path_and_query) {
        record.injected = true;
        Err(ApiError::new(code, format!("injected fault ({code})")).with_retry(code))
    } else {
        match body.collect().await {
            Ok(collected) => {
                let body = collected.to_bytes();
                dispatch(
                    &mk,
                    &method,
                    &path,
                    &Query::parse(&query),
                    &body,
                    &content_type,
                    metadata_only,
                )
            }
            Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
        }
    };
    let resp = match result {
        Ok(Reply::Json(code, v)) => json_response(code, &v),
        Ok(Reply::Stream(s)) => stream_response(s),
        Err(e) => error_response(&e),
    };
    record.status = resp.status().as_u16();
    mk.record(record);
    resp
}

impl ApiError {
    fn with_retry(mut self, code: u16) -> Self {
        if code == 429 {
            self.details = Some(Box::new(json!({ "retryAfterSeconds": 1 })));
        }
        self
    }
}

fn dispatch(
    mk: &MemKube,
    method: &Method,
    path: &str,
    q: &Query,
    body: &Bytes,
    content_type: &str,
    metadata_only: bool,
) -> Result<Reply, ApiError> {
    let Some(route) = route::parse(path) else {
        return Err(ApiError::new(
            404,
            "the server could not find the requested resource",
        ));
    };
    if let Route::Resource(t) = route {
        if let Some(rules) = &mk.rules {
            rbac::authorize(rules, method, &t, q.flag("watch"))?;
        }
        return resource(mk, method, &t, q, body, content_type, metadata_only);
    }
    if method != Method::GET {
        return Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        ));
    }
    discovery(mk, &route).map(|v| Reply::Json(200, v))
}

fn selectors(q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))?,
    ))
}

/// The `DeleteOptions` body and whether it (or the query) asks for a dry run.
fn delete_options(body: &Bytes, q: &Query) -> Result<(Value, bool), ApiError> {
    let opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body, false)?
    };
    let dry_run = opts
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
        || q.get("dryRun") == Some("All");
    Ok((opts, dry_run))
}

/// The response for a single object, as `PartialObjectMetadata` when asked.
fn object_reply(code: u16, obj: Value, metadata_only: bool) -> Reply {
    if metadata_only && obj.get("kind").and_then(Value::as_str) != Some("Status") {
        Reply::Json(code, to_partial(&obj))
    } else {
        Reply::Json(code, obj)
    }
}

fn resource(
    mk: &MemKube,
    method: &Method,
    t: &Target,
    q: &Query,
    body: &Bytes,
    content_type: &str,
    metadata_only: bool,
) -> Result<Reply, ApiError> {
    let opts = WriteOpts {
        dry_run: q.get("dryRun") == Some("All"),
        field_manager: q.get("fieldManager").map(str::to_string),
    };
    let shared = &mk.shared;
    match (method.clone(), t.name.is_some()) {
        (Method::GET, _) if q.flag("watch") => watch(mk, t, q, metadata_only),
        (Method::GET, false) => {
            let (labels, fields) = selectors(q)?;
            let limit = match q.get("limit") {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                ),
                None => None,
            };
            let list = shared
                .lock_state()
                .list(t, &labels, &fields, limit, q.get("continue"))?;
            if metadata_only {
                let items: Vec<Value> = list
                    .get("items")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(to_partial).collect())
                    .unwrap_or_default();
                return Ok(Reply::Json(
                    200,
                    json!({
                        "apiVersion": "meta.k8s.io/v1",
                        "kind": "PartialObjectMetadataList",
                        "metadata": list.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        "items": items,
                    }),
                ));
            }
            Ok(Reply::Json(200, list))
        }
        (Method::GET, true) => {
            let obj = shared.lock_state().get(t)?;
            Ok(object_reply(200, obj, metadata_only))
        }
        (Method::POST, false) => {
            let obj = parse_body(body, false)?;
            let created = shared.lock_state().create(t, obj, &opts)?;
            Ok(object_reply(201, created, metadata_only))
        }
        (Method::PUT, true) => {
            let obj = parse_body(body, false)?;
            let updated = shared.lock_state().replace(t, obj, &opts)?;
            Ok(object_reply(200, updated, metadata_only))
        }
        (Method::PATCH, true) => {
            let (code, obj) = shared.lock_state().patch(t, content_type, body, &opts)?;
            Ok(object_reply(code, obj, metadata_only))
        }
        (Method::DELETE, true) => {
            let (options, dry_run) = delete_options(body, q)?;
            let opts = WriteOpts { dry_run, ..opts };
            let (code, obj) = shared.lock_state().delete(t, &options, &opts)?;
            Ok(object_reply(code, obj, metadata_only))
        }
        (Method::DELETE, false) => {
            let (options, dry_run) = delete_options(body, q)?;
            let opts = WriteOpts { dry_run, ..opts };
            let (labels, fields) = selectors(q)?;
            let list = shared
                .lock_state()
                .delete_collection(t, &labels, &fields, &options, &opts)?;
            Ok(Reply::Json(200, list))
        }
        _ => Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn watch(mk: &MemKube, t: &Target, q: &Query, metadata_only: bool) -> Result<Reply, ApiError> {
    if t.subresource.is_some() {
        return Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        ));
    }
    let (labels, mut fields) = selectors(q)?;
    if let Some(name) = &t.name {
        // Legacy watch of a single object by URL.
        fields = FieldSelector::parse(&format!(
            "metadata.name={name}{}",
            q.get("fieldSelector")
                .map(|f| format!(",{f}"))
                .unwrap_or_default()
        ))?;
    }
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => match s.parse::<u64>() {
            Ok(0) => DEFAULT_WATCH_TIMEOUT,
            Ok(n) => Duration::from_secs(n),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid timeoutSeconds {s:?}"
                )));
            }
        },
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let params = WatchParams {
        resource_version: q.get("resourceVersion").unwrap_or("").to_string(),
        send_initial_events: q.flag("sendInitialEvents"),
        bookmarks: q.flag("allowWatchBookmarks"),
        timeout,
    };
    let (filter, lines, rx) = {
        let state = mk.shared.lock_state();
        let filter = WatchFilter {
            group: t.group.clone(),
            plural: t.plural.clone(),
            namespace: t.namespace.clone(),
            labels,
            fields,
            metadata_only,
            api_version: t.api_version(),
            kind: state.kind_of(&t.group, &t.plural),
        };
        let (lines, rx) = watch::start(&state, &filter, &params)?;
        (filter, lines, rx)
    };
    let events = watch::stream(mk.shared.clone(), filter, lines, rx, &params);
    Ok(Reply::Stream(Box::pin(events)))
}

fn api_resources(mk: &MemKube, group: &str, version: &str) -> Value {
    let state = mk.shared.lock_state();
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for ((g, plural), info) in state.kinds() {
        if g != group || !info.versions.contains(version) {
            continue;
        }
        let kind = state.kind_of(g, plural);
        resources.push(json!({
            "name": plural,
            "singularName": kind.to_lowercase(),
            "namespaced": info.namespaced,
            "kind": kind,
            "verbs": verbs,
        }));
        if has_status_subresource(g, plural) {
            resources.push(json!({
                "name": format!("{plural}/status"),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

fn api_groups(mk: &MemKube) -> BTreeMap<String, Vec<String>> {
    let state = mk.shared.lock_state();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((g, _), info) in state.kinds() {
        if g.is_empty() {
            continue;
        }
        let versions = groups.entry(g.clone()).or_default();
        for v in &info.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    groups
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or_else(|| json!({})),
    })
}

fn discovery(mk: &MemKube, route: &Route) -> Result<Value, ApiError> {
    Ok(match route {
        Route::Version => json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0+memkube",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
        Route::CoreVersions => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "memkube:443" }],
        }),
        Route::CoreResources => api_resources(mk, "", "v1"),
        Route::Groups => {
            let groups: Vec<Value> = api_groups(mk)
                .iter()
                .map(|(g, vs)| group_json(g, vs))
                .collect();
            json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
        }
        Route::Group(g) => match api_groups(mk).get(g) {
            Some(vs) => group_json(g, vs),
            None => {
                return Err(ApiError::new(
                    404,
                    "the server could not find the requested resource",
                ));
            }
        },
        Route::GroupResources(g, v) => api_resources(mk, g, v),
        Route::Resource(_) => {
            return Err(ApiError::new(
                404,
                "the server could not find the requested resource",
            ));
        }
    })
}
