//! The leak scan every controller test runs when its `Operator` is dropped
//! (`tests/support/leaks.rs`): it passes over a real key's logs, Events and status, and fails a
//! test whose material reached an Event or a log line.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};

use k8s_openapi::api::events::v1::Event;
use keyfleet::api::KeySpec;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use memkube::MemKube;
use serde_json::json;
use support::localstack::unique;
use support::operator::*;

/// What the leak scan panics with when `op` drops; `expected` fails the test when the scan
/// passes instead.
fn scan_failure(op: Operator, expected: &str) -> String {
    let scan = catch_unwind(AssertUnwindSafe(|| drop(op)));
    let message = scan.expect_err(expected);
    message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ready_key_leaves_no_material_in_logs_events_or_status() {
    let op = Operator::start(MemKube::new()).await;
    let ns = unique("leaks");
    create_key_with_material(&op, &ns, "clean", KeySpec::Hmac256, json!({})).await;
    wait_ready(&op.keys(&ns), "clean").await;
    op.wait_events("clean", &["KeyReady"]).await;
    assert!(
        keyfleet_testkit::leak::remembered() >= 1,
        "no material remembered"
    );
    assert!(
        support::leaks::captured_log_bytes() > 0,
        "the controller's logs were not captured"
    );
    // Scanned here (and again on drop): passes.
    support::leaks::assert_none_leaked(&op.kube, &op.metrics.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn material_in_an_event_fails_the_test() {
    let op = Operator::start(MemKube::new()).await;
    let ns = unique("leaks");
    let material =
        create_material_secret(&op.client, &ns, "leaky", KeySpec::SymmetricDefault).await;
    // What a faulty controller would publish: the material in hex in an Event's note.
    let event = Event {
        metadata: ObjectMeta {
            name: Some("leaky.1".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        note: Some(format!("imported {}", hex::encode(&material[4..16]))),
        reason: Some("MaterialImported".into()),
        type_: Some("Normal".into()),
        event_time: None,
        ..Default::default()
    };
    Api::<Event>::namespaced(op.client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let message = scan_failure(op, "the scan let material in an Event pass");
    assert!(message.contains("the Event"), "{message}");
    assert!(
        message.contains("bytes 4..12 as lowercase hex"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn material_in_a_log_line_fails_the_test() {
    let op = Operator::start(MemKube::new()).await;
    let ns = unique("leaks");
    let material = create_material_secret(&op.client, &ns, "logged", KeySpec::Hmac256).await;
    // What a faulty controller would log. Test runs leave RUST_LOG unset: only the capture
    // sees the line, the test output does not.
    tracing::debug!(target: "keyfleet::material", "imported {:?}", &material[..]);
    let message = scan_failure(op, "the scan let material in a log line pass");
    assert!(message.contains("the controller's logs"), "{message}");
    assert!(message.contains("Debug bytes"), "{message}");
}
