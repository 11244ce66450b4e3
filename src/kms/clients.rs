//! KMS clients, one per (connection, region) and, through a role, one per object (its own role
//! session), built once and shared by every reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

use std::sync::Arc;

use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::api::{AwsKms, AwsKmsSpec};
use crate::metrics::Metrics;

use super::Client;
use super::fence::{FencedHttpClient, WriteFence};
use super::quota::{RateLimitedHttpClient, RateLimits, is_throttling};
use super::session::{Requester, RoleSessionCredentials};

/// Which credentials and endpoint a key is managed with: an `AwsKms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// Name of the `AwsKms`.
    pub name: String,
    /// `metadata.generation` of the `AwsKms` (its spec), so an edited connection gets fresh
    /// clients.
    pub version: Option<String>,
    pub spec: AwsKmsSpec,
}

impl Connection {
    pub fn from_aws_kms(kms: &AwsKms) -> Connection {
        Connection {
            name: kms.metadata.name.clone().unwrap_or_default(),
            // The spec's generation, not the resourceVersion: a status write (the AwsKms status
            // check) must not make every key assume its role again.
            version: kms.metadata.generation.map(|g| g.to_string()),
            spec: kms.spec.clone(),
        }
    }

    /// Whose KMS request quotas this connection spends: the account of its role, else the
    /// operator's own credentials; and the endpoint, when it is not AWS's.
    pub fn quota_identity(&self) -> String {
        let account = match &self.spec.role_arn {
            // arn:aws:iam::<account>:role/<name>
            Some(arn) => format!(
                "account:{}",
                arn.split(':')
                    .nth(4)
                    .filter(|a| !a.is_empty())
                    .unwrap_or(arn)
            ),
            None => "operator-credentials".to_string(),
        };
        match &self.spec.endpoint_url {
            Some(url) => format!("{account}@{url}"),
            None => account,
        }
    }

    /// The account of the connection's role (None: the operator's own credentials, known only
    /// by asking STS).
    pub fn account(&self) -> Option<String> {
        let arn = self.spec.role_arn.as_deref()?;
        arn.split(':')
            .nth(4)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
    }

    /// A human name for messages: `AwsKms/<name>`.
    pub fn describe(&self) -> String {
        format!("AwsKms/{}", self.name)
    }
}

/// A connection at one `resourceVersion`, in one region.
type ConnectionKey = (String, Option<String>, String);

/// How many role sessions (object × connection × region) keep their credentials at most (about
/// 2.5 KB each, measured); the least recently used goes first. Above this many objects
/// reconciled within an hour, roles would be assumed again at every reconcile.
const MAX_SESSIONS: usize = 10_000;
/// How many session clients are kept at most (about 19 KB each, measured); the least recently
/// used goes first, and is rebuilt, without an STS call, from its session's credentials. A
/// client is cheap to rebuild and its session's credentials stay cached in `sessions`, so this
/// only has to cover the reconciles in flight (`--concurrency`, 8 by default, per kind): a
/// thousand kept clients were 19 MiB of a 1,000-key fleet's resident set under a role, 64 were
/// 1.2 MiB (heaptrack, 300 keys over two accounts).
const MAX_SESSION_CLIENTS: usize = 16;
/// A session unused this long is dropped (its object was deleted or moved): its credentials,
/// an hour long by default, would have to be renewed anyway.
const SESSION_IDLE_EXPIRY: Duration = Duration::from_secs(3600);

/// The clients of one connection and region.
#[derive(Clone)]
struct ConnectionClients {
    /// Endpoint, retry partition, rate limits and metrics of the connection in the region; the
    /// client itself for a connection without a role.
    kms: Client,
    /// The role's STS client (the operator's own credentials), shared by its sessions.
    sts: Option<aws_sdk_sts::Client>,
}

/// One object's role session through one connection in one region.
type SessionKey = (ConnectionKey, Requester);

/// A value and when it was last used.
type Used<V> = (V, Instant);

struct Cache {
    connections: HashMap<ConnectionKey, ConnectionClients>,
    /// Each session's credentials provider, which caches the session's credentials.
    sessions: HashMap<SessionKey, Used<SharedCredentialsProvider>>,
    /// Clients of recently used sessions.
    session_clients: HashMap<SessionKey, Used<Client>>,
    max_sessions: usize,
    max_session_clients: usize,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            connections: HashMap::new(),
            sessions: HashMap::new(),
            session_clients: HashMap::new(),
            max_sessions: MAX_SESSIONS,
            max_session_clients: MAX_SESSION_CLIENTS,
        }
    }
}

