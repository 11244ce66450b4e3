//! A KMS wire for tests: the HTTP client under keyfleet's KMS clients (below the rate limiter
//! and the write fence) that records every KMS request it sends, with the wall-clock time, and
//! can hold requests in flight to show what happens to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::stalled_stream_protection::StalledStreamProtectionConfig;
use keyfleet::kms::quota::operation_of;
use keyfleet::kms::{KmsClients, KmsQuotas, RateLimits};
use tokio::sync::watch;

use super::operator::localstack_config;

/// One KMS request handed to the wire (after the write fence passed it).
#[derive(Clone, Debug)]
pub struct Sent {
    pub operation: String,
    pub at: SystemTime,
    /// The `keyfleet.dev/owner` tag (`namespace/name`) of a CreateKey.
    pub owner: Option<String>,
}

#[derive(Debug)]
struct Shared {
    sent: Mutex<Vec<Sent>>,
    /// How many of the next requests of an operation to hold.
    holds: Mutex<HashMap<String, usize>>,
    /// Set by [`KmsRecorder::release`].
    released: watch::Sender<bool>,
    held: AtomicUsize,
    cancelled: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn record(&self, operation: String, owner: Option<String>) {
        lock(&self.sent).push(Sent {
            operation,
            at: SystemTime::now(),
            owner,
        });
    }

    /// Whether this request of `operation` is to be held (and counts it).
    fn take_hold(&self, operation: &str) -> bool {
        let mut holds = lock(&self.holds);
        match holds.get_mut(operation) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Records (and optionally holds) the KMS requests of one operator instance.
#[derive(Clone, Debug)]
pub struct KmsRecorder {
    shared: Arc<Shared>,
}

impl Default for KmsRecorder {
    fn default() -> Self {
        KmsRecorder {
            shared: Arc::new(Shared {
                sent: Mutex::new(vec![]),
                holds: Mutex::new(HashMap::new()),
                released: watch::Sender::new(false),
                held: AtomicUsize::new(0),
                cancelled: AtomicUsize::new(0),
            }),
        }
    }
}

impl KmsRecorder {
    /// KMS clients against the test LocalStack whose requests go through this recorder, paced
    /// and fenced as in production (the AWS quotas, ten times faster).
    pub async fn localstack_clients(&self) -> KmsClients {
        let wire = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        let config = localstack_config()
            .await
            .into_builder()
            .http_client(SharedHttpClient::new(Wire {
                inner: wire,
                recorder: self.clone(),
            }))
            // A held request is a slow answer, not a stalled upload.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        KmsClients::from_config(config).with_rate_limits(RateLimits::new(
            KmsQuotas::aws_defaults().scaled(10.0),
            Duration::from_secs(60),
        ))
    }

    /// Every KMS request sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.shared.sent).clone()
    }

    /// How many `operation` requests were sent so far.
    pub fn count(&self, operation: &str) -> usize {
        self.sent()
            .iter()
            .filter(|s| s.operation == operation)
            .count()
    }

    /// The KMS requests sent so far that change KMS.
    pub fn writes(&self) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| keyfleet::kms::fence::is_write(&s.operation))
            .collect()
    }

    /// The next `n` requests of `operation` wait here, unsent and unrecorded, until
    /// [`KmsRecorder::release`].
    pub fn hold_next(&self, operation: &str, n: usize) {
        self.shared.released.send_replace(false);
        lock(&self.shared.holds).insert(operation.to_string(), n);
    }

    /// Lets every held request go (and holds no more).
    pub fn release(&self) {
        lock(&self.shared.holds).clear();
        self.shared.released.send_replace(true);
    }

    /// Requests waiting in the hold now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Requests dropped by their caller while held: never sent.
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are held.
    pub async fn wait_held(&self, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.held() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} KMS requests held within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Clone, Debug)]
struct Wire {
    inner: SharedHttpClient,
    recorder: KmsRecorder,
}

impl HttpClient for Wire {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(WireConnector {
            inner: self.inner.http_connector(settings, components),
            recorder: self.recorder.clone(),
        })
    }
}

#[derive(Debug)]
struct WireConnector {
    inner: SharedHttpConnector,
    recorder: KmsRecorder,
}

/// Counts a held request; counts it as cancelled when dropped before it is released.
struct Holding {
    shared: Arc<Shared>,
    released: bool,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.shared.held.fetch_sub(1, Ordering::SeqCst);
        if !self.released {
            self.shared.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl HttpConnector for WireConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target");
        let Some(operation) = target
            .filter(|t| t.starts_with("TrentService."))
            .and_then(|t| operation_of(Some(t)))
            .map(str::to_string)
        else {
            // Not KMS (STS): passes untouched.
            return self.inner.call(request);
        };
        let owner = (operation == "CreateKey")
            .then(|| request.body().bytes().and_then(owner_tag))
            .flatten();
        let shared = self.recorder.shared.clone();
        if !shared.take_hold(&operation) {
            // Recorded in the same call that passed the fence: no await in between.
            shared.record(operation, owner);
            return self.inner.call(request);
        }
        let inner = self.inner.clone();
        let mut released = shared.released.subscribe();
        shared.held.fetch_add(1, Ordering::SeqCst);
        let mut holding = Holding {
            shared,
            released: false,
        };
        HttpConnectorFuture::new(async move {
            let _ = released.wait_for(|r| *r).await;
            holding.released = true;
            holding.shared.record(operation, owner);
            drop(holding);
            inner.call(request).await
        })
    }
}

/// The `keyfleet.dev/owner` tag of a CreateKey request body.
fn owner_tag(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    body["Tags"]
        .as_array()?
        .iter()
        .find(|t| t["TagKey"] == "keyfleet.dev/owner")?["TagValue"]
        .as_str()
        .map(str::to_string)
}
