//! The Ready reasons of docs/troubleshooting.md against the tests and the code:
//!
//! 1. Every documented reason is produced end to end by a test. A reason counts as produced
//!    when a test file `tests/*.rs` (comment lines aside) names it as a string literal in an
//!    assertion that reads it back from the status the real controller wrote:
//!    - the reason argument (the last) of a call to one of [`PROOFS`], e.g.
//!      `wait_reason(&api, &name, "KeyGone")` or `wait_replica_reason(.., "PrimaryNotReady")`;
//!    - or the first element of a row `("Reason", ..)` of a table, in a file that passes a
//!      row's reason (a variable) to one of [`PROOFS`] — the tables of `aws_key_bad_input.rs`,
//!      `replicas.rs` and `pkcs11_controller.rs`.
//!
//!    An event list (`wait_events`), a unit test of an error's `reason()`, a comment or any
//!    other mention does not count: it does not show the controller setting Ready.
//! 2. Every reason the code can set on the Ready condition of an AwsKey or AwsReplicaKey is
//!    documented, and every documented reason is one the code can set. The code's reasons are
//!    the string literals of `src/` (test modules and comment lines aside) where a Ready reason
//!    is fixed: the arms `=> "Reason"` of the `fn reason(&self) -> &'static str` of the error
//!    and blocker types (`=> Kind("Reason")` where a `fn kind(&self) -> Kind` table gives the
//!    reason with another property), the KMS error codes mapped to a reason (`"...Exception" => "Reason"`),
//!    the first argument of `Failure::blocked/reference/conflict(` and of the spec and tenancy
//!    `refuse(`, and `reason: "Reason"` (the Ready verdict). Files that set other objects'
//!    reasons are skipped ([`OTHER_OBJECTS`]); [`NOT_DOCUMENTED`] lists, with why, the reasons
//!    of those types that never reach Ready (or only against a broken KMS).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[path = "support/reason_table.rs"]
mod reason_table;

/// The waits and checks that read a Ready (or Stalled/Reconciling) reason from a status the
/// controller wrote; their last argument is the reason.
const PROOFS: &[&str] = &[
    // tests/support/operator.rs: polls the AwsKey until Ready=False with the reason.
    "wait_reason",
    // tests/support/replicas.rs: the same for an AwsReplicaKey.
    "wait_replica_reason",
    // tests/kms_refusals.rs: polls the AwsKey until Ready=True with the reason.
    "wait_ready_reason",
    // tests/tenancy.rs, tests/kms_refusals.rs: creates a key, waits for Ready=False with the
    // reason (and its event).
    "refused",
    // tests/material_lifecycle.rs: a condition of a status has this state and reason.
    "has",
];

/// Sources that set the reasons of other objects or outputs, not a key's Ready condition.
const OTHER_OBJECTS: &[&str] = &[
    // The AwsKms status (RegionInvalid, AssumeRoleFailed, ...).
    "src/controller/connection_status.rs",
    // The Pkcs11Token status (LoggedIn, ...).
    "src/controller/pkcs11_token.rs",
    // The AwsKeyPolicyTemplate status (Rendered; PolicyTemplateInvalid is also a key's).
    "src/controller/template_status.rs",
    // Events of a deletion that waits (KeyNotFoundInConnectionAccount, ...).
    "src/controller/cleanup.rs",
    // `keyfleet validate` findings (the operator's reasons plus the CLI's own).
    "src/validate",
    "src/cli",
];

/// Reasons of the types above that never become a Ready reason (or cannot be produced from
/// outside), and why.
const NOT_DOCUMENTED: &[(&str, &str)] = &[
    (
        "KmsNotFound",
        "Failure::kms reports a missing key as KeyGone",
    ),
    (
        "KmsThrottled",
        "transient: retried with backoff, Ready unchanged",
    ),
    (
        "KmsUnavailable",
        "transient: retried with backoff, Ready unchanged",
    ),
    (
        "Pkcs11TokenUnavailable",
        "transient: retried with a new session pool",
    ),
    ("Pkcs11TokenBusy", "transient: retried"),
    ("Pkcs11OperationFailed", "transient: retried"),
    (
        "WrappingFailed",
        "only if aws-lc failed to set up RSA-OAEP or AES key wrap; nothing a user can act on",
    ),
    (
        "GenerationFailed",
        "only if aws-lc's random generator or key generation failed (keyMaterial.generate); \
         nothing a user can act on",
    ),
];

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The file's text without comment lines.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The CamelCase string literal at the start of `text` (after whitespace), if any.
fn reason_literal(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    let word = &rest[..end];
    let camel = word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphanumeric());
    camel.then_some(word)
}

/// Byte offsets just after each occurrence of `needle` in `text`.
fn after_each<'a>(text: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(needle)
        .map(move |(i, _)| i + needle.len())
}

/// The index of the bracket closing the one opened just before `start` (string literals
/// skipped).
fn closing(text: &str, start: usize) -> usize {
    let mut depth = 1;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '(' | '[' | '{' if !in_string => depth += 1,
            ')' | ']' | '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return start + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets after byte {start}");
}

