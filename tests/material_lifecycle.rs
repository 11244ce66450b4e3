//! The material lifecycle with the real controller wiring.
//!
//! Against LocalStack with a manual clock: rolling validity renewed on the primary and every
//! replica before its threshold, material verification (GenerateMac, GetPublicKey) catching a
//! replica that holds other material, a Secret change refused, and DeleteMaterial
//! crypto-shredding a key that re-applying restores.
//!
//! With aws-smithy-mocks on the SDK, what LocalStack cannot show: rotation of a symmetric key to
//! new material (ImportType NEW_KEY_MATERIAL + RotateKeyOnDemand, KeyMaterialId bookkeeping) and
//! verification without IAM permission (Unverified, not an error).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::delete_imported_key_material::DeleteImportedKeyMaterialOutput;
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput;
use aws_sdk_kms::operation::rotate_key_on_demand::RotateKeyOnDemandOutput;
use aws_sdk_kms::types::{
    ImportType, KeyMetadata, KeySpec as SdkKeySpec, KeyState, KeyUsageType, OriginType,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyfleet::api::{
    AwsKey, AwsKeyStatus, AwsReplicaKey, AwsReplicaKeySpec, AwsReplicaKeyStatus, KeySpec,
    KmsKeyStatus, MaterialEncoding, WrappingAlgorithm,
};
use keyfleet::kms::KmsClients;
use keyfleet::kms::execute::{ImportInput, import_material};
use keyfleet::material::KeyMaterial;
use kube::Api;
use kube::api::DeleteParams;
use kube::api::{Patch, PatchParams, PostParams};
use memkube::MemKube;
use serde_json::json;
use support::clock::ManualClock;
use support::kms_mocks::{
    self, MRK_PRIMARY_ID, MRK_PRIMARY_REGION, MRK_REPLICA_ID, MRK_REPLICA_REGION, MrkCall,
    MultiRegionKms, aws_error, import_params_rule, mrk_arn, no_aliases_rule, tags_rule,
};
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
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
    let r = scenario
        .wait_replica_status(&replica, "the replica renewed", |s| {
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
    let kube = MemKube::new();
    let client = kube.client();
    let op = start_with_clock(&kube, &ManualClock::new(Timestamp::now())).await;
    let name = unique("refuse");
    create_key_with_material(&op, NS, &name, KeySpec::SymmetricDefault, json!({})).await;
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
    update_material_secret(&client, NS, &name, &new).await;
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

// What LocalStack cannot show, with aws-smithy-mocks on the SDK.

fn metadata(
    key_id: &str,
    spec: SdkKeySpec,
    usage: KeyUsageType,
) -> aws_sdk_kms::types::builders::KeyMetadataBuilder {
    KeyMetadata::builder()
        .key_id(key_id)
        .arn(format!("arn:aws:kms:{REGION}:111122223333:key/{key_id}"))
        .aws_account_id("111122223333")
        .key_state(KeyState::Enabled)
        .origin(OriginType::External)
        .key_spec(spec)
        .key_usage(usage)
        .multi_region(false)
        .description("")
}

/// An ImportKeyMaterial request as KMS saw it: import type and the unwrapped material.
type Import = (Option<ImportType>, Vec<u8>);

fn fingerprint(spec: KeySpec, value: &[u8]) -> String {
    KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, value)
        .unwrap()
        .fingerprint()
        .as_str()
        .to_string()
}

/// Creates Secret and AwsKey and records in its status that `key_id` holds the Secret's
/// material (as an earlier reconcile would have).
async fn existing_key(
    kube: &MemKube,
    name: &str,
    key_id: &str,
    spec: KeySpec,
    extra: serde_json::Value,
    key_material_id: Option<&str>,
) -> (AwsKey, zeroize::Zeroizing<Vec<u8>>) {
    let client = kube.client();
    let value = create_material_secret(&client, NS, name, spec).await;
    let api: Api<AwsKey> = Api::namespaced(client, NS);
    let key = create_key(&api, &aws_key(name, REGION, name, extra)).await;
    let status = AwsKeyStatus {
        key: KmsKeyStatus {
            key_id: Some(key_id.into()),
            material_fingerprint: Some(fingerprint(spec, &value)),
            key_material_id: key_material_id.map(str::to_string),
            ..Default::default()
        },
        ..Default::default()
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
    (key, value)
}

fn owner_tags(key: &AwsKey) -> Vec<aws_sdk_kms::types::Tag> {
    kms_mocks::owner_tags(
        key.metadata.uid.as_deref().unwrap(),
        NS,
        key.metadata.name.as_deref().unwrap(),
    )
}

fn key_condition(k: &AwsKey, type_: &str) -> Option<(String, String)> {
    condition_of(&k.status.as_ref()?.conditions, type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_imports_new_material_and_rotates_a_symmetric_key_on_demand() {
    let kube = MemKube::new();
    let name = unique("rotate");
    let (key, _old) = existing_key(
        &kube,
        &name,
        "k-rot",
        KeySpec::SymmetricDefault,
        json!({"keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}}),
        Some("km-1"),
    )
    .await;

    // KMS: the current material is km-1 until RotateKeyOnDemand makes the new one (km-2)
    // current.
    let rotated = Arc::new(AtomicBool::new(false));
    let seen = rotated.clone();
    let describe = mock!(Client::describe_key)
        .sequence()
        .output(move || {
            let current = if seen.load(Ordering::SeqCst) {
                "km-2"
            } else {
                "km-1"
            };
            let meta = metadata(
                "k-rot",
                SdkKeySpec::SymmetricDefault,
                KeyUsageType::EncryptDecrypt,
            )
            .current_key_material_id(current)
            .build()
            .unwrap();
            DescribeKeyOutput::builder().key_metadata(meta).build()
        })
        .repeatedly()
        .build();
    let (params, wrapping) = import_params_rule("k-rot");
    let wrapping = Arc::new(wrapping);
    let imports: Arc<Mutex<Vec<Import>>> = Arc::default();
    let record = imports.clone();
    let import = mock!(Client::import_key_material)
        .match_requests(move |r| {
            let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new((*wrapping).clone()).unwrap();
            let mut out = vec![0u8; 512];
            let plain = r
                .encrypted_key_material()
                .and_then(|b| {
                    oaep.decrypt(
                        &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                        b.as_ref(),
                        &mut out,
                        None,
                    )
                    .ok()
                })
                .map(|p| p.to_vec())
                .unwrap_or_default();
            record
                .lock()
                .unwrap()
                .push((r.import_type().cloned(), plain));
            true
        })
        .sequence()
        .output(|| {
            ImportKeyMaterialOutput::builder()
                .key_id("k-rot")
                .key_material_id("km-2")
                .build()
        })
        .repeatedly()
        .build();
    let mark = rotated.clone();
    let rotate = mock!(Client::rotate_key_on_demand)
        .match_requests(|r| r.key_id() == Some("k-rot"))
        .sequence()
        .output(move || {
            mark.store(true, Ordering::SeqCst);
            RotateKeyOnDemandOutput::builder().key_id("k-rot").build()
        })
        .repeatedly()
        .build();
    let shred = mock!(Client::delete_imported_key_material)
        .sequence()
        .output(|| DeleteImportedKeyMaterialOutput::builder().build())
        .repeatedly()
        .build();
    let tags = tags_rule(Some("k-rot"), owner_tags(&key));
    let aliases = no_aliases_rule();
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [
            &describe, &params, &import, &rotate, &shred, &tags, &aliases
        ]
    );
    let op = Operator::start_with(kube.clone(), KmsClients::fixed(client), settings());
    let api = op.keys(NS);
    let k = wait_for(
        &api,
        &name,
        std::time::Duration::from_secs(30),
        "verified",
        |k| {
            key_condition(k, "MaterialVerified")
                == Some(("True".into(), "KeyMaterialIdMatches".into()))
        },
    )
    .await;
    assert_eq!(ready(&k), Some(("True".into(), "KeyReady".into())));
    assert!(imports.lock().unwrap().is_empty(), "nothing to import yet");

    // The Secret gets new material: keyfleet imports it as NEW_KEY_MATERIAL and rotates.
    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    update_material_secret(&kube.client(), NS, &name, &new).await;
    let k = wait_for(
        &api,
        &name,
        std::time::Duration::from_secs(30),
        "one rotation",
        |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.rotation_count == Some(1))
                && ready(k) == Some(("True".into(), "KeyReady".into()))
        },
    )
    .await;
    let status = k.status.unwrap().key;
    assert_eq!(status.key_material_id.as_deref(), Some("km-2"));
    assert_eq!(status.previous_key_material_id.as_deref(), Some("km-1"));
    assert_eq!(
        status.material_fingerprint,
        Some(fingerprint(KeySpec::SymmetricDefault, &new))
    );
    assert_eq!(status.pending_material_fingerprint, None);
    assert!(status.last_rotation_time.is_some());
    {
        let imports = imports.lock().unwrap();
        assert_eq!(imports.len(), 1, "exactly one import");
        assert_eq!(imports[0].0, Some(ImportType::NewKeyMaterial));
        // The wrapped bytes are the Secret's new material (unwrapped with the wrapping key).
        assert_eq!(imports[0].1.as_slice(), new.as_slice());
    }
    assert_eq!(rotate.num_calls(), 1);
    // The old material stays in KMS (NON_CURRENT): old ciphertexts still decrypt. keyfleet
    // never deletes it.
    assert_eq!(shred.num_calls(), 0);
    op.wait_events(&name, &["RotationMaterialImported", "KeyRotated"])
        .await;
    // Later resyncs (deep reads) verify the new KeyMaterialId and never rotate again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    wait_for(
        &api,
        &name,
        std::time::Duration::from_secs(30),
        "verified again",
        |k| {
            key_condition(k, "MaterialVerified")
                == Some(("True".into(), "KeyMaterialIdMatches".into()))
        },
    )
    .await;
    assert_eq!(rotate.num_calls(), 1, "rotated once, not on every resync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_without_permission_is_unverified_and_the_key_stays_ready() {
    let kube = MemKube::new();
    let name = unique("unverified");
    let (key, _) = existing_key(
        &kube,
        &name,
        "k-mac",
        KeySpec::Hmac256,
        json!({"keySpec": "HMAC_256"}),
        None,
    )
    .await;
    let describe = mock!(Client::describe_key)
        .sequence()
        .output(|| {
            let meta = metadata(
                "k-mac",
                SdkKeySpec::Hmac256,
                KeyUsageType::GenerateVerifyMac,
            )
            .build()
            .unwrap();
            DescribeKeyOutput::builder().key_metadata(meta).build()
        })
        .repeatedly()
        .build();
    let mac = mock!(Client::generate_mac)
        .sequence()
        .http_response(|| aws_error("AccessDeniedException"))
        .repeatedly()
        .build();
    let tags = tags_rule(Some("k-mac"), owner_tags(&key));
    let aliases = no_aliases_rule();
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [&describe, &mac, &tags, &aliases]
    );
    let op = Operator::start_with(kube.clone(), KmsClients::fixed(client), settings());
    let k = wait_for(
        &op.keys(NS),
        &name,
        std::time::Duration::from_secs(30),
        "Unverified",
        |k| {
            k.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "MaterialVerified"
                        && c.status == "Unknown"
                        && c.reason == "Unverified"
                })
            })
        },
    )
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
    assert!(mac.num_calls() >= 1);
}

