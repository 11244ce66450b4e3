//! An AwsKey's own settings → the desired key: usage, alias, tags, pending window, expiry,
//! rotation and adoption, with the policy of `super::policy` and the wrapping of
//! `super::import`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::api::{
    AwsKeyPolicyTemplate, AwsKeySpec, KeyFamily, KeySpec, KeyUsage, MaterialChangePolicy,
    TAG_PREFIX,
};
use crate::plan::{DesiredKey, Owner};
use crate::policy::{DesiredPolicy, POLICY_TEMPLATE_TAG};

use super::import::import_settings;
use super::policy::{check_policy, desired_policy};
use super::{SpecError, refuse};

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
pub(super) fn check_alias(alias: Option<&String>) -> Result<(), SpecError> {
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
pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), SpecError> {
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

pub(super) fn check_pending_window(days: i32) -> Result<(), SpecError> {
    if !(7..=30).contains(&days) {
        return Err(refuse(
            "InvalidPendingWindow",
            "spec.pendingWindowDays",
            format!("pendingWindowDays must be 7-30, got {days}"),
        ));
    }
    Ok(())
}

/// How far ahead KMS accepts a material expiry (ImportKeyMaterial's ValidTo).
const MAX_VALID_TO_AHEAD: SignedDuration = SignedDuration::from_hours(365 * 24);

/// The material expiry; it must lie after `now`, and at most 365 days after it (KMS refuses a
/// later ValidTo; such a spec becomes valid as the date comes within a year).
fn valid_to(spec: &AwsKeySpec, now: Timestamp) -> Result<Option<Timestamp>, SpecError> {
    let valid_to = spec
        .expiration
        .as_ref()
        .and_then(|e| e.valid_to.as_ref())
        .map(|t| t.0);
    let Some(t) = valid_to else {
        return Ok(None);
    };
    if t <= now {
        return Err(refuse(
            "ValidToInPast",
            "spec.expiration.validTo",
            format!("validTo {t} is in the past; KMS needs a future expiry (or none)"),
        ));
    }
    if now.duration_until(t) > MAX_VALID_TO_AHEAD {
        return Err(refuse(
            "ValidToTooFar",
            "spec.expiration.validTo",
            format!(
                "validTo {t} is more than 365 days ahead, and KMS accepts an expiry at most 365 days ahead; set one within a year (keyfleet re-imports when you move it), or use rollingValidity"
            ),
        ));
    }
    Ok(Some(t))
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
        rolling_validity(spec).err(),
        valid_to(spec, now).err(),
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
    let rolling_validity = rolling_validity(spec)?;
    let valid_to = valid_to(spec, now)?;
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
        retire: spec.key_material.retire.clone(),
        expiring_previous_material: spec.key_material.expiring_previous_material,
        enabled: spec.enabled,
    })
}

/// The `keyfleet.dev/policy-template` tag of a key whose policy comes from a template.
pub(super) fn template_tag(policy: Option<&DesiredPolicy>) -> Option<(String, String)> {
    let template = policy?.template.as_ref()?;
    Some((POLICY_TEMPLATE_TAG.to_string(), template.clone()))
}
