//! Lockout check: does a key policy still let keyfleet's own principal manage the key?
//!
//! The statements are evaluated for the caller the way KMS would for the actions keyfleet needs
//! to keep managing the key, conservatively: an `Allow` with a `Condition` is not counted (it
//! may not hold), a `Deny` without one is. The account root principal delegates to IAM, so a
//! policy that keeps the root statement passes (what the AWS default policy does).

use serde_json::Value;

use super::principal::iam_arn;

/// What keyfleet must keep being allowed to do on every key it manages.
pub const MANAGEMENT_ACTIONS: [&str; 5] = [
    "kms:PutKeyPolicy",
    "kms:GetKeyPolicy",
    "kms:DescribeKey",
    "kms:GetParametersForImport",
    "kms:ImportKeyMaterial",
];

/// The principal keyfleet calls KMS as (sts:GetCallerIdentity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `arn:aws:iam::<acct>:user/x`, `arn:aws:sts::<acct>:assumed-role/<role>/<session>`, or
    /// `arn:aws:iam::<acct>:root`.
    pub arn: String,
    pub account_id: String,
}

/// Ok when the policy lets `caller` perform every management action; otherwise why not.
pub fn check(policy: &Value, caller: &Caller) -> Result<(), String> {
    let statements: Vec<&Value> = match &policy["Statement"] {
        Value::Array(items) => items.iter().collect(),
        single @ Value::Object(_) => vec![single],
        _ => vec![],
    };
    let mut missing = Vec::new();
    for action in MANAGEMENT_ACTIONS {
        let applies = |s: &Value| {
            s.get("Condition").is_none()
                && principal_matches(s, caller)
                && action_matches(s, action)
        };
        if let Some(deny) = statements
            .iter()
            .filter(|s| s["Effect"] == "Deny")
            .find(|s| applies(s))
        {
            return Err(format!(
                "statement {} denies {} {action}, which keyfleet needs to keep managing the key",
                sid(deny),
                caller.arn
            ));
        }
        if !statements
            .iter()
            .filter(|s| s["Effect"] == "Allow")
            .any(|s| applies(s))
        {
            missing.push(action);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "no unconditional Allow statement grants {} (keyfleet's principal) {}; keep the account-root statement (arn:aws:iam::{}:root) or name the principal with these actions",
        caller.arn,
        missing.join(", "),
        caller.account_id
    ))
}

