//! `status.policyHash` can be recomputed with a standard tool: the command
//! docs/key-policies.md gives (Python's json module and hashlib, piped from
//! `aws kms get-key-policy`) prints keyfleet's hash for a policy as KMS returns it — reordered
//! keys, other whitespace, non-ASCII text, booleans and integers included.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// The documented command: the docs' line that starts with `| python3 -c '`.
fn documented_command() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/key-policies.md");
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("| python3 -c '"))
        .expect("docs/key-policies.md shows the python3 command");
    line.trim_start_matches('|').trim().to_string()
}

fn run(command: &str, input: &str) -> String {
    let mut child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_documented_command_prints_keyfleets_policy_hash() {
    // What keyfleet rendered (its key order) ...
    let rendered = serde_json::json!({
        "Version": "2012-10-17",
        "Id": "keyfleet-ünïcode-€",
        "Statement": [
            {"Sid": "Root", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "Grants", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam::111122223333:role/app", "arn:aws:iam::444455556666:root"]},
             "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
             "Resource": "*",
             "Condition": {"Bool": {"kms:GrantIsForAWSResource": true},
                           "NumericLessThanEquals": {"aws:MultiFactorAuthAge": 3600},
                           "StringEquals": {"aws:PrincipalTag/team": "zahlungsverkehr \"€\" \\ /"}}}
        ]
    });
    let keyfleet = keyfleet::policy::hash(&rendered);
    // ... and the same policy as KMS returns it: other key order, other whitespace.
    let from_kms = r#"{
  "Statement" : [ {
    "Resource" : "*", "Action" : "kms:*", "Effect" : "Allow", "Sid" : "Root",
    "Principal" : { "AWS" : "arn:aws:iam::111122223333:root" }
  }, {
    "Condition" : {
      "StringEquals" : { "aws:PrincipalTag/team" : "zahlungsverkehr \"€\" \\ \/" },
      "NumericLessThanEquals" : { "aws:MultiFactorAuthAge" : 3600 },
      "Bool" : { "kms:GrantIsForAWSResource" : true }
    },
    "Resource" : "*",
    "Action" : [ "kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant" ],
    "Principal" : { "AWS" : [ "arn:aws:iam::111122223333:role/app", "arn:aws:iam::444455556666:root" ] },
    "Effect" : "Allow", "Sid" : "Grants"
  } ],
  "Id" : "keyfleet-\u00fcn\u00efcode-\u20ac",
  "Version" : "2012-10-17"
}"#;
    let parsed: serde_json::Value = serde_json::from_str(from_kms).unwrap();
    assert_eq!(parsed, rendered, "the same policy");
    assert_eq!(run(&documented_command(), from_kms), keyfleet);

    // A different policy, a different hash.
    let mut changed = rendered.clone();
    changed["Statement"][1]["Condition"]["NumericLessThanEquals"]["aws:MultiFactorAuthAge"] =
        serde_json::json!(3601);
    let changed_text = serde_json::to_string_pretty(&changed).unwrap();
    let theirs = run(&documented_command(), &changed_text);
    assert_ne!(theirs, keyfleet);
    assert_eq!(theirs, keyfleet::policy::hash(&changed));
}