/// Polls until `check` holds for the named AwsReplicaKey, or panics after 30s with its status.
async fn wait_replica_api(
    api: &Api<AwsReplicaKey>,
    name: &str,
    what: &str,
    check: impl Fn(&AwsReplicaKey) -> bool,
) -> AwsReplicaKey {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = api.get(name).await.unwrap();
        if check(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: timed out waiting for {what}; status: {:#?}",
            r.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn replica_condition(r: &AwsReplicaKey, type_: &str) -> Option<(String, String)> {
    condition_of(&r.status.as_ref()?.conditions, type_)
}

/// The whole multi-Region rotation against a stateful KMS model: the primary imports the
/// Secret's new material as NEW_KEY_MATERIAL, waits (RotationPending) until the replica imported
/// it as EXISTING_KEY_MATERIAL with the primary's KeyMaterialId, then rotates exactly once;
/// both record the new and previous KeyMaterialId and end Ready. Nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_region_rotation_waits_for_the_replica_then_rotates_once() {
    let kube = MemKube::new();
    let client = kube.client();
    let name = unique("mrk-rotate");
    let replica_name = format!("{name}-eu");
    let spec = KeySpec::SymmetricDefault;
    let old = keyfleet_testkit::material::generate_secret_value(spec);
    create_secret(&client, NS, &name, "material", &old).await;
    let keys: Api<AwsKey> = Api::namespaced(client.clone(), NS);
    let key = create_key(
        &keys,
        &aws_key(
            &name,
            MRK_PRIMARY_REGION,
            &name,
            json!({"multiRegion": true,
                   "keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}}),
        ),
    )
    .await;
    let replicas: Api<AwsReplicaKey> = Api::namespaced(client.clone(), NS);
    let replica = replicas
        .create(
            &PostParams::default(),
            &AwsReplicaKey::new(
                &replica_name,
                serde_json::from_value::<AwsReplicaKeySpec>(
                    json!({"primaryKeyRef": {"name": name}, "region": MRK_REPLICA_REGION}),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    // As earlier reconciles left them: both hold the Secret's material as km-1.
    let recorded = |key_id: &str, region: &str| KmsKeyStatus {
        key_id: Some(key_id.into()),
        arn: Some(mrk_arn(region, key_id)),
        key_state: Some("Enabled".into()),
        material_fingerprint: Some(fingerprint(spec, &old)),
        key_material_id: Some("km-1".into()),
        ..Default::default()
    };
    let primary_status = AwsKeyStatus {
        key: recorded(MRK_PRIMARY_ID, MRK_PRIMARY_REGION),
        ..Default::default()
    };
    keys.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": primary_status})),
    )
    .await
    .unwrap();
    let replica_status = AwsReplicaKeyStatus {
        key: recorded(MRK_REPLICA_ID, MRK_REPLICA_REGION),
        primary_arn: Some(mrk_arn(MRK_PRIMARY_REGION, MRK_PRIMARY_ID)),
    };
    replicas
        .patch_status(
            &replica_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": replica_status})),
        )
        .await
        .unwrap();

    let kms = MultiRegionKms::new(&old);
    let mut rules = kms.rules();
    rules.push(tags_rule(Some(MRK_PRIMARY_ID), owner_tags(&key)));
    rules.push(tags_rule(
        Some(MRK_REPLICA_ID),
        kms_mocks::owner_tags(replica.metadata.uid.as_deref().unwrap(), NS, &replica_name),
    ));
    rules.push(no_aliases_rule());
    let sdk = mock_client!(aws_sdk_kms, RuleMode::MatchAny, rules.iter());
    let op = Operator::start_with(kube.clone(), KmsClients::fixed(sdk), settings());
    let api = op.keys(NS);
    let verified =
        |c: Option<(String, String)>| c == Some(("True".into(), "KeyMaterialIdMatches".into()));
    let key_ready = Some(("True".to_string(), "KeyReady".to_string()));
    wait_for(
        &api,
        &name,
        std::time::Duration::from_secs(30),
        "primary Ready and verified",
        |k| ready(k) == key_ready && verified(key_condition(k, "MaterialVerified")),
    )
    .await;
    wait_replica_api(
        &replicas,
        &replica_name,
        "replica Ready and verified",
        |r| {
            replica_condition(r, "Ready") == key_ready
                && verified(replica_condition(r, "MaterialVerified"))
        },
    )
    .await;
    assert!(
        kms.log()
            .iter()
            .all(|c| !matches!(c, MrkCall::Import { .. } | MrkCall::Rotate { .. })),
        "nothing to import or rotate before the Secret changes: {:?}",
        kms.log()
    );

    // The Secret gets new material.
    let new = keyfleet_testkit::material::generate_secret_value(spec);
    update_material_secret(&client, NS, &name, &new).await;

    // (4) While the replica catches up, the primary waits (RotationPending, shown below by its
    // event and by the order of the KMS calls); the replica's import wakes it at once.
    let primary = wait_for(
        &api,
        &name,
        std::time::Duration::from_secs(40),
        "one rotation, Ready",
        |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.rotation_count == Some(1))
                && ready(k) == key_ready
        },
    )
    .await;
    let replica = wait_replica_api(&replicas, &replica_name, "replica on km-2, Ready", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.key_material_id.as_deref() == Some("km-2"))
            && replica_condition(r, "Ready") == key_ready
    })
    .await;
    assert_eq!(kms.current_key_material_id(), "km-2");

    // (5) Statuses: new and previous KeyMaterialId on both, one rotation on the primary.
    let p = primary.status.unwrap().key;
    assert_eq!(p.key_material_id.as_deref(), Some("km-2"));
    assert_eq!(p.previous_key_material_id.as_deref(), Some("km-1"));
    assert_eq!(p.material_fingerprint, Some(fingerprint(spec, &new)));
    assert_eq!(p.pending_key_material_id, None);
    assert_eq!(p.pending_material_fingerprint, None);
    assert!(p.last_rotation_time.is_some());
    let r = replica.status.unwrap().key;
    assert_eq!(r.key_material_id.as_deref(), Some("km-2"));
    assert_eq!(r.previous_key_material_id.as_deref(), Some("km-1"));
    assert_eq!(r.material_fingerprint, Some(fingerprint(spec, &new)));
    assert_eq!(r.pending_key_material_id, None);
    assert_eq!(r.pending_material_fingerprint, None);
    assert_eq!(
        r.rotation_count, None,
        "replicas are rotated by the primary"
    );

    let log = kms.log();
    let imports: Vec<(usize, &MrkCall)> = log
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, MrkCall::Import { .. }))
        .collect();
    // (1) The primary imported the new Secret's bytes as NEW_KEY_MATERIAL, once.
    let primary_imports: Vec<_> = imports
        .iter()
        .filter(|(_, c)| matches!(c, MrkCall::Import { key_id, .. } if key_id == MRK_PRIMARY_ID))
        .collect();
    assert_eq!(primary_imports.len(), 1, "{log:?}");
    let MrkCall::Import {
        import_type,
        plaintext,
        outcome,
        ..
    } = primary_imports[0].1
    else {
        unreachable!()
    };
    assert_eq!(import_type, &Some(ImportType::NewKeyMaterial));
    assert_eq!(plaintext.as_slice(), new.as_slice());
    assert_eq!(outcome, &Ok("km-2".to_string()));
    // (2) The replica imported the same bytes as EXISTING_KEY_MATERIAL with km-2, once...
    let replica_imports: Vec<_> = imports
        .iter()
        .filter(|(_, c)| matches!(c, MrkCall::Import { key_id, .. } if key_id == MRK_REPLICA_ID))
        .collect();
    assert_eq!(replica_imports.len(), 1, "{log:?}");
    let (replica_import_at, replica_import) = *replica_imports[0];
    assert_eq!(
        replica_import,
        &MrkCall::Import {
            key_id: MRK_REPLICA_ID.into(),
            import_type: Some(ImportType::ExistingKeyMaterial),
            key_material_id: Some("km-2".into()),
            plaintext: new.to_vec(),
            outcome: Ok("km-2".into()),
        }
    );
    // ... and (3) only then came RotateKeyOnDemand, exactly once (no refused attempts).
    let rotations: Vec<(usize, &MrkCall)> = log
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, MrkCall::Rotate { .. }))
        .collect();
    assert_eq!(rotations.len(), 1, "{log:?}");
    assert_eq!(
        rotations[0].1,
        &MrkCall::Rotate {
            key_id: MRK_PRIMARY_ID.into(),
            outcome: Ok("km-2".into())
        }
    );
    assert!(
        rotations[0].0 > replica_import_at,
        "RotateKeyOnDemand before the replica imported: {log:?}"
    );
    assert!(primary_imports[0].0 < replica_import_at);
    // (6) Old material stays: no DeleteImportedKeyMaterial anywhere.
    assert!(
        !log.iter()
            .any(|c| matches!(c, MrkCall::DeleteImportedKeyMaterial { .. })),
        "{log:?}"
    );
    op.wait_events(
        &name,
        &["RotationMaterialImported", "RotationPending", "KeyRotated"],
    )
    .await;
    op.wait_events(&replica_name, &["RotationMaterialImported"])
        .await;

    // Later resyncs verify km-2 on both and never rotate or import again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    wait_for(
        &api,
        &name,
        std::time::Duration::from_secs(30),
        "primary verified on km-2",
        |k| ready(k) == key_ready && verified(key_condition(k, "MaterialVerified")),
    )
    .await;
    wait_replica_api(&replicas, &replica_name, "replica verified on km-2", |r| {
        replica_condition(r, "Ready") == key_ready
            && verified(replica_condition(r, "MaterialVerified"))
    })
    .await;
    let later = kms.log();
    let count = |log: &[MrkCall]| {
        log.iter()
            .filter(|c| matches!(c, MrkCall::Import { .. } | MrkCall::Rotate { .. }))
            .count()
    };
    assert_eq!(count(&later), count(&log), "{later:?}");
    // A legitimate rotation never tells the user to restore the old material.
    for key in [&name, &replica_name] {
        assert_eq!(op.event_count(key, "MaterialMismatch"), 0, "{key}");
    }
}
