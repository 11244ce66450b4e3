//! Tenancy boundaries (pure): every decision that lets an object act on something outside its
//! own namespace — a connection, an endpoint, an alias, a principal in a policy, a KMS key it did
//! not create — is made here, refused by default with a precise reason.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{AllowedNamespaces, KeyPolicyLimits};
use crate::plan::{self, Owner, Ownership};

/// Tag by which a KMS key consents to adoption by one AwsKey: `<namespace>/<name>`.
pub const ADOPT_BY_TAG: &str = "keyfleet.dev/adopt-by";

/// A refused crossing: the `Ready=False` reason and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// Whether keys in `namespace` (with `labels`) may use the connection `connection`.
pub fn connection_grant(
    connection: &str,
    allowed: &AllowedNamespaces,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    if allowed.allows(labels) {
        return Ok(());
    }
    Err(refuse(
        "KmsConnectionNotAllowed",
        format!(
            "AwsKms/{connection} does not admit namespace {namespace} (its spec.allowedNamespaces selects other namespaces); ask the cluster administrator to grant it, or use a connection granted to {namespace}"
        ),
    ))
}

/// The KMS endpoints the operator sends material to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Host patterns; `*` stands for exactly one DNS label.
    pub allowed_hosts: Vec<String>,
    /// `--allow-custom-kms-endpoints`: any URL (`http://` included), for tests and playgrounds.
    pub allow_custom: bool,
}

/// The AWS KMS endpoint hosts: regional, FIPS, dual-stack, China, and VPC interface endpoints.
pub const AWS_KMS_ENDPOINT_HOSTS: &[&str] = &[
    "kms.*.amazonaws.com",
    "kms-fips.*.amazonaws.com",
    "kms.*.api.aws",
    "kms-fips.*.api.aws",
    "kms.*.amazonaws.com.cn",
    "*.kms.*.vpce.amazonaws.com",
    "*.kms-fips.*.vpce.amazonaws.com",
];

impl Default for EndpointPolicy {
    fn default() -> Self {
        EndpointPolicy {
            allowed_hosts: AWS_KMS_ENDPOINT_HOSTS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            allow_custom: false,
        }
    }
}

/// Whether material may be sent to `endpoint_url` (None: the operator's own endpoint
/// resolution, the administrator's choice).
pub fn endpoint(
    connection: &str,
    endpoint_url: Option<&str>,
    policy: &EndpointPolicy,
) -> Result<(), Refusal> {
    let Some(url) = endpoint_url else {
        return Ok(());
    };
    if policy.allow_custom {
        return Ok(());
    }
    let refused = |why: String| {
        Err(refuse(
            "KmsEndpointNotAllowed",
            format!(
                "AwsKms/{connection} endpointUrl {url} {why}; keyfleet sends key material only to https:// AWS KMS endpoints (allowed hosts: {}) unless the operator runs with --allow-custom-kms-endpoints",
                policy.allowed_hosts.join(", ")
            ),
        ))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return refused("is not https://".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return refused("carries credentials".into());
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority, |(host, _)| host)
        .to_ascii_lowercase();
    if policy
        .allowed_hosts
        .iter()
        .any(|pattern| host_matches(pattern, &host))
    {
        return Ok(());
    }
    refused(format!(
        "has host {host}, which is not an allowed KMS endpoint"
    ))
}

/// `*` matches exactly one non-empty DNS label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let host: Vec<&str> = host.split('.').collect();
    pattern.len() == host.len()
        && pattern
            .iter()
            .zip(&host)
            .all(|(p, h)| !h.is_empty() && (*p == "*" || p.eq_ignore_ascii_case(h)))
}

/// Whether `alias` lies inside the connection's `aliasPrefix` (`{namespace}` filled in).
pub fn alias(
    connection: &str,
    alias: Option<&str>,
    prefix: Option<&str>,
    namespace: &str,
) -> Result<(), Refusal> {
    let (Some(alias), Some(prefix)) = (alias, prefix) else {
        return Ok(());
    };
    let prefix = prefix.replace("{namespace}", namespace);
    if alias.starts_with(&prefix) {
        return Ok(());
    }
    Err(refuse(
        "AliasNotAllowed",
        format!(
            "alias {alias} is outside the prefix {prefix} that AwsKms/{connection} allows for namespace {namespace}; choose an alias starting with {prefix}"
        ),
    ))
}