impl Cache {
    /// An edited AwsKms leaves its old clients and sessions behind; drop them.
    fn drop_other_versions(&mut self, connection: &Connection) {
        let current = |(name, version, _): &ConnectionKey| {
            name != &connection.name || version == &connection.version
        };
        self.connections.retain(|key, _| current(key));
        self.sessions.retain(|(key, _), _| current(key));
        self.session_clients.retain(|(key, _), _| current(key));
    }
}

/// Keeps `value` for `key` in `map`, dropping entries idle for [`SESSION_IDLE_EXPIRY`] and, at
/// `capacity`, the least recently used.
fn insert_bounded<V>(
    map: &mut HashMap<SessionKey, Used<V>>,
    key: SessionKey,
    value: V,
    now: Instant,
    capacity: usize,
) {
    map.retain(|_, (_, used)| now.duration_since(*used) < SESSION_IDLE_EXPIRY);
    while map.len() >= capacity {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
    map.insert(key, (value, now));
}

/// Builds and caches KMS clients. Every client shares the base AWS configuration (credential
/// chain, `AWS_ENDPOINT_URL_KMS`, retry and timeout settings).
pub struct KmsClients {
    base: SdkConfig,
    fixed: Option<Client>,
    metrics: Option<Arc<Metrics>>,
    limits: Option<Arc<RateLimits>>,
    /// The HTTP client (connection pool) under every rate-limited client.
    http: Option<SharedHttpClient>,
    cache: Mutex<Cache>,
    callers: super::identity::Callers,
    /// Checked by every client built here before each write goes on the wire.
    fence: Arc<WriteFence>,
}

impl KmsClients {
    /// Loads the standard AWS configuration from the environment (env vars, profile, IRSA,
    /// EKS Pod Identity, IMDS) with keyfleet's retry and timeout settings.
    pub async fn from_env() -> KmsClients {
        let base = aws_config::defaults(BehaviorVersion::latest())
            // The credential chain (IRSA, IMDS, …) shares it too.
            .http_client(default_https())
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .load()
            .await;
        KmsClients::from_config(base)
    }

    pub fn from_config(base: SdkConfig) -> KmsClients {
        // The assume-role credentials provider (AwsKms roleArn) needs a time source; a config
        // built by hand (tests, embedders) may lack the one the environment loader sets.
        let base = if base.time_source().is_some() {
            base
        } else {
            base.to_builder()
                .time_source(aws_smithy_async::time::SystemTimeSource::new())
                .build()
        };
        // One HTTP client (connection pool, TLS configuration with its root certificates) under
        // every client built from `base`, KMS and STS alike: a client without one builds its
        // own, about 100 KiB of TLS configuration each (heaptrack).
        let base = if base.http_client().is_some() {
            base
        } else {
            base.to_builder().http_client(default_https()).build()
        };
        KmsClients::new(base, None)
    }

    /// Clients from `base` (or the one `fixed` client), with no metrics, pacing or HTTP client
    /// of their own yet.
    fn new(base: SdkConfig, fixed: Option<Client>) -> KmsClients {
        KmsClients {
            base,
            fixed,
            metrics: None,
            limits: None,
            http: None,
            cache: Mutex::new(Cache::default()),
            callers: Default::default(),
            fence: WriteFence::open(),
        }
    }

    /// Paces every request with `limits` (one bucket per account, region and operation).
    pub fn with_rate_limits(mut self, limits: Arc<RateLimits>) -> KmsClients {
        self.http = Some(self.wire());
        self.limits = Some(limits);
        self
    }

    /// Ends every wait for a rate-limit slot, present and future (the operator is stopping):
    /// requests not sent yet fail with [`super::KmsError::NotSent`] instead of waiting out the
    /// quota.
    pub fn stop_waiting(&self) {
        if let Some(limits) = &self.limits {
            limits.close();
        }
    }

    /// The HTTP client that sends requests: the configuration's, else keyfleet's default.
    fn wire(&self) -> SharedHttpClient {
        self.http
            .clone()
            .or_else(|| self.base.http_client())
            .unwrap_or_else(default_https)
    }

    /// A place in the line for `connection`'s GetParametersForImport slots in `region`
    /// ([`super::line`]); None when requests are not paced (nothing to wait for).
    pub fn import_place(
        &self,
        connection: &Connection,
        region: &str,
    ) -> Option<super::line::Place> {
        let limits = self.limits.as_ref()?;
        Some(limits.join_line(
            &connection.quota_identity(),
            region,
            "GetParametersForImport",
        ))
    }

    /// The write fence of every client built here (open until leader election closes it).
    pub fn fence(&self) -> &Arc<WriteFence> {
        &self.fence
    }

    /// Counts every KMS call attempt in `metrics` (operation × ok/throttled/error).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> KmsClients {
        self.metrics = Some(metrics);
        self
    }

    /// Every connection and region gets this one client (tests with SDK mocks; not fenced: the
    /// mocks answer above the HTTP layer).
    pub fn fixed(client: Client) -> KmsClients {
        let base = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        KmsClients::new(base, Some(client))
    }

    /// The principal KMS calls through `connection` for `requester` run as (None: unknown,
    /// and always with [`KmsClients::fixed`]).
    pub async fn caller(
        &self,
        connection: &Connection,
        region: &str,
        requester: &Requester,
    ) -> Option<crate::policy::Caller> {
        let base = self.fixed.is_none().then_some(&self.base);
        self.callers
            .caller(base, connection, region, requester)
            .await
    }

    /// Verifies that keyfleet can act through `connection` (see
    /// [`super::identity::verify_connection`]). With [`KmsClients::fixed`] there is nothing to
    /// verify against: Ok with an unknown caller.
    pub async fn verify(
        &self,
        connection: &Connection,
        region: &str,
        requester: &Requester,
    ) -> Result<crate::policy::Caller, super::identity::ConnectionFault> {
        if self.fixed.is_some() {
            return Ok(crate::policy::Caller {
                arn: String::new(),
                account_id: String::new(),
            });
        }
        super::identity::verify_connection(&self.base, connection, region, requester).await
    }

    /// The client for `connection` in `region`, built on first use. Through a role, the calls
    /// of each `requester` run under a role session of its own (named and tagged after it,
    /// see [`Requester::session_name`]); without one, every object shares the client.
    pub async fn client(
        &self,
        connection: &Connection,
        region: &str,
        requester: &Requester,
    ) -> Client {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let key = (
            connection.name.clone(),
            connection.version.clone(),
            region.to_string(),
        );
        let clients = self.connection_clients(connection, region, &key);
        let (Some(role_arn), Some(sts)) = (&connection.spec.role_arn, clients.sts) else {
            return clients.kms;
        };
        let session_key = (key, requester.clone());
        let now = Instant::now();
        let mut cache = self.lock();
        let max_sessions = cache.max_sessions;
        let max_clients = cache.max_session_clients;
        let credentials = match cache.sessions.get_mut(&session_key) {
            Some((credentials, used)) => {
                *used = now;
                credentials.clone()
            }
            None => {
                let credentials = SharedCredentialsProvider::new(RoleSessionCredentials::new(
                    sts,
                    role_arn,
                    connection.spec.external_id.clone(),
                    requester,
                ));
                insert_bounded(
                    &mut cache.sessions,
                    session_key.clone(),
                    credentials.clone(),
                    now,
                    max_sessions,
                );
                credentials
            }
        };
        if let Some((client, used)) = cache.session_clients.get_mut(&session_key) {
            *used = now;
            return client.clone();
        }
        // The session caches its credentials itself (the SDK's shared identity cache keeps
        // only 64 identities, and would be lost with the client).
        let client = Client::from_conf(
            clients
                .kms
                .config()
                .to_builder()
                .credentials_provider(credentials)
                .identity_cache(IdentityCache::no_cache())
                .build(),
        );
        insert_bounded(
            &mut cache.session_clients,
            session_key,
            client.clone(),
            now,
            max_clients,
        );
        client
    }

    fn connection_clients(
        &self,
        connection: &Connection,
        region: &str,
        key: &ConnectionKey,
    ) -> ConnectionClients {
        if let Some(clients) = self.lock().connections.get(key) {
            return clients.clone();
        }
        let clients = self.build(connection, region);
        let mut cache = self.lock();
        cache.drop_other_versions(connection);
        cache
            .connections
            .entry(key.clone())
            .or_insert(clients)
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn build(&self, connection: &Connection, region: &str) -> ConnectionClients {
        let region_name = region.to_string();
        let region = Region::new(region_name.clone());
        let mut config = aws_sdk_kms::config::Builder::from(&self.base).region(region.clone());
        if let Some(url) = &connection.spec.endpoint_url {
            config = config.endpoint_url(url);
        }
        // AssumeRole runs on the operator's own credentials, in the key's region.
        let sts = connection.spec.role_arn.as_ref().map(|_| {
            aws_sdk_sts::Client::from_conf(
                aws_sdk_sts::config::Builder::from(&self.base)
                    .region(region.clone())
                    .build(),
            )
        });
        // Each connection and region has its own retry quota, refilled over time: a 5xx storm
        // in one region neither starves the others of retries nor ends retrying for good. The
        // sessions of a connection share it (quotas are per account, not per session).
        config = config.retry_partition(
            RetryPartition::custom(format!(
                "keyfleet-kms/{}/{region_name}",
                connection.quota_identity()
            ))
            .token_bucket(
                TokenBucket::builder()
                    .capacity(RETRY_QUOTA_CAPACITY)
                    .refill_rate(RETRY_QUOTA_REFILL_PER_SECOND)
                    .build(),
            )
            .build(),
        );
        // The fence under the rate limiter: a write is checked after waiting for its slot.
        let fenced = SharedHttpClient::new(FencedHttpClient::new(self.wire(), self.fence.clone()));
        config = match &self.limits {
            Some(limits) => config.http_client(RateLimitedHttpClient::new(
                fenced,
                limits.clone(),
                connection.quota_identity(),
                region_name,
            )),
            None => config.http_client(fenced),
        };
        if let Some(metrics) = &self.metrics {
            config = config.interceptor(CallCounter {
                metrics: metrics.clone(),
            });
        }
        ConnectionClients {
            kms: Client::from_conf(config.build()),
            sts,
        }
    }
}

/// keyfleet's HTTPS client: rustls on aws-lc-rs, the one TLS crypto provider of the operator.
fn default_https() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
}

