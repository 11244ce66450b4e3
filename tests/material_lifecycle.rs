//! The material lifecycle with the real controller wiring.
//!
//! Against LocalStack with a manual clock: rolling validity renewed on the primary and every
//! replica before its threshold, material verification (GenerateMac, GetPublicKey) catching a
//! replica that holds other material, a Secret change refused, and DeleteMaterial
//! crypto-shredding a key that re-applying restores.
//!
//! On the strict KMS model (crates/kms-model), what LocalStack cannot show: rotation of a
//! symmetric key to new material (ImportType NEW_KEY_MATERIAL + RotateKeyOnDemand, KeyMaterialId
//! bookkeeping), single- and multi-Region; and, with AccessDenied injected into the model,
//! verification without IAM permission (Unverified, not an error).

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyfleet::api::{
    AwsKey, AwsReplicaKey, AwsReplicaKeySpec, KeySpec, KmsKeyStatus, MaterialEncoding,
};
use keyfleet::material::KeyMaterial;
use kube::Api;
use kube::api::PostParams;
use memkube::MemKube;
use serde_json::json;
use support::clock::ManualClock;
use support::kms_use::{decrypt, encrypt, public_key};
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::outside::import_other_material;
use support::replicas::ReplicaScenario;

const NS: &str = "team-a";
const REPLICA_REGION: &str = "eu-central-1";
const DAY: SignedDuration = SignedDuration::from_hours(24);
const REGION: &str = "eu-west-1";

fn condition<'a>(status: &'a KmsKeyStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn has(status: Option<&KmsKeyStatus>, type_: &str, state: &str, reason: &str) -> bool {
    status
        .and_then(|s| condition(s, type_))
        .is_some_and(|c| c.status == state && c.reason == reason)
}

async fn start_with_clock(kube: &MemKube, clock: &ManualClock) -> Operator {
    Operator::start_with_clock(
        kube.clone(),
        localstack_clients().await,
        settings(),
        clock.clock(),
    )
}

async fn add_replica(scenario: &ReplicaScenario<'_>, name: &str) {
    let alias = json!({"alias": format!("alias/{name}")});
    scenario.add_replica(name, REPLICA_REGION, alias).await;
}

