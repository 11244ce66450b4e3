//! CRUD, patch, status-subresource, finalizer, metadata-only, fault and discovery tests.

use super::*;
use crate::Fault;
use http::Method;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::PartialObjectMeta;
use serde_json::json;

fn data(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data.as_ref().and_then(|d| d.get(key)).cloned()
}

#[tokio::test]
async fn configmap_create_get_list_replace_patch() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");

    let created = cms
        .create(&PostParams::default(), &config_map("one", &[("a", "1")]))
        .await
        .unwrap();
    let md = &created.metadata;
    assert_eq!(md.namespace.as_deref(), Some("default"));
    assert!(md.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(md.creation_timestamp.is_some());
    assert_eq!(md.generation, Some(1));
    let rv1: u64 = md.resource_version.as_deref().unwrap().parse().unwrap();

    let dup = cms
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap_err();
    let st = api_error(dup);
    assert_eq!((st.code, st.reason.as_str()), (409, "AlreadyExists"));

    let got = cms.get("one").await.unwrap();
    assert_eq!(got, created);
    assert_eq!(
        mk.get_object("", "configmaps", Some("default"), "one")
            .unwrap()["data"]["a"],
        "1"
    );

    let missing = api_error(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert!(missing.is_not_found());
    assert_eq!(cms.get_opt("nope").await.unwrap(), None);

    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("a".into(), "2".into())]));
    let replaced = cms
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(data(&replaced, "a").as_deref(), Some("2"));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(
        replaced.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );

    let patched = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "3", "a": null}})),
        )
        .await
        .unwrap();
    assert_eq!(data(&patched, "a"), None);
    assert_eq!(data(&patched, "b").as_deref(), Some("3"));

    let strategic = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"c": "4"}})),
        )
        .await
        .unwrap();
    assert_eq!(data(&strategic, "b").as_deref(), Some("3"));
    assert_eq!(data(&strategic, "c").as_deref(), Some("4"));

    let other_ns: Api<ConfigMap> = Api::namespaced(mk.client(), "other");
    other_ns
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(mk.resource_version().to_string().as_str())
    );
    let all: Api<ConfigMap> = Api::all(mk.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    assert_eq!(mk.objects("", "configmaps").len(), 2);

    let miss = api_error(
        cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(miss.code, 404);
}

#[tokio::test]
async fn generate_name_and_secrets() {
    let mk = mem();
    let secrets: Api<Secret> = Api::namespaced(mk.client(), "ns1");
    let mut s = secret("", "token", "hunter2");
    s.metadata.name = None;
    s.metadata.generate_name = Some("gen-".into());
    let a = secrets.create(&PostParams::default(), &s).await.unwrap();
    let b = secrets.create(&PostParams::default(), &s).await.unwrap();
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(na.starts_with("gen-") && na.len() == 9, "{na}");
    assert_ne!(na, nb);
    let got = secrets.get(&na).await.unwrap();
    assert_eq!(
        got.data.unwrap()["token"],
        k8s_openapi::ByteString(b"hunter2".to_vec())
    );

    let mut nameless = secret("", "k", "v");
    nameless.metadata.name = None;
    let st = api_error(
        secrets
            .create(&PostParams::default(), &nameless)
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));

    // Namespace in the body must match the URL.
    let mut wrong = secret("w", "k", "v");
    wrong.metadata.namespace = Some("elsewhere".into());
    let st = api_error(
        secrets
            .create(&PostParams::default(), &wrong)
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 400);

    // stringData is folded into data, like the real server does; type defaults to Opaque.
    let mut sd = secret("sd", "a", "1");
    sd.string_data = Some(BTreeMap::from([("b".into(), "two".into())]));
    sd.immutable = Some(true);
    let created = secrets.create(&PostParams::default(), &sd).await.unwrap();
    assert_eq!(created.string_data, None);
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let data = created.data.clone().unwrap();
    assert_eq!(data["b"], k8s_openapi::ByteString(b"two".to_vec()));
    assert_eq!(data["a"], k8s_openapi::ByteString(b"1".to_vec()));

    // Immutable secrets keep their data.
    let st = api_error(
        secrets
            .patch(
                "sd",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"a": "Mg=="}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    let labelled = secrets
        .patch(
            "sd",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"ok": "yes"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.data, created.data);
}

#[tokio::test]
async fn list_selectors_and_paging() {
    let mk = mem();
    let client = mk.client();
    for (ns, name, labels) in [
        ("a", "x1", json!({"app": "x", "tier": "web"})),
        ("a", "x2", json!({"app": "x"})),
        ("b", "y1", json!({"app": "y", "tier": "db"})),
        ("b", "z1", json!({})),
    ] {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let mut cm = config_map(name, &[]);
        cm.metadata.labels = serde_json::from_value(labels).unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let names = |lp: ListParams| {
        let all = all.clone();
        async move {
            all.list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(ListParams::default().labels("app=x")).await,
        ["x1", "x2"]
    );
    assert_eq!(
        names(ListParams::default().labels("app!=x")).await,
        ["y1", "z1"]
    );
    assert_eq!(
        names(ListParams::default().labels("tier")).await,
        ["x1", "y1"]
    );
    assert_eq!(
        names(ListParams::default().labels("app in (x,y),!tier")).await,
        ["x2"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.name=y1")).await,
        ["y1"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.namespace=a")).await,
        ["x1", "x2"]
    );
    let in_b: Api<ConfigMap> = Api::namespaced(client.clone(), "b");
    assert_eq!(
        in_b.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    let first = all.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = all
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].metadata.name.as_deref(), Some("z1"));
    assert!(
        second
            .metadata
            .continue_
            .as_deref()
            .unwrap_or("")
            .is_empty()
    );
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );

    let deleted = in_b
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=y"),
        )
        .await
        .unwrap();
    assert_eq!(deleted.left().map(|l| l.items.len()), Some(1));
    assert_eq!(names(ListParams::default()).await, ["x1", "x2", "z1"]);
}

#[tokio::test]
async fn stale_resource_versions_conflict() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let v1 = cms
        .create(&PostParams::default(), &config_map("c", &[("k", "1")]))
        .await
        .unwrap();
    let v2 = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
    assert_ne!(v1.metadata.resource_version, v2.metadata.resource_version);

    // PUT with the stale version.
    let st = api_error(
        cms.replace("c", &PostParams::default(), &v1)
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(
        st.message.contains("the object has been modified"),
        "{}",
        st.message
    );

    // Merge patch carrying the stale version.
    let stale = v1.metadata.resource_version.clone().unwrap();
    let st = api_error(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "data": {"k": "3"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(st.code, 409);

    // ... and with the current one.
    let current = v2.metadata.resource_version.clone().unwrap();
    let v3 = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": current}, "data": {"k": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(data(&v3, "k").as_deref(), Some("3"));

    // Built-in resources allow unconditional updates.
    let mut unconditional = v3.clone();
    unconditional.metadata.resource_version = None;
    unconditional.data = Some(BTreeMap::from([("k".into(), "4".into())]));
    let v4 = cms
        .replace("c", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert_eq!(data(&v4, "k").as_deref(), Some("4"));

    // A write that changes nothing does not bump the resourceVersion.
    let same = cms.replace("c", &PostParams::default(), &v4).await.unwrap();
    assert_eq!(same.metadata.resource_version, v4.metadata.resource_version);
}

#[tokio::test]
async fn json_patch_and_test_operation() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    cms.create(&PostParams::default(), &config_map("j", &[("k", "v")]))
        .await
        .unwrap();
    let patch = |ops: serde_json::Value| -> Patch<()> {
        Patch::Json(serde_json::from_value::<json_patch::Patch>(ops).unwrap())
    };
    // The finalizer helper's "add the first finalizer" patch.
    let added = cms
        .patch(
            "j",
            &PatchParams::default(),
            &patch(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x.io/f"]},
                {"op": "replace", "path": "/data/k", "value": "w"},
            ])),
        )
        .await
        .unwrap();
    assert_eq!(added.metadata.finalizers, Some(vec!["x.io/f".to_string()]));
    assert_eq!(data(&added, "k").as_deref(), Some("w"));

    // The same patch again fails its `test`: nothing changes.
    let rv = mk.resource_version();
    let st = api_error(
        cms.patch(
            "j",
            &PatchParams::default(),
            &patch(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["y.io/f"]},
            ])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert_eq!(mk.resource_version(), rv);

    let st = api_error(
        cms.patch(
            "j",
            &PatchParams::default(),
            &patch(json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "other"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert_eq!(
        cms.get("j").await.unwrap().metadata.finalizers,
        Some(vec!["x.io/f".to_string()])
    );

    // Removing the last finalizer drops the field entirely (omitempty).
    let removed = cms
        .patch(
            "j",
            &PatchParams::default(),
            &patch(json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "x.io/f"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])),
        )
        .await
        .unwrap();
    assert_eq!(removed.metadata.finalizers, None);
    let raw = mk
        .get_object("", "configmaps", Some("default"), "j")
        .unwrap();
    assert!(raw["metadata"].get("finalizers").is_none());
}

#[tokio::test]
async fn custom_resource_status_subresource_and_generation() {
    let mk = mem();
    let widgets: Api<Widget> = Api::namespaced(mk.client(), "default");
    let mut w = widget("w1", 1);
    w.status = Some(WidgetStatus {
        ready: true,
        observed_generation: Some(9),
    });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "create must not set status");
    assert_eq!(created.metadata.generation, Some(1));

    // Status through /status: only status changes, generation stays.
    let with_status = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"size": 100},
                "metadata": {"labels": {"sneaky": "yes"}},
                "status": {"ready": true, "observedGeneration": 1}
            })),
        )
        .await
        .unwrap();
    assert_eq!(with_status.spec.size, 1);
    assert_eq!(with_status.metadata.labels, None);
    assert_eq!(with_status.metadata.generation, Some(1));
    assert_eq!(
        with_status.status,
        Some(WidgetStatus {
            ready: true,
            observed_generation: Some(1)
        })
    );

    // Main endpoint: spec change bumps generation, status change is ignored.
    let mut next = with_status.clone();
    next.spec.size = 2;
    next.status = Some(WidgetStatus::default());
    let replaced = widgets
        .replace("w1", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_eq!(replaced.spec.size, 2);
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.status, with_status.status);

    // Metadata-only change: no generation bump.
    let labelled = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert!(labelled.metadata.resource_version > replaced.metadata.resource_version);

    // A status-only write to the main endpoint changes nothing at all.
    let rv = mk.resource_version();
    let ignored = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": false}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status, with_status.status);
    assert_eq!(mk.resource_version(), rv);

    // replace_status with a stale version conflicts.
    let st = api_error(
        widgets
            .replace_status("w1", &PostParams::default(), &with_status)
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 409);

    // Custom resources require a resourceVersion on PUT.
    let mut unconditional = labelled.clone();
    unconditional.metadata.resource_version = None;
    let st = api_error(
        widgets
            .replace("w1", &PostParams::default(), &unconditional)
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);

    // Server-side apply: creates when missing, merges when present, status only via /status.
    let ssa = PatchParams::apply("memkube-test").force();
    let applied = widgets
        .patch(
            "w2",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "memkube.test/v1", "kind": "Widget",
                "metadata": {"name": "w2", "labels": {"x": "1"}},
                "spec": {"size": 5}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.size, 5);
    assert_eq!(applied.metadata.namespace.as_deref(), Some("default"));
    let applied = widgets
        .patch_status(
            "w2",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "memkube.test/v1", "kind": "Widget",
                "status": {"ready": true}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.status.map(|s| s.ready), Some(true));
    assert_eq!(applied.metadata.generation, Some(1));
    let st = api_error(
        widgets
            .patch_status(
                "missing",
                &ssa,
                &Patch::Apply(json!({"apiVersion": "memkube.test/v1", "kind": "Widget"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 404);
    assert_eq!(mk.objects("memkube.test", "widgets").len(), 2);
}

#[tokio::test]
async fn delete_with_finalizers() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let mut cm = config_map("f", &[]);
    cm.metadata.finalizers = Some(vec!["a.io/one".into(), "b.io/two".into()]);
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let resp = cms.delete("f", &DeleteParams::default()).await.unwrap();
    let pending = resp
        .left()
        .expect("object answered while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = cms.get("f").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // Deleting again changes nothing.
    let rv = mk.resource_version();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    assert_eq!(mk.resource_version(), rv);

    // No new finalizers while deleting.
    let st = api_error(
        cms.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["a.io/one", "b.io/two", "c.io/new"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(st.message.contains("no new finalizers"), "{}", st.message);

    // Other updates still work, deletionTimestamp cannot be cleared.
    let kept = cms
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["b.io/two"], "deletionTimestamp": null}}),
            ),
        )
        .await
        .unwrap();
    assert!(kept.metadata.deletion_timestamp.is_some());
    assert_eq!(kept.metadata.finalizers, Some(vec!["b.io/two".to_string()]));

    // Removing the last finalizer deletes the object.
    let mut last = kept.clone();
    last.metadata.finalizers = None;
    cms.replace("f", &PostParams::default(), &last)
        .await
        .unwrap();
    assert_eq!(cms.get_opt("f").await.unwrap(), None);
    assert!(mk.objects("", "configmaps").is_empty());

    // Without finalizers deletion is immediate and answers a Success status.
    cms.create(&PostParams::default(), &config_map("g", &[]))
        .await
        .unwrap();
    let resp = cms
        .delete(
            "g",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let status = resp.right().expect("Status for immediate deletion");
    assert_eq!(status.details.map(|d| d.name), Some("g".to_string()));
    let st = api_error(cms.delete("g", &DeleteParams::default()).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));

    // Preconditions.
    let h = cms
        .create(&PostParams::default(), &config_map("h", &[]))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: h.metadata.uid.clone(),
        }),
        ..Default::default()
    };
    assert_eq!(api_error(cms.delete("h", &dp).await.unwrap_err()).code, 409);
    assert!(
        cms.delete("h", &DeleteParams::default().dry_run())
            .await
            .is_ok()
    );
    assert!(cms.get_opt("h").await.unwrap().is_some());
}

