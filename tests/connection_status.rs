//! AwsKms status: keyfleet verifies every connection (well-formed regions, sts:GetCallerIdentity
//! through its role or with the operator's credentials) and reports Ready with the caller and
//! account, or a precise reason; the check follows spec changes. Real controller, in-memory
//! API, LocalStack's STS (which lets any role be assumed). What LocalStack never refuses — an
//! sts:AssumeRole denied by a trust policy — is covered by the classification test below with
//! a credentials provider failing the way the assume-role provider does.

mod support;

use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use keyfleet::api::{AwsKms, AwsKmsSpec};
use keyfleet::kms::identity::caller_through;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use memkube::MemKube;
use serde_json::json;
use support::localstack::{self, unique};
use support::operator::*;

fn condition(kms: &AwsKms, type_: &str) -> Option<(String, String)> {
    condition_of(&kms.status.as_ref()?.conditions, type_)
}

async fn wait_kms(
    api: &Api<AwsKms>,
    name: &str,
    what: &str,
    check: impl Fn(&AwsKms) -> bool,
) -> AwsKms {
    wait_for_within(api, name, Duration::from_secs(60), what, check).await
}

/// `kubectl wait --for=condition=Ready awskms/<name>`: Ready=True for the current generation.
fn ready_now(kms: &AwsKms) -> bool {
    condition(kms, "Ready").is_some_and(|(s, _)| s == "True")
        && kms.status.as_ref().and_then(|s| s.observed_generation) == kms.metadata.generation
}

async fn create(api: &Api<AwsKms>, name: &str, spec: serde_json::Value) {
    let mut spec = spec;
    spec["allowedNamespaces"] = json!({"from": "All"});
    let spec: AwsKmsSpec = serde_json::from_value(spec).unwrap();
    api.create(&PostParams::default(), &AwsKms::new(name, spec))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_report_whether_keyfleet_can_act_through_them() {
    let op = Operator::start(MemKube::new()).await;
    let api: Api<AwsKms> = Api::all(op.client.clone());

    // The operator's own credentials.
    let own = unique("own");
    create(
        &api,
        &own,
        json!({"regions": ["us-east-1", "eu-central-1"]}),
    )
    .await;
    let kms = wait_kms(&api, &own, "Ready", ready_now).await;
    let status = kms.status.unwrap();
    assert_eq!(
        condition_of(&status.conditions, "Ready").unwrap().1,
        "Verified"
    );
    assert_eq!(
        condition_of(&status.conditions, "Stalled").unwrap(),
        ("False".into(), "Verified".into())
    );
    assert_eq!(status.account_id.as_deref(), Some("000000000000"));
    assert!(
        status
            .caller_arn
            .as_deref()
            .is_some_and(|a| a.starts_with("arn:aws:"))
    );

    // Through a role with an external id: the session of the assumed role, named after the
    // AwsKms (`kf.<namespace>.<name>`, no namespace: it is cluster-scoped).
    let role = unique("role");
    create(
        &api,
        &role,
        json!({"roleArn": "arn:aws:iam::000000000000:role/keyfleet-kms", "externalId": "keyfleet-test", "regions": ["us-east-1"]}),
    )
    .await;
    let kms = wait_kms(&api, &role, "Ready", ready_now).await;
    let status = kms.status.unwrap();
    assert!(
        status
            .caller_arn
            .as_deref()
            .is_some_and(|a| a.ends_with(&format!(":assumed-role/keyfleet-kms/kf..{role}"))),
        "{status:?}"
    );
    let ready = ready_condition(&status.conditions);
    assert!(
        ready
            .message
            .contains("assumed arn:aws:iam::000000000000:role/keyfleet-kms"),
        "{ready:?}"
    );

    // A region that is not one: refused without calling AWS; stalled until the spec changes.
    let typo = unique("typo");
    create(&api, &typo, json!({"regions": ["eu-west", "eu-central-1"]})).await;
    let kms = wait_kms(&api, &typo, "RegionInvalid", |k| {
        condition(k, "Ready") == Some(("False".into(), "RegionInvalid".into()))
    })
    .await;
    assert_eq!(
        condition(&kms, "Stalled"),
        Some(("True".into(), "RegionInvalid".into()))
    );
    let ready = ready_condition(&kms.status.as_ref().unwrap().conditions).clone();
    assert!(
        ready.message.contains("eu-west;") || ready.message.contains("eu-west "),
        "{ready:?}"
    );
    assert!(!ready.message.contains("eu-central-1"), "{ready:?}");

    // Fixed: checked again for the new generation.
    api.patch(
        &typo,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"regions": ["eu-west-1"]}})),
    )
    .await
    .unwrap();
    let kms = wait_kms(&api, &typo, "Ready after the fix", ready_now).await;
    assert_eq!(kms.metadata.generation, Some(2));
    assert_eq!(
        condition(&kms, "Stalled"),
        Some(("False".into(), "Verified".into()))
    );
}

