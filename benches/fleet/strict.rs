//! Strict mode of the fleet benchmark (`KEYFLEET_BENCH_MODE=strict`, issue 16): the proxy's
//! buckets hold one request (no burst) at the AWS default quotas, and the operator is the
//! image's binary (`cargo build --release --locked -p keyfleet --bin keyfleet`, the Dockerfile's
//! command: stripped, nothing of crates/ in it). Four operator processes in turn on one fleet:
//!
//! 1. roll-out (`--resync-seconds 3600`: every KMS call is the roll-out's): all-Ready time
//!    against the quota bound, throttles returned by the proxy and shown in a status or a
//!    Warning event, KMS reads per object, peak RSS;
//! 2. restart with the default settings: KMS reads and writes per object in its first minute;
//! 3. steady state (`--resync-seconds 20`): CPU per no-op reconcile and writes over two
//!    resync periods;
//! 4. a second batch of AwsKeys rolled out by operator 3, SIGTERM once a quarter of it is
//!    Ready: time to exit, and every key KMS holds for the batch recorded in its AwsKey.
//!
//! `KEYFLEET_BENCH_KEYS` (100), `KEYFLEET_BENCH_ACCOUNTS` (1, or 2: two AwsKms connections with
//! roles in two accounts, each behind its own proxy, two thirds of the keys in the first),
//! `KEYFLEET_BENCH_QUOTA_SCALE` (1: every quota multiplied, for proxy and operator alike),
//! `KEYFLEET_BENCH_OUT` (default `benches/results/strict-<keys>[-2-accounts].md`),
//! `KEYFLEET_BENCH_BINARY` (another build of the operator, for a profile or allocator
//! experiment; the report names it instead of the image's binary), `KEYFLEET_BENCH_KMS`
//! (`localstack`, or `model`: the strict KMS model of crates/kms-model behind the same proxy,
//! for a fleet so large that LocalStack's own speed, not the quota, would bound it). Every figure
//! that cannot be read fails the run; a missed target exits non-zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keyfleet::kms::KmsQuotas;
use kms_model::KmsModel;
use kms_proxy::{KmsProxy, ProxyConfig, ProxyStats};
use memkube::MemKube;

use super::support::fleet::{self, KMS_WRITES, REGIONS};
use super::support::localstack;
use super::{
    Operator, clock_ticks, env_or, free_port, process_cpu, publish, quota_bound, reconciles,
    runtime, status_kib, targets_table,
};

/// The connections of the two-account case: (AwsKms name, account id).
const ACCOUNTS: [(&str, &str); 2] = [("account-a", "111111111111"), ("account-b", "222222222222")];

/// Builds the operator as the Dockerfile does and returns the binary.
fn image_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("fleet bench: building the image's binary (cargo build --release -p keyfleet)");
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "keyfleet",
            "--bin",
            "keyfleet",
        ])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of the image's binary failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("release").join("keyfleet")
}

/// The `ENV` settings of the Dockerfile's runtime stage (its last `FROM`): `KEY=value` pairs.
fn image_env() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let runtime = text.rsplit("\nFROM ").next().unwrap_or_default();
    runtime
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|pairs| pairs.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// What answers KMS (and STS) behind the proxies.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// A LocalStack of its own (`scripts/localstack`), as the tests use.
    LocalStack,
    /// The strict KMS model (crates/kms-model, real crypto) in this process: LocalStack creates
    /// about 5 keys a second on this machine, so a 10,000-key fleet at scaled quotas would
    /// measure LocalStack, not the operator.
    Model,
}

impl Backend {
    fn from_env() -> Backend {
        match std::env::var("KEYFLEET_BENCH_KMS").as_deref() {
            Ok("model") => Backend::Model,
            Ok("localstack") | Err(_) => Backend::LocalStack,
            Ok(other) => panic!("KEYFLEET_BENCH_KMS={other}: expected localstack or model"),
        }
    }

