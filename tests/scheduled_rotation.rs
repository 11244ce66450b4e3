//! `keyMaterial.generate.rotation` on the strict KMS model (LocalStack cannot rotate imported
//! keys), with a manual clock: once `every` has passed, keyfleet generates the next material
//! into `<secret>-<n>`, keeps the previous Secret (status `generatedMaterial.retained`) and
//! rotates through the Rotate path (a replica imports first); `status.nextRotationTime` moves
//! on; a schedule missed while keyfleet was down rotates once, not once per missed period.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use keyfleet::api::{AwsKey, AwsKeyStatus, RetainedSecret};
use keyfleet::kms::KmsClients;
use kube::Api;
use memkube::MemKube;
use serde_json::json;

use support::clock::ManualClock;
use support::generated_secrets::generated_material;
use support::localstack::DEFAULT_REGION;
use support::operator::{
    Operator, assert_rotated_in_kms, aws_key, create_key, ready, settings, wait_for,
    wait_for_within, wait_ready,
};
use support::replicas::{create_replica, replica, wait_replica};

const NS: &str = "rotating";
const REPLICA_REGION: &str = "eu-central-1";
const DAY: SignedDuration = SignedDuration::from_hours(24);

/// A test's KMS model, clock (at a whole second: status times are written to the second),
/// in-memory API and the operator on them.
struct World {
    model: kms_model::KmsModel,
    clock: ManualClock,
    kube: MemKube,
    op: Operator,
}

impl World {
    async fn start() -> World {
        let model = kms_model::KmsModel::start().await.unwrap();
        let clock = ManualClock::new(Timestamp::from_second(Timestamp::now().as_second()).unwrap());
        let kube = MemKube::new();
        let op = operator(&model, &kube, &clock).await;
        World {
            model,
            clock,
            kube,
            op,
        }
    }
}

/// The operator on `model` and `kube`, reading the time from `clock`.
async fn operator(model: &kms_model::KmsModel, kube: &MemKube, clock: &ManualClock) -> Operator {
    let clients = KmsClients::from_config(support::localstack::sdk_config(&model.url()));
    let op = Operator::start_with_clock(kube.clone(), clients, settings(), clock.clock());
    op.connection_checked().await;
    op
}

/// A SYMMETRIC_DEFAULT AwsKey whose generated material (Secret `<name>-material`) rotates
/// every 30 days.
fn rotating_key(name: &str, extra: serde_json::Value) -> AwsKey {
    let secret = format!("{name}-material");
    let mut fields = json!({
        "keyMaterial": {
            "secretRef": {"name": secret, "key": "material"},
            "onChange": "Rotate",
            "generate": {"rotation": {"every": "30d"}},
        },
    });
    fields
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    aws_key(name, DEFAULT_REGION, &secret, fields)
}

/// Creates the rotating AwsKey `name` ([`rotating_key`]) in NS; the AwsKeys of NS.
async fn create_rotating_key(op: &Operator, name: &str, extra: serde_json::Value) -> Api<AwsKey> {
    let api = op.keys(NS);
    create_key(&api, &rotating_key(name, extra)).await;
    api
}

/// The raw material in the Secret `name`, which keyfleet generated for `for_key`.
async fn secret_material(client: &kube::Client, name: &str, for_key: &str) -> Vec<u8> {
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    generated_material(&secrets.get(name).await.unwrap(), for_key)
}

fn status(k: &AwsKey) -> AwsKeyStatus {
    k.status.clone().unwrap_or_default()
}

fn rotations(k: &AwsKey) -> i64 {
    k.status
        .as_ref()
        .and_then(|s| s.rotation_count)
        .unwrap_or(0)
}

/// Ready after `n` rotations.
async fn wait_rotated(api: &Api<AwsKey>, name: &str, n: i64) -> AwsKey {
    let key_ready = Some(("True".to_string(), "KeyReady".to_string()));
    wait_for_within(
        api,
        name,
        Duration::from_secs(40),
        &format!("{n} rotations, Ready"),
        |k| rotations(k) == n && ready(k) == key_ready,
    )
    .await
}

