//! A fleet of AwsKeys (two regions, some multi-region with an AwsReplicaKey in the other
//! region) for the fault-injection tests and the fleet benchmark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyfleet::api::{AwsKey, AwsReplicaKey, KeySpec};
use keyfleet::kms::clients::{retry_config, timeout_config};
use keyfleet::kms::{KmsClients, RateLimits};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::localstack;
use super::operator::{aws_key, create_material_secret, kms_keys_by_owner};

/// The two regions of every fleet.
pub const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// KMS clients as `keyfleet run` builds them (retries, timeouts, rate limits), against
/// `endpoint` with the static test credentials.
pub fn kms_clients_via(endpoint: &str, limits: Option<Arc<RateLimits>>) -> KmsClients {
    let base = localstack::sdk_config(endpoint)
        .into_builder()
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .build();
    let clients = KmsClients::from_config(base);
    match limits {
        Some(limits) => clients.with_rate_limits(limits),
        None => clients,
    }
}

/// The objects of a fleet: (name, region) of every AwsKey and AwsReplicaKey.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub namespace: String,
    pub keys: Vec<(String, String)>,
    pub replicas: Vec<(String, String)>,
    /// The AwsKms each AwsKey names (`kmsRef`), by AwsKey name; empty: the default connection.
    pub connections: BTreeMap<String, String>,
}

impl Fleet {
    /// AwsKeys per region.
    pub fn keys_in(&self, region: &str) -> usize {
        self.keys.iter().filter(|(_, r)| r == region).count()
    }

    /// AwsReplicaKeys per replica region.
    pub fn replicas_in(&self, region: &str) -> usize {
        self.replicas.iter().filter(|(_, r)| r == region).count()
    }
}

/// Creates `n` AwsKeys named `{prefix}-{i}` alternating between [`REGIONS`], each with its own
/// Secret, tags and an alias; every `replica_every`-th key is multi-region and gets an
/// AwsReplicaKey `{prefix}-{i}-r` in the other region (0: no replicas).
pub async fn create_fleet(
    client: &kube::Client,
    namespace: &str,
    prefix: &str,
    n: usize,
    replica_every: usize,
) -> Fleet {
    create_fleet_over(client, namespace, prefix, n, replica_every, |_| None).await
}

/// [`create_fleet`] with the AwsKey `i` managed through the AwsKms `connection(i)` (None: the
/// default connection).
pub async fn create_fleet_over(
    client: &kube::Client,
    namespace: &str,
    prefix: &str,
    n: usize,
    replica_every: usize,
    connection: impl Fn(usize) -> Option<String>,
) -> Fleet {
    let keys: Api<AwsKey> = Api::namespaced(client.clone(), namespace);
    let replicas: Api<AwsReplicaKey> = Api::namespaced(client.clone(), namespace);
    let mut fleet = Fleet {
        namespace: namespace.to_string(),
        ..Default::default()
    };
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let region = REGIONS[i % 2];
        let other = REGIONS[(i + 1) % 2];
        let multi_region = replica_every > 0 && i % replica_every == 0;
        create_material_secret(client, namespace, &name, KeySpec::SymmetricDefault).await;
        let mut spec = json!({
            "alias": format!("alias/{name}"),
            "tags": {"fleet": prefix, "index": i.to_string()},
            "multiRegion": multi_region,
        });
        if let Some(connection) = connection(i) {
            spec["kmsRef"] = json!({"name": connection});
            fleet.connections.insert(name.clone(), connection);
        }
        let key = aws_key(&name, region, &name, spec);
        keys.create(&PostParams::default(), &key)
            .await
            .expect("create AwsKey");
        fleet.keys.push((name.clone(), region.to_string()));
        if multi_region {
            let replica_name = format!("{name}-r");
            let replica = AwsReplicaKey::new(
                &replica_name,
                serde_json::from_value(json!({"primaryKeyRef": {"name": name}, "region": other}))
                    .expect("valid AwsReplicaKey spec"),
            );
            replicas
                .create(&PostParams::default(), &replica)
                .await
                .expect("create AwsReplicaKey");
            fleet.replicas.push((replica_name, other.to_string()));
        }
    }
    fleet
}

