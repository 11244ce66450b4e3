//! `keyfleet-playground` (crates/playground, what `./scripts/run` runs without a cluster) as a
//! process: the examples apply cleanly and every key becomes Ready against LocalStack, and no
//! example key material reaches the output.

mod support;

use std::process::Command;

use support::localstack::{kms_endpoint, operator_env};

#[tokio::test]
async fn the_examples_become_ready_in_the_playground() {
    let endpoint = kms_endpoint().await;
    let out = Command::new(playground_binary())
        .arg("--manifests")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .envs(operator_env(&endpoint))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "playground failed:\n{stdout}\n{stderr}"
    );
    let keys = [
        "orders",
        "invoice-signing",
        "webhook-hmac",
        "ledger",
        "archive",
    ];
    for key in keys {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(key))
            .unwrap_or_else(|| panic!("{key} missing:\n{stdout}"));
        assert!(
            line.contains("Enabled") && line.contains("True") && line.contains("arn:aws:kms:"),
            "{line}"
        );
    }
    assert!(
        stdout.contains(&format!("{n} of {n} AwsKeys Ready", n = keys.len())),
        "{stdout}"
    );

    // The example Secrets' values never appear in what the operator prints.
    for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let source = keyfleet::manifest::Source::new(path.display().to_string(), text);
        for doc in source.documents().unwrap() {
            if doc["kind"] != "Secret" {
                continue;
            }
            for value in doc["stringData"].as_object().unwrap().values() {
                keyfleet_testkit::leak::remember(value.as_str().unwrap().as_bytes());
            }
        }
    }
    // In every form (raw, hex, Debug, Base64, PEM lines), not one line of each.
    assert!(
        keyfleet_testkit::leak::remembered() > 0,
        "no example Secret read"
    );
    keyfleet_testkit::leak::assert_no_leak("the playground's stdout", &stdout);
    keyfleet_testkit::leak::assert_no_leak("the playground's stderr", &stderr);
}

/// The `keyfleet-playground` binary, built (or found up to date) by cargo. It is another
/// package's binary, so cargo does not hand it to this test as `CARGO_BIN_EXE_*`.
fn playground_binary() -> std::path::PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--message-format=json",
            "-p",
            "keyfleet-playground",
            "--bin",
            "keyfleet-playground",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "building it failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "keyfleet-playground")
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo reported no keyfleet-playground executable")
}
