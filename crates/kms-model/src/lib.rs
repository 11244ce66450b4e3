//! A strict, stateful AWS KMS model with real crypto, served over HTTP (AWS JSON 1.1) on
//! 127.0.0.1, for tests and benchmarks that need AWS behaviour LocalStack lacks.
//!
//! Start one with [`KmsModel::start`], point an AWS SDK client (or the operator process) at
//! [`KmsModel::url`], and read back what happened: [`KmsModel::keys`] lists every key of the
//! account in every Region, [`KmsModel::requests`] every request with what it carried. A manual
//! clock ([`KmsModel::advance`]) expires import tokens and key material and ends deletion
//! waiting periods; [`KmsModel::inject`] schedules faults; [`KmsModel::enforce_quotas`] turns
//! on AWS's request quotas. The same endpoint answers STS GetCallerIdentity and AssumeRole
//! ([`KmsModel::add_role`] makes a role require an ExternalId); credentials from AssumeRole
//! call as the assumed-role session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
//! let model = kms_model::KmsModel::start().await?;
//! let kms = aws_sdk_kms::Client::from_conf(
//!     aws_sdk_kms::Config::builder()
//!         .behavior_version(BehaviorVersion::latest())
//!         .region(Region::new("us-east-1")) // the Region is taken from the SigV4 scope
//!         .endpoint_url(model.url())
//!         .credentials_provider(Credentials::new("AKID", "secret", None, None, "test"))
//!         .build(),
//! );
//! kms.create_key().send().await?;
//! model.advance(std::time::Duration::from_secs(86_400));
//! assert_eq!(model.keys().len(), 1);
//! assert_eq!(model.requests_of("CreateKey").len(), 1);
//! # Ok(()) }
//! ```
//!
//! Where AWS's documentation leaves the exact answer open, the model chooses (and tests pin):
//! wrong-length or wrong-kind material → `IncorrectKeyMaterialException`; NEW_KEY_MATERIAL
//! into a replica → `UnsupportedOperationException`; NEW_KEY_MATERIAL while material is
//! pending rotation → `KMSInvalidStateException`, and of material already associated with
//! the key → `IncorrectKeyMaterialException`; a replica's import without ImportType is
//! EXISTING_KEY_MATERIAL (and may bring the first material of the set); a key whose material
//! returns after PendingImport is Enabled again; a policy over 32 KB →
//! `LimitExceededException`; deleting material pending rotation on a primary removes it from
//! every Region. RSA_AES_KEY_WRAP_* is accepted for every key spec (the API reference lists it
//! for RSA and ECC material only). Not modelled: grants, key rotation schedules, custom key
//! stores, asymmetric Encrypt/Decrypt, GenerateDataKey*, ReEncrypt, key agreement, SigV4
//! signature verification (only the presence and shape of the signature are checked).

mod error;
mod faults;
mod material;
mod ops;
mod params;
mod quota;
mod server;
mod state;
mod sts;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::KmsError;
pub use faults::{Fault, FaultKind};
pub use material::key_material_id;
pub use state::Role;

use state::{MaterialSet, State};

/// The account the model serves when not told otherwise.
pub const DEFAULT_ACCOUNT: &str = "111122223333";

/// What a model starts with.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The twelve-digit account id in every ARN.
    pub account_id: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            account_id: DEFAULT_ACCOUNT.to_string(),
        }
    }
}

/// One request the model received, in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub seq: u64,
    /// From the SigV4 credential scope.
    pub region: String,
    /// `X-Amz-Target` without `TrentService.` (`sts:GetCallerIdentity` for STS).
    pub operation: String,
    pub access_key_id: String,
    /// The request body as sent (blobs stay base64; plaintext key material is never sent).
    pub params: serde_json::Value,
    /// The error code answered (KMS's, a quota's or an injected one); None on success.
    pub error: Option<String>,
    /// The fault injected into this request, if any.
    pub fault: Option<FaultKind>,
    /// Whether the call changed (or read) the model: true for successes and lost answers.
    pub took_effect: bool,
}

/// A key as the model holds it (for assertions), never its material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    pub region: String,
    pub key_id: String,
    pub arn: String,
    pub key_state: String,
    pub origin: String,
    pub key_spec: String,
    pub key_usage: String,
    pub description: String,
    pub multi_region: bool,
    /// The Region of the multi-Region primary, for multi-Region keys.
    pub primary_region: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub aliases: Vec<String>,
    pub policy: String,
    /// CurrentKeyMaterialId of the key (set).
    pub current_key_material_id: Option<String>,
    /// Every material of the key (set) with its role, in import order.
    pub materials: Vec<(String, Role)>,
    /// KeyMaterialIds this Region holds, with their ValidTo (epoch seconds).
    pub imported: BTreeMap<String, Option<i64>>,
    /// Deletion date (epoch seconds) when PendingDeletion.
    pub deletion_date: Option<i64>,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub log: Mutex<Vec<RecordedRequest>>,
    pub seq: AtomicU64,
    pub clock_offset_ms: AtomicI64,
    pub faults: Mutex<Vec<Fault>>,
    pub quotas: Mutex<Option<quota::Quotas>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        real + self
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A running model; the server stops when it is dropped.
pub struct KmsModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KmsModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KmsModel {
    /// Serves a fresh account ([`DEFAULT_ACCOUNT`]) on an ephemeral port of 127.0.0.1.
    pub async fn start() -> std::io::Result<KmsModel> {
        KmsModel::start_with(ModelConfig::default()).await
    }

