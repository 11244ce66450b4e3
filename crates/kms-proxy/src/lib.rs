//! A quota-enforcing, fault-injecting HTTP proxy in front of a KMS endpoint (LocalStack), used
//! by the fleet benchmark and the fault-injection tests.
//!
//! Each request is charged to a token bucket of its (region, operation): the region from the
//! SigV4 credential scope of `Authorization`, the operation from `X-Amz-Target`; a ReplicateKey
//! is also charged two CreateKey in the replica's region, as AWS counts it. Above the rate the
//! proxy answers `400 ThrottlingException` like AWS. A configurable fraction of requests fails
//! on purpose: a 500 before forwarding, a throttle, or — the nasty one — a 500 *after*
//! forwarding (the call took effect, its answer is lost).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use keyfleet::kms::KmsQuotas;
use keyfleet::kms::quota::{REPLICATE_KEY_CREATE_COST, operation_of, replica_region};

/// What the proxy enforces and injects.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where requests go, e.g. `http://127.0.0.1:4566`.
    pub upstream: String,
    /// Rates per operation, enforced per region.
    pub quotas: KmsQuotas,
    /// Buckets that hold one request (no burst, the strictest reading of a quota AWS does not
    /// promise a burst for) instead of one second of requests.
    pub one_request_buckets: bool,
    /// Fraction of requests (0..=1) that fail on purpose, split evenly between a 500 before
    /// forwarding, a ThrottlingException, and a 500 after forwarding.
    pub fault_rate: f64,
    /// Seed of the fault dice.
    pub seed: u64,
    /// Scheduled faults, whatever the dice say: the answers of the first requests of these
    /// operations are lost after the call took effect (a 500 once KMS acted), one entry per
    /// request, e.g. `["CreateKey", "ReplicateKey"]`, so that a run hits those paths for sure.
    pub lose_answers: Vec<String>,
}

impl ProxyConfig {
    pub fn new(upstream: impl Into<String>, quotas: KmsQuotas) -> ProxyConfig {
        ProxyConfig {
            upstream: upstream.into().trim_end_matches('/').to_string(),
            quotas,
            one_request_buckets: false,
            fault_rate: 0.0,
            seed: 1,
            lose_answers: Vec::new(),
        }
    }
}

/// What happened to the requests of one (region, operation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Forwarded and answered as KMS answered.
    pub forwarded: u64,
    /// Refused above the rate (ThrottlingException).
    pub throttled: u64,
    /// Failed on purpose with a 500 before forwarding.
    pub injected_errors: u64,
    /// Failed on purpose with a ThrottlingException (not a quota).
    pub injected_throttles: u64,
    /// Forwarded, took effect, and answered with a 500 on purpose.
    pub lost_answers: u64,
}

impl OpCounts {
    /// Requests that reached KMS (forwarded, answered or not).
    pub fn reached_kms(&self) -> u64 {
        self.forwarded + self.lost_answers
    }

    /// Every request the proxy received.
    pub fn received(&self) -> u64 {
        self.forwarded
            + self.throttled
            + self.injected_errors
            + self.injected_throttles
            + self.lost_answers
    }
}

impl std::ops::AddAssign for OpCounts {
    fn add_assign(&mut self, c: OpCounts) {
        self.forwarded += c.forwarded;
        self.throttled += c.throttled;
        self.injected_errors += c.injected_errors;
        self.injected_throttles += c.injected_throttles;
        self.lost_answers += c.lost_answers;
    }
}

/// Counts by (region, operation).
pub type ProxyStats = BTreeMap<(String, String), OpCounts>;

/// One request refused above the rate: which, and how early it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub region: String,
    pub operation: String,
    /// How much later it would have been admitted (one-request buckets; zero otherwise).
    pub early: Duration,
    /// Refused for the two CreateKey slots of a ReplicateKey in the replica region, not for
    /// its own bucket.
    pub replica_slots: bool,
}

/// How one (region, operation)'s admitted requests were served, for telling KMS's own time
/// from the client's pacing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpTiming {
    /// From admission to KMS's answer, for each forwarded request.
    pub answered_in: Vec<Duration>,
    /// From one request's answer to the next request's arrival, when the next came after it
    /// (the client's own delay where it waits for answers).
    pub next_after_answer: Vec<Duration>,
    last_answer: Option<Instant>,
}

