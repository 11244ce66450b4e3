//! AwsReplicaKey manifests, waits on their Ready condition, and the multi-region scenario the
//! replica tests share ([`ReplicaScenario`]).

use std::time::Duration;

use keyfleet::api::{AwsKey, AwsReplicaKey, AwsReplicaKeySpec, KeySpec, KmsKeyStatus};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::operator::{Operator, create_key_with_material, wait_ready};

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
    super::operator::wait_for_within(&api, name, Duration::from_secs(60), what, check).await
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

/// The scenario the replica tests share: a multi-region primary AwsKey in the test region, with
/// a Secret of fresh material, created through a running operator; then replicas of it.
pub struct ReplicaScenario<'a> {
    op: &'a Operator,
    pub namespace: &'a str,
    pub primary: String,
}

impl<'a> ReplicaScenario<'a> {
    /// Creates the Secret and the multi-region primary `primary` of `spec`, with `extra` merged
    /// into its spec.
    pub async fn new(
        op: &'a Operator,
        namespace: &'a str,
        primary: &str,
        spec: KeySpec,
        extra: serde_json::Value,
    ) -> ReplicaScenario<'a> {
        let mut fields = json!({"multiRegion": true});
        fields
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        create_key_with_material(op, namespace, primary, spec, fields).await;
        ReplicaScenario {
            op,
            namespace,
            primary: primary.to_string(),
        }
    }

    /// A symmetric multi-region primary `primary` with nothing else in its spec.
    pub async fn symmetric(
        op: &'a Operator,
        namespace: &'a str,
        primary: &str,
    ) -> ReplicaScenario<'a> {
        ReplicaScenario::new(op, namespace, primary, KeySpec::SymmetricDefault, json!({})).await
    }

    /// The primary's AwsKey API.
    pub fn keys(&self) -> Api<AwsKey> {
        self.op.keys(self.namespace)
    }

    /// Waits until the primary is Ready.
    pub async fn ready_primary(&self) -> AwsKey {
        wait_ready(&self.keys(), &self.primary).await
    }

    /// Waits until the primary is Ready and returns its ARN.
    pub async fn primary_arn(&self) -> String {
        arn_of(self.ready_primary().await.status.as_deref())
    }

    /// Creates the AwsReplicaKey `name` of the primary in `region`, with `extra` merged into its
    /// spec.
    pub async fn add_replica(&self, name: &str, region: &str, extra: serde_json::Value) {
        let r = replica(name, &self.primary, region, extra);
        create_replica(&self.op.client, self.namespace, &r).await;
    }

    /// Waits until `check` holds for the status of the replica `name`.
    pub async fn wait_replica_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&KmsKeyStatus) -> bool,
    ) -> AwsReplicaKey {
        let client = &self.op.client;
        wait_replica(client, self.namespace, name, what, |r| {
            r.status.as_deref().is_some_and(&check)
        })
        .await
    }

    /// Waits until the replica `name` is Ready and returns its ARN.
    pub async fn replica_arn(&self, name: &str) -> String {
        let r = wait_replica_ready(&self.op.client, self.namespace, name).await;
        arn_of(r.status.as_deref())
    }
}

/// `status.arn` of a key or replica that has one.
pub fn arn_of(status: Option<&KmsKeyStatus>) -> String {
    status.and_then(|s| s.arn.clone()).expect("status.arn")
}
