//! Prometheus metrics (prometheus-client): reconciles, KMS calls, key states and readiness,
//! material expiry and renewal, build info, leadership, and the process (on every replica).
//! Label sets are bounded: kinds, results, KMS operation names, key states, Ready reasons (a
//! fixed set of `&'static str`) — and, for the per-key series, one set per managed key, removed
//! with the key and when this replica stops leading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: &'static str,
    /// `ready`, `not_ready` (Ready=False with a reason), `deleted` (cleanup ran) or `error`
    /// (transient failure, retried with backoff).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KmsCallLabels {
    pub operation: String,
    /// `ok`, `throttled` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KmsWaitLabels {
    pub operation: String,
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub kind: &'static str,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The Ready condition's reason: one of keyfleet's fixed reasons.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

type KeyId = (&'static str, String, String);

/// Every metric keyfleet exports, shared by the controller, the KMS clients and `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub kms_calls: Family<KmsCallLabels, Counter>,
    /// KMS requests waiting for a rate-limit slot (`kms::quota::RateLimits`).
    pub kms_requests_waiting: Family<KmsWaitLabels, Gauge>,
    pub keys_by_state: Family<StateLabels, Gauge>,
    /// 1 when the key is Ready, else 0; one series per key, labelled with the reason.
    pub key_ready: Family<ReadyLabels, Gauge>,
    /// When the key's imported material expires (Unix seconds).
    pub material_expiration: Family<KeyLabels, Gauge>,
    /// When keyfleet re-imports rolling-validity material (Unix seconds).
    pub material_renewal: Family<KeyLabels, Gauge>,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// Last known state and Ready reason per key, to recompute `keys_by_state` and to drop a
    /// key's old reason series.
    keys: Mutex<HashMap<KeyId, KeySeries>>,
}

