//! Table tests of the planner.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{KeySpec, KeyUsage, MaterialChangePolicy};
use crate::policy::{self, DesiredPolicy, KeyIdentity};

fn owner() -> Owner {
    Owner {
        cluster: "c1".into(),
        namespace: "team".into(),
        name: "orders".into(),
        uid: "uid-1".into(),
    }
}

fn desired() -> DesiredKey {
    let mut tags = owner().tags();
    tags.insert("team".into(), "payments".into());
    DesiredKey {
        key_spec: KeySpec::SymmetricDefault,
        key_usage: KeyUsage::EncryptDecrypt,
        description: "orders key".into(),
        tags,
        alias: Some("alias/orders".into()),
        policy: None,
        bypass_policy_lockout_safety_check: false,
        multi_region: false,
        valid_to: None,
        rolling_validity: None,
        on_change: MaterialChangePolicy::Refuse,
        retire: vec![],
        expiring_previous_material: Default::default(),
        enabled: true,
    }
}

fn converged_observed() -> ObservedKey {
    let d = desired();
    ObservedKey {
        identity: KeyIdentity::from_arn("arn:aws:kms:eu-west-1:000000000000:key/k1")
            .expect("a key ARN"),
        state: KeyState::Enabled,
        origin: "EXTERNAL".into(),
        key_spec: Some(d.key_spec),
        key_usage: Some(d.key_usage),
        multi_region: false,
        description: d.description.clone(),
        valid_to: None,
        material_expires: false,
        tags: d.tags.clone(),
        aliases: BTreeSet::from(["alias/orders".to_string()]),
        policy: None,
        replicas: vec![],
        current_key_material_id: None,
        materials: None,
        metadata_read: true,
        policy_read: true,
    }
}

const FP: MaterialFacts<'static> = MaterialFacts {
    secret_fingerprint: "fp-a",
    imported_fingerprint: Some("fp-a"),
    now: Timestamp::UNIX_EPOCH,
    renew_before: SignedDuration::from_hours(30 * 24),
    rotation: RotationFacts::None,
    retained: &[],
    unproven: false,
    unlisted: false,
};

fn plan(d: &DesiredKey, o: &ObservedKey) -> Plan {
    plan_key(d, o, &FP, None, false)
}

fn doc_policy(document: serde_json::Value) -> DesiredPolicy {
    DesiredPolicy {
        document,
        template: None,
        keep_manageable_by: None,
    }
}

fn keyfleet_role() -> crate::policy::Caller {
    crate::policy::Caller {
        arn: "arn:aws:sts::000000000000:assumed-role/keyfleet/keyfleet".into(),
        account_id: "000000000000".into(),
    }
}

#[test]
fn policy_placeholders_are_filled_from_the_key_arn_before_comparing() {
    let mut d = desired();
    let mut o = converged_observed();
    d.policy = Some(doc_policy(serde_json::json!({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:${Partition}:iam::${AccountId}:root"},
        "Action": "kms:*", "Resource": "${KeyArn}"}]})));
    let expected = serde_json::json!({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
        "Action": "kms:*", "Resource": "arn:aws:kms:eu-west-1:000000000000:key/k1"}]});
    assert_eq!(
        plan(&d, &o).actions,
        vec![Action::PutKeyPolicy {
            policy: expected.to_string(),
            bypass_lockout_check: false
        }]
    );
    o.policy = Some(expected);
    assert!(plan(&d, &o).converged());
}

#[test]
fn a_policy_that_locks_keyfleet_out_is_not_applied_unless_bypassed() {
    let mut d = desired();
    let o = converged_observed();
    let mut policy = doc_policy(serde_json::json!({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:role/someone-else"},
        "Action": "kms:*", "Resource": "*"}]}));
    policy.keep_manageable_by = Some(keyfleet_role());
    d.policy = Some(policy);
    d.description = "changed".into();
    let p = plan(&d, &o);
    assert_eq!(p.actions, vec![Action::UpdateDescription("changed".into())]);
    let Some(Blocker::PolicyLockout(why)) = &p.blocker else {
        panic!("expected PolicyLockout, got {:?}", p.blocker);
    };
    assert!(why.contains("kms:PutKeyPolicy"), "{why}");
    assert_eq!(p.blocker.as_ref().unwrap().reason(), "PolicyLockout");

    d.bypass_policy_lockout_safety_check = true;
    let p = plan(&d, &o);
    assert_eq!(p.blocker, None);
    assert!(matches!(
        p.actions.last(),
        Some(Action::PutKeyPolicy {
            bypass_lockout_check: true,
            ..
        })
    ));
}

