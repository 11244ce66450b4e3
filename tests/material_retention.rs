//! Nothing expires that still decrypts data, on the strict KMS model (crates/kms-model) with
//! the operator's clock moved together with the model's: a rotation of expiring material waits
//! until the previous material is retained (`PreviousMaterialNotRetained`); retained material is
//! renewed with the current one on the primary and its replica, and a replica added after the
//! rotation imports it too (it needs every material); NON_CURRENT material nobody can renew
//! raises `MaterialWillExpire`, and once expired the key waits as `NonCurrentMaterialMissing`
//! until a retained Secret brings it back. And the rotation survives lost answers.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use keyfleet::api::{AwsKey, KeySpec};
use keyfleet::kms::KmsClients;
use kms_model::{Fault, FaultKind, KmsModel};
use kube::Api;
use kube::api::{Patch, PatchParams};
use memkube::MemKube;
use serde_json::json;
use support::clock::ManualClock;
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;
use support::replicas::*;

const NS: &str = "team-a";
const REPLICA_REGION: &str = "eu-west-1";
const DAY: SignedDuration = SignedDuration::from_hours(24);

/// The model and the operator on it, the operator's clock starting at the model's time.
struct Bed {
    model: KmsModel,
    clock: ManualClock,
    op: Operator,
}

impl Bed {
    async fn start() -> Bed {
        let model = KmsModel::start().await.unwrap();
        let now = model.now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let clock = ManualClock::new(Timestamp::from_second(now.as_secs() as i64).unwrap());
        let clients = KmsClients::from_config(support::localstack::sdk_config(&model.url()));
        let op = Operator::start_with_clock(MemKube::new(), clients, settings(), clock.clock());
        op.connection_checked().await;
        Bed { model, clock, op }
    }

    /// Moves both clocks by `days`.
    fn advance_days(&self, days: i32) {
        self.clock.advance(DAY * days);
        self.model
            .advance(Duration::from_secs(u64::from(days.unsigned_abs()) * 86_400));
    }

    /// ValidTo (epoch seconds) of material `id` in the key of `region`.
    fn valid_to(&self, region: &str, key_id: &str, id: &str) -> Option<i64> {
        *self
            .model
            .key(region, key_id)
            .unwrap()
            .imported
            .get(id)
            .unwrap()
    }
}

async fn patch_spec(api: &Api<AwsKey>, name: &str, spec: serde_json::Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .unwrap();
}

/// Waits until the AwsKey `name` is Ready on the material `id`.
async fn wait_rotated_to(api: &Api<AwsKey>, name: &str, id: &str) -> AwsKey {
    wait_for(api, name, "rotated, Ready", |k| {
        key_ready(k) && k.status.as_ref().and_then(|s| s.key_material_id.as_deref()) == Some(id)
    })
    .await
}

fn key_ready(k: &AwsKey) -> bool {
    ready(k) == Some(("True".into(), "KeyReady".into()))
}

/// Points the AwsKey `name` at a new Secret `<name>-2` of fresh material (`retained` as given);
/// returns the new material.
async fn new_secret(op: &Operator, name: &str) -> zeroize::Zeroizing<Vec<u8>> {
    create_material_secret(
        &op.client,
        NS,
        &format!("{name}-2"),
        KeySpec::SymmetricDefault,
    )
    .await
}