/// The top-level arguments of a call whose argument list is `args` (without parentheses).
fn arguments(args: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut depth, mut in_string, mut escaped, mut from) = (0, false, false, 0);
    for (i, c) in args.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '(' | '[' | '{' if !in_string => depth += 1,
            ')' | ']' | '}' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => {
                out.push(args[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(args[from..].trim());
    out.retain(|a| !a.is_empty());
    out
}

/// What one test file proves: the reasons named in proofs, its table rows, and whether it
/// passes a variable (a row's reason) to a proof.
#[derive(Default)]
struct Proofs {
    literals: BTreeSet<String>,
    rows: BTreeSet<String>,
    passes_variables: bool,
}

fn proofs_in(code: &str) -> Proofs {
    let mut proofs = Proofs::default();
    for name in PROOFS {
        for open in after_each(code, &format!("{name}(")) {
            let start = open - name.len() - 1;
            let before = code[..start].chars().next_back().unwrap_or(' ');
            let defined = code[..start].trim_end().ends_with("fn");
            if before.is_ascii_alphanumeric() || before == '_' || defined {
                continue;
            }
            let args = &code[open..closing(code, open)];
            let Some(reason) = arguments(args).last().copied() else {
                continue;
            };
            match reason_literal(reason) {
                Some(literal) if literal.len() + 2 == reason.len() => {
                    proofs.literals.insert(literal.to_string());
                }
                _ => proofs.passes_variables = true,
            }
        }
    }
    for open in after_each(code, "(") {
        let Some(literal) = reason_literal(&code[open..]) else {
            continue;
        };
        let after = code[open..].trim_start()[literal.len() + 2..].trim_start();
        if after.starts_with(',') {
            proofs.rows.insert(literal.to_string());
        }
    }
    proofs
}

/// Documented reason → the test files that produce it.
fn produced() -> BTreeMap<String, BTreeSet<String>> {
    let mut by_reason: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let tests = root().join("tests");
    for path in rust_files(&tests) {
        if path.parent() != Some(tests.as_path()) || path.ends_with("documented_reasons.rs") {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let proofs = proofs_in(&code_of(&path));
        let mut reasons = proofs.literals;
        if proofs.passes_variables {
            reasons.extend(proofs.rows);
        }
        for reason in reasons {
            by_reason.entry(reason).or_default().insert(file.clone());
        }
    }
    by_reason
}

/// The Ready reasons the code can set (see the header), with the files that set them.
fn code_reasons() -> BTreeMap<String, BTreeSet<String>> {
    let root = root();
    let mut by_reason: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&root.join("src")) {
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if OTHER_OBJECTS.iter().any(|o| relative.starts_with(o)) || relative.ends_with("tests.rs") {
            continue;
        }
        let mut code = code_of(&path);
        if let Some(tests) = code.find("#[cfg(test)]\nmod tests {") {
            code.truncate(tests);
        }
        let mut found = |text: &str| {
            if let Some(reason) = reason_literal(text) {
                by_reason
                    .entry(reason.to_string())
                    .or_default()
                    .insert(relative.clone());
            }
        };
        for call in [
            "Failure::blocked(",
            "Failure::reference(",
            "Failure::conflict(",
            "refuse(",
            "reason:",
        ] {
            for at in after_each(&code, call) {
                found(&code[at..]);
            }
        }
        for at in after_each(&code, "=>") {
            if code[..at - 2].trim_end().ends_with("Exception\"") {
                found(&code[at..]);
            }
        }
        for at in after_each(&code, "fn reason(&self) -> &'static str {") {
            let body = &code[at..closing(&code, at)];
            for arm in after_each(body, "=>") {
                found(&body[arm..]);
            }
        }
        // A `kind()` table: `=> Lasting("Reason")`, the reason as the argument of the kind.
        for at in after_each(&code, "fn kind(&self) -> Kind {") {
            let body = &code[at..closing(&code, at)];
            for arm in after_each(body, "=>") {
                let kind = body[arm..].trim_start();
                let argument = kind.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
                if let Some(argument) = argument.strip_prefix('(') {
                    found(argument);
                }
            }
        }
    }
    by_reason
}

fn documented() -> BTreeSet<String> {
    let reasons = reason_table::documented_reasons();
    assert!(reasons.len() > 60, "only {} reasons found", reasons.len());
    reasons.into_iter().map(|(reason, _, _)| reason).collect()
}

#[test]
fn every_documented_reason_is_produced_end_to_end_by_a_test() {
    let produced = produced();
    let missing: Vec<String> = documented()
        .into_iter()
        .filter(|r| !produced.contains_key(r))
        .collect();
    assert!(
        missing.is_empty(),
        "documented in docs/troubleshooting.md, but no test produces them (see this file's \
         header for what counts): {missing:?}"
    );
}

#[test]
fn the_docs_table_holds_exactly_the_reasons_the_code_sets_on_ready() {
    let documented = documented();
    let code = code_reasons();
    assert!(code.len() > 60, "only {} reasons found in src/", code.len());
    let excused: BTreeSet<&str> = NOT_DOCUMENTED.iter().map(|(r, _)| *r).collect();
    let undocumented: Vec<String> = code
        .iter()
        .filter(|(r, _)| !documented.contains(*r) && !excused.contains(r.as_str()))
        .map(|(r, files)| format!("{r} (set in {files:?})"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "the code can set these Ready reasons, docs/troubleshooting.md does not document them: \
         {undocumented:?}"
    );
    let dead: Vec<&String> = documented
        .iter()
        .filter(|r| !code.contains_key(*r))
        .collect();
    assert!(
        dead.is_empty(),
        "documented in docs/troubleshooting.md, but no code sets them: {dead:?}"
    );
    for (reason, why) in NOT_DOCUMENTED {
        assert!(
            code.contains_key(*reason) && !documented.contains(*reason),
            "NOT_DOCUMENTED lists {reason} ({why}), but it is documented or no longer set"
        );
    }
}