struct Shared {
    config: Mutex<ProxyConfig>,
    buckets: Mutex<HashMap<(String, String), Arc<DefaultDirectRateLimiter>>>,
    /// One-request buckets: when each (region, operation) is free again.
    free_at: Mutex<HashMap<(String, String), Instant>>,
    stats: Mutex<ProxyStats>,
    throttles: Mutex<Vec<Throttle>>,
    /// When the first and the last admitted request of each (region, operation) came.
    admitted: Mutex<HashMap<(String, String), (Instant, Instant)>>,
    timings: Mutex<HashMap<(String, String), OpTiming>>,
    dice: Mutex<StdRng>,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running proxy; stopped when dropped.
pub struct KmsProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KmsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy)]
enum Fault {
    Error,
    Throttle,
    LostAnswer,
}

impl KmsProxy {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub async fn start(config: ProxyConfig) -> std::io::Result<KmsProxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let shared = Arc::new(Shared {
            dice: Mutex::new(StdRng::seed_from_u64(config.seed)),
            config: Mutex::new(config),
            buckets: Mutex::new(HashMap::new()),
            free_at: Mutex::new(HashMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            throttles: Mutex::new(Vec::new()),
            admitted: Mutex::new(HashMap::new()),
            timings: Mutex::new(HashMap::new()),
            http,
        });
        let state = shared.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, tower::make::Shared::new(service)).await {
                tracing::warn!(error = %e, "KMS proxy stopped");
            }
        });
        Ok(KmsProxy { addr, shared, task })
    }

    /// The endpoint URL to give KMS clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counts so far.
    pub fn stats(&self) -> ProxyStats {
        lock(&self.shared.stats).clone()
    }

    /// Every request refused above the rate so far, in order.
    pub fn throttles(&self) -> Vec<Throttle> {
        lock(&self.shared.throttles).clone()
    }

    /// When the first and the last request the quota admitted came, by (region, operation):
    /// a benchmark tells start-up and tail from the paced stretch in between.
    pub fn admitted_spans(&self) -> BTreeMap<(String, String), (Instant, Instant)> {
        lock(&self.shared.admitted)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// How each (region, operation)'s forwarded requests were answered so far.
    pub fn timings(&self) -> BTreeMap<(String, String), OpTiming> {
        lock(&self.shared.timings)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Changes the fraction of requests failed on purpose.
    pub fn set_fault_rate(&self, rate: f64) {
        lock(&self.shared.config).fault_rate = rate;
    }
}

/// Sums counts over regions, by operation.
pub fn by_operation(stats: &ProxyStats) -> BTreeMap<String, OpCounts> {
    let mut out: BTreeMap<String, OpCounts> = BTreeMap::new();
    for ((_, op), c) in stats {
        *out.entry(op.clone()).or_default() += *c;
    }
    out
}

/// Counts of `after` minus those of `before`.
pub fn delta(after: &ProxyStats, before: &ProxyStats) -> ProxyStats {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            let d = OpCounts {
                forwarded: a.forwarded - b.forwarded,
                throttled: a.throttled - b.throttled,
                injected_errors: a.injected_errors - b.injected_errors,
                injected_throttles: a.injected_throttles - b.injected_throttles,
                lost_answers: a.lost_answers - b.lost_answers,
            };
            (k.clone(), d)
        })
        .filter(|(_, d)| d.received() > 0)
        .collect()
}

/// The region of a SigV4 `Authorization` header: `Credential=<key>/<date>/<region>/kms/...`.
pub fn sigv4_region(authorization: &str) -> Option<&str> {
    let scope = authorization.split("Credential=").nth(1)?;
    scope.split('/').nth(2)
}

