//! `keyfleet run` as a real process: its kubeconfig points at the in-memory API served over
//! HTTP, its AWS environment at LocalStack. Keys become Ready; /healthz, /readyz and /metrics
//! answer and the metrics parse; SIGTERM stops it cleanly; its JSON logs carry no material.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyfleet::api::KeySpec;
use keyfleet_testkit::material::generate_secret_value;
use kube::Api;
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_endpoint, operator_env, unique};
use support::operator::*;

/// The port `keyfleet run --http-addr 127.0.0.1:0` bound, from its JSON log line (no port is
/// picked here and released for the child to race for).
fn bound_port(logs: &Mutex<String>) -> Option<u16> {
    let logs = logs.lock().unwrap();
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| {
            let addr = l["fields"]["addr"].as_str()?;
            addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
        })
}

/// A plain HTTP/1.0 GET: (status code, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Prometheus text → {"name{labels}": value}.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyfleet_run_reconciles_serves_health_and_metrics_and_stops_on_sigterm() {
    let kube = MemKube::new();
    seed_default_connection(&kube);
    let (addr, server) = kube
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, MemKube::kubeconfig(addr)).unwrap();
    let endpoint = kms_endpoint().await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .args([
            "run",
            "--cluster-id",
            "process-test",
            "--http-addr",
            "127.0.0.1:0",
            "--resync-seconds",
            "10",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .envs(operator_env(&endpoint))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Drain the pipes while the process runs, or it blocks once they fill.
    // Lines are kept as they come: the bound port is read from them while the process runs.
    let drain = |pipe: Box<dyn Read + Send>, into: Arc<Mutex<String>>| {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = into.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
            into.lock().unwrap().clone()
        })
    };
    let (out, err) = (
        Arc::new(Mutex::new(String::new())),
        Arc::new(Mutex::new(String::new())),
    );
    let stdout = drain(Box::new(child.stdout.take().unwrap()), out.clone());
    let stderr = drain(Box::new(child.stderr.take().unwrap()), err.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Some(port) = bound_port(&out).or_else(|| bound_port(&err)) {
            break port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "keyfleet run never said where it serves: {}{}",
            out.lock().unwrap(),
            err.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let client = kube.client();
    let api: Api<keyfleet::api::AwsKey> = Api::namespaced(client.clone(), "team-a");
    let name = unique("process");
    let material = generate_secret_value(KeySpec::Hmac256);
    create_secret(&client, "team-a", &name, "material", &material).await;
    create_key(
        &api,
        &aws_key(&name, DEFAULT_REGION, &name, json!({"keySpec": "HMAC_256"})),
    )
    .await;
    wait_ready(&api, &name).await;

    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get(port, "/readyz").map(|r| r.0) != Some(200) {
        if std::time::Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let logs = stdout.join().unwrap() + &stderr.join().unwrap();
            panic!(
                "/readyz never became ready: {:?}\n{logs}",
                get(port, "/readyz")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, text) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    let value = |series: &str| {
        m.get(series)
            .copied()
            .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
    };
    assert!(value(r#"keyfleet_reconciles_total{kind="AwsKey",result="ready"}"#) >= 1.0);
    assert_eq!(
        value(r#"keyfleet_kms_calls_total{operation="CreateKey",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        value(r#"keyfleet_kms_calls_total{operation="ImportKeyMaterial",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        value(r#"keyfleet_keys{kind="AwsKey",state="Enabled"}"#),
        1.0
    );
    assert!(value(r#"keyfleet_reconcile_duration_seconds_count{kind="AwsKey"}"#) >= 1.0);
    // The per-key ready metric, labelled with the reason; the only other per-key families are
    // material expiry and renewal (none here: this key's material does not expire).
    assert_eq!(
        value(&format!(
            r#"keyfleet_key_ready{{kind="AwsKey",namespace="team-a",name="{name}",reason="KeyReady"}}"#
        )),
        1.0
    );
    assert!(
        m.keys().all(|k| !k.contains(&name)
            || k.starts_with("keyfleet_key_ready{")
            || k.starts_with("keyfleet_material_expiration_timestamp_seconds{")
            || k.starts_with("keyfleet_material_renewal_timestamp_seconds{")),
        "a per-key series outside the per-key families"
    );
    // Without leader election this replica leads; build info and the process are exported.
    assert_eq!(value("keyfleet_leader"), 1.0);
    assert_eq!(
        value(&format!(
            r#"keyfleet_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_cpu_seconds_total") > 0.0);

    // SIGTERM: in-flight reconciles finish, the process exits 0.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    server.abort();
    let logs = stdout.join().unwrap() + &stderr.join().unwrap();
    assert!(status.success(), "exit {status:?}; logs:\n{logs}");
    assert!(
        logs.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "logs are not JSON lines:\n{logs}"
    );
    assert!(logs.contains("controller stopped"), "{logs}");
    // Every form of every material the test generated (raw, hex, Debug, Base64, 8-byte
    // windows), not one slice.
    assert!(keyfleet_testkit::leak::remembered() > 0);
    keyfleet_testkit::leak::assert_no_leak("the operator's logs", &logs);
}
