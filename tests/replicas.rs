//! AwsReplicaKey with the real controller wiring.
//!
//! Against LocalStack: a multi-region primary and replicas in two regions with matching
//! material, a replica forced back to PendingImport is re-imported, the primary lists its
//! replicas, bad input is refused without stray replicas, Delete/Retain.
//!
//! With aws-smithy-mocks on the SDK, what only real AWS shows: ReplicateKey returns a replica in
//! PendingImport (keyfleet imports the primary's material into it), and a replica that refuses
//! the material (IncorrectKeyMaterialException) is reported as MaterialMismatch.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::operation::import_key_material::{
    ImportKeyMaterialError, ImportKeyMaterialOutput,
};
use aws_sdk_kms::operation::replicate_key::ReplicateKeyOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::error::IncorrectKeyMaterialException;
use aws_sdk_kms::types::{
    KeyMetadata, KeySpec as SdkKeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, OriginType, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use keyfleet::api::{
    AllowedNamespaces, AwsKey, AwsKeyStatus, AwsKms, AwsKmsSpec, AwsReplicaKey, AwsReplicaKeySpec,
    KeySpec, KmsKeyStatus, MaterialEncoding,
};
use keyfleet::kms::KmsClients;
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use memkube::MemKube;
use serde_json::json;
use support::kms_mocks::{self, import_params_rule, no_aliases_rule, tags_rule};
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::replicas::*;

const NS: &str = "team-a";
const PRIMARY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1";
const REPLICA_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_in_two_regions_hold_the_primarys_material_and_are_reimported_when_pending_import()
{
    let op = Operator::start(MemKube::new()).await;
    let api = op.keys(NS);
    let primary = unique("mrk");
    let alias = json!({"alias": format!("alias/{primary}")});
    let scenario = ReplicaScenario::new(&op, NS, &primary, KeySpec::SymmetricDefault, alias).await;
    // Replicas applied at once with the primary wait for it (PrimaryNotReady), then converge.
    let regions = ["eu-west-1", "eu-central-1"];
    for region in regions {
        let name = format!("{primary}-{region}");
        let extra = json!({"alias": format!("alias/{primary}"), "tags": {"region-role": "dr"}});
        scenario.add_replica(&name, region, extra).await;
    }
    let primary_arn = scenario.primary_arn().await;
    let primary_kms = kms_client(DEFAULT_REGION).await;
    let ciphertext = primary_kms
        .encrypt()
        .key_id(&primary_arn)
        .plaintext(Blob::new(b"multi-region secret".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    for region in regions {
        let name = format!("{primary}-{region}");
        let r = wait_replica_ready(&op.client, NS, &name).await;
        let status = r.status.unwrap();
        let arn = status.arn.clone().unwrap();
        assert!(arn.starts_with(&format!("arn:aws:kms:{region}:")), "{arn}");
        assert_eq!(status.primary_arn.as_deref(), Some(primary_arn.as_str()));
        assert_eq!(status.key_state.as_deref(), Some("Enabled"));
        let kms = kms_client(region).await;
        let plain = kms
            .decrypt()
            .key_id(&arn)
            .ciphertext_blob(ciphertext.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            plain.plaintext().map(|b| b.as_ref().to_vec()),
            Some(b"multi-region secret".to_vec()),
            "{region}"
        );
        let tags = kms.list_resource_tags().key_id(&arn).send().await.unwrap();
        assert!(
            tags.tags()
                .iter()
                .any(|t| t.tag_key() == "region-role" && t.tag_value() == "dr")
        );
        assert!(tags.tags().iter().any(
            |t| t.tag_key() == "keyfleet.dev/owner" && t.tag_value() == format!("{NS}/{name}")
        ));
        let aliases = kms.list_aliases().key_id(&arn).send().await.unwrap();
        assert!(
            aliases
                .aliases()
                .iter()
                .any(|a| a.alias_name() == Some(&format!("alias/{primary}")))
        );
    }

    // The primary lists its replicas.
    let listed = wait_for(
        &api,
        &primary,
        Duration::from_secs(30),
        "both replicas listed",
        |k| k.status.as_ref().is_some_and(|s| s.replicas.len() == 2),
    )
    .await;
    let mut listed_regions: Vec<String> = listed
        .status
        .unwrap()
        .replicas
        .iter()
        .map(|r| r.region.clone())
        .collect();
    listed_regions.sort();
    assert_eq!(listed_regions, vec!["eu-central-1", "eu-west-1"]);

    // Someone deletes the replica's material: back to PendingImport, and keyfleet imports the
    // same material again on the next reconcile.
    let name = format!("{primary}-eu-west-1");
    let arn = scenario.replica_arn(&name).await;
    let kms = kms_client("eu-west-1").await;
    let imports_before = op.event_count(&name, "MaterialImported");
    kms.delete_imported_key_material()
        .key_id(&arn)
        .send()
        .await
        .unwrap();
    let meta = describe(&kms, &arn).await;
    assert_eq!(meta.key_state().map(|s| s.as_str()), Some("PendingImport"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let meta = describe(&kms, &arn).await;
        if meta.key_state().map(|s| s.as_str()) == Some("Enabled") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica was not re-imported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let plain = kms
        .decrypt()
        .key_id(&arn)
        .ciphertext_blob(ciphertext)
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.plaintext().map(|b| b.as_ref().to_vec()),
        Some(b"multi-region secret".to_vec())
    );
    op.wait_events(&name, &["MaterialImported"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while op.event_count(&name, "MaterialImported") != imports_before + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected exactly one more import"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hmac_replicas_produce_the_same_macs_and_deletion_policies_apply() {
    let op = Operator::start(MemKube::new()).await;
    let primary = unique("mrk-hmac");
    let scenario = ReplicaScenario::new(&op, NS, &primary, KeySpec::Hmac384, json!({})).await;
    let primary_arn = scenario.primary_arn().await;
    let deleted = format!("{primary}-del");
    let retained = format!("{primary}-keep");
    let pending_window = json!({"pendingWindowDays": 7});
    scenario
        .add_replica(&deleted, "eu-west-1", pending_window)
        .await;
    let retain = json!({"deletionPolicy": "Retain"});
    scenario.add_replica(&retained, "ap-south-1", retain).await;
    let mac = |region: &'static str, arn: String| async move {
        kms_client(region)
            .await
            .generate_mac()
            .key_id(arn)
            .mac_algorithm(MacAlgorithmSpec::HmacSha384)
            .message(Blob::new(b"probe".to_vec()))
            .send()
            .await
            .unwrap()
            .mac()
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let primary_mac = mac(DEFAULT_REGION, primary_arn).await;
    let del_arn = scenario.replica_arn(&deleted).await;
    let keep_arn = scenario.replica_arn(&retained).await;
    assert_eq!(mac("eu-west-1", del_arn.clone()).await, primary_mac);
    assert_eq!(mac("ap-south-1", keep_arn.clone()).await, primary_mac);

    let replicas: Api<AwsReplicaKey> = Api::namespaced(op.client.clone(), NS);
    for name in [&deleted, &retained] {
        replicas.delete(name, &Default::default()).await.unwrap();
    }
    for name in [&deleted, &retained] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while replicas.get_opt(name).await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "{name} not deleted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let state = |region: &'static str, arn: String| async move {
        Some(key_state(&kms_client(region).await, &arn).await)
    };
    assert_eq!(
        state("eu-west-1", del_arn).await.as_deref(),
        Some("PendingDeletion")
    );
    assert_eq!(
        state("ap-south-1", keep_arn).await.as_deref(),
        Some("Enabled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_replica_input_is_refused_precisely_without_stray_replicas() {
    let op = Operator::start(MemKube::new()).await;
    let api = op.keys(NS);
    let single = unique("single");
    create_key_with_material(&op, NS, &single, KeySpec::SymmetricDefault, json!({})).await;
    let mrk = unique("mrk-bad");
    let kms_name = unique("us-only");
    Api::<AwsKms>::all(op.client.clone())
        .create(
            &PostParams::default(),
            &AwsKms::new(
                &kms_name,
                AwsKmsSpec {
                    regions: vec![DEFAULT_REGION.into(), "eu-west-1".into()],
                    ..AwsKmsSpec::new(AllowedNamespaces::all())
                },
            ),
        )
        .await
        .unwrap();
    let kms_ref = json!({"kmsRef": {"name": kms_name}});
    let scenario = ReplicaScenario::new(&op, NS, &mrk, KeySpec::SymmetricDefault, kms_ref).await;
    let mrk_arn = scenario.primary_arn().await;
    wait_ready(&api, &single).await;

    let cases = [
        (
            "PrimaryNotMultiRegion",
            replica(&unique("r1"), &single, "eu-west-1", json!({})),
            NS,
        ),
        (
            "ReplicaRegionIsPrimaryRegion",
            replica(&unique("r2"), &mrk, DEFAULT_REGION, json!({})),
            NS,
        ),
        (
            "RegionNotAllowed",
            replica(&unique("r3"), &mrk, "eu-central-1", json!({})),
            NS,
        ),
        // The primary exists only in team-a; a replica in team-b cannot reach it.
        (
            "PrimaryNotReady",
            replica(&unique("r4"), &mrk, "eu-west-1", json!({})),
            "team-b",
        ),
        (
            "PrimaryNotReady",
            replica(&unique("r5"), "no-such-primary", "eu-west-1", json!({})),
            NS,
        ),
    ];
    for (reason, r, ns) in &cases {
        create_replica(&op.client, ns, r).await;
        let name = r.metadata.name.clone().unwrap();
        let refused = wait_replica_reason(&op.client, ns, &name, reason).await;
        assert!(
            refused.status.unwrap().key_id.is_none(),
            "{reason}: a replica was recorded"
        );
        op.wait_events(&name, &[reason]).await;
    }
    // No replica of either primary exists anywhere.
    let described = describe(&kms_client(DEFAULT_REGION).await, &mrk_arn).await;
    let replicas = described
        .multi_region_configuration()
        .map(|c| c.replica_keys().len())
        .unwrap_or(0);
    assert_eq!(replicas, 0, "a stray replica was created");
}

/// A primary lists a new replica within seconds, not at its next resync: the replica's own
/// changes wake its primary (here the resync interval is ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_lists_a_new_replica_within_seconds_not_at_its_next_resync() {
    let mut slow = settings();
    slow.resync_interval = Duration::from_secs(600);
    slow.drift_interval = Duration::from_secs(600);
    let op = Operator::start_with(MemKube::new(), localstack_clients().await, slow);
    let api = op.keys(NS);
    let primary = unique("mrk-list");
    let scenario =
        ReplicaScenario::new(&op, NS, &primary, KeySpec::SymmetricDefault, json!({})).await;
    let ready = scenario.ready_primary().await;
    assert!(ready.status.unwrap().replicas.is_empty());

    let name = format!("{primary}-eu-west-1");
    scenario.add_replica(&name, "eu-west-1", json!({})).await;
    let replica_arn = scenario.replica_arn(&name).await;
    // Far below the ten-minute resync that listed it before.
    wait_for(
        &api,
        &primary,
        Duration::from_secs(15),
        "the replica in status.replicas",
        |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.replicas.iter().any(|r| r.arn == replica_arn))
        },
    )
    .await;
}

// What only real AWS shows, with aws-smithy-mocks on the SDK.

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

/// A primary `<prefix>-…` and its replica in the API (see `setup`), and the operator on the
/// mocked KMS whose ImportKeyMaterial into the replica succeeds or not; the replica's name.
async fn start_mocked(prefix: &str, import_ok: bool) -> (Operator, Rules, String) {
    let kube = MemKube::new();
    let name = unique(prefix);
    let (primary, replica) = setup(&kube, &name).await;
    let rules = rules(&primary, &replica, import_ok);
    let op = start(&kube, &rules);
    (op, rules, replica.metadata.name.clone().unwrap())
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
    let (op, rules, replica) = start_mocked("born", true).await;
    let ready = replica_condition(&op, &replica, ("True", "KeyReady")).await;
    assert_eq!(rules.replicate.num_calls(), 1, "exactly one ReplicateKey");
    assert_eq!(
        rules.import.num_calls(),
        1,
        "exactly one import into the replica"
    );
    let status = ready.status.unwrap();
    assert_eq!(status.arn.as_deref(), Some(REPLICA_ARN));
    assert_eq!(status.primary_arn.as_deref(), Some(PRIMARY_ARN));
    op.wait_events(&replica, &["KeyReplicated", "MaterialImported", "KeyReady"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refusing_the_material_is_material_mismatch() {
    let (op, rules, replica) = start_mocked("refused", false).await;
    replica_condition(&op, &replica, ("False", "MaterialMismatch")).await;
    op.wait_events(&replica, &["MaterialMismatch"]).await;
    let calls = rules.import.num_calls();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        rules.import.num_calls(),
        calls,
        "the refused import is retried in a loop"
    );
}