#[test]
fn a_rendered_policy_over_32_kb_is_refused() {
    let mut d = desired();
    let long_arns: Vec<String> = (0..600)
        .map(|i| {
            format!("arn:aws:iam::${{AccountId}}:role/application-role-with-a-long-name-{i:04}")
        })
        .collect();
    d.policy = Some(doc_policy(serde_json::json!({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": long_arns}, "Action": "kms:*", "Resource": "*"}]})));
    let p = plan(&d, &converged_observed());
    assert!(matches!(p.blocker, Some(Blocker::PolicyTooLarge(n)) if n > policy::MAX_POLICY_BYTES));
    assert!(p.actions.is_empty());
}

#[test]
fn a_describe_only_read_plans_no_tag_alias_or_policy_change() {
    let mut d = desired();
    d.policy = Some(doc_policy(
        serde_json::json!({"Version": "2012-10-17", "Statement": []}),
    ));
    // What DescribeKey alone shows: no tags, aliases or policy.
    let mut o = converged_observed();
    o.tags.clear();
    o.aliases.clear();
    o.policy = None;
    o.metadata_read = false;
    o.policy_read = false;
    assert_eq!(plan(&d, &o).actions, vec![]);
    // The same key after a drift read gets everything repaired.
    o.metadata_read = true;
    o.policy_read = true;
    let names: Vec<&str> = plan(&d, &o).actions.iter().map(Action::name).collect();
    assert_eq!(names, ["TagResource", "CreateAlias", "PutKeyPolicy"]);
    // State drift is repaired on a describe-only read too.
    o.metadata_read = false;
    o.policy_read = false;
    o.state = KeyState::Disabled;
    assert_eq!(plan(&d, &o).actions, vec![Action::EnableKey]);
}

#[test]
fn converged_key_needs_nothing() {
    let p = plan(&desired(), &converged_observed());
    assert!(p.converged(), "{p:?}");
}

#[test]
fn table_of_single_differences() {
    let valid_to: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    type Case = (
        &'static str,
        fn(&mut DesiredKey, &mut ObservedKey),
        Vec<Action>,
    );
    let cases: Vec<Case> = vec![
        (
            "pending import imports",
            |_, o| o.state = KeyState::PendingImport,
            vec![Action::ImportMaterial { valid_to: None }],
        ),
        (
            "disabled in AWS is enabled",
            |_, o| o.state = KeyState::Disabled,
            vec![Action::EnableKey],
        ),
        (
            "disable on request",
            |d, _| d.enabled = false,
            vec![Action::DisableKey],
        ),
        (
            "pending import of a key meant to be disabled imports then disables",
            |d, o| {
                d.enabled = false;
                o.state = KeyState::PendingImport;
            },
            vec![
                Action::ImportMaterial { valid_to: None },
                Action::DisableKey,
            ],
        ),
        (
            "description drift",
            |_, o| o.description = "changed by hand".into(),
            vec![Action::UpdateDescription("orders key".into())],
        ),
        (
            "tag value drift",
            |_, o| {
                o.tags.insert("team".into(), "other".into());
            },
            vec![Action::TagResource(BTreeMap::from([(
                "team".into(),
                "payments".into(),
            )]))],
        ),
        (
            "foreign tag removed, aws: tag kept",
            |_, o| {
                o.tags.insert("added-by-hand".into(), "x".into());
                o.tags.insert("aws:cloudformation:stack".into(), "x".into());
            },
            vec![Action::UntagResource(vec!["added-by-hand".into()])],
        ),
        (
            "alias missing",
            |_, o| o.aliases.clear(),
            vec![Action::CreateAlias("alias/orders".into())],
        ),
        (
            "alias renamed",
            |d, _| d.alias = Some("alias/orders-v2".into()),
            vec![
                Action::CreateAlias("alias/orders-v2".into()),
                Action::DeleteAlias("alias/orders".into()),
            ],
        ),
        (
            "expiry set re-imports the same material",
            |d, _| d.valid_to = Some("2030-01-01T00:00:00Z".parse().unwrap()),
            vec![Action::ImportMaterial {
                valid_to: Some(valid_to),
            }],
        ),
        (
            "policy drift",
            |d, o| {
                d.policy = Some(doc_policy(
                    serde_json::json!({"Version": "2012-10-17", "Statement": []}),
                ));
                o.policy = Some(
                    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}),
                );
            },
            vec![Action::PutKeyPolicy {
                // serde_json's rendering of the desired document, whatever its key order.
                policy: serde_json::json!({"Version": "2012-10-17", "Statement": []}).to_string(),
                bypass_lockout_check: false,
            }],
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut d = desired();
        let mut o = converged_observed();
        mutate(&mut d, &mut o);
        let p = plan(&d, &o);
        assert_eq!(p.actions, expected, "case: {name}");
        assert_eq!(p.blocker, None, "case: {name}");
    }
}

#[test]
fn policy_equal_in_meaning_is_not_rewritten() {
    let mut d = desired();
    let mut o = converged_observed();
    d.policy = serde_json::from_str(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .ok()
        .map(doc_policy);
    o.policy =
        serde_json::from_str("{\n  \"Statement\": [],\n  \"Version\": \"2012-10-17\"\n}").ok();
    assert!(plan(&d, &o).converged());
}

#[test]
fn material_mismatch_blocks_import_but_not_metadata() {
    let mut o = converged_observed();
    o.state = KeyState::PendingImport;
    o.description = "x".into();
    let facts = MaterialFacts {
        secret_fingerprint: "fp-b",
        imported_fingerprint: Some("fp-a"),
        ..FP
    };
    let p = plan_key(&desired(), &o, &facts, None, false);
    assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
    assert_eq!(
        p.actions,
        vec![Action::UpdateDescription("orders key".into())]
    );
}

#[test]
fn unknown_imported_fingerprint_is_not_a_mismatch() {
    let mut o = converged_observed();
    o.state = KeyState::PendingImport;
    let facts = MaterialFacts {
        secret_fingerprint: "fp-b",
        imported_fingerprint: None,
        ..FP
    };
    let p = plan_key(&desired(), &o, &facts, None, false);
    assert_eq!(p.actions, vec![Action::ImportMaterial { valid_to: None }]);
}

#[test]
fn pending_deletion_is_reported_unless_restoring() {
    let mut o = converged_observed();
    o.state = KeyState::PendingDeletion;
    let p = plan(&desired(), &o);
    assert_eq!(p.blocker, Some(Blocker::KeyPendingDeletion));
    assert!(p.actions.is_empty());
    let p = plan_key(&desired(), &o, &FP, None, true);
    assert_eq!(p.actions, vec![Action::CancelKeyDeletion]);
    assert_eq!(p.blocker, None);
}

#[test]
fn transitional_states_wait() {
    for state in [
        KeyState::Creating,
        KeyState::Updating,
        KeyState::Unavailable,
    ] {
        let mut o = converged_observed();
        o.state = state.clone();
        let p = plan(&desired(), &o);
        assert!(matches!(p.blocker, Some(Blocker::Waiting(_))), "{state:?}");
        assert!(p.actions.is_empty());
    }
}

#[test]
fn incompatible_keys_are_refused() {
    type Mutation = fn(&mut ObservedKey);
    let cases: [(Mutation, &str); 4] = [
        (|o| o.origin = "AWS_KMS".into(), "origin is AWS_KMS"),
        (
            |o| o.key_spec = Some(KeySpec::Rsa2048),
            "key spec is RSA_2048",
        ),
        (
            |o| o.key_usage = Some(KeyUsage::SignVerify),
            "key usage is SIGN_VERIFY",
        ),
        (|o| o.multi_region = true, "multiRegion is true"),
    ];
    for (mutate, needle) in cases {
        let mut o = converged_observed();
        mutate(&mut o);
        let p = plan(&desired(), &o);
        match p.blocker {
            Some(Blocker::KeyIncompatible(why)) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected KeyIncompatible({needle}), got {other:?}"),
        }
        assert!(p.actions.is_empty());
    }
}

#[test]
fn alias_pointing_elsewhere_is_reported_and_not_stolen() {
    let mut o = converged_observed();
    o.aliases.clear();
    let target = AliasTarget::OtherKey("other-key".into());
    let p = plan_key(&desired(), &o, &FP, Some(&target), false);
    assert_eq!(p.blocker, Some(Blocker::AliasInUse("alias/orders".into())));
    assert!(p.actions.is_empty());
}

#[test]
fn rolling_validity_is_renewed_only_below_the_threshold() {
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let day = SignedDuration::from_hours(24);
    let mut d = desired();
    d.rolling_validity = Some(day * 90);
    let facts = MaterialFacts { now, ..FP };
    // 90d rolling, 30d renew_before: threshold min(30d, 30d) = 30d.
    assert_eq!(renew_threshold(day * 90, day * 30), day * 30);
    // A short validity renews at two thirds of its life.
    assert_eq!(renew_threshold(day * 9, day * 30), day * 3);
    let expect_import = vec![Action::ImportMaterial {
        valid_to: Some(now + day * 90),
    }];
    let cases: [(&str, Option<Timestamp>, bool); 5] = [
        ("plenty left", Some(now + day * 60), false),
        (
            "just above the threshold",
            Some(now + day * 30 + SignedDuration::from_secs(1)),
            false,
        ),
        ("below the threshold", Some(now + day * 29), true),
        ("already expired", Some(now - day), true),
        ("material that does not expire", None, true),
    ];
    for (name, valid_to, renew) in cases {
        let mut o = converged_observed();
        o.valid_to = valid_to;
        let p = plan_key(&d, &o, &facts, None, false);
        let want = if renew { expect_import.clone() } else { vec![] };
        assert_eq!(p.actions, want, "case: {name}");
    }
    // Material in PendingImport gets now + rolling validity.
    let mut o = converged_observed();
    o.state = KeyState::PendingImport;
    assert_eq!(plan_key(&d, &o, &facts, None, false).actions, expect_import);
}

#[test]
fn a_changed_secret_is_refused_or_rotated() {
    let changed = MaterialFacts {
        secret_fingerprint: "fp-b",
        ..FP
    };
    let mut d = desired();
    // Refuse (default): blocked, nothing imported.
    let p = plan_key(&d, &converged_observed(), &changed, None, false);
    assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
    assert!(p.actions.is_empty());
    // Rotate: new material first.
    d.on_change = MaterialChangePolicy::Rotate;
    let p = plan_key(&d, &converged_observed(), &changed, None, false);
    assert_eq!(
        p.actions,
        vec![Action::ImportNewMaterial { valid_to: None }]
    );
    // Imported and every replica holds it: rotate; replicas still importing: wait.
    let pending = |ready| MaterialFacts {
        rotation: RotationFacts::PrimaryPending {
            fingerprint: "fp-b",
            ready,
        },
        ..changed
    };
    let p = plan_key(&d, &converged_observed(), &pending(true), None, false);
    assert_eq!(p.actions, vec![Action::RotateOnDemand]);
    let p = plan_key(&d, &converged_observed(), &pending(false), None, false);
    assert_eq!(p.blocker, Some(Blocker::RotationPending));
    assert!(p.actions.is_empty());
    // Pending material that is not the Secret's (changed again): import the newest.
    let stale = MaterialFacts {
        secret_fingerprint: "fp-c",
        ..pending(true)
    };
    let p = plan_key(&d, &converged_observed(), &stale, None, false);
    assert_eq!(
        p.actions,
        vec![Action::ImportNewMaterial { valid_to: None }]
    );
    // KMS cannot rotate HMAC/RSA/ECC keys.
    let mut hmac = d.clone();
    hmac.key_spec = KeySpec::Hmac256;
    hmac.key_usage = KeyUsage::GenerateVerifyMac;
    let mut o = converged_observed();
    o.key_spec = Some(KeySpec::Hmac256);
    o.key_usage = Some(KeyUsage::GenerateVerifyMac);
    let p = plan_key(&hmac, &o, &changed, None, false);
    assert_eq!(
        p.blocker,
        Some(Blocker::RotationUnsupported(KeySpec::Hmac256))
    );
    assert!(p.actions.is_empty());
    // Without current material there is nothing to rotate from.
    let mut o = converged_observed();
    o.state = KeyState::PendingImport;
    let p = plan_key(&d, &o, &changed, None, false);
    assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
    assert!(p.actions.is_empty());
}

#[test]
fn replicas_import_the_primarys_pending_material_once_and_never_rotate() {
    let replica_pending = |imported| MaterialFacts {
        secret_fingerprint: "fp-b",
        rotation: RotationFacts::ReplicaPending {
            fingerprint: "fp-b",
            key_material_id: Some("km-2"),
            imported,
        },
        ..FP
    };
    let p = plan_key(
        &desired(),
        &converged_observed(),
        &replica_pending(false),
        None,
        false,
    );
    assert_eq!(
        p.actions,
        vec![Action::ImportRotationMaterial {
            valid_to: None,
            key_material_id: Some("km-2".into())
        }]
    );
    assert_eq!(p.blocker, None);
    let p = plan_key(
        &desired(),
        &converged_observed(),
        &replica_pending(true),
        None,
        false,
    );
    assert!(p.converged(), "{p:?}");
}

#[test]
fn a_replica_waits_for_its_primarys_rotation_instead_of_reporting_a_mismatch() {
    let awaiting = MaterialFacts {
        secret_fingerprint: "fp-b",
        rotation: RotationFacts::ReplicaAwaitingPrimary,
        ..FP
    };
    let p = plan_key(&desired(), &converged_observed(), &awaiting, None, false);
    assert_eq!(p.blocker, Some(Blocker::RotationPending));
    assert!(p.actions.is_empty(), "{p:?}");
    // Without a rotating primary the same Secret change is a mismatch.
    let refused = MaterialFacts {
        secret_fingerprint: "fp-b",
        ..FP
    };
    let p = plan_key(&desired(), &converged_observed(), &refused, None, false);
    assert_eq!(p.blocker, Some(Blocker::MaterialMismatch));
}

#[test]
fn ownership_classification() {
    let me = owner();
    assert_eq!(ownership(&BTreeMap::new(), &me), Ownership::Unowned);
    assert_eq!(ownership(&me.tags(), &me), Ownership::Mine);
    let mut reapplied = me.tags();
    reapplied.insert(OWNER_UID_TAG.into(), "uid-0".into());
    assert_eq!(ownership(&reapplied, &me), Ownership::PreviousIncarnation);
    let mut other = me.tags();
    other.insert(OWNER_TAG.into(), "team/invoices".into());
    other.insert(OWNER_UID_TAG.into(), "uid-9".into());
    assert!(
        matches!(ownership(&other, &me), Ownership::Elsewhere(w) if w.contains("team/invoices"))
    );
    let mut other_cluster = me.tags();
    other_cluster.insert(CLUSTER_TAG.into(), "c2".into());
    assert!(matches!(ownership(&other_cluster, &me), Ownership::Elsewhere(w) if w.contains("c2")));
}

#[test]
fn a_key_without_material_gets_its_policy_and_alias_before_the_import() {
    let mut d = desired();
    d.policy = Some(doc_policy(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Root", "Effect": "Allow",
                       "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
                       "Action": "kms:*", "Resource": "*"}]
    })));
    let mut o = converged_observed();
    o.state = KeyState::PendingImport;
    o.aliases.clear();
    o.policy = Some(serde_json::json!({"Version": "2012-10-17", "Statement": []}));
    let p = plan(&d, &o);
    let names: Vec<&str> = p.actions.iter().map(Action::name).collect();
    assert_eq!(
        names,
        ["CreateAlias", "PutKeyPolicy", "ImportMaterial"],
        "{p:?}"
    );

    // A policy keyfleet refuses: nothing is imported, the key stays unusable.
    let mut huge = d.clone();
    huge.policy = Some(doc_policy(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "x".repeat(40 * 1024), "Effect": "Allow",
                       "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
                       "Action": "kms:*", "Resource": "*"}]
    })));
    let p = plan(&huge, &o);
    assert!(
        matches!(p.blocker, Some(Blocker::PolicyTooLarge(_))),
        "{p:?}"
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::ImportMaterial { .. })),
        "{p:?}"
    );
    // An alias held by another key: nothing is imported either.
    let p = plan_key(
        &d,
        &o,
        &FP,
        Some(&AliasTarget::OtherKey("other".into())),
        false,
    );
    assert!(matches!(p.blocker, Some(Blocker::AliasInUse(_))), "{p:?}");
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::ImportMaterial { .. })),
        "{p:?}"
    );
}

