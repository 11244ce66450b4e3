//! Client-side KMS rate limiting: one token bucket per (account, region, operation), seeded
//! with the AWS KMS request quotas and awaited by every request attempt (retries included).
//!
//! The limiter sits in the SDK's HTTP client ([`RateLimitedHttpClient`]): the operation comes
//! from the `X-Amz-Target` header, so every KMS call keyfleet makes — present and future — is
//! paced without touching the call sites, and a retry waits for a token like a first attempt.
//! Requests of one bucket leave a margin further apart than the quota asks ([`spacing`]), and a
//! request of a slow quota (the write and import quotas) also waits one period after the answer
//! to the request before it ([`ANSWER_PACED_MAX_RATE`]): AWS counted that one before it answered,
//! so however late it arrived, the two cannot land in one quota interval on AWS's side (less the
//! part of a round trip every answer of the bucket takes, [`answer_discount`]). A
//! request AWS still throttles waits for its bucket's next slot and goes again, without the
//! SDK's backoff.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::line::{Line, Place};
use crate::metrics::KmsWaitLabels;

/// Default AWS KMS request quotas (requests per second, per account and region), from the
/// "Request quotas" page of the AWS KMS Developer Guide. All are adjustable in Service Quotas;
/// override them with `--kms-quota Operation=rate`.
pub const AWS_DEFAULT_QUOTAS: &[(&str, f64)] = &[
    ("CancelKeyDeletion", 5.0),
    ("CreateAlias", 5.0),
    ("CreateKey", 5.0),
    ("DeleteAlias", 15.0),
    ("DeleteImportedKeyMaterial", 15.0),
    ("DescribeKey", 2000.0),
    ("DisableKey", 5.0),
    ("DisableKeyRotation", 5.0),
    ("EnableKey", 5.0),
    ("EnableKeyRotation", 15.0),
    ("GetKeyPolicy", 1000.0),
    ("GetKeyRotationStatus", 1000.0),
    ("GetParametersForImport", 1.0),
    ("GetPublicKey", 2000.0),
    ("ImportKeyMaterial", 15.0),
    ("ListAliases", 500.0),
    ("ListKeyRotations", 100.0),
    ("ListKeys", 500.0),
    ("ListResourceTags", 2000.0),
    ("PutKeyPolicy", 15.0),
    ("ReplicateKey", 5.0),
    ("RotateKeyOnDemand", 5.0),
    ("ScheduleKeyDeletion", 15.0),
    ("TagResource", 10.0),
    ("UntagResource", 5.0),
    ("UpdateAlias", 5.0),
    ("UpdateKeyDescription", 5.0),
    ("UpdatePrimaryRegion", 5.0),
];

/// Rate for an operation missing from the table (the lowest management quota).
const FALLBACK_RATE: f64 = 5.0;

/// A `ReplicateKey` also counts as this many `CreateKey` requests in the replica's region.
pub const REPLICATE_KEY_CREATE_COST: u32 = 2;

/// Requests of one bucket leave at least this fraction of the quota's period further apart than
/// the period ([`spacing`]). For the slowest quota, GetParametersForImport at 1/s, it is the
/// margin (20 ms), and it costs the same fraction of a roll-out's time at the quota bound (the
/// fleet benchmark prints it).
pub const PACING_HEADROOM: f64 = 0.02;

/// The arrival jitter the pacing absorbs: a request may reach AWS this much later than the one
/// before it of its bucket (the first one's connection, scheduling on a busy node) without the
/// two landing in one quota interval. A fraction of a short period is far less than that (2% of
/// CreateKey's 200 ms is 4 ms), so faster quotas get this margin instead, up to one period (but
/// at least [`PACING_MIN_MARGIN`]): at most half of such a quota is used, and none of them
/// bounds a roll-out (imports do, at 1/s).
pub const PACING_JITTER: Duration = Duration::from_millis(20);

/// The least margin of any quota: the jitter of two requests on a busy node (a worker thread
/// preempted between its slot and the socket, a new pooled connection). One period of the
/// fastest quotas is less (DescribeKey, 2,000/s: 0.5 ms). The strict benchmark (2 cores shared
/// with LocalStack) saw one DescribeKey per run arrive 0.3-0.4 ms early with 1 ms, 2.5 ms and
/// 5.5 ms spacing: two requests collide when the first is held up by about the spacing, so a
/// wider margin leaves only rarer delays to collide. Their requests leave 10.5 ms apart (95/s,
/// still far more than a fleet reads: about 3 reads per key over a roll-out bound by imports at
/// 1/s, and a 10,000-key restart's first checks spread over the 300 s resync, 33/s).
pub const PACING_MIN_MARGIN: Duration = Duration::from_millis(10);

