//! `keyfleet validate` run as a process on the corpus under `tests/fixtures/validate/`.
//!
//! The bad corpus (`bad/`) marks every expected finding in place: a line ending in
//! `# expect: FIELD: TEXT` must get a finding at that very line, on that field, whose message
//! contains TEXT — and every finding must be expected. Adding a case is adding a document and
//! its marker.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

const FIXTURES: &str = "tests/fixtures/validate";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `keyfleet ARGS` in the crate's directory (so reported paths are the fixture paths).
fn keyfleet(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyfleet starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input)
            .expect("stdin is written");
    }
    let out = child.wait_with_output().expect("keyfleet runs");
    Run {
        code: out.status.code().expect("keyfleet exits with a code"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn validate(args: &[&str]) -> Run {
    let mut all = vec!["validate"];
    all.extend_from_slice(args);
    keyfleet(&all, None)
}

fn fixture(rel: &str) -> String {
    format!("{FIXTURES}/{rel}")
}

/// A finding as printed: `file:line: Kind/namespace/name: field: message`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Printed {
    file: String,
    line: usize,
    object: String,
    field: String,
    message: String,
}

fn parse_line(line: &str) -> Option<Printed> {
    let (location, rest) = line.split_once(": ")?;
    let (file, number) = location.rsplit_once(':')?;
    let (object, rest) = rest.split_once(": ")?;
    let (field, message) = rest.split_once(": ")?;
    Some(Printed {
        file: file.to_string(),
        line: number.parse().ok()?,
        object: object.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    })
}

/// Every finding line of a text run; the last line must be the summary.
fn printed(run: &Run) -> Vec<Printed> {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let (summary, findings) = lines.split_last().expect("some output");
    assert!(
        summary.starts_with("keyfleet validate: "),
        "the last line is the summary: {summary:?}"
    );
    findings
        .iter()
        .map(|l| parse_line(l).unwrap_or_else(|| panic!("not a finding line: {l:?}")))
        .collect()
}

#[derive(Debug)]
struct Expectation {
    file: String,
    line: usize,
    field: String,
    text: String,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The `# expect: FIELD: TEXT` markers of every file under `rel`.
fn expectations(rel: &str) -> Vec<Expectation> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    yaml_files(&root.join(rel), &mut files);
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("fixture is readable");
        let file = path
            .strip_prefix(root)
            .expect("under the crate")
            .display()
            .to_string();
        for (i, line) in text.lines().enumerate() {
            for marker in line.split("# expect: ").skip(1) {
                let (field, text) = marker
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("{file}:{}: marker without FIELD: TEXT", i + 1));
                out.push(Expectation {
                    file: file.clone(),
                    line: i + 1,
                    field: field.trim().to_string(),
                    text: text.trim().to_string(),
                });
            }
        }
    }
    out
}

#[test]
fn bad_corpus_reports_every_expected_finding_at_its_line_and_nothing_else() {
    let bad = fixture("bad");
    let run = validate(&["-f", &bad]);
    assert_eq!(run.code, 1, "findings exit 1\n{}{}", run.stdout, run.stderr);
    let findings = printed(&run);
    let expected = expectations(&bad);

    let mut unmatched = Vec::new();
    let mut used = vec![false; findings.len()];
    for e in &expected {
        let hit = findings.iter().enumerate().find(|(i, f)| {
            !used[*i]
                && f.file == e.file
                && f.line == e.line
                && f.field == e.field
                && f.message.contains(&e.text)
        });
        match hit {
            Some((i, _)) => used[i] = true,
            None => unmatched.push(e),
        }
    }
    let unexpected: Vec<&Printed> = findings
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(f, _)| f)
        .collect();
    assert!(
        unmatched.is_empty() && unexpected.is_empty(),
        "expected but not reported (file, line, field, text):\n{unmatched:#?}\n\
         reported but not expected:\n{unexpected:#?}\nfull output:\n{}",
        run.stdout
    );

    // At least 30 cases, spread over every kind the corpus covers.
    assert!(expected.len() >= 30, "only {} bad cases", expected.len());
    let count = |kind: &str| {
        findings
            .iter()
            .filter(|f| f.object.starts_with(&format!("{kind}/")))
            .count()
    };
    assert!(count("AwsKey") >= 30, "AwsKey cases: {}", count("AwsKey"));
    assert!(count("AwsKms") >= 8, "AwsKms cases: {}", count("AwsKms"));
    assert!(count("Secret") >= 12, "Secret cases: {}", count("Secret"));

    let summary = run.stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!(
            "keyfleet validate: {} findings in ",
            findings.len()
        )),
        "{summary}"
    );
}

