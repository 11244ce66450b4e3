//! End-to-end: a real kube-runtime `Controller` with finalizer, SSA status and events.

use super::*;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const FINALIZER: &str = "memkube.test/cleanup";

struct Ctx {
    client: kube::Client,
    recorder: Recorder,
    applies: AtomicUsize,
    cleanups: AtomicUsize,
}

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, finalizer::Error<kube::Error>> {
    let ns = w.namespace().unwrap_or_default();
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, w, |event| async {
        match event {
            Finalizer::Apply(w) => {
                ctx.applies.fetch_add(1, Ordering::SeqCst);
                let status = json!({
                    "apiVersion": "memkube.test/v1",
                    "kind": "Widget",
                    "status": {"ready": true, "observedGeneration": w.metadata.generation},
                });
                api.patch_status(
                    &w.name_any(),
                    &PatchParams::apply("widget-controller").force(),
                    &Patch::Apply(status),
                )
                .await?;
                ctx.recorder
                    .publish(
                        &KubeEvent {
                            type_: EventType::Normal,
                            reason: "Reconciled".into(),
                            note: Some(format!("size {}", w.spec.size)),
                            action: "Reconcile".into(),
                            secondary: None,
                        },
                        &w.object_ref(&()),
                    )
                    .await?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(w) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                ctx.recorder
                    .publish(
                        &KubeEvent {
                            type_: EventType::Normal,
                            reason: "CleanedUp".into(),
                            note: None,
                            action: "Cleanup".into(),
                            secondary: None,
                        },
                        &w.object_ref(&()),
                    )
                    .await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(_w: Arc<Widget>, _e: &finalizer::Error<kube::Error>, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn controller_with_finalizer_status_and_events_converges() {
    let mk = mem();
    let client = mk.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "widget-controller".into(),
                instance: None,
            },
        ),
        applies: AtomicUsize::new(0),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    widgets
        .create(&PostParams::default(), &widget("w", 3))
        .await
        .unwrap();
    eventually("status written and finalizer added", || async {
        widgets.get("w").await.is_ok_and(|w| {
            w.finalizers() == [FINALIZER]
                && w.status
                    .as_ref()
                    .is_some_and(|s| s.ready && s.observed_generation == Some(1))
        })
    })
    .await;
    eventually("Reconciled event published", || async {
        mk.objects("events.k8s.io", "events")
            .iter()
            .any(|e| e["reason"] == "Reconciled" && e["regarding"]["name"] == "w")
    })
    .await;

    // A spec change is reconciled again and observed in status.
    widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    eventually("new generation observed", || async {
        widgets
            .get("w")
            .await
            .is_ok_and(|w| w.status.is_some_and(|s| s.observed_generation == Some(2)))
    })
    .await;

    // Deletion runs cleanup, removes the finalizer, and the object disappears.
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    eventually("object gone after cleanup", || async {
        widgets.get_opt("w").await.is_ok_and(|o| o.is_none())
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    assert!(ctx.applies.load(Ordering::SeqCst) >= 2);
    assert!(
        mk.objects("events.k8s.io", "events")
            .iter()
            .any(|e| e["reason"] == "CleanedUp")
    );
    // The status writes were server-side applies to /status.
    assert!(mk.requests().iter().any(|r| r.method == http::Method::PATCH
        && r.path.ends_with("/widgets/w/status")
        && r.query.contains("fieldManager=widget-controller")
        && r.status == 200));
    handle.abort();
}
