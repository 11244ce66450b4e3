//! Key policies: the AWS default policy, GetKeyPolicy/PutKeyPolicy, and the checks KMS runs
//! on a new policy (JSON, 32 KB, and the lockout safety check).

use serde_json::{Value, json};

use super::Ctx;
use crate::error::{KmsError, KmsResult, not_found};
use crate::params::Params;

/// Largest key policy, in bytes.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// The policy KMS gives a key created without one: the account may do everything.
pub fn default_policy(account: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

fn malformed(message: impl Into<String>) -> KmsError {
    KmsError::new("MalformedPolicyDocumentException", message)
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Whether an IAM action pattern (`kms:*`, `kms:Put*`, `*`) covers `action`.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (pattern, action) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

/// Checks a policy document as KMS does: valid JSON with statements, at most 32 KB, and —
/// unless bypassed — one that still lets the caller (or its account) call PutKeyPolicy.
pub fn check_policy(policy: &str, account: &str, caller_arn: &str, bypass: bool) -> KmsResult<()> {
    if policy.len() > MAX_POLICY_BYTES {
        return Err(KmsError::new(
            "LimitExceededException",
            format!(
                "The key policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                policy.len()
            ),
        ));
    }
    let doc: Value = serde_json::from_str(policy)
        .map_err(|e| malformed(format!("The policy is not valid JSON: {e}")))?;
    let statements = doc
        .get("Statement")
        .ok_or_else(|| malformed("The policy has no Statement"))?;
    let statements = as_list(statements);
    for s in &statements {
        let effect = s.get("Effect").and_then(Value::as_str);
        if !matches!(effect, Some("Allow" | "Deny")) {
            return Err(malformed("Each statement needs an Effect of Allow or Deny"));
        }
        if s.get("Principal").is_none() && s.get("NotPrincipal").is_none() {
            return Err(malformed("Each key policy statement needs a Principal"));
        }
        if s.get("Action").is_none() && s.get("NotAction").is_none() {
            return Err(malformed("Each statement needs an Action"));
        }
    }
    if bypass {
        return Ok(());
    }
    let root = format!("arn:aws:iam::{account}:root");
    let principal_ok = |p: &Value| -> bool {
        let names: Vec<&Value> = match p {
            Value::String(_) => vec![p],
            Value::Object(o) => o.get("AWS").map(as_list).unwrap_or_default(),
            _ => vec![],
        };
        names
            .iter()
            .filter_map(|n| n.as_str())
            .any(|n| n == "*" || n == account || n == root || n == caller_arn)
    };
    let allows = statements.iter().any(|s| {
        s.get("Effect").and_then(Value::as_str) == Some("Allow")
            && s.get("Principal").is_some_and(principal_ok)
            && s.get("Action").is_some_and(|a| {
                as_list(a)
                    .iter()
                    .filter_map(|a| a.as_str())
                    .any(|a| action_matches(a, "kms:PutKeyPolicy"))
            })
    });
    if !allows {
        return Err(malformed(
            "The new key policy will not allow you to update the key policy in the future.",
        ));
    }
    Ok(())
}

fn policy_name(p: &Params<'_>) -> KmsResult<()> {
    match p.opt_str("PolicyName")? {
        None | Some("default") => Ok(()),
        Some(other) => Err(not_found(format!("No such policy: {other}"))),
    }
}

pub fn get_key_policy(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    policy_name(p)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    Ok(json!({"Policy": key.policy, "PolicyName": "default"}))
}

pub fn put_key_policy(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    policy_name(p)?;
    let policy = p.str("Policy")?;
    let bypass = p
        .opt_bool("BypassPolicyLockoutSafetyCheck")?
        .unwrap_or(false);
    let account = ctx.account().to_string();
    check_policy(policy, &account, ctx.caller_arn, bypass)?;
    // PutKeyPolicy works in every key state.
    ctx.state.key_mut(ctx.region, &key_id)?.policy = policy.to_string();
    Ok(json!({}))
}
