//! KMS clients, one per (connection, region), built once and shared by every reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::api::{AwsKms, AwsKmsSpec};

use super::Client;

/// Which credentials and endpoint a key is managed with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Connection {
    /// Name of the `AwsKms`; None for the operator's own credentials.
    pub name: Option<String>,
    /// `resourceVersion` of the `AwsKms`, so an edited connection gets fresh clients.
    pub version: Option<String>,
    pub spec: AwsKmsSpec,
}

impl Connection {
    /// The operator's own credentials, any region.
    pub fn operator_default() -> Connection {
        Connection::default()
    }

    pub fn from_aws_kms(kms: &AwsKms) -> Connection {
        Connection {
            name: kms.metadata.name.clone(),
            version: kms.metadata.resource_version.clone(),
            spec: kms.spec.clone(),
        }
    }

    /// A human name for messages: `AwsKms/<name>` or `operator credentials`.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("AwsKms/{name}"),
            None => "the operator's own credentials".to_string(),
        }
    }
}

type CacheKey = (Option<String>, Option<String>, String);

/// Builds and caches KMS clients. Every client shares the base AWS configuration (credential
/// chain, `AWS_ENDPOINT_URL_KMS`, retry and timeout settings).
pub struct KmsClients {
    base: SdkConfig,
    fixed: Option<Client>,
    cache: Mutex<HashMap<CacheKey, Client>>,
}

impl KmsClients {
    /// Loads the standard AWS configuration from the environment (env vars, profile, IRSA,
    /// EKS Pod Identity, IMDS) with keyfleet's retry and timeout settings.
    pub async fn from_env() -> KmsClients {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(15))
                    .operation_timeout(Duration::from_secs(45))
                    .build(),
            )
            .load()
            .await;
        KmsClients::from_config(base)
    }

    pub fn from_config(base: SdkConfig) -> KmsClients {
        KmsClients {
            base,
            fixed: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Every connection and region gets this one client (tests with SDK mocks).
    pub fn fixed(client: Client) -> KmsClients {
        KmsClients {
            base: SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .build(),
            fixed: Some(client),
            cache: Mutex::new(HashMap::new()),
        }
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
        let region = Region::new(region.to_string());
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
        Client::from_conf(config.build())
    }
}
