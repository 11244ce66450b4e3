//! Fleet benchmark: the real controller rolls out N AwsKeys over two regions (every tenth
//! multi-region, with an AwsReplicaKey in the other region) against LocalStack behind the
//! quota-enforcing proxy (AWS default KMS quotas), then idles through resyncs.
//!
//! Run: `cargo bench --bench fleet` (N = 100), `KEYFLEET_BENCH_KEYS=1000 cargo bench --bench
//! fleet` for a thousand. Starts its own LocalStack (`scripts/localstack`). Reports time to
//! all-Ready against the quota bound, KMS calls per key by operation, throttles, peak RSS, CPU
//! per no-op reconcile and steady-state KMS calls per key per resync; writes them to
//! `benches/results/latest.md` and exits non-zero when a target is missed.
//!
//! Layout: the API server (memkube, over HTTP) and the KMS proxy run on one tokio runtime, the
//! controller on another whose threads are named `keyfleet-ctl`, so that the CPU figures are
//! the controller's alone (from /proc/self/task). Peak RSS is the whole process: controller,
//! in-memory API server with every object, and proxy.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfleet::controller::{self, Context, Settings};
use keyfleet::kms::{KmsQuotas, RateLimits};
use keyfleet::kms_proxy::{self, KmsProxy, OpCounts, ProxyConfig};
use keyfleet::memkube::MemKube;
use keyfleet::metrics::{Metrics, ReconcileLabels};

use support::fleet::{self, Fleet, REGIONS};
use support::localstack;

