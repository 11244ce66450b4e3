//! A fleet under strict KMS request quotas (issue 16), on the strict KMS model: a paced call
//! that AWS throttles anyway waits for its bucket's next slot (the SDK never sees the throttle);
//! keys waiting for an import slot are not read again (at most 3 KMS reads per key from create
//! to Ready), and a key waiting for KMS looks again less and less often; a restarted operator
//! spreads the first checks of converged keys over the resync interval (changed keys are read
//! at once) and leaves their deep reads for later; a stopping operator
//! ends its waits for rate-limit slots at once, leaves no key half-created and the next
//! instance finishes the roll-out.

mod support;

use std::sync::Arc;
use std::time::Duration;

use keyfleet::api::KeySpec;
use keyfleet::controller::Settings;
use keyfleet::kms::line::GOING;
use keyfleet::kms::{KmsClients, KmsQuotas, RateLimits};
use keyfleet::metrics::KmsWaitLabels;
use keyfleet::metrics::Metrics;
use kms_model::{Fault, FaultKind, KmsModel};
use kube::ResourceExt;
use memkube::MemKube;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use support::localstack::unique;
use support::operator::*;
use support::replicas::{ReplicaScenario, wait_replica_ready, wait_replica_reason};

const NS: &str = "quotas";

/// Test settings without resyncs or drift reads during the test: every KMS call counted comes
/// from the roll-out itself.
fn quiet_settings() -> Settings {
    let mut s = settings();
    s.resync_interval = Duration::from_secs(600);
    s.drift_interval = Duration::from_secs(600);
    s
}

/// KMS clients on the model as `keyfleet run` builds them (SDK retries, timeouts, one bucket per
/// account, region and operation at `quotas`), counting their calls in metrics of their own.
fn paced_clients(model: &KmsModel, quotas: KmsQuotas) -> (KmsClients, Arc<Metrics>) {
    let metrics = Metrics::shared();
    let limits = RateLimits::new(quotas, Duration::from_secs(60));
    let clients =
        support::fleet::kms_clients_via(&model.url(), Some(limits)).with_metrics(metrics.clone());
    (clients, metrics)
}