fn valid_to(status: &KmsKeyStatus) -> Option<Timestamp> {
    status.material_valid_to.as_ref().map(|t| t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_validity_is_renewed_before_its_threshold_on_the_primary_and_every_replica() {
    let kube = MemKube::new();
    // Whole seconds: KMS ValidTo has second precision.
    let t0 = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let clock = ManualClock::new(t0);
    let op = start_with_clock(&kube, &clock).await;
    let name = unique("rolling");
    let replica = format!("{name}-r");
    let spec = json!({"alias": format!("alias/{name}"), "expiration": {"rollingValidity": "90d"}});
    let scenario = ReplicaScenario::new(&op, NS, &name, KeySpec::SymmetricDefault, spec).await;
    let primary = scenario.ready_primary().await;
    add_replica(&scenario, &replica).await;
    let first = t0 + DAY * 90;
    let r = scenario
        .wait_replica_status(&replica, "Ready with 90 days of validity", |s| {
            has(Some(s), "Ready", "True", "KeyReady") && valid_to(s) == Some(first)
        })
        .await;
    assert_eq!(valid_to(&primary.status.clone().unwrap()), Some(first));
    // Metrics: the absolute expiry, and the renewal 30 days (the threshold) before it, for the
    // primary and the replica alike.
    let series = |family: &str, kind: &str, key: &str| {
        format!(r#"{family}{{kind="{kind}",namespace="{NS}",name="{key}"}}"#)
    };
    let renewal_at = (first - DAY * 30).as_second();
    let text = op.metrics.render();
    for (kind, key) in [
        ("AwsKey", name.as_str()),
        ("AwsReplicaKey", replica.as_str()),
    ] {
        let expiration = series("keyfleet_material_expiration_timestamp_seconds", kind, key);
        let renewal = series("keyfleet_material_renewal_timestamp_seconds", kind, key);
        assert!(
            text.contains(&format!("{expiration} {}", first.as_second())),
            "{expiration} missing:\n{text}"
        );
        assert!(
            text.contains(&format!("{renewal} {renewal_at}")),
            "{renewal} missing:\n{text}"
        );
    }
    let replica_import = r.status.unwrap().key.last_import_time;
    let primary_import = primary.status.unwrap().key.last_import_time;

    // 45 days later 45 remain: above the 30-day threshold, nothing is imported (resyncs run
    // every 2 s in tests).
    let since = op.reconciles("AwsKey");
    clock.advance(DAY * 45);
    op.wait_reconciles("AwsKey", since, 2).await;
    let k = op.keys(NS).get(&name).await.unwrap().status.unwrap();
    assert_eq!(valid_to(&k), Some(first));
    assert_eq!(k.key.last_import_time, primary_import);
    assert_eq!(op.event_count(&name, "MaterialImported"), 1);

    // 16 days more: 29 days remain, under the threshold: both re-import the same material with
    // a new ValidTo of now + 90 days.
    clock.advance(DAY * 16);
    let renewed = t0 + DAY * (45 + 16 + 90);
    let k = wait_for(&op.keys(NS), &name, "the primary renewed", |k| {
        k.status
            .as_ref()
            .is_some_and(|s| valid_to(s) == Some(renewed))
    })
    .await;
    assert_ne!(k.status.unwrap().key.last_import_time, primary_import);
    let r = scenario
        .wait_replica_status(&replica, "the replica renewed", |s| {
            valid_to(s) == Some(renewed) && has(Some(s), "Ready", "True", "KeyReady")
        })
        .await;
    assert_ne!(r.status.unwrap().key.last_import_time, replica_import);
    // Two MaterialImported events: the second import too.
    assert_eq!(op.event_count(&name, "MaterialImported"), 2);
    let renewal = series(
        "keyfleet_material_renewal_timestamp_seconds",
        "AwsKey",
        &name,
    );
    let text = op.metrics.render();
    assert!(
        text.contains(&format!("{renewal} {}", (renewed - DAY * 30).as_second())),
        "the renewal moved with the new expiry:\n{text}"
    );
    let kms = kms_client(DEFAULT_REGION).await;
    let key_id = ready_key_id(&op.keys(NS), &name).await;
    assert_eq!(key_state(&kms, &key_id).await, "Enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verification_catches_a_replica_holding_different_material() {
    let kube = MemKube::new();
    let clock = ManualClock::new(Timestamp::now());
    let op = start_with_clock(&kube, &clock).await;
    let name = unique("verify");
    let replica = format!("{name}-r");
    let spec = json!({"alias": format!("alias/{name}")});
    let scenario = ReplicaScenario::new(&op, NS, &name, KeySpec::Hmac256, spec).await;
    let primary = scenario.ready_primary().await;
    assert!(
        has(
            primary.status.as_ref().map(|s| &s.key),
            "MaterialVerified",
            "True",
            "MacMatches"
        ),
        "{:#?}",
        primary.status
    );
    add_replica(&scenario, &replica).await;
    let r = scenario
        .wait_replica_status(&replica, "Ready and verified", |s| {
            has(Some(s), "Ready", "True", "KeyReady")
                && has(Some(s), "MaterialVerified", "True", "MacMatches")
        })
        .await;
    let replica_id = r.status.unwrap().key.key_id.unwrap();

    // Inject: other HMAC material imported into the replica behind keyfleet's back (AWS
    // refuses this; LocalStack accepts it, which is what makes the injection possible).
    let replica_kms = kms_client(REPLICA_REGION).await;
    import_other_material(&replica_kms, &replica_id, KeySpec::Hmac256).await;

    // The next deep read of the replica finds out: Ready=False, MaterialVerified=False, and a
    // Warning event naming the method and the region.
    let r = scenario
        .wait_replica_status(&replica, "MaterialVerificationFailed", |s| {
            has(Some(s), "Ready", "False", "MaterialVerificationFailed")
                && has(
                    Some(s),
                    "MaterialVerified",
                    "False",
                    "MaterialVerificationFailed",
                )
        })
        .await;
    let status = r.status.unwrap();
    let message = &condition(&status.key, "MaterialVerified").unwrap().message;
    assert!(
        message.contains("GenerateMac") && message.contains(REPLICA_REGION),
        "{message}"
    );
    op.wait_events(&replica, &["MaterialVerificationFailed"])
        .await;
    assert!(
        op.events_for(&replica)
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "MaterialVerificationFailed")
    );
    // The primary, which holds the right material, stays Ready and verified.
    let p = op.keys(NS).get(&name).await.unwrap();
    assert_eq!(ready(&p), Some(("True".into(), "KeyReady".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_change_with_refuse_is_refused_and_kms_keeps_its_material() {
    let op = start_with_clock(&MemKube::new(), &ManualClock::new(Timestamp::now())).await;
    let name = unique("refuse");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    let before = wait_ready(&op.keys(NS), &name).await.status.unwrap();
    let kms = kms_client(DEFAULT_REGION).await;
    let key_id = before.key.key_id.clone().unwrap();
    let ciphertext = encrypt(&kms, &key_id, b"before").await;

    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    update_material_secret(&op.client, NS, &name, &new).await;
    let k = wait_reason(&op.keys(NS), &name, "MaterialMismatch").await;
    let status = k.status.unwrap();
    assert_eq!(
        status.key.material_fingerprint,
        before.key.material_fingerprint
    );
    assert_eq!(status.key.last_import_time, before.key.last_import_time);
    assert_eq!(op.event_count(&name, "MaterialImported"), 1);
    let plain = decrypt(&kms, None, ciphertext).await;
    assert_eq!(plain.as_deref(), Some(&b"before"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_material_shreds_the_key_and_reapplying_restores_it() {
    let op = start_with_clock(&MemKube::new(), &ManualClock::new(Timestamp::now())).await;
    let name = unique("shred");
    create_material_secret(&op.client, NS, &name, KeySpec::EccNistP256).await;
    let manifest = aws_key(
        &name,
        DEFAULT_REGION,
        &name,
        json!({"keySpec": "ECC_NIST_P256", "alias": format!("alias/{name}"),
            "deletionPolicy": "DeleteMaterial"}),
    );
    create_key(&op.keys(NS), &manifest).await;
    let k = wait_ready(&op.keys(NS), &name).await;
    let status = k.status.unwrap();
    assert!(
        has(
            Some(&status.key),
            "MaterialVerified",
            "True",
            "PublicKeyMatches"
        ),
        "{status:#?}"
    );
    let key_id = status.key.key_id.clone().unwrap();
    let kms = kms_client(DEFAULT_REGION).await;
    let first_public_key = public_key(&kms, &key_id).await;
    assert!(first_public_key.is_some());

    op.delete_key(NS, &name).await;
    assert_eq!(key_state(&kms, &key_id).await, "PendingImport");
    // PendingImport: AWS refuses every cryptographic operation (LocalStack does not enforce
    // the state for Sign, so the test checks the state KMS reports).
    let events = op.events_for(&name);
    assert!(
        events.iter().any(|(_, r, _)| r == "MaterialDeleted"),
        "{events:?}"
    );

    // Re-applying the same manifest finds the key by its alias and imports the material again.
    create_key(&op.keys(NS), &manifest).await;
    let k = wait_ready(&op.keys(NS), &name).await;
    let status = k.status.unwrap();
    assert_eq!(status.key.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(key_state(&kms, &key_id).await, "Enabled");
    let again = public_key(&kms, &key_id).await;
    assert_eq!(again, first_public_key);
    let k = wait_for(&op.keys(NS), &name, "verified", |k| {
        has(
            k.status.as_ref().map(|s| &s.key),
            "MaterialVerified",
            "True",
            "PublicKeyMatches",
        )
    })
    .await;
    assert_eq!(ready(&k), Some(("True".into(), "KeyReady".into())));
}

#[test]
fn manual_clock_moves_only_when_told() {
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let manual = ManualClock::new(start);
    let clock = manual.clock();
    assert_eq!(clock.now(), start);
    manual.advance(SignedDuration::from_hours(24));
    assert_eq!(clock.now(), "2026-01-02T00:00:00Z".parse().unwrap());
}

// What LocalStack cannot show, on the strict KMS model.

fn fingerprint(spec: KeySpec, value: &[u8]) -> String {
    KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, value)
        .unwrap()
        .fingerprint()
        .as_str()
        .to_string()
}

fn key_condition(k: &AwsKey, type_: &str) -> Option<(String, String)> {
    condition_of(&k.status.as_ref()?.conditions, type_)
}

/// A key's status after a completed rotation from `old_id` to `new_id` (the Secret's `new`
/// material): both KeyMaterialIds recorded, the fingerprint of the new material, nothing pending.
fn assert_rotated(status: &KmsKeyStatus, old_id: &str, new_id: &str, spec: KeySpec, new: &[u8]) {
    assert_eq!(status.key_material_id.as_deref(), Some(new_id));
    assert_eq!(status.previous_key_material_id.as_deref(), Some(old_id));
    assert_eq!(status.material_fingerprint, Some(fingerprint(spec, new)));
    assert_eq!(status.pending_key_material_id, None);
    assert_eq!(status.pending_material_fingerprint, None);
}

/// The KMS writes of a rotation: imports and RotateKeyOnDemand.
fn is_import_or_rotation(r: &kms_model::RecordedRequest) -> bool {
    matches!(
        r.operation.as_str(),
        "ImportKeyMaterial" | "RotateKeyOnDemand"
    )
}

/// Rotated once to the new material and Ready again.
fn rotated_once_and_ready(k: &AwsKey) -> bool {
    k.status
        .as_ref()
        .is_some_and(|s| s.rotation_count == Some(1))
        && ready(k) == Some(("True".into(), "KeyReady".into()))
}

/// On the strict KMS model (crates/kms-model): RotateKeyOnDemand succeeds only with material
/// pending rotation, and KeyMaterialIds derive from the material.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_imports_new_material_and_rotates_a_symmetric_key_on_demand() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let api = op.keys(NS);
    let name = unique("rotate");
    let old = create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    let rotate_on_change = json!({"keySpec": "SYMMETRIC_DEFAULT",
        "keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}});
    create_key(&api, &aws_key(&name, REGION, &name, rotate_on_change)).await;
    let verified = |k: &AwsKey| {
        key_condition(k, "MaterialVerified") == Some(("True".into(), "KeyMaterialIdMatches".into()))
    };
    let k = wait_for(&api, &name, "verified", verified).await;
    assert_eq!(ready(&k), Some(("True".into(), "KeyReady".into())));
    let key_id = k.status.unwrap().key.key_id.unwrap();
    let old_id = kms_model::key_material_id(&key_id, &old);
    assert_eq!(
        model.key(REGION, &key_id).unwrap().current_key_material_id,
        Some(old_id.clone())
    );

    // The Secret gets new material: keyfleet imports it as NEW_KEY_MATERIAL and rotates.
    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    let new_id = kms_model::key_material_id(&key_id, &new);
    update_material_secret(&op.client, NS, &name, &new).await;
    let k = wait_for(&api, &name, "one rotation", rotated_once_and_ready).await;
    let status = k.status.unwrap().key;
    assert_rotated(&status, &old_id, &new_id, KeySpec::SymmetricDefault, &new);
    assert!(status.last_rotation_time.is_some());
    // KMS: the first import (no ImportType), then the new material as NEW_KEY_MATERIAL; the
    // new material is current, the old one NON_CURRENT (old ciphertexts still decrypt).
    let imports = model.requests_of("ImportKeyMaterial");
    let types: Vec<_> = imports
        .iter()
        .map(|r| (r.params.get("ImportType").cloned(), r.error.clone()))
        .collect();
    assert_eq!(
        types,
        vec![(None, None), (Some(json!("NEW_KEY_MATERIAL")), None)],
        "exactly one import of the new material"
    );
    assert_rotated_in_kms(&model, REGION, &key_id, &old_id, &new_id);
    let rotations = model.requests_of("RotateKeyOnDemand");
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0].error, None);
    // keyfleet never deletes the old material.
    assert!(model.requests_of("DeleteImportedKeyMaterial").is_empty());
    op.wait_events(&name, &["RotationMaterialImported", "KeyRotated"])
        .await;
    // Later resyncs (deep reads) verify the new KeyMaterialId and never rotate again.
    let seen = op.wait_own_reconciles("AwsKey", NS, &name, 0, 0).await;
    op.wait_own_reconciles("AwsKey", NS, &name, seen, 2).await;
    wait_for(&api, &name, "verified again", verified).await;
    assert_eq!(
        model.requests_of("RotateKeyOnDemand").len(),
        1,
        "rotated once, not on every resync"
    );
}

/// AccessDeniedException injected into every GenerateMac of the strict KMS model: the HMAC key
/// is imported and Ready, its material Unverified (not an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verification_without_permission_is_unverified_and_the_key_stays_ready() {
    let denied = kms_model::Fault::always("GenerateMac", kms_model::FaultKind::AccessDenied);
    let ModelHarness { model, op, .. } = ModelHarness::start([denied]).await;
    let name = unique("unverified");
    create_key_with_material(&op, NS, &name, KeySpec::Hmac256, json!({})).await;
    let k = wait_for(&op.keys(NS), &name, "Unverified", |k| {
        k.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "MaterialVerified" && c.status == "Unknown" && c.reason == "Unverified"
            })
        })
    })
    .await;
    assert_eq!(ready(&k), Some(("True".into(), "KeyReady".into())));
    let status = k.status.unwrap();
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "MaterialVerified")
        .unwrap()
        .message;
    assert!(
        message.contains("GenerateMac") && message.contains("access denied"),
        "{message}"
    );
    // What the refused request carried: the probe for this key with the key's MAC algorithm.
    let macs = model.requests_of("GenerateMac");
    assert!(!macs.is_empty());
    for call in &macs {
        assert_eq!(call.fault, Some(kms_model::FaultKind::AccessDenied));
        assert_eq!(call.params["KeyId"], status.key.key_id.as_deref().unwrap());
        assert_eq!(call.params["MacAlgorithm"], "HMAC_SHA_256");
    }
    let key_id = status.key.key_id.unwrap();
    assert_eq!(
        model.key(DEFAULT_REGION, &key_id).unwrap().key_state,
        "Enabled"
    );
}

fn replica_condition(r: &AwsReplicaKey, type_: &str) -> Option<(String, String)> {
    condition_of(&r.status.as_ref()?.conditions, type_)
}

/// The whole multi-Region rotation on the strict KMS model (crates/kms-model): the primary
/// imports the Secret's new material as NEW_KEY_MATERIAL, waits (RotationPending) until the
/// replica imported it as EXISTING_KEY_MATERIAL with the primary's KeyMaterialId, then rotates
/// exactly once (KMS refuses it earlier); both record the new and previous KeyMaterialId and end
/// Ready. Nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_region_rotation_waits_for_the_replica_then_rotates_once() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let client = op.client.clone();
    let name = unique("mrk-rotate");
    let replica_name = format!("{name}-eu");
    let spec = KeySpec::SymmetricDefault;
    let old = create_material_secret(&client, NS, &name, spec).await;
    let keys: Api<AwsKey> = Api::namespaced(client.clone(), NS);
    create_key(
        &keys,
        &aws_key(
            &name,
            DEFAULT_REGION,
            &name,
            json!({"multiRegion": true,
                   "keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}}),
        ),
    )
    .await;
    let replicas: Api<AwsReplicaKey> = Api::namespaced(client.clone(), NS);
    replicas
        .create(
            &PostParams::default(),
            &AwsReplicaKey::new(
                &replica_name,
                serde_json::from_value::<AwsReplicaKeySpec>(
                    json!({"primaryKeyRef": {"name": name}, "region": REPLICA_REGION}),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let api = op.keys(NS);
    let verified =
        |c: Option<(String, String)>| c == Some(("True".into(), "KeyMaterialIdMatches".into()));
    let key_ready = Some(("True".to_string(), "KeyReady".to_string()));
    // Both keys Ready, their KeyMaterialId verified.
    let both_verified = async |primary_what: &str, replica_what: &str| {
        let primary = wait_for(&api, &name, primary_what, |k| {
            ready(k) == key_ready && verified(key_condition(k, "MaterialVerified"))
        })
        .await;
        let replica_verified = |r: &AwsReplicaKey| {
            replica_condition(r, "Ready") == key_ready
                && verified(replica_condition(r, "MaterialVerified"))
        };
        let timeout = Duration::from_secs(30);
        wait_for_within(
            &replicas,
            &replica_name,
            timeout,
            replica_what,
            replica_verified,
        )
        .await;
        primary
    };
    let primary = both_verified("primary Ready and verified", "replica Ready and verified").await;
    let key_id = primary.status.unwrap().key.key_id.unwrap();
    let old_id = kms_model::key_material_id(&key_id, &old);
    let before = model.requests();
    let imports_before = before
        .iter()
        .filter(|r| r.operation == "ImportKeyMaterial")
        .count();
    assert_eq!(
        imports_before,
        2,
        "the first import into the primary and the replica; imports: {:?}",
        before
            .iter()
            .filter(|r| r.operation == "ImportKeyMaterial")
            .map(|r| (
                r.seq,
                &r.region,
                &r.params["KeyId"],
                &r.params["ImportType"],
                &r.error
            ))
            .collect::<Vec<_>>()
    );
    assert!(model.requests_of("RotateKeyOnDemand").is_empty());

    // The Secret gets new material.
    let new = keyfleet_testkit::material::generate_secret_value(spec);
    let new_id = kms_model::key_material_id(&key_id, &new);
    update_material_secret(&op.client, NS, &name, &new).await;
    let primary = wait_for_within(
        &api,
        &name,
        Duration::from_secs(40),
        "one rotation, Ready",
        rotated_once_and_ready,
    )
    .await;
    let replica = wait_for(
        &replicas,
        &replica_name,
        "replica on the new material",
        |r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.key_material_id.as_deref() == Some(new_id.as_str()))
                && replica_condition(r, "Ready") == key_ready
        },
    )
    .await;

    // Statuses: new and previous KeyMaterialId on both, one rotation on the primary.
    let p = primary.status.unwrap().key;
    assert_rotated(&p, &old_id, &new_id, spec, &new);
    assert!(p.last_rotation_time.is_some());
    let r = replica.status.unwrap().key;
    assert_rotated(&r, &old_id, &new_id, spec, &new);
    assert_eq!(
        r.rotation_count, None,
        "replicas are rotated by the primary"
    );

    // KMS: the primary's NEW import, then the replica's EXISTING import with its id, then one
    // RotateKeyOnDemand; both Regions hold both materials, the new one current.
    let log = model.requests();
    let after: Vec<_> = log
        .iter()
        .filter(|r| is_import_or_rotation(r))
        .skip(imports_before)
        .map(|r| {
            (
                r.operation.as_str(),
                r.region.as_str(),
                r.params.get("ImportType").and_then(|t| t.as_str()),
                r.params.get("KeyMaterialId").and_then(|t| t.as_str()),
                r.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        after,
        vec![
            (
                "ImportKeyMaterial",
                DEFAULT_REGION,
                Some("NEW_KEY_MATERIAL"),
                None,
                None
            ),
            (
                "ImportKeyMaterial",
                REPLICA_REGION,
                Some("EXISTING_KEY_MATERIAL"),
                Some(new_id.as_str()),
                None
            ),
            ("RotateKeyOnDemand", DEFAULT_REGION, None, None, None),
        ]
    );
    for region in [DEFAULT_REGION, REPLICA_REGION] {
        assert_rotated_in_kms(&model, region, &key_id, &old_id, &new_id);
    }
    // Old material stays: no DeleteImportedKeyMaterial anywhere.
    assert!(model.requests_of("DeleteImportedKeyMaterial").is_empty());
    op.wait_events(
        &name,
        &["RotationMaterialImported", "RotationPending", "KeyRotated"],
    )
    .await;
    op.wait_events(&replica_name, &["RotationMaterialImported"])
        .await;

    // Later resyncs verify the new material on both and never rotate or import again.
    let seen = op.wait_own_reconciles("AwsKey", NS, &name, 0, 0).await;
    op.wait_own_reconciles("AwsKey", NS, &name, seen, 2).await;
    let seen = op
        .wait_own_reconciles("AwsReplicaKey", NS, &replica_name, 0, 0)
        .await;
    op.wait_own_reconciles("AwsReplicaKey", NS, &replica_name, seen, 2)
        .await;
    both_verified(
        "primary verified on the new material",
        "replica verified on the new material",
    )
    .await;
    let writes = |log: &[kms_model::RecordedRequest]| {
        log.iter().filter(|r| is_import_or_rotation(r)).count()
    };
    assert_eq!(writes(&model.requests()), writes(&log));
    // A legitimate rotation never tells the user to restore the old material.
    for key in [&name, &replica_name] {
        assert_eq!(op.event_count(key, "MaterialMismatch"), 0, "{key}");
    }
}