const CONTROLLER_THREAD: &str = "keyfleet-ctl";
/// Operations whose calls a roll-out cannot avoid, for the quota bound.
const WRITES: &[&str] = &[
    "CreateKey",
    "ReplicateKey",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "TagResource",
    "UntagResource",
    "CreateAlias",
    "DeleteAlias",
    "EnableKey",
    "DisableKey",
    "UpdateKeyDescription",
    "PutKeyPolicy",
    "CancelKeyDeletion",
    "ScheduleKeyDeletion",
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process's threads named `name`.
fn thread_cpu(name: &str, ticks_per_second: f64) -> f64 {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... : comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the comm.
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        ticks += utime + stime;
    }
    ticks as f64 / ticks_per_second
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/self/status` field in KiB (VmHWM: peak RSS, VmRSS: current).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn reconciles(metrics: &Metrics) -> u64 {
    let mut n = 0;
    for kind in ["AwsKey", "AwsReplicaKey"] {
        for result in ["ready", "not_ready", "error"] {
            n += metrics
                .reconciles
                .get_or_create(&ReconcileLabels { kind, result })
                .get();
        }
    }
    n
}

/// The least time the quotas allow for the calls the fleet cannot do without, per region and
/// operation: one CreateKey, GetParametersForImport, ImportKeyMaterial and CreateAlias per
/// AwsKey; one ReplicateKey (primary region) and two CreateKey (replica region) per replica.
/// A bucket starts with one token, so n calls take (n - 1) / rate.
fn quota_bound(fleet: &Fleet, quotas: &KmsQuotas) -> (f64, String) {
    let mut need: BTreeMap<(String, &str), f64> = BTreeMap::new();
    for (_, region) in &fleet.keys {
        for op in [
            "CreateKey",
            "GetParametersForImport",
            "ImportKeyMaterial",
            "CreateAlias",
        ] {
            *need.entry((region.clone(), op)).or_default() += 1.0;
        }
    }
    for (_, region) in &fleet.replicas {
        let primary_region = REGIONS.iter().find(|r| *r != region).copied().unwrap_or("");
        *need
            .entry((primary_region.to_string(), "ReplicateKey"))
            .or_default() += 1.0;
        *need.entry((region.clone(), "CreateKey")).or_default() += 2.0;
    }
    need.into_iter()
        .map(|((region, op), n)| {
            (
                (n - 1.0).max(0.0) / quotas.rate(op),
                format!("{n} {op} in {region} at {}/s", quotas.rate(op)),
            )
        })
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a })
}

struct Figures {
    keys: usize,
    replicas: usize,
    ready_seconds: f64,
    bound_seconds: f64,
    bound_by: String,
    calls_per_key: BTreeMap<String, f64>,
    rollout_calls: BTreeMap<String, OpCounts>,
    throttles_seen: u64,
    reasons_seen: BTreeMap<String, usize>,
    peak_rss_kib: u64,
    rss_kib: u64,
    steady_reconciles: u64,
    steady_seconds: f64,
    steady_reads_per_reconcile: f64,
    steady_writes: u64,
    steady_calls: BTreeMap<String, u64>,
    cpu_ms_per_reconcile: f64,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB RAM, Linux; LocalStack 4 on the same machine")
}

fn report(f: &Figures) -> (String, bool) {
    let ratio = f.ready_seconds / f.bound_seconds.max(1e-9);
    let surfaced: usize = f
        .reasons_seen
        .iter()
        .filter(|(r, _)| r.contains("Throttl") || r.as_str() == "KmsUnavailable")
        .map(|(_, n)| *n)
        .sum();
    let rss_mib = f.peak_rss_kib as f64 / 1024.0;
    let checks = [
        (
            "time to all-Ready ≤ 1.1 × quota bound",
            ratio <= 1.1,
            format!("{ratio:.3}"),
        ),
        (
            "throttling surfaced to a status",
            surfaced == 0,
            surfaced.to_string(),
        ),
        (
            "KMS reads per unchanged key per resync ≤ 1",
            f.steady_reads_per_reconcile <= 1.0,
            format!("{:.3}", f.steady_reads_per_reconcile),
        ),
        (
            "KMS writes in steady state",
            f.steady_writes == 0,
            f.steady_writes.to_string(),
        ),
        (
            "peak RSS ≤ 64 MiB",
            rss_mib <= 64.0,
            format!("{rss_mib:.1} MiB"),
        ),
        (
            "CPU per no-op reconcile ≤ 2 ms",
            f.cpu_ms_per_reconcile <= 2.0,
            format!("{:.3} ms", f.cpu_ms_per_reconcile),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(out, "# Fleet benchmark (`cargo bench --bench fleet`)\n");
    let _ = writeln!(
        out,
        "{} AwsKeys over {} and {} ({} multi-region with an AwsReplicaKey in the other region), each with its own Secret, tags and an alias; AWS default KMS quotas enforced by the proxy.\n",
        f.keys, REGIONS[0], REGIONS[1], f.replicas
    );
    let _ = writeln!(out, "Machine: {}  ", machine());
    let _ = writeln!(
        out,
        "Taken: {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(out, "| target | result | met |\n| --- | --- | --- |");
    let mut all = true;
    for (what, ok, value) in &checks {
        all &= ok;
        let _ = writeln!(
            out,
            "| {what} | {value} | {} |",
            if *ok { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(out, "\n## Roll-out\n");
    let _ = writeln!(
        out,
        "- time to all-Ready: {:.1} s; quota bound {:.1} s ({}); ratio {ratio:.3}",
        f.ready_seconds, f.bound_seconds, f.bound_by
    );
    let _ = writeln!(
        out,
        "- ThrottlingExceptions returned by the proxy: {} (statuses showing throttling: {surfaced}); Ready reasons seen while polling: {:?}",
        f.throttles_seen, f.reasons_seen
    );
    let _ = writeln!(
        out,
        "- KMS calls per object (AwsKey or AwsReplicaKey) by operation:\n"
    );
    let _ = writeln!(
        out,
        "| operation | calls per object | calls |\n| --- | --- | --- |"
    );
    for (op, per) in &f.calls_per_key {
        let total = f
            .rollout_calls
            .get(op)
            .map(|c| c.reached_kms())
            .unwrap_or(0);
        let _ = writeln!(out, "| {op} | {per:.2} | {total} |");
    }
    let _ = writeln!(out, "\n## Steady state\n");
    let _ = writeln!(
        out,
        "- {} reconciles in {:.0} s of resyncs: {:.3} KMS reads per reconcile ({:?}), {} writes",
        f.steady_reconciles,
        f.steady_seconds,
        f.steady_reads_per_reconcile,
        f.steady_calls,
        f.steady_writes
    );
    let _ = writeln!(
        out,
        "- CPU per no-op reconcile: {:.3} ms (threads of the controller's runtime only)",
        f.cpu_ms_per_reconcile
    );
    let _ = writeln!(
        out,
        "- peak RSS {:.1} MiB, RSS at the end {:.1} MiB — the whole process: controller, the in-memory API server holding every AwsKey, Secret and Event, and the proxy",
        rss_mib,
        f.rss_kib as f64 / 1024.0
    );
    (out, all)
}

fn main() {
    let n: usize = env_or("KEYFLEET_BENCH_KEYS", 100);
    let resync = Duration::from_secs(env_or("KEYFLEET_BENCH_RESYNC_SECONDS", 20));
    let out_path = std::env::var("KEYFLEET_BENCH_OUT")
        .unwrap_or_else(|_| format!("{}/benches/results/latest.md", env!("CARGO_MANIFEST_DIR")));
    let infra = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-infra")
        .enable_all()
        .build()
        .expect("infra runtime");
    let ctl = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CONTROLLER_THREAD)
        .enable_all()
        .build()
        .expect("controller runtime");
    let ticks = clock_ticks();

    let quotas = KmsQuotas::aws_defaults();
    let (kube, kube_addr, proxy, fleet) = infra.block_on(async {
        eprintln!("fleet bench: starting LocalStack");
        let endpoint = localstack::dedicated_endpoint().await;
        let proxy = KmsProxy::start(ProxyConfig::new(&endpoint, quotas.clone()))
            .await
            .expect("start KMS proxy");
        let kube = MemKube::new();
        let (addr, _server) = kube
            .serve_http("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve memkube");
        eprintln!("fleet bench: creating {n} AwsKeys and their Secrets");
        let fleet = fleet::create_fleet(&kube.client(), "default", "fleet", n, 10).await;
        (kube, addr, proxy, fleet)
    });
    let objects = fleet.keys.len() + fleet.replicas.len();

    // The controller, as `keyfleet run` builds it, talking HTTP to the API server and the proxy.
    let metrics = Metrics::shared();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy_url = proxy.url();
    let ctl_metrics = metrics.clone();
    let ctl_quotas = quotas.clone();
    let started = Instant::now();
    let controller = ctl.spawn(async move {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&MemKube::kubeconfig(kube_addr))
            .expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config");
        let client = kube::Client::try_from(config).expect("kube client");
        let mut settings = Settings::new("bench-cluster");
        settings.resync_interval = resync;
        let kms = fleet::kms_clients_via(
            &proxy_url,
            Some(RateLimits::new(ctl_quotas, Duration::from_secs(60))),
        )
        .with_metrics(ctl_metrics.clone());
        let ctx = Arc::new(
            Context::new(client, kms, settings)
                .with_telemetry(ctl_metrics, Arc::new(Default::default())),
        );
        controller::run(ctx, async move {
            let _ = stop_rx.await;
        })
        .await;
    });

    let figures = infra.block_on(async {
        let client = kube.client();
        let poll = if n > 200 {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(200)
        };
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        loop {
            let v = fleet::view(&client, "default").await;
            for (r, c) in &v.reasons {
                *reasons.entry(r.clone()).or_default() += c;
            }
            if v.ready == objects {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60 + 3 * n as u64),
                "fleet not Ready: {}/{objects}; reasons {:?}",
                v.ready,
                v.reasons
            );
            tokio::time::sleep(poll).await;
        }
        let ready_seconds = started.elapsed().as_secs_f64();
        let rollout = kms_proxy::by_operation(&proxy.stats());
        eprintln!(
            "fleet bench: all {objects} Ready after {ready_seconds:.1} s; idling through resyncs"
        );
        let (bound_seconds, bound_by) = quota_bound(&fleet, &quotas);

        // Steady state: let the last reconciles of the roll-out finish, then two resync periods.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = proxy.stats();
        let rec_before = reconciles(&metrics);
        let cpu_before = thread_cpu(CONTROLLER_THREAD, ticks);
        let t = Instant::now();
        tokio::time::sleep(resync * 2).await;
        let steady = kms_proxy::by_operation(&kms_proxy::delta(&proxy.stats(), &before));
        let steady_reconciles = reconciles(&metrics) - rec_before;
        let cpu = thread_cpu(CONTROLLER_THREAD, ticks) - cpu_before;
        let steady_seconds = t.elapsed().as_secs_f64();
        let steady_calls: BTreeMap<String, u64> = steady
            .iter()
            .map(|(op, c)| (op.clone(), c.received()))
            .collect();
        let steady_writes: u64 = steady_calls
            .iter()
            .filter(|(op, _)| WRITES.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum();
        let steady_reads: u64 = steady_calls.values().sum::<u64>() - steady_writes;
        let v = fleet::view(&client, "default").await;
        for (r, c) in &v.reasons {
            *reasons.entry(r.clone()).or_default() += c;
        }
        Figures {
            keys: fleet.keys.len(),
            replicas: fleet.replicas.len(),
            ready_seconds,
            bound_seconds,
            bound_by,
            calls_per_key: rollout
                .iter()
                .map(|(op, c)| (op.clone(), c.reached_kms() as f64 / objects as f64))
                .collect(),
            throttles_seen: rollout.values().map(|c| c.throttled).sum(),
            rollout_calls: rollout,
            reasons_seen: reasons,
            peak_rss_kib: status_kib("VmHWM"),
            rss_kib: status_kib("VmRSS"),
            steady_reconciles,
            steady_seconds,
            steady_reads_per_reconcile: steady_reads as f64 / steady_reconciles.max(1) as f64,
            steady_writes,
            steady_calls,
            cpu_ms_per_reconcile: cpu * 1000.0 / steady_reconciles.max(1) as f64,
        }
    });
    let _ = stop_tx.send(());
    ctl.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    });
    let (text, all_met) = report(&figures);
    print!("{text}");
    if let Some(dir) = std::path::Path::new(&out_path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&out_path, &text) {
        Ok(()) => eprintln!("fleet bench: figures written to {out_path}"),
        Err(e) => eprintln!("fleet bench: cannot write {out_path}: {e}"),
    }
    drop(proxy);
    if !all_met {
        eprintln!("fleet bench: a target was missed");
        std::process::exit(1);
    }
}