/// `keyfleet_kms_calls_total` of one operation and outcome: the attempts the SDK made and saw
/// end that way.
fn sdk_attempts(metrics: &Metrics, operation: &str, outcome: &str) -> u64 {
    let series =
        format!("keyfleet_kms_calls_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// The model's answers to `operation`: (throttled, succeeded).
fn answers(model: &KmsModel, operation: &str) -> (usize, usize) {
    let requests = model.requests_of(operation);
    let throttled = requests
        .iter()
        .filter(|r| r.error.as_deref() == Some("ThrottlingException"))
        .count();
    let ok = requests.iter().filter(|r| r.error.is_none()).count();
    (throttled, ok)
}

/// Creates `count` symmetric AwsKeys `<prefix><i>-…`, each with an alias (`alias/<name>`) and a
/// tag, as most keys of a fleet have; returns their names.
async fn create_aliased_keys(op: &Operator, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count)
        .map(|i| unique(&format!("{prefix}{i}")))
        .collect();
    for name in &names {
        let spec = json!({"alias": format!("alias/{name}"), "tags": {"team": "quotas"}});
        create_symmetric_key(op, NS, name, spec).await;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_paced_call_waits_for_its_next_slot_instead_of_the_sdk_backoff() {
    let model = KmsModel::start().await.unwrap();
    // AWS throttles three GetParametersForImport although keyfleet paced them (another client
    // of the account spent the quota, or jitter brought two requests together).
    model.inject(Fault::once("GetParametersForImport", FaultKind::Throttle).times(3));
    let mut quotas = KmsQuotas::aws_defaults();
    quotas.set("GetParametersForImport", 4.0);
    let (clients, metrics) = paced_clients(&model, quotas);
    let op = Operator::start_with(MemKube::new(), clients, quiet_settings());
    let name = unique("reslot");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    wait_ready(&op.keys(NS), &name).await;

    assert_eq!(
        answers(&model, "GetParametersForImport"),
        (3, 1),
        "three throttled, then one answered"
    );
    // The rate limiter took each throttle and went again at the bucket's next slot: the SDK
    // saw one successful attempt and no throttle, so none of its backoffs or retry quota was
    // spent on them.
    assert_eq!(
        sdk_attempts(&metrics, "GetParametersForImport", "throttled"),
        0
    );
    assert_eq!(sdk_attempts(&metrics, "GetParametersForImport", "ok"), 1);
    let events = op.events_for(&name);
    assert!(
        events.iter().all(|(type_, reason, note)| type_ != "Warning"
            && !reason.contains("Throttl")
            && !note.contains("throttl")),
        "no throttle shown: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_waits_for_rate_limit_slots_and_the_next_instance_resumes() {
    let model = KmsModel::start().await.unwrap();
    let kube = MemKube::new();
    // One import now, the next slot a quarter of an hour later: every other key waits for it.
    let mut quotas = KmsQuotas::aws_defaults();
    quotas.set("GetParametersForImport", 0.001);
    let (clients, _) = paced_clients(&model, quotas);
    let mut first = Operator::start_with(kube.clone(), clients, quiet_settings());
    let names: Vec<String> = (0..3).map(|i| unique(&format!("stop{i}"))).collect();
    for name in &names {
        create_symmetric_key(&first, NS, name, json!({})).await;
    }
    let keys = first.keys(NS);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        "every key created, one imported, two waiting for an import slot",
        async || {
            answers(&model, "CreateKey").1 == 3 && answers(&model, "GetParametersForImport").1 == 1
        },
    )
    .await;

    // Stop: the reconciles waiting for a slot end at once (a wait that outlived the stop would
    // fail the test: `stop` allows 30 s, the slot is 1,000 s away and the old wait lasted 60 s
    // per attempt).
    first.stop().await;
    assert_eq!(
        answers(&model, "GetParametersForImport").1,
        1,
        "nothing more was sent"
    );
    // No key is half-created: every key KMS holds is recorded in the status of its AwsKey.
    for name in &names {
        let key = keys.get(name).await.unwrap();
        let owned: Vec<String> = model_keys_owned_by(&model, &key.uid().unwrap())
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        let recorded = key.status.and_then(|s| s.key_id.clone());
        assert_eq!(owned, recorded.into_iter().collect::<Vec<_>>(), "{name}");
    }

    // The next instance picks up where the first stopped.
    let (clients, _) = paced_clients(&model, KmsQuotas::aws_defaults().scaled(10.0));
    let second = Operator::start_with(kube.clone(), clients, quiet_settings());
    for name in &names {
        let ready = wait_ready(&second.keys(NS), name).await;
        assert_eq!(
            model_keys_owned_by(&model, &ready.uid().unwrap()).len(),
            1,
            "one key for {name}"
        );
    }
    assert_eq!(answers(&model, "CreateKey").1, 3, "no key created twice");
}

/// KMS reads (DescribeKey, ListAliases, ListResourceTags, GetKeyPolicy, ...) the model answered
/// about the key `key_id` or its alias.
fn reads_of(model: &KmsModel, key_id: &str, alias: &str) -> usize {
    model
        .requests()
        .iter()
        .filter(|r| !support::fleet::KMS_WRITES.contains(&r.operation.as_str()))
        .filter(|r| {
            let about = r.params.get("KeyId").and_then(|k| k.as_str());
            about.is_some_and(|k| k == alias || k == key_id || k.ends_with(key_id))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_waiting_for_an_import_slot_are_not_read_again() {
    let model = KmsModel::start().await.unwrap();
    // Eight keys, imports at 2/s: the last waits about 4 s for its slot while the others
    // import.
    let mut quotas = KmsQuotas::aws_defaults();
    quotas.set("GetParametersForImport", 2.0);
    let (clients, _) = paced_clients(&model, quotas);
    let op = Operator::start_with(MemKube::new(), clients, quiet_settings());
    op.connection_checked().await;
    let names = create_aliased_keys(&op, "slot", 8).await;
    let mut reads = Vec::new();
    for name in &names {
        let key_id = ready_key_id(&op.keys(NS), name).await;
        reads.push(reads_of(&model, &key_id, &format!("alias/{name}")));
    }
    let imports = model.requests_of("GetParametersForImport");
    assert_eq!(
        imports.len(),
        names.len(),
        "one import each, none throttled"
    );
    // The alias looked up before the creation, the key described once its material is in:
    // the creation's answer and keyfleet's own writes tell the rest.
    assert!(
        reads.iter().all(|n| (1..=3).contains(n)),
        "KMS reads per key from create to Ready: {reads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_waiting_for_their_import_turn_leave_the_workers_to_other_regions() {
    let model = KmsModel::start().await.unwrap();
    // Imports at 2/s per Region and six workers: sixteen keys of us-east-1 would all wait in
    // its import queue, holding every worker for seconds.
    let mut quotas = KmsQuotas::aws_defaults();
    quotas.set("GetParametersForImport", 2.0);
    let waiting = Family::<KmsWaitLabels, Gauge>::default();
    let limits = RateLimits::observed(quotas, Duration::from_secs(60), waiting.clone());
    let clients = support::fleet::kms_clients_via(&model.url(), Some(limits));
    let mut settings = quiet_settings();
    settings.concurrency = 6;
    let op = Operator::start_with(MemKube::new(), clients, settings);
    op.connection_checked().await;
    let keys = op.keys(NS);
    // A clone: the family's guard would keep the limiter from adding its own gauges.
    let east_queue = waiting
        .get_or_create(&KmsWaitLabels {
            operation: "GetParametersForImport".into(),
            region: "us-east-1".into(),
        })
        .clone();
    // The most us-east-1 imports waiting for a slot at once, sampled every 10 ms.
    let most = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampler = {
        let (queue, most) = (east_queue, most.clone());
        tokio::spawn(async move {
            loop {
                most.fetch_max(queue.get(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let east = create_aliased_keys(&op, "east", 16).await;
    // The keys beyond the first few wait for their turn without a KMS key yet, and say so.
    let queued = wait_reason(&keys, &east[15], "ImportQueued").await;
    let message = ready_message(&queued);
    assert!(
        message.contains("ahead in line for GetParametersForImport in us-east-1"),
        "{message}"
    );
    assert!(
        queued.status.as_ref().unwrap().key_id.is_none(),
        "nothing created yet"
    );
    let seen = model.requests().len();
    let mut west = Vec::new();
    for i in 0..3 {
        let name = unique(&format!("west{i}"));
        create_symmetric_key(&op, NS, &name, json!({"region": "eu-west-1"})).await;
        west.push(name);
    }
    for name in west.iter().chain(&east) {
        wait_ready(&keys, name).await;
    }
    sampler.abort();
    let imports = model.requests_of("GetParametersForImport");
    assert_eq!(imports.len(), 19, "one import each, none throttled");
    // At most the keys going with their place waited in us-east-1's import queue (without
    // the line: every worker's key)...
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=GOING as i64 + 1).contains(&most),
        "{most} imports waited in us-east-1's queue at once"
    );
    // ...so eu-west-1's keys found free workers and imported at once, us-east-1's line moving
    // on by a place or so before the first of them.
    let after: Vec<_> = model
        .requests()
        .into_iter()
        .skip(seen)
        .filter(|r| r.operation == "GetParametersForImport")
        .collect();
    let first_west = after.iter().position(|r| r.region == "eu-west-1").unwrap();
    assert!(
        first_west <= 2,
        "eu-west-1's first import came after {first_west} more of us-east-1's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_waiting_for_kms_looks_again_less_and_less_often() {
    let model = KmsModel::start().await.unwrap();
    let clients = KmsClients::from_config(support::localstack::sdk_config(&model.url()));
    let mut waiting = quiet_settings();
    waiting.waiting_recheck_interval = Duration::from_millis(200);
    let op = Operator::start_with(MemKube::new(), clients, waiting);
    op.connection_checked().await;
    // The replica stays Creating in KMS for an hour: KeyNotReady, a wait that clears by itself.
    model.set_replica_creation_delay(Duration::from_secs(3600));
    let primary = unique("waits");
    let scenario = ReplicaScenario::symmetric(&op, NS, &primary).await;
    scenario.primary_arn().await;
    let name = format!("{primary}-eu");
    scenario.add_replica(&name, "eu-west-1", json!({})).await;
    wait_replica_reason(&op.client, NS, &name, "KeyNotReady").await;

    // Rechecks after 0.2, 0.4, 0.8, 1.6 and 3.2 s: five in the next six seconds, where a fixed
    // 0.2 s recheck would make about thirty.
    let since = op.reconciles("AwsReplicaKey");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rechecks = op.reconciles("AwsReplicaKey") - since;
    assert!(
        (2..=7).contains(&rechecks),
        "{rechecks} rechecks in 6 s while KMS creates the replica"
    );
}

/// The place of an object's first check after a start, for `settings` (as the operator
/// computes it from its uid).
fn first_check_at(uid: &str, settings: &Settings) -> Duration {
    let deep = keyfleet::controller::deep_read_offset(uid, settings.drift_interval);
    keyfleet::controller::first_check_offset(deep, settings.resync_interval)
}

/// A converged object the restart test follows: its uid, the region and id of its KMS key.
struct Converged {
    name: String,
    uid: String,
    region: String,
    key_id: String,
}

impl Converged {
    /// The KMS calls about this object's key (in its own region) among `requests`.
    fn calls<'r>(&self, requests: &'r [kms_model::RecordedRequest]) -> Vec<&'r str> {
        requests
            .iter()
            .filter(|r| r.region == self.region)
            .filter(|r| r.params.get("KeyId").and_then(|k| k.as_str()) == Some(&*self.key_id))
            .map(|r| r.operation.as_str())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_spreads_first_checks_over_the_resync_interval_and_reads_changed_keys_at_once() {
    let model = KmsModel::start().await.unwrap();
    let kube = MemKube::new();
    let clients = || KmsClients::from_config(support::localstack::sdk_config(&model.url()));
    let mut first = Operator::start_with(kube.clone(), clients(), quiet_settings());
    let names = create_aliased_keys(&first, "spread", 8).await;
    // A multi-region key and its replica: the primary's first listing must not wake the replica
    // a second time.
    let primary = unique("spreadmr");
    let scenario =
        ReplicaScenario::new(&first, NS, &primary, KeySpec::SymmetricDefault, json!({})).await;
    scenario.primary_arn().await;
    let replica = format!("{primary}-eu");
    scenario.add_replica(&replica, "eu-west-1", json!({})).await;
    let replica_status = wait_replica_ready(&first.client, NS, &replica).await;
    let keys = first.keys(NS);
    let mut converged = Vec::new();
    for name in names.iter().chain([&primary]) {
        let key = wait_ready(&keys, name).await;
        converged.push(Converged {
            name: name.clone(),
            uid: key.uid().unwrap(),
            region: support::localstack::DEFAULT_REGION.into(),
            key_id: key.status.and_then(|s| s.key_id.clone()).unwrap(),
        });
    }
    converged.push(Converged {
        name: replica.clone(),
        uid: replica_status.uid().unwrap(),
        region: "eu-west-1".into(),
        key_id: replica_status
            .status
            .and_then(|s| s.key_id.clone())
            .unwrap(),
    });
    first.stop().await;

    // While keyfleet is away, one key's Secret and another key's spec change.
    let (secret_changed, spec_changed) = (&names[0], &names[1]);
    let fresh = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    update_material_secret(&first.client, NS, secret_changed, &fresh).await;
    let patch = json!({"spec": {"tags": {"team": "changed"}}});
    keys.patch(
        spec_changed,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();

    // The next instance (resync 600 s): the changed keys are read at once; every other key's
    // first check waits for its place in the resync interval (nothing before it), and none is
    // read deeply.
    let settings = quiet_settings();
    let started = std::time::Instant::now();
    let seen = model.requests().len();
    let mut second = Operator::start_with(kube.clone(), clients(), settings.clone());
    wait_reason(&keys, secret_changed, "MaterialMismatch").await;
    let generation = keys.get(spec_changed).await.unwrap().metadata.generation;
    wait_for_within(
        &keys,
        spec_changed,
        Duration::from_secs(60),
        "Ready at the new generation",
        |k| {
            condition_of(&k.status.as_ref().unwrap().conditions, "Ready")
                .is_some_and(|(s, _)| s == "True")
                && k.status.as_ref().unwrap().observed_generation == generation
        },
    )
    .await;
    second
        .wait_reconciles("AwsKey", 0, names.len() as u64 + 1)
        .await;
    second.wait_reconciles("AwsReplicaKey", 0, 1).await;
    // Whatever else wakes the keys at start (their connection's and primary's first look) comes
    // within this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed();
    let after: Vec<_> = model.requests().into_iter().skip(seen).collect();
    let changed_tags = converged[1].calls(&after);
    assert!(
        changed_tags.contains(&"TagResource"),
        "the changed spec was applied at once: {changed_tags:?}"
    );
    for object in &converged[2..] {
        let calls = object.calls(&after);
        let place = first_check_at(&object.uid, &settings);
        if place > elapsed {
            assert!(
                calls.is_empty(),
                "{}: read {calls:?} {elapsed:?} after the start, its first check is due at {place:?}",
                object.name
            );
        } else {
            // Its place came: one DescribeKey, and a deep read only if that one's place (in
            // the drift interval) came too — with resync = drift they are the same place.
            let deep_at =
                keyfleet::controller::deep_read_offset(&object.uid, settings.drift_interval);
            let describes = calls.iter().filter(|c| **c == "DescribeKey").count();
            assert!(
                describes <= 1 && (describes == calls.len() || deep_at <= elapsed),
                "{}: {calls:?} {elapsed:?} after the start (deep read due at {deep_at:?})",
                object.name
            );
        }
    }
    second.stop().await;

    // Once more with a resync of 3 s: every converged key (the spec-changed one too, Ready
    // again) is described once in its first interval, at its place and not before (and read
    // deeply only once its deep read's place in the drift interval came).
    let mut fast = quiet_settings();
    fast.resync_interval = Duration::from_secs(3);
    fast.drift_interval = Duration::from_secs(6);
    let started = std::time::Instant::now();
    let seen = model.requests().len();
    let third = Operator::start_with(kube.clone(), clients(), fast.clone());
    let followed = &converged[1..];
    let mut checked = vec![false; followed.len()];
    while checked.contains(&false) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "first checks missing: {:?}",
            followed
                .iter()
                .zip(&checked)
                .filter(|(_, c)| !**c)
                .map(|(o, _)| &o.name)
                .collect::<Vec<_>>()
        );
        let elapsed = started.elapsed();
        let after: Vec<_> = model.requests().into_iter().skip(seen).collect();
        for (object, checked) in followed.iter().zip(checked.iter_mut()) {
            let calls = object.calls(&after);
            let place = first_check_at(&object.uid, &fast);
            if !calls.is_empty() && !*checked {
                // Seen by this poll: it went no earlier than `elapsed`'s worth after the start.
                assert!(
                    place <= elapsed,
                    "{}: checked before its place ({place:?}), seen {elapsed:?} after the start",
                    object.name
                );
                *checked = true;
            }
            // One DescribeKey in the first interval; a deep read only from its own place on.
            let deep_at = keyfleet::controller::deep_read_offset(&object.uid, fast.drift_interval);
            if elapsed < fast.resync_interval {
                let describes = calls.iter().filter(|c| **c == "DescribeKey").count();
                let deep = calls.len() - describes;
                assert!(
                    describes <= 1 && (deep == 0 || deep_at <= elapsed),
                    "{}: {calls:?} in the first resync interval (deep read due at {deep_at:?})",
                    object.name
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(third);
}
