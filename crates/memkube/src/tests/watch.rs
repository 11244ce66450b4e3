//! Watch tests: raw watches, kube-runtime watchers, metadata watchers, 410 relists.

use super::*;
use http_body_util::BodyExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher::Event};
use serde_json::json;
use tower::ServiceExt;

fn cm_name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

/// Reads events of a raw watch until `n` arrive.
async fn take_events<S, K>(s: &mut S, n: usize) -> Vec<WatchEvent<K>>
where
    S: Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(WAIT, s.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event ok");
        out.push(ev);
    }
    out
}

fn kind<K>(e: &WatchEvent<K>) -> &'static str {
    match e {
        WatchEvent::Added(_) => "ADDED",
        WatchEvent::Modified(_) => "MODIFIED",
        WatchEvent::Deleted(_) => "DELETED",
        WatchEvent::Bookmark(_) => "BOOKMARK",
        WatchEvent::Error(_) => "ERROR",
    }
}

#[tokio::test]
async fn raw_watch_replays_history_and_reports_410() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let start = mk.resource_version().to_string();
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let mut s = cms
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    let evs = take_events(&mut s, 3).await;
    assert_eq!(
        evs.iter().map(kind).collect::<Vec<_>>(),
        ["ADDED", "MODIFIED", "DELETED"]
    );
    if let WatchEvent::Deleted(cm) = &evs[2] {
        assert_eq!(
            cm.metadata.resource_version.as_deref(),
            Some(mk.resource_version().to_string().as_str())
        );
    }
    // Live events follow on the same stream.
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    let evs = take_events(&mut s, 1).await;
    assert!(matches!(&evs[0], WatchEvent::Added(cm) if cm_name(cm) == "b"));
    assert_eq!(mk.active_watches(), 1);
    drop(s);
    eventually("watch closed", || async { mk.active_watches() == 0 }).await;

    // "0" starts from now with synthetic ADDED events.
    let mut s = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let evs = take_events(&mut s, 1).await;
    assert!(matches!(&evs[0], WatchEvent::Added(cm) if cm_name(cm) == "b"));
    drop(s);

    // After compaction an old version is answered with 410 Gone.
    mk.compact_history();
    let mut s = cms
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    match take_events(&mut s, 1).await.remove(0) {
        WatchEvent::Error(st) => assert_eq!((st.code, st.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .is_none(),
        "stream ends after the error"
    );
}

#[tokio::test]
async fn watch_selectors_transition_and_timeout_bookmark() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let other: Api<ConfigMap> = Api::namespaced(mk.client(), "other");
    let rv = mk.resource_version().to_string();
    let wp = WatchParams::default().labels("app=x").timeout(1);
    let mut s = cms.watch(&wp, &rv).await.unwrap().boxed();

    cms.create(&PostParams::default(), &config_map("t", &[]))
        .await
        .unwrap();
    let mut x = config_map("ox", &[]);
    x.metadata.labels = Some(BTreeMap::from([("app".into(), "x".into())]));
    other.create(&PostParams::default(), &x).await.unwrap();
    let label = |v: serde_json::Value| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    let pp = PatchParams::default();
    cms.patch("t", &pp, &label(json!("x"))).await.unwrap();
    cms.patch("t", &pp, &Patch::Merge(json!({"data": {"k": "v"}})))
        .await
        .unwrap();
    cms.patch("t", &pp, &label(json!("y"))).await.unwrap();

    let evs = take_events(&mut s, 3).await;
    assert_eq!(
        evs.iter().map(kind).collect::<Vec<_>>(),
        ["ADDED", "MODIFIED", "DELETED"],
        "entering and leaving the selector; other namespace not seen"
    );
    // At timeoutSeconds the stream ends with a bookmark at the latest version.
    let evs = take_events(&mut s, 1).await;
    match &evs[0] {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata.resource_version,
                mk.resource_version().to_string()
            );
            assert_eq!(b.types.kind, "ConfigMap");
        }
        other => panic!("expected bookmark, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    cms.create(&PostParams::default(), &config_map("pre", &[]))
        .await
        .unwrap();
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitApply(cm) if cm_name(&cm) == "pre"));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitDone));

    let writer = cms.clone();
    tokio::spawn(async move {
        writer
            .create(&PostParams::default(), &config_map("new", &[("k", "1")]))
            .await
            .unwrap();
        writer
            .patch(
                "new",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "2"}})),
            )
            .await
            .unwrap();
        writer
            .delete("new", &DeleteParams::default())
            .await
            .unwrap();
    });
    match next(&mut w).await.unwrap() {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "1"),
        other => panic!("{other:?}"),
    }
    match next(&mut w).await.unwrap() {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "2"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut w).await.unwrap(), Event::Delete(cm) if cm_name(&cm) == "new"));

    // The list-then-watch protocol: one list, one watch from the list's version.
    let reqs = mk.requests();
    assert_eq!(reqs.iter().filter(|r| r.is_watch()).count(), 1);
    assert!(
        reqs.iter()
            .any(|r| !r.is_watch() && r.query.contains("limit=500"))
    );

    // Closed watches are resumed from the last version without a relist.
    mk.close_watches();
    cms.create(&PostParams::default(), &config_map("after", &[]))
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Apply(cm) if cm_name(&cm) == "after"));
    let watches = mk.requests().into_iter().filter(|r| r.is_watch()).count();
    assert_eq!(watches, 2);
    assert_eq!(mk.request_count(None, "limit=500"), 1);
}

