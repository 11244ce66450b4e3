//! Every material KMS holds is known, traceable and retired on purpose only, on the strict KMS
//! model (crates/kms-model; LocalStack reports no material ids and cannot rotate imported
//! keys): `status.materials` after import, rotation and retirement, the
//! `KeyMaterialDescription` of every import naming its source, and `keyMaterial.retire`
//! deleting NON_CURRENT material on the primary and its replica (never the current one).

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keyfleet::api::{AwsKey, KeyMaterialEntry, KeySpec};
use keyfleet::material::KeyMaterial;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;
use support::replicas::*;

const NS: &str = "team-a";
const REGION: &str = "eu-west-1";

/// The fingerprint keyfleet records for a Secret value of symmetric material.
fn fingerprint(value: &[u8]) -> String {
    KeyMaterial::from_secret_value(
        KeySpec::SymmetricDefault,
        keyfleet::api::MaterialEncoding::Raw,
        value,
    )
    .unwrap()
    .fingerprint()
    .as_str()
    .to_string()
}

/// The resourceVersion of the Secret `name`.
async fn secret_version(client: &kube::Client, name: &str) -> String {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    api.get(name)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

/// The KeyMaterialDescription keyfleet gives an import of `value` from Secret `secret` (at
/// `version`) for AwsKey `name`.
fn description(value: &[u8], secret: &str, version: &str, name: &str) -> String {
    format!(
        "keyfleet {} Secret {NS}/{secret} rv {version} for AwsKey {NS}/{name}",
        fingerprint(value)
    )
}

fn materials(k: &AwsKey) -> Vec<KeyMaterialEntry> {
    k.status
        .as_ref()
        .map(|s| s.materials.clone())
        .unwrap_or_default()
}

/// An entry as KMS reports it for material imported without expiry.
fn entry(id: &str, state: &str, description: &str, fingerprint: &str) -> KeyMaterialEntry {
    KeyMaterialEntry {
        key_material_id: Some(id.to_string()),
        state: Some(state.to_string()),
        import_state: Some("IMPORTED".into()),
        expiration_model: Some("KEY_MATERIAL_DOES_NOT_EXPIRE".into()),
        valid_to: None,
        description: Some(description.to_string()),
        rotation_date: None,
        fingerprint: Some(fingerprint.to_string()),
        confirmed: true,
        retired: false,
    }
}

/// A symmetric key rotating on Secret changes: one material, described with its Secret and
/// resourceVersion; after the Secret changes, two (the old NON_CURRENT, the new CURRENT with
/// its rotation date), each import carrying its own description to KMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inventory_lists_every_material_with_the_description_of_its_import() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let api = op.keys(NS);
    let name = unique("inventory");
    let old = create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    let old_version = secret_version(&op.client, &name).await;
    let spec = json!({"keyMaterial": {"secretRef": {"name": name, "key": "material"}, "onChange": "Rotate"}});
    create_key(&api, &aws_key(&name, REGION, &name, spec)).await;
    // Right after the creation the one material is keyfleet's own record (from the import's
    // answer, no read); the next deep read confirms it from KMS's listing.
    let k = wait_for(&api, &name, "one listed material", |k| {
        ready(k) == Some(("True".into(), "KeyReady".into()))
            && materials(k).len() == 1
            && materials(k)[0].confirmed
    })
    .await;
    let key_id = k.status.as_ref().unwrap().key.key_id.clone().unwrap();
    let old_id = kms_model::key_material_id(&key_id, &old);
    let old_description = description(&old, &name, &old_version, &name);
    assert_eq!(
        materials(&k),
        vec![entry(
            &old_id,
            "CURRENT",
            &old_description,
            &fingerprint(&old)
        )]
    );
    assert_eq!(k.status.as_ref().unwrap().material_count, Some(1));
    let imports = model.requests_of("ImportKeyMaterial");
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].params["KeyMaterialDescription"], old_description);

    // The Secret changes: keyfleet imports the new material (described with the Secret's new
    // resourceVersion) and rotates; the inventory holds both.
    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    update_material_secret(&op.client, NS, &name, &new).await;
    let new_version = secret_version(&op.client, &name).await;
    assert_ne!(new_version, old_version);
    let k = wait_for(&api, &name, "two materials", |k| {
        ready(k) == Some(("True".into(), "KeyReady".into()))
            && materials(k)
                .iter()
                .any(|m| m.state.as_deref() == Some("NON_CURRENT"))
    })
    .await;
    let new_id = kms_model::key_material_id(&key_id, &new);
    let new_description = description(&new, &name, &new_version, &name);
    let mut listed = materials(&k);
    let rotated_at = listed[1].rotation_date.take();
    assert!(rotated_at.is_some(), "{listed:#?}");
    assert_eq!(
        listed,
        vec![
            entry(&old_id, "NON_CURRENT", &old_description, &fingerprint(&old)),
            entry(&new_id, "CURRENT", &new_description, &fingerprint(&new)),
        ]
    );
    assert_eq!(k.status.as_ref().unwrap().material_count, Some(2));
    let imports = model.requests_of("ImportKeyMaterial");
    assert_eq!(imports.len(), 2, "{imports:#?}");
    assert_eq!(imports[1].params["KeyMaterialDescription"], new_description);
    // What KMS itself lists agrees (the status is not keyfleet's guess).
    assert_rotated_in_kms(&model, REGION, &key_id, &old_id, &new_id);
}