#[test]
fn good_corpus_is_clean() {
    let run = validate(&["-f", &fixture("good")]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "keyfleet validate: no findings; checked 12 keyfleet objects (8 AwsKey, 3 AwsKms, 1 \
         Pkcs11Token) in 7 files (20 documents, 6 Secrets)\n"
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn a_directory_is_searched_recursively_for_yaml_files_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("overlays/prod");
    std::fs::create_dir_all(&nested).expect("mkdir");
    let bad_key = "apiVersion: kms.keyfleet.dev/v1alpha1\nkind: AwsKey\nmetadata:\n  name: k\n\
                   spec:\n  region: eu-west-1\n  keySpec: RSA_2048\n  keyMaterial:\n    \
                   secretRef: {name: m, key: k}\n";
    std::fs::write(nested.join("key.yml"), bad_key).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "keySpec: nonsense: [").expect("write");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [overlays/prod]\n",
    )
    .expect("write");
    let root = dir.path().display().to_string();
    let run = validate(&["-f", &root]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let findings = printed(&run);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(
        findings[0],
        Printed {
            file: format!("{root}/overlays/prod/key.yml"),
            line: 5,
            object: "AwsKey/default/k".into(),
            field: "spec.keyUsage".into(),
            message: "keyUsage is required for RSA keys: ENCRYPT_DECRYPT or SIGN_VERIFY".into(),
        }
    );
    assert!(run.stdout.contains("in 2 files"), "{}", run.stdout);
}

#[test]
fn stdin_is_read_like_piped_kustomize_output() {
    // Several files concatenated into one stream, as `kustomize build` prints them.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stream = String::new();
    for f in ["good/connections.yaml", "good/keys/symmetric.yaml"] {
        stream.push_str("---\n");
        stream.push_str(&std::fs::read_to_string(root.join(fixture(f))).expect("fixture"));
    }
    let clean = keyfleet(&["validate", "-f", "-"], Some(stream.as_bytes()));
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(
        clean
            .stdout
            .contains("checked 5 keyfleet objects (2 AwsKey, 3 AwsKms) in 1 file"),
        "{}",
        clean.stdout
    );

    stream.push_str(
        "---\napiVersion: kms.keyfleet.dev/v1alpha1\nkind: AwsKey\nmetadata:\n  name: late\n  \
         namespace: payments\nspec:\n  region: eu-west-1\n  keySpec: HMAC_256\n  keyUsage: \
         SIGN_VERIFY\n  keyMaterial:\n    secretRef: {name: m, key: k}\n",
    );
    let line = stream
        .lines()
        .position(|l| l.contains("keyUsage: SIGN_VERIFY"))
        .expect("line")
        + 1;
    let bad = keyfleet(&["validate", "-f", "-"], Some(stream.as_bytes()));
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    let findings = printed(&bad);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].file, "<stdin>");
    assert_eq!(findings[0].line, line);
    assert_eq!(findings[0].object, "AwsKey/payments/late");
    assert_eq!(findings[0].field, "spec.keyUsage");
    assert!(
        findings[0]
            .message
            .starts_with("keyUsage does not fit keySpec")
    );
}

