//! Tests of the desired state: CCKM defaults, precise refusals, replicas and policy forms.

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{AwsKeyPolicyTemplate, AwsKeySpec, AwsReplicaKeySpec, KeySpec, KeyUsage};
use crate::plan::{DesiredKey, Owner};
use crate::policy::{self, POLICY_TEMPLATE_TAG};

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

/// The desired key of an AwsKey whose spec is the base `spec` with `json`'s fields, at `now`.
fn desired(json: serde_json::Value, now: Timestamp) -> Result<DesiredKey, SpecError> {
    desired_key(&spec(json), &owner(), None, now)
}

fn reason(json: serde_json::Value) -> &'static str {
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    desired(json, now).unwrap_err().reason
}

#[test]
fn defaults_follow_cckm_and_owner_tags_are_added() {
    let now = Timestamp::UNIX_EPOCH;
    let d = desired(serde_json::json!({"tags": {"team": "a"}}), now).unwrap();
    assert_eq!(d.key_usage, KeyUsage::EncryptDecrypt);
    assert_eq!(d.tags.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        d.tags.get(crate::plan::OWNER_UID_TAG).map(String::as_str),
        Some("u")
    );
    assert!(d.enabled);
    let rolling = desired(
        serde_json::json!({"expiration": {"rollingValidity": "90d"}}),
        now,
    )
    .unwrap();
    assert_eq!(
        rolling.rolling_validity,
        Some(SignedDuration::from_hours(90 * 24))
    );
    assert_eq!(rolling.valid_to, None);
    let hours = serde_json::json!({"expiration": {"rollingValidity": "8760h"}});
    assert_eq!(
        desired(hours, now).unwrap().rolling_validity,
        Some(SignedDuration::from_hours(8760))
    );
}

#[test]
fn bad_specs_get_precise_reasons() {
    use serde_json::json;
    let huge = format!("{{\"Sid\": \"{}\"}}", "x".repeat(policy::MAX_POLICY_BYTES));
    let secret = json!({"name": "m", "key": "k"});
    let cases = [
        (json!({"keySpec": "RSA_2048"}), "KeyUsageRequired"),
        (json!({"keyUsage": "SIGN_VERIFY"}), "InvalidKeyUsage"),
        (
            json!({"keySpec": "HMAC_256", "keyUsage": "ENCRYPT_DECRYPT"}),
            "InvalidKeyUsage",
        ),
        (json!({"alias": "orders"}), "InvalidAlias"),
        (json!({"alias": "alias/aws/s3"}), "InvalidAlias"),
        (json!({"tags": {"keyfleet.dev/owner": "x"}}), "InvalidTags"),
        (json!({"pendingWindowDays": 3}), "InvalidPendingWindow"),
        (
            json!({"policy": {"document": "{not json"}}),
            "PolicyInvalid",
        ),
        (json!({"policy": {"document": "[]"}}), "PolicyInvalid"),
        (json!({"policy": {"document": huge}}), "PolicyTooLarge"),
        (
            json!({"expiration": {"validTo": "2020-01-01T00:00:00Z"}}),
            "ValidToInPast",
        ),
        (
            json!({"expiration": {"validTo": "2999-01-01T00:00:00Z"}}),
            "ValidToTooFar",
        ),
        (
            json!({"expiration": {"rollingValidity": "400d"}}),
            "InvalidRollingValidity",
        ),
        (
            json!({"expiration": {"rollingValidity": "90d", "validTo": "2030-01-01T00:00:00Z"}}),
            "InvalidRollingValidity",
        ),
        (
            json!({"keySpec": "HMAC_256", "keyMaterial": {"secretRef": secret, "onChange": "Rotate"}}),
            "RotationUnsupported",
        ),
        (
            json!({"keySpec": "RSA_4096", "keyUsage": "SIGN_VERIFY",
                "keyMaterial": {"secretRef": secret, "wrappingAlgorithm": "RSAES_OAEP_SHA_256"}}),
            "WrappingAlgorithmUnsupported",
        ),
    ];
    for (json, expected) in cases {
        let shown = json.to_string();
        assert_eq!(reason(json), expected, "{shown}");
    }
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
    let arn = |region: &str| json_arn(&format!("arn:aws:kms:{region}:111122223333:key/1234abcd"));
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
        "expiration": {"validTo": "1970-06-01T00:00:00Z"}, "alias": "alias/p", "tags": {"a": "1"}}),
    );
    let replica: AwsReplicaKeySpec = serde_json::from_value(serde_json::json!({
        "primaryKeyRef": {"name": "p"}, "region": "eu-central-1", "alias": "alias/r",
        "tags": {"b": "2"}, "enabled": false}))
    .unwrap();
    let d = desired_replica(&replica, &primary, &owner(), None, Timestamp::UNIX_EPOCH).unwrap();
    assert_eq!(d.key_spec, KeySpec::Hmac256);
    assert_eq!(d.key_usage, KeyUsage::GenerateVerifyMac);
    assert!(d.multi_region);
    assert_eq!(d.valid_to, Some("1970-06-01T00:00:00Z".parse().unwrap()));
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
    let (r, m) = reason(serde_json::json!({"keyAdminsRoles": ["ops", "arn:aws:iam::1:role/x"]}))
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

#[test]
fn material_descriptions_name_the_source_fit_kms_and_keep_the_fingerprint() {
    let fp = "hmac-sha256:00112233445566778899aabbccddeeff";
    let d = material_description(fp, "Secret ns/orders rv 4711", "AwsKey", "ns", "orders");
    assert_eq!(
        d,
        "keyfleet hmac-sha256:00112233445566778899aabbccddeeff Secret ns/orders rv 4711 for AwsKey ns/orders"
    );
    assert_eq!(described_fingerprint(&d), Some(fp));
    assert_eq!(described_fingerprint("someone else's"), None);
    // Long names are cut at KMS's limit; odd characters are replaced; the fingerprint stays.
    let long = "n".repeat(300);
    let d = material_description(fp, "Secret ns/x rv {\"a\"}", "AwsKey", "ns", &long);
    assert_eq!(d.len(), MAX_MATERIAL_DESCRIPTION);
    assert!(d.contains("rv --a--"), "{d}");
    assert!(
        d.chars()
            .all(|c| c.is_ascii_alphanumeric() || ": /_.-".contains(c)),
        "{d}"
    );
    assert_eq!(described_fingerprint(&d), Some(fp));
}
