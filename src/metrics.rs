//! Prometheus metrics (prometheus-client): reconciles, KMS calls, key states, material expiry.
//! Label sets are bounded: kinds, results, KMS operation names, key states — and, for the
//! expiry gauge, one series per managed key (removed with the key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Every metric keyfleet exports, shared by the controller, the KMS clients and `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub kms_calls: Family<KmsCallLabels, Counter>,
    pub keys_by_state: Family<StateLabels, Gauge>,
    pub material_expiry_seconds: Family<KeyLabels, Gauge>,
    /// Last known state per key, to recompute `keys_by_state` and drop deleted keys.
    states: Mutex<HashMap<(&'static str, String, String), String>>,
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

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyfleet");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let kms_calls = Family::<KmsCallLabels, Counter>::default();
        registry.register(
            "kms_calls",
            "KMS API calls by operation and outcome (throttled: ThrottlingException)",
            kms_calls.clone(),
        );
        let keys_by_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "keys",
            "Managed keys by KMS key state",
            keys_by_state.clone(),
        );
        let material_expiry_seconds = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "material_expiry_seconds",
            "Seconds until the imported key material expires (only keys with an expiry)",
            material_expiry_seconds.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            kms_calls,
            keys_by_state,
            material_expiry_seconds,
            states: Mutex::new(HashMap::new()),
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

    /// Records a key's KMS state and material expiry (None: no expiry, or the key is gone).
    pub fn key_observed(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        state: Option<&str>,
        expires_at: Option<jiff::Timestamp>,
    ) {
        self.key_observed_at(
            kind,
            namespace,
            name,
            state,
            expires_at,
            jiff::Timestamp::now(),
        );
    }

    /// [`Metrics::key_observed`] as of `now` (the controller's clock): seconds until expiry.
    pub fn key_observed_at(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        state: Option<&str>,
        expires_at: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) {
        let id = (kind, namespace.to_string(), name.to_string());
        let labels = KeyLabels {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        match expires_at {
            Some(t) => {
                let left = t.as_second() - now.as_second();
                self.material_expiry_seconds
                    .get_or_create(&labels)
                    .set(left);
            }
            None => {
                self.material_expiry_seconds.remove(&labels);
            }
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match state {
            Some(s) => {
                states.insert(id, s.to_string());
            }
            None => {
                states.remove(&id);
            }
        }
        let mut counts: HashMap<(&'static str, String), i64> = HashMap::new();
        for ((k, _, _), s) in states.iter() {
            *counts.entry((k, s.clone())).or_default() += 1;
        }
        self.keys_by_state.clear();
        for ((kind, state), n) in counts {
            self.keys_by_state
                .get_or_create(&StateLabels { kind, state })
                .set(n);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)),
        );
        m.key_observed("AwsKey", "ns", "c", Some("PendingImport"), None);
        let text = m.render();
        assert!(
            text.contains(r#"keyfleet_reconciles_total{kind="AwsKey",result="ready"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keyfleet_kms_calls_total{operation="CreateKey",outcome="throttled"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"keyfleet_keys{kind="AwsKey",state="Enabled"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyfleet_keys{kind="AwsKey",state="PendingImport"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("keyfleet_reconcile_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keyfleet_material_expiry_seconds{kind="AwsKey",namespace="ns",name="b"} 3"#
            ),
            "{text}"
        );
        // A deleted key leaves every series.
        m.key_observed("AwsKey", "ns", "b", None, None);
        let text = m.render();
        assert!(!text.contains(r#"name="b""#), "{text}");
        assert!(
            text.contains(r#"keyfleet_keys{kind="AwsKey",state="Enabled"} 1"#),
            "{text}"
        );
    }
}