#[test]
fn json_output_carries_the_same_findings_as_text() {
    let bad = fixture("bad");
    let text = validate(&["-f", &bad]);
    let json = validate(&["-f", &bad, "--output", "json"]);
    assert_eq!(json.code, 1, "{}", json.stderr);
    let doc: Value = serde_json::from_str(&json.stdout).expect("stdout is one JSON document");

    let findings = doc["findings"].as_array().expect("findings");
    let from_json: BTreeSet<Printed> = findings
        .iter()
        .map(|f| {
            let object = match f.get("namespace").and_then(Value::as_str) {
                Some(ns) => format!(
                    "{}/{ns}/{}",
                    f["kind"].as_str().unwrap(),
                    f["name"].as_str().unwrap()
                ),
                None => format!(
                    "{}/{}",
                    f["kind"].as_str().unwrap(),
                    f["name"].as_str().unwrap()
                ),
            };
            Printed {
                file: f["file"].as_str().expect("file").into(),
                line: f["line"].as_u64().expect("line") as usize,
                object,
                field: f["field"].as_str().expect("field").into(),
                message: f["message"].as_str().expect("message").into(),
            }
        })
        .collect();
    let from_text: BTreeSet<Printed> = printed(&text).into_iter().collect();
    assert_eq!(from_json, from_text);
    assert_eq!(
        doc["summary"]["findings"].as_u64(),
        Some(findings.len() as u64)
    );
    assert_eq!(doc["inputErrors"], serde_json::json!([]));

    // Machine-readable extras: which check and a stable reason.
    let reasons: BTreeSet<(&str, &str)> = findings
        .iter()
        .map(|f| (f["check"].as_str().unwrap(), f["reason"].as_str().unwrap()))
        .collect();
    for pair in [
        ("schema", "UnknownField"),
        ("cel", "FieldValueRequired"),
        ("semantic", "ValidToInPast"),
        ("material", "MaterialWrongLength"),
        ("reference", "DuplicateAlias"),
    ] {
        assert!(reasons.contains(&pair), "no {pair:?} in {reasons:?}");
    }

    let clean = validate(&["-f", &fixture("good"), "-o", "json"]);
    assert_eq!(clean.code, 0);
    let doc: Value = serde_json::from_str(&clean.stdout).expect("JSON");
    assert_eq!(doc["findings"], serde_json::json!([]));
    assert_eq!(doc["summary"]["objects"]["AwsKey"], 8);
    assert_eq!(doc["summary"]["objects"]["Pkcs11Token"], 1);
}

#[test]
fn yaml_syntax_error_exits_2_with_file_and_line() {
    let broken = fixture("syntax/broken.yaml");
    // Even next to valid input, nothing is checked.
    let run = validate(&["-f", &fixture("good"), "-f", &broken]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "{broken}:13:12: YAML syntax error: mapping values are not allowed in this context\n\
             keyfleet validate: 1 unusable input; nothing was checked\n"
        )
    );

    let json = validate(&["-f", &broken, "-o", "json"]);
    assert_eq!(json.code, 2);
    let doc: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(
        doc["inputErrors"],
        serde_json::json!([{"file": broken, "line": 13, "column": 12,
            "message": "YAML syntax error: mapping values are not allowed in this context"}])
    );
}

