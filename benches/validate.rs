//! Benchmark of `keyfleet validate` on a generated bundle of 1,000 manifests (20 AwsKms, 490
//! AwsKeys of every key family, 490 Secrets holding real material): the library (parse + every
//! check, in memory) and the release binary end to end (reading 50 files from a directory).
//!
//! Run: `cargo bench --bench validate`. Prints the figures; exits non-zero if the bundle is not
//! clean or a run takes a second or more.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use keyfleet::api::KeySpec;
use keyfleet::manifest::Source;
use keyfleet::validate::{Options, Validator};
use keyfleet_testkit::material::generate_secret_value;

const MANIFESTS: usize = 1_000;
const KMS: usize = 20;
const FILES: usize = 50;
const ROUNDS: usize = 7;

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

/// The documents of the bundle, each a YAML text.
fn bundle() -> Vec<String> {
    let specs = [
        KeySpec::SymmetricDefault,
        KeySpec::Hmac256,
        KeySpec::EccNistP256,
        KeySpec::Rsa2048,
        KeySpec::EccNistP384,
    ];
    // Generating RSA keys is slow: one value per spec, reused by every Secret of that spec.
    let values: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| generate_secret_value(*s).to_vec())
        .collect();
    let mut docs = Vec::with_capacity(MANIFESTS);
    for i in 0..KMS {
        docs.push(format!(
            "apiVersion: kms.keyfleet.dev/v1alpha1\nkind: AwsKms\nmetadata:\n  name: conn-{i}\nspec:\n  allowedNamespaces: {{from: All}}\n  roleArn: arn:aws:iam::{:012}:role/keyfleet\n  regions: [eu-west-1, us-east-1]\n",
            100_000_000_000u64 + i as u64
        ));
    }
    let keys = (MANIFESTS - KMS) / 2;
    for i in 0..keys {
        let spec = specs[i % specs.len()];
        let usage = match spec {
            KeySpec::Rsa2048 => "\n  keyUsage: SIGN_VERIFY",
            _ => "",
        };
        let ns = format!("team-{}", i % 10);
        docs.push(format!(
            "apiVersion: kms.keyfleet.dev/v1alpha1\nkind: AwsKey\nmetadata:\n  name: key-{i}\n  namespace: {ns}\nspec:\n  kmsRef:\n    name: conn-{}\n  region: eu-west-1\n  keySpec: {}{usage}\n  alias: alias/app-{i}\n  description: key {i}\n  tags:\n    team: {ns}\n    cost-center: cc-{i}\n  keyMaterial:\n    secretRef:\n      name: key-{i}-material\n      key: material\n",
            i % KMS,
            spec.as_str()
        ));
        let value = &values[i % specs.len()];
        let secret = match spec {
            KeySpec::SymmetricDefault | KeySpec::Hmac256 => format!(
                "data:\n  material: {}\n",
                base64::engine::general_purpose::STANDARD.encode(value)
            ),
            _ => format!(
                "stringData:\n  material: |\n{}",
                indent(&String::from_utf8_lossy(value))
            ),
        };
        docs.push(format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: key-{i}-material\n  namespace: {ns}\ntype: Opaque\n{secret}"
        ));
    }
    assert_eq!(docs.len(), MANIFESTS);
    docs
}

fn files(docs: &[String]) -> Vec<Source> {
    let per_file = docs.len().div_ceil(FILES);
    docs.chunks(per_file)
        .enumerate()
        .map(|(i, chunk)| {
            let mut text = String::new();
            for doc in chunk {
                let _ = write!(text, "---\n{doc}");
            }
            Source::new(format!("manifests/{i:02}.yaml"), text)
        })
        .collect()
}

fn stats(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let docs = bundle();
    let sources = files(&docs);
    let bytes: usize = sources.iter().map(|s| s.text.len()).sum();
    let linter = Validator::new(Options::default())?;

    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let report = linter.run(&sources);
        times.push(start.elapsed());
        assert!(
            report.findings.is_empty() && report.input_errors.is_empty(),
            "the benchmark bundle must be clean: {:?}",
            report.findings.first().or(None)
        );
        assert_eq!(
            report.summary.object_count(),
            MANIFESTS - (MANIFESTS - KMS) / 2
        );
    }
    let (best, median) = stats(times);
    println!(
        "library: {MANIFESTS} manifests ({} KiB, {FILES} files) validated in {} (median of {ROUNDS}; best {})",
        bytes / 1024,
        ms(median),
        ms(best)
    );

    let start = Instant::now();
    let _ = Validator::new(Options::default());
    println!(
        "library: Validator::new (compiling CRD schemas) {}",
        ms(start.elapsed())
    );

    // The release binary on a directory, end to end (process start, reading files, output).
    let dir = tempfile::tempdir()?;
    for (i, source) in sources.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:02}.yaml")), &source.text)?;
    }
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
            .args(["validate", "-f"])
            .arg(dir.path())
            .output()?;
        times.push(start.elapsed());
        assert!(
            out.status.success(),
            "keyfleet validate failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let (best, median) = stats(times);
    println!(
        "binary:  keyfleet validate -f <dir of {FILES} files, {MANIFESTS} manifests>: {} (median of {ROUNDS}; best {})",
        ms(median),
        ms(best)
    );
    assert!(
        median < Duration::from_secs(1),
        "validating {MANIFESTS} manifests took {median:?}"
    );
    Ok(())
}