    /// Starts the backend: its endpoint, and the model to keep alive (None for LocalStack).
    async fn start(self) -> (String, Option<KmsModel>) {
        match self {
            Backend::LocalStack => {
                eprintln!("fleet bench: starting LocalStack");
                (localstack::dedicated_endpoint().await, None)
            }
            Backend::Model => {
                eprintln!("fleet bench: starting the KMS model");
                let model = KmsModel::start().await.expect("start the KMS model");
                (model.url(), Some(model))
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Backend::LocalStack => "LocalStack 4 (KMS)",
            Backend::Model => {
                "the strict KMS model of crates/kms-model (KEYFLEET_BENCH_KMS=model) as KMS"
            }
        }
    }
}

/// When each region's GetParametersForImport calls (the quota that bounds a roll-out) were
/// admitted, from `started`: the first (start-up before it), the last (the tail after it:
/// import, alias, status), and their mean spacing against the quota's period (the pacing
/// margin and every slot lost to a throttle), e.g. `eu-west-1: 500 from 0.61 s to 510.2 s,
/// every 1.0212 s (period 1 s)`; then how long KMS took to answer them and how long after an
/// answer the next one came (the spacing is the two together where requests wait for answers).
fn import_pace(
    proxies: &[KmsProxy],
    quotas: &KmsQuotas,
    started: Instant,
    queue: &ImportQueue,
) -> String {
    let mut out = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let stats = proxy.stats();
        let timings = proxy.timings();
        for ((region, op), (first, last)) in proxy.admitted_spans() {
            if op != "GetParametersForImport" {
                continue;
            }
            let n = stats
                .get(&(region.clone(), op.clone()))
                .map_or(0, |c| c.forwarded);
            let at = |t: Instant| t.saturating_duration_since(started).as_secs_f64();
            let every = if n > 1 {
                format!(", every {:.4} s", (at(last) - at(first)) / (n - 1) as f64)
            } else {
                String::new()
            };
            let via = if proxies.len() > 1 {
                format!(" (account {})", ACCOUNTS[i].1)
            } else {
                String::new()
            };
            let timing = timings.get(&(region.clone(), op.clone()));
            let served = timing.map_or(String::new(), |t| {
                format!(
                    "; KMS answered in {}, the next came {} after the answer",
                    spread(&t.answered_in),
                    spread(&t.next_after_answer)
                )
            });
            // The operator's gauge is by region: with two accounts it sums both.
            let waiting: Vec<i64> = queue
                .iter()
                .filter(|(t, _)| *t >= first && *t <= last)
                .map(|(_, by_region)| by_region.get(&region).copied().unwrap_or(0))
                .collect();
            let queued = if waiting.is_empty() {
                String::new()
            } else {
                let mut sorted = waiting.clone();
                sorted.sort();
                let none = waiting.iter().filter(|w| **w == 0).count();
                format!(
                    "; the operator had none waiting for a slot in {none} of {} samples in between, median {} waiting",
                    waiting.len(),
                    sorted[sorted.len() / 2]
                )
            };
            out.push(format!(
                "{region}{via}: {n} from {:.2} s to {:.2} s{every} (period {} s){served}{queued}",
                at(first),
                at(last),
                1.0 / quotas.rate(&op)
            ));
        }
    }
    out.join("; ")
}

/// Minimum, median and 90th percentile of `times`, in ms: `min 21 / median 130 / p90 240 ms`.
fn spread(times: &[Duration]) -> String {
    if times.is_empty() {
        return "(none)".into();
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |q: f64| {
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i].as_secs_f64() * 1000.0
    };
    format!(
        "min {:.1} / median {:.1} / p90 {:.1} ms",
        ms(0.0),
        ms(0.5),
        ms(0.9)
    )
}

/// Sums the counts of every proxy (one per account).
fn stats(proxies: &[KmsProxy]) -> ProxyStats {
    let mut out = ProxyStats::new();
    for proxy in proxies {
        for (key, c) in proxy.stats() {
            *out.entry(key).or_default() += c;
        }
    }
    out
}

