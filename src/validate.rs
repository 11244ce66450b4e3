//! Validate step (pure, no I/O): an AwsKey spec → the desired key and import settings, or a
//! precise reason. The controller and `keyfleet validate` share this code.

use jiff::{SignedDuration, Timestamp};

use std::collections::BTreeMap;

use crate::api::{
    AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, AwsKeySpec, AwsReplicaKeySpec, KeyFamily,
    KeyMaterialSource, KeyPolicy, KeyPolicyForm, KeySpec, KeyUsage, MaterialChangePolicy,
    TAG_PREFIX,
};
use crate::material::{WrappingAlgorithm, WrappingKeySpec};
use crate::plan::{DesiredKey, Owner};
use crate::policy::{self, DesiredPolicy, POLICY_TEMPLATE_TAG};

/// A spec keyfleet refuses, with the `Ready=False` reason and an actionable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub reason: &'static str,
    /// The offending field, as a path under the object (`spec.keyUsage`).
    pub field: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        reason,
        field,
        message: message.into(),
    }
}

/// How material is wrapped for ImportKeyMaterial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportSettings {
    pub algorithm: WrappingAlgorithm,
    pub wrapping_key_spec: WrappingKeySpec,
}

/// Checks the usage against the spec (CCKM defaults when unset).
pub fn key_usage(spec: KeySpec, usage: Option<KeyUsage>) -> Result<KeyUsage, SpecError> {
    match (usage, spec.default_usage()) {
        (None, Some(default)) => Ok(default),
        (None, None) => Err(refuse(
            "KeyUsageRequired",
            "spec.keyUsage",
            format!("{spec} keys must state keyUsage: ENCRYPT_DECRYPT or SIGN_VERIFY"),
        )),
        (Some(u), _) if spec.allowed_usages().contains(&u) => Ok(u),
        (Some(u), _) => Err(refuse(
            "InvalidKeyUsage",
            "spec.keyUsage",
            format!(
                "{u} is not a usage of {spec} keys; allowed: {}",
                spec.allowed_usages()
                    .iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Wrapping algorithm and wrapping key spec, defaulted per key spec and checked to fit.
pub fn import_settings(
    source: &KeyMaterialSource,
    spec: KeySpec,
) -> Result<ImportSettings, SpecError> {
    let (default_alg, default_wks) = WrappingAlgorithm::default_for(spec);
    let algorithm = source.wrapping_algorithm.unwrap_or(default_alg);
    let wrapping_key_spec = source.wrapping_key_spec.unwrap_or(default_wks);
    algorithm
        .check_compatible(spec, wrapping_key_spec)
        .map_err(|e| {
            refuse(
                e.reason(),
                "spec.keyMaterial.wrappingAlgorithm",
                e.to_string(),
            )
        })?;
    Ok(ImportSettings {
        algorithm,
        wrapping_key_spec,
    })
}

/// Checks that `adoptKeyArn`, when set, names a key in the AwsKey's own region (a key cannot
/// be adopted across regions).
pub fn adopt_key_region(spec: &AwsKeySpec) -> Result<(), SpecError> {
    let Some(arn) = &spec.adopt_key_arn else {
        return Ok(());
    };
    let arn_region = arn.split(':').nth(3).unwrap_or_default();
    if arn_region != spec.region {
        return Err(refuse(
            "AdoptionRefused",
            "spec.adoptKeyArn",
            format!(
                "adoptKeyArn is in region {arn_region}, but spec.region is {}",
                spec.region
            ),
        ));
    }
    Ok(())
}

/// Checks the alias: `alias/<name>` with letters, digits, `/ _ -`, not under `alias/aws/`.
fn check_alias(alias: Option<&String>) -> Result<(), SpecError> {
    let Some(alias) = alias else {
        return Ok(());
    };
    let name = alias.strip_prefix("alias/").unwrap_or_default();
    if name.is_empty()
        || alias.len() > 256
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
    {
        return Err(refuse(
            "InvalidAlias",
            "spec.alias",
            format!("{alias:?} is not a KMS alias: use alias/<name> with letters, digits, / _ -"),
        ));
    }
    if name.starts_with("aws/") {
        return Err(refuse(
            "InvalidAlias",
            "spec.alias",
            "alias/aws/ is reserved for AWS managed keys",
        ));
    }
    Ok(())
}

/// Refuses tag keys with the reserved `aws:` and `keyfleet.dev/` prefixes.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), SpecError> {
    match tags
        .keys()
        .find(|k| k.starts_with("aws:") || k.starts_with(TAG_PREFIX))
    {
        Some(reserved) => Err(refuse(
            "InvalidTags",
            "spec.tags",
            format!("tag key {reserved:?} is reserved (aws: and {TAG_PREFIX} prefixes)"),
        )),
        None => Ok(()),
    }
}

fn check_pending_window(days: i32) -> Result<(), SpecError> {
    if !(7..=30).contains(&days) {
        return Err(refuse(
            "InvalidPendingWindow",
            "spec.pendingWindowDays",
            format!("pendingWindowDays must be 7-30, got {days}"),
        ));
    }
    Ok(())
}

/// The policy a key must have: `spec.policy` in any of its three forms, rendered up to the
/// key's identity (placeholders); `None` for the AWS default policy. `template` is the
/// `AwsKeyPolicyTemplate` named by `templateRef`, when it exists.
pub fn desired_policy(
    policy: Option<&KeyPolicy>,
    template: Option<&AwsKeyPolicyTemplate>,
    key_spec: KeySpec,
    usage: KeyUsage,
) -> Result<Option<DesiredPolicy>, SpecError> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    let symmetric = key_spec == KeySpec::SymmetricDefault;
    let document = match policy.form() {
        None => {
            return Err(refuse(
                "PolicyInvalid",
                "spec.policy",
                "policy takes exactly one of: document, templateRef, or the shortcuts (keyAdmins, keyAdminsRoles, keyUsers, keyUsersRoles, externalAccounts)",
            ));
        }
        Some(KeyPolicyForm::Document(text)) => policy::parse_document(text)
            .map_err(|e| refuse(e.reason(), "spec.policy.document", e.to_string()))?,
        Some(KeyPolicyForm::Shortcuts(shortcuts)) => {
            policy::shortcuts::render(shortcuts, usage, symmetric)
                .map_err(|e| refuse("PolicyPrincipalInvalid", "spec.policy", e.to_string()))?
        }
        Some(KeyPolicyForm::Template(name)) => {
            let Some(template) = template.filter(|t| t.metadata.name.as_deref() == Some(name))
            else {
                return Err(refuse(
                    "PolicyTemplateNotFound",
                    "spec.policy.templateRef",
                    format!(
                        "AwsKeyPolicyTemplate {name} does not exist; create it or change spec.policy"
                    ),
                ));
            };
            template_document(name, &template.spec, usage, symmetric)?
        }
    };
    Ok(Some(DesiredPolicy {
        document,
        template: policy.template_ref.as_ref().map(|t| t.name.clone()),
        keep_manageable_by: None,
    }))
}

/// A template's document, or its shortcuts rendered for a key of `usage`.
fn template_document(
    name: &str,
    template: &AwsKeyPolicyTemplateSpec,
    usage: KeyUsage,
    symmetric: bool,
) -> Result<serde_json::Value, SpecError> {
    let invalid = |message: String| {
        refuse(
            "PolicyTemplateInvalid",
            "spec.policy.templateRef",
            format!("AwsKeyPolicyTemplate {name}: {message}"),
        )
    };
    match (&template.document, template.shortcuts.is_empty()) {
        (Some(text), true) => policy::parse_document(text).map_err(|e| invalid(e.to_string())),
        (None, false) => policy::shortcuts::render(&template.shortcuts, usage, symmetric)
            .map_err(|e| invalid(e.to_string())),
        _ => Err(invalid(
            "a template takes exactly one of: document, or the shortcuts".into(),
        )),
    }
}

/// Every refusal of an `AwsKeyPolicyTemplate` on its own (for any key usage).
pub fn template_errors(name: &str, template: &AwsKeyPolicyTemplateSpec) -> Vec<SpecError> {
    template_document(name, template, KeyUsage::EncryptDecrypt, true)
        .err()
        .map(|e| SpecError {
            field: if template.document.is_some() && template.shortcuts.is_empty() {
                "spec.document"
            } else {
                "spec"
            },
            ..e
        })
        .into_iter()
        .collect()
}

/// The checks of [`desired_policy`] that need no template (`keyfleet validate`).
fn check_policy(
    policy: Option<&KeyPolicy>,
    key_spec: KeySpec,
    usage: Option<KeyUsage>,
) -> Result<(), SpecError> {
    if policy.is_some_and(|p| matches!(p.form(), Some(KeyPolicyForm::Template(_)))) {
        return Ok(());
    }
    let usage = usage
        .or(key_spec.default_usage())
        .unwrap_or(KeyUsage::EncryptDecrypt);
    desired_policy(policy, None, key_spec, usage).map(|_| ())
}

/// The material expiry; it must lie after `now`.
fn valid_to(spec: &AwsKeySpec, now: Timestamp) -> Result<Option<Timestamp>, SpecError> {
    let valid_to = spec
        .expiration
        .as_ref()
        .and_then(|e| e.valid_to.as_ref())
        .map(|t| t.0);
    if let Some(t) = valid_to
        && t <= now
    {
        return Err(refuse(
            "ValidToInPast",
            "spec.expiration.validTo",
            format!("validTo {t} is in the past; KMS needs a future expiry (or none)"),
        ));
    }
    Ok(valid_to)
}

/// The rolling validity, when set: at most 365 days, and not together with `validTo`.
fn rolling_validity(spec: &AwsKeySpec) -> Result<Option<SignedDuration>, SpecError> {
    let Some(expiration) = &spec.expiration else {
        return Ok(None);
    };
    match expiration.rolling_validity() {
        None => Ok(None),
        Some(Err(message)) => Err(refuse(
            "InvalidRollingValidity",
            "spec.expiration.rollingValidity",
            message,
        )),
        Some(Ok(_)) if expiration.valid_to.is_some() => Err(refuse(
            "InvalidRollingValidity",
            "spec.expiration.rollingValidity",
            "validTo and rollingValidity are mutually exclusive",
        )),
        Some(Ok(d)) => Ok(Some(d)),
    }
}

/// Refuses `onChange: Rotate` for keys KMS cannot rotate (everything but SYMMETRIC_DEFAULT).
fn check_on_change(spec: &AwsKeySpec) -> Result<(), SpecError> {
    if spec.key_material.on_change == MaterialChangePolicy::Rotate
        && spec.key_spec.family() != KeyFamily::Symmetric
    {
        return Err(refuse(
            "RotationUnsupported",
            "spec.keyMaterial.onChange",
            format!(
                "onChange: Rotate needs a SYMMETRIC_DEFAULT key: KMS cannot rotate the material of {} keys; use Refuse",
                spec.key_spec
            ),
        ));
    }
    Ok(())
}

/// Every refusal of [`desired_key`] at once, in the order it checks them (it stops at the
/// first): for `keyfleet validate`, which reports all problems of a manifest in one run.
pub fn spec_errors(spec: &AwsKeySpec, now: Timestamp) -> Vec<SpecError> {
    [
        key_usage(spec.key_spec, spec.key_usage).err(),
        check_alias(spec.alias.as_ref()).err(),
        check_tags(&spec.tags).err(),
        check_pending_window(spec.pending_window_days).err(),
        check_policy(spec.policy.as_ref(), spec.key_spec, spec.key_usage).err(),
        valid_to(spec, now).err(),
        rolling_validity(spec).err(),
        check_on_change(spec).err(),
        import_settings(&spec.key_material, spec.key_spec).err(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The desired key for an AwsKey spec, as of `now`; `template` is the `AwsKeyPolicyTemplate`
/// its policy names, when it exists.
pub fn desired_key(
    spec: &AwsKeySpec,
    owner: &Owner,
    template: Option<&AwsKeyPolicyTemplate>,
    now: Timestamp,
) -> Result<DesiredKey, SpecError> {
    let usage = key_usage(spec.key_spec, spec.key_usage)?;
    check_alias(spec.alias.as_ref())?;
    check_tags(&spec.tags)?;
    check_pending_window(spec.pending_window_days)?;
    let policy = desired_policy(spec.policy.as_ref(), template, spec.key_spec, usage)?;
    let valid_to = valid_to(spec, now)?;
    let rolling_validity = rolling_validity(spec)?;
    check_on_change(spec)?;
    import_settings(&spec.key_material, spec.key_spec)?;

    let mut tags = spec.tags.clone();
    tags.extend(owner.tags());
    tags.extend(template_tag(policy.as_ref()));
    Ok(DesiredKey {
        key_spec: spec.key_spec,
        key_usage: usage,
        description: spec.description.clone().unwrap_or_default(),
        tags,
        alias: spec.alias.clone(),
        policy,
        bypass_policy_lockout_safety_check: spec.bypass_policy_lockout_safety_check,
        multi_region: spec.multi_region,
        valid_to,
        rolling_validity,
        on_change: spec.key_material.on_change,
        enabled: spec.enabled,
    })
}

/// The `keyfleet.dev/policy-template` tag of a key whose policy comes from a template.
fn template_tag(policy: Option<&DesiredPolicy>) -> Option<(String, String)> {
    let template = policy?.template.as_ref()?;
    Some((POLICY_TEMPLATE_TAG.to_string(), template.clone()))
}

fn without_policy(spec: &AwsKeySpec) -> AwsKeySpec {
    AwsKeySpec {
        policy: None,
        ..spec.clone()
    }
}

/// Whether `replica` can replicate `primary` at all: a multi-region primary, another region.
pub fn replica_relation(
    replica: &AwsReplicaKeySpec,
    primary: &AwsKeySpec,
) -> Result<(), SpecError> {
    if !primary.multi_region {
        return Err(refuse(
            "PrimaryNotMultiRegion",
            "spec.primaryKeyRef",
            format!(
                "the primary AwsKey {} has multiRegion: false; only multi-region keys can be replicated (multiRegion is immutable: create a new multi-region AwsKey)",
                replica.primary_key_ref.name
            ),
        ));
    }
    if replica.region == primary.region {
        return Err(refuse(
            "ReplicaRegionIsPrimaryRegion",
            "spec.region",
            format!(
                "the primary is in {}; a replica must be in another region",
                primary.region
            ),
        ));
    }
    Ok(())
}

/// Every refusal of a replica's own settings (alias, tags, pending window, policy) at once.
pub fn replica_spec_errors(replica: &AwsReplicaKeySpec) -> Vec<SpecError> {
    [
        check_alias(replica.alias.as_ref()).err(),
        check_tags(&replica.tags).err(),
        check_pending_window(replica.pending_window_days).err(),
        check_policy(replica.policy.as_ref(), KeySpec::SymmetricDefault, None).err(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The desired replica of a multi-region primary: spec, usage and material expiry come from the
/// primary; alias, description, tags, policy and enabled state are the replica's own.
pub fn desired_replica(
    replica: &AwsReplicaKeySpec,
    primary: &AwsKeySpec,
    owner: &Owner,
    template: Option<&AwsKeyPolicyTemplate>,
    now: Timestamp,
) -> Result<DesiredKey, SpecError> {
    replica_relation(replica, primary)?;
    // The primary's policy is not the replica's: only its template (if any) is looked up.
    let mut base = desired_key(&without_policy(primary), owner, None, now)?;
    check_alias(replica.alias.as_ref())?;
    check_tags(&replica.tags)?;
    check_pending_window(replica.pending_window_days)?;
    base.policy = desired_policy(
        replica.policy.as_ref(),
        template,
        base.key_spec,
        base.key_usage,
    )?;
    let mut tags = replica.tags.clone();
    tags.extend(owner.tags());
    tags.extend(template_tag(base.policy.as_ref()));
    base.tags = tags;
    base.alias = replica.alias.clone();
    base.description = replica.description.clone().unwrap_or_default();
    base.bypass_policy_lockout_safety_check = replica.bypass_policy_lockout_safety_check;
    base.enabled = replica.enabled;
    // A replica follows its primary's material; only the primary starts a rotation.
    base.on_change = MaterialChangePolicy::Refuse;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> AwsKeySpec {
        let mut base = serde_json::json!({
            "region": "eu-west-1",
            "keySpec": "SYMMETRIC_DEFAULT",
            "keyMaterial": {"secretRef": {"name": "m", "key": "k"}}
        });
        if let (Some(b), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn owner() -> Owner {
        Owner {
            cluster: "c".into(),
            namespace: "ns".into(),
            name: "k".into(),
            uid: "u".into(),
        }
    }

    fn reason(json: serde_json::Value) -> &'static str {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        desired_key(&spec(json), &owner(), None, now)
            .unwrap_err()
            .reason
    }

    #[test]
    fn defaults_follow_cckm_and_owner_tags_are_added() {
        let now = Timestamp::UNIX_EPOCH;
        let d = desired_key(
            &spec(serde_json::json!({"tags": {"team": "a"}})),
            &owner(),
            None,
            now,
        )
        .unwrap();
        assert_eq!(d.key_usage, KeyUsage::EncryptDecrypt);
        assert_eq!(d.tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            d.tags.get(crate::plan::OWNER_UID_TAG).map(String::as_str),
            Some("u")
        );
        assert!(d.enabled);
        let rolling = desired_key(
            &spec(serde_json::json!({"expiration": {"rollingValidity": "90d"}})),
            &owner(),
            None,
            now,
        )
        .unwrap();
        assert_eq!(
            rolling.rolling_validity,
            Some(SignedDuration::from_hours(90 * 24))
        );
        assert_eq!(rolling.valid_to, None);
        let hours = spec(serde_json::json!({"expiration": {"rollingValidity": "8760h"}}));
        assert_eq!(
            desired_key(&hours, &owner(), None, now)
                .unwrap()
                .rolling_validity,
            Some(SignedDuration::from_hours(8760))
        );
    }

    #[test]
    fn bad_specs_get_precise_reasons() {
        use serde_json::json;
        assert_eq!(reason(json!({"keySpec": "RSA_2048"})), "KeyUsageRequired");
        assert_eq!(
            reason(json!({"keyUsage": "SIGN_VERIFY"})),
            "InvalidKeyUsage"
        );
        assert_eq!(
            reason(json!({"keySpec": "HMAC_256", "keyUsage": "ENCRYPT_DECRYPT"})),
            "InvalidKeyUsage"
        );
        assert_eq!(reason(json!({"alias": "orders"})), "InvalidAlias");
        assert_eq!(reason(json!({"alias": "alias/aws/s3"})), "InvalidAlias");
        assert_eq!(
            reason(json!({"tags": {"keyfleet.dev/owner": "x"}})),
            "InvalidTags"
        );
        assert_eq!(
            reason(json!({"pendingWindowDays": 3})),
            "InvalidPendingWindow"
        );
        assert_eq!(
            reason(json!({"policy": {"document": "{not json"}})),
            "PolicyInvalid"
        );
        assert_eq!(
            reason(json!({"policy": {"document": "[]"}})),
            "PolicyInvalid"
        );
        let huge = format!("{{\"Sid\": \"{}\"}}", "x".repeat(policy::MAX_POLICY_BYTES));
        assert_eq!(
            reason(json!({"policy": {"document": huge}})),
            "PolicyTooLarge"
        );
        assert_eq!(
            reason(json!({"expiration": {"validTo": "2020-01-01T00:00:00Z"}})),
            "ValidToInPast"
        );
        assert_eq!(
            reason(json!({"expiration": {"rollingValidity": "400d"}})),
            "InvalidRollingValidity"
        );
        assert_eq!(
            reason(
                json!({"expiration": {"rollingValidity": "90d", "validTo": "2030-01-01T00:00:00Z"}})
            ),
            "InvalidRollingValidity"
        );
        assert_eq!(
            reason(
                json!({"keySpec": "HMAC_256", "keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "onChange": "Rotate"}})
            ),
            "RotationUnsupported"
        );
        assert_eq!(
            reason(json!({"keySpec": "RSA_4096", "keyUsage": "SIGN_VERIFY",
                "keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "wrappingAlgorithm": "RSAES_OAEP_SHA_256"}})),
            "WrappingAlgorithmUnsupported"
        );
    }

    #[test]
    fn spec_errors_lists_every_refusal_and_starts_with_desired_keys() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let bad = spec(serde_json::json!({
            "keySpec": "RSA_2048",
            "alias": "orders",
            "pendingWindowDays": 3,
            "policy": {"document": "[]"},
            "expiration": {"validTo": "2020-01-01T00:00:00Z"},
            "keyMaterial": {"secretRef": {"name": "m", "key": "k"},
                "wrappingAlgorithm": "RSAES_OAEP_SHA_256"}
        }));
        let reasons: Vec<&str> = spec_errors(&bad, now).iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [
                "KeyUsageRequired",
                "InvalidAlias",
                "InvalidPendingWindow",
                "PolicyInvalid",
                "ValidToInPast",
                "WrappingAlgorithmUnsupported"
            ]
        );
        assert_eq!(
            desired_key(&bad, &owner(), None, now).unwrap_err(),
            spec_errors(&bad, now)[0]
        );
        assert_eq!(spec_errors(&spec(serde_json::json!({})), now), vec![]);
    }

    #[test]
    fn adopted_keys_must_be_in_the_keys_region() {
        let arn =
            |region: &str| json_arn(&format!("arn:aws:kms:{region}:111122223333:key/1234abcd"));
        assert_eq!(adopt_key_region(&spec(serde_json::json!({}))), Ok(()));
        assert_eq!(adopt_key_region(&spec(arn("eu-west-1"))), Ok(()));
        let e = adopt_key_region(&spec(arn("us-east-1"))).unwrap_err();
        assert_eq!(e.reason, "AdoptionRefused");
        assert_eq!(e.field, "spec.adoptKeyArn");
        assert_eq!(
            e.message,
            "adoptKeyArn is in region us-east-1, but spec.region is eu-west-1"
        );
    }

    fn json_arn(arn: &str) -> serde_json::Value {
        serde_json::json!({ "adoptKeyArn": arn })
    }

    #[test]
    fn replicas_take_spec_and_expiry_from_the_primary_and_the_rest_from_themselves() {
        let primary = spec(
            serde_json::json!({"multiRegion": true, "keySpec": "HMAC_256",
            "expiration": {"validTo": "2030-01-01T00:00:00Z"}, "alias": "alias/p", "tags": {"a": "1"}}),
        );
        let replica: AwsReplicaKeySpec = serde_json::from_value(serde_json::json!({
            "primaryKeyRef": {"name": "p"}, "region": "eu-central-1", "alias": "alias/r",
            "tags": {"b": "2"}, "enabled": false}))
        .unwrap();
        let d = desired_replica(&replica, &primary, &owner(), None, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(d.key_spec, KeySpec::Hmac256);
        assert_eq!(d.key_usage, KeyUsage::GenerateVerifyMac);
        assert!(d.multi_region);
        assert_eq!(d.valid_to, Some("2030-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(d.alias.as_deref(), Some("alias/r"));
        assert_eq!(d.tags.get("b").map(String::as_str), Some("2"));
        assert!(!d.tags.contains_key("a"));
        assert!(!d.enabled);

        let single = spec(serde_json::json!({}));
        assert_eq!(
            desired_replica(&replica, &single, &owner(), None, Timestamp::UNIX_EPOCH)
                .unwrap_err()
                .reason,
            "PrimaryNotMultiRegion"
        );
        let same: AwsReplicaKeySpec = serde_json::from_value(serde_json::json!({
            "primaryKeyRef": {"name": "p"}, "region": "eu-west-1"}))
        .unwrap();
        assert_eq!(
            desired_replica(&same, &primary, &owner(), None, Timestamp::UNIX_EPOCH)
                .unwrap_err()
                .reason,
            "ReplicaRegionIsPrimaryRegion"
        );
    }

    fn template(name: &str, spec: serde_json::Value) -> AwsKeyPolicyTemplate {
        AwsKeyPolicyTemplate::new(name, serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn policy_forms_are_exclusive_and_each_is_checked() {
        let now = Timestamp::UNIX_EPOCH;
        let reason = |policy: serde_json::Value| {
            let s = spec(serde_json::json!({ "policy": policy }));
            desired_key(&s, &owner(), None, now)
                .map(|_| ())
                .map_err(|e| (e.reason, e.message))
        };
        let (r, m) = reason(serde_json::json!({"document": "{}", "keyUsers": ["a"]})).unwrap_err();
        assert_eq!(r, "PolicyInvalid");
        assert!(m.contains("exactly one of"), "{m}");
        assert_eq!(
            reason(serde_json::json!({})).unwrap_err().0,
            "PolicyInvalid"
        );
        let (r, m) =
            reason(serde_json::json!({"keyAdminsRoles": ["ops", "arn:aws:iam::1:role/x"]}))
                .unwrap_err();
        assert_eq!(r, "PolicyPrincipalInvalid");
        assert!(
            m.starts_with("keyAdminsRoles[1] \"arn:aws:iam::1:role/x\""),
            "{m}"
        );
        let (r, m) = reason(serde_json::json!({"templateRef": {"name": "standard"}})).unwrap_err();
        assert_eq!(r, "PolicyTemplateNotFound");
        assert!(
            m.contains("AwsKeyPolicyTemplate standard does not exist"),
            "{m}"
        );
        assert_eq!(
            reason(serde_json::json!({"document": "{\"Resource\": \"${Key}\"}"}))
                .unwrap_err()
                .0,
            "PolicyInvalid"
        );
        assert!(reason(serde_json::json!({"externalAccounts": ["444455556666"]})).is_ok());
        // keyfleet validate sees the same refusals, except a template it cannot look up.
        let s = spec(serde_json::json!({"policy": {"keyUsers": ["not ok"]}}));
        assert_eq!(spec_errors(&s, now)[0].reason, "PolicyPrincipalInvalid");
        let s = spec(serde_json::json!({"policy": {"templateRef": {"name": "standard"}}}));
        assert_eq!(spec_errors(&s, now), vec![]);
    }

    #[test]
    fn a_template_policy_is_rendered_for_the_key_and_tags_it() {
        let now = Timestamp::UNIX_EPOCH;
        let s = spec(serde_json::json!({"policy": {"templateRef": {"name": "standard"}}}));
        let shortcuts = template("standard", serde_json::json!({"keyUsersRoles": ["app"]}));
        let d = desired_key(&s, &owner(), Some(&shortcuts), now).unwrap();
        let policy = d.policy.unwrap();
        assert_eq!(policy.template.as_deref(), Some("standard"));
        assert!(policy.document.to_string().contains("role/app"));
        assert_eq!(
            d.tags.get(POLICY_TEMPLATE_TAG).map(String::as_str),
            Some("standard")
        );

        // A template of another name is not this key's template.
        let other = template("other", serde_json::json!({"keyUsersRoles": ["app"]}));
        assert_eq!(
            desired_key(&s, &owner(), Some(&other), now)
                .unwrap_err()
                .reason,
            "PolicyTemplateNotFound"
        );
        for bad in [
            serde_json::json!({"document": "[1]"}),
            serde_json::json!({"document": "{}", "keyUsers": ["a"]}),
            serde_json::json!({"keyUsers": ["a b"]}),
        ] {
            let e = desired_key(&s, &owner(), Some(&template("standard", bad)), now).unwrap_err();
            assert_eq!(e.reason, "PolicyTemplateInvalid");
            assert!(
                e.message.starts_with("AwsKeyPolicyTemplate standard: "),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn a_replica_renders_its_own_template_for_the_primary_usage() {
        let primary = spec(serde_json::json!({
            "multiRegion": true, "keySpec": "HMAC_256",
            "keyMaterial": {"secretRef": {"name": "s", "key": "k"}},
            "policy": {"templateRef": {"name": "primary-only"}}
        }));
        let replica: AwsReplicaKeySpec = serde_json::from_value(serde_json::json!({
            "primaryKeyRef": {"name": "p"}, "region": "eu-central-1",
            "policy": {"templateRef": {"name": "replicas"}}
        }))
        .unwrap();
        let t = template("replicas", serde_json::json!({"keyUsers": ["bob"]}));
        let d = desired_replica(
            &replica,
            &primary,
            &owner(),
            Some(&t),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let doc = d.policy.unwrap().document.to_string();
        assert!(doc.contains("kms:GenerateMac"), "{doc}");
        assert_eq!(
            d.tags.get(POLICY_TEMPLATE_TAG).map(String::as_str),
            Some("replicas")
        );
    }
}