#[tokio::test]
async fn watcher_relists_after_410() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitApply(_)));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitDone));
    // The watcher has not started its watch yet (streams are lazy): make its list
    // version too old before it does.
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    mk.compact_history();
    match next(&mut w).await {
        Err(watcher::Error::WatchError(st)) => assert_eq!(st.code, 410),
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    let mut names = Vec::new();
    loop {
        match next(&mut w).await.unwrap() {
            Event::InitApply(cm) => names.push(cm_name(&cm)),
            Event::InitDone => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(names, ["a", "b"]);
    assert_eq!(mk.request_count(None, "limit=500"), 2, "relisted once");
}

#[tokio::test]
async fn streaming_list_watcher() {
    let mk = mem();
    let widgets: Api<Widget> = Api::all(mk.client());
    let ns: Api<Widget> = Api::namespaced(mk.client(), "n1");
    ns.create(&PostParams::default(), &widget("s1", 1))
        .await
        .unwrap();
    let mut w = watcher(widgets, watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitApply(x) if x.spec.size == 1));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitDone));
    ns.patch(
        "s1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Apply(x) if x.spec.size == 2));
    assert!(
        mk.requests()
            .iter()
            .any(|r| r.query.contains("sendInitialEvents=true"))
    );
    assert_eq!(mk.request_count(None, "limit="), 0, "no list call");
}

