//! Fleet resilience: a fleet converges through KMS faults (5xx, throttling, answers lost after
//! the call took effect), API-server conflicts and repeated controller kills, without a single
//! duplicated or lost key; and a converged fleet costs one DescribeKey per key per resync.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use keyfleet::api::AwsKey;
use keyfleet::kms::{KmsQuotas, RateLimits};
use kms_proxy::{KmsProxy, ProxyConfig};
use kube::Api;
use kube::api::{Patch, PatchParams};
use memkube::{Fault, MemKube};
use serde_json::json;

use support::fleet::{self, REGIONS};
use support::localstack;
use support::operator::{Operator, UNTAGGED, seed_default_connection, settings};

fn limits(quotas: &KmsQuotas) -> std::sync::Arc<RateLimits> {
    RateLimits::new(quotas.clone(), Duration::from_secs(60))
}

/// 24 AwsKeys over two regions (6 of them with a replica in the other region) against a KMS
/// that fails 30% of requests — a third of those after the call took effect — while the API
/// server answers some writes with conflicts and errors, and the controller is killed four
/// times mid-fleet. Afterwards every object is Ready, KMS holds exactly one key per object
/// (and nothing else), and no status ever showed throttling or unavailability (only waits:
/// for a primary, for a turn at the import quota).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_converges_through_kms_faults_api_conflicts_and_controller_kills() {
    // Its own LocalStack: the check "nothing else in KMS" needs an empty account.
    let endpoint = localstack::dedicated_endpoint().await;
    // The AWS quotas, four times faster, so that the test stays short.
    let quotas = KmsQuotas::aws_defaults().scaled(4.0);
    let mut config = ProxyConfig::new(&endpoint, quotas.clone());
    config.fault_rate = 0.3;
    config.seed = 6;
    // Whatever the dice say, the first answers of CreateKey and ReplicateKey are lost after
    // KMS acted: the "did my create happen?" paths run in every run.
    config.lose_answers = ["CreateKey", "CreateKey", "ReplicateKey", "ReplicateKey"]
        .map(String::from)
        .to_vec();
    let proxy = KmsProxy::start(config).await.expect("start KMS proxy");

    let kube = MemKube::new();
    seed_default_connection(&kube);
    let client = kube.client();
    let ns = "default";
    kube.inject_fault(Fault::new(Method::PATCH, "/status", 409, 8).after(10));
    kube.inject_fault(Fault::new(Method::PATCH, "/awskeys/", 500, 4).after(20));
    kube.inject_fault(Fault::new(Method::GET, "/secrets/", 500, 4).after(5));
    let fleet = fleet::create_fleet(&client, ns, "ff", 24, 4).await;

    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (round, run_for) in [1500u64, 2500, 800, 3000].into_iter().enumerate() {
        let op = Operator::start_with(
            kube.clone(),
            fleet::kms_clients_via(&proxy.url(), Some(limits(&quotas))),
            settings(),
        );
        let until = tokio::time::Instant::now() + Duration::from_millis(run_for);
        while tokio::time::Instant::now() < until {
            for (reason, n) in fleet::view(&client, ns).await.reasons {
                *reasons.entry(reason).or_default() += n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Killed mid-flight: in-flight reconciles are dropped wherever they are.
        drop(op);
        eprintln!("controller killed (round {round})");
    }
    let mut op = Operator::start_with(
        kube.clone(),
        fleet::kms_clients_via(&proxy.url(), Some(limits(&quotas))),
        settings(),
    );
    let seen = fleet::wait_all_ready(
        &client,
        &fleet,
        Duration::from_secs(150),
        Duration::from_millis(100),
    )
    .await;
    for (reason, n) in seen {
        *reasons.entry(reason).or_default() += n;
    }
    eprintln!("Ready reasons seen on the way: {reasons:?}");
    for reason in reasons.keys() {
        assert!(
            ["KeyReady", "PrimaryNotReady", "ImportQueued"].contains(&reason.as_str()),
            "a status showed {reason}: {reasons:?}"
        );
    }
    let events = op.kube.objects("events.k8s.io", "events");
    let warnings: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "Warning")
        .map(|e| format!("{}: {}", e["reason"], e["note"]))
        .filter(|w| !w.contains("PrimaryNotReady"))
        .collect();
    assert!(warnings.is_empty(), "warning events: {warnings:?}");

    // KMS holds exactly one key per object, owned by it, and the one in its status.
    let owners = fleet::kms_keys_per_owner(&endpoint, &REGIONS).await;
    let view = fleet::view(&client, ns).await;
    for (uid, kind, name, region, key_id) in &view.objects {
        let ids = owners
            .get(&(region.clone(), uid.clone()))
            .cloned()
            .unwrap_or_default();
        assert_eq!(ids.len(), 1, "{kind} {name}: KMS keys {ids:?} in {region}");
        assert_eq!(Some(&ids[0]), key_id.as_ref(), "{kind} {name}");
    }
    // Nothing else: every key in the account, tagged or not, is one of the objects'.
    for region in REGIONS {
        let all =
            support::operator::kms_keys_by_owner(&localstack::kms_client_at(&endpoint, region))
                .await;
        let total: usize = all.values().map(Vec::len).sum();
        let want = fleet.keys_in(region) + fleet.replicas_in(region);
        assert_eq!(total, want, "keys in {region}: {all:?}");
        assert!(
            !all.contains_key(UNTAGGED),
            "untagged keys in {region}: {all:?}"
        );
    }

    // The proxy did fail requests, before and after they took effect.
    let counts = kms_proxy::by_operation(&proxy.stats());
    let injected: u64 = counts
        .values()
        .map(|c| c.injected_errors + c.injected_throttles)
        .sum();
    let lost: u64 = counts.values().map(|c| c.lost_answers).sum();
    eprintln!("KMS requests by operation: {counts:#?}");
    assert!(injected > 20 && lost > 5, "too few faults: {counts:?}");
    for op in ["CreateKey", "ReplicateKey"] {
        let lost = counts.get(op).map_or(0, |c| c.lost_answers);
        assert!(lost >= 2, "{op}: {lost} lost answers, 2 were scheduled");
    }
    op.stop().await;
}