/// KMS takes no KeyMaterialDescription for RSA, ECC and HMAC keys and gives their one material
/// no id: the import carries none, and the inventory shows that material from DescribeKey.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_other_than_symmetric_list_their_one_material_without_an_id() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let name = unique("hmac-inventory");
    create_key_with_material(&op, NS, &name, KeySpec::Hmac256, json!({})).await;
    let k = wait_for(&op.keys(NS), &name, "one material", |k| {
        ready(k) == Some(("True".into(), "KeyReady".into())) && materials(k).len() == 1
    })
    .await;
    let status = k.status.unwrap();
    let m = &status.materials[0];
    assert_eq!(m.key_material_id, None);
    assert_eq!(m.state.as_deref(), Some("CURRENT"));
    assert_eq!(m.import_state.as_deref(), Some("IMPORTED"));
    assert!(m.confirmed);
    assert_eq!(m.fingerprint, status.key.material_fingerprint);
    let imports = model.requests_of("ImportKeyMaterial");
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].error, None);
    assert_eq!(imports[0].params.get("KeyMaterialDescription"), None);
}

/// LocalStack does not implement ListKeyRotations (it answers 501) and reports no material
/// ids: the inventory holds the one material keyfleet imported, with its fingerprint, marked
/// as not confirmed by KMS, and the key is Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_kms_inventory_the_list_holds_what_keyfleet_imported_unconfirmed() {
    let op = Operator::start(memkube::MemKube::new()).await;
    let name = unique("unconfirmed");
    let value = create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    create_key(
        &op.keys(NS),
        &aws_key(&name, DEFAULT_REGION, &name, json!({})),
    )
    .await;
    let k = wait_for_within(
        &op.keys(NS),
        &name,
        Duration::from_secs(60),
        "Ready with one material",
        |k| ready(k) == Some(("True".into(), "KeyReady".into())) && materials(k).len() == 1,
    )
    .await;
    let m = &materials(&k)[0];
    assert!(!m.confirmed, "{m:?}");
    assert_eq!(m.fingerprint.as_deref(), Some(fingerprint(&value).as_str()));
    assert_eq!(k.status.as_ref().unwrap().material_count, Some(1));
    // Later resyncs keep it so: the 501 is not retried as a failure.
    let seen = op.wait_own_reconciles("AwsKey", NS, &name, 0, 0).await;
    op.wait_own_reconciles("AwsKey", NS, &name, seen, 2).await;
    let again = op.keys(NS).get(&name).await.unwrap();
    assert_eq!(ready(&again), Some(("True".into(), "KeyReady".into())));
    assert_eq!(materials(&again), materials(&k));

    // Without ids nothing can be retired: said precisely, nothing deleted.
    let id = "0".repeat(64);
    retire(&op.keys(NS), &name, &[&id]).await;
    let refused = wait_reason(&op.keys(NS), &name, "MaterialInventoryUnavailable").await;
    assert!(ready_message(&refused).contains("kms:ListKeyRotations"));
    assert_eq!(
        refused.status.unwrap().key.key_state.as_deref(),
        Some("Enabled")
    );
}