fn sid(statement: &Value) -> String {
    statement["Sid"]
        .as_str()
        .map(|s| format!("{s:?}"))
        .unwrap_or_else(|| "(without Sid)".into())
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn principal_matches(statement: &Value, caller: &Caller) -> bool {
    if statement.get("NotPrincipal").is_some() {
        return false;
    }
    let principals = match &statement["Principal"] {
        Value::String(s) => vec![s.as_str()],
        Value::Object(map) => map.get("AWS").map(strings).unwrap_or_default(),
        _ => vec![],
    };
    principals.into_iter().any(|p| is_caller(p, caller))
}

/// Whether a policy principal names the caller: `*`, the caller's account (root or id), the
/// caller's ARN, or the role the caller's assumed-role session belongs to.
fn is_caller(principal: &str, caller: &Caller) -> bool {
    if principal == "*" || principal == caller.account_id || principal == caller.arn {
        return true;
    }
    let Some((account, resource)) = iam_arn(principal) else {
        return false;
    };
    if account != caller.account_id {
        return false;
    }
    if resource == "root" {
        return true;
    }
    // arn:aws:sts::<acct>:assumed-role/<role>/<session> is the role arn:aws:iam::<acct>:role/[path/]<role>.
    let assumed_role = caller
        .arn
        .split_once(":assumed-role/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(role, _)| role);
    match (assumed_role, resource.strip_prefix("role/")) {
        (Some(role), Some(path)) => path.rsplit('/').next() == Some(role),
        _ => false,
    }
}

fn action_matches(statement: &Value, action: &str) -> bool {
    if let Some(not_actions) = statement.get("NotAction") {
        return !strings(not_actions)
            .into_iter()
            .any(|p| wildcard_match(p, action));
    }
    strings(&statement["Action"])
        .into_iter()
        .any(|p| wildcard_match(p, action))
}

/// IAM action matching: case-insensitive, `*` any run, `?` any one character.
fn wildcard_match(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role_session() -> Caller {
        Caller {
            arn: "arn:aws:sts::111122223333:assumed-role/keyfleet/keyfleet".into(),
            account_id: "111122223333".into(),
        }
    }

    fn allow(principal: Value, action: Value) -> Value {
        json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "a", "Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*"}
        ]})
    }

    #[test]
    fn policies_that_keep_keyfleet_in_control_pass() {
        let caller = role_session();
        for policy in [
            allow(
                json!({"AWS": "arn:aws:iam::111122223333:root"}),
                json!("kms:*"),
            ),
            allow(json!({"AWS": "111122223333"}), json!("*")),
            allow(json!("*"), json!("kms:*")),
            allow(
                json!({"AWS": ["arn:aws:iam::111122223333:role/platform/keyfleet"]}),
                json!([
                    "kms:Put*",
                    "kms:Get*",
                    "kms:Describe*",
                    "kms:ImportKeyMaterial"
                ]),
            ),
            allow(
                json!({"AWS": "arn:aws:sts::111122223333:assumed-role/keyfleet/keyfleet"}),
                json!("KMS:*"),
            ),
            json!({"Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "NotAction": "kms:Decrypt"}}),
        ] {
            assert_eq!(check(&policy, &caller), Ok(()), "{policy}");
        }
    }

    #[test]
    fn policies_that_lock_keyfleet_out_are_refused_with_the_reason() {
        let caller = role_session();
        let cases = [
            // Another role only.
            (
                allow(
                    json!({"AWS": "arn:aws:iam::111122223333:role/other"}),
                    json!("kms:*"),
                ),
                "kms:PutKeyPolicy",
            ),
            // The same role name in another account.
            (
                allow(
                    json!({"AWS": "arn:aws:iam::999999999999:role/keyfleet"}),
                    json!("kms:*"),
                ),
                "kms:PutKeyPolicy",
            ),
            // Use only, no management.
            (
                allow(
                    json!({"AWS": "arn:aws:iam::111122223333:role/keyfleet"}),
                    json!(["kms:Decrypt", "kms:DescribeKey"]),
                ),
                "kms:PutKeyPolicy, kms:GetKeyPolicy, kms:GetParametersForImport, kms:ImportKeyMaterial",
            ),
            // Management only under a condition.
            (
                json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}),
                "kms:PutKeyPolicy",
            ),
            // An explicit deny wins.
            (
                json!({"Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*"},
                    {"Sid": "NoPolicyChanges", "Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy"}
                ]}),
                "\"NoPolicyChanges\" denies",
            ),
            (json!({"Statement": []}), "kms:PutKeyPolicy"),
        ];
        for (policy, expected) in cases {
            let why = check(&policy, &caller).unwrap_err();
            assert!(why.contains(expected), "{why}");
            assert!(
                why.contains("arn:aws:sts::111122223333:assumed-role/keyfleet/keyfleet"),
                "{why}"
            );
        }
    }

    #[test]
    fn wildcards_match_like_iam() {
        assert!(wildcard_match("kms:Put*", "kms:PutKeyPolicy"));
        assert!(wildcard_match("kms:*Policy", "kms:PutKeyPolicy"));
        assert!(wildcard_match("kms:?utKeyPolicy", "kms:PutKeyPolicy"));
        assert!(wildcard_match("*", "kms:PutKeyPolicy"));
        assert!(!wildcard_match("kms:Get*", "kms:PutKeyPolicy"));
        assert!(!wildcard_match("kms:PutKeyPolicy2", "kms:PutKeyPolicy"));
    }
}
