//! The lifecycle of an AwsKey with the real controller wiring in-process.
//!
//! Against LocalStack KMS, where it is faithful: every key spec is created EXTERNAL, imported
//! and usable; spec applied and drift repaired; deletion policies.
//!
//! With aws-smithy-mocks on the SDK client, what LocalStack does not do like AWS: AccessDenied,
//! a key deleted outside keyfleet, IncorrectKeyMaterialException, and throttling that must
//! never reach the status.

mod support;

use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::describe_key::{DescribeKeyError, DescribeKeyOutput};
use aws_sdk_kms::operation::get_parameters_for_import::GetParametersForImportOutput;
use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::error::{IncorrectKeyMaterialException, NotFoundException};
use aws_sdk_kms::types::{
    KeyMetadata, KeySpec as SdkKeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, OriginType, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use keyfleet::api::{AwsKey, AwsKeyStatus, KeyFamily, KeySpec, KmsKeyStatus, MaterialEncoding};
use keyfleet::kms::KmsClients;
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;
use kube::Api;
use kube::api::{Patch, PatchParams};
use memkube::MemKube;
use serde_json::json;
use support::kms_mocks::{self, aws_error, import_params_rule, no_aliases_rule, tags_rule};
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;

const NS: &str = "team-a";
const REGION: &str = "eu-west-1";

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
    create_key_with_material(
        &op,
        NS,
        &name,
        KeySpec::SymmetricDefault,
        json!({"deletionPolicy": "Retain"}),
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
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("outside");
    let created =
        create_key_with_material(&op, NS, &name, KeySpec::SymmetricDefault, json!({})).await;
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

// What LocalStack does not do like AWS, with aws-smithy-mocks on the SDK client.

fn metadata(key_id: &str, state: KeyState) -> KeyMetadata {
    KeyMetadata::builder()
        .key_id(key_id)
        .arn(format!("arn:aws:kms:{REGION}:111122223333:key/{key_id}"))
        .aws_account_id("111122223333")
        .key_state(state)
        .origin(OriginType::External)
        .key_spec(SdkKeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .multi_region(false)
        .description("")
        .build()
        .unwrap()
}

fn owner_tags(key: &AwsKey) -> Vec<Tag> {
    kms_mocks::owner_tags(
        key.metadata.uid.as_deref().unwrap(),
        NS,
        key.metadata.name.as_deref().unwrap(),
    )
}

/// Creates the Secret and AwsKey; with `key_id`, the AwsKey already points at that KMS key.
async fn setup(kube: &MemKube, name: &str, key_id: Option<&str>) -> AwsKey {
    let client = kube.client();
    create_material_secret(&client, NS, name, KeySpec::SymmetricDefault).await;
    let api: Api<AwsKey> = Api::namespaced(client, NS);
    let key = create_key(&api, &aws_key(name, REGION, name, json!({}))).await;
    if let Some(key_id) = key_id {
        let status = AwsKeyStatus {
            key: KmsKeyStatus {
                key_id: Some(key_id.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
    }
    key
}

fn start(kube: &MemKube, client: Client) -> Operator {
    Operator::start_with(kube.clone(), KmsClients::fixed(client), settings())
}

/// Waits a little and asserts the rule is no longer being called.
async fn assert_settled(rule: &Rule, what: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = rule.num_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rule.num_calls(),
        calls,
        "{what} kept being called: a hot loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_reported_precisely_and_not_retried_in_a_loop() {
    let create = mock!(Client::create_key)
        .sequence()
        .http_response(|| aws_error("AccessDeniedException"))
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&create]);
    let kube = MemKube::new();
    let name = unique("denied");
    setup(&kube, &name, None).await;
    let op = start(&kube, client);
    let key = wait_reason(&op.keys(NS), &name, "AccessDenied").await;
    let message = &key.status.unwrap().conditions[0].message;
    assert!(
        message.contains("CreateKey") && message.contains("access denied"),
        "{message}"
    );
    op.wait_events(&name, &["AccessDenied"]).await;
    assert_settled(&create, "CreateKey").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_outside_keyfleet_is_reported_as_key_gone_and_never_replaced() {
    let describe = mock!(Client::describe_key)
        .sequence()
        .error(|| {
            DescribeKeyError::NotFoundException(
                NotFoundException::builder()
                    .message("Key 'gone' does not exist")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let create = mock!(Client::create_key)
        .sequence()
        .http_response(|| aws_error("AccessDeniedException"))
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&describe, &create]);
    let kube = MemKube::new();
    let name = unique("gone");
    setup(&kube, &name, Some("gone-key")).await;
    let op = start(&kube, client);
    let key = wait_reason(&op.keys(NS), &name, "KeyGone").await;
    assert_eq!(
        key.status.unwrap().key_id.as_deref(),
        Some("gone-key"),
        "the ARN consumers hold was dropped"
    );
    op.wait_events(&name, &["KeyGone"]).await;
    assert_eq!(create.num_calls(), 0, "a replacement key was created");
    assert_settled(&describe, "DescribeKey").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incorrect_key_material_from_kms_is_material_mismatch() {
    let kube = MemKube::new();
    let name = unique("incorrect");
    let key = setup(&kube, &name, Some("k-1")).await;
    let (params, _wrapping) = import_params_rule("k-1");
    let tags = owner_tags(&key);
    let describe = mock!(Client::describe_key)
        .sequence()
        .output(|| {
            DescribeKeyOutput::builder()
                .key_metadata(metadata("k-1", KeyState::PendingImport))
                .build()
        })
        .repeatedly()
        .build();
    let list_tags = tags_rule(None, tags);
    let list_aliases = no_aliases_rule();
    let import = mock!(Client::import_key_material)
        .sequence()
        .error(|| {
            ImportKeyMaterialError::IncorrectKeyMaterialException(
                IncorrectKeyMaterialException::builder()
                    .message("mocked")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [&describe, &list_tags, &list_aliases, &params, &import]
    );
    let op = start(&kube, client);
    wait_reason(&op.keys(NS), &name, "MaterialMismatch").await;
    op.wait_events(&name, &["MaterialMismatch"]).await;
    assert_settled(&import, "ImportKeyMaterial").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_never_shown_as_a_failure() {
    let kube = MemKube::new();
    let name = unique("throttled");
    let key = setup(&kube, &name, Some("k-2")).await;
    let tags = owner_tags(&key);
    let describe = mock!(Client::describe_key)
        .sequence()
        .http_response(|| aws_error("ThrottlingException"))
        .times(6)
        .output(|| {
            DescribeKeyOutput::builder()
                .key_metadata(metadata("k-2", KeyState::Enabled))
                .build()
        })
        .repeatedly()
        .build();
    let list_tags = tags_rule(None, tags);
    let list_aliases = no_aliases_rule();
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [&describe, &list_tags, &list_aliases]
    );
    let op = start(&kube, client);
    let ready = wait_ready(&op.keys(NS), &name).await;
    assert!(
        describe.num_calls() > 6,
        "the throttled calls were not retried"
    );
    assert_eq!(ready.status.unwrap().key_state.as_deref(), Some("Enabled"));
    let surfaced: Vec<_> = op
        .events_for(&name)
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .collect();
    assert!(surfaced.is_empty(), "throttling surfaced: {surfaced:?}");
    let writes: Vec<_> = op
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/status") && r.method == http::Method::PATCH)
        .collect();
    assert!(!writes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_sends_the_wrapped_material_with_valid_to_and_the_default_wrapping() {
    use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput;
    use aws_sdk_kms::types::{AlgorithmSpec, ExpirationModelType, WrappingKeySpec};
    use std::sync::{Arc, Mutex};

    let kube = MemKube::new();
    let name = unique("validto");
    let valid_to = jiff::Timestamp::now().as_second() + 86_400;
    let client_kube = kube.client();
    create_material_secret(&client_kube, NS, &name, KeySpec::SymmetricDefault).await;
    let api: Api<AwsKey> = Api::namespaced(client_kube, NS);
    let key = create_key(&api, &aws_key(&name, REGION, &name, json!({
        "expiration": {"validTo": jiff::Timestamp::from_second(valid_to).unwrap().to_string()}
    })))
    .await;
    let status = AwsKeyStatus {
        key: KmsKeyStatus {
            key_id: Some("k-3".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();

    let wrapping =
        aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public_der = {
        use aws_lc_rs::encoding::AsDer;
        wrapping.public_key().as_der().unwrap().as_ref().to_vec()
    };
    let imported = Arc::new(Mutex::new(false));
    let seen = imported.clone();
    let tags = owner_tags(&key);
    let describe = mock!(Client::describe_key)
        .sequence()
        .output(move || {
            let state = if *seen.lock().unwrap() {
                KeyState::Enabled
            } else {
                KeyState::PendingImport
            };
            let mut meta = KeyMetadata::builder()
                .key_id("k-3")
                .arn(format!("arn:aws:kms:{REGION}:111122223333:key/k-3"))
                .aws_account_id("111122223333")
                .key_state(state)
                .origin(OriginType::External)
                .key_spec(SdkKeySpec::SymmetricDefault)
                .key_usage(KeyUsageType::EncryptDecrypt)
                .multi_region(false)
                .description("");
            if *seen.lock().unwrap() {
                meta = meta
                    .expiration_model(ExpirationModelType::KeyMaterialExpires)
                    .valid_to(aws_sdk_kms::primitives::DateTime::from_secs(valid_to));
            }
            let meta = meta.build().unwrap();
            DescribeKeyOutput::builder().key_metadata(meta).build()
        })
        .repeatedly()
        .build();
    let list_tags = tags_rule(None, tags);
    let list_aliases = no_aliases_rule();
    let params = mock!(Client::get_parameters_for_import)
        .match_requests(|r| {
            r.wrapping_algorithm() == Some(&AlgorithmSpec::RsaesOaepSha256)
                && r.wrapping_key_spec() == Some(&WrappingKeySpec::Rsa2048)
        })
        .sequence()
        .output(move || {
            GetParametersForImportOutput::builder()
                .key_id("k-3")
                .import_token(Blob::new(b"token".to_vec()))
                .public_key(Blob::new(public_der.clone()))
                .build()
        })
        .repeatedly()
        .build();
    let decryptor = Arc::new(wrapping);
    let mark = imported.clone();
    let import = mock!(Client::import_key_material)
        .match_requests(move |r| {
            // The wrapped bytes decrypt (RSA-OAEP-SHA-256) to 32 bytes of material.
            let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new((*decryptor).clone()).unwrap();
            let mut out = vec![0u8; 512];
            let plain_len = r
                .encrypted_key_material()
                .and_then(|b| {
                    oaep.decrypt(
                        &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                        b.as_ref(),
                        &mut out,
                        None,
                    )
                    .ok()
                })
                .map(|p| p.len());
            r.import_token().map(|t| t.as_ref()) == Some(b"token".as_slice())
                && r.expiration_model() == Some(&ExpirationModelType::KeyMaterialExpires)
                && r.valid_to().map(|t| t.secs()) == Some(valid_to)
                && plain_len == Some(32)
        })
        .sequence()
        .output(move || {
            *mark.lock().unwrap() = true;
            ImportKeyMaterialOutput::builder().build()
        })
        .repeatedly()
        .build();
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [&describe, &list_tags, &list_aliases, &params, &import]
    );
    let op = start(&kube, client);
    let ready = wait_ready(&op.keys(NS), &name).await.status.unwrap();
    assert_eq!(
        import.num_calls(),
        1,
        "ImportKeyMaterial was not called exactly once with the expected request"
    );
    assert_eq!(
        ready.material_valid_to.clone().map(|t| t.0.as_second()),
        Some(valid_to)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_pending_replica_deletion_is_reported_not_fought() {
    let kube = MemKube::new();
    let name = unique("pending-replica-deletion");
    let client_kube = kube.client();
    create_material_secret(&client_kube, NS, &name, KeySpec::SymmetricDefault).await;
    let api: Api<AwsKey> = Api::namespaced(client_kube, NS);
    let key = create_key(
        &api,
        &aws_key(&name, REGION, &name, json!({"multiRegion": true})),
    )
    .await;
    let status = AwsKeyStatus {
        key: KmsKeyStatus {
            key_id: Some("mrk-9".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
    let tags = owner_tags(&key);
    let describe = mock!(Client::describe_key)
        .sequence()
        .output(|| {
            let meta = KeyMetadata::builder()
                .key_id("mrk-9")
                .arn(format!("arn:aws:kms:{REGION}:111122223333:key/mrk-9"))
                .key_state(KeyState::PendingReplicaDeletion)
                .origin(OriginType::External)
                .key_spec(SdkKeySpec::SymmetricDefault)
                .key_usage(KeyUsageType::EncryptDecrypt)
                .multi_region(true)
                .build()
                .unwrap();
            DescribeKeyOutput::builder().key_metadata(meta).build()
        })
        .repeatedly()
        .build();
    let list_tags = tags_rule(None, tags);
    let list_aliases = no_aliases_rule();
    let cancel = mock!(Client::cancel_key_deletion)
        .sequence()
        .http_response(|| aws_error("AccessDeniedException"))
        .repeatedly()
        .build();
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [&describe, &list_tags, &list_aliases, &cancel]
    );
    let op = start(&kube, client);
    let reported = wait_reason(&op.keys(NS), &name, "KeyPendingDeletion").await;
    assert_eq!(
        reported.status.unwrap().key_state.as_deref(),
        Some("PendingReplicaDeletion")
    );
    op.wait_events(&name, &["KeyPendingDeletion"]).await;
    assert_eq!(cancel.num_calls(), 0, "keyfleet fought the deletion");
}