/// A converged fleet: a resync costs one DescribeKey per object and no write; tags, aliases and
/// policy are re-read only when the drift interval has passed, and at once after a spec change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resyncs_describe_only_and_drift_reads_come_at_their_interval() {
    let endpoint = localstack::kms_endpoint().await;
    let quotas = KmsQuotas::aws_defaults();
    let proxy = KmsProxy::start(ProxyConfig::new(&endpoint, quotas.clone()))
        .await
        .expect("start KMS proxy");
    let kube = MemKube::new();
    seed_default_connection(&kube);
    let client = kube.client();
    let ns = "default";
    let prefix = localstack::unique("ss");
    let fleet = fleet::create_fleet(&client, ns, &prefix, 4, 2).await;
    let objects = fleet.keys.len() + fleet.replicas.len();
    let mut s = settings();
    s.resync_interval = Duration::from_secs(1);
    s.drift_interval = Duration::from_secs(8);
    let mut op = Operator::start_with(
        kube.clone(),
        fleet::kms_clients_via(&proxy.url(), Some(limits(&quotas))),
        s,
    );
    fleet::wait_all_ready(
        &client,
        &fleet,
        Duration::from_secs(60),
        Duration::from_millis(50),
    )
    .await;

    // Two rounds of 1 s resyncs, counted as finished reconciles (not timed): DescribeKey only.
    // Requests without a KMS operation ("Unknown": STS's query protocol, e.g. the AwsKms status
    // check's GetCallerIdentity, once per connection and resync) are not KMS calls.
    let reconciles = |op: &Operator| op.reconciles("AwsKey") + op.reconciles("AwsReplicaKey");
    let before = proxy.stats();
    let since = reconciles(&op);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reconciles(&op) < since + 2 * objects as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than two resyncs per object within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut window = kms_proxy::by_operation(&kms_proxy::delta(&proxy.stats(), &before));
    let ran = reconciles(&op) - since;
    window.remove("Unknown");
    let ops: Vec<&String> = window.keys().collect();
    assert_eq!(ops, ["DescribeKey"], "{window:?}");
    // One DescribeKey per resync; a reconcile still running when the window closed may have
    // sent its own already.
    let describes = window["DescribeKey"].received();
    assert!(
        describes >= ran / 2 && describes <= ran + objects as u64,
        "{describes} DescribeKey for {ran} resyncs of {objects} objects"
    );

    // Once the drift interval has passed, tags and aliases are read again — still no write.
    let before = proxy.stats();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let window = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let w = kms_proxy::by_operation(&kms_proxy::delta(&proxy.stats(), &before));
        let tags_read = w.get("ListResourceTags").map_or(0, |c| c.received());
        if tags_read >= objects as u64 {
            break w;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no drift read: {w:?}"
        );
    };
    for write in fleet::KMS_WRITES {
        assert!(
            !window.contains_key(*write),
            "{write} in a drift read: {window:?}"
        );
    }
    assert!(window.contains_key("ListAliases"), "{window:?}");

    // A spec change is applied at once, with a deep read (the tags are compared again).
    let keys: Api<AwsKey> = Api::namespaced(client.clone(), ns);
    let (name, _) = &fleet.keys[1];
    let before = proxy.stats();
    keys.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tags": {"index": null, "changed": "yes"}}})),
    )
    .await
    .expect("patch AwsKey");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let w = kms_proxy::by_operation(&kms_proxy::delta(&proxy.stats(), &before));
        if w.contains_key("TagResource") && w.contains_key("UntagResource") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tags not applied: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.stop().await;

    // The proxy timed every forwarded request (a benchmark splits KMS's time from pacing by
    // these): one answer time each, and sequential requests' gaps after the previous answer.
    let timings = proxy.timings();
    for (key, counts) in proxy.stats() {
        if counts.forwarded == 0 {
            continue;
        }
        let timing = timings.get(&key).expect("timed");
        assert_eq!(
            timing.answered_in.len() as u64,
            counts.reached_kms(),
            "{key:?}"
        );
        assert!(
            timing.next_after_answer.len() as u64 <= counts.forwarded,
            "{key:?}"
        );
    }
}
