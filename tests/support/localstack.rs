//! LocalStack as the test KMS.
//!
//! [`kms_endpoint`] returns `KEYFLEET_TEST_KMS_ENDPOINT` when it is set (`./scripts/test` starts
//! one LocalStack for the whole run and sets it). Otherwise the first call in a test process
//! runs `scripts/localstack start --parent-pid <this process>`: LocalStack comes up on a free
//! port, and the script's watchdog stops it (whole process group) within about a second of
//! this process exiting. Under nextest every test is its own process, so every test that
//! calls this starts its own LocalStack (about 2 s); set the variable to share one.
//!
//! LocalStack keeps one state per instance for the whole run: tests must not assume an empty
//! account. Name everything with [`unique`] and look up what you created, not "all keys".

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use tokio::sync::OnceCell;

/// Set by `./scripts/test` (or by hand) to an already running LocalStack.
pub const ENDPOINT_ENV: &str = "KEYFLEET_TEST_KMS_ENDPOINT";

/// Static credentials LocalStack accepts (any value works; account id 000000000000).
pub const ACCESS_KEY_ID: &str = "test";
pub const SECRET_ACCESS_KEY: &str = "test";
pub const DEFAULT_REGION: &str = "us-east-1";

static ENDPOINT: OnceCell<String> = OnceCell::const_new();

/// The KMS endpoint URL of this test process's LocalStack, e.g. `http://127.0.0.1:45123`.
pub async fn kms_endpoint() -> String {
    ENDPOINT
        .get_or_init(|| async {
            match std::env::var(ENDPOINT_ENV) {
                Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_owned(),
                _ => tokio::task::spawn_blocking(start_localstack)
                    .await
                    .expect("starting LocalStack panicked"),
            }
        })
        .await
        .clone()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/localstack")
}

/// Runs `scripts/localstack start --parent-pid <pid>` and returns the endpoint it printed.
fn start_localstack() -> String {
    let pid = std::process::id();
    let script = script();
    let out = Command::new(&script)
        .arg("start")
        .arg("--parent-pid")
        .arg(pid.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let endpoint = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{ENDPOINT_ENV}=")))
        .map(|s| s.trim().to_owned());
    match (out.status.success(), endpoint) {
        (true, Some(endpoint)) => {
            eprintln!(
                "keyfleet test support: {ENDPOINT_ENV} not set; started LocalStack at {endpoint} \
                 for test process {pid} (stopped by its watchdog when this process exits)"
            );
            endpoint
        }
        (ok, _) => panic!(
            "`{} start` failed ({}); set {ENDPOINT_ENV} to use a running LocalStack\n\
             --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            script.display(),
            if ok {
                "no endpoint line on stdout".to_owned()
            } else {
                out.status.to_string()
            },
        ),
    }
}

/// A LocalStack of this test process alone (an empty KMS), whatever `KEYFLEET_TEST_KMS_ENDPOINT`
/// says: for tests that scan every key of a region. Stopped when this process exits.
pub async fn dedicated_endpoint() -> String {
    tokio::task::spawn_blocking(start_localstack)
        .await
        .expect("starting LocalStack panicked")
}

/// A KMS client for `region` against the test LocalStack, with static test credentials. It
/// reads no environment or profile, so a developer's AWS settings cannot leak into tests.
pub async fn kms_client(region: &str) -> aws_sdk_kms::Client {
    kms_client_at(&kms_endpoint().await, region)
}

/// A KMS client for `region` against the LocalStack at `endpoint`.
pub fn kms_client_at(endpoint: &str, region: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "keyfleet-test",
        ))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// The SDK configuration of the operator's KMS clients against the LocalStack at `endpoint`:
/// the test region and static test credentials.
pub fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let credentials =
        aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "keyfleet-test",
        ));
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(DEFAULT_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .build()
}

/// Environment for running the operator itself (as a child process or through
/// `aws_config::load_defaults`) against `endpoint`: the standard `AWS_ENDPOINT_URL_KMS`
/// plus static test credentials and a default region. IMDS is disabled so the credential
/// chain never waits for an instance-metadata endpoint.
pub fn operator_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL_KMS", endpoint),
        ("AWS_ENDPOINT_URL_STS", endpoint),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", DEFAULT_REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A name no other test (in this process, a parallel process or an earlier run against the
/// same LocalStack) uses: `{prefix}-{pid}-{micros since epoch, base 36}-{counter}`. Only
/// `[A-Za-z0-9_-]` beyond `prefix`, so it is valid in alias names (`alias/` + name), tags and
/// Kubernetes names (when `prefix` is lower-case).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    format!("{prefix}-{}-{}-{n}", std::process::id(), base36(micros))
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}
