//! Fleet benchmark: the operator (`keyfleet run`, the real binary as a child process) rolls out
//! N AwsKeys over two regions (every tenth multi-region, with an AwsReplicaKey in the other
//! region) against LocalStack behind the quota-enforcing proxy (AWS default KMS quotas), then
//! idles through resyncs.
//!
//! Run: `cargo bench --bench fleet` (N = 100), `KEYFLEET_BENCH_KEYS=1000 cargo bench --bench
//! fleet` for a thousand. Starts its own LocalStack (`scripts/localstack`). Reports time to
//! all-Ready against the quota bound, KMS calls per key by operation, throttles, peak RSS, CPU
//! per no-op reconcile and steady-state KMS calls per key per resync; writes them to
//! `benches/results/latest.md` (`KEYFLEET_BENCH_OUT` to change) and exits non-zero when a target
//! is missed.
//!
//! `KEYFLEET_BENCH_MODE=strict` runs the strict mode instead (`fleet/strict.rs`): one-request
//! buckets at the proxy, the image's binary, roll-out, restart, steady state and a shutdown in
//! the middle of a roll-out, over one or two accounts.
//!
//! Layout: this process runs the API server (memkube, served over HTTP) and the KMS proxy; the
//! operator is `keyfleet run` in a child process with a kubeconfig for that server and
//! `AWS_ENDPOINT_URL_KMS` at the proxy, as it runs in a cluster. Peak RSS is the child's VmHWM
//! and CPU its utime + stime (all threads), so both are the operator's alone.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "fleet/strict.rs"]
mod strict;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyfleet::kms::KmsQuotas;
use kms_proxy::{KmsProxy, OpCounts, ProxyConfig};
use memkube::MemKube;

use support::fleet::{self, Fleet, REGIONS};
use support::localstack;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system, all threads) of process `pid`, from `/proc/<pid>/stat`. A figure
/// that cannot be read fails the benchmark: a 0 would pass for a result.
fn process_cpu(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat for the CPU figure: {e}"));
    // pid (comm) state ... : comm may hold spaces, so split after the last ')'.
    let close = stat
        .rfind(')')
        .unwrap_or_else(|| panic!("/proc/{pid}/stat has no command name: {stat:?}"));
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the comm.
    let ticks = |i: usize| -> u64 {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat field {} unreadable: {stat:?}", i + 3))
    };
    (ticks(11) + ticks(12)) as f64 / ticks_per_second
}

/// The benchmark process's runtime (API server, proxy, polls): two worker threads.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("benchmark runtime")
}

fn clock_ticks() -> f64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK (the CPU figures are in clock ticks)");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("getconf CLK_TCK printed {:?}", output.stdout))
}