/// The schedule while keyfleet runs: nothing before `every`, then one rotation to material in
/// `<secret>-1`, the previous Secret retained and untouched, the next time 30 days on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_material_rotates_on_its_schedule_into_a_new_secret() {
    let World {
        model, clock, op, ..
    } = World::start().await;
    let api = create_rotating_key(&op, "sched", json!({})).await;
    let k = wait_ready(&api, "sched").await;
    let created_at = clock.now();
    let first = status(&k);
    let key_id = first.key.key_id.clone().unwrap();
    let old = secret_material(&op.client, "sched-material", "sched").await;
    let old_id = kms_model::key_material_id(&key_id, &old);
    let generated = first
        .generated_material
        .clone()
        .expect("status.generatedMaterial");
    assert_eq!(
        (generated.secret.as_str(), generated.sequence),
        ("sched-material", 0)
    );
    assert_eq!(
        first.next_rotation_time.as_ref().map(|t| t.0),
        Some(created_at + DAY * 30)
    );

    // 29 days: not due.
    clock.advance(DAY * 29);
    op.reconcile_again(NS, "sched").await;
    assert_eq!(rotations(&api.get("sched").await.unwrap()), 0);
    assert!(model.requests_of("RotateKeyOnDemand").is_empty());
    let secrets: Api<Secret> = Api::namespaced(op.client.clone(), NS);
    assert!(secrets.get_opt("sched-material-1").await.unwrap().is_none());

    // 31 days: due. The next material goes into sched-material-1 and the key rotates to it.
    clock.advance(DAY * 2);
    let rotated_at = clock.now();
    op.reconcile_again(NS, "sched").await;
    let k = wait_rotated(&api, "sched", 1).await;
    let new = secret_material(&op.client, "sched-material-1", "sched").await;
    let new_id = kms_model::key_material_id(&key_id, &new);
    let s = status(&k);
    assert_eq!(s.key.key_material_id.as_deref(), Some(new_id.as_str()));
    assert_eq!(
        s.key.previous_key_material_id.as_deref(),
        Some(old_id.as_str())
    );
    let generated = s.generated_material.clone().unwrap();
    assert_eq!(
        (generated.secret.as_str(), generated.sequence),
        ("sched-material-1", 1)
    );
    assert_eq!(
        generated.retained,
        vec![RetainedSecret {
            secret: "sched-material".into(),
            key_material_id: Some(old_id.clone()),
            fingerprint: first.key.material_fingerprint.clone(),
        }]
    );
    assert_eq!(
        s.next_rotation_time.as_ref().map(|t| t.0),
        Some(rotated_at + DAY * 30)
    );
    // The previous Secret is kept as it was; KMS holds both materials, the new one current.
    assert_eq!(
        secret_material(&op.client, "sched-material", "sched").await,
        old
    );
    assert_rotated_in_kms(&model, DEFAULT_REGION, &key_id, &old_id, &new_id);
    assert_eq!(model.requests_of("RotateKeyOnDemand").len(), 1);
    op.wait_events("sched", &["MaterialGenerated", "KeyRotated"])
        .await;

    // Resyncs within the new period rotate nothing more.
    let seen = op.wait_own_reconciles("AwsKey", NS, "sched", 0, 0).await;
    op.wait_own_reconciles("AwsKey", NS, "sched", seen, 2).await;
    op.reconcile_again(NS, "sched").await;
    assert_eq!(rotations(&api.get("sched").await.unwrap()), 1);
    assert!(secrets.get_opt("sched-material-2").await.unwrap().is_none());

    // Without the schedule the key keeps the material of its last rotation: no rotation back
    // to the first Secret, the bookkeeping stays, no next time.
    let unscheduled = json!({"spec": {"keyMaterial": {"generate": {"rotation": null}}}});
    api.patch(
        "sched",
        &Default::default(),
        &kube::api::Patch::Merge(&unscheduled),
    )
    .await
    .unwrap();
    clock.advance(DAY * 60);
    op.reconcile_again(NS, "sched").await;
    let k = wait_for(&api, "sched", "no next rotation", |k| {
        status(k).next_rotation_time.is_none()
    })
    .await;
    assert_eq!(ready(&k), Some(("True".into(), "KeyReady".into())));
    assert_eq!(rotations(&k), 1);
    assert_eq!(
        status(&k).generated_material.unwrap().secret,
        "sched-material-1"
    );
    assert_eq!(model.requests_of("RotateKeyOnDemand").len(), 1);
}

/// keyfleet was down for more than three periods: on start it rotates once (one new Secret,
/// one RotateKeyOnDemand) and the next rotation is a whole period after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_missed_while_keyfleet_was_down_rotates_once() {
    let World {
        model,
        clock,
        kube,
        mut op,
    } = World::start().await;
    let api = create_rotating_key(&op, "missed", json!({})).await;
    wait_ready(&api, "missed").await;
    secret_material(&op.client, "missed-material", "missed").await;
    op.stop().await;

    clock.advance(DAY * 100);
    let restarted_at = clock.now();
    let op = operator(&model, &kube, &clock).await;
    let k = wait_rotated(&api, "missed", 1).await;
    secret_material(&op.client, "missed-material-1", "missed").await;
    assert_eq!(
        status(&k).next_rotation_time.map(|t| t.0),
        Some(restarted_at + DAY * 30),
        "a whole period after the catch-up rotation, not after the missed dates"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    op.reconcile_again(NS, "missed").await;
    assert_eq!(rotations(&api.get("missed").await.unwrap()), 1);
    assert_eq!(
        model.requests_of("RotateKeyOnDemand").len(),
        1,
        "once, not once per missed period"
    );
    let secrets: Api<Secret> = Api::namespaced(op.client.clone(), NS);
    assert!(
        secrets
            .get_opt("missed-material-2")
            .await
            .unwrap()
            .is_none()
    );
}

