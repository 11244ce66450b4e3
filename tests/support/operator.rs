//! The real controller, in-process, against the in-memory Kubernetes API and a KMS endpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyfleet::api::{AwsKey, KeySpec};
use keyfleet::controller::{self, Context, Settings};
use keyfleet::kms::KmsClients;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::core::object::HasStatus;
use memkube::MemKube;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::localstack;

/// Cluster id the test operator stamps on its keys.
pub const CLUSTER_ID: &str = "test-cluster";

/// A running controller; stop it with [`Operator::stop`] (or drop it to abort).
pub struct Operator {
    pub kube: MemKube,
    pub client: kube::Client,
    /// The controller's metrics (what `/metrics` would serve).
    pub metrics: Arc<keyfleet::metrics::Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Settings for tests: the production defaults with a short resync and drift interval so drift
/// is seen quickly.
pub fn settings() -> Settings {
    let mut s = Settings::new(CLUSTER_ID);
    s.resync_interval = Duration::from_secs(2);
    s.drift_interval = Duration::from_secs(2);
    s.blocked_recheck_interval = Duration::from_secs(600);
    s.concurrency = 16;
    s
}

/// Creates the AwsKms `default` that keys without `kmsRef` use: the operator's own credentials,
/// granted to every namespace, bypass of the lockout check allowed (the test cluster's admin
/// trusts its tenants; `tests/tenancy.rs` shows the boundaries). Idempotent.
pub fn seed_default_connection(kube: &MemKube) {
    let _ = kube.seed(
        "kms.keyfleet.dev",
        "v1alpha1",
        "awskmses",
        None,
        serde_json::json!({
            "apiVersion": "kms.keyfleet.dev/v1alpha1",
            "kind": "AwsKms",
            "metadata": {"name": "default"},
            "spec": {
                "allowedNamespaces": {"from": "All"},
                "keyPolicy": {"allowBypassPolicyLockoutSafetyCheck": true}
            }
        }),
    );
}

/// KMS clients pointed at the test LocalStack, with static test credentials.
pub async fn localstack_clients() -> KmsClients {
    KmsClients::from_config(localstack_config().await)
}

/// The AWS configuration of the test LocalStack: endpoint, region, static test credentials.
pub async fn localstack_config() -> aws_config::SdkConfig {
    let endpoint = localstack::kms_endpoint().await;
    localstack::sdk_config(&endpoint)
}

impl Operator {
    /// Starts the controller against `kube` with LocalStack KMS.
    pub async fn start(kube: MemKube) -> Operator {
        let kms = localstack_clients().await;
        Operator::start_with(kube, kms, settings())
    }

    /// Starts the controller with explicit KMS clients and settings.
    /// The operator on the strict KMS model (crates/kms-model), per Region like against AWS.
    pub fn on_model(model: &kms_model::KmsModel) -> Operator {
        let clients = KmsClients::from_config(super::localstack::sdk_config(&model.url()));
        Operator::start_with(MemKube::new(), clients, settings())
    }

    pub fn start_with(kube: MemKube, kms: KmsClients, settings: Settings) -> Operator {
        Operator::start_with_clock(kube, kms, settings, keyfleet::clock::Clock::system())
    }

    /// Starts the controller reading the time from `clock` (e.g. a `ManualClock`).
    pub fn start_with_clock(
        kube: MemKube,
        kms: KmsClients,
        settings: Settings,
        clock: keyfleet::clock::Clock,
    ) -> Operator {
        let controller_client = kube.client();
        Operator::launch(kube, controller_client, kms, settings, clock)
    }

    /// Starts the controller with a client that may do only what `rules` allow (RBAC, see
    /// [`super::chart_rbac`]); the test's own client (`op.client`) stays cluster-admin.
    pub fn start_restricted(
        kube: MemKube,
        kms: KmsClients,
        rules: Vec<memkube::Rule>,
        clock: keyfleet::clock::Clock,
    ) -> Operator {
        let controller_client = kube.restricted(rules).client();
        Operator::launch(kube, controller_client, kms, settings(), clock)
    }

