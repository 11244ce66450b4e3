//! Proves the LocalStack fixture: a real KMS round trip through aws-sdk-kms.

mod support;

use aws_sdk_kms::types::{KeyState, KeyUsageType, OriginType};
use support::kms_use::alias_names;
use support::localstack::{kms_client, kms_endpoint, operator_env, unique};
use support::operator::describe;
use support::outside::{created_arn, schedule_deletion};

#[tokio::test]
async fn external_key_is_pending_import_and_its_alias_is_listed() {
    let kms = kms_client("us-east-1").await;
    let description = unique("keyfleet-smoke");

    let created = kms
        .create_key()
        .origin(OriginType::External)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .description(&description)
        .send()
        .await
        .expect("CreateKey Origin=EXTERNAL");
    let meta = created
        .key_metadata()
        .expect("CreateKey returns KeyMetadata");
    let key_id = meta.key_id().to_owned();
    assert_eq!(meta.origin(), Some(&OriginType::External));
    assert_eq!(meta.key_state(), Some(&KeyState::PendingImport));
    assert!(!meta.enabled(), "a key without material is not enabled");
    assert_eq!(meta.description(), Some(description.as_str()));
    assert!(
        meta.arn()
            .is_some_and(|arn| arn.starts_with("arn:aws:kms:us-east-1:") && arn.ends_with(&key_id)),
        "unexpected ARN {:?}",
        meta.arn()
    );

    // The state is really stored, not only echoed.
    let described = describe(&kms, &key_id).await;
    assert_eq!(described.key_state(), Some(&KeyState::PendingImport));
    assert_eq!(described.origin(), Some(&OriginType::External));

    let alias = format!("alias/{}", unique("keyfleet-smoke"));
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .expect("CreateAlias");

    // ListAliases over all pages: ours is there and points at the key.
    let aliases: Vec<_> = kms
        .list_aliases()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("ListAliases");
    let ours: Vec<_> = aliases
        .iter()
        .filter(|a| a.alias_name() == Some(alias.as_str()))
        .collect();
    assert_eq!(ours.len(), 1, "alias {alias} listed once in {aliases:?}");
    assert_eq!(ours[0].target_key_id(), Some(key_id.as_str()));

    // Filtered by key, too.
    assert_eq!(alias_names(&kms, &key_id).await, vec![alias.clone()]);

    // Keys are per region: the key does not exist in another region.
    let other = kms_client("eu-west-1").await;
    let err = other
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .expect_err("key must not exist in eu-west-1");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_not_found_exception()),
        "expected NotFoundException, got {err:?}"
    );

    // Clean up (the LocalStack may be shared by the whole run).
    kms.delete_alias()
        .alias_name(&alias)
        .send()
        .await
        .expect("DeleteAlias");
    let deletion = schedule_deletion(&kms, &key_id).await;
    assert_eq!(deletion, Some(KeyState::PendingDeletion));
}

/// What the operator does: `aws_config` from the environment, pointed at LocalStack by
/// `AWS_ENDPOINT_URL_KMS` alone. Runs `operator_env_child` in a child process with
/// `operator_env(..)` as its environment, then checks the key it created here.
#[tokio::test]
async fn operator_env_points_aws_config_at_the_test_kms() {
    let endpoint = kms_endpoint().await;
    let description = unique("keyfleet-operator-env");
    let exe = std::env::current_exe().expect("current test binary");
    let out = tokio::process::Command::new(&exe)
        .args(["operator_env_child", "--exact", "--ignored", "--nocapture"])
        .envs(operator_env(&endpoint))
        .env("KEYFLEET_SMOKE_DESCRIPTION", &description)
        // Hermetic: no developer profile, no generic endpoint override.
        .env("AWS_CONFIG_FILE", "/nonexistent/keyfleet-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keyfleet-test/credentials",
        )
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .await
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let key_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD_KEY_ARN="))
        .unwrap_or_else(|| panic!("no CHILD_KEY_ARN line in child output:\n{stdout}"));

    let kms = kms_client("us-east-1").await;
    let meta = describe(&kms, key_id).await;
    assert_eq!(meta.description(), Some(description.as_str()));
    schedule_deletion(&kms, key_id).await;
}

#[tokio::test]
#[ignore = "child process of operator_env_points_aws_config_at_the_test_kms"]
async fn operator_env_child() {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kms = aws_sdk_kms::Client::new(&config);
    let description =
        std::env::var("KEYFLEET_SMOKE_DESCRIPTION").expect("KEYFLEET_SMOKE_DESCRIPTION");
    // CreateKey through AWS_ENDPOINT_URL_KMS.
    let arn = created_arn(kms.create_key().description(description)).await;
    println!("CHILD_KEY_ARN={arn}");
}

#[test]
fn unique_names_do_not_repeat_and_are_alias_safe() {
    let names: Vec<_> = (0..1000).map(|_| unique("t")).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    for n in &names {
        assert!(n.starts_with(&format!("t-{}-", std::process::id())), "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{n}"
        );
    }
}