    pub async fn start_with(config: ModelConfig) -> std::io::Result<KmsModel> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&config.account_id)),
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(0),
            faults: Mutex::new(Vec::new()),
            quotas: Mutex::new(None),
        });
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        Ok(KmsModel { addr, shared, task })
    }

    /// The endpoint URL for AWS SDK clients (KMS and STS).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn account_id(&self) -> String {
        lock(&self.shared.state).account.clone()
    }

    /// The model's time (the wall clock plus every [`KmsModel::advance`]).
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.shared.now_ms().max(0) as u64)
    }

    /// Moves the model's clock forward: import tokens, key material and deletion waiting
    /// periods expire as they would in that time.
    pub fn advance(&self, by: Duration) {
        self.shared
            .clock_offset_ms
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
        let now = self.shared.now_ms();
        lock(&self.shared.state).tick(now);
    }

    /// Every key of the account, in every Region, tagged or not.
    pub fn keys(&self) -> Vec<KeyView> {
        let now = self.shared.now_ms();
        let mut state = lock(&self.shared.state);
        state.tick(now);
        state.keys.values().map(|k| view(&state, k)).collect()
    }

    /// One key, by Region and key id.
    pub fn key(&self, region: &str, key_id: &str) -> Option<KeyView> {
        self.keys()
            .into_iter()
            .find(|k| k.region == region && k.key_id == key_id)
    }

    /// Creates `n` symmetric keys (Origin AWS_KMS, no tags) in `region` as CreateKey would,
    /// without requests (not logged): an account full of other keys. Returns their ids.
    pub fn create_keys(&self, region: &str, n: usize) -> Vec<String> {
        let now_ms = self.shared.now_ms();
        let mut state = lock(&self.shared.state);
        let caller = sts::caller_arn(&state, "kms-model");
        let params = serde_json::Map::new();
        (0..n)
            .filter_map(|_| {
                let mut ctx = ops::Ctx {
                    state: &mut state,
                    region,
                    caller_arn: &caller,
                    now_ms,
                    wrapping: None,
                };
                let out = ops::dispatch(&mut ctx, "CreateKey", &params::Params(&params)).ok()?;
                out["KeyMetadata"]["KeyId"].as_str().map(str::to_string)
            })
            .collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The requests of one operation (e.g. `ImportKeyMaterial`).
    pub fn requests_of(&self, operation: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }

    /// Schedules a fault for the next matching requests.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Drops every fault not used up yet (KMS recovers).
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Faults scheduled and not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        lock(&self.shared.faults)
            .iter()
            .filter(|f| f.remaining > 0)
            .cloned()
            .collect()
    }

    /// Enforces request quotas, per (Region, operation), as token buckets that hold one
    /// request (no burst) and refill on the model's clock (so [`KmsModel::advance`] refills
    /// them too): `rates` in requests per second (e.g. keyfleet's `AWS_DEFAULT_QUOTAS`);
    /// operations missing from it get `fallback`.
    pub fn enforce_quotas<S: Into<String>>(
        &self,
        rates: impl IntoIterator<Item = (S, f64)>,
        fallback: f64,
    ) {
        let rates = rates.into_iter().map(|(op, r)| (op.into(), r)).collect();
        *lock(&self.shared.quotas) = Some(quota::Quotas::new(rates, fallback));
    }

    /// Makes new replicas stay in the transient `Creating` state for `delay` of the model's
    /// clock (AWS: a few seconds), refusing imports and cryptographic operations meanwhile.
    pub fn set_replica_creation_delay(&self, delay: Duration) {
        lock(&self.shared.state).replica_creation_ms = delay.as_millis() as i64;
    }

    /// Registers an IAM role whose trust policy requires `external_id` (None: any caller may
    /// assume it). Roles not registered can be assumed without an ExternalId.
    pub fn add_role(&self, role_arn: &str, external_id: Option<&str>) {
        lock(&self.shared.state)
            .roles
            .insert(role_arn.to_string(), external_id.map(str::to_string));
    }

    /// Stops enforcing quotas.
    pub fn lift_quotas(&self) {
        *lock(&self.shared.quotas) = None;
    }
}

fn view(state: &State, k: &state::Key) -> KeyView {
    let set = state.sets.get(&k.key_id);
    KeyView {
        region: k.region.clone(),
        key_id: k.key_id.clone(),
        arn: k.arn.clone(),
        key_state: state.key_state(k).to_string(),
        origin: k.origin.clone(),
        key_spec: k.key_spec.clone(),
        key_usage: k.key_usage.clone(),
        description: k.description.clone(),
        multi_region: k.multi_region,
        primary_region: k.primary_region.clone(),
        tags: k.tags.clone(),
        aliases: state
            .aliases
            .iter()
            .filter(|((r, _), a)| r == &k.region && a.target == k.key_id)
            .map(|((_, n), _)| n.clone())
            .collect(),
        policy: k.policy.clone(),
        current_key_material_id: set.and_then(MaterialSet::current).map(|e| e.id.clone()),
        materials: set
            .map(|s| s.entries.iter().map(|e| (e.id.clone(), e.role)).collect())
            .unwrap_or_default(),
        imported: k
            .imports
            .iter()
            .map(|(id, m)| (id.clone(), m.valid_to_ms.map(|t| t / 1000)))
            .collect(),
        deletion_date: k.deletion.and_then(|d| d.date_ms).map(|t| t / 1000),
    }
}
