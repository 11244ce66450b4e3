//! What LocalStack does not do like AWS, covered with aws-smithy-mocks on the SDK client while
//! the controller runs with its real wiring: AccessDenied, a key deleted outside keyfleet,
//! IncorrectKeyMaterialException, and throttling that must never reach the status.

mod support;

use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::describe_key::{DescribeKeyError, DescribeKeyOutput};
use aws_sdk_kms::operation::get_parameters_for_import::GetParametersForImportOutput;
use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::error::{IncorrectKeyMaterialException, NotFoundException};
use aws_sdk_kms::types::{
    KeyMetadata, KeySpec as SdkKeySpec, KeyState, KeyUsageType, OriginType, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use keyfleet::api::{AwsKey, AwsKeyStatus, KeySpec, KmsKeyStatus};
use keyfleet::kms::KmsClients;
use kube::Api;
use kube::api::{Patch, PatchParams};
use memkube::MemKube;
use serde_json::json;
use support::kms_mocks::{self, aws_error, import_params_rule, no_aliases_rule, tags_rule};
use support::localstack::unique;
use support::operator::*;

const NS: &str = "team-a";
const REGION: &str = "eu-west-1";

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