fn listed(
    id: &str,
    state: MaterialState,
    imported: bool,
    valid_to: Option<i64>,
) -> ObservedMaterial {
    ObservedMaterial {
        key_material_id: id.into(),
        state,
        imported,
        expires: valid_to.is_some(),
        valid_to: valid_to.map(|s| Timestamp::from_second(s).unwrap()),
        description: None,
        rotation_date: None,
    }
}

#[test]
fn other_materials_are_retired_renewed_brought_back_or_reported() {
    let day = 86_400;
    let mut d = desired();
    d.rolling_validity = Some(SignedDuration::from_hours(24 * 30));
    let now = Timestamp::from_second(100 * day).unwrap();
    let retained = [RetainedFacts {
        fingerprint: "fp-old".into(),
        key_material_id: Some("old".into()),
    }];
    let facts = MaterialFacts {
        now,
        retained: &retained,
        ..FP
    };
    let mut o = converged_observed();
    let current = listed("cur", MaterialState::Current, true, Some(125 * day));
    let renew_at = Some(now + SignedDuration::from_hours(24 * 30));
    // A retained NON_CURRENT material under the threshold (10 days of 30) is renewed.
    o.materials = Some(vec![
        listed("old", MaterialState::NonCurrent, true, Some(105 * day)),
        current.clone(),
    ]);
    o.valid_to = current.valid_to;
    let p = plan_key(&d, &o, &facts, None, false);
    let renew = Action::ImportRetainedMaterial {
        retained: 0,
        key_material_id: "old".into(),
        valid_to: renew_at,
    };
    assert_eq!(p.actions, vec![renew.clone()]);
    assert_eq!(p.expiring, Some(vec![]));
    // Without a retained Secret it is reported instead, and the key stays as it is.
    let unretained = MaterialFacts {
        retained: &[],
        ..facts
    };
    let p = plan_key(&d, &o, &unretained, None, false);
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(
        p.expiring,
        Some(vec![ExpiringMaterial {
            key_material_id: "old".into(),
            valid_to: Timestamp::from_second(105 * day).unwrap(),
        }])
    );
    // Gone (PendingImport): brought back from the retained Secret, else the reason.
    o.state = KeyState::PendingImport;
    o.materials = Some(vec![
        listed("old", MaterialState::NonCurrent, false, None),
        current,
    ]);
    let p = plan_key(&d, &o, &facts, None, false);
    assert_eq!(p.actions, vec![renew]);
    let p = plan_key(&d, &o, &unretained, None, false);
    assert_eq!(
        p.blocker,
        Some(Blocker::NonCurrentMaterialMissing(vec!["old".into()]))
    );
    assert!(
        p.actions.is_empty(),
        "the current material is not imported again: {p:?}"
    );
    // Retired: deleted while imported; its absence is the reason; the current one is refused.
    d.retire = vec!["old".into(), "cur".into()];
    let p = plan_key(&d, &o, &facts, None, false);
    assert_eq!(
        p.blocker.as_ref().map(Blocker::reason),
        Some("MaterialRetirementRefused")
    );
    d.retire = vec!["old".into()];
    let p = plan_key(&d, &o, &facts, None, false);
    assert_eq!(
        p.blocker,
        Some(Blocker::MaterialRetired(vec!["old".into()]))
    );
    o.state = KeyState::Enabled;
    o.materials.as_mut().unwrap()[0].imported = true;
    let p = plan_key(&d, &o, &facts, None, false);
    assert_eq!(
        p.actions,
        vec![Action::DeleteMaterial {
            key_material_id: "old".into()
        }]
    );
}