/// AWS's bucket of a quota: refills at the rate and holds one second of requests (at least 2,
/// as a one-second window lets two requests through across its boundary); with
/// `one_request`, one request.
fn aws_quota(rate: f64, one_request: bool) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6)).max(Duration::from_nanos(1));
    let burst = if one_request {
        NonZeroU32::MIN
    } else {
        NonZeroU32::new((rate.ceil() as u32).max(2)).unwrap_or(NonZeroU32::MIN)
    };
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Shared {
    fn bucket(&self, region: &str, op: &str) -> Arc<DefaultDirectRateLimiter> {
        let (rate, one_request) = {
            let config = lock(&self.config);
            (config.quotas.rate(op), config.one_request_buckets)
        };
        lock(&self.buckets)
            .entry((region.to_string(), op.to_string()))
            .or_insert_with(|| Arc::new(RateLimiter::direct(aws_quota(rate, one_request))))
            .clone()
    }

    /// Takes the request's tokens (and notes when); the refusal when it is over the quota.
    fn admit(&self, region: &str, op: &str, replica: Option<&str>) -> Result<(), Throttle> {
        self.take(region, op, replica)?;
        let now = Instant::now();
        lock(&self.admitted)
            .entry((region.to_string(), op.to_string()))
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        Ok(())
    }

    fn take(&self, region: &str, op: &str, replica: Option<&str>) -> Result<(), Throttle> {
        if lock(&self.config).one_request_buckets {
            return self.admit_one_request(region, op, replica);
        }
        let refused = |replica_slots| Throttle {
            region: region.to_string(),
            operation: op.to_string(),
            early: Duration::ZERO,
            replica_slots,
        };
        if self.bucket(region, op).check().is_err() {
            return Err(refused(false));
        }
        match replica {
            Some(r) => {
                let n = NonZeroU32::new(REPLICATE_KEY_CREATE_COST).unwrap_or(NonZeroU32::MIN);
                match self.bucket(r, "CreateKey").check_n(n) {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(refused(true)),
                }
            }
            None => Ok(()),
        }
    }

    /// One-request buckets: a bucket is free again one period after the request it admitted;
    /// a ReplicateKey's two CreateKey in the replica region need that bucket to have been free
    /// for one more period (the two slots it takes there, as the operator waits for them).
    fn admit_one_request(
        &self,
        region: &str,
        op: &str,
        replica: Option<&str>,
    ) -> Result<(), Throttle> {
        let now = Instant::now();
        let config = lock(&self.config);
        let period = |op: &str| Duration::from_secs_f64(1.0 / config.quotas.rate(op).max(1e-6));
        let mut free_at = lock(&self.free_at);
        // How long until the bucket (region, op) has `cost` slots free (zero: now).
        let wait = |region: &str, op: &str, cost: u32| {
            free_at
                .get(&(region.to_string(), op.to_string()))
                .map_or(Duration::ZERO, |at| {
                    (*at + period(op) * (cost - 1)).saturating_duration_since(now)
                })
        };
        let own = wait(region, op, 1);
        let replica_wait = replica.map_or(Duration::ZERO, |r| {
            wait(r, "CreateKey", REPLICATE_KEY_CREATE_COST)
        });
        if !own.is_zero() || !replica_wait.is_zero() {
            return Err(Throttle {
                region: region.to_string(),
                operation: op.to_string(),
                early: own.max(replica_wait),
                replica_slots: own.is_zero(),
            });
        }
        free_at.insert((region.to_string(), op.to_string()), now + period(op));
        if let Some(r) = replica {
            free_at.insert(
                (r.to_string(), "CreateKey".into()),
                now + period("CreateKey"),
            );
        }
        Ok(())
    }

    /// Notes an admitted request's arrival: how long after the previous answer it came.
    fn arrived(&self, region: &str, op: &str, at: Instant) {
        let mut timings = lock(&self.timings);
        let timing = timings
            .entry((region.to_string(), op.to_string()))
            .or_default();
        if let Some(gap) = timing
            .last_answer
            .and_then(|a| at.checked_duration_since(a))
        {
            timing.next_after_answer.push(gap);
        }
    }

    /// Notes KMS's answer to a request admitted at `arrived`.
    fn answered(&self, region: &str, op: &str, arrived: Instant) {
        let now = Instant::now();
        let mut timings = lock(&self.timings);
        let timing = timings
            .entry((region.to_string(), op.to_string()))
            .or_default();
        timing
            .answered_in
            .push(now.saturating_duration_since(arrived));
        timing.last_answer = Some(now);
    }

    fn count(&self, region: &str, op: &str, f: impl FnOnce(&mut OpCounts)) {
        f(lock(&self.stats)
            .entry((region.to_string(), op.to_string()))
            .or_default());
    }

    /// Takes a scheduled lost answer of `op`, once its request's answer has come back from KMS
    /// (not before: a request dropped on the way, as when a controller is killed mid-flight,
    /// leaves the scheduled loss to the next request of `op`, so each one happens for sure).
    fn take_scheduled_loss(&self, op: &str) -> bool {
        let mut config = lock(&self.config);
        let Some(i) = config.lose_answers.iter().position(|o| o == op) else {
            return false;
        };
        config.lose_answers.remove(i);
        true
    }

    /// The fault the dice give a request (scheduled lost answers: [`Self::take_scheduled_loss`]).
    fn roll(&self) -> Option<Fault> {
        let rate = lock(&self.config).fault_rate;
        let mut dice = lock(&self.dice);
        if dice.random::<f64>() >= rate {
            return None;
        }
        Some(match dice.random_range(0..3) {
            0 => Fault::Error,
            1 => Fault::Throttle,
            _ => Fault::LostAnswer,
        })
    }
}