/// Retry quota of one connection and region (a retry costs 5 to 14 tokens).
const RETRY_QUOTA_CAPACITY: usize = 500;
const RETRY_QUOTA_REFILL_PER_SECOND: f32 = 10.0;

/// The SDK's standard retries (throttling, 5xx, timeouts) with backoff; a throttle that
/// outlasts them reaches the controller as a transient error, which backs off further.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(4)
}

/// Timeouts per attempt on the wire (connect, read) but none around an attempt as a whole: an
/// attempt first waits for its rate-limit token, which may take a while under a low quota.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(15))
        .build()
}

/// Counts each KMS call attempt (retries included) by operation and outcome.
#[derive(Debug)]
struct CallCounter {
    metrics: Arc<Metrics>,
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "keyfleet-kms-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        let outcome = match context.response() {
            Some(r) if r.status().is_success() => "ok",
            Some(r) if r.body().bytes().is_some_and(is_throttling) => "throttled",
            Some(r) if r.status().as_u16() == 429 => "throttled",
            _ => "error",
        };
        self.metrics.kms_call(&operation, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(connection: &str, version: &str, name: &str) -> (ConnectionKey, Requester) {
        (
            (connection.into(), Some(version.into()), "us-east-1".into()),
            Requester::new("ns", name),
        )
    }

    fn client() -> Client {
        Client::from_conf(
            aws_sdk_kms::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .build(),
        )
    }

    #[test]
    fn sessions_are_bounded_least_recently_used_first() {
        let mut map = HashMap::new();
        let t0 = Instant::now();
        insert_bounded(&mut map, key("c", "1", "a"), 'a', t0, 2);
        insert_bounded(
            &mut map,
            key("c", "1", "b"),
            'b',
            t0 + Duration::from_secs(1),
            2,
        );
        // "a" is used again, so "b" is now the least recently used.
        map.get_mut(&key("c", "1", "a")).unwrap().1 = t0 + Duration::from_secs(2);
        insert_bounded(
            &mut map,
            key("c", "1", "c"),
            'c',
            t0 + Duration::from_secs(3),
            2,
        );
        assert_eq!(map.len(), 2);
        assert!(map.contains_key(&key("c", "1", "a")));
        assert!(!map.contains_key(&key("c", "1", "b")));
        assert!(map.contains_key(&key("c", "1", "c")));
    }

    #[test]
    fn idle_sessions_and_old_connection_versions_are_dropped() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        let cap = cache.max_session_clients;
        let clients = &mut cache.session_clients;
        insert_bounded(clients, key("c", "1", "gone"), client(), t0, cap);
        let later = t0 + SESSION_IDLE_EXPIRY;
        insert_bounded(clients, key("c", "1", "live"), client(), later, cap);
        insert_bounded(clients, key("d", "1", "other"), client(), later, cap);
        let last = later + Duration::from_secs(1);
        insert_bounded(clients, key("c", "1", "new"), client(), last, cap);
        assert!(!clients.contains_key(&key("c", "1", "gone")));
        assert_eq!(clients.len(), 3);

        let edited = Connection {
            name: "c".into(),
            version: Some("2".into()),
            spec: serde_json::from_value(serde_json::json!({"allowedNamespaces": {"from": "All"}}))
                .unwrap(),
        };
        cache.drop_other_versions(&edited);
        assert_eq!(
            cache.session_clients.keys().cloned().collect::<Vec<_>>(),
            [key("d", "1", "other")]
        );
    }
}