/// A `/proc/<pid>/status` field in KiB (VmHWM: peak RSS, VmRSS: current); `pid` "self" for
/// this process. Fails the benchmark when the figure cannot be read.
fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status for {field}: {e}"));
    status
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
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no readable {field}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The operator's `/metrics` text, or None while it does not answer.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// Reconciles the operator has counted (`keyfleet_reconciles_total`, every kind and result).
fn reconciles(port: u16) -> u64 {
    let text = scrape(port).expect("operator /metrics");
    text.lines()
        .filter(|l| l.starts_with("keyfleet_reconciles_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `keyfleet run` as a child process; killed when dropped (a failed assertion included).
struct Operator {
    child: Child,
    log: std::path::PathBuf,
}

impl Operator {
    /// `binary run` with `args`, its kubeconfig and AWS environment `env`, logs to `log`.
    fn spawn(
        binary: &std::path::Path,
        args: &[String],
        kubeconfig: &std::path::Path,
        env: &[(String, String)],
        log: std::path::PathBuf,
    ) -> Operator {
        let log_file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(binary)
            .arg("run")
            .args(args)
            .env_remove("RUST_LOG")
            // As in the image: no backtrace captured with every error.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start keyfleet run");
        Operator { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to 30 s for a clean exit.
    fn stop(self) -> bool {
        self.stop_timed().is_some()
    }

    /// SIGTERM, then waits up to 30 s for a clean exit; how long it took (None: no clean exit).
    fn stop_timed(mut self) -> Option<Duration> {
        let pid = self.pid().to_string();
        let sent = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = sent + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success().then(|| sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The last lines of its log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The least time the quotas allow for the calls the fleet cannot do without, per account
/// (connection), region and operation: one CreateKey, GetParametersForImport, ImportKeyMaterial
/// and CreateAlias per AwsKey; one ReplicateKey (primary region) and two CreateKey (replica
/// region) per replica. A bucket starts with one token, so n calls take (n - 1) / rate.
fn quota_bound(fleet: &Fleet, quotas: &KmsQuotas) -> (f64, String) {
    let account = |key: &str| fleet.connections.get(key).cloned().unwrap_or_default();
    let mut need: BTreeMap<(String, String, &str), f64> = BTreeMap::new();
    for (name, region) in &fleet.keys {
        for op in [
            "CreateKey",
            "GetParametersForImport",
            "ImportKeyMaterial",
            "CreateAlias",
        ] {
            *need.entry((account(name), region.clone(), op)).or_default() += 1.0;
        }
    }
    for (name, region) in &fleet.replicas {
        let primary = name.strip_suffix("-r").unwrap_or(name);
        let primary_region = REGIONS.iter().find(|r| *r != region).copied().unwrap_or("");
        *need
            .entry((account(primary), primary_region.to_string(), "ReplicateKey"))
            .or_default() += 1.0;
        *need
            .entry((account(primary), region.clone(), "CreateKey"))
            .or_default() += 2.0;
    }
    need.into_iter()
        .map(|((account, region, op), n)| {
            let through = if account.is_empty() {
                String::new()
            } else {
                format!(" through AwsKms/{account}")
            };
            (
                (n - 1.0).max(0.0) / quotas.rate(op),
                format!("{n} {op} in {region}{through} at {}/s", quotas.rate(op)),
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
    rss_anon_kib: u64,
    rss_file_kib: u64,
    bench_peak_rss_kib: u64,
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
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB RAM, Linux")
}

/// Writes the machine (with `note`), the date and the table of targets; whether every target
/// was met.
fn targets_table<W: std::fmt::Display>(
    out: &mut String,
    note: &str,
    checks: &[(W, bool, String)],
) -> bool {
    let _ = writeln!(out, "Machine: {}{note}  ", machine());
    let _ = writeln!(
        out,
        "Taken: {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(out, "| target | result | met |\n| --- | --- | --- |");
    let mut all = true;
    for (what, ok, value) in checks {
        all &= ok;
        let _ = writeln!(
            out,
            "| {what} | {value} | {} |",
            if *ok { "yes" } else { "NO" }
        );
    }
    all
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
    let all = targets_table(&mut out, "; LocalStack 4 on the same machine", &checks);
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
        "- CPU per no-op reconcile: {:.3} ms — utime + stime of the operator process (all threads) over the window, divided by the reconciles its `keyfleet_reconciles_total` counted in it",
        f.cpu_ms_per_reconcile
    );
    let _ = writeln!(
        out,
        "- operator (`keyfleet run`, a child process of the benchmark) peak RSS {:.1} MiB (VmHWM); RSS at the end {:.1} MiB: {:.1} MiB anonymous (heap: watch caches, buffers), {:.1} MiB file-backed (the mapped binary)",
        rss_mib,
        f.rss_kib as f64 / 1024.0,
        f.rss_anon_kib as f64 / 1024.0,
        f.rss_file_kib as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "- for context, the benchmark process (in-memory API server holding every AwsKey, Secret and Event with watch history, and the KMS proxy): peak RSS {:.1} MiB",
        f.bench_peak_rss_kib as f64 / 1024.0
    );
    (out, all)
}

fn main() {
    if std::env::var("KEYFLEET_BENCH_MODE").as_deref() == Ok("strict") {
        return strict::main();
    }
    let n: usize = env_or("KEYFLEET_BENCH_KEYS", 100);
    let resync_seconds: u64 = env_or("KEYFLEET_BENCH_RESYNC_SECONDS", 20);
    let resync = Duration::from_secs(resync_seconds);
    let out_path = std::env::var("KEYFLEET_BENCH_OUT")
        .unwrap_or_else(|_| format!("{}/benches/results/latest.md", env!("CARGO_MANIFEST_DIR")));
    let rt = runtime();
    let ticks = clock_ticks();
    let dir = tempfile::tempdir().expect("temporary directory");

    let quotas = KmsQuotas::aws_defaults();
    let (kube, kube_addr, endpoint, proxy, fleet) = rt.block_on(async {
        eprintln!("fleet bench: starting LocalStack");
        let endpoint = localstack::dedicated_endpoint().await;
        let proxy = KmsProxy::start(ProxyConfig::new(&endpoint, quotas.clone()))
            .await
            .expect("start KMS proxy");
        let kube = MemKube::new();
        kube.seed(
            "kms.keyfleet.dev",
            "v1alpha1",
            "awskmses",
            None,
            serde_json::json!({
                "apiVersion": "kms.keyfleet.dev/v1alpha1",
                "kind": "AwsKms",
                "metadata": {"name": "default"},
                "spec": {"allowedNamespaces": {"from": "All"}}
            }),
        )
        .expect("seed the default AwsKms");
        let (addr, _server) = kube
            .serve_http("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve memkube");
        eprintln!("fleet bench: creating {n} AwsKeys and their Secrets");
        let fleet = fleet::create_fleet(&kube.client(), "default", "fleet", n, 10).await;
        (kube, addr, endpoint, proxy, fleet)
    });
    let objects = fleet.keys.len() + fleet.replicas.len();

    // The operator as it runs in a cluster: the binary with its kubeconfig, AWS environment
    // (KMS through the proxy) and default settings but the resync period; JSON logs to a file.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, MemKube::kubeconfig(kube_addr)).expect("write kubeconfig");
    let port = free_port();
    let mut env = localstack::operator_env(&proxy.url());
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_STS");
    env.push(("AWS_ENDPOINT_URL_STS".into(), endpoint.clone()));
    let started = Instant::now();
    let args = [
        "--cluster-id",
        "bench-cluster",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--resync-seconds",
        &resync_seconds.to_string(),
        "--log-format",
        "json",
    ]
    .map(String::from);
    let operator = Operator::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_keyfleet")),
        &args,
        &kubeconfig,
        &env,
        dir.path().join("keyfleet.log"),
    );
    let pid = operator.pid();
    eprintln!("fleet bench: keyfleet run started (pid {pid})");

    let figures = rt.block_on(async {
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
                "fleet not Ready: {}/{objects}; reasons {:?}; operator log:\n{}",
                v.ready,
                v.reasons,
                operator.log_tail()
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
        let rec_before = reconciles(port);
        let cpu_before = process_cpu(pid, ticks);
        let t = Instant::now();
        tokio::time::sleep(resync * 2).await;
        let cpu = process_cpu(pid, ticks) - cpu_before;
        let steady_reconciles = reconciles(port) - rec_before;
        let steady_seconds = t.elapsed().as_secs_f64();
        let steady = kms_proxy::by_operation(&kms_proxy::delta(&proxy.stats(), &before));
        let steady_calls: BTreeMap<String, u64> = steady
            .iter()
            .map(|(op, c)| (op.clone(), c.received()))
            .collect();
        let steady_writes: u64 = steady_calls
            .iter()
            .filter(|(op, _)| fleet::KMS_WRITES.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum();
        let steady_reads: u64 = steady_calls.values().sum::<u64>() - steady_writes;
        let v = fleet::view(&client, "default").await;
        for (r, c) in &v.reasons {
            *reasons.entry(r.clone()).or_default() += c;
        }
        let pid = pid.to_string();
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
            peak_rss_kib: status_kib(&pid, "VmHWM"),
            rss_kib: status_kib(&pid, "VmRSS"),
            rss_anon_kib: status_kib(&pid, "RssAnon"),
            rss_file_kib: status_kib(&pid, "RssFile"),
            bench_peak_rss_kib: status_kib("self", "VmHWM"),
            steady_reconciles,
            steady_seconds,
            steady_reads_per_reconcile: steady_reads as f64 / steady_reconciles.max(1) as f64,
            steady_writes,
            steady_calls,
            cpu_ms_per_reconcile: cpu * 1000.0 / steady_reconciles.max(1) as f64,
        }
    });
    let tail = operator.log_tail();
    if !operator.stop() {
        eprintln!("fleet bench: keyfleet run did not exit cleanly on SIGTERM; log:\n{tail}");
    }
    let (text, all_met) = report(&figures);
    drop(proxy);
    publish(&text, &out_path, all_met);
}

/// Prints the report, writes it to `out_path` and exits non-zero when a target was missed.
fn publish(text: &str, out_path: &str, all_met: bool) {
    print!("{text}");
    if let Some(dir) = std::path::Path::new(out_path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(out_path, text) {
        Ok(()) => eprintln!("fleet bench: figures written to {out_path}"),
        Err(e) => panic!("cannot write {out_path}: {e}"),
    }
    if !all_met {
        eprintln!("fleet bench: a target was missed");
        std::process::exit(1);
    }
}