/// Quotas of at most this many requests per second are answer-paced: a request leaves one
/// period after the answer to the one before it (and [`spacing`] after it left), less what every
/// answer of the bucket takes ([`answer_discount`]), and at most [`LATE_ANSWER_MARGIN`] later
/// than its spacing alone. A request delayed on its way answers late by that delay, so the next
/// one leaves that much later: two requests cannot land in one quota interval unless one is
/// delayed by more than both margins together (40 ms at 1/s). Faster quotas (the reads, 100/s
/// and more) are far from their limits and keep many requests in flight.
pub const ANSWER_PACED_MAX_RATE: f64 = 20.0;

/// The most a late answer holds the next request of an answer-paced bucket back beyond its
/// [`spacing`]. An answer is late by the request's delay on its way (which the next request
/// must make up) and by KMS's own time on it (which it need not: AWS counts a request when it
/// arrives); the two cannot be told apart from the client, so the lateness counts up to this
/// margin. Uncapped, LocalStack's varying answer times (it generates an RSA key per
/// GetParametersForImport) cost a 1,000-key roll-out 15% of the quota bound; capped, the
/// slowest quota's requests leave at most 1.04 periods apart.
pub const LATE_ANSWER_MARGIN: Duration = PACING_JITTER;

/// How often one request that AWS throttles although it was paced waits for its bucket's next
/// slot and goes again, before the throttle is left to the SDK's retry (with its backoff).
pub const THROTTLE_RESLOTS: u32 = 4;

/// Request quotas per KMS operation, in requests per second.
#[derive(Clone, Debug, PartialEq)]
pub struct KmsQuotas {
    rates: BTreeMap<String, f64>,
}

impl Default for KmsQuotas {
    fn default() -> Self {
        KmsQuotas::aws_defaults()
    }
}

impl KmsQuotas {
    /// The AWS default quotas ([`AWS_DEFAULT_QUOTAS`]).
    pub fn aws_defaults() -> KmsQuotas {
        KmsQuotas {
            rates: AWS_DEFAULT_QUOTAS
                .iter()
                .map(|(op, rate)| (op.to_string(), *rate))
                .collect(),
        }
    }

    /// Replaces the rate of an operation.
    pub fn set(&mut self, operation: &str, rate: f64) {
        self.rates.insert(operation.to_string(), rate);
    }

    /// These quotas with `overrides` applied.
    pub fn with_overrides<'a>(
        mut self,
        overrides: impl IntoIterator<Item = &'a QuotaOverride>,
    ) -> KmsQuotas {
        for o in overrides {
            self.set(&o.operation, o.rate);
        }
        self
    }

    /// Every rate multiplied by `factor` (tests run with the AWS table at a faster pace).
    pub fn scaled(mut self, factor: f64) -> KmsQuotas {
        for rate in self.rates.values_mut() {
            *rate *= factor;
        }
        self
    }

    /// Requests per second allowed for `operation`.
    pub fn rate(&self, operation: &str) -> f64 {
        self.rates.get(operation).copied().unwrap_or(FALLBACK_RATE)
    }

    /// Every (operation, rate), sorted by operation.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.rates.iter().map(|(op, rate)| (op.as_str(), *rate))
    }
}

/// One `--kms-quota Operation=rate` flag.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaOverride {
    pub operation: String,
    pub rate: f64,
}

impl std::str::FromStr for QuotaOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (operation, rate) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected Operation=requests-per-second"))?;
        let operation = operation.trim();
        if operation.is_empty() || !operation.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{s:?}: {operation:?} is not a KMS operation name (e.g. CreateKey)"
            ));
        }
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the rate must be a number of requests per second"))?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("{s:?}: the rate must be above 0"));
        }
        Ok(QuotaOverride {
            operation: operation.to_string(),
            rate,
        })
    }
}

/// Where a bucket applies: who calls (account or connection), in which region, which operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BucketKey {
    identity: String,
    region: String,
    operation: String,
}

/// Why a request got no slot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The wait would outlast the request's signature: the attempt fails as a timeout and is
    /// retried.
    #[error(
        "KMS {operation} in {region}: no request slot within {waited:?} under the configured quota; retrying later"
    )]
    WaitExceeded {
        operation: String,
        region: String,
        waited: Duration,
    },
    /// The operator is stopping ([`RateLimits::close`]): the request was never sent.
    #[error("KMS {operation}: not sent, keyfleet is shutting down")]
    ShuttingDown { operation: String },
}