/// Sets `keyMaterial.retire` of the AwsKey `name`.
async fn retire(api: &Api<AwsKey>, name: &str, ids: &[&str]) {
    let patch = json!({"spec": {"keyMaterial": {"retire": ids, "retireMakesKeyUnusable": true}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// A multi-Region key rotated once, with a replica: retiring the current material is refused
/// (nothing deleted); retiring the old one deletes it with DeleteImportedKeyMaterial and its
/// KeyMaterialId in both Regions, an event each, and status shows it retired. KMS then keeps
/// both keys PendingImport (a key works only while it holds every material it was rotated
/// through): Ready=False MaterialRetired, and no import is attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retire_deletes_non_current_material_everywhere_and_never_the_current_one() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let primary = unique("retire");
    let replica_name = format!("{primary}-eu");
    let rotate = json!({"keyMaterial": {"secretRef": {"name": primary, "key": "material"}, "onChange": "Rotate"}});
    let scenario = ReplicaScenario::new(&op, NS, &primary, KeySpec::SymmetricDefault, rotate).await;
    let arn = scenario.primary_arn().await;
    let key_id = arn.rsplit('/').next().unwrap().to_string();
    scenario.add_replica(&replica_name, REGION, json!({})).await;
    wait_replica_ready(&op.client, NS, &replica_name).await;
    let api = op.keys(NS);
    let old_id = recorded_key_material_id(&api, &primary).await;

    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    let new_id = kms_model::key_material_id(&key_id, &new);
    update_material_secret(&op.client, NS, &primary, &new).await;
    scenario
        .wait_replica_status(&replica_name, "replica rotated", |s| {
            s.key_material_id.as_deref() == Some(new_id.as_str()) && s.materials.len() == 2
        })
        .await;

    // The current material: refused, nothing deleted.
    retire(&api, &primary, &[&new_id]).await;
    let refused = wait_reason(&api, &primary, "MaterialRetirementRefused").await;
    assert!(
        ready_message(&refused).contains(&new_id) && ready_message(&refused).contains("CURRENT"),
        "{}",
        ready_message(&refused)
    );
    assert!(model.requests_of("DeleteImportedKeyMaterial").is_empty());

    // The old material: deleted in both Regions.
    retire(&api, &primary, &[&old_id]).await;
    let retired = wait_reason(&api, &primary, "MaterialRetired").await;
    assert!(ready_message(&retired).contains(&old_id));
    let replica = wait_replica_reason(&op.client, NS, &replica_name, "MaterialRetired").await;
    let deletions: Vec<_> = model
        .requests_of("DeleteImportedKeyMaterial")
        .into_iter()
        .map(|r| (r.region, r.params["KeyMaterialId"].clone(), r.error))
        .collect();
    let mut regions: Vec<_> = deletions.iter().map(|(r, _, _)| r.clone()).collect();
    regions.sort();
    let mut expected = vec![DEFAULT_REGION.to_string(), REGION.to_string()];
    expected.sort();
    assert_eq!(regions, expected, "{deletions:?}");
    assert!(
        deletions
            .iter()
            .all(|(_, id, error)| id == &json!(old_id) && error.is_none()),
        "{deletions:?}"
    );
    op.wait_events(&primary, &["MaterialRetired"]).await;
    op.wait_events(&replica_name, &["MaterialRetired"]).await;
    for status in [retired.status.unwrap().key, replica.status.unwrap().key] {
        let old = status
            .materials
            .iter()
            .find(|m| m.key_material_id.as_deref() == Some(old_id.as_str()))
            .unwrap();
        assert!(old.retired, "{:#?}", status.materials);
        assert_eq!(old.import_state.as_deref(), Some("PENDING_IMPORT"));
        assert_eq!(status.key_state.as_deref(), Some("PendingImport"));
    }
    for region in [DEFAULT_REGION, REGION] {
        let k = model.key(region, &key_id).unwrap();
        assert_eq!(k.key_state, "PendingImport", "{region}");
        assert_eq!(
            k.imported.keys().collect::<Vec<_>>(),
            vec![&new_id],
            "{region}"
        );
    }
    // No import is attempted for a key that lacks only retired material.
    reconcile_imports_nothing(&op, &model, NS, &primary).await;
}

/// Imports the Secret value `value` into `key_id` behind keyfleet's back.
async fn import_outside(kms: &aws_sdk_kms::Client, key_id: &str, value: &[u8]) {
    let material = KeyMaterial::from_secret_value(
        KeySpec::SymmetricDefault,
        keyfleet::api::MaterialEncoding::Raw,
        value,
    )
    .unwrap();
    let (algorithm, wrapping_key_spec) =
        keyfleet::api::WrappingAlgorithm::default_for(KeySpec::SymmetricDefault);
    let input = keyfleet::kms::execute::ImportInput {
        material: &material,
        algorithm,
        wrapping_key_spec,
        description: None,
    };
    keyfleet::kms::execute::import_material(kms, key_id, &input, None)
        .await
        .unwrap();
}

/// keyfleet finding: an adopted symmetric key holds material keyfleet never imported, and its
/// KeyMaterialId was taken on trust (verification then compared KMS with itself). keyfleet now
/// proves it by importing the Secret's material once (KMS refuses other material) and records
/// the KeyMaterialId of that import: a key holding the Secret's material is Ready and
/// verified, one holding other material is MaterialMismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_adopted_keys_material_is_proven_by_an_import_not_taken_on_trust() {
    use support::outside::{adopt_by, external_key, import_other_material};
    let ModelHarness { model, op, kms } = ModelHarness::start([]).await;
    let api = op.keys(NS);
    for holds_secret in [true, false] {
        let name = unique("adopted");
        let arn = external_key(&kms, vec![adopt_by(NS, &name)]).await;
        let key_id = arn.rsplit('/').next().unwrap().to_string();
        let value = create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
        if holds_secret {
            import_outside(&kms, &key_id, &value).await;
        } else {
            import_other_material(&kms, &key_id, KeySpec::SymmetricDefault).await;
        }
        let before = model.requests_of("ImportKeyMaterial").len();
        let adopt = json!({"adoptKeyArn": arn});
        create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, adopt)).await;
        if holds_secret {
            let k = wait_for(&api, &name, "verified", |k| {
                ready(k) == Some(("True".into(), "KeyReady".into()))
                    && condition_of(&k.status.as_ref().unwrap().conditions, "MaterialVerified")
                        == Some(("True".into(), "KeyMaterialIdMatches".into()))
            })
            .await;
            let id = kms_model::key_material_id(&key_id, &value);
            assert_eq!(k.status.unwrap().key.key_material_id, Some(id));
        } else {
            wait_reason(&api, &name, "MaterialMismatch").await;
        }
        let imports: Vec<_> = model.requests_of("ImportKeyMaterial")[before..]
            .iter()
            .map(|r| r.error.clone())
            .collect();
        let expected = if holds_secret {
            None
        } else {
            Some("IncorrectKeyMaterialException".to_string())
        };
        assert_eq!(imports.first(), Some(&expected), "{imports:?}");
    }
}