/// A name `<prefix>-…` and the spec of an AwsKey of that name whose material (Secret of the
/// same name) expires 30 days after each import and rotates when the Secret changes;
/// `key_material` adds fields to `keyMaterial`.
fn expiring_rotation(prefix: &str, key_material: serde_json::Value) -> (String, serde_json::Value) {
    let name = unique(prefix);
    let mut spec = json!({"expiration": {"rollingValidity": "30d"},
        "keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}});
    spec["keyMaterial"]
        .as_object_mut()
        .unwrap()
        .extend(key_material.as_object().unwrap().clone());
    (name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retained_material_keeps_a_rotated_key_whole_on_the_primary_and_a_later_replica() {
    let bed = Bed::start().await;
    let op = &bed.op;
    let api = op.keys(NS);
    let (name, spec) = expiring_rotation("retained", json!({}));
    let scenario = ReplicaScenario::new(op, NS, &name, KeySpec::SymmetricDefault, spec).await;
    let arn = scenario.primary_arn().await;
    let key_id = arn.rsplit('/').next().unwrap().to_string();
    let old_id = recorded_key_material_id(&api, &name).await;

    // A new Secret for expiring material, the old one not retained: refused, nothing imported.
    let new = new_secret(op, &name).await;
    let new_id = kms_model::key_material_id(&key_id, &new);
    let rotate_to_new = json!({"secretRef": {"name": format!("{name}-2"), "key": "material"}, "onChange": "Rotate"});
    patch_spec(&api, &name, json!({"keyMaterial": rotate_to_new})).await;
    let refused = wait_reason(&api, &name, "PreviousMaterialNotRetained").await;
    assert!(ready_message(&refused).contains("keyMaterial.retained"));
    assert_eq!(bed.model.requests_of("ImportKeyMaterial").len(), 1);

    // Retained: the key rotates.
    let mut retained = rotate_to_new.clone();
    retained["retained"] = json!([{"secretRef": {"name": name, "key": "material"}}]);
    patch_spec(&api, &name, json!({"keyMaterial": retained})).await;
    wait_rotated_to(&api, &name, &new_id).await;

    // A replica added after the rotation needs both materials: the current one and, from the
    // retained Secret, the old one (EXISTING_KEY_MATERIAL with its id).
    let replica = format!("{name}-eu");
    scenario
        .add_replica(&replica, REPLICA_REGION, json!({}))
        .await;
    wait_replica_ready(&op.client, NS, &replica).await;
    let in_replica = bed.model.key(REPLICA_REGION, &key_id).unwrap();
    assert_eq!(in_replica.key_state, "Enabled");
    assert_eq!(in_replica.imported.len(), 2, "{in_replica:?}");
    let retained_import = bed
        .model
        .requests_of("ImportKeyMaterial")
        .into_iter()
        .find(|r| {
            r.region == REPLICA_REGION && r.params.get("KeyMaterialId") == Some(&json!(old_id))
        })
        .expect("the replica imported the retained material");
    assert_eq!(
        retained_import.params["ImportType"],
        "EXISTING_KEY_MATERIAL"
    );
    assert_eq!(retained_import.error, None);
    // Described like every import: the retained Secret, and the replica importing it.
    let description = retained_import.params["KeyMaterialDescription"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description.contains(&format!("Secret {NS}/{name} rv "))
            && description.ends_with(&format!("for AwsReplicaKey {NS}/{replica}")),
        "{description}"
    );
    op.wait_events(&replica, &["RetainedMaterialImported"])
        .await;

    // 21 days on, 9 of 30 remain (under the 10-day threshold): both materials are renewed on
    // both keys, the old one from its retained Secret.
    bed.advance_days(21);
    let renewed = bed.clock.now().as_second() + 30 * 86_400;
    let all_renewed = || {
        [DEFAULT_REGION, REPLICA_REGION].iter().all(|region| {
            [&old_id, &new_id].iter().all(|id| {
                bed.valid_to(region, &key_id, id)
                    .is_some_and(|t| t >= renewed)
            })
        })
    };
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "renewed everywhere",
        async || all_renewed(),
    )
    .await;
    op.wait_events(&name, &["RetainedMaterialImported"]).await;
    let k = wait_for(&api, &name, "Ready", key_ready).await;
    let status = k.status.unwrap();
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "MaterialWillExpire"),
        "{:#?}",
        status.conditions
    );
    // Later resyncs do not import again (the renewed materials are far from their threshold).
    reconcile_imports_nothing(op, &bed.model, NS, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unretained_material_raises_material_will_expire_and_a_retained_secret_brings_it_back() {
    let bed = Bed::start().await;
    let op = &bed.op;
    let api = op.keys(NS);
    let (name, spec) = expiring_rotation("expiring", json!({"expiringPreviousMaterial": "Accept"}));
    let old = create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, spec)).await;
    let key_id = ready_key_id(&api, &name).await;
    let old_id = kms_model::key_material_id(&key_id, &old);
    let new = new_secret(op, &name).await;
    let new_id = kms_model::key_material_id(&key_id, &new);
    patch_spec(
        &api,
        &name,
        json!({"keyMaterial": {"secretRef": {"name": format!("{name}-2"), "key": "material"}}}),
    )
    .await;
    wait_rotated_to(&api, &name, &new_id).await;
    let old_valid_to = bed.valid_to(DEFAULT_REGION, &key_id, &old_id).unwrap();

    // 21 days on: the current material is renewed, the old one cannot be.
    bed.advance_days(21);
    let will_expire = |k: &AwsKey| {
        k.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "MaterialWillExpire" && c.status == "True" && c.message.contains(&old_id)
            })
        })
    };
    let k = wait_for(&api, &name, "MaterialWillExpire", will_expire).await;
    assert!(key_ready(&k), "the key still works");
    let warning = k
        .status
        .unwrap()
        .key
        .conditions
        .into_iter()
        .find(|c| c.type_ == "MaterialWillExpire")
        .unwrap();
    let expiry = Timestamp::from_second(old_valid_to).unwrap().to_string();
    assert!(warning.message.contains(&expiry), "{}", warning.message);
    op.wait_events(&name, &["MaterialWillExpire"]).await;
    assert!(
        op.events_for(&name)
            .iter()
            .any(|(t, r, note)| t == "Warning"
                && r == "MaterialWillExpire"
                && note.contains(&old_id))
    );
    assert!(bed.valid_to(DEFAULT_REGION, &key_id, &new_id).unwrap() > old_valid_to);
    assert_eq!(
        bed.valid_to(DEFAULT_REGION, &key_id, &old_id),
        Some(old_valid_to)
    );

    // Past its ValidTo KMS deletes it and the key is PendingImport; keyfleet says why.
    bed.advance_days(10);
    let missing = wait_reason(&api, &name, "NonCurrentMaterialMissing").await;
    assert!(ready_message(&missing).contains(&old_id));
    assert_eq!(
        bed.model.key(DEFAULT_REGION, &key_id).unwrap().key_state,
        "PendingImport"
    );

    // The old Secret listed as retained: imported again, the key is whole.
    let back =
        json!({"keyMaterial": {"retained": [{"secretRef": {"name": name, "key": "material"}}]}});
    patch_spec(&api, &name, back).await;
    wait_for(&api, &name, "Ready again", key_ready).await;
    assert_eq!(
        bed.model.key(DEFAULT_REGION, &key_id).unwrap().key_state,
        "Enabled"
    );
}

