//! The playground: the real controller against the embedded in-memory Kubernetes API and the
//! KMS of the standard AWS environment (LocalStack in `scripts/run`), fed with manifests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use keyfleet::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, KmsKeyStatus};
use keyfleet::controller::{self, Context, Settings};
use keyfleet::kms::KmsClients;
use keyfleet::manifest::read_manifests;
use memkube::MemKube;

async fn create<K>(api: Api<K>, doc: Value) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(doc)?;
    api.create(&PostParams::default(), &obj).await?;
    Ok(())
}

/// Creates one manifest, with the admission checks the API server would run (CEL rules).
pub async fn apply(client: &kube::Client, doc: Value) -> anyhow::Result<String> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ns = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let c = client.clone();
    match kind.as_str() {
        "Namespace" => create::<Namespace>(Api::all(c), doc).await?,
        "Secret" => create::<Secret>(Api::namespaced(c, &ns), doc).await?,
        "AwsKms" => {
            let kms: AwsKms = serde_json::from_value(doc.clone())?;
            kms.validate_cel()
                .map_err(|e| anyhow::anyhow!("AwsKms/{name} refused at admission: {e}"))?;
            create::<AwsKms>(Api::all(c), doc).await?
        }
        "AwsKeyPolicyTemplate" => {
            let template: AwsKeyPolicyTemplate = serde_json::from_value(doc.clone())?;
            template.validate_cel().map_err(|e| {
                anyhow::anyhow!("AwsKeyPolicyTemplate/{name} refused at admission: {e}")
            })?;
            create::<AwsKeyPolicyTemplate>(Api::all(c), doc).await?
        }
        "AwsKey" => {
            let key: AwsKey = serde_json::from_value(doc.clone())?;
            key.validate_cel()
                .map_err(|e| anyhow::anyhow!("AwsKey/{name} refused at admission: {e}"))?;
            create::<AwsKey>(Api::namespaced(c, &ns), doc).await?
        }
        "AwsReplicaKey" => {
            let replica: AwsReplicaKey = serde_json::from_value(doc.clone())?;
            replica
                .validate_cel()
                .map_err(|e| anyhow::anyhow!("AwsReplicaKey/{name} refused at admission: {e}"))?;
            create::<AwsReplicaKey>(Api::namespaced(c, &ns), doc).await?
        }
        other => bail!("the playground does not serve kind {other:?} ({name})"),
    }
    Ok(format!("{kind}/{name}"))
}

/// Runs the playground: applies `manifests`, runs the controller until every AwsKey has a
/// current Ready condition (or `timeout`), prints the keys, and returns whether all are Ready.
pub async fn run(manifests: &Path, timeout: Duration, settings: Settings) -> anyhow::Result<bool> {
    let kube = MemKube::new();
    let client = kube.client();
    let kms = KmsClients::from_env().await;
    let ctx = Arc::new(Context::new(client.clone(), kms, settings));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(ctx, async move {
        let _ = stopped.await;
    }));

    for manifest in read_manifests(&[manifests.to_path_buf()])? {
        let what = apply(&client, manifest.value)
            .await
            .with_context(|| format!("applying {}", manifest.source))?;
        println!("applied {what} ({})", manifest.source);
    }

    let keys: Api<AwsKey> = Api::all(client.clone());
    let replicas: Api<AwsReplicaKey> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let (settled, settled_replicas) = loop {
        let list = keys.list(&Default::default()).await?.items;
        let replica_list = replicas.list(&Default::default()).await?.items;
        let all_settled = list
            .iter()
            .all(|k| settled(k.status.as_deref(), k.metadata.generation))
            && replica_list
                .iter()
                .all(|r| settled(r.status.as_deref(), r.metadata.generation));
        if all_settled || tokio::time::Instant::now() > deadline {
            break (list, replica_list);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;

    println!();
    println!(
        "{:<12} {:<18} {:<32} {:<10} {:<16} {:<6} {:<20} ARN",
        "NAMESPACE", "NAME", "ALIAS", "REGION", "STATE", "READY", "REASON"
    );
    let mut all_ready = true;
    for key in &settled {
        let status = key.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        all_ready &= ready.is_some_and(|c| c.status == "True");
        println!(
            "{:<12} {:<18} {:<32} {:<10} {:<16} {:<6} {:<20} {}",
            key.namespace().unwrap_or_default(),
            key.name_any(),
            key.spec.alias.as_deref().unwrap_or("-"),
            key.spec.region,
            status.key_state.as_deref().unwrap_or("-"),
            ready.map(|c| c.status.as_str()).unwrap_or("-"),
            ready.map(|c| c.reason.as_str()).unwrap_or("-"),
            status.arn.as_deref().unwrap_or("-"),
        );
        if let Some(c) = ready.filter(|c| c.status != "True") {
            println!("    {}", c.message);
        }
    }
    if !settled_replicas.is_empty() {
        println!();
        println!(
            "{:<12} {:<22} {:<14} {:<14} {:<16} {:<6} {:<20} ARN",
            "NAMESPACE", "REPLICA", "PRIMARY", "REGION", "STATE", "READY", "REASON"
        );
    }
    for replica in &settled_replicas {
        let status = replica.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        all_ready &= ready.is_some_and(|c| c.status == "True");
        println!(
            "{:<12} {:<22} {:<14} {:<14} {:<16} {:<6} {:<20} {}",
            replica.namespace().unwrap_or_default(),
            replica.name_any(),
            replica.spec.primary_key_ref.name,
            replica.spec.region,
            status.key_state.as_deref().unwrap_or("-"),
            ready.map(|c| c.status.as_str()).unwrap_or("-"),
            ready.map(|c| c.reason.as_str()).unwrap_or("-"),
            status.arn.as_deref().unwrap_or("-"),
        );
        if let Some(c) = ready.filter(|c| c.status != "True") {
            println!("    {}", c.message);
        }
    }
    println!();
    let ready_keys = settled
        .iter()
        .filter(|k| is_ready(k.status.as_deref()))
        .count();
    let ready_replicas = settled_replicas
        .iter()
        .filter(|r| is_ready(r.status.as_deref()))
        .count();
    println!("{ready_keys} of {} AwsKeys Ready", settled.len());
    println!(
        "{ready_replicas} of {} AwsReplicaKeys Ready",
        settled_replicas.len()
    );
    Ok(all_ready)
}

fn is_ready(status: Option<&KmsKeyStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Ready, or a Ready=False written for the current generation that is not a wait for a primary.
fn settled(status: Option<&KmsKeyStatus>, generation: Option<i64>) -> bool {
    status.is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready"
                && c.observed_generation == generation
                && (c.status == "True" || c.reason != "PrimaryNotReady")
        })
    })
}