#[tokio::test]
async fn metadata_only_reads_hide_secret_data() {
    let mk = mem();
    let secrets: Api<Secret> = Api::namespaced(mk.client(), "default");
    let mut s = secret("s", "password", "very-secret");
    s.metadata.labels = Some(BTreeMap::from([("k".into(), "v".into())]));
    secrets.create(&PostParams::default(), &s).await.unwrap();

    let pm: PartialObjectMeta<Secret> = secrets.get_metadata("s").await.unwrap();
    assert_eq!(pm.metadata.name.as_deref(), Some("s"));
    assert_eq!(
        pm.types.map(|t| (t.api_version, t.kind)),
        Some(("meta.k8s.io/v1".into(), "PartialObjectMetadata".into()))
    );
    let list = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert!(list.metadata.resource_version.is_some());

    // Nothing of the data went over the wire on the metadata path.
    let client = mk.client();
    for path in [
        "/api/v1/namespaces/default/secrets/s",
        "/api/v1/namespaces/default/secrets",
    ] {
        let req = http::Request::get(path)
            .header(
                http::header::ACCEPT,
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
            .body(Vec::new())
            .unwrap();
        let text = client.request_text(req).await.unwrap();
        assert!(!text.contains("\"data\""), "{text}");
        assert!(text.contains("\"name\":\"s\""), "{text}");
    }
    assert!(mk.requests().iter().filter(|r| r.metadata_only).count() >= 4);
}

#[tokio::test]
async fn fault_injection() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    cms.create(&PostParams::default(), &config_map("c", &[]))
        .await
        .unwrap();
    mk.clear_requests();

    mk.inject_fault(Fault::new(Method::GET, "/configmaps/c", 500, 2));
    mk.inject_fault(Fault::any_method("/configmaps/c", 429, 1));
    assert_eq!(mk.pending_faults(), 3);
    for want in [500, 500, 429] {
        let st = api_error(cms.get("c").await.unwrap_err());
        assert_eq!(st.code, want);
        assert_eq!(
            st.status,
            Some(kube::core::response::StatusSummary::Failure)
        );
    }
    assert!(cms.get("c").await.is_ok());
    assert_eq!(mk.pending_faults(), 0);

    mk.inject_fault(Fault::new(Method::PATCH, "configmaps", 409, 1));
    let st = api_error(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    // The failed request changed nothing; a retry succeeds.
    assert_eq!(data(&cms.get("c").await.unwrap(), "a"), None);
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();

    // Faults can target the query too (e.g. only watches).
    mk.inject_fault(Fault::any_method("watch=true", 503, 1));
    assert!(cms.list(&ListParams::default()).await.is_ok());
    let err = cms
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .err()
        .expect("watch fails");
    assert_eq!(api_error(err).code, 503);

    let log = mk.requests();
    assert_eq!(log.iter().filter(|r| r.injected).count(), 5);
    assert_eq!(mk.request_count(Some(Method::GET), "/configmaps/c"), 5);
    assert_eq!(mk.request_count(Some(Method::PATCH), "/configmaps/c"), 2);
    assert_eq!(mk.request_count(None, "watch=true"), 1);
    assert!(log.iter().any(|r| r.is_watch() && r.status == 503));
}

#[tokio::test]
async fn events_leases_and_discovery() {
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let mk = mem();
    let client = mk.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("ev", 1))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "memkube-test".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    let reference = w.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    // The second identical event patches the first into a series.
    recorder.publish(&ev, &reference).await.unwrap();
    let events = mk.objects("events.k8s.io", "events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Tested");
    assert_eq!(events[0]["regarding"]["name"], "ev");
    assert_eq!(events[0]["series"]["count"], 2);

    // Leases: optimistic concurrency as leader election uses it.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease = Lease {
        metadata: meta("leader"),
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut take = l1.clone();
    take.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let l2 = leases
        .replace("leader", &PostParams::default(), &take)
        .await
        .unwrap();
    let mut late = l1.clone();
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    assert_eq!(
        api_error(
            leases
                .replace("leader", &PostParams::default(), &late)
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    assert_eq!(
        leases
            .get("leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity,
        l2.spec.unwrap().holder_identity
    );

    // Minimal discovery.
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "memkube.test"));
    let core = client.list_core_api_versions().await.unwrap();
    assert_eq!(core.versions, ["v1"]);
    let res = client
        .list_api_group_resources("memkube.test/v1")
        .await
        .unwrap();
    assert!(
        res.resources
            .iter()
            .any(|r| r.name == "widgets" && r.kind == "Widget" && r.namespaced)
    );
}

#[tokio::test]
async fn owner_references_and_namespace_deletion_cascade() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Resource;

    let mk = mem();
    let client = mk.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = widgets
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    let keeper = cms
        .create(&PostParams::default(), &config_map("keeper", &[]))
        .await
        .unwrap();
    let owned_by = |refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>| {
        let mut cm = config_map("x", &[]);
        cm.metadata.owner_references = Some(refs);
        cm
    };
    let mut only = owned_by(vec![owner.controller_owner_ref(&()).unwrap()]);
    only.metadata.name = Some("only".into());
    cms.create(&PostParams::default(), &only).await.unwrap();
    let mut shared = owned_by(vec![
        owner.controller_owner_ref(&()).unwrap(),
        keeper.controller_owner_ref(&()).unwrap(),
    ]);
    shared.metadata.name = Some("shared".into());
    cms.create(&PostParams::default(), &shared).await.unwrap();

    widgets
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        cms.get_opt("only").await.unwrap(),
        None,
        "dependent collected"
    );
    let shared = cms.get("shared").await.unwrap();
    assert_eq!(
        shared
            .metadata
            .owner_references
            .unwrap()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["keeper"],
        "dangling reference dropped, live owner kept"
    );

    // Orphan propagation keeps dependents.
    let owner2 = widgets
        .create(&PostParams::default(), &widget("owner2", 1))
        .await
        .unwrap();
    let mut orphan = owned_by(vec![owner2.controller_owner_ref(&()).unwrap()]);
    orphan.metadata.name = Some("orphan".into());
    cms.create(&PostParams::default(), &orphan).await.unwrap();
    widgets
        .delete("owner2", &DeleteParams::orphan())
        .await
        .unwrap();
    assert_eq!(
        cms.get("orphan").await.unwrap().metadata.owner_references,
        None
    );

    // Deleting a Namespace deletes what is in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("tmp"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let in_tmp: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    in_tmp
        .create(&PostParams::default(), &config_map("doomed", &[]))
        .await
        .unwrap();
    namespaces
        .delete("tmp", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(in_tmp.get_opt("doomed").await.unwrap(), None);
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
}
