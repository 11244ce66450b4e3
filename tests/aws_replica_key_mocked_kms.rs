//! Replica behaviour only real AWS shows, with aws-smithy-mocks on the SDK: ReplicateKey returns
//! a replica in PendingImport (keyfleet imports the primary's material into it), and a replica
//! that refuses the material (IncorrectKeyMaterialException) is reported as MaterialMismatch.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::operation::import_key_material::{
    ImportKeyMaterialError, ImportKeyMaterialOutput,
};
use aws_sdk_kms::operation::replicate_key::ReplicateKeyOutput;
use aws_sdk_kms::types::error::IncorrectKeyMaterialException;
use aws_sdk_kms::types::{
    KeyMetadata, KeySpec as SdkKeySpec, KeyState, KeyUsageType, OriginType, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use keyfleet::api::MaterialEncoding;
use keyfleet::api::{
    AwsKey, AwsKeyStatus, AwsReplicaKey, AwsReplicaKeySpec, KeySpec, KmsKeyStatus,
};
use keyfleet::kms::KmsClients;
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use memkube::MemKube;
use serde_json::json;
use support::kms_mocks::{self, import_params_rule, no_aliases_rule, tags_rule};
use support::localstack::unique;
use support::operator::*;

const NS: &str = "team-a";
const PRIMARY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1";
const REPLICA_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1";

/// Key metadata. In AWS a replica shares its primary's key id; the mock gives the primary its
/// own id so the AwsKey controller's calls (it runs too) and the replica's are told apart.
fn metadata(arn: &str, state: KeyState) -> KeyMetadata {
    let key_id = if arn == PRIMARY_ARN {
        "mrk-1-primary"
    } else {
        "mrk-1"
    };
    KeyMetadata::builder()
        .key_id(key_id)
        .arn(arn)
        .aws_account_id("111122223333")
        .key_state(state)
        .origin(OriginType::External)
        .key_spec(SdkKeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .multi_region(true)
        .description("")
        .build()
        .unwrap()
}

/// Primary AwsKey (Ready, with its recorded fingerprint) and its Secret, plus one replica.
async fn setup(kube: &MemKube, name: &str) -> (AwsKey, AwsReplicaKey) {
    let client = kube.client();
    let value = generate_secret_value(KeySpec::SymmetricDefault);
    create_secret(&client, NS, name, "material", &value).await;
    let keys: Api<AwsKey> = Api::namespaced(client.clone(), NS);
    create_key(
        &keys,
        &aws_key(name, "us-east-1", name, json!({"multiRegion": true})),
    )
    .await;
    let fingerprint =
        KeyMaterial::from_secret_value(KeySpec::SymmetricDefault, MaterialEncoding::Raw, &value)
            .unwrap()
            .fingerprint();
    let status = AwsKeyStatus {
        key: KmsKeyStatus {
            // The AwsKey controller describes the primary by this reference: the ARN keeps its
            // mocked calls apart from the replica's (whose key id is also mrk-1).
            key_id: Some(PRIMARY_ARN.into()),
            arn: Some(PRIMARY_ARN.into()),
            key_state: Some("Enabled".into()),
            material_fingerprint: Some(fingerprint.as_str().into()),
            ..Default::default()
        },
        ..Default::default()
    };
    keys.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
    let primary = keys.get(name).await.unwrap();
    let replica = AwsReplicaKey::new(
        &format!("{name}-eu"),
        serde_json::from_value::<AwsReplicaKeySpec>(
            json!({"primaryKeyRef": {"name": name}, "region": "eu-west-1"}),
        )
        .unwrap(),
    );
    let replica = Api::<AwsReplicaKey>::namespaced(client, NS)
        .create(&PostParams::default(), &replica)
        .await
        .unwrap();
    (primary, replica)
}

struct Rules {
    replicate: Rule,
    import: Rule,
    all: Vec<Rule>,
}

fn owner_tags(uid: &str, name: &str) -> Vec<Tag> {
    kms_mocks::owner_tags(uid, NS, name)
}

fn rules(primary: &AwsKey, replica: &AwsReplicaKey, import_ok: bool) -> Rules {
    let imported = Arc::new(AtomicBool::new(false));
    let seen = imported.clone();
    let describe = mock!(Client::describe_key)
        .sequence()
        .output(move || {
            // The primary lists no replica yet; the replica is PendingImport until imported.
            let state = if seen.load(Ordering::SeqCst) {
                KeyState::Enabled
            } else {
                KeyState::PendingImport
            };
            DescribeKeyOutput::builder()
                .key_metadata(metadata(REPLICA_ARN, state))
                .build()
        })
        .repeatedly()
        .build();
    let describe_primary = mock!(Client::describe_key)
        .match_requests(|r| matches!(r.key_id(), Some(PRIMARY_ARN | "mrk-1-primary")))
        .sequence()
        .output(|| {
            DescribeKeyOutput::builder()
                .key_metadata(metadata(PRIMARY_ARN, KeyState::Enabled))
                .build()
        })
        .repeatedly()
        .build();
    let replicate = mock!(Client::replicate_key)
        .match_requests(|r| {
            r.key_id() == Some(PRIMARY_ARN) && r.replica_region() == Some("eu-west-1")
        })
        .sequence()
        .output(|| {
            ReplicateKeyOutput::builder()
                .replica_key_metadata(metadata(REPLICA_ARN, KeyState::PendingImport))
                .build()
        })
        .times(1)
        .build();
    let tags = owner_tags(
        replica.metadata.uid.as_deref().unwrap(),
        replica.metadata.name.as_deref().unwrap(),
    );
    let primary_tags = owner_tags(
        primary.metadata.uid.as_deref().unwrap(),
        primary.metadata.name.as_deref().unwrap(),
    );
    let list_primary_tags = tags_rule(Some("mrk-1-primary"), primary_tags);
    let list_tags = tags_rule(None, tags);
    let list_aliases = no_aliases_rule();
    let (params, _wrapping) = import_params_rule("mrk-1");
    let import = if import_ok {
        mock!(Client::import_key_material)
            .sequence()
            .output(move || {
                imported.store(true, Ordering::SeqCst);
                ImportKeyMaterialOutput::builder().build()
            })
            .repeatedly()
            .build()
    } else {
        mock!(Client::import_key_material)
            .sequence()
            .error(|| {
                ImportKeyMaterialError::IncorrectKeyMaterialException(
                    IncorrectKeyMaterialException::builder()
                        .message("mocked")
                        .build(),
                )
            })
            .repeatedly()
            .build()
    };
    let all = vec![
        describe_primary,
        replicate.clone(),
        describe,
        list_primary_tags,
        list_tags,
        list_aliases,
        params,
        import.clone(),
    ];
    Rules {
        replicate,
        import,
        all,
    }
}

fn start(kube: &MemKube, rules: &Rules) -> Operator {
    let client = mock_client!(aws_sdk_kms, RuleMode::MatchAny, rules.all.iter());
    Operator::start_with(kube.clone(), KmsClients::fixed(client), settings())
}

async fn replica_condition(op: &Operator, name: &str, want: (&str, &str)) -> AwsReplicaKey {
    let api: Api<AwsReplicaKey> = Api::namespaced(op.client.clone(), NS);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = api.get(name).await.unwrap();
        let c = r
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        if c.as_ref()
            .is_some_and(|c| c.status == want.0 && c.reason == want.1)
        {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: wanted {want:?}, have {c:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_born_pending_import_gets_the_primarys_material() {
    let kube = MemKube::new();
    let name = unique("born");
    let (primary, replica) = setup(&kube, &name).await;
    let rules = rules(&primary, &replica, true);
    let op = start(&kube, &rules);
    let ready = replica_condition(&op, &format!("{name}-eu"), ("True", "KeyReady")).await;
    assert_eq!(rules.replicate.num_calls(), 1, "exactly one ReplicateKey");
    assert_eq!(
        rules.import.num_calls(),
        1,
        "exactly one import into the replica"
    );
    let status = ready.status.unwrap();
    assert_eq!(status.arn.as_deref(), Some(REPLICA_ARN));
    assert_eq!(status.primary_arn.as_deref(), Some(PRIMARY_ARN));
    op.wait_events(
        &format!("{name}-eu"),
        &["KeyReplicated", "MaterialImported", "KeyReady"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refusing_the_material_is_material_mismatch() {
    let kube = MemKube::new();
    let name = unique("refused");
    let (primary, replica) = setup(&kube, &name).await;
    let rules = rules(&primary, &replica, false);
    let op = start(&kube, &rules);
    replica_condition(&op, &format!("{name}-eu"), ("False", "MaterialMismatch")).await;
    op.wait_events(&format!("{name}-eu"), &["MaterialMismatch"])
        .await;
    let calls = rules.import.num_calls();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        rules.import.num_calls(),
        calls,
        "the refused import is retried in a loop"
    );
}
