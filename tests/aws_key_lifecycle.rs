//! AwsKey against LocalStack KMS with the real controller wiring in-process: every key spec is
//! created EXTERNAL, imported and usable; spec applied and drift repaired; deletion policies.

mod support;

use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MacAlgorithmSpec, OriginType};
use keyfleet::api::MaterialEncoding;
use keyfleet::api::{KeyFamily, KeySpec};
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;

const NS: &str = "team-a";

fn mac_algorithm(spec: KeySpec) -> MacAlgorithmSpec {
    match spec {
        KeySpec::Hmac224 => MacAlgorithmSpec::HmacSha224,
        KeySpec::Hmac256 => MacAlgorithmSpec::HmacSha256,
        KeySpec::Hmac384 => MacAlgorithmSpec::HmacSha384,
        _ => MacAlgorithmSpec::HmacSha512,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_key_spec_is_created_external_imported_and_usable() {
    let op = Operator::start(MemKube::new()).await;
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);

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
                let public = kms.get_public_key().key_id(&arn).send().await.unwrap();
                assert_eq!(
                    public.public_key().map(|b| b.as_ref().to_vec()),
                    material.public_key_der(),
                    "{spec}: KMS public key differs from the Secret's"
                );
            }
            KeyFamily::Hmac => {
                let message = b"keyfleet probe";
                let mac = kms
                    .generate_mac()
                    .key_id(&arn)
                    .mac_algorithm(mac_algorithm(*spec))
                    .message(Blob::new(message.to_vec()))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    mac.mac().map(|b| b.as_ref().to_vec()),
                    material.hmac(message),
                    "{spec}: KMS MAC differs from a local HMAC of the Secret"
                );
            }
            KeyFamily::Symmetric => {
                let ciphertext = kms
                    .encrypt()
                    .key_id(&arn)
                    .plaintext(Blob::new(b"hello".to_vec()))
                    .send()
                    .await
                    .unwrap()
                    .ciphertext_blob
                    .unwrap();
                let plain = kms
                    .decrypt()
                    .ciphertext_blob(ciphertext)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    plain.plaintext().map(|b| b.as_ref().to_vec()),
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
    let op = Operator::start(MemKube::new()).await;
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);
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
        let aliases: Vec<String> = kms
            .list_aliases()
            .key_id(&key_id)
            .send()
            .await
            .unwrap()
            .aliases()
            .iter()
            .filter_map(|a| a.alias_name().map(str::to_string))
            .collect();
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
    let op = Operator::start(MemKube::new()).await;
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);
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
    let op = Operator::start(MemKube::new()).await;
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);
    let name = unique("retain");
    create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    create_key(
        &api,
        &aws_key(
            &name,
            DEFAULT_REGION,
            &name,
            json!({"deletionPolicy": "Retain"}),
        ),
    )
    .await;
    let key_id = ready_key_id(&api, &name).await;
    api.delete(&name, &Default::default()).await.unwrap();
    wait_gone(&api, &name).await;
    let meta = describe(&kms, &key_id).await;
    assert_eq!(meta.key_state().map(|s| s.as_str()), Some("Enabled"));
    op.wait_events(&name, &["KeyRetained"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_change_to_other_material_is_refused_as_material_mismatch() {
    let op = Operator::start(MemKube::new()).await;
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);
    let name = unique("mismatch");
    create_material_secret(&op.client, NS, &name, KeySpec::EccNistP256).await;
    create_key(
        &api,
        &aws_key(
            &name,
            DEFAULT_REGION,
            &name,
            json!({"keySpec": "ECC_NIST_P256"}),
        ),
    )
    .await;
    let before = wait_ready(&api, &name).await.status.unwrap();
    let imports_before = op.event_count(&name, "MaterialImported");

    // The Secret watch (metadata only) re-triggers the key; the new material is not imported.
    update_secret(
        &op.client,
        NS,
        &name,
        "material",
        &generate_secret_value(KeySpec::EccNistP256),
    )
    .await;
    let after = wait_reason(&api, &name, "MaterialMismatch")
        .await
        .status
        .unwrap();
    assert_eq!(after.material_fingerprint, before.material_fingerprint);
    assert_eq!(after.key_id, before.key_id);
    let meta = kms
        .describe_key()
        .key_id(after.key_id.as_deref().unwrap())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
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
    let op = Operator::start(MemKube::new()).await;
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);
    let name = unique("outside");
    create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    let created = create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, json!({}))).await;
    let key_id = ready_key_id(&api, &name).await;
    kms.schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
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
    // Several resyncs later there is still exactly the one key.
    tokio::time::sleep(Duration::from_secs(5)).await;
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
