//! AwsReplicaKey with the real controller wiring.
//!
//! Against LocalStack: a multi-region primary and replicas in two regions with matching
//! material, a replica forced back to PendingImport is re-imported, the primary lists its
//! replicas, bad input is refused without stray replicas, Delete/Retain.
//!
//! On the strict KMS model (crates/kms-model), what only real AWS shows: ReplicateKey returns a
//! replica in PendingImport (keyfleet imports the primary's material into it, once), and a
//! replica that KMS refuses other material (IncorrectKeyMaterialException) is reported as
//! MaterialMismatch.

mod support;

use std::time::Duration;

use keyfleet::api::{AllowedNamespaces, AwsKms, AwsKmsSpec, AwsReplicaKey, KeySpec};
use kms_model::KmsModel;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use memkube::MemKube;
use serde_json::json;
use support::kms_use::{alias_names, decrypt, encrypt, generate_mac};
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::outside::{adoptable_key_with_other_material, delete_material};
use support::replicas::*;

const NS: &str = "team-a";

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
    let ciphertext = encrypt(&primary_kms, &primary_arn, b"multi-region secret").await;

    for region in regions {
        let name = format!("{primary}-{region}");
        let r = wait_replica_ready(&op.client, NS, &name).await;
        let status = r.status.unwrap();
        let arn = status.arn.clone().unwrap();
        assert!(arn.starts_with(&format!("arn:aws:kms:{region}:")), "{arn}");
        assert_eq!(status.primary_arn.as_deref(), Some(primary_arn.as_str()));
        assert_eq!(status.key_state.as_deref(), Some("Enabled"));
        let kms = kms_client(region).await;
        assert_eq!(
            decrypt(&kms, Some(&arn), ciphertext.clone()).await,
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
        let aliases = alias_names(&kms, &arn).await;
        assert!(aliases.contains(&format!("alias/{primary}")), "{aliases:?}");
    }

    // The primary lists its replicas.
    let listed = wait_for(&api, &primary, "both replicas listed", |k| {
        k.status.as_ref().is_some_and(|s| s.replicas.len() == 2)
    })
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
    delete_material(&kms, &arn).await;
    let meta = describe(&kms, &arn).await;
    assert_eq!(meta.key_state().map(|s| s.as_str()), Some("PendingImport"));
    let enabled = async || key_state(&kms, &arn).await == "Enabled";
    let (timeout, every) = (Duration::from_secs(30), Duration::from_millis(200));
    eventually(timeout, every, "the replica was not re-imported", enabled).await;
    assert_eq!(
        decrypt(&kms, Some(&arn), ciphertext).await,
        Some(b"multi-region secret".to_vec())
    );
    op.wait_events(&name, &["MaterialImported"]).await;
    let one_more = async || op.event_count(&name, "MaterialImported") == imports_before + 1;
    let (timeout, every) = (Duration::from_secs(10), Duration::from_millis(100));
    eventually(timeout, every, "expected exactly one more import", one_more).await;
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
        let kms = kms_client(region).await;
        generate_mac(&kms, &arn, KeySpec::Hmac384, b"probe")
            .await
            .unwrap()
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
    create_symmetric_key(&op, NS, &single, json!({})).await;
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
    let scenario = ReplicaScenario::symmetric(&op, NS, &primary).await;
    let ready = scenario.ready_primary().await;
    assert!(ready.status.unwrap().replicas.is_empty());

    let name = format!("{primary}-eu-west-1");
    scenario.add_replica(&name, "eu-west-1", json!({})).await;
    let replica_arn = scenario.replica_arn(&name).await;
    // Far below the ten-minute resync that listed it before.
    wait_for_within(
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

// What only real AWS shows, on the strict KMS model (crates/kms-model): ReplicateKey returns
// a replica in PendingImport, and a replica takes only the material its primary holds.

/// The key id in a key ARN.
fn key_id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The ImportKeyMaterial requests the model received in `region`.
fn imports_in(model: &KmsModel, region: &str) -> Vec<kms_model::RecordedRequest> {
    model
        .requests_of("ImportKeyMaterial")
        .into_iter()
        .filter(|r| r.region == region)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_born_pending_import_gets_the_primarys_material() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let primary = unique("born");
    let scenario = ReplicaScenario::symmetric(&op, NS, &primary).await;
    let primary_arn = scenario.primary_arn().await;
    let key_id = key_id_of(&primary_arn);
    let name = format!("{primary}-eu");
    scenario.add_replica(&name, "eu-west-1", json!({})).await;
    let ready = wait_replica_ready(&op.client, NS, &name).await;

    let replicate = model.requests_of("ReplicateKey");
    assert_eq!(replicate.len(), 1, "exactly one ReplicateKey");
    assert_eq!(replicate[0].params["KeyId"], primary_arn.as_str());
    assert_eq!(replicate[0].params["ReplicaRegion"], "eu-west-1");
    let imports = imports_in(&model, "eu-west-1");
    assert_eq!(
        imports.len(),
        1,
        "exactly one import into the replica: {imports:?}"
    );
    assert_eq!(imports[0].error, None);
    assert_eq!(imports[0].params.get("ImportType"), None);
    assert_eq!(
        imports[0].params["ExpirationModel"],
        "KEY_MATERIAL_DOES_NOT_EXPIRE"
    );
    let in_primary = model.key(DEFAULT_REGION, key_id).unwrap();
    let in_replica = model.key("eu-west-1", key_id).unwrap();
    assert_eq!(in_replica.key_state, "Enabled");
    assert!(in_primary.current_key_material_id.is_some());
    assert_eq!(
        in_replica.imported.keys().collect::<Vec<_>>(),
        vec![in_primary.current_key_material_id.as_ref().unwrap()],
        "the replica holds exactly the primary's material"
    );
    let status = ready.status.unwrap();
    assert_eq!(status.arn.as_deref(), Some(in_replica.arn.as_str()));
    assert_eq!(status.primary_arn.as_deref(), Some(primary_arn.as_str()));
    op.wait_events(&name, &["KeyReplicated", "MaterialImported", "KeyReady"])
        .await;
}

/// A multi-Region key imported outside keyfleet (material A) and adopted by an AwsKey whose
/// Secret holds other material (B): the primary proves its material by importing B, which KMS
/// refuses (MaterialMismatch), and so does the replica's import (IncorrectKeyMaterialException),
/// reported as MaterialMismatch, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_refusing_the_material_is_material_mismatch() {
    let ModelHarness { model, op, kms } = ModelHarness::start([]).await;
    let primary = unique("refused");
    let arn = adoptable_key_with_other_material(&kms, NS, &primary, true).await;
    let scenario = ReplicaScenario::new(
        &op,
        NS,
        &primary,
        KeySpec::SymmetricDefault,
        json!({"adoptKeyArn": arn}),
    )
    .await;
    wait_reason(&scenario.keys(), &primary, "MaterialMismatch").await;
    let name = format!("{primary}-eu");
    scenario.add_replica(&name, "eu-west-1", json!({})).await;
    wait_replica_reason(&op.client, NS, &name, "MaterialMismatch").await;
    op.wait_events(&name, &["MaterialMismatch"]).await;
    let refused = imports_in(&model, "eu-west-1");
    assert!(!refused.is_empty(), "the replica got the Secret's material");
    assert!(
        refused
            .iter()
            .all(|r| r.error.as_deref() == Some("IncorrectKeyMaterialException")),
        "{refused:?}"
    );
    assert_eq!(
        model.key("eu-west-1", key_id_of(&arn)).unwrap().key_state,
        "PendingImport"
    );
    // The reconcile that the condition's own status write triggers may try once more; then the
    // replica rests until something changes (blocked recheck: ten minutes).
    op.wait_resting("AwsReplicaKey", NS, &name).await;
    let settled = imports_in(&model, "eu-west-1").len();
    assert!(settled <= 2, "{settled} imports refused");
}

/// Two AwsReplicaKeys of one primary in one region: KMS holds one replica per region, so one of
/// them gets it and the other is refused precisely — they never share it or fight over its tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_replica_of_a_primary_in_one_region_is_refused_not_shared() {
    let op = Operator::start(MemKube::new()).await;
    let primary = unique("twice");
    let scenario = ReplicaScenario::symmetric(&op, NS, &primary).await;
    scenario.primary_arn().await;
    let (first, second) = (format!("{primary}-a"), format!("{primary}-b"));
    scenario.add_replica(&first, "eu-west-1", json!({})).await;
    scenario.add_replica(&second, "eu-west-1", json!({})).await;
    // The older one gets the replica; the other is refused, never sharing it.
    let loser = wait_replica_reason(&op.client, NS, &second, "ReplicaRegionTaken").await;
    let winner = wait_replica_ready(&op.client, NS, &first).await;
    op.wait_events(&second, &["ReplicaRegionTaken"]).await;
    assert!(
        loser.status.as_ref().unwrap().key_id.is_none(),
        "{:?}",
        loser.status
    );
    let message = loser
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
        .clone();
    assert!(message.contains(&first), "{message}");
    let replicas: Api<AwsReplicaKey> = Api::namespaced(op.client.clone(), NS);
    // It stays that way: the loser rests, the winner keeps its replica and its tags.
    op.wait_resting("AwsReplicaKey", NS, &second).await;
    let winner_now = replicas.get(&winner.name_any()).await.unwrap();
    assert_eq!(
        replica_ready(&winner_now).map(|(s, _)| s).as_deref(),
        Some("True")
    );
    let arn = winner_now.status.unwrap().arn.clone().unwrap();
    let kms = kms_client("eu-west-1").await;
    let tags = kms.list_resource_tags().key_id(&arn).send().await.unwrap();
    let owner = tags
        .tags()
        .iter()
        .find(|t| t.tag_key() == "keyfleet.dev/owner-uid")
        .map(|t| t.tag_value().to_string());
    assert_eq!(owner, winner.metadata.uid.clone());
}
