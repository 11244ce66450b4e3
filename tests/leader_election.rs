//! Two operator instances against one API: only the Lease holder reconciles; when it stops,
//! the other takes over within the lease time. One writer: a leader that cannot renew its Lease
//! stops writing to KMS before the Lease can expire, and a stale create intent fails instead of
//! overwriting a newer one.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use keyfleet::api::KeySpec;
use keyfleet::controller::Context;
use keyfleet::kms::KmsClients;
use keyfleet::leader::LeaderElection;
use kube::api::{Patch, PatchParams};
use memkube::{Fault, MemKube};
use serde_json::json;
use support::kms_recorder::KmsRecorder;
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;

const LEASE_NAMESPACE: &str = "keyfleet-system";
const LEASE_NAME: &str = "keyfleet";

struct Instance {
    ctx: Arc<Context>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn instance(kube: &MemKube, identity: &str) -> Instance {
    instance_with(kube, election(identity, 4, 2), localstack_clients().await)
}

fn election(identity: &str, lease_seconds: u64, renew_grace_seconds: u64) -> LeaderElection {
    let mut election = LeaderElection::new(LEASE_NAMESPACE, LEASE_NAME, identity);
    election.lease_seconds = lease_seconds;
    election.renew_grace_seconds = renew_grace_seconds;
    election
}

fn instance_with(kube: &MemKube, election: LeaderElection, kms: KmsClients) -> Instance {
    support::leaks::capture_logs();
    let ctx = Arc::new(Context::new(kube.client(), kms, settings()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(keyfleet::leader::run(
        ctx.clone(),
        Some(election),
        async move {
            let _ = stopped.await;
        },
    ));
    Instance {
        ctx,
        stop: Some(stop),
        task,
    }
}

fn reconciles(i: &Instance) -> usize {
    i.ctx
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("keyfleet_reconciles_total"))
        .count()
}

async fn wait_leader(i: &Instance, within: Duration) -> Duration {
    let start = Instant::now();
    while !i.ctx.readiness.is_leader() {
        assert!(start.elapsed() < within, "no leadership within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Creates a symmetric AwsKey `name` in team-a with its Secret and waits until it is Ready.
async fn ready_key(client: &kube::Client, api: &kube::Api<keyfleet::api::AwsKey>, name: &str) {
    create_material_secret(client, "team-a", name, KeySpec::SymmetricDefault).await;
    create_key(api, &aws_key(name, DEFAULT_REGION, name, json!({}))).await;
    wait_ready(api, name).await;
}

/// The operator's leader-election Lease.
fn lease(kube: &MemKube) -> serde_json::Value {
    kube.get_object(
        "coordination.k8s.io",
        "leases",
        Some("keyfleet-system"),
        "keyfleet",
    )
    .expect("the Lease")
}

async fn wait_standby(i: &Instance, within: Duration) {
    let start = Instant::now();
    while i.ctx.readiness.is_leader() {
        assert!(start.elapsed() < within, "still leading after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Lease as stored: (holder, renewTime, leaseDurationSeconds).
fn lease_renewal(kube: &MemKube) -> (String, SystemTime, Duration) {
    let lease = kube
        .get_object(
            "coordination.k8s.io",
            "leases",
            Some(LEASE_NAMESPACE),
            LEASE_NAME,
        )
        .expect("the Lease");
    let spec = &lease["spec"];
    let renewed: jiff::Timestamp = spec["renewTime"]
        .as_str()
        .expect("renewTime")
        .parse()
        .expect("a timestamp");
    let seconds = spec["leaseDurationSeconds"].as_u64().expect("a duration");
    (
        spec["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        SystemTime::from(renewed),
        Duration::from_secs(seconds),
    )
}

/// Creates a Secret with fresh material and an AwsKey reading it; returns the name.
async fn new_key(client: &kube::Client, prefix: &str, extra: serde_json::Value) -> String {
    let api: kube::Api<keyfleet::api::AwsKey> = kube::Api::namespaced(client.clone(), "team-a");
    let name = unique(prefix);
    create_material_secret(client, "team-a", &name, KeySpec::SymmetricDefault).await;
    create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, extra)).await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let kube = MemKube::new();
    seed_default_connection(&kube);
    let mut a = instance(&kube, "replica-a").await;
    wait_leader(&a, Duration::from_secs(10)).await;
    let b = instance(&kube, "replica-b").await;
    // Proof that the standby had its chance: a renewed the Lease a whole lease period after b
    // started, and b never led meanwhile.
    let b_started = SystemTime::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(!b.ctx.readiness.is_leader(), "two leaders");
        let (holder, renewed, period) = lease_renewal(&kube);
        assert_eq!(
            holder, "replica-a",
            "the standby took the Lease from a live leader"
        );
        if renewed >= b_started + period {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a did not renew the Lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.ctx.readiness.is_ready(), "a standby must report ready");

    let client = kube.client();
    let api: kube::Api<keyfleet::api::AwsKey> = kube::Api::namespaced(client.clone(), "team-a");
    let first = unique("leader-a");
    ready_key(&client, &api, &first).await;
    assert!(reconciles(&a) > 0, "the leader did not reconcile");
    assert_eq!(reconciles(&b), 0, "the standby reconciled");
    // Both serve metrics: the standby its leadership (0), build info and the process.
    let standby = b.ctx.metrics.render();
    for want in [
        "keyfleet_leader 0",
        "keyfleet_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(standby.contains(want), "standby lacks {want}:\n{standby}");
    }
    assert!(!standby.contains("keyfleet_key_ready{"), "{standby}");
    let leader = a.ctx.metrics.render();
    assert!(leader.contains("keyfleet_leader 1"), "{leader}");
    assert!(
        leader.contains(&format!(r#"name="{first}",reason="KeyReady"}} 1"#)),
        "{leader}"
    );
    assert_eq!(lease(&kube)["spec"]["holderIdentity"], "replica-a");

    // The leader stops (SIGTERM): it releases the lease and the standby takes over.
    let _ = a.stop.take().unwrap().send(());
    a.task.await.unwrap().unwrap();
    let took = wait_leader(&b, Duration::from_secs(15)).await;
    println!("standby took over after {took:?}");
    let second = unique("leader-b");
    ready_key(&client, &api, &second).await;
    assert!(reconciles(&b) > 0, "the new leader did not reconcile");
    assert!(b.ctx.metrics.render().contains("keyfleet_leader 1"));
    assert_eq!(lease(&kube)["spec"]["holderIdentity"], "replica-b");
}

/// Lease renewals of the leader fail (the API refuses its Lease writes; a standby's still pass).
/// kube-lease-manager keeps reporting leadership while it retries, but the write fence closes at
/// `renewTime + leaseDuration - margin`: no KMS write leaves the stranded leader after that, its
/// in-flight reconciles are cancelled (a CreateKey held on the wire is dropped, never sent), it
/// reports not-leader, and the standby takes over after the lease expired and finishes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_cannot_renew_stops_kms_writes_before_its_lease_can_expire() {
    let kube = MemKube::new();
    seed_default_connection(&kube);
    let (wire_a, wire_b) = (KmsRecorder::default(), KmsRecorder::default());
    let election_a = election("replica-a", 6, 2);
    let margin = election_a.write_margin();
    let a = instance_with(&kube, election_a, wire_a.localstack_clients().await);
    wait_leader(&a, Duration::from_secs(15)).await;
    let b = instance_with(
        &kube,
        election("replica-b", 6, 2),
        wire_b.localstack_clients().await,
    );
    let client = kube.client();
    let api: kube::Api<keyfleet::api::AwsKey> = kube::Api::namespaced(client.clone(), "team-a");

    let first = new_key(&client, "fence-first", json!({})).await;
    wait_ready(&api, &first).await;
    assert!(!wire_a.writes().is_empty(), "the leader wrote nothing");

    // A reconcile in flight: the leader's next CreateKey waits on the wire.
    wire_a.hold_next("CreateKey", 1);
    let in_flight = new_key(&client, "fence-in-flight", json!({})).await;
    wire_a.wait_held(1, Duration::from_secs(30)).await;

    // From now on every Lease write of replica-a fails; its last renewal is the one stored.
    let field_manager = format!(
        "fieldManager={}",
        election("replica-a", 6, 2).field_manager()
    );
    kube.inject_fault(Fault::new(Method::PATCH, field_manager, 500, usize::MAX));
    let (holder, renewed, lease) = lease_renewal(&kube);
    assert_eq!(holder, "replica-a");
    let write_deadline = renewed + lease - margin;
    let expiry = renewed + lease;

    // Keys keep coming while the leader is stranded and after the takeover.
    let created = Arc::new(Mutex::new(vec![]));
    let creator = {
        let (client, created) = (client.clone(), created.clone());
        tokio::spawn(async move {
            loop {
                let name = new_key(&client, "fence-more", json!({})).await;
                created.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    // The fence compares monotonic time, the checks below wall-clock time: a few ms of slew.
    let slew = Duration::from_millis(10);
    wait_standby(&a, Duration::from_secs(30)).await;
    assert!(
        SystemTime::now() + slew >= write_deadline,
        "stood by before the write deadline: not the fence's doing"
    );
    assert!(a.ctx.readiness.is_ready(), "a standby must report ready");
    // The reconcile is dropped as the instance stands by; its request goes with it a moment
    // later (a busy machine may take a while): wait for that, bounded.
    let cancelled_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while wire_a.cancelled() == 0 && tokio::time::Instant::now() < cancelled_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (wire_a.held(), wire_a.cancelled()),
        (0, 1),
        "the held CreateKey must be cancelled with its reconcile, not left waiting"
    );
    // Whatever was still waiting would go out now.
    wire_a.release();

    wait_leader(&b, Duration::from_secs(30)).await;
    let after_takeover = created.lock().unwrap().len();
    while created.lock().unwrap().len() < after_takeover + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    creator.abort();
    let created = created.lock().unwrap().clone();
    for name in created.iter().chain([&in_flight]) {
        wait_ready(&api, name).await;
    }
    assert!(!a.ctx.readiness.is_leader(), "replica-a leads again");

    // One writer: replica-a sent no write after its deadline, replica-b none before expiry.
    let a_writes = wire_a.writes();
    let stranded = a_writes.iter().filter(|w| w.at > renewed).count();
    println!(
        "replica-a: {} writes, {stranded} after its last renewal, {} keys created meanwhile",
        a_writes.len(),
        created.len()
    );
    let late: Vec<_> = a_writes
        .iter()
        .filter(|w| w.at > write_deadline + slew)
        .collect();
    assert!(
        late.is_empty(),
        "replica-a wrote after its write deadline: {late:?}"
    );
    let b_writes = wire_b.writes();
    assert!(!b_writes.is_empty(), "replica-b wrote nothing");
    let early: Vec<_> = b_writes.iter().filter(|w| w.at < expiry).collect();
    assert!(
        early.is_empty(),
        "replica-b wrote before replica-a's lease expired: {early:?}"
    );
    // Every key exists exactly once in KMS: the cancelled CreateKey never went out, and what
    // replica-a created before its deadline replica-b found again instead of creating it twice.
    let kms = support::localstack::kms_client(DEFAULT_REGION).await;
    let by_owner = kms_keys_by_owner(&kms).await;
    for name in created.iter().chain([&first, &in_flight]) {
        let uid = api.get(name).await.unwrap().metadata.uid.unwrap();
        let keys = by_owner.get(&uid).map(Vec::len).unwrap_or_default();
        assert_eq!(keys, 1, "{name}: {keys} KMS keys");
    }
    assert!(
        !a.ctx.kms.fence().allows_writes(),
        "replica-a's fence is open"
    );
}

/// A reconcile reads an AwsKey, then a newer writer records its own create intent; the stale
/// reconcile's intent write carries the resourceVersion it read and fails with 409 Conflict: the
/// newer intent stays, and no CreateKey is sent for the stale attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_create_intent_fails_with_a_conflict_instead_of_overwriting() {
    let kube = MemKube::new();
    let wire = KmsRecorder::default();
    let op = Operator::start_with(kube.clone(), wire.localstack_clients().await, settings());
    let api = op.keys("team-a");
    // The reconcile that read the new key waits on its alias lookup, before the create.
    wire.hold_next("DescribeKey", 1);
    let name = unique("stale");
    let alias = format!("alias/{name}");
    create_material_secret(&op.client, "team-a", &name, KeySpec::SymmetricDefault).await;
    create_key(
        &api,
        &aws_key(&name, DEFAULT_REGION, &name, json!({ "alias": alias })),
    )
    .await;
    wire.wait_held(1, Duration::from_secs(30)).await;

    let newer = "2030-01-01T00:00:00Z";
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"createStartedAt": newer}})),
    )
    .await
    .expect("the newer writer's status");
    kube.clear_requests();
    wire.release();

    let status_path = format!("/awskeys/{name}/status");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kube
        .requests()
        .iter()
        .any(|r| r.method == Method::PATCH && r.path.ends_with(&status_path) && r.status == 409)
    {
        assert!(
            Instant::now() < deadline,
            "the stale intent write did not fail with 409 Conflict: {:?}",
            kube.requests()
                .iter()
                .filter(|r| r.path.ends_with(&status_path))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        wire.count("CreateKey"),
        0,
        "the stale attempt sent CreateKey"
    );
    let key = api.get(&name).await.unwrap();
    let started = key
        .status
        .as_ref()
        .and_then(|s| s.create_started_at.clone());
    assert_eq!(
        started.map(|t| t.0.to_string()),
        Some(newer.to_string()),
        "the stale writer overwrote the newer intent"
    );

    // The next reconcile reads the current version and creates the key once.
    wait_ready(&api, &name).await;
    assert_eq!(wire.count("CreateKey"), 1);
}

/// RBAC that grants get/update/patch on the Lease but not list and watch (the chart before the
/// write fence): the instance reads its Lease periodically instead, so its fence still opens on
/// its renewals and it leads and reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_may_not_watch_its_lease_reads_it_instead() {
    let kube = MemKube::new();
    seed_default_connection(&kube);
    // List and watch of Leases are forbidden; a GET by name (`/leases/<name>`) is not.
    kube.inject_fault(Fault::new(Method::GET, "/leases?", 403, usize::MAX));
    let a = instance_with(
        &kube,
        election("replica-a", 8, 4),
        localstack_clients().await,
    );
    wait_leader(&a, Duration::from_secs(15)).await;
    let api: kube::Api<keyfleet::api::AwsKey> = kube::Api::namespaced(kube.client(), "team-a");
    let name = new_key(&kube.client(), "fence-polled", json!({})).await;
    wait_ready(&api, &name).await;
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.injected && r.path.ends_with("/leases")),
        "the Lease was never listed"
    );
    // Renewals keep the fence open across several lease periods.
    let renewals = |kube: &MemKube| lease_renewal(kube).1;
    let first = renewals(&kube);
    while renewals(&kube) < first + Duration::from_secs(10) {
        assert!(
            a.ctx.readiness.is_leader(),
            "lost leadership while renewing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.ctx.kms.fence().allows_writes());
}