    fn launch(
        kube: MemKube,
        controller_client: kube::Client,
        kms: KmsClients,
        settings: Settings,
        clock: keyfleet::clock::Clock,
    ) -> Operator {
        // RUST_LOG=keyfleet=debug shows the controller's logs in failing tests; they are
        // captured for the leak scan whatever it says.
        super::leaks::capture_logs();
        seed_default_connection(&kube);
        let client = kube.client();
        let ctx = Arc::new(Context::new(controller_client, kms, settings).with_clock(clock));
        let metrics = ctx.metrics.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(ctx, async move {
            let _ = rx.await;
        }));
        Operator {
            kube,
            client,
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the controller gracefully (in-flight reconciles finish).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // A controller that does not stop would keep reconciling beside the next one: the
            // test fails instead of going on.
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_cancelled() => {}
                Ok(Err(e)) => panic!("the operator task failed while stopping: {e}"),
                Err(_) => {
                    abort.abort();
                    panic!("the operator did not stop within 30 s of being told to");
                }
            }
        }
    }

    pub fn keys(&self, namespace: &str) -> Api<AwsKey> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Events recorded about the named object, as (type, reason, note).
    pub fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        self.kube
            .objects("events.k8s.io", "events")
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Operator {
    /// Aborts the controller, then scans logs, Events, statuses and metrics for material
    /// (unless the test already failed).
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if !std::thread::panicking() {
            super::leaks::assert_none_leaked(&self.kube, &self.metrics.render());
        }
    }
}

/// Creates a Secret holding `value` under `key`.
pub async fn create_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
    value: &[u8],
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.to_vec()),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

/// Replaces the material of a Secret made by [`create_material_secret`] (its key `material`).
pub async fn update_material_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    value: &[u8],
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secret = api.get(name).await.expect("get Secret");
    let material = ByteString(value.to_vec());
    secret.data = Some(BTreeMap::from([("material".to_string(), material)]));
    api.replace(name, &PostParams::default(), &secret)
        .await
        .expect("replace Secret");
}

/// An AwsKey manifest: `spec` is merged over a symmetric key reading `secret`/`material`.
pub fn aws_key(name: &str, region: &str, secret: &str, spec: Value) -> AwsKey {
    let mut base = serde_json::json!({
        "region": region,
        "keySpec": "SYMMETRIC_DEFAULT",
        "keyMaterial": {"secretRef": {"name": secret, "key": "material"}},
    });
    if let (Some(b), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        b.extend(extra.clone());
    }
    AwsKey::new(
        name,
        serde_json::from_value(base).expect("valid AwsKey spec"),
    )
}

pub async fn create_key(api: &Api<AwsKey>, key: &AwsKey) -> AwsKey {
    api.create(&PostParams::default(), key)
        .await
        .expect("create AwsKey")
}

/// The message of the Ready condition.
pub fn ready_message(key: &AwsKey) -> String {
    let conditions = &key.status.as_ref().expect("status").conditions;
    ready_condition(conditions).message.clone()
}

/// The Ready condition among `conditions` (of any kind's status); panics when there is none.
pub fn ready_condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition")
}

/// The Ready condition as (status, reason).
pub fn ready(key: &AwsKey) -> Option<(String, String)> {
    condition_of(&key.status.as_ref()?.conditions, "Ready")
}

/// The condition of `type_` as (status, reason).
pub fn condition_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Polls until `check` holds for the named object (an AwsKey, AwsReplicaKey, AwsKms, ...), or
/// panics after 30 s with its status.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + HasStatus + Clone + DeserializeOwned + std::fmt::Debug,
    K::Status: std::fmt::Debug,
{
    wait_for_within(api, name, Duration::from_secs(30), what, check).await
}