/// Whether a key may set `bypassPolicyLockoutSafetyCheck` through this connection.
pub fn bypass(
    connection: &str,
    bypass: bool,
    limits: Option<&KeyPolicyLimits>,
) -> Result<(), Refusal> {
    if !bypass || limits.is_some_and(|l| l.allow_bypass_policy_lockout_safety_check) {
        return Ok(());
    }
    Err(refuse(
        "PolicyNotAllowed",
        format!(
            "bypassPolicyLockoutSafetyCheck is not allowed by AwsKms/{connection} (spec.keyPolicy.allowBypassPolicyLockoutSafetyCheck is false)"
        ),
    ))
}

/// Whether every principal a rendered policy allows is one the connection permits: no `"*"`
/// unless allowed, and only the allowed accounts when the connection lists any. Deny
/// statements only take access away and are not limited.
pub fn policy_principals(
    connection: &str,
    policy: &Value,
    limits: Option<&KeyPolicyLimits>,
) -> Result<(), Refusal> {
    let default = KeyPolicyLimits::default();
    let limits = limits.unwrap_or(&default);
    let statements = match policy.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(single) => vec![single],
        None => vec![],
    };
    for (index, statement) in statements.iter().enumerate() {
        if statement.get("Effect").and_then(Value::as_str) != Some("Allow") {
            continue;
        }
        let name = statement
            .get("Sid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{index}"), |sid| format!("{sid:?}"));
        let refused = |principal: &str, why: &str| {
            Err(refuse(
                "PolicyNotAllowed",
                format!(
                    "statement {name} allows principal {principal}, {why} by AwsKms/{connection} (spec.keyPolicy)"
                ),
            ))
        };
        if statement.get("NotPrincipal").is_some() {
            return refused("NotPrincipal", "an inverted principal that is not allowed");
        }
        for principal in aws_principals(statement.get("Principal")) {
            if principal == "*" {
                if !limits.allow_wildcard_principal {
                    return refused("*", "a wildcard principal that is not allowed");
                }
                continue;
            }
            if limits.allowed_accounts.is_empty() {
                continue;
            }
            match principal_account(&principal) {
                Some(account) if limits.allowed_accounts.iter().any(|a| a == account) => {}
                Some(_) => {
                    return refused(&principal, "whose account is not in allowedAccounts");
                }
                None => {
                    return refused(
                        &principal,
                        "whose account cannot be determined, not allowed",
                    );
                }
            }
        }
    }
    Ok(())
}

/// The `AWS` principals of a statement (`"*"` counts as one).
fn aws_principals(principal: Option<&Value>) -> Vec<String> {
    let values = match principal {
        Some(Value::String(s)) => return vec![s.clone()],
        Some(Value::Object(map)) => map.get("AWS"),
        _ => None,
    };
    match values {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => vec![],
    }
}

/// The account of an account id or IAM/STS ARN.
fn principal_account(principal: &str) -> Option<&str> {
    if principal.len() == 12 && principal.chars().all(|c| c.is_ascii_digit()) {
        return Some(principal);
    }
    let mut parts = principal.split(':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some("iam" | "sts"), Some(_), Some(account))
            if account.len() == 12 =>
        {
            Some(account)
        }
        _ => None,
    }
}

/// How this reconcile came to hold its KMS key: what entitles it to write to the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Recorded in status or created by this object: the key must carry this object's tags.
    Recorded,
    /// A key of this object's previous incarnation (same namespace and name), taken over now.
    PreviousIncarnation,
    /// A key adopted with consent (its `keyfleet.dev/adopt-by` tag, or the connection's
    /// `adoption.allowUnownedKeys`), not tagged yet.
    Adopted,
    /// A replica KMS made of this object's primary, still carrying the primary's tags (some KMS
    /// implementations copy them): the uid of the primary AwsKey.
    ReplicaOf(String),
}

/// Whether an adoption of an untagged key (`adoptKeyArn`) has consent.
pub fn adoption(
    key_id: &str,
    tags: &BTreeMap<String, String>,
    owner: &Owner,
    connection: &str,
    allow_unowned_keys: bool,
) -> Result<(), Refusal> {
    let me = format!("{}/{}", owner.namespace, owner.name);
    if allow_unowned_keys || tags.get(ADOPT_BY_TAG) == Some(&me) {
        return Ok(());
    }
    Err(refuse(
        "AdoptionRefused",
        format!(
            "KMS key {key_id} carries no keyfleet owner tags and does not consent to adoption: tag it {ADOPT_BY_TAG}={me} in AWS (whoever controls the key decides), or have the cluster administrator set adoption.allowUnownedKeys on AwsKms/{connection}"
        ),
    ))
}