fn aws_error(status: StatusCode, type_: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"__type": type_, "message": message}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn throttled() -> Response<Body> {
    aws_error(
        StatusCode::BAD_REQUEST,
        "ThrottlingException",
        "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.",
    )
}

async fn handle(shared: &Shared, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return aws_error(StatusCode::BAD_REQUEST, "ValidationException", "bad body");
    };
    let op = operation_of(
        parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or("Unknown")
    .to_string();
    let region = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(sigv4_region)
        .unwrap_or("unknown")
        .to_string();
    let replica = (op == "ReplicateKey")
        .then(|| replica_region(&body))
        .flatten();
    if let Err(throttle) = shared.admit(&region, &op, replica.as_deref()) {
        shared.count(&region, &op, |c| c.throttled += 1);
        lock(&shared.throttles).push(throttle);
        return throttled();
    }
    let arrived = Instant::now();
    shared.arrived(&region, &op, arrived);
    let fault = shared.roll();
    match fault {
        Some(Fault::Error) => {
            shared.count(&region, &op, |c| c.injected_errors += 1);
            return aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "KMSInternalException",
                "injected fault",
            );
        }
        Some(Fault::Throttle) => {
            shared.count(&region, &op, |c| c.injected_throttles += 1);
            return throttled();
        }
        _ => {}
    }
    let upstream = lock(&shared.config).upstream.clone();
    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            forward = forward.header(name, value);
        }
    }
    let Ok(forward) = forward.body(Full::new(body)) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "bad request",
        );
    };
    let answer = match shared.http.request(forward).await {
        Ok(answer) => answer,
        Err(e) => {
            return aws_error(
                StatusCode::BAD_GATEWAY,
                "KMSInternalException",
                &format!("upstream: {e}"),
            );
        }
    };
    let (parts, body) = answer.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return aws_error(
                StatusCode::BAD_GATEWAY,
                "KMSInternalException",
                &format!("upstream body: {e}"),
            );
        }
    };
    shared.answered(&region, &op, arrived);
    if matches!(fault, Some(Fault::LostAnswer)) || shared.take_scheduled_loss(&op) {
        shared.count(&region, &op, |c| c.lost_answers += 1);
        return aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "KMSInternalException",
            "injected fault after the call took effect",
        );
    }
    shared.count(&region, &op, |c| c.forwarded += 1);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_the_credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=test/20250101/eu-west-1/kms/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(sigv4_region(auth), Some("eu-west-1"));
        assert_eq!(sigv4_region("Bearer x"), None);
    }

    #[test]
    fn buckets_hold_one_second_and_at_least_two() {
        let one = RateLimiter::direct(aws_quota(1.0, false));
        assert!(one.check().is_ok() && one.check().is_ok());
        assert!(one.check().is_err());
        let five = RateLimiter::direct(aws_quota(5.0, false));
        for _ in 0..5 {
            assert!(five.check().is_ok());
        }
        assert!(five.check().is_err());
        let strict = RateLimiter::direct(aws_quota(5.0, true));
        assert!(strict.check().is_ok());
        assert!(strict.check().is_err(), "one-request buckets hold no burst");
    }
}