/// The proxies' throttles by operation: how many, and how early they came (the largest and the
/// median), e.g. `CreateKey: 3 (up to 4.1 ms early, median 1.2 ms)`.
fn throttle_detail(throttles: &[kms_proxy::Throttle]) -> String {
    let mut by_op: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for t in throttles {
        let op = if t.replica_slots {
            format!("{} (replica region's CreateKey slots)", t.operation)
        } else {
            t.operation.clone()
        };
        by_op.entry(op).or_default().push(t.early);
    }
    if by_op.is_empty() {
        return "none".into();
    }
    by_op
        .into_iter()
        .map(|(op, mut early)| {
            early.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            format!(
                "{op}: {} (up to {:.1} ms early, median {:.1} ms)",
                early.len(),
                ms(early[early.len() - 1]),
                ms(early[early.len() / 2])
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the proxies received between two snapshots.
#[derive(Default)]
struct Calls {
    reads: u64,
    writes: u64,
    throttled: u64,
    by_operation: BTreeMap<String, u64>,
}

fn calls(after: &ProxyStats, before: &ProxyStats) -> Calls {
    let mut out = Calls::default();
    for (op, c) in kms_proxy::by_operation(&kms_proxy::delta(after, before)) {
        if KMS_WRITES.contains(&op.as_str()) {
            out.writes += c.received();
        } else {
            out.reads += c.received();
        }
        out.throttled += c.throttled;
        out.by_operation.insert(op, c.received());
    }
    out
}

/// The machine's 1-minute load average (`/proc/loadavg`).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The samples of `metric` in a `/metrics` text: each one's labels and value.
fn samples<'a>(text: &'a str, metric: &str) -> impl Iterator<Item = (&'a str, f64)> {
    let prefix = format!("{metric}{{");
    text.lines().filter_map(move |line| {
        let labels = line.strip_prefix(&prefix)?;
        let value = line.rsplit_once(' ')?.1.parse().ok()?;
        Some((labels, value))
    })
}

/// The value of label `name` in a sample's labels (`?` when it has none).
fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(&format!("{name}=\""))
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or("?")
}

/// Reconciles the operator at `port` has counted, by kind (`keyfleet_reconciles_total`).
fn reconciles_by_kind(port: u16) -> BTreeMap<String, u64> {
    let text = super::scrape(port).expect("operator /metrics");
    let mut out = BTreeMap::new();
    for (labels, count) in samples(&text, "keyfleet_reconciles_total") {
        *out.entry(label(labels, "kind").to_string()).or_default() += count as u64;
    }
    out
}

/// Warning events whose reason or note speaks of throttling (or KMS being unavailable).
fn throttle_events(kube: &MemKube) -> usize {
    kube.objects("events.k8s.io", "events")
        .iter()
        .filter(|e| e["type"] == "Warning")
        .filter(|e| {
            let text = format!("{} {}", e["reason"], e["note"]).to_lowercase();
            text.contains("throttl") || text.contains("kmsunavailable")
        })
        .count()
}

/// GetParametersForImport requests waiting in the operator for a rate-limit slot, by region,
/// at each poll of [`wait_ready`] (`keyfleet_kms_requests_waiting`).
type ImportQueue = Vec<(Instant, BTreeMap<String, i64>)>;

/// The operator at `port`'s GetParametersForImport requests waiting for a slot, by region.
fn imports_waiting(port: u16) -> BTreeMap<String, i64> {
    let Some(text) = super::scrape(port) else {
        return BTreeMap::new();
    };
    samples(&text, "keyfleet_kms_requests_waiting")
        .filter(|(labels, _)| label(labels, "operation") == "GetParametersForImport")
        .map(|(labels, waiting)| (label(labels, "region").to_string(), waiting as i64))
        .collect()
}

/// Polls the fleet in `namespace` until `want` objects are Ready; the Ready reasons seen, and
/// the operator's (metrics at `port`) import queue at each poll.
async fn wait_ready(
    client: &kube::Client,
    namespace: &str,
    want: usize,
    timeout: Duration,
    operator: &Operator,
    port: u16,
) -> (BTreeMap<String, usize>, ImportQueue) {
    let poll = Duration::from_millis(if want > 200 { 500 } else { 200 });
    let deadline = Instant::now() + timeout;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut queue = ImportQueue::new();
    loop {
        queue.push((Instant::now(), imports_waiting(port)));
        let v = fleet::view(client, namespace).await;
        for (r, c) in &v.reasons {
            *reasons.entry(r.clone()).or_default() += c;
        }
        if v.ready >= want {
            return (reasons, queue);
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}: {}/{want} Ready; reasons {:?}; operator log:\n{}",
            v.ready,
            v.reasons,
            operator.log_tail()
        );
        tokio::time::sleep(poll).await;
    }
}

struct Run {
    backend: Backend,
    keys: usize,
    replicas: usize,
    accounts: usize,
    scale: f64,
    ready_seconds: f64,
    load_before: f64,
    load_after: f64,
    bound_seconds: f64,
    /// Where the roll-out's time went: [`import_pace`].
    import_pace: String,
    bound_by: String,
    proxy_throttles: u64,
    throttle_detail: String,
    status_throttles: usize,
    rollout_reads_per_object: f64,
    rollout_calls: BTreeMap<String, u64>,
    peak_rss_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
    binary_bytes: u64,
    built_as: String,
    image_env: String,
    restart_reads_per_object: f64,
    restart_writes: u64,
    restart_calls: BTreeMap<String, u64>,
    restart_reconciles: BTreeMap<String, u64>,
    steady_reconciles: u64,
    steady_writes: u64,
    cpu_ms_per_reconcile: f64,
    batch: usize,
    batch_ready_at_stop: usize,
    shutdown_seconds: f64,
    half_created: Vec<String>,
}

fn report(r: &Run) -> (String, bool) {
    let ratio = r.ready_seconds / r.bound_seconds.max(1e-9);
    let rss_mib = r.peak_rss_kib as f64 / 1024.0;
    let rss_target = if r.keys > 2000 { 96.0 } else { 32.0 };
    let checks = [
        (
            "all-Ready time / quota bound ≤ 1.05".to_string(),
            ratio <= 1.05,
            format!(
                "{:.1} s / {:.1} s = {ratio:.3}",
                r.ready_seconds, r.bound_seconds
            ),
        ),
        (
            "throttles returned by the proxy / shown in a status or Warning = 0 / 0".into(),
            r.proxy_throttles == 0 && r.status_throttles == 0,
            format!("{} / {}", r.proxy_throttles, r.status_throttles),
        ),
        (
            "KMS reads per object during the roll-out ≤ 3".into(),
            r.rollout_reads_per_object <= 3.0,
            format!("{:.2}", r.rollout_reads_per_object),
        ),
        (
            "KMS reads per object in the first minute after a restart ≤ 1".into(),
            r.restart_reads_per_object <= 1.0,
            format!("{:.2}", r.restart_reads_per_object),
        ),
        (
            "KMS writes at rest (restart minute + two resyncs) = 0".into(),
            r.restart_writes + r.steady_writes == 0,
            format!("{}", r.restart_writes + r.steady_writes),
        ),
        (
            format!("operator peak RSS ≤ {rss_target:.0} MiB"),
            rss_mib <= rss_target,
            format!("{rss_mib:.1} MiB"),
        ),
        (
            "CPU per no-op reconcile".into(),
            true,
            format!("{:.3} ms", r.cpu_ms_per_reconcile),
        ),
        (
            "SIGTERM mid-roll-out → exit ≤ 5 s, no key half-created".into(),
            r.shutdown_seconds <= 5.0 && r.half_created.is_empty(),
            format!(
                "{:.2} s, {} half-created",
                r.shutdown_seconds,
                r.half_created.len()
            ),
        ),
    ];
    let mut out = String::new();
    let accounts = if r.accounts > 1 {
        format!(
            ", over {} AwsKms connections (accounts {} and {}, each behind its own proxy; two thirds of the keys in the first)",
            r.accounts, ACCOUNTS[0].1, ACCOUNTS[1].1
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "# Fleet benchmark, strict mode (`KEYFLEET_BENCH_MODE=strict cargo bench --bench fleet`)\n"
    );
    let _ = writeln!(
        out,
        "{} AwsKeys over {} and {} ({} multi-region with an AwsReplicaKey in the other region){accounts}. The proxy enforces the AWS default KMS quotas{} with one-request buckets (no burst); the operator is {} ({:.1} MiB) with the image's environment ({}) and the same quotas{}.\n",
        r.keys,
        REGIONS[0],
        REGIONS[1],
        r.replicas,
        if r.scale != 1.0 {
            format!(" × {}", r.scale)
        } else {
            String::new()
        },
        r.built_as,
        r.binary_bytes as f64 / (1024.0 * 1024.0),
        if r.image_env.is_empty() {
            "none"
        } else {
            &r.image_env
        },
        if r.scale != 1.0 {
            " (`--kms-quota` with every rate scaled alike)"
        } else {
            ""
        }
    );
    let all = targets_table(
        &mut out,
        &format!(
            "; {} on the same machine; 1-minute load average {:.1} when the roll-out started, {:.1} when it ended{}",
            r.backend.describe(),
            r.load_before,
            r.load_after,
            if r.load_before.max(r.load_after) > 2.0 {
                " (above 2, other work shared the cores: wall-time figures are upper bounds)"
            } else {
                ""
            }
        ),
        &checks,
    );
    let _ = writeln!(out, "\n## Details\n");
    let _ = writeln!(
        out,
        "- quota bound: {} (n calls take (n − 1) / rate; the operator spaces them 2% further apart)",
        r.bound_by
    );
    let _ = writeln!(
        out,
        "- GetParametersForImport admitted by the proxy, after the operator started: {}",
        r.import_pace
    );
    let _ = writeln!(
        out,
        "- roll-out KMS calls received by the proxy, by operation: {:?}",
        r.rollout_calls
    );
    let _ = writeln!(
        out,
        "- roll-out requests the proxy throttled, by operation: {}",
        r.throttle_detail
    );
    let _ = writeln!(
        out,
        "- first minute after the restart (default settings: resync 300 s, drift 600 s): KMS calls {:?}; reconciles by kind {:?} (a converged key's first check waits for its place in the resync interval)",
        r.restart_calls, r.restart_reconciles
    );
    let _ = writeln!(
        out,
        "- steady state: {} no-op reconciles over two resync periods of 20 s; CPU is utime + stime of the operator process over that window divided by them",
        r.steady_reconciles
    );
    let _ = writeln!(
        out,
        "- peak RSS of the roll-out operator (VmHWM); at its end {:.1} MiB anonymous, {:.1} MiB file-backed (the mapped binary)",
        r.rss_anon_kib as f64 / 1024.0,
        r.rss_file_kib as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "- shutdown: {} more AwsKeys rolled out, SIGTERM with {} of them Ready; every KMS key owned by one of them is recorded in its status{}",
        r.batch,
        r.batch_ready_at_stop,
        if r.half_created.is_empty() {
            String::new()
        } else {
            format!(" except: {:?}", r.half_created)
        }
    );
    (out, all)
}

pub fn main() {
    let n: usize = env_or("KEYFLEET_BENCH_KEYS", 100);
    let accounts: usize = env_or("KEYFLEET_BENCH_ACCOUNTS", 1).clamp(1, 2);
    let scale: f64 = env_or("KEYFLEET_BENCH_QUOTA_SCALE", 1.0);
    let out_path = std::env::var("KEYFLEET_BENCH_OUT").unwrap_or_else(|_| {
        let suffix = if accounts > 1 { "-2-accounts" } else { "" };
        format!(
            "{}/benches/results/strict-{n}{suffix}.md",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    // A profile or allocator experiment may name another build; the report says which.
    let (binary, built_as) = match std::env::var_os("KEYFLEET_BENCH_BINARY") {
        Some(path) => {
            let path = PathBuf::from(path);
            let name = format!("`{}`, given by KEYFLEET_BENCH_BINARY", path.display());
            (path, name)
        }
        None => (
            image_binary(),
            "the image's binary, `cargo build --release -p keyfleet --bin keyfleet`".to_string(),
        ),
    };
    let binary_bytes = std::fs::metadata(&binary)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let rt = runtime();
    let ticks = clock_ticks();
    let dir = tempfile::tempdir().expect("temporary directory");
    let quotas = KmsQuotas::aws_defaults().scaled(scale);
    let namespace = "fleet";
    let connection =
        move |i: usize| (accounts > 1).then(|| ACCOUNTS[usize::from(i % 3 == 2)].0.to_string());

    let backend = Backend::from_env();
    let (kube, kube_addr, endpoint, proxies, fleet, _model) = rt.block_on(async {
        let (endpoint, model) = backend.start().await;
        let mut proxies = Vec::new();
        for _ in 0..accounts {
            let mut config = ProxyConfig::new(&endpoint, quotas.clone());
            config.one_request_buckets = true;
            proxies.push(KmsProxy::start(config).await.expect("start KMS proxy"));
        }
        let kube = MemKube::new();
        let mut connections = vec![serde_json::json!({
            "apiVersion": "kms.keyfleet.dev/v1alpha1",
            "kind": "AwsKms",
            "metadata": {"name": "default"},
            "spec": {"allowedNamespaces": {"from": "All"}}
        })];
        if accounts > 1 {
            for ((name, account), proxy) in ACCOUNTS.iter().zip(&proxies) {
                connections.push(serde_json::json!({
                    "apiVersion": "kms.keyfleet.dev/v1alpha1",
                    "kind": "AwsKms",
                    "metadata": {"name": name},
                    "spec": {
                        "allowedNamespaces": {"from": "All"},
                        "roleArn": format!("arn:aws:iam::{account}:role/keyfleet"),
                        "endpointUrl": proxy.url(),
                    }
                }));
            }
        }
        for connection in connections {
            kube.seed("kms.keyfleet.dev", "v1alpha1", "awskmses", None, connection)
                .expect("seed an AwsKms");
        }
        let (addr, _server) = kube
            .serve_http("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve memkube");
        eprintln!("fleet bench: creating {n} AwsKeys and their Secrets");
        let fleet =
            fleet::create_fleet_over(&kube.client(), namespace, "fleet", n, 10, connection).await;
        (kube, addr, endpoint, proxies, fleet, model)
    });
    let objects = fleet.keys.len() + fleet.replicas.len();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, MemKube::kubeconfig(kube_addr)).expect("write kubeconfig");
    let mut env = localstack::operator_env(&proxies[0].url());
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_STS");
    env.push(("AWS_ENDPOINT_URL_STS".into(), endpoint.clone()));
    // The image's own environment (e.g. its malloc setting), as the Dockerfile sets it.
    env.extend(image_env());
    let quota_flag = quotas
        .iter()
        .map(|(op, rate)| format!("{op}={rate}"))
        .collect::<Vec<_>>()
        .join(",");
    let start = |name: &str, extra: &[&str]| -> (Operator, u16) {
        let port = free_port();
        let mut args: Vec<String> = [
            "--cluster-id",
            "bench-cluster",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--kms-quota",
            &quota_flag,
        ]
        .map(String::from)
        .to_vec();
        if accounts > 1 {
            args.push("--allow-custom-kms-endpoints".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.path().join(format!("{name}.log"));
        let op = Operator::spawn(&binary, &args, &kubeconfig, &env, log);
        eprintln!("fleet bench: {name} started (pid {})", op.pid());
        (op, port)
    };

    let run = rt.block_on(async {
        let client = kube.client();
        // 1. Roll-out.
        let before = stats(&proxies);
        let load_before = load_average();
        let started = Instant::now();
        let (rollout_operator, rollout_port) = start("rollout", &["--resync-seconds", "3600"]);
        let timeout = Duration::from_secs(120 + 3 * n as u64);
        let (reasons, queue) = wait_ready(
            &client,
            namespace,
            objects,
            timeout,
            &rollout_operator,
            rollout_port,
        )
        .await;
        let ready_seconds = started.elapsed().as_secs_f64();
        let load_after = load_average();
        let rollout = calls(&stats(&proxies), &before);
        let rollout_throttles: Vec<_> = proxies.iter().flat_map(|p| p.throttles()).collect();
        let status_throttles = reasons
            .iter()
            .filter(|(r, _)| r.contains("Throttl") || r.as_str() == "KmsUnavailable")
            .map(|(_, n)| *n)
            .sum::<usize>()
            + throttle_events(&kube);
        let pid = rollout_operator.pid().to_string();
        let (peak_rss_kib, rss_anon_kib, rss_file_kib) = (
            status_kib(&pid, "VmHWM"),
            status_kib(&pid, "RssAnon"),
            status_kib(&pid, "RssFile"),
        );
        let (bound_seconds, bound_by) = quota_bound(&fleet, &quotas);
        let import_pace = import_pace(&proxies, &quotas, started, &queue);
        eprintln!("fleet bench: all {objects} Ready after {ready_seconds:.1} s (bound {bound_seconds:.1} s)");
        assert!(
            rollout_operator.stop(),
            "the roll-out operator did not stop cleanly"
        );

        // 2. Restart with the default settings: the first minute.
        let before = stats(&proxies);
        let (restarted, restart_port) = start("restart", &[]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let restart = calls(&stats(&proxies), &before);
        let restart_reconciles = reconciles_by_kind(restart_port);
        assert!(restarted.stop(), "the restarted operator did not stop cleanly");

        // 3. Steady state with 20 s resyncs, after the start-up pass.
        let (steady, port) = start("steady", &["--resync-seconds", "20"]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while super::scrape(port).is_none() || reconciles(port) < objects as u64 {
            assert!(Instant::now() < deadline, "the steady operator did not reconcile the fleet:\n{}", steady.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = stats(&proxies);
        let rec_before = reconciles(port);
        let cpu_before = process_cpu(steady.pid(), ticks);
        tokio::time::sleep(Duration::from_secs(40)).await;
        let cpu = process_cpu(steady.pid(), ticks) - cpu_before;
        let steady_reconciles = reconciles(port) - rec_before;
        assert!(steady_reconciles > 0, "no reconcile in two resync periods");
        let steady_writes = calls(&stats(&proxies), &before).writes;

        // 4. A second batch; SIGTERM once a quarter of it is Ready.
        let batch = (n / 10).clamp(8, 50);
        let stop_ns = "fleet-stop";
        let batch_fleet = fleet::create_fleet_over(&client, stop_ns, "stop", batch, 0, |_| None).await;
        wait_ready(&client, stop_ns, batch / 4, timeout, &steady, port).await;
        let batch_ready_at_stop = fleet::view(&client, stop_ns).await.ready;
        let shutdown_seconds = steady
            .stop_timed()
            .map(|d| d.as_secs_f64())
            .unwrap_or(f64::INFINITY);
        // Every key KMS holds for the batch (found by its owner tag) is in its AwsKey's status.
        let view = fleet::view(&client, stop_ns).await;
        let mut half_created = Vec::new();
        if accounts == 1 {
            let owned = fleet::kms_keys_per_owner(&endpoint, &REGIONS).await;
            for (uid, _, name, region, key_id) in &view.objects {
                let held = owned.get(&(region.clone(), uid.clone())).cloned().unwrap_or_default();
                let recorded: Vec<String> = key_id.iter().cloned().collect();
                if held != recorded {
                    half_created.push(format!("{name}: KMS holds {held:?}, status {recorded:?}"));
                }
            }
        }
        assert_eq!(batch_fleet.keys.len(), batch);
        Run {
            backend,
            keys: fleet.keys.len(),
            replicas: fleet.replicas.len(),
            accounts,
            scale,
            ready_seconds,
            load_before,
            load_after,
            bound_seconds,
            bound_by,
            import_pace,
            proxy_throttles: rollout.throttled,
            throttle_detail: throttle_detail(&rollout_throttles),
            status_throttles,
            rollout_reads_per_object: rollout.reads as f64 / objects as f64,
            rollout_calls: rollout.by_operation,
            peak_rss_kib,
            rss_anon_kib,
            rss_file_kib,
            binary_bytes,
            built_as: built_as.clone(),
            image_env: image_env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            restart_reads_per_object: restart.reads as f64 / objects as f64,
            restart_writes: restart.writes,
            restart_calls: restart.by_operation,
            restart_reconciles,
            steady_reconciles,
            steady_writes,
            cpu_ms_per_reconcile: cpu * 1000.0 / steady_reconciles as f64,
            batch,
            batch_ready_at_stop,
            shutdown_seconds,
            half_created,
        }
    });
    let (text, all_met) = report(&run);
    drop(proxies);
    publish(&text, &out_path, all_met);
}
