//! Material lifecycle against LocalStack with the real controller wiring and a manual clock:
//! rolling validity renewed on the primary and every replica before its threshold, material
//! verification (GenerateMac, GetPublicKey) catching a replica that holds other material, a
//! Secret change refused, and DeleteMaterial crypto-shredding a key that re-applying restores.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyfleet::api::{AwsReplicaKey, KeySpec, KmsKeyStatus};
use keyfleet::api::{MaterialEncoding, WrappingAlgorithm};
use keyfleet::kms::execute::{ImportInput, import_material};
use keyfleet::material::KeyMaterial;
use kube::api::DeleteParams;
use memkube::MemKube;
use serde_json::json;
use support::clock::ManualClock;
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::replicas::{self, replica};

const NS: &str = "team-a";
const REPLICA_REGION: &str = "eu-central-1";
const DAY: SignedDuration = SignedDuration::from_hours(24);

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

async fn create_replica(client: &kube::Client, name: &str, primary: &str) {
    let alias = json!({"alias": format!("alias/{name}")});
    replicas::create_replica(client, NS, &replica(name, primary, REPLICA_REGION, alias)).await;
}

async fn wait_replica(
    client: &kube::Client,
    name: &str,
    what: &str,
    check: impl Fn(&KmsKeyStatus) -> bool,
) -> AwsReplicaKey {
    replicas::wait_replica(client, NS, name, what, |r| {
        r.status.as_ref().is_some_and(|s| check(&s.key))
    })
    .await
}