/// One (identity, region, operation)'s token bucket, and the queue of requests waiting for it:
/// first come, first served, and a request that needs two slots (a ReplicateKey's CreateKey in
/// the replica region) takes them back to back, with no other request in between. For an
/// answer-paced bucket the queue also holds the last request that left ([`LastRequest`]).
#[derive(Debug)]
struct Bucket {
    queue: tokio::sync::Mutex<Option<LastRequest>>,
    tokens: DefaultDirectRateLimiter,
    /// For answer-paced buckets ([`ANSWER_PACED_MAX_RATE`]): the quota's period and spacing.
    answer_paced: Option<AnswerPacing>,
    /// The fastest round trip of a request of this bucket so far, in nanoseconds (`u64::MAX`
    /// before the first answer).
    fastest_round_trip: AtomicU64,
    /// The `waiting` gauge of the bucket's operation and region, looked up once.
    waiting: Gauge,
    /// Places held by reconciles that will send this bucket a request ([`super::line`]).
    line: Arc<Line>,
}

/// An answer-paced bucket's quota period, and its [`spacing`] (the period and a margin).
#[derive(Debug)]
struct AnswerPacing {
    period: Duration,
    spacing: Duration,
}

impl Bucket {
    fn fastest_round_trip(&self) -> Option<Duration> {
        match self.fastest_round_trip.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

/// How much earlier than one period after the answer to the request before it an answer-paced
/// request may leave: the bucket's fastest round trip before that request left, less
/// [`PACING_JITTER`]. Of any round trip, at least that much passes after the request reaches AWS
/// (AWS's work on it and the way back; the way there of the fastest one, on the same network,
/// is within the jitter margin), so AWS counted the request before at least that long before
/// its answer came. With answers that take their usual time, requests leave at their
/// [`spacing`] instead of a whole answer's latency later; a late answer (a request delayed on
/// its way) still holds the next one back. No discount before the first answer.
fn answer_discount(fastest_round_trip: Option<Duration>) -> Duration {
    fastest_round_trip.map_or(Duration::ZERO, |rtt| rtt.saturating_sub(PACING_JITTER))
}

/// When a request was answered: None while it is in flight.
type Answered = tokio::sync::watch::Receiver<Option<tokio::time::Instant>>;

/// The request that left an answer-paced bucket last: when it left, when it was answered, and
/// the bucket's fastest round trip when it left. Its own round trip does not count toward the
/// discount of the request after it: a request delayed on its way would otherwise vouch for
/// itself.
#[derive(Clone, Debug)]
struct LastRequest {
    left: tokio::time::Instant,
    answered: Answered,
    fastest_before: Option<Duration>,
}

/// A request's place in its bucket, held until its answer comes back: dropping it marks the
/// request answered (for the next request of an answer-paced bucket). A request that never left
/// counts as answered when its slot is dropped.
#[derive(Debug)]
#[must_use = "a slot marks its request answered when it is dropped"]
pub struct Slot {
    /// Only for answer-paced buckets.
    paced: Option<PacedSlot>,
}

/// What a slot of an answer-paced bucket reports when its request is over.
#[derive(Debug)]
struct PacedSlot {
    /// Marks the request answered, for the next request of the bucket.
    answered: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    /// When the request left: [`Slot::answered`] records the round trip in `bucket`.
    left: tokio::time::Instant,
    bucket: Arc<Bucket>,
}

impl Slot {
    /// The request came back answered (by AWS, whatever the answer): its round trip counts
    /// toward its bucket's fastest ([`answer_discount`]). A slot merely dropped (its request
    /// never left, or failed on the way) marks the bucket's next request free to time itself
    /// from now, without a round trip.
    pub fn answered(self) {
        if let Some(paced) = &self.paced {
            let nanos = u64::try_from(paced.left.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            paced
                .bucket
                .fastest_round_trip
                .fetch_min(nanos, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(paced) = self.paced.take() {
            paced
                .answered
                .send_replace(Some(tokio::time::Instant::now()));
        }
    }
}

/// The token buckets of every (identity, region, operation), shared by all reconciles.
#[derive(Debug)]
pub struct RateLimits {
    quotas: KmsQuotas,
    /// Requests waiting for a slot, by operation and region (a metric).
    waiting: Family<KmsWaitLabels, Gauge>,
    max_wait: Duration,
    buckets: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
    /// True once the operator stops: every wait for a slot ends at once.
    closed: tokio::sync::watch::Sender<bool>,
}

impl RateLimits {
    /// Buckets for `quotas`. A request waits at most `max_wait` for its token (a signed request
    /// must reach AWS within 5 minutes); past that the attempt fails as a timeout and the SDK's
    /// retry (or the controller's backoff) tries again.
    pub fn new(quotas: KmsQuotas, max_wait: Duration) -> Arc<RateLimits> {
        RateLimits::observed(quotas, max_wait, Family::default())
    }

    /// [`RateLimits::new`], counting the requests that wait for a slot in `waiting`.
    pub fn observed(
        quotas: KmsQuotas,
        max_wait: Duration,
        waiting: Family<KmsWaitLabels, Gauge>,
    ) -> Arc<RateLimits> {
        Arc::new(RateLimits {
            quotas,
            waiting,
            max_wait,
            buckets: Mutex::new(HashMap::new()),
            closed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ends every wait for a slot, present and future, with [`SlotError::ShuttingDown`]: a
    /// stopping operator's reconciles finish at once instead of waiting out the quota, and what
    /// they did not send stays unsent.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn quotas(&self) -> &KmsQuotas {
        &self.quotas
    }

    fn bucket(&self, identity: &str, region: &str, operation: &str) -> Arc<Bucket> {
        let key = BucketKey {
            identity: identity.to_string(),
            region: region.to_string(),
            operation: operation.to_string(),
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(key)
            .or_insert_with(|| {
                let rate = self.quotas.rate(operation);
                Arc::new(Bucket {
                    queue: tokio::sync::Mutex::new(None),
                    tokens: RateLimiter::direct(quota(rate)),
                    answer_paced: (rate <= ANSWER_PACED_MAX_RATE).then(|| AnswerPacing {
                        period: Duration::from_secs_f64(1.0 / rate.max(1e-6)),
                        spacing: spacing(rate),
                    }),
                    fastest_round_trip: AtomicU64::new(u64::MAX),
                    line: Line::new(spacing(rate)),
                    waiting: self
                        .waiting
                        .get_or_create(&KmsWaitLabels {
                            operation: operation.to_string(),
                            region: region.to_string(),
                        })
                        .clone(),
                })
            })
            .clone()
    }

    /// A place at the end of the line for `operation`'s slots ([`super::line`]), for a
    /// reconcile that will send such a request and rather waits off the worker pool.
    pub fn join_line(&self, identity: &str, region: &str, operation: &str) -> Place {
        self.bucket(identity, region, operation).line.join()
    }

    /// Waits for `n` request slots of `operation` (or fails after `max_wait`, or at once when
    /// the limits are closed). Hold the [`Slot`] until the request's answer comes back.
    pub async fn acquire(
        &self,
        identity: &str,
        region: &str,
        operation: &str,
        n: u32,
    ) -> Result<Slot, SlotError> {
        let mut closed = self.closed.subscribe();
        let shutting_down = || SlotError::ShuttingDown {
            operation: operation.to_string(),
        };
        if *closed.borrow() {
            return Err(shutting_down());
        }
        let bucket = self.bucket(identity, region, operation);
        let _waiting = Waiting::enter(&bucket.waiting);
        let wait = async {
            let mut last = bucket.queue.lock().await;
            for _ in 0..n {
                bucket.tokens.until_ready().await;
            }
            let Some(period) = &bucket.answer_paced else {
                return Slot { paced: None };
            };
            // Cloned, not taken: a wait cut short (timeout, shutdown) leaves the next request
            // still timed from the one before.
            if let Some(previous) = last.clone() {
                // The tokens count from when the request before was due, not from when it left
                // (later, when its own wait for an answer held it back).
                let earliest = previous.left + period.spacing * n;
                let latest = earliest + LATE_ANSWER_MARGIN;
                tokio::time::sleep_until(earliest).await;
                if let Ok(Some(at)) =
                    tokio::time::timeout_at(latest, answered(previous.answered)).await
                {
                    // AWS counted the request before by its answer: n periods after the answer
                    // (less what every answer takes after its request arrived), its bucket has
                    // the n slots this request takes.
                    let discount = answer_discount(previous.fastest_before);
                    let paced = (at + period.period * n).checked_sub(discount).unwrap_or(at);
                    tokio::time::sleep_until(paced.min(latest)).await;
                }
            }
            let (answered, next) = tokio::sync::watch::channel(None);
            let left = tokio::time::Instant::now();
            *last = Some(LastRequest {
                left,
                answered: next,
                fastest_before: bucket.fastest_round_trip(),
            });
            Slot {
                paced: Some(PacedSlot {
                    answered,
                    left,
                    bucket: Arc::clone(&bucket),
                }),
            }
        };
        tokio::select! {
            waited = tokio::time::timeout(self.max_wait, wait) => {
                waited.map_err(|_| SlotError::WaitExceeded {
                    operation: operation.to_string(),
                    region: region.to_string(),
                    waited: self.max_wait,
                })
            }
            _ = closed.wait_for(|closed| *closed) => Err(shutting_down()),
        }
    }

    /// Waits for the slots of one request: its operation's, and for a ReplicateKey two
    /// CreateKey slots in the `replica` region.
    async fn request_slots(
        &self,
        identity: &str,
        region: &str,
        operation: &str,
        replica: Option<&str>,
    ) -> Result<Vec<Slot>, SlotError> {
        let mut slots = vec![self.acquire(identity, region, operation, 1).await?];
        if let Some(replica) = replica {
            // AWS counts a ReplicateKey as two CreateKey requests in the replica's region.
            slots.push(
                self.acquire(identity, replica, "CreateKey", REPLICATE_KEY_CREATE_COST)
                    .await?,
            );
        }
        Ok(slots)
    }
}

/// One request counted in the `waiting` gauge until it has its slot (or gives up).
struct Waiting(Gauge);

impl Waiting {
    fn enter(gauge: &Gauge) -> Waiting {
        gauge.inc();
        Waiting(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// When the request before was answered (None: its slot is gone without a mark, which it
/// cannot be: a slot marks on drop).
async fn answered(mut last: Answered) -> Option<tokio::time::Instant> {
    last.wait_for(Option::is_some).await.ok().and_then(|at| *at)
}

/// How far apart requests of a quota of `rate` per second leave: its period plus a margin for
/// arrival jitter — [`PACING_HEADROOM`] of the period, and at least [`PACING_JITTER`] but not
/// more than one period (nor less than [`PACING_MIN_MARGIN`]). GetParametersForImport (1/s):
/// 1.02 s; CreateKey (5/s): 220 ms; ImportKeyMaterial (15/s): 86.7 ms; ListAliases (500/s):
/// 12 ms; DescribeKey (2000/s): 10.5 ms.
pub fn spacing(rate: f64) -> Duration {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let margin = period
        .mul_f64(PACING_HEADROOM)
        .max(PACING_JITTER.min(period.max(PACING_MIN_MARGIN)));
    period + margin
}

/// A bucket refilling one token per [`spacing`] that holds one token: requests are spread
/// evenly, never bursted, and far enough apart that jitter cannot push two of them into one
/// quota interval.
fn quota(rate: f64) -> Quota {
    Quota::with_period(spacing(rate).max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN)
}

/// The KMS operation of a request: `TrentService.CreateKey` in `X-Amz-Target` → `CreateKey`.
pub fn operation_of(target: Option<&str>) -> Option<&str> {
    target.and_then(|t| t.rsplit_once('.')).map(|(_, op)| op)
}

/// An AWS JSON error body of a throttling error (`ThrottlingException` and friends).
pub fn is_throttling(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("__type").and_then(|t| t.as_str()).map(str::to_string))
        .is_some_and(|t| {
            t.contains("Throttling")
                || t.contains("TooManyRequests")
                || t.contains("RequestLimitExceeded")
        })
}

/// The `ReplicaRegion` of a ReplicateKey request body.
pub fn replica_region(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("ReplicaRegion")?
        .as_str()
        .map(str::to_string)
}

/// An HTTP client that takes a token from [`RateLimits`] before each request it sends for one
/// (identity, region).
#[derive(Clone, Debug)]
pub struct RateLimitedHttpClient {
    inner: SharedHttpClient,
    limits: Arc<RateLimits>,
    identity: String,
    region: String,
}

impl RateLimitedHttpClient {
    pub fn new(
        inner: SharedHttpClient,
        limits: Arc<RateLimits>,
        identity: impl Into<String>,
        region: impl Into<String>,
    ) -> RateLimitedHttpClient {
        RateLimitedHttpClient {
            inner,
            limits,
            identity: identity.into(),
            region: region.into(),
        }
    }
}

impl HttpClient for RateLimitedHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RateLimitedConnector {
            inner: self.inner.http_connector(settings, components),
            client: self.clone(),
        })
    }
}

#[derive(Debug)]
struct RateLimitedConnector {
    inner: SharedHttpConnector,
    client: RateLimitedHttpClient,
}

impl HttpConnector for RateLimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = operation_of(request.headers().get("x-amz-target"))
            .unwrap_or("Unknown")
            .to_string();
        let replica = (operation == "ReplicateKey")
            .then(|| request.body().bytes().and_then(replica_region))
            .flatten();
        let inner = self.inner.clone();
        let c = self.client.clone();
        HttpConnectorFuture::new(async move {
            let mut reslots = 0;
            loop {
                let slots = c
                    .limits
                    .request_slots(&c.identity, &c.region, &operation, replica.as_deref())
                    .await
                    .map_err(slot_error)?;
                // A request whose body cannot be replayed, or that was throttled often enough,
                // goes once more and its answer, whatever it is, goes to the SDK.
                let again = (reslots < THROTTLE_RESLOTS)
                    .then(|| request.try_clone())
                    .flatten();
                let Some(attempt) = again else {
                    let response = inner.call(request).await;
                    release(slots, &response);
                    return response;
                };
                let response = inner.call(attempt).await;
                // Answered (or failed): the bucket's next request may be timed from now.
                release(slots, &response);
                match unless_throttled(response?).await? {
                    Some(response) => return Ok(response),
                    None => {
                        // AWS refused it unprocessed: the next slot of the bucket, not a backoff.
                        reslots += 1;
                        tracing::debug!(%operation, region = %c.region, reslots, "throttled although paced; waiting for the next slot");
                    }
                }
            }
        })
    }
}

/// Releases a request's slots once its attempt is over: with its round trip if AWS answered.
fn release(slots: Vec<Slot>, response: &Result<HttpResponse, ConnectorError>) {
    if response.is_ok() {
        slots.into_iter().for_each(Slot::answered);
    }
}

/// How a slot error fails the attempt: a wait beyond the limit as a timeout (the SDK retries
/// it), a shutdown as a user error (not retried; the request was never sent).
fn slot_error(e: SlotError) -> ConnectorError {
    match e {
        SlotError::WaitExceeded { .. } => ConnectorError::timeout(e.into()),
        SlotError::ShuttingDown { .. } => ConnectorError::user(e.into()),
    }
}

/// The response, or None when it is a throttling error (its body is read to tell; a KMS error
/// body is a small JSON document).
async fn unless_throttled(
    mut response: HttpResponse,
) -> Result<Option<HttpResponse>, ConnectorError> {
    let status = response.status().as_u16();
    if status != 400 && status != 429 {
        return Ok(Some(response));
    }
    let body = ByteStream::new(response.take_body())
        .collect()
        .await
        .map_err(|e| ConnectorError::io(e.into()))?
        .into_bytes();
    if status == 429 || is_throttling(&body) {
        return Ok(None);
    }
    *response.body_mut() = SdkBody::from(body);
    Ok(Some(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_aws_table_and_overrides_apply() {
        let q = KmsQuotas::aws_defaults();
        assert_eq!(q.rate("GetParametersForImport"), 1.0);
        assert_eq!(q.rate("CreateKey"), 5.0);
        assert_eq!(q.rate("DescribeKey"), 2000.0);
        assert_eq!(q.rate("SomethingNew"), FALLBACK_RATE);
        let o: QuotaOverride = "GetParametersForImport=0.25".parse().unwrap();
        let q = q.with_overrides([&o]);
        assert_eq!(q.rate("GetParametersForImport"), 0.25);
        assert_eq!(q.clone().scaled(4.0).rate("GetParametersForImport"), 1.0);
        for bad in [
            "CreateKey",
            "=5",
            "Create Key=5",
            "CreateKey=0",
            "CreateKey=fast",
            "CreateKey=-1",
        ] {
            assert!(bad.parse::<QuotaOverride>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn operation_and_replica_region_are_read_from_the_request() {
        assert_eq!(
            operation_of(Some("TrentService.CreateKey")),
            Some("CreateKey")
        );
        assert_eq!(operation_of(None), None);
        assert_eq!(
            replica_region(br#"{"KeyId":"k","ReplicaRegion":"eu-west-1"}"#).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(replica_region(b"not json"), None);
    }

    #[test]
    fn spacing_leaves_a_jitter_margin_that_costs_the_import_quota_two_percent() {
        let ms = |rate: f64| spacing(rate).as_secs_f64() * 1000.0;
        // The quota that bounds a roll-out: 2% (20 ms).
        assert!((ms(1.0) - 1020.0).abs() < 1e-6, "{}", ms(1.0));
        assert!((ms(0.25) - 4080.0).abs() < 1e-6, "{}", ms(0.25));
        // Faster quotas: 20 ms, where 2% would be 4 ms or less.
        assert!((ms(5.0) - 220.0).abs() < 1e-6, "{}", ms(5.0));
        assert!((ms(15.0) - 86.667).abs() < 1e-3, "{}", ms(15.0));
        // Fast quotas: one period more, at most half the quota.
        assert!((ms(50.0) - 40.0).abs() < 1e-6, "{}", ms(50.0));
        assert!((ms(100.0) - 20.0).abs() < 1e-6, "{}", ms(100.0));
        // The fastest: at least 10 ms more than the period.
        assert!((ms(200.0) - 15.0).abs() < 1e-6, "{}", ms(200.0));
        assert!((ms(500.0) - 12.0).abs() < 1e-6, "{}", ms(500.0));
        assert!((ms(2000.0) - 10.5).abs() < 1e-6, "{}", ms(2000.0));
    }

    #[tokio::test]
    async fn requests_waiting_for_a_slot_are_counted_until_they_have_it() {
        let mut quotas = KmsQuotas::aws_defaults();
        quotas.set("GetParametersForImport", 5.0);
        let waiting = Family::<KmsWaitLabels, Gauge>::default();
        let limits = RateLimits::observed(quotas, Duration::from_secs(5), waiting.clone());
        let gauge = |region: &str| {
            waiting
                .get_or_create(&KmsWaitLabels {
                    operation: "GetParametersForImport".into(),
                    region: region.into(),
                })
                .get()
        };
        let first = limits
            .acquire("acct", "us-east-1", "GetParametersForImport", 1)
            .await
            .unwrap();
        assert_eq!(gauge("us-east-1"), 0, "a slot in hand is not waiting");
        // Two more wait behind it (220 ms apart); another region's bucket is apart.
        let next = |limits: Arc<RateLimits>| async move {
            limits
                .acquire("acct", "us-east-1", "GetParametersForImport", 1)
                .await
        };
        let second = tokio::spawn(next(limits.clone()));
        let third = tokio::spawn(next(limits.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!((gauge("us-east-1"), gauge("eu-west-1")), (2, 0));
        drop(first);
        let second = second.await.unwrap().unwrap();
        assert_eq!(gauge("us-east-1"), 1);
        drop(second);
        // A wait given up (the operator stopping) is no longer counted.
        limits.close();
        assert!(third.await.unwrap().is_err());
        assert_eq!(gauge("us-east-1"), 0);
    }

    #[tokio::test]
    async fn requests_are_paced_per_region_and_operation() {
        let mut quotas = KmsQuotas::aws_defaults();
        quotas.set("GetParametersForImport", 20.0);
        let limits = RateLimits::new(quotas, Duration::from_secs(5));
        let start = std::time::Instant::now();
        for _ in 0..5 {
            let _slot = limits
                .acquire("acct", "us-east-1", "GetParametersForImport", 1)
                .await
                .unwrap();
        }
        // One token at once, then one every 70 ms (the 50 ms period and a 20 ms margin).
        let paced = start.elapsed();
        assert!(paced >= Duration::from_millis(270), "{paced:?}");
        // Another region and another operation have buckets of their own: a token at once,
        // without waiting (no clock involved: the first poll completes).
        use futures::FutureExt as _;
        for (region, operation) in [
            ("eu-west-1", "GetParametersForImport"),
            ("us-east-1", "CreateKey"),
        ] {
            let at_once = limits.acquire("acct", region, operation, 1).now_or_never();
            assert!(
                matches!(at_once, Some(Ok(_))),
                "{region} {operation} waited"
            );
        }
    }

    #[tokio::test]
    async fn a_wait_beyond_the_limit_fails_instead_of_hanging() {
        let mut quotas = KmsQuotas::aws_defaults();
        quotas.set("CreateKey", 0.1);
        let limits = RateLimits::new(quotas, Duration::from_millis(100));
        let _slot = limits.acquire("a", "r", "CreateKey", 1).await.unwrap();
        let err = limits.acquire("a", "r", "CreateKey", 1).await.unwrap_err();
        assert!(
            matches!(&err, SlotError::WaitExceeded { operation, .. } if operation == "CreateKey"),
            "{err:?}"
        );
    }

    /// A KMS stand-in whose requests arrive late and are worked on by turns: the next request
    /// arrives after the next `(late, work)`'s delay (its arrival noted, as AWS counts it) and
    /// is answered `work` later.
    #[derive(Clone, Debug)]
    struct JitteryKms {
        turns: Arc<Mutex<std::collections::VecDeque<(Duration, Duration)>>>,
        arrivals: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }

    impl HttpConnector for JitteryKms {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            let kms = self.clone();
            HttpConnectorFuture::new(async move {
                let (late, work) = kms.turns.lock().unwrap().pop_front().unwrap_or_default();
                tokio::time::sleep(late).await;
                kms.arrivals
                    .lock()
                    .unwrap()
                    .push(tokio::time::Instant::now());
                tokio::time::sleep(work).await;
                Ok(HttpResponse::new(
                    200.try_into().unwrap(),
                    SdkBody::from("{}"),
                ))
            })
        }
    }

    /// The gaps between the arrivals of concurrent GetParametersForImport requests, paced at
    /// `rate`, one per `(late, work)` of `turns`.
    async fn arrival_gaps_of(rate: f64, turns: Vec<(Duration, Duration)>) -> Vec<Duration> {
        let count = turns.len();
        let kms = JitteryKms {
            turns: Arc::new(Mutex::new(turns.into())),
            arrivals: Arc::default(),
        };
        let mut quotas = KmsQuotas::aws_defaults();
        quotas.set("GetParametersForImport", rate);
        let connector = RateLimitedConnector {
            inner: SharedHttpConnector::new(kms.clone()),
            client: RateLimitedHttpClient::new(
                SharedHttpClient::new(crate::kms::StandIn(kms.clone())),
                RateLimits::new(quotas, Duration::from_secs(10)),
                "acct",
                "us-east-1",
            ),
        };
        let calls = (0..count).map(|_| {
            let mut request = HttpRequest::new(SdkBody::from("{}"));
            request
                .headers_mut()
                .insert("x-amz-target", "TrentService.GetParametersForImport");
            connector.call(request)
        });
        for answer in futures::future::join_all(calls).await {
            assert_eq!(answer.unwrap().status().as_u16(), 200);
        }
        let arrivals = kms.arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), count);
        arrivals
            .windows(2)
            .map(|w| w[1].saturating_duration_since(w[0]))
            .collect()
    }

    /// [`arrival_gaps_of`] `count` requests that arrive `late` and on time by turns, each
    /// answered `work` after it arrived.
    async fn arrival_gaps(
        rate: f64,
        late: Duration,
        work: Duration,
        count: usize,
    ) -> Vec<Duration> {
        let turns = (0..count)
            .map(|i| (if i % 2 == 0 { late } else { Duration::ZERO }, work))
            .collect();
        arrival_gaps_of(rate, turns).await
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn mean(gaps: &[Duration]) -> Duration {
        gaps.iter().sum::<Duration>() / gaps.len() as u32
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answer_paced_requests_absorb_a_late_arrival_up_to_both_margins() {
        // 10/s: answer-paced, 120 ms apart when they leave. Every other request arrives 25 ms
        // late, beyond the spacing's 20 ms margin (on their spacing alone two would arrive 95
        // ms apart): its late answer holds the next one back by up to 20 ms more, so none
        // arrives within 100 ms of the one before it.
        let gaps = arrival_gaps(10.0, ms(25), ms(10), 6).await;
        let shortest = gaps.iter().min().unwrap();
        assert!(*shortest >= ms(100), "{gaps:?}");
        // 25/s is not answer-paced: the same kind of jitter (55 ms late, 60 ms apart when they
        // leave) brings two requests into one 40 ms period — what AWS would throttle.
        let gaps = arrival_gaps(25.0, ms(55), ms(10), 6).await;
        let shortest = gaps.iter().min().unwrap();
        assert!(*shortest < ms(40), "{gaps:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answer_pacing_does_not_add_the_usual_answer_time_but_still_absorbs_a_late_arrival() {
        // 10/s: answer-paced, spacing 120 ms. Every answer takes 50 ms: timed from the answer
        // alone, requests would arrive 150 ms apart; the bucket's fastest round trip (50 ms)
        // less the 20 ms margin is discounted, so they arrive at the spacing.
        let gaps = arrival_gaps(10.0, Duration::ZERO, ms(50), 8).await;
        assert!(mean(&gaps) >= ms(115) && mean(&gaps) < ms(140), "{gaps:?}");
        // The same answers, every other request arriving 25 ms late: none arrives within a
        // period of the one before it.
        let gaps = arrival_gaps(10.0, ms(25), ms(50), 8).await;
        let shortest = gaps.iter().min().unwrap();
        assert!(*shortest >= ms(100), "{gaps:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_answer_holds_the_next_request_back_by_at_most_the_late_answer_margin() {
        // 10/s, every request on time; KMS works 10 ms and 300 ms on them by turns (LocalStack's
        // GetParametersForImport varies like that under load). Timed from each answer, every
        // other request would leave 290 ms late (410 ms apart); it leaves at most 20 ms late.
        let turns = (0..8)
            .map(|i| (Duration::ZERO, if i % 2 == 0 { ms(300) } else { ms(10) }))
            .collect();
        let gaps = arrival_gaps_of(10.0, turns).await;
        let longest = gaps.iter().max().unwrap();
        assert!(*longest < ms(160), "{gaps:?}");
        assert!(mean(&gaps) >= ms(115), "{gaps:?}");
    }

    #[test]
    fn the_answer_discount_is_the_fastest_round_trip_beyond_the_jitter_margin() {
        assert_eq!(answer_discount(None), Duration::ZERO);
        assert_eq!(
            answer_discount(Some(Duration::from_millis(10))),
            Duration::ZERO
        );
        assert_eq!(
            answer_discount(Some(Duration::from_millis(50))),
            Duration::from_millis(30)
        );
    }
}