#[test]
fn unreadable_input_exits_2() {
    let missing = validate(&["-f", &fixture("no-such-file.yaml")]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .starts_with(&format!("{}: cannot read: ", fixture("no-such-file.yaml"))),
        "{}",
        missing.stderr
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let dir = empty.path().display().to_string();
    let run = validate(&["-f", &dir]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(&format!(
            "{dir}: no *.yaml or *.yml files in this directory"
        )),
        "{}",
        run.stderr
    );

    let duplicate_key = keyfleet(
        &["validate", "-f", "-"],
        Some(b"kind: AwsKey\nmetadata:\n  name: a\n  name: b\n"),
    );
    assert_eq!(duplicate_key.code, 2);
    assert!(
        duplicate_key
            .stderr
            .starts_with("<stdin>:4:3: YAML syntax error: duplicated key in mapping"),
        "{}",
        duplicate_key.stderr
    );
}

#[test]
fn key_material_never_appears_in_the_output() {
    let secrets = fixture("bad/secrets.yaml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(&secrets))
        .expect("fixture");
    // The data canary is stored base64-encoded: neither form may leak.
    let encoded =
        base64::engine::general_purpose::STANDARD.encode("KEYFLEET-CANARY-DATA-0123456789");
    assert!(
        text.contains(&encoded),
        "the fixture holds the encoded canary"
    );
    assert!(
        text.contains("KEYFLEET-CANARY-stringdata"),
        "the fixture holds the canary"
    );
    for args in [vec!["-f", &secrets], vec!["-f", &secrets, "-o", "json"]] {
        let run = validate(&args);
        assert_eq!(run.code, 1);
        // The leak checks did run: each canary Secret has its finding.
        for name in [
            "leak-check-string",
            "leak-check-data",
            "leak-check-base64",
            "leak-check-encoding",
        ] {
            assert!(run.stdout.contains(name), "no finding for {name}");
        }
        for output in [&run.stdout, &run.stderr] {
            assert!(!output.contains("CANARY"), "material leaked:\n{output}");
            assert!(
                !output.contains(&encoded),
                "encoded material leaked:\n{output}"
            );
            assert!(!output.contains("BEGIN"), "a PEM block leaked:\n{output}");
        }
    }
}

#[test]
fn references_outside_the_input_are_findings_only_with_require_refs() {
    let refs = fixture("refs");
    let lenient = validate(&["-f", &refs]);
    assert_eq!(lenient.code, 0, "{}", lenient.stdout);

    let strict = validate(&["-f", &refs, "--require-refs"]);
    assert_eq!(strict.code, 1);
    let findings = printed(&strict);
    let file = fixture("refs/key.yaml");
    assert_eq!(
        findings,
        vec![
            Printed {
                file: file.clone(),
                line: 10,
                object: "AwsKey/refs/elsewhere".into(),
                field: "spec.kmsRef.name".into(),
                message: "AwsKms managed-elsewhere is not in the validated manifests \
                          (--require-refs); add it, or remove spec.kmsRef to use the operator's \
                          own credentials"
                    .into(),
            },
            Printed {
                file,
                line: 15,
                object: "AwsKey/refs/elsewhere".into(),
                field: "spec.keyMaterial.secretRef.name".into(),
                message: "Secret refs/from-external-secrets is not in the validated manifests \
                          (--require-refs)"
                    .into(),
            },
        ]
    );
}

#[test]
fn objects_without_a_namespace_get_the_given_one() {
    let input = b"apiVersion: kms.keyfleet.dev/v1alpha1\nkind: AwsKey\nmetadata:\n  name: k\nspec:\n  region: eu-west-1\n  keySpec: SYMMETRIC_DEFAULT\n  pendingWindowDays: 90\n  keyMaterial:\n    secretRef: {name: m, key: k}\n";
    let run = keyfleet(&["validate", "-n", "team-x", "-f", "-"], Some(input));
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout.lines().next(),
        Some("<stdin>:8: AwsKey/team-x/k: spec.pendingWindowDays: must be at most 30, got 90")
    );
}

/// The repository's `examples/` (when present) must pass: they are what users copy.
#[test]
fn repository_examples_validate_cleanly() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    if !examples.is_dir() {
        println!("skipped: {} does not exist (yet)", examples.display());
        return;
    }
    let mut files = Vec::new();
    yaml_files(&examples, &mut files);
    if files.is_empty() {
        println!(
            "skipped: {} holds no *.yaml or *.yml files",
            examples.display()
        );
        return;
    }
    let run = validate(&["-f", "examples"]);
    assert_eq!(
        run.code, 0,
        "examples/ must validate cleanly:\n{}{}",
        run.stdout, run.stderr
    );
}