fn valid_to(status: &KmsKeyStatus) -> Option<Timestamp> {
    status.material_valid_to.as_ref().map(|t| t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_validity_is_renewed_before_its_threshold_on_the_primary_and_every_replica() {
    let kube = MemKube::new();
    let client = kube.client();
    // Whole seconds: KMS ValidTo has second precision.
    let t0 = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let clock = ManualClock::new(t0);
    let op = start_with_clock(&kube, &clock).await;
    let name = unique("rolling");
    let replica = format!("{name}-r");
    create_material_secret(&client, NS, &name, KeySpec::SymmetricDefault).await;
    let spec = json!({"multiRegion": true, "alias": format!("alias/{name}"),
        "expiration": {"rollingValidity": "90d"}});
    create_key(&op.keys(NS), &aws_key(&name, DEFAULT_REGION, &name, spec)).await;
    let primary = wait_ready(&op.keys(NS), &name).await;
    create_replica(&client, &replica, &name).await;
    let first = t0 + DAY * 90;
    let r = wait_replica(&client, &replica, "Ready with 90 days of validity", |s| {
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
    clock.advance(DAY * 45);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let k = op.keys(NS).get(&name).await.unwrap().status.unwrap();
    assert_eq!(valid_to(&k), Some(first));
    assert_eq!(k.key.last_import_time, primary_import);
    assert_eq!(op.event_count(&name, "MaterialImported"), 1);

    // 16 days more: 29 days remain, under the threshold: both re-import the same material with
    // a new ValidTo of now + 90 days.
    clock.advance(DAY * 16);
    let renewed = t0 + DAY * (45 + 16 + 90);
    let k = wait_for(
        &op.keys(NS),
        &name,
        Duration::from_secs(30),
        "the primary renewed",
        |k| {
            k.status
                .as_ref()
                .is_some_and(|s| valid_to(s) == Some(renewed))
        },
    )
    .await;
    assert_ne!(k.status.unwrap().key.last_import_time, primary_import);
    let r = wait_replica(&client, &replica, "the replica renewed", |s| {
        valid_to(s) == Some(renewed) && has(Some(s), "Ready", "True", "KeyReady")
    })
    .await;
    assert_ne!(r.status.unwrap().key.last_import_time, replica_import);
    // The recorder folds repeated events into one series: the count tells the second import.
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
    let client = kube.client();
    let clock = ManualClock::new(Timestamp::now());
    let op = start_with_clock(&kube, &clock).await;
    let name = unique("verify");
    let replica = format!("{name}-r");
    create_material_secret(&client, NS, &name, KeySpec::Hmac256).await;
    let spec =
        json!({"keySpec": "HMAC_256", "multiRegion": true, "alias": format!("alias/{name}")});
    create_key(&op.keys(NS), &aws_key(&name, DEFAULT_REGION, &name, spec)).await;
    let primary = wait_ready(&op.keys(NS), &name).await;
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
    create_replica(&client, &replica, &name).await;
    let r = wait_replica(&client, &replica, "Ready and verified", |s| {
        has(Some(s), "Ready", "True", "KeyReady")
            && has(Some(s), "MaterialVerified", "True", "MacMatches")
    })
    .await;
    let replica_id = r.status.unwrap().key.key_id.unwrap();

    // Inject: other HMAC material imported into the replica behind keyfleet's back (AWS
    // refuses this; LocalStack accepts it, which is what makes the injection possible).
    let other = keyfleet_testkit::material::generate_secret_value(KeySpec::Hmac256);
    let other =
        KeyMaterial::from_secret_value(KeySpec::Hmac256, MaterialEncoding::Raw, &other).unwrap();
    let (algorithm, wrapping_key_spec) = WrappingAlgorithm::default_for(KeySpec::Hmac256);
    let replica_kms = kms_client(REPLICA_REGION).await;
    import_material(
        &replica_kms,
        &replica_id,
        &ImportInput {
            material: &other,
            algorithm,
            wrapping_key_spec,
        },
        None,
    )
    .await
    .unwrap();

    // The next deep read of the replica finds out: Ready=False, MaterialVerified=False, and a
    // Warning event naming the method and the region.
    let r = wait_replica(&client, &replica, "MaterialVerificationFailed", |s| {
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
    let kube = MemKube::new();
    let client = kube.client();
    let op = start_with_clock(&kube, &ManualClock::new(Timestamp::now())).await;
    let name = unique("refuse");
    create_material_secret(&client, NS, &name, KeySpec::SymmetricDefault).await;
    create_key(
        &op.keys(NS),
        &aws_key(&name, DEFAULT_REGION, &name, json!({})),
    )
    .await;
    let before = wait_ready(&op.keys(NS), &name).await.status.unwrap();
    let kms = kms_client(DEFAULT_REGION).await;
    let key_id = before.key.key_id.clone().unwrap();
    let ciphertext = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"before".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    update_secret(&client, NS, &name, "material", &new).await;
    let k = wait_reason(&op.keys(NS), &name, "MaterialMismatch").await;
    let status = k.status.unwrap();
    assert_eq!(
        status.key.material_fingerprint,
        before.key.material_fingerprint
    );
    assert_eq!(status.key.last_import_time, before.key.last_import_time);
    assert_eq!(op.event_count(&name, "MaterialImported"), 1);
    let plain = kms
        .decrypt()
        .ciphertext_blob(ciphertext)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_material_shreds_the_key_and_reapplying_restores_it() {
    let kube = MemKube::new();
    let client = kube.client();
    let op = start_with_clock(&kube, &ManualClock::new(Timestamp::now())).await;
    let name = unique("shred");
    create_material_secret(&client, NS, &name, KeySpec::EccNistP256).await;
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
    let public_key = kms
        .get_public_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap()
        .public_key;

    op.keys(NS)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&op.keys(NS), &name).await;
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
    let again = kms
        .get_public_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap()
        .public_key;
    assert_eq!(again, public_key);
    let k = wait_for(
        &op.keys(NS),
        &name,
        Duration::from_secs(30),
        "verified",
        |k| {
            has(
                k.status.as_ref().map(|s| &s.key),
                "MaterialVerified",
                "True",
                "PublicKeyMatches",
            )
        },
    )
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