#[derive(Default)]
struct KeySeries {
    state: Option<String>,
    ready_reason: Option<&'static str>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers `metric` under `name` (after the `keyfleet_` prefix) and hands it back for recording.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let ours = registry.sub_registry_with_prefix("keyfleet");
        let reconciles = registered(
            ours,
            "reconciles",
            "Reconciles by kind and result",
            Family::default(),
        );
        let reconcile_duration: Family<KindLabels, Histogram> = registered(
            ours,
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
        );
        let kms_calls = registered(
            ours,
            "kms_calls",
            "KMS API calls by operation and outcome (throttled: ThrottlingException)",
            Family::default(),
        );
        let kms_requests_waiting = registered(
            ours,
            "kms_requests_waiting",
            "KMS requests waiting for a rate-limit slot of their operation in their region \
             (zero while a roll-out's imports wait: the quota is idle)",
            Family::default(),
        );
        let keys_by_state = registered(
            ours,
            "keys",
            "Managed keys by KMS key state",
            Family::default(),
        );
        let key_ready = registered(
            ours,
            "key_ready",
            "1 when the key's Ready condition is True, else 0; reason: the condition's reason",
            Family::default(),
        );
        let material_expiration = registered(
            ours,
            "material_expiration_timestamp_seconds",
            "When the key's imported material expires, Unix time (keys whose material expires)",
            Family::default(),
        );
        let material_renewal = registered(
            ours,
            "material_renewal_timestamp_seconds",
            "When keyfleet re-imports the key's rolling-validity material, Unix time",
            Family::default(),
        );
        let leader = registered(
            ours,
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            Gauge::default(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        ours.register("build_info", "The running keyfleet version", build_info);
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            kms_calls,
            kms_requests_waiting,
            keys_by_state,
            key_ready,
            material_expiration,
            material_renewal,
            leader,
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn shared() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    /// Records one reconcile.
    pub fn reconciled(&self, kind: &'static str, result: &'static str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Records one KMS call.
    pub fn kms_call(&self, operation: &str, outcome: &'static str) {
        self.kms_calls
            .get_or_create(&KmsCallLabels {
                operation: operation.to_string(),
                outcome,
            })
            .inc();
    }

    /// Records a key's KMS state and material expiry (None: no expiry). A state of None means
    /// the key is gone (or not created yet): every series of the key is dropped.
    pub fn key_observed(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        state: Option<&str>,
        expires_at: Option<jiff::Timestamp>,
    ) {
        let labels = key_labels(kind, namespace, name);
        set_timestamp(&self.material_expiration, &labels, expires_at);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let id = (kind, namespace.to_string(), name.to_string());
        match state {
            Some(s) => {
                let entry = keys.entry(id).or_default();
                if entry.state.as_deref() != Some(s) {
                    let old = entry.state.replace(s.to_string());
                    self.count_state(kind, old.as_deref(), -1);
                    self.count_state(kind, Some(s), 1);
                }
            }
            None => {
                if let Some(old) = keys.remove(&id) {
                    self.count_state(kind, old.state.as_deref(), -1);
                    self.drop_ready(&labels, old.ready_reason);
                }
                self.material_renewal.remove(&labels);
            }
        }
    }

    /// Records a key's Ready verdict: one series per key, its old reason's series removed.
    pub fn key_ready(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        ready: bool,
        reason: &'static str,
    ) {
        let labels = key_labels(kind, namespace, name);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = keys
            .entry((kind, namespace.to_string(), name.to_string()))
            .or_default();
        if entry.ready_reason != Some(reason) {
            self.drop_ready(&labels, entry.ready_reason);
            entry.ready_reason = Some(reason);
        }
        self.key_ready
            .get_or_create(&ready_labels(&labels, reason))
            .set(i64::from(ready));
    }

    /// Records when a key's rolling-validity material is re-imported (None: it is not).
    pub fn material_renewal_at(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        at: Option<jiff::Timestamp>,
    ) {
        let labels = key_labels(kind, namespace, name);
        set_timestamp(&self.material_renewal, &labels, at);
    }

    /// Whether this replica leads. Losing the lead drops every per-key series: the new leader
    /// reports them, and stale copies here would contradict it.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        if !leading {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.clear();
            self.key_ready.clear();
            self.material_expiration.clear();
            self.material_renewal.clear();
            self.keys_by_state.clear();
        }
    }

    fn drop_ready(&self, labels: &KeyLabels, reason: Option<&'static str>) {
        if let Some(reason) = reason {
            self.key_ready.remove(&ready_labels(labels, reason));
        }
    }

    /// Adds `delta` to the number of keys of `kind` in `state` (None: no state, nothing to
    /// count); a state no key is in any more has no series. Called with the `keys` lock held, so
    /// that counts and per-key states change together.
    fn count_state(&self, kind: &'static str, state: Option<&str>, delta: i64) {
        let Some(state) = state else { return };
        let labels = StateLabels {
            kind,
            state: state.to_string(),
        };
        // (The family's read guard ends with this statement, before `remove` writes.)
        let before = self.keys_by_state.get_or_create(&labels).inc_by(delta);
        if before + delta <= 0 {
            self.keys_by_state.remove(&labels);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn key_labels(kind: &'static str, namespace: &str, name: &str) -> KeyLabels {
    KeyLabels {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn ready_labels(key: &KeyLabels, reason: &'static str) -> ReadyLabels {
    ReadyLabels {
        kind: key.kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        reason,
    }
}

/// The standard `process_*` metrics of the operator process, read from /proc on each scrape
/// (Linux; elsewhere none are exported). CPU times in /proc are in USER_HZ, which Linux fixes at
/// 100 per second for user space.
#[derive(Debug)]
struct ProcessCollector;

const USER_HZ: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    max_fds: i64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        let mut stats = parse_process(&stat, &status, &boot, &limits)?;
        stats.open_fds = open_fds;
        Some(stats)
    }
}

/// Parses /proc/self/stat, /proc/self/status, /proc/stat and /proc/self/limits.
fn parse_process(stat: &str, status: &str, boot: &str, limits: &str) -> Option<ProcessStats> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Field numbers as in proc(5), which counts pid as 1 and comm as 2: state is 3.
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let ticks = field(14)? + field(15)?;
    let started_after_boot = field(22)? / USER_HZ;
    let boot_time: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let kib = |key: &str| -> Option<i64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        Some(line.split_whitespace().next()?.parse::<i64>().ok()? * 1024)
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds: ticks / USER_HZ,
        start_time_seconds: boot_time + started_after_boot,
        resident_bytes: kib("VmRSS:")?,
        virtual_bytes: kib("VmSize:")?,
        open_fds: 0,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::<f64>::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                p.start_time_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::<f64>::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Sets a key's Unix-time gauge in `family`, or removes the key's series when there is no time.
fn set_timestamp(
    family: &Family<KeyLabels, Gauge>,
    labels: &KeyLabels,
    at: Option<jiff::Timestamp>,
) {
    match at {
        Some(t) => {
            family.get_or_create(labels).set(t.as_second());
        }
        None => {
            family.remove(labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn renders_counters_histograms_and_states() {
        let m = Metrics::new();
        m.reconciled("AwsKey", "ready", Duration::from_millis(12));
        m.kms_call("DescribeKey", "ok");
        m.kms_call("CreateKey", "throttled");
        m.key_observed("AwsKey", "ns", "a", Some("Enabled"), None);
        m.key_observed(
            "AwsKey",
            "ns",
            "b",
            Some("Enabled"),
            Some(ts(1_900_000_000)),
        );
        m.key_observed("AwsKey", "ns", "c", Some("PendingImport"), None);
        let text = m.render();
        for want in [
            r#"keyfleet_reconciles_total{kind="AwsKey",result="ready"} 1"#,
            r#"keyfleet_kms_calls_total{operation="CreateKey",outcome="throttled"} 1"#,
            r#"keyfleet_keys{kind="AwsKey",state="Enabled"} 2"#,
            r#"keyfleet_keys{kind="AwsKey",state="PendingImport"} 1"#,
            "keyfleet_reconcile_duration_seconds_bucket",
            // Absolute, as cert-manager exports it: no refresh needed for it to stay right.
            r#"keyfleet_material_expiration_timestamp_seconds{kind="AwsKey",namespace="ns",name="b"} 1900000000"#,
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // A deleted key leaves every series.
        m.key_observed("AwsKey", "ns", "b", None, None);
        let text = m.render();
        assert!(!text.contains(r#"name="b""#), "{text}");
        assert!(
            text.contains(r#"keyfleet_keys{kind="AwsKey",state="Enabled"} 1"#),
            "{text}"
        );
        // A key that changes state moves from one count to the other; a state no key is in
        // any more has no series.
        m.key_observed("AwsKey", "ns", "c", Some("Enabled"), None);
        m.key_observed("AwsKey", "ns", "c", Some("Enabled"), None);
        let text = m.render();
        assert!(
            text.contains(r#"keyfleet_keys{kind="AwsKey",state="Enabled"} 2"#),
            "{text}"
        );
        assert!(!text.contains("PendingImport"), "{text}");
    }

    #[test]
    fn one_ready_series_per_key_labelled_with_its_current_reason() {
        let m = Metrics::new();
        m.key_observed("AwsKey", "payments", "orders", None, None);
        m.key_ready("AwsKey", "payments", "orders", false, "SecretNotFound");
        m.key_ready("AwsReplicaKey", "payments", "orders-eu", true, "KeyReady");
        let text = m.render();
        assert!(text.contains(
            r#"keyfleet_key_ready{kind="AwsKey",namespace="payments",name="orders",reason="SecretNotFound"} 0"#
        ), "{text}");
        // The reason changes: the old series goes, the new one replaces it.
        m.key_observed("AwsKey", "payments", "orders", Some("Enabled"), None);
        m.key_ready("AwsKey", "payments", "orders", true, "KeyReady");
        let text = m.render();
        assert!(!text.contains("SecretNotFound"), "{text}");
        assert!(text.contains(
            r#"keyfleet_key_ready{kind="AwsKey",namespace="payments",name="orders",reason="KeyReady"} 1"#
        ), "{text}");
        assert_eq!(text.matches(r#"name="orders","#).count(), 1, "{text}");
        // Deleted: gone.
        m.key_observed("AwsKey", "payments", "orders", None, None);
        let text = m.render();
        assert!(!text.contains(r#"name="orders","#), "{text}");
        assert!(text.contains(r#"name="orders-eu""#), "{text}");
    }

    #[test]
    fn renewal_build_info_and_leadership() {
        let m = Metrics::new();
        let text = m.render();
        assert!(
            text.contains(&format!(
                "keyfleet_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("keyfleet_leader 0"), "{text}");

        m.set_leader(true);
        m.key_observed(
            "AwsKey",
            "ns",
            "k",
            Some("Enabled"),
            Some(ts(2_000_000_000)),
        );
        m.material_renewal_at("AwsKey", "ns", "k", Some(ts(1_990_000_000)));
        m.key_ready("AwsKey", "ns", "k", true, "KeyReady");
        let text = m.render();
        assert!(text.contains("keyfleet_leader 1"), "{text}");
        assert!(text.contains(
            r#"keyfleet_material_renewal_timestamp_seconds{kind="AwsKey",namespace="ns",name="k"} 1990000000"#
        ), "{text}");
        m.material_renewal_at("AwsKey", "ns", "k", None);
        assert!(
            !m.render()
                .contains("keyfleet_material_renewal_timestamp_seconds{")
        );

        // A replica that stops leading drops its per-key series: the new leader reports them.
        m.material_renewal_at("AwsKey", "ns", "k", Some(ts(1_990_000_000)));
        m.set_leader(false);
        let text = m.render();
        assert!(text.contains("keyfleet_leader 0"), "{text}");
        assert!(!text.contains(r#"name="k""#), "{text}");
        assert!(!text.contains("keyfleet_keys{"), "{text}");
    }

    #[test]
    fn process_metrics_are_served() {
        let text = Metrics::new().render();
        for name in [
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing:\n{text}"
            );
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1_000_000.0, "resident memory {rss}");
    }

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (keyfleet (run)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 12345 0 0";
        let status = "Name:\tkeyfleet\nVmSize:\t  204800 kB\nVmRSS:\t   30720 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        let p = parse_process(stat, status, boot, limits).unwrap();
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.25,
                start_time_seconds: 1_700_000_123.45,
                resident_bytes: 30720 * 1024,
                virtual_bytes: 204800 * 1024,
                open_fds: 0,
                max_fds: 1_048_576,
            }
        );
        assert_eq!(parse_process("garbage", status, boot, limits), None);
    }
}