/// keyfleet finding (crates/kms-model/tests/kms_model.rs): the answers of the rotation's
/// ImportKeyMaterial(NEW_KEY_MATERIAL) and RotateKeyOnDemand are lost (a 500 after the call
/// took effect) and the SDK's retry is refused (IncorrectKeyMaterial, KMSInvalidState):
/// keyfleet finds its own pending material by its KeyMaterialDescription, and the rotation by
/// the key's CurrentKeyMaterialId, and ends rotated once and Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_whose_answers_are_lost_completes_once() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let api = op.keys(NS);
    let name = unique("lost");
    let spec = json!({"keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}});
    create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, spec)).await;
    let key_id = ready_key_id(&api, &name).await;
    model.inject(Fault::once("ImportKeyMaterial", FaultKind::LostAnswer));
    model.inject(Fault::once("RotateKeyOnDemand", FaultKind::LostAnswer));
    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    let new_id = kms_model::key_material_id(&key_id, &new);
    update_material_secret(&op.client, NS, &name, &new).await;
    let k = wait_for(&api, &name, "rotated once", |k| {
        key_ready(k)
            && k.status
                .as_ref()
                .is_some_and(|s| s.rotation_count == Some(1))
    })
    .await;
    let status = k.status.unwrap().key;
    assert_eq!(status.key_material_id.as_deref(), Some(new_id.as_str()));
    assert_eq!(status.pending_key_material_id, None);
    let outcomes = |op: &str| {
        model
            .requests_of(op)
            .into_iter()
            .map(|r| (r.fault, r.error))
            .collect::<Vec<_>>()
    };
    // Both lost answers happened, and the SDK's retries were refused.
    assert!(
        outcomes("ImportKeyMaterial")
            .contains(&(None, Some("IncorrectKeyMaterialException".into())))
    );
    assert_eq!(
        outcomes("RotateKeyOnDemand"),
        vec![
            (
                Some(FaultKind::LostAnswer),
                Some("KMSInternalException".into())
            ),
            (None, Some("KMSInvalidStateException".into())),
        ]
    );
    assert_eq!(
        model
            .key(DEFAULT_REGION, &key_id)
            .unwrap()
            .current_key_material_id,
        Some(new_id)
    );
}
