//! Leak scans of a running controller: its logs (captured at debug level whatever RUST_LOG
//! says), every Event, the status of every keyfleet object and the metrics, searched for every
//! piece of material the test generated (`keyfleet_testkit::leak`). [`Operator`] runs the scan
//! when it is dropped at the end of a test, so every controller test that handles material is
//! scanned.
//!
//! [`Operator`]: super::operator::Operator

use std::io;
use std::sync::Mutex;

use keyfleet_testkit::leak::Scanner;
use memkube::MemKube;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What the controller logged in this process.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Whether this process's logs are captured (the first subscriber installed wins).
static CAPTURING: Mutex<bool> = Mutex::new(false);

struct Capture;

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs this process's log subscriber once: RUST_LOG's choice to the test output (e.g.
/// `RUST_LOG=keyfleet=debug` shows the controller's logs in a failing test), and keyfleet's
/// own logs at debug level (others at info) into the capture the scan reads.
pub fn capture_logs() {
    let mut capturing = CAPTURING.lock().unwrap_or_else(|p| p.into_inner());
    if *capturing {
        return;
    }
    let shown = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(EnvFilter::from_default_env());
    let captured = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(|| Capture)
        .with_filter(EnvFilter::new("keyfleet=debug,info"));
    *capturing = tracing_subscriber::registry()
        .with(shown)
        .with(captured)
        .try_init()
        .is_ok();
}

/// The kinds whose status is scanned.
const KINDS: [(&str, &str); 5] = [
    ("kms.keyfleet.dev", "awskeys"),
    ("kms.keyfleet.dev", "awsreplicakeys"),
    ("kms.keyfleet.dev", "awskmses"),
    ("kms.keyfleet.dev", "awskeypolicytemplates"),
    ("kms.keyfleet.dev", "pkcs11tokens"),
];

/// Fails the test when any generated material is in the logs, an Event, a status or `metrics`.
pub fn assert_none_leaked(kube: &MemKube, metrics: &str) {
    let scanner = Scanner::remembered();
    if *CAPTURING.lock().unwrap_or_else(|p| p.into_inner()) {
        let logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
        scanner.assert_clean("the controller's logs", &String::from_utf8_lossy(&logs));
    }
    for event in kube.objects("events.k8s.io", "events") {
        let what = format!("the Event {}", event["metadata"]["name"]);
        scanner.assert_clean(&what, &event.to_string());
    }
    for (group, plural) in KINDS {
        for object in kube.objects(group, plural) {
            let what = format!("the status of {plural}/{}", object["metadata"]["name"]);
            scanner.assert_clean(&what, &object["status"].to_string());
        }
    }
    scanner.assert_clean("the metrics", metrics);
}

/// How many bytes of logs were captured (a scan over none proves nothing).
pub fn captured_log_bytes() -> usize {
    LOGS.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// The captured logs' lines that contain every one of `needles`; panics when this process's
/// logs are not captured (another subscriber was installed first), since a wait on them could
/// never succeed.
pub fn captured_lines_with(needles: &[&str]) -> Vec<String> {
    assert!(
        *CAPTURING.lock().unwrap_or_else(|p| p.into_inner()),
        "the controller's logs are not captured in this process"
    );
    let logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}