#[test]
fn a_rotation_of_expiring_material_waits_until_the_previous_material_is_retained() {
    let mut d = desired();
    d.on_change = MaterialChangePolicy::Rotate;
    d.rolling_validity = Some(SignedDuration::from_hours(24 * 30));
    let mut o = converged_observed();
    o.valid_to = Some(Timestamp::from_second(40 * 86_400).unwrap());
    let changed = MaterialFacts {
        secret_fingerprint: "fp-b",
        ..FP
    };
    let p = plan_key(&d, &o, &changed, None, false);
    assert_eq!(p.blocker, Some(Blocker::PreviousMaterialNotRetained));
    assert!(p.actions.is_empty());
    let retained = [RetainedFacts {
        fingerprint: "fp-a".into(),
        key_material_id: None,
    }];
    let with_retained = MaterialFacts {
        retained: &retained,
        ..changed
    };
    let p = plan_key(&d, &o, &with_retained, None, false);
    assert!(
        matches!(p.actions.as_slice(), [Action::ImportNewMaterial { .. }]),
        "{p:?}"
    );
    d.expiring_previous_material = crate::api::ExpiringMaterialPolicy::Accept;
    let p = plan_key(&d, &o, &changed, None, false);
    assert!(
        matches!(p.actions.as_slice(), [Action::ImportNewMaterial { .. }]),
        "{p:?}"
    );
}