/// The Ready condition of a status's conditions as (status, reason).
fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// One look at the fleet: how many objects are Ready, and every (status, reason) of Ready seen.
#[derive(Clone, Debug, Default)]
pub struct FleetView {
    pub ready: usize,
    pub total: usize,
    pub reasons: BTreeMap<String, usize>,
    /// uid → (kind, name, region, key id) of every object.
    pub objects: Vec<(String, &'static str, String, String, Option<String>)>,
    /// `kind name: reason: message` of every object that is not Ready.
    pub not_ready: Vec<String>,
}

pub async fn view(client: &kube::Client, namespace: &str) -> FleetView {
    let keys: Api<AwsKey> = Api::namespaced(client.clone(), namespace);
    let replicas: Api<AwsReplicaKey> = Api::namespaced(client.clone(), namespace);
    let keys = keys
        .list(&ListParams::default())
        .await
        .expect("list AwsKeys");
    let replicas = replicas
        .list(&ListParams::default())
        .await
        .expect("list AwsReplicaKeys");
    let objects = keys
        .iter()
        .map(|k| {
            let status = k.status.as_deref().cloned();
            (k.uid(), "AwsKey", k.name_any(), &k.spec.region, status)
        })
        .chain(replicas.iter().map(|r| {
            let status = r.status.as_deref().cloned();
            (
                r.uid(),
                "AwsReplicaKey",
                r.name_any(),
                &r.spec.region,
                status,
            )
        }));
    let mut v = FleetView::default();
    for (uid, kind, name, region, status) in objects {
        let status = status.unwrap_or_default();
        v.total += 1;
        if let Some((ready, reason)) = ready_of(&status.conditions) {
            if ready == "True" {
                v.ready += 1;
            } else {
                let message = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.message.as_str())
                    .unwrap_or_default();
                v.not_ready
                    .push(format!("{kind} {name}: {reason}: {message}"));
            }
            *v.reasons.entry(reason).or_default() += 1;
        }
        let uid = uid.unwrap_or_default();
        v.objects
            .push((uid, kind, name, region.clone(), status.key_id.clone()));
    }
    v
}

/// Polls until every object of the fleet is Ready; returns every Ready reason seen on the way
/// (with how many polls saw it). Panics after `timeout` with the view.
pub async fn wait_all_ready(
    client: &kube::Client,
    fleet: &Fleet,
    timeout: Duration,
    poll: Duration,
) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let want = fleet.keys.len() + fleet.replicas.len();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let v = view(client, &fleet.namespace).await;
        for (reason, n) in &v.reasons {
            *seen.entry(reason.clone()).or_default() += n;
        }
        if v.ready == want && v.total == want {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet not Ready after {timeout:?}: {}/{want} Ready; reasons now {:?}; seen {seen:?}; not Ready: {:#?}",
            v.ready,
            v.reasons,
            v.not_ready
        );
        tokio::time::sleep(poll).await;
    }
}

/// KMS keys per (region, owner uid), read from the KMS at `endpoint` directly (not through
/// any proxy).
pub async fn kms_keys_per_owner(
    endpoint: &str,
    regions: &[&str],
) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for region in regions {
        let kms = localstack::kms_client_at(endpoint, region);
        for (uid, ids) in kms_keys_by_owner(&kms).await {
            out.insert((region.to_string(), uid), ids);
        }
    }
    out
}

/// KMS operations that change a key: none may happen in a resync of a converged key, and a
/// roll-out's unavoidable calls are among them (the benchmark's quota bound).
pub const KMS_WRITES: &[&str] = &[
    "CreateKey",
    "ReplicateKey",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "TagResource",
    "UntagResource",
    "CreateAlias",
    "DeleteAlias",
    "EnableKey",
    "DisableKey",
    "UpdateKeyDescription",
    "PutKeyPolicy",
    "CancelKeyDeletion",
    "ScheduleKeyDeletion",
];