/// Fails to provide credentials, as the assume-role provider does when STS refuses
/// sts:AssumeRole (trust policy, external id, missing permission).
#[derive(Debug)]
struct Refused;

impl ProvideCredentials for Refused {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
            "AccessDenied: User arn:aws:sts::111122223333:assumed-role/keyfleet/i-1 is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::444455556666:role/keyfleet-kms",
        )))
    }
}

async fn sts(
    endpoint: &str,
    credentials: Option<SharedCredentialsProvider>,
) -> aws_sdk_sts::Client {
    let mut config = aws_sdk_sts::config::Builder::new()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .timeout_config(
            aws_sdk_sts::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        );
    config = match credentials {
        Some(c) => config.credentials_provider(c),
        None => config.credentials_provider(aws_sdk_sts::config::Credentials::new(
            "test", "test", None, None, "test",
        )),
    };
    aws_sdk_sts::Client::from_conf(config.build())
}

#[tokio::test]
async fn refusals_get_precise_reasons() {
    let endpoint = localstack::kms_endpoint().await;
    let role = "arn:aws:iam::444455556666:role/keyfleet-kms";

    let refused = sts(&endpoint, Some(SharedCredentialsProvider::new(Refused))).await;
    let fault = caller_through(&refused, Some(role)).await.unwrap_err();
    assert_eq!(fault.reason, "AssumeRoleFailed");
    assert!(!fault.transient);
    assert!(
        fault.message.contains(role) && fault.message.contains("not authorized"),
        "{fault:?}"
    );

    // The same failure without a role: the operator's own credentials.
    let fault = caller_through(&refused, None).await.unwrap_err();
    assert_eq!(fault.reason, "CredentialsUnavailable");

    // STS unreachable: transient, rechecked soon.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = sts(&format!("http://127.0.0.1:{port}"), None).await;
    let fault = caller_through(&unreachable, Some(role)).await.unwrap_err();
    assert_eq!(fault.reason, "StsUnavailable", "{fault:?}");
    assert!(fault.transient);

    // And a working STS answers with the caller.
    let ok = sts(&endpoint, None).await;
    let caller = caller_through(&ok, None).await.unwrap();
    assert_eq!(caller.account_id, "000000000000");
}

/// The connection check's status writes do not wake the keys of the connection (at fleet scale
/// an STS blip would cost every key two reconciles); a spec change does. Counted per key as
/// DescribeKey calls on the KMS model, with resyncs out of the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_status_write_does_not_wake_its_keys_but_a_spec_change_does() {
    use keyfleet::kms::KmsClients;

    let model = kms_model::KmsModel::start().await.unwrap();
    let clients = KmsClients::from_config(localstack::sdk_config(&model.url()));
    let mut quiet = settings();
    quiet.resync_interval = Duration::from_secs(600);
    quiet.drift_interval = Duration::from_secs(600);
    let op = Operator::start_with(MemKube::new(), clients, quiet);
    op.connection_checked().await;
    let ns = unique("conn");
    let watched = unique("watched");
    let key = create_symmetric_key(&op, &ns, &watched, json!({})).await;
    let ready = wait_ready(&op.keys(&ns), &watched).await;
    let key_id = ready.status.unwrap().key_id.clone().unwrap();
    let describes = || {
        model
            .requests_of("DescribeKey")
            .iter()
            .filter(|r| {
                r.params["KeyId"]
                    .as_str()
                    .is_some_and(|k| k.contains(&key_id))
            })
            .count()
    };
    // Settled: the reconcile the Ready status write's events may bring is over.
    let sentinel = unique("sentinel");
    create_symmetric_key(&op, &ns, &sentinel, json!({})).await;
    wait_ready(&op.keys(&ns), &sentinel).await;
    let before = describes();

    // A status write of the default connection (a new verdict), then proof that events after
    // it were handled: another key becomes Ready.
    let connections = Api::<AwsKms>::all(op.client.clone());
    connections
        .patch_status(
            "default",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"callerArn": "arn:aws:sts::000000000000:assumed-role/x/y"}}),
            ),
        )
        .await
        .unwrap();
    let after_status = unique("after-status");
    create_symmetric_key(&op, &ns, &after_status, json!({})).await;
    wait_ready(&op.keys(&ns), &after_status).await;
    assert_eq!(
        describes(),
        before,
        "a status write woke the connection's keys"
    );

    // A spec change does wake them.
    connections
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"regions": ["us-east-1", "eu-west-1"]}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while describes() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a spec change of the connection did not wake {}",
            key.metadata.name.clone().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
