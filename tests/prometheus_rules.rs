//! The chart's alerts (templates/prometheusrule.yaml) checked by Prometheus's own tool:
//! `promtool check rules` on the rule group helm renders, and `promtool test rules` with the
//! unit tests in tests/fixtures/prometheus/alerts.test.yaml — at least one firing case per
//! alert. No Prometheus server runs here: promtool evaluates the rules on the synthetic series
//! of the test file with Prometheus's rule engine, which is what a server would do with the
//! scraped ones.
//!
//! promtool comes from `KEYFLEET_PROMTOOL`, else PATH (Debian's `prometheus` package, which
//! `scripts/test` installs); helm as in tests/helm_chart.rs. Missing tools skip the tests on a
//! developer machine and fail them under `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "support/tools.rs"]
mod tools;

use tools::{output_text, run_ok};

const TEST_FILE: &str = "tests/fixtures/prometheus/alerts.test.yaml";

fn promtool(test: &str) -> Option<PathBuf> {
    tools::find(
        test,
        "KEYFLEET_PROMTOOL",
        &["promtool"],
        "install Debian's prometheus package (scripts/test does)",
    )
}

fn helm(test: &str) -> Option<PathBuf> {
    tools::find(
        test,
        "KEYFLEET_HELM",
        &[".tools/bin/helm"],
        "run scripts/install-helm",
    )
}

/// The chart's PrometheusRule rendered with default values: its `spec` (a Prometheus rule
/// file: `groups:`).
fn rendered_rule_file(helm: &Path) -> Value {
    let home = tempfile::tempdir().unwrap();
    let chart = tools::root().join("charts/keyfleet");
    let mut template = Command::new(helm);
    template
        .args(["template", "kf", chart.to_str().unwrap()])
        .args(["--namespace", "keyfleet-system"])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    let out = run_ok(&mut template, "helm template");
    let doc: Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kind"], "PrometheusRule");
    doc["spec"].clone()
}

fn alert_names(rules: &Value) -> Vec<String> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// A temporary directory holding the rendered rules as `keyfleet-rules.yaml` (the name the
/// test file's `rule_files` uses) and a copy of the test file.
fn workdir(rules: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keyfleet-rules.yaml"),
        serde_saphyr::to_string(rules).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        tools::root().join(TEST_FILE),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    dir
}

/// promtool and the rendered rule file, for a test that needs both tools (None: skipped).
fn promtool_and_rules(test: &str) -> Option<(PathBuf, Value)> {
    let (Some(promtool), Some(helm)) = (promtool(test), helm(test)) else {
        return None;
    };
    Some((promtool, rendered_rule_file(&helm)))
}

/// `promtool check rules` (`command` "check") or `promtool test rules` ("test") on `rules` in a
/// fresh [`workdir`]: whether it succeeded, and its output.
fn run_promtool(promtool: &Path, rules: &Value, command: &str) -> (bool, String) {
    let dir = workdir(rules);
    let file = match command {
        "check" => "keyfleet-rules.yaml",
        _ => "alerts.test.yaml",
    };
    let out = Command::new(promtool)
        .args([command, "rules", file])
        .current_dir(dir.path())
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

#[test]
fn promtool_checks_the_rendered_rules() {
    let Some((promtool, rules)) = promtool_and_rules("promtool_checks_the_rendered_rules") else {
        return;
    };
    let (ok, text) = run_promtool(&promtool, &rules, "check");
    assert!(ok, "promtool check rules:\n{text}");
    let n = alert_names(&rules).len();
    assert!(
        text.contains(&format!("SUCCESS: {n} rules found")),
        "{text}"
    );
}

#[test]
fn promtool_unit_tests_pass_for_every_alert() {
    let Some((promtool, rules)) = promtool_and_rules("promtool_unit_tests_pass_for_every_alert")
    else {
        return;
    };

    // Every alert has a unit test in which it fires, and one in which it stays quiet.
    let tests: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(tools::root().join(TEST_FILE)).unwrap())
            .unwrap();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_string();
            match check["exp_alerts"].as_array() {
                Some(alerts) if !alerts.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let alerts: BTreeSet<String> = alert_names(&rules).into_iter().collect();
    assert_eq!(fires, alerts, "alerts with a firing unit test");
    assert_eq!(quiet, alerts, "alerts with a quiet unit test");

    let (ok, text) = run_promtool(&promtool, &rules, "test");
    assert!(ok, "promtool test rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The unit tests can fail: with a threshold moved, promtool reports the alerts that no longer
/// fire as the test file expects.
#[test]
fn promtool_unit_tests_catch_a_changed_rule() {
    let Some((promtool, mut rules)) =
        promtool_and_rules("promtool_unit_tests_catch_a_changed_rule")
    else {
        return;
    };
    for group in rules["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            if rule["alert"] == "KeyfleetKeyNotReady" {
                rule["for"] = Value::from("1h");
            }
        }
    }
    let (ok, text) = run_promtool(&promtool, &rules, "test");
    assert!(!ok, "a changed rule must fail:\n{text}");
    assert!(text.contains("alertname: KeyfleetKeyNotReady"), "{text}");
    assert!(!text.contains("alertname: KeyfleetNoLeader"), "{text}");
}

/// Metric names of a text exposition, histogram series folded into their family.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .map(|n| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(family) = n.strip_suffix(suffix)
                    && family.ends_with("_seconds")
                {
                    return family.to_string();
                }
            }
            n
        })
        .collect()
}

/// Names in `text` that look like keyfleet's or the process metrics.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["keyfleet_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .map_or(name.clone(), str::to_string);
            names.insert(name);
        }
    }
    names
}

/// What the operator exports, what docs/metrics.md documents, and what the alerts and the
/// dashboard query are the same names: an alert on a metric that does not exist never fires.
#[test]
fn alerts_dashboard_and_docs_use_the_exported_metrics() {
    let m = keyfleet::metrics::Metrics::new();
    m.set_leader(true);
    m.reconciled("AwsKey", "ready", std::time::Duration::from_millis(5));
    m.kms_call("DescribeKey", "ok");
    m.kms_requests_waiting
        .get_or_create(&keyfleet::metrics::KmsWaitLabels {
            operation: "GetParametersForImport".into(),
            region: "eu-west-1".into(),
        })
        .set(1);
    let t = jiff::Timestamp::from_second(2_000_000_000).unwrap();
    m.key_observed("AwsKey", "ns", "k", Some("Enabled"), Some(t));
    m.material_renewal_at("AwsKey", "ns", "k", Some(t));
    m.key_ready("AwsKey", "ns", "k", true, "KeyReady");
    let exported = sample_names(&m.render());
    assert!(
        exported.contains("process_resident_memory_bytes"),
        "{exported:?}"
    );

    let docs = std::fs::read_to_string(tools::root().join("docs/metrics.md")).unwrap();
    let table: String = docs
        .lines()
        .skip_while(|l| !l.starts_with("| metric |"))
        .take_while(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let documented = metric_names_in(&table);
    assert_eq!(
        documented, exported,
        "docs/metrics.md lists what /metrics serves"
    );

    let chart = tools::root().join("charts/keyfleet");
    let rules = std::fs::read_to_string(chart.join("templates/prometheusrule.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(chart.join("files/grafana/keyfleet.json")).unwrap();
    for (what, text) in [("the alerts", rules), ("the dashboard", dashboard)] {
        let used = metric_names_in(&text);
        assert!(!used.is_empty());
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} query metrics nobody exports: {unknown:?}"
        );
    }
}
