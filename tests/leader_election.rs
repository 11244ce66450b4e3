//! Two operator instances against one API: only the Lease holder reconciles; when it stops,
//! the other takes over within the lease time.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfleet::api::KeySpec;
use keyfleet::controller::Context;
use keyfleet::leader::LeaderElection;
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;

struct Instance {
    ctx: Arc<Context>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn instance(kube: &MemKube, identity: &str) -> Instance {
    let ctx = Arc::new(Context::new(
        kube.client(),
        localstack_clients().await,
        settings(),
    ));
    let mut election = LeaderElection::new("keyfleet-system", "keyfleet", identity);
    election.lease_seconds = 4;
    election.renew_grace_seconds = 2;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let kube = MemKube::new();
    seed_default_connection(&kube);
    let mut a = instance(&kube, "replica-a").await;
    wait_leader(&a, Duration::from_secs(10)).await;
    let b = instance(&kube, "replica-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!b.ctx.readiness.is_leader(), "two leaders");
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
