//! The lifecycle of an AwsKey with the real controller wiring in-process.
//!
//! Against LocalStack KMS, where it is faithful: every key spec is created EXTERNAL, imported
//! and usable; spec applied and drift repaired; deletion policies.
//!
//! On the strict KMS model (crates/kms-model), what LocalStack does not do like AWS: other
//! material refused (IncorrectKeyMaterialException), a primary waiting in
//! PendingReplicaDeletion, a key deleted outside keyfleet, the exact import request with its
//! expiry; and faults injected into the model: AccessDenied, and throttling that must never
//! reach the status.

mod support;

use std::time::Duration;

use aws_sdk_kms::types::{KeyState, OriginType};
use keyfleet::api::{KeyFamily, KeySpec, MaterialEncoding};
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;
use serde_json::json;
use support::kms_use::{alias_names, decrypt, encrypt, generate_mac, public_key};
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;
use support::outside::{adoptable_key_with_other_material, delete_material, schedule_deletion};

const NS: &str = "team-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_key_spec_is_created_external_imported_and_usable() {
    let Harness { op, kms, api } = Harness::start(NS).await;

    let mut cases = vec![];
    for spec in KeySpec::ALL {
        let name = unique(&spec.as_str().to_lowercase().replace('_', "-"));
        let value = generate_secret_value(spec);
        create_secret(&op.client, NS, &name, "material", &value).await;
        let usage = match spec.family() {
            KeyFamily::Rsa => json!({"keyUsage": "SIGN_VERIFY"}),
            _ => json!({}),
        };
        let mut extra = usage;
        extra["keySpec"] = json!(spec.as_str());
        create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, extra)).await;
        let material = KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, &value).unwrap();
        cases.push((spec, name, material));
    }

    for (spec, name, material) in &cases {
        let key = wait_ready(&api, name).await;
        let status = key.status.clone().unwrap();
        let arn = status.arn.clone().expect("status.arn");
        assert!(
            arn.starts_with(&format!("arn:aws:kms:{DEFAULT_REGION}:")),
            "{arn}"
        );
        assert_eq!(status.key_state.as_deref(), Some("Enabled"), "{spec}");
        assert_eq!(status.key_spec.as_deref(), Some(spec.as_str()));
        assert_eq!(status.region.as_deref(), Some(DEFAULT_REGION));
        assert_eq!(status.account_id.as_deref(), Some("000000000000"));
        assert_eq!(status.observed_generation, key.metadata.generation);
        assert!(status.last_import_time.is_some());
        assert_eq!(
            status.material_fingerprint.as_deref(),
            Some(material.fingerprint().as_str())
        );

        let meta = describe(&kms, &arn).await;
        assert_eq!(meta.origin(), Some(&OriginType::External), "{spec}");
        assert_eq!(meta.key_spec().map(|s| s.as_str()), Some(spec.as_str()));

        match spec.family() {
            KeyFamily::Rsa | KeyFamily::Ecc => {
                assert_eq!(
                    public_key(&kms, &arn).await,
                    material.public_key_der(),
                    "{spec}: KMS public key differs from the Secret's"
                );
            }
            KeyFamily::Hmac => {
                let message = b"keyfleet probe";
                assert_eq!(
                    generate_mac(&kms, &arn, *spec, message).await,
                    material.hmac(message),
                    "{spec}: KMS MAC differs from a local HMAC of the Secret"
                );
            }
            KeyFamily::Symmetric => {
                let ciphertext = encrypt(&kms, &arn, b"hello").await;
                assert_eq!(
                    decrypt(&kms, None, ciphertext).await,
                    Some(b"hello".to_vec())
                );
            }
        }
        op.wait_events(name, &["KeyCreated", "MaterialImported", "KeyReady"])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alias_description_tags_and_policy_are_applied_and_drift_is_repaired() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("drift");
    let alias = format!("alias/{name}");
    create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "kms:*", "Resource": "*"}]
    });
    create_key(
        &api,
        &aws_key(
            &name,
            DEFAULT_REGION,
            &name,
            json!({
                "alias": alias,
                "description": "orders database key",
                "tags": {"team": "payments", "env": "prod"},
                "policy": {"document": policy.to_string()},
            }),
        ),
    )
    .await;
    let key = wait_ready(&api, &name).await;
    let key_id = key.status.unwrap().key_id.clone().unwrap();

    let read_back = |kms: aws_sdk_kms::Client, key_id: String| async move {
        let meta = describe(&kms, &key_id).await;
        let tags: Vec<(String, String)> = kms
            .list_resource_tags()
            .key_id(&key_id)
            .send()
            .await
            .unwrap()
            .tags()
            .iter()
            .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
            .collect();
        let aliases = alias_names(&kms, &key_id).await;
        let policy: serde_json::Value = serde_json::from_str(
            kms.get_key_policy()
                .key_id(&key_id)
                .policy_name("default")
                .send()
                .await
                .unwrap()
                .policy()
                .unwrap(),
        )
        .unwrap();
        (meta, tags, aliases, policy)
    };
    let (meta, tags, aliases, applied) = read_back(kms.clone(), key_id.clone()).await;
    assert_eq!(meta.description(), Some("orders database key"));
    assert!(tags.contains(&("team".into(), "payments".into())));
    assert!(tags.contains(&("env".into(), "prod".into())));
    assert!(
        tags.iter()
            .any(|(k, v)| k == "keyfleet.dev/owner" && v == &format!("{NS}/{name}"))
    );
    assert!(
        tags.iter()
            .any(|(k, v)| k == "keyfleet.dev/cluster" && v == CLUSTER_ID)
    );
    assert_eq!(aliases, vec![alias.clone()]);
    assert_eq!(applied, policy);

    // Someone changes the key by hand.
    kms.update_key_description()
        .key_id(&key_id)
        .description("changed by hand")
        .send()
        .await
        .unwrap();
    kms.untag_resource()
        .key_id(&key_id)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    kms.tag_resource()
        .key_id(&key_id)
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("added-by-hand")
                .tag_value("x")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    kms.delete_alias().alias_name(&alias).send().await.unwrap();
    kms.put_key_policy()
        .key_id(&key_id)
        .policy_name("default")
        .policy(json!({"Version": "2012-10-17", "Statement": []}).to_string())
        .send()
        .await
        .unwrap();
    kms.disable_key().key_id(&key_id).send().await.unwrap();

    // The next resync puts everything back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (meta, tags, aliases, applied) = read_back(kms.clone(), key_id.clone()).await;
        let repaired = meta.description() == Some("orders database key")
            && meta.key_state().map(|s| s.as_str()) == Some("Enabled")
            && tags.contains(&("team".into(), "payments".into()))
            && !tags.iter().any(|(k, _)| k == "added-by-hand")
            && aliases == vec![alias.clone()]
            && applied == policy;
        if repaired {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drift not repaired: {meta:?} {tags:?} {aliases:?} {applied}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    op.wait_events(
        &name,
        &[
            "DescriptionUpdated",
            "TagsUpdated",
            "TagsRemoved",
            "AliasCreated",
            "PolicyUpdated",
            "KeyEnabled",
        ],
    )
    .await;
    // Same key throughout: drift repair never replaces the key.
    let after = api.get(&name).await.unwrap();
    assert_eq!(
        after.status.unwrap().key_id.as_deref(),
        Some(key_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_schedules_deletion_and_reapplying_restores_the_same_key() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("delete");
    create_material_secret(&op.client, NS, &name, KeySpec::Hmac256).await;
    let manifest = aws_key(
        &name,
        DEFAULT_REGION,
        &name,
        json!({
            "keySpec": "HMAC_256", "alias": format!("alias/{name}"), "pendingWindowDays": 9,
        }),
    );
    create_key(&api, &manifest).await;
    let key_id = ready_key_id(&api, &name).await;

    api.delete(&name, &Default::default()).await.unwrap();
    wait_gone(&api, &name).await;
    let meta = describe(&kms, &key_id).await;
    assert_eq!(
        meta.key_state().map(|s| s.as_str()),
        Some("PendingDeletion")
    );
    let deletion = meta.deletion_date().expect("DeletionDate").secs();
    let days = (deletion - jiff::Timestamp::now().as_second()) as f64 / 86_400.0;
    assert!(
        (8.9..=9.1).contains(&days),
        "deletion in {days} days, expected the 9-day window"
    );

    // The same manifest applied again finds the key by its alias and restores it.
    create_key(&api, &manifest).await;
    let restored = wait_ready(&api, &name).await;
    let status = restored.status.unwrap();
    assert_eq!(
        status.key_id.as_deref(),
        Some(key_id.as_str()),
        "a new key was created instead of restoring"
    );
    assert_eq!(status.key_state.as_deref(), Some("Enabled"));
    op.wait_events(&name, &["KeyDeletionScheduled", "KeyDeletionCanceled"])
        .await;
    // The restored key carries the new AwsKey's uid.
    let uid = restored.metadata.uid.unwrap();
    assert_eq!(kms_keys_owned_by(&kms, &uid).await, vec![key_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retain_leaves_the_key_in_place() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("retain");
    create_symmetric_key(&op, NS, &name, json!({"deletionPolicy": "Retain"})).await;
    let key_id = ready_key_id(&api, &name).await;
    api.delete(&name, &Default::default()).await.unwrap();
    wait_gone(&api, &name).await;
    let meta = describe(&kms, &key_id).await;
    assert_eq!(meta.key_state().map(|s| s.as_str()), Some("Enabled"));
    op.wait_events(&name, &["KeyRetained"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_change_to_other_material_is_refused_as_material_mismatch() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("mismatch");
    create_key_with_material(
        &op,
        NS,
        &name,
        KeySpec::EccNistP256,
        json!({"keySpec": "ECC_NIST_P256"}),
    )
    .await;
    let before = wait_ready(&api, &name).await.status.unwrap();
    let imports_before = op.event_count(&name, "MaterialImported");

    // The Secret watch (metadata only) re-triggers the key; the new material is not imported.
    update_material_secret(
        &op.client,
        NS,
        &name,
        &generate_secret_value(KeySpec::EccNistP256),
    )
    .await;
    let after = wait_reason(&api, &name, "MaterialMismatch")
        .await
        .status
        .unwrap();
    assert_eq!(after.material_fingerprint, before.material_fingerprint);
    assert_eq!(after.key_id, before.key_id);
    let meta = describe(&kms, after.key_id.as_deref().unwrap()).await;
    assert_eq!(meta.key_state().map(|s| s.as_str()), Some("Enabled"));
    let imports_after = op.event_count(&name, "MaterialImported");
    assert_eq!(
        after.last_import_time, before.last_import_time,
        "the changed material was imported"
    );
    assert_eq!(
        imports_before, imports_after,
        "the changed material was imported"
    );
    op.wait_events(&name, &["MaterialMismatch"]).await;
    assert!(
        op.events_for(&name)
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "MaterialMismatch")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_scheduled_for_deletion_outside_keyfleet_is_reported_not_replaced() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("outside");
    let created = create_symmetric_key(&op, NS, &name, json!({})).await;
    let key_id = ready_key_id(&api, &name).await;
    schedule_deletion(&kms, &key_id).await;
    let reported = wait_reason(&api, &name, "KeyPendingDeletion")
        .await
        .status
        .unwrap();
    assert_eq!(reported.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(reported.key_state.as_deref(), Some("PendingDeletion"));
    op.wait_events(&name, &["KeyPendingDeletion"]).await;
    assert!(
        op.events_for(&name)
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "KeyPendingDeletion")
    );
    // Reconciled again (a blocked key waits for a change: an annotation is one), there is still
    // exactly the one key, and it stays pending deletion.
    op.reconcile_again(NS, &name).await;
    assert_eq!(
        kms_keys_owned_by(&kms, created.metadata.uid.as_deref().unwrap()).await,
        vec![key_id.clone()]
    );
    let meta = describe(&kms, &key_id).await;
    assert_eq!(
        meta.key_state().map(|s| s.as_str()),
        Some("PendingDeletion"),
        "keyfleet fought the deletion"
    );
}

// What LocalStack does not do like AWS, on the strict KMS model (faults injected into it).

/// The requests of `operation` the model has seen once the AwsKey `name` rests (a reconcile
/// wrote nothing and waits for a change): no loop goes on.
async fn settled(
    op: &Operator,
    model: &kms_model::KmsModel,
    name: &str,
    operation: &str,
) -> Vec<kms_model::RecordedRequest> {
    op.wait_resting("AwsKey", NS, name).await;
    model.requests_of(operation)
}

/// An AccessDeniedException injected into every CreateKey of the strict KMS model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_denied_is_reported_precisely_and_not_retried_in_a_loop() {
    let denied = kms_model::Fault::always("CreateKey", kms_model::FaultKind::AccessDenied);
    let ModelHarness { model, op, .. } = ModelHarness::start([denied]).await;
    let name = unique("denied");
    let created = create_symmetric_key(&op, NS, &name, json!({})).await;
    let key_uid = created.metadata.uid;
    let key = wait_reason(&op.keys(NS), &name, "AccessDenied").await;
    let message = &key.status.unwrap().conditions[0].message;
    assert!(
        message.contains("CreateKey") && message.contains("access denied"),
        "{message}"
    );
    op.wait_events(&name, &["AccessDenied"]).await;
    let calls = settled(&op, &model, &name, "CreateKey").await;
    assert!(!calls.is_empty());
    // What the refused request carried: an EXTERNAL key in the AwsKey's Region, owned by it.
    for call in &calls {
        assert_eq!(call.fault, Some(kms_model::FaultKind::AccessDenied));
        assert_eq!(call.region, DEFAULT_REGION);
        assert_eq!(call.params["Origin"], "EXTERNAL");
        assert_eq!(call.params["KeySpec"], "SYMMETRIC_DEFAULT");
        assert!(
            call.params["Tags"].as_array().unwrap().iter().any(|t| {
                t["TagKey"] == "keyfleet.dev/owner-uid"
                    && t["TagValue"].as_str() == key_uid.as_deref()
            }),
            "{call:?}"
        );
    }
    assert!(model.keys().is_empty());
}

/// On the strict KMS model: the key is deleted outside keyfleet (ScheduleKeyDeletion, then the
/// waiting period passes on the model's clock); keyfleet reports KeyGone and creates no
/// replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_deleted_outside_keyfleet_is_reported_as_key_gone_and_never_replaced() {
    let ModelHarness { model, op, kms } = ModelHarness::start([]).await;
    let name = unique("gone");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    let key_id = ready_key_id(&op.keys(NS), &name).await;
    schedule_deletion(&kms, &key_id).await;
    model.advance(Duration::from_secs(7 * 86_400 + 1));
    assert!(model.keys().is_empty(), "the key is deleted");
    let key = wait_reason(&op.keys(NS), &name, "KeyGone").await;
    assert_eq!(
        key.status.unwrap().key_id.as_deref(),
        Some(key_id.as_str()),
        "the ARN consumers hold was dropped"
    );
    op.wait_events(&name, &["KeyGone"]).await;
    settled(&op, &model, &name, "DescribeKey").await;
    assert_eq!(
        model.requests_of("CreateKey").len(),
        1,
        "a replacement key was created"
    );
    assert!(model.keys().is_empty());
}

/// On the strict KMS model: an EXTERNAL key that once held other material (deleted since, so
/// PendingImport) is adopted by an AwsKey whose Secret holds new material; KMS refuses it
/// (IncorrectKeyMaterialException) → MaterialMismatch, not retried in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incorrect_key_material_from_kms_is_material_mismatch() {
    let ModelHarness { model, op, kms } = ModelHarness::start([]).await;
    let name = unique("incorrect");
    let arn = adoptable_key_with_other_material(&kms, NS, &name, false).await;
    delete_material(&kms, &arn).await;
    let before = model.requests_of("ImportKeyMaterial").len();
    create_symmetric_key(&op, NS, &name, json!({"adoptKeyArn": arn})).await;
    wait_reason(&op.keys(NS), &name, "MaterialMismatch").await;
    op.wait_events(&name, &["MaterialMismatch"]).await;
    let imports = settled(&op, &model, &name, "ImportKeyMaterial").await;
    let refused = &imports[before..];
    assert!(!refused.is_empty());
    assert!(
        refused
            .iter()
            .all(|r| r.error.as_deref() == Some("IncorrectKeyMaterialException")),
        "{refused:?}"
    );
    let key_id = arn.rsplit('/').next().unwrap();
    assert_eq!(
        model.key(DEFAULT_REGION, key_id).unwrap().key_state,
        "PendingImport"
    );
}

/// Six ThrottlingExceptions injected into DescribeKey on the strict KMS model: retried, never a
/// failure, an event or a status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_is_retried_and_never_shown_as_a_failure() {
    let throttle = kms_model::Fault::once("DescribeKey", kms_model::FaultKind::Throttle).times(6);
    let ModelHarness { model, op, .. } = ModelHarness::start([throttle]).await;
    let name = unique("throttled");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    let ready = wait_ready(&op.keys(NS), &name).await;
    assert_eq!(ready.status.unwrap().key_state.as_deref(), Some("Enabled"));
    let describes = model.requests_of("DescribeKey");
    let throttled = describes
        .iter()
        .filter(|r| r.error.as_deref() == Some("ThrottlingException"))
        .count();
    assert_eq!(throttled, 6, "every injected throttle was hit");
    assert!(
        describes.last().is_some_and(|r| r.error.is_none()),
        "the throttled calls were not retried to success"
    );
    let surfaced: Vec<_> = op
        .events_for(&name)
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .collect();
    assert!(surfaced.is_empty(), "throttling surfaced: {surfaced:?}");
}

/// On the strict KMS model: keyfleet's import wraps exactly the Secret's material with the
/// default wrapping (RSAES_OAEP_SHA_256, RSA_2048) and sends the expiry; KMS reports it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_sends_the_wrapped_material_with_valid_to_and_the_default_wrapping() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let name = unique("validto");
    let valid_to = jiff::Timestamp::now().as_second() + 86_400;
    let expiry = json!({
        "expiration": {"validTo": jiff::Timestamp::from_second(valid_to).unwrap().to_string()}
    });
    let material = create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    create_key(&op.keys(NS), &aws_key(&name, DEFAULT_REGION, &name, expiry)).await;
    let ready = wait_ready(&op.keys(NS), &name).await.status.unwrap();
    let key_id = ready.key_id.clone().unwrap();
    let params = model.requests_of("GetParametersForImport");
    assert_eq!(params.len(), 1);
    assert_eq!(params[0].params["WrappingAlgorithm"], "RSAES_OAEP_SHA_256");
    assert_eq!(params[0].params["WrappingKeySpec"], "RSA_2048");
    let imports = model.requests_of("ImportKeyMaterial");
    assert_eq!(
        imports.len(),
        1,
        "ImportKeyMaterial exactly once: {imports:?}"
    );
    assert_eq!(imports[0].error, None);
    // Accepted: the token is the one GetParametersForImport issued for this key, unexpired.
    assert_eq!(imports[0].params["ExpirationModel"], "KEY_MATERIAL_EXPIRES");
    assert_eq!(imports[0].params["ValidTo"].as_f64(), Some(valid_to as f64));
    // The model unwrapped exactly the Secret's bytes: its KeyMaterialId derives from them.
    let in_kms = model.key(DEFAULT_REGION, &key_id).unwrap();
    assert_eq!(
        in_kms.current_key_material_id,
        Some(kms_model::key_material_id(&key_id, &material))
    );
    assert_eq!(
        in_kms.imported.values().collect::<Vec<_>>(),
        vec![&Some(valid_to)]
    );
    assert_eq!(
        ready.material_valid_to.clone().map(|t| t.0.as_second()),
        Some(valid_to)
    );
}

/// On the strict KMS model: the primary of a multi-Region key scheduled for deletion outside
/// keyfleet while it has a replica waits in PendingReplicaDeletion (LocalStack: PendingDeletion);
/// keyfleet reports it and does not fight it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_pending_replica_deletion_is_reported_not_fought() {
    let ModelHarness { model, op, kms } = ModelHarness::start([]).await;
    let name = unique("pending-replica-deletion");
    create_symmetric_key(&op, NS, &name, json!({"multiRegion": true})).await;
    let key_id = ready_key_id(&op.keys(NS), &name).await;
    kms.replicate_key()
        .key_id(&key_id)
        .replica_region("eu-central-1")
        .send()
        .await
        .unwrap();
    let scheduled = schedule_deletion(&kms, &key_id).await;
    assert_eq!(scheduled, Some(KeyState::PendingReplicaDeletion));
    let reported = wait_reason(&op.keys(NS), &name, "KeyPendingDeletion").await;
    assert_eq!(
        reported.status.unwrap().key_state.as_deref(),
        Some("PendingReplicaDeletion")
    );
    op.wait_events(&name, &["KeyPendingDeletion"]).await;
    assert!(
        model.requests_of("CancelKeyDeletion").is_empty(),
        "keyfleet fought the deletion"
    );
    assert_eq!(
        model.key(DEFAULT_REGION, &key_id).unwrap().key_state,
        "PendingReplicaDeletion"
    );
}
