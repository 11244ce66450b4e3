//! AwsReplicaKey manifests and waits on their Ready condition.

use std::time::Duration;

use keyfleet::api::{AwsReplicaKey, AwsReplicaKeySpec};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

pub fn replica(name: &str, primary: &str, region: &str, extra: serde_json::Value) -> AwsReplicaKey {
    let mut spec = json!({"primaryKeyRef": {"name": primary}, "region": region});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    AwsReplicaKey::new(
        name,
        serde_json::from_value::<AwsReplicaKeySpec>(spec).unwrap(),
    )
}

pub async fn create_replica(client: &kube::Client, ns: &str, r: &AwsReplicaKey) {
    Api::<AwsReplicaKey>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), r)
        .await
        .unwrap();
}

pub async fn wait_replica(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&AwsReplicaKey) -> bool,
) -> AwsReplicaKey {
    let api: Api<AwsReplicaKey> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let current = api.get_opt(name).await.unwrap();
        if let Some(r) = &current
            && check(r)
        {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: timed out waiting for {what}; status {:#?}",
            current.and_then(|r| r.status)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn replica_ready(r: &AwsReplicaKey) -> Option<(String, String)> {
    super::operator::condition_of(&r.status.as_ref()?.conditions, "Ready")
}

pub async fn wait_replica_ready(client: &kube::Client, ns: &str, name: &str) -> AwsReplicaKey {
    wait_replica(client, ns, name, "Ready=True", |r| {
        replica_ready(r).is_some_and(|(s, _)| s == "True")
    })
    .await
}

pub async fn wait_replica_reason(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> AwsReplicaKey {
    wait_replica(client, ns, name, reason, |r| {
        replica_ready(r).is_some_and(|(s, x)| s == "False" && x == reason)
    })
    .await
}