/// [`wait_for`] with another time limit than 30 s.
pub async fn wait_for_within<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + HasStatus + Clone + DeserializeOwned + std::fmt::Debug,
    K::Status: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await.expect("get");
        if let Some(k) = &current
            && check(k)
        {
            return k.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let status = current.as_ref().and_then(HasStatus::status);
            panic!("{name}: timed out after {timeout:?} waiting for {what}; status: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_ready(api: &Api<AwsKey>, name: &str) -> AwsKey {
    wait_for_within(api, name, Duration::from_secs(60), "Ready=True", |k| {
        ready(k).is_some_and(|(s, _)| s == "True")
    })
    .await
}

pub async fn wait_reason(api: &Api<AwsKey>, name: &str, reason: &str) -> AwsKey {
    wait_for_within(
        api,
        name,
        Duration::from_secs(60),
        &format!("Ready=False/{reason}"),
        |k| ready(k).is_some_and(|(s, r)| s == "False" && r == reason),
    )
    .await
}

/// Waits until the object `name` (an AwsKey, an AwsReplicaKey, ...) no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keys in KMS (one region) tagged as owned by the given AwsKey uid.
pub async fn kms_keys_owned_by(kms: &aws_sdk_kms::Client, uid: &str) -> Vec<String> {
    kms_keys_by_owner(kms).await.remove(uid).unwrap_or_default()
}

impl Operator {
    /// Waits until events with every one of `reasons` were recorded about `name`.
    pub async fn wait_events(&self, name: &str, reasons: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen: Vec<String> = self
                .events_for(name)
                .into_iter()
                .map(|(_, r, _)| r)
                .collect();
            if reasons.iter().all(|r| seen.iter().any(|s| s == r)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: expected events {reasons:?}, saw {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The key in `region` of the KMS model after a rotation: Enabled, the new material current,
/// the old one kept NON_CURRENT (old ciphertexts still decrypt).
pub fn assert_rotated_in_kms(
    model: &kms_model::KmsModel,
    region: &str,
    key_id: &str,
    old_id: &str,
    new_id: &str,
) {
    let k = model.key(region, key_id).unwrap();
    assert_eq!(k.key_state, "Enabled", "{region}");
    assert_eq!(
        k.materials,
        vec![
            (old_id.to_string(), kms_model::Role::NonCurrent),
            (new_id.to_string(), kms_model::Role::Current)
        ],
        "{region}"
    );
}

/// The KMS model's keys (every Region) whose owner-uid tag is `uid`.
pub fn model_keys_owned_by(model: &kms_model::KmsModel, uid: &str) -> Vec<kms_model::KeyView> {
    model
        .keys()
        .into_iter()
        .filter(|k| k.tags.get("keyfleet.dev/owner-uid").map(String::as_str) == Some(uid))
        .collect()
}

/// Where [`kms_keys_by_owner`] lists keys without a keyfleet owner-uid tag.
pub const UNTAGGED: &str = "(no owner-uid tag)";

/// Every key in one KMS region by owner uid tag, those without one under [`UNTAGGED`] (one
/// scan for many checks).
pub async fn kms_keys_by_owner(kms: &aws_sdk_kms::Client) -> BTreeMap<String, Vec<String>> {
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut marker = None;
    loop {
        let page = kms.list_keys().limit(1000).set_marker(marker).send().await;
        let page = page.expect("ListKeys");
        for key in page.keys() {
            let id = key.key_id().unwrap_or_default();
            let tags = kms.list_resource_tags().key_id(id).send().await;
            let tags = tags.expect("ListResourceTags");
            let owner = tags
                .tags()
                .iter()
                .find(|t| t.tag_key() == "keyfleet.dev/owner-uid")
                .map_or(UNTAGGED, |t| t.tag_value());
            by_owner
                .entry(owner.to_string())
                .or_default()
                .push(id.to_string());
        }
        match page.next_marker {
            Some(m) if page.truncated => marker = Some(m),
            _ => return by_owner,
        }
    }
}

impl Operator {
    /// How many times an event with `reason` was published about `name` (repeats are folded into
    /// one Event's `series.count` by the recorder).
    pub fn event_count(&self, name: &str, reason: &str) -> u64 {
        self.kube
            .objects("events.k8s.io", "events")
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
            .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
            .sum()
    }

    /// Waits until the connection status controller wrote the `default` AwsKms's first status:
    /// that write wakes every key using the connection, so a test counting a key's KMS calls
    /// starts after it.
    pub async fn connection_checked(&self) {
        let api = Api::<keyfleet::api::AwsKms>::all(self.client.clone());
        wait_for(&api, "default", "its first status", |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.observed_generation.is_some())
        })
        .await;
    }

    /// How many reconciles of `kind` (`AwsKey`, `AwsReplicaKey`) the controller finished.
    pub fn reconciles(&self, kind: &str) -> u64 {
        let prefix = format!("keyfleet_reconciles_total{{kind=\"{kind}\"");
        self.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until `more` reconciles of `kind` finished after `since` (a [`Self::reconciles`]
    /// count): the proof a "nothing happened" check needs before it asserts.
    pub async fn wait_reconciles(&self, kind: &str, since: u64, more: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.reconciles(kind) < since + more {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind}: fewer than {more} reconciles after {since} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the newest reconcile of `kind/namespace/name` scheduled its next run at least
    /// a minute away (the controller's `reconciled` debug line). The controllers' watches ignore
    /// their own status writes (a generation predicate), so such an object rests until something
    /// changes: the proof a "nothing is retried" check needs, instead of watching a fixed window.
    /// Returns how many reconciles of the object had finished by then.
    pub async fn wait_resting(&self, kind: &str, namespace: &str, name: &str) -> usize {
        let object = format!("object={kind}/{namespace}/{name}}}");
        wait_resting_lines(&[&object]).await
    }

    /// Waits until `more` reconciles of `kind/namespace/name` finished after `since` (a count
    /// [`Self::wait_resting`] or this returned; 0 for all): the proof that resyncs ran before a
    /// check that they changed nothing. Returns the new count.
    pub async fn wait_own_reconciles(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        since: usize,
        more: usize,
    ) -> usize {
        let object = format!("object={kind}/{namespace}/{name}}}");
        wait_log_lines(&[&object, "requeue_in_s="], since + more).await
    }

    /// Deletes the AwsKey `name` and waits until it is gone (its cleanup ran).
    pub async fn delete_key(&self, namespace: &str, name: &str) {
        self.keys(namespace)
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .expect("delete the AwsKey");
        wait_gone(&self.keys(namespace), name).await;
    }

    /// Makes the controller reconcile the AwsKey `name` again (an annotation changes) and waits
    /// until it did.
    pub async fn reconcile_again(&self, namespace: &str, name: &str) {
        let since = self.reconciles("AwsKey");
        let poke = serde_json::json!({"metadata": {"annotations": {
            "test.keyfleet.dev/poke": format!("{since}")
        }}});
        self.keys(namespace)
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&poke),
            )
            .await
            .expect("annotate the AwsKey");
        self.wait_reconciles("AwsKey", since, 1).await;
    }
}

/// Waits until the newest of the captured reconcile lines with every one of `needles` scheduled
/// the next reconcile at least a minute away (`requeue_in_s=`; 30 s at most); returns how many
/// such lines there are.
pub async fn wait_resting_lines(needles: &[&str]) -> usize {
    let needles: Vec<&str> = needles.iter().copied().chain(["requeue_in_s="]).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lines = super::leaks::captured_lines_with(&needles);
        let resting = lines.last().is_some_and(|l| {
            l.rsplit_once("requeue_in_s=")
                .and_then(|(_, s)| s.split_whitespace().next()?.parse::<u64>().ok())
                .is_some_and(|s| s >= 60)
        });
        if resting {
            return lines.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needles:?} did not come to rest within 30 s: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the controller's captured logs hold at least `count` lines with every one of
/// `needles` (30 s at most); returns how many they hold.
pub async fn wait_log_lines(needles: &[&str], count: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = super::leaks::captured_lines_with(needles).len();
        if found >= count {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{found} of {count} log lines with {needles:?} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// DescribeKey's metadata (panics when the key does not exist).
pub async fn describe(kms: &aws_sdk_kms::Client, key: &str) -> aws_sdk_kms::types::KeyMetadata {
    kms.describe_key()
        .key_id(key)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .expect("key metadata")
}

/// The key's state as KMS reports it (`Enabled`, `PendingDeletion`, ...).
pub async fn key_state(kms: &aws_sdk_kms::Client, key: &str) -> String {
    describe(kms, key)
        .await
        .key_state()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// The key id of a Ready AwsKey.
pub async fn ready_key_id(api: &Api<AwsKey>, name: &str) -> String {
    wait_ready(api, name)
        .await
        .status
        .and_then(|s| s.key_id.clone())
        .expect("status.keyId")
}

/// Creates a Secret `name` holding fresh material for `spec` under the key `material` (the key
/// `aws_key` manifests read) and returns the value.
pub async fn create_material_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: keyfleet::api::KeySpec,
) -> zeroize::Zeroizing<Vec<u8>> {
    let value = keyfleet_testkit::material::generate_secret_value(spec);
    create_secret(client, namespace, name, "material", &value).await;
    value
}

/// Creates a Secret `name` with fresh material for `spec` and an AwsKey `name` reading it in
/// the test region, with `extra` merged into the spec (`keySpec` is set from `spec`).
pub async fn create_key_with_material(
    op: &Operator,
    namespace: &str,
    name: &str,
    spec: keyfleet::api::KeySpec,
    extra: Value,
) -> AwsKey {
    create_material_secret(&op.client, namespace, name, spec).await;
    let mut fields = serde_json::json!({"keySpec": spec.as_str()});
    if let (Some(f), Some(extra)) = (fields.as_object_mut(), extra.as_object()) {
        f.extend(extra.clone());
    }
    create_key(
        &op.keys(namespace),
        &aws_key(name, super::localstack::DEFAULT_REGION, name, fields),
    )
    .await
}

/// [`create_key_with_material`] for the most common key: SYMMETRIC_DEFAULT.
pub async fn create_symmetric_key(
    op: &Operator,
    namespace: &str,
    name: &str,
    extra: Value,
) -> AwsKey {
    create_key_with_material(op, namespace, name, KeySpec::SymmetricDefault, extra).await
}

/// What most LocalStack tests start with: the operator on a fresh in-memory API, a KMS client
/// for the test region and the AwsKey API of a namespace.
pub struct Harness {
    pub op: Operator,
    pub kms: aws_sdk_kms::Client,
    pub api: Api<AwsKey>,
}

impl Harness {
    pub async fn start(namespace: &str) -> Harness {
        let op = Operator::start(MemKube::new()).await;
        let kms = super::localstack::kms_client(super::localstack::DEFAULT_REGION).await;
        let api = op.keys(namespace);
        Harness { op, kms, api }
    }
}

/// What the strict-KMS-model tests start with: the model (with `faults` injected before the
/// operator starts), the operator on it, and a KMS client of the test region on the model.
pub struct ModelHarness {
    pub model: kms_model::KmsModel,
    pub op: Operator,
    pub kms: aws_sdk_kms::Client,
}

impl ModelHarness {
    pub async fn start(faults: impl IntoIterator<Item = kms_model::Fault>) -> ModelHarness {
        let model = kms_model::KmsModel::start().await.unwrap();
        for fault in faults {
            model.inject(fault);
        }
        let op = Operator::on_model(&model);
        op.connection_checked().await;
        let kms = super::localstack::kms_client_at(&model.url(), super::localstack::DEFAULT_REGION);
        ModelHarness { model, op, kms }
    }
}

/// Polls `check` every `every` until it holds; fails the test with `what` after `timeout`.
pub async fn eventually(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(every).await;
    }
}

/// `status.keyMaterialId` of the AwsKey `name` (it must have recorded one).
pub async fn recorded_key_material_id(api: &Api<AwsKey>, name: &str) -> String {
    let key = api.get(name).await.expect("get AwsKey");
    key.status
        .and_then(|s| s.key.key_material_id)
        .expect("status.keyMaterialId")
}

/// One more reconcile of the AwsKey `name` sends no ImportKeyMaterial to the KMS model.
pub async fn reconcile_imports_nothing(
    op: &Operator,
    model: &kms_model::KmsModel,
    namespace: &str,
    name: &str,
) {
    let imports = model.requests_of("ImportKeyMaterial").len();
    op.reconcile_again(namespace, name).await;
    assert_eq!(
        model.requests_of("ImportKeyMaterial").len(),
        imports,
        "a reconcile imported again"
    );
}