#[tokio::test]
async fn metadata_watcher_never_sees_data() {
    let mk = mem();
    let secrets: Api<Secret> = Api::namespaced(mk.client(), "default");
    secrets
        .create(&PostParams::default(), &secret("s1", "key", "TOPSECRET-1"))
        .await
        .unwrap();
    // kube 5's way: an `Api<PartialObjectMeta<K>>` makes metadata-only requests.
    let meta_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(mk.client(), "default");
    let mut w = watcher(meta_api, watcher::Config::default())
        .default_backoff()
        .boxed();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    assert!(
        matches!(next(&mut w).await.unwrap(), Event::InitApply(m) if m.metadata.name.as_deref() == Some("s1"))
    );
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitDone));
    secrets
        .create(&PostParams::default(), &secret("s2", "key", "TOPSECRET-2"))
        .await
        .unwrap();
    let applied = match next(&mut w).await.unwrap() {
        Event::Apply(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(applied.metadata.name.as_deref(), Some("s2"));
    assert_eq!(applied.types.unwrap().kind, "PartialObjectMetadata");
    secrets
        .delete("s2", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        matches!(next(&mut w).await.unwrap(), Event::Delete(m) if m.metadata.name.as_deref() == Some("s2"))
    );
    assert!(mk.requests().iter().filter(|r| r.metadata_only).count() >= 2);

    // The deprecated helper still works the same way.
    #[allow(deprecated)]
    let mut old =
        kube::runtime::metadata_watcher(secrets.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut old).await.unwrap(), Event::Init));
    assert!(
        matches!(next(&mut old).await.unwrap(), Event::InitApply(m) if m.metadata.name.as_deref() == Some("s1"))
    );
    assert!(matches!(next(&mut old).await.unwrap(), Event::InitDone));

    // On the wire: the metadata watch carries no data at all.
    let req = http::Request::get("/api/v1/namespaces/default/secrets?watch=true&resourceVersion=0")
        .header(
            http::header::ACCEPT,
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = mk.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let line = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(line.contains("\"name\":\"s1\""), "{line}");
    assert!(line.contains("PartialObjectMetadata"), "{line}");
    assert!(
        !line.contains("TOPSECRET") && !line.contains("\"data\""),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_watch_sees_every_change_in_order() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let start = mk.resource_version().to_string();
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let cms = cms.clone();
            tokio::spawn(async move {
                let name = format!("cm{i}");
                cms.create(&PostParams::default(), &config_map(&name, &[]))
                    .await
                    .unwrap();
                for n in 0..25 {
                    cms.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"n": n.to_string()}})),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    // Start watching while the writers run: replayed history and live events must join
    // without gaps or duplicates.
    tokio::task::yield_now().await;
    let mut s = cms
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    for w in writers {
        w.await.unwrap();
    }
    let evs = take_events(&mut s, 4 * 26).await;
    let rvs: Vec<u64> = evs
        .iter()
        .map(|e| match e {
            WatchEvent::Added(cm) | WatchEvent::Modified(cm) => cm
                .metadata
                .resource_version
                .as_deref()
                .unwrap()
                .parse()
                .unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let first: u64 = start.parse().unwrap();
    assert_eq!(rvs, ((first + 1)..=(first + 104)).collect::<Vec<_>>());
    assert_eq!(mk.resource_version(), first + 104);
}

#[tokio::test]
async fn lagging_watch_is_closed_and_resumed_from_history() {
    let mk = mem();
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitDone));
    cms.create(&PostParams::default(), &config_map("lag", &[("n", "0")]))
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Apply(_)));
    // More changes than the live buffer holds while the watcher is not reading.
    let total = 1100;
    for n in 1..=total {
        cms.patch(
            "lag",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": n.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < total {
        match next(&mut w).await.unwrap() {
            Event::Apply(cm) => seen.push(cm.data.unwrap()["n"].parse::<usize>().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "no gaps, no duplicates"
    );
    let watches = mk.requests().into_iter().filter(|r| r.is_watch()).count();
    assert_eq!(watches, 2, "the lagging watch was closed and resumed once");
    assert_eq!(mk.request_count(None, "limit=500"), 1, "without a relist");
}

/// A lagging watch (`lag_watches`) delivers each live change its lag after the commit, in
/// order, while reads answer with the new object at once; other resources' watches do not lag.
#[tokio::test]
async fn a_lagging_watch_delivers_changes_late_while_reads_are_current() {
    let mk = mem();
    let lag = Duration::from_millis(400);
    mk.lag_watches("configmaps", lag);
    let cms: Api<ConfigMap> = Api::namespaced(mk.client(), "default");
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut w).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut w).await.unwrap(), Event::InitDone));
    let secrets: Api<Secret> = Api::namespaced(mk.client(), "default");
    let mut s = watcher(secrets.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut s).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut s).await.unwrap(), Event::InitDone));

    let committed = tokio::time::Instant::now();
    cms.create(&PostParams::default(), &config_map("late", &[("k", "1")]))
        .await
        .unwrap();
    cms.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    // Reads are current.
    assert_eq!(cms.get("late").await.unwrap().data.unwrap()["k"], "2");
    let mut secret = Secret::default();
    secret.metadata.name = Some("prompt".into());
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert!(matches!(next(&mut s).await.unwrap(), Event::Apply(_)));
    assert!(
        committed.elapsed() < lag,
        "another resource's watch does not lag"
    );

    match next(&mut w).await.unwrap() {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "1"),
        other => panic!("{other:?}"),
    }
    assert!(
        committed.elapsed() >= lag,
        "delivered {:?} after the commit",
        committed.elapsed()
    );
    match next(&mut w).await.unwrap() {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "2"),
        other => panic!("{other:?}"),
    }
    assert!(
        committed.elapsed() < lag * 2,
        "a lag, not a delay per change"
    );
}