/// Whether this object may change the KMS key whose tags were just read: its owner tags must
/// name this object, unless this reconcile took the key over with a claim that allows it.
pub fn may_modify(
    key_id: &str,
    tags: &BTreeMap<String, String>,
    owner: &Owner,
    claim: &Claim,
) -> Result<(), Refusal> {
    let ownership = plan::ownership(tags, owner);
    let allowed = match (&ownership, claim) {
        (Ownership::Mine, _) => true,
        (Ownership::PreviousIncarnation, Claim::PreviousIncarnation | Claim::Adopted) => true,
        (Ownership::Unowned, Claim::Adopted) => true,
        (Ownership::Elsewhere(_), Claim::ReplicaOf(primary_uid)) => {
            tags.get(plan::OWNER_UID_TAG) == Some(primary_uid)
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let now = match ownership {
        Ownership::Elsewhere(other) => format!("it is now owned by {other}"),
        Ownership::Unowned => "its keyfleet owner tags were removed".to_string(),
        Ownership::PreviousIncarnation => {
            "it is tagged for an earlier object of the same name".to_string()
        }
        Ownership::Mine => String::new(),
    };
    Err(refuse(
        "OwnershipLost",
        format!(
            "KMS key {key_id} is no longer this object's ({now}); keyfleet changed nothing. Restore the tag {}={} on the key, or delete this object (the key is then left alone)",
            plan::OWNER_UID_TAG,
            owner.uid
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyfleet_testkit::labels;
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            cluster: "c1".into(),
            namespace: "payments".into(),
            name: "orders".into(),
            uid: "uid-1".into(),
        }
    }

    #[test]
    fn connections_admit_only_their_granted_namespaces() {
        let granted = AllowedNamespaces::matching(labels(&[("team", "payments")]));
        assert_eq!(
            connection_grant(
                "pay",
                &granted,
                "payments",
                &labels(&[("team", "payments")])
            ),
            Ok(())
        );
        let refused = connection_grant("pay", &granted, "orders", &labels(&[("team", "orders")]))
            .unwrap_err();
        assert_eq!(refused.reason, "KmsConnectionNotAllowed");
        assert!(
            refused
                .message
                .contains("AwsKms/pay does not admit namespace orders")
        );
        assert_eq!(
            connection_grant("all", &AllowedNamespaces::all(), "x", &labels(&[])),
            Ok(())
        );
    }

    #[test]
    fn material_goes_only_to_aws_kms_endpoints_unless_custom_ones_are_allowed() {
        let aws = EndpointPolicy::default();
        for ok in [
            None,
            Some("https://kms.eu-west-1.amazonaws.com"),
            Some("https://kms-fips.us-gov-west-1.amazonaws.com/"),
            Some("https://vpce-0abc-1a2b.kms.eu-central-1.vpce.amazonaws.com:443"),
            Some("https://kms.cn-north-1.amazonaws.com.cn"),
        ] {
            assert_eq!(endpoint("c", ok, &aws), Ok(()), "{ok:?}");
        }
        for bad in [
            "http://kms.eu-west-1.amazonaws.com",
            "https://kms.eu-west-1.amazonaws.com.evil.example",
            "https://evil.example/kms.eu-west-1.amazonaws.com",
            "https://kms.eu-west-1.amazonaws.com@evil.example",
            "https://127.0.0.1:4566",
            "https://kms..amazonaws.com",
        ] {
            let refused = endpoint("c", Some(bad), &aws).unwrap_err();
            assert_eq!(refused.reason, "KmsEndpointNotAllowed", "{bad}");
            assert!(refused.message.contains("--allow-custom-kms-endpoints"));
        }
        let custom = EndpointPolicy {
            allow_custom: true,
            ..EndpointPolicy::default()
        };
        assert_eq!(
            endpoint("c", Some("http://127.0.0.1:4566"), &custom),
            Ok(())
        );
    }

    #[test]
    fn aliases_stay_inside_the_connections_prefix_for_their_namespace() {
        let prefix = Some("alias/{namespace}/");
        assert_eq!(
            alias("c", Some("alias/payments/orders"), prefix, "payments"),
            Ok(())
        );
        let refused = alias("c", Some("alias/payments/orders"), prefix, "squatter").unwrap_err();
        assert_eq!(refused.reason, "AliasNotAllowed");
        assert!(refused.message.contains("alias/squatter/"));
        assert_eq!(alias("c", Some("alias/anything"), None, "x"), Ok(()));
        assert_eq!(alias("c", None, prefix, "x"), Ok(()));
    }

    #[test]
    fn policies_name_only_permitted_principals() {
        let limits = KeyPolicyLimits {
            allowed_accounts: vec!["111122223333".into()],
            ..Default::default()
        };
        let policy = |principal: Value| {
            json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
                {"Sid": "Deny", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
                {"Sid": "Users", "Effect": "Allow", "Principal": principal, "Action": "kms:Decrypt", "Resource": "*"}
            ]})
        };
        let ok =
            policy(json!({"AWS": ["111122223333", "arn:aws:sts::111122223333:assumed-role/r/s"]}));
        assert_eq!(policy_principals("c", &ok, Some(&limits)), Ok(()));
        let other = policy(json!({"AWS": "arn:aws:iam::444455556666:role/thief"}));
        let refused = policy_principals("c", &other, Some(&limits)).unwrap_err();
        assert_eq!(refused.reason, "PolicyNotAllowed");
        assert!(refused.message.contains("\"Users\""), "{}", refused.message);
        assert!(refused.message.contains("444455556666"));
        // A wildcard is refused by default, and with no limits set at all.
        let star = policy(json!("*"));
        assert!(policy_principals("c", &star, None).is_err());
        assert!(policy_principals("c", &policy(json!({"AWS": "*"})), Some(&limits)).is_err());
        let wild_ok = KeyPolicyLimits {
            allow_wildcard_principal: true,
            ..Default::default()
        };
        assert_eq!(policy_principals("c", &star, Some(&wild_ok)), Ok(()));
        // Any account when none are listed.
        assert_eq!(policy_principals("c", &other, None), Ok(()));
    }

    #[test]
    fn bypassing_the_lockout_check_needs_the_connections_permission() {
        assert_eq!(bypass("c", false, None), Ok(()));
        assert_eq!(
            bypass("c", true, None).unwrap_err().reason,
            "PolicyNotAllowed"
        );
        let allowed = KeyPolicyLimits {
            allow_bypass_policy_lockout_safety_check: true,
            ..Default::default()
        };
        assert_eq!(bypass("c", true, Some(&allowed)), Ok(()));
    }

    #[test]
    fn untagged_keys_are_adopted_only_with_consent() {
        let me = owner();
        let refused = adoption("k1", &BTreeMap::new(), &me, "c", false).unwrap_err();
        assert_eq!(refused.reason, "AdoptionRefused");
        assert!(
            refused
                .message
                .contains("keyfleet.dev/adopt-by=payments/orders")
        );
        let consent = BTreeMap::from([(ADOPT_BY_TAG.to_string(), "payments/orders".to_string())]);
        assert_eq!(adoption("k1", &consent, &me, "c", false), Ok(()));
        let other = BTreeMap::from([(ADOPT_BY_TAG.to_string(), "orders/x".to_string())]);
        assert!(adoption("k1", &other, &me, "c", false).is_err());
        assert_eq!(adoption("k1", &BTreeMap::new(), &me, "c", true), Ok(()));
    }

    #[test]
    fn only_the_owner_may_modify_a_key() {
        let me = owner();
        let mine = me.tags();
        assert_eq!(may_modify("k", &mine, &me, &Claim::Recorded), Ok(()));
        let lost = may_modify("k", &BTreeMap::new(), &me, &Claim::Recorded).unwrap_err();
        assert_eq!(lost.reason, "OwnershipLost");
        assert!(lost.message.contains("owner tags were removed"));
        let mut theirs = me.tags();
        theirs.insert(plan::OWNER_UID_TAG.into(), "uid-2".into());
        theirs.insert(plan::OWNER_TAG.into(), "orders/other".into());
        assert!(may_modify("k", &theirs, &me, &Claim::Recorded).is_err());
        assert!(may_modify("k", &theirs, &me, &Claim::Adopted).is_err());
        assert_eq!(
            may_modify("k", &BTreeMap::new(), &me, &Claim::Adopted),
            Ok(())
        );
        let mut previous = me.tags();
        previous.insert(plan::OWNER_UID_TAG.into(), "uid-0".into());
        assert_eq!(
            may_modify("k", &previous, &me, &Claim::PreviousIncarnation),
            Ok(())
        );
        assert!(may_modify("k", &previous, &me, &Claim::Recorded).is_err());
        // A replica still tagged by its primary AwsKey, taken over by its AwsReplicaKey.
        let mut primary = me.tags();
        primary.insert(plan::OWNER_UID_TAG.into(), "uid-primary".into());
        primary.insert(plan::OWNER_TAG.into(), "payments/orders-primary".into());
        let replica_of = Claim::ReplicaOf("uid-primary".into());
        assert_eq!(may_modify("k", &primary, &me, &replica_of), Ok(()));
        assert!(may_modify("k", &theirs, &me, &replica_of).is_err());
    }
}
