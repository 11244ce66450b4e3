//! AwsReplicaKey against LocalStack with the real controller wiring: a multi-region primary and
//! replicas in two regions with matching material, a replica forced back to PendingImport is
//! re-imported, the primary lists its replicas, bad input is refused without stray replicas,
//! Delete/Retain.

mod support;

use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MacAlgorithmSpec;
use keyfleet::api::{AwsKms, AwsKmsSpec, AwsReplicaKey, KeySpec};
use kube::Api;
use kube::api::PostParams;
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::replicas::*;

const NS: &str = "team-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_in_two_regions_hold_the_primarys_material_and_are_reimported_when_pending_import()
{
    let op = Operator::start(MemKube::new()).await;
    let api = op.keys(NS);
    let primary = unique("mrk");
    create_material_secret(&op.client, NS, &primary, KeySpec::SymmetricDefault).await;
    create_key(
        &api,
        &aws_key(
            &primary,
            DEFAULT_REGION,
            &primary,
            json!({"multiRegion": true, "alias": format!("alias/{primary}")}),
        ),
    )
    .await;
    // Replicas applied at once with the primary wait for it (PrimaryNotReady), then converge.
    let regions = ["eu-west-1", "eu-central-1"];
    for region in regions {
        let name = format!("{primary}-{region}");
        create_replica(
            &op.client,
            NS,
            &replica(
                &name,
                &primary,
                region,
                json!({"alias": format!("alias/{primary}"), "tags": {"region-role": "dr"}}),
            ),
        )
        .await;
    }
    let primary_arn = wait_ready(&api, &primary)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
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
    let arn = wait_replica_ready(&op.client, NS, &name)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
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
    let api = op.keys(NS);
    let primary = unique("mrk-hmac");
    create_material_secret(&op.client, NS, &primary, KeySpec::Hmac384).await;
    create_key(
        &api,
        &aws_key(
            &primary,
            DEFAULT_REGION,
            &primary,
            json!({"multiRegion": true, "keySpec": "HMAC_384"}),
        ),
    )
    .await;
    let primary_arn = wait_ready(&api, &primary)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
    let deleted = format!("{primary}-del");
    let retained = format!("{primary}-keep");
    create_replica(
        &op.client,
        NS,
        &replica(
            &deleted,
            &primary,
            "eu-west-1",
            json!({"pendingWindowDays": 7}),
        ),
    )
    .await;
    create_replica(
        &op.client,
        NS,
        &replica(
            &retained,
            &primary,
            "ap-south-1",
            json!({"deletionPolicy": "Retain"}),
        ),
    )
    .await;
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
    let del_arn = wait_replica_ready(&op.client, NS, &deleted)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
    let keep_arn = wait_replica_ready(&op.client, NS, &retained)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
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
    create_material_secret(&op.client, NS, &single, KeySpec::SymmetricDefault).await;
    create_key(&api, &aws_key(&single, DEFAULT_REGION, &single, json!({}))).await;
    let mrk = unique("mrk-bad");
    let kms_name = unique("us-only");
    Api::<AwsKms>::all(op.client.clone())
        .create(
            &PostParams::default(),
            &AwsKms::new(
                &kms_name,
                AwsKmsSpec {
                    regions: vec![DEFAULT_REGION.into(), "eu-west-1".into()],
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    create_material_secret(&op.client, NS, &mrk, KeySpec::SymmetricDefault).await;
    create_key(
        &api,
        &aws_key(
            &mrk,
            DEFAULT_REGION,
            &mrk,
            json!({"multiRegion": true, "kmsRef": {"name": kms_name}}),
        ),
    )
    .await;
    let mrk_arn = wait_ready(&api, &mrk)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
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
    create_material_secret(&op.client, NS, &primary, KeySpec::SymmetricDefault).await;
    create_key(
        &api,
        &aws_key(
            &primary,
            DEFAULT_REGION,
            &primary,
            json!({"multiRegion": true}),
        ),
    )
    .await;
    let ready = wait_ready(&api, &primary).await;
    assert!(ready.status.unwrap().replicas.is_empty());

    let name = format!("{primary}-eu-west-1");
    create_replica(
        &op.client,
        NS,
        &replica(&name, &primary, "eu-west-1", json!({})),
    )
    .await;
    let replica_arn = wait_replica_ready(&op.client, NS, &name)
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();
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