/// A multi-Region key: the replica reads the primary's new Secret and imports the material
/// (EXISTING_KEY_MATERIAL) before the primary rotates; both end on the new material.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_rotation_brings_the_replica_along_first() {
    let World {
        model, clock, op, ..
    } = World::start().await;
    let api = create_rotating_key(&op, "mrk", json!({"multiRegion": true})).await;
    create_replica(
        &op.client,
        NS,
        &replica("mrk-eu", "mrk", REPLICA_REGION, json!({})),
    )
    .await;
    let key_id = status(&wait_ready(&api, "mrk").await).key.key_id.unwrap();
    let replica_ready = |r: &keyfleet::api::AwsReplicaKey| {
        support::replicas::replica_ready(r) == Some(("True".into(), "KeyReady".into()))
    };
    wait_replica(&op.client, NS, "mrk-eu", "Ready", replica_ready).await;
    secret_material(&op.client, "mrk-material", "mrk").await;
    let imports_before = model.requests_of("ImportKeyMaterial").len();

    clock.advance(DAY * 31);
    op.reconcile_again(NS, "mrk").await;
    wait_rotated(&api, "mrk", 1).await;
    let new = secret_material(&op.client, "mrk-material-1", "mrk").await;
    let new_id = kms_model::key_material_id(&key_id, &new);
    wait_replica(&op.client, NS, "mrk-eu", "on the new material", |r| {
        replica_ready(r)
            && r.status.as_ref().and_then(|s| s.key_material_id.as_deref()) == Some(new_id.as_str())
    })
    .await;
    let order: Vec<(String, String)> = model
        .requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r.operation.as_str(),
                "ImportKeyMaterial" | "RotateKeyOnDemand"
            ) && r.error.is_none()
        })
        .skip(imports_before)
        .map(|r| (r.operation, r.region))
        .collect();
    assert_eq!(
        order,
        vec![
            ("ImportKeyMaterial".to_string(), DEFAULT_REGION.to_string()),
            ("ImportKeyMaterial".to_string(), REPLICA_REGION.to_string()),
            ("RotateKeyOnDemand".to_string(), DEFAULT_REGION.to_string()),
        ],
        "new material into the primary, then the replica, then the rotation"
    );
    for region in [DEFAULT_REGION, REPLICA_REGION] {
        let in_kms = model.key(region, &key_id).unwrap();
        assert_eq!(
            in_kms.current_key_material_id.as_deref(),
            Some(new_id.as_str()),
            "{region}"
        );
        assert_eq!(
            in_kms.materials.len(),
            2,
            "{region}: the previous material stays"
        );
    }
}

/// A schedule on a key whose material expires (`rollingValidity`): the Secret a rotation moves
/// away from counts as retained without being listed, so the rotation goes ahead (no
/// `PreviousMaterialNotRetained`), and the previous material is renewed within its renewal
/// window: it outlives its first ValidTo, and the key never falls back to PendingImport.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expiring_schedule_keeps_the_materials_it_rotated_away_from_alive() {
    let World {
        model, clock, op, ..
    } = World::start().await;
    let expiring = json!({"expiration": {"rollingValidity": "90d"}});
    let api = create_rotating_key(&op, "expiring", expiring).await;
    let k = wait_ready(&api, "expiring").await;
    let key_id = status(&k).key.key_id.clone().unwrap();
    let old = secret_material(&op.client, "expiring-material", "expiring").await;
    let old_id = kms_model::key_material_id(&key_id, &old);
    // Both clocks move together: keyfleet's (schedule, ValidTo) and KMS's (expiry).
    let advance = |days: i32| {
        clock.advance(DAY * days);
        model.advance(Duration::from_secs(86_400 * days as u64));
    };

    // Day 31: due. The rotation does not wait for the previous Secret to be listed.
    advance(31);
    op.reconcile_again(NS, "expiring").await;
    let k = wait_rotated(&api, "expiring", 1).await;
    let events = op.events_for("expiring");
    assert!(
        !events
            .iter()
            .any(|(_, reason, _)| reason == "PreviousMaterialNotRetained"),
        "{events:?}"
    );
    let previous = status(&k)
        .key
        .materials
        .iter()
        .find(|m| m.key_material_id.as_deref() == Some(old_id.as_str()))
        .cloned()
        .expect("the previous material in status.materials");
    assert_eq!(previous.state.as_deref(), Some("NON_CURRENT"));

    // Day 61: the previous material (ValidTo day 90) is inside its 30-day renewal window and is
    // imported again with its own KeyMaterialId.
    advance(30);
    op.reconcile_again(NS, "expiring").await;
    let renewed = |model: &kms_model::KmsModel| {
        model.requests_of("ImportKeyMaterial").iter().any(|r| {
            r.error.is_none()
                && r.params["ImportType"] == "EXISTING_KEY_MATERIAL"
                && r.params["KeyMaterialId"].as_str() == Some(old_id.as_str())
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !renewed(&model) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the previous material was not renewed: {:#?}",
            model.requests_of("ImportKeyMaterial")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Day 96: past the previous material's first ValidTo, KMS still holds both materials.
    advance(35);
    let in_kms = model.key(DEFAULT_REGION, &key_id).unwrap();
    assert_eq!(in_kms.key_state, "Enabled", "{in_kms:?}");
    assert!(
        in_kms.materials.iter().any(|(id, _)| id == &old_id),
        "{in_kms:?}"
    );
}
