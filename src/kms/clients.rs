//! KMS clients, one per (connection, region), built once and shared by every reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

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
use super::quota::{RateLimitedHttpClient, RateLimits};

/// Which credentials and endpoint a key is managed with: an `AwsKms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// Name of the `AwsKms`.
    pub name: String,
    /// `resourceVersion` of the `AwsKms`, so an edited connection gets fresh clients.
    pub version: Option<String>,
    pub spec: AwsKmsSpec,
}

impl Connection {
    pub fn from_aws_kms(kms: &AwsKms) -> Connection {
        Connection {
            name: kms.metadata.name.clone().unwrap_or_default(),
            version: kms.metadata.resource_version.clone(),
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

type CacheKey = (String, Option<String>, String);

/// Builds and caches KMS clients. Every client shares the base AWS configuration (credential
/// chain, `AWS_ENDPOINT_URL_KMS`, retry and timeout settings).
pub struct KmsClients {
    base: SdkConfig,
    fixed: Option<Client>,
    metrics: Option<Arc<Metrics>>,
    limits: Option<Arc<RateLimits>>,
    /// The HTTP client (connection pool) under every rate-limited client.
    http: Option<SharedHttpClient>,
    cache: Mutex<HashMap<CacheKey, Client>>,
    callers: super::identity::Callers,
}

impl KmsClients {
    /// Loads the standard AWS configuration from the environment (env vars, profile, IRSA,
    /// EKS Pod Identity, IMDS) with keyfleet's retry and timeout settings.
    pub async fn from_env() -> KmsClients {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .load()
            .await;
        KmsClients::from_config(base)
    }

    pub fn from_config(base: SdkConfig) -> KmsClients {
        KmsClients {
            base,
            fixed: None,
            metrics: None,
            limits: None,
            http: None,
            cache: Mutex::new(HashMap::new()),
            callers: Default::default(),
        }
    }

    /// Paces every request with `limits` (one bucket per account, region and operation).
    pub fn with_rate_limits(mut self, limits: Arc<RateLimits>) -> KmsClients {
        let http = self.base.http_client().unwrap_or_else(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https()
        });
        self.http = Some(http);
        self.limits = Some(limits);
        self
    }

    /// Counts every KMS call attempt in `metrics` (operation × ok/throttled/error).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> KmsClients {
        self.metrics = Some(metrics);
        self
    }

    /// Every connection and region gets this one client (tests with SDK mocks).
    pub fn fixed(client: Client) -> KmsClients {
        KmsClients {
            base: SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .build(),
            fixed: Some(client),
            metrics: None,
            limits: None,
            http: None,
            cache: Mutex::new(HashMap::new()),
            callers: Default::default(),
        }
    }

    /// The principal KMS calls through `connection` run as (None: unknown, and always with
    /// [`KmsClients::fixed`]).
    pub async fn caller(
        &self,
        connection: &Connection,
        region: &str,
    ) -> Option<crate::policy::Caller> {
        let base = self.fixed.is_none().then_some(&self.base);
        self.callers.caller(base, connection, region).await
    }

    /// The client for `connection` in `region`, built on first use.
    pub async fn client(&self, connection: &Connection, region: &str) -> Client {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let key = (
            connection.name.clone(),
            connection.version.clone(),
            region.to_string(),
        );
        if let Some(client) = self.lock().get(&key) {
            return client.clone();
        }
        let client = self.build(connection, region).await;
        let mut cache = self.lock();
        // An edited AwsKms leaves its old clients behind; drop them.
        cache.retain(|(name, version, _), _| {
            name != &connection.name || version == &connection.version
        });
        cache.entry(key).or_insert(client).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Client>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn build(&self, connection: &Connection, region: &str) -> Client {
        let region_name = region.to_string();
        let region = Region::new(region_name.clone());
        let mut config = aws_sdk_kms::config::Builder::from(&self.base).region(region.clone());
        if let Some(url) = &connection.spec.endpoint_url {
            config = config.endpoint_url(url);
        }
        if let Some(role_arn) = &connection.spec.role_arn {
            let mut provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
                .session_name("keyfleet")
                .region(region);
            if let Some(external_id) = &connection.spec.external_id {
                provider = provider.external_id(external_id);
            }
            config = config.credentials_provider(provider.configure(&self.base).build().await);
        }
        // Each connection and region has its own retry quota, refilled over time: a 5xx storm
        // in one region neither starves the others of retries nor ends retrying for good.
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
        if let (Some(limits), Some(http)) = (&self.limits, &self.http) {
            config = config.http_client(RateLimitedHttpClient::new(
                http.clone(),
                limits.clone(),
                connection.quota_identity(),
                region_name,
            ));
        }
        if let Some(metrics) = &self.metrics {
            config = config.interceptor(CallCounter {
                metrics: metrics.clone(),
            });
        }
        Client::from_conf(config.build())
    }
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

/// An AWS JSON error body of a throttling error (`ThrottlingException` and friends).
fn is_throttling(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("__type").and_then(|t| t.as_str()).map(str::to_string))
        .is_some_and(|t| {
            t.contains("Throttling")
                || t.contains("TooManyRequests")
                || t.contains("RequestLimitExceeded")
        })
}
