//! What KMS answers, end to end on the strict KMS model (crates/kms-model): a refused call is
//! Ready=False with its reason (`KmsRejected`, `KmsLimitExceeded`, `KmsInvalidState`), as is a
//! corrupted wrapping key (`WrappingKeyInvalid`), with a Warning event, and nothing more is
//! created or imported; a replica still Creating waits as `KeyNotReady`; a rotation waits as
//! `RotationPending` while a replica lacks the new material; a key disabled on purpose is Ready
//! as `KeyDisabled`.

mod support;

use std::time::Duration;

use keyfleet::api::{AwsKey, KeySpec};
use keyfleet::kms::KmsClients;
use kms_model::{Fault, FaultKind, KmsModel};
use kube::Api;
use kube::api::{Patch, PatchParams};
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;
use support::replicas::*;

const NS: &str = "team-a";
const REPLICA_REGION: &str = "eu-west-1";

/// A fresh KMS model, and the operator on a fresh in-memory API talking to it.
async fn start() -> (KmsModel, Operator) {
    let model = KmsModel::start().await.unwrap();
    let clients = KmsClients::from_config(support::localstack::sdk_config(&model.url()));
    let op = Operator::start_with(MemKube::new(), clients, settings());
    op.connection_checked().await;
    (model, op)
}

/// A Secret of fresh symmetric material and the AwsKey `name` reading it, `extra` in its spec.
async fn symmetric_key(op: &Operator, name: &str, extra: serde_json::Value) -> AwsKey {
    create_symmetric_key(op, NS, name, extra).await
}

/// A symmetric AwsKey with `extra` in its spec that ends Ready=False with `reason` and a Warning
/// event with that reason; its status.
async fn refused(op: &Operator, extra: serde_json::Value, reason: &str) -> AwsKey {
    let name = unique(&reason.to_lowercase());
    symmetric_key(op, &name, extra).await;
    let key = wait_reason(&op.keys(NS), &name, reason).await;
    op.wait_events(&name, &[reason]).await;
    let events = op.events_for(&name);
    assert!(
        events.iter().any(|(t, r, _)| t == "Warning" && r == reason),
        "{events:?}"
    );
    key
}

/// Waits until the AwsKey is Ready=True with `reason`.
async fn wait_ready_reason(api: &Api<AwsKey>, name: &str, reason: &str) -> AwsKey {
    wait_for(api, name, &format!("Ready=True/{reason}"), |k| {
        ready(k) == Some(("True".into(), reason.into()))
    })
    .await
}

/// Asserts that the object's condition `type_` is `status` with the Ready reason.
fn assert_condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: &str,
    reason: &str,
) {
    assert_eq!(
        condition_of(conditions, type_),
        Some((status.to_string(), reason.to_string())),
        "{type_}: {conditions:#?}"
    );
}

/// The requests of `operation` that carried the owner tag of `uid` (CreateKey, ReplicateKey).
fn requests_for(model: &KmsModel, operation: &str, uid: &str) -> Vec<kms_model::RecordedRequest> {
    model
        .requests_of(operation)
        .into_iter()
        .filter(|r| r.params.to_string().contains(uid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kms_refusals_yield_their_reason_an_event_and_nothing_more() {
    let (model, op) = start().await;
    let api = op.keys(NS);

    // KmsRejected, as KMS itself answers it: a description over KMS's 8192 characters (the
    // CRD's maxLength refuses it at admission; the in-memory API does not run it, as an API
    // server would not for an object admitted before the rule). CreateKey fails, no key.
    let rejected = refused(&op, json!({"description": "d".repeat(8193)}), "KmsRejected").await;
    assert!(ready_message(&rejected).contains("ValidationException"));
    let rejected_uid = rejected.metadata.uid.clone().unwrap();
    let creates = requests_for(&model, "CreateKey", &rejected_uid);
    assert_eq!(creates[0].error.as_deref(), Some("ValidationException"));

    // KmsLimitExceeded: the account's key quota (a refusal the model does not reach by itself,
    // injected once). No key is created.
    let quota = FaultKind::Refuse("LimitExceededException");
    model.inject(Fault::once("CreateKey", quota));
    let over = refused(&op, json!({}), "KmsLimitExceeded").await;
    let over_uid = over.metadata.uid.clone().unwrap();
    assert_eq!(
        requests_for(&model, "CreateKey", &over_uid)[0].fault,
        Some(quota)
    );

    // KmsInvalidState: ImportKeyMaterial refused for the key's state (injected once). The new
    // key stays PendingImport, without material.
    let invalid_state = FaultKind::Refuse("KMSInvalidStateException");
    model.inject(Fault::once("ImportKeyMaterial", invalid_state));
    let stuck = refused(&op, json!({}), "KmsInvalidState").await;
    assert!(ready_message(&stuck).contains("ImportKeyMaterial"));

    // WrappingKeyInvalid: GetParametersForImport answers with a public key that is not one
    // (corrupted once). Nothing is imported into the new key.
    let corrupt = FaultKind::CorruptAnswer("PublicKey");
    model.inject(Fault::once("GetParametersForImport", corrupt));
    let unwrappable = refused(&op, json!({}), "WrappingKeyInvalid").await;
    assert!(ready_message(&unwrappable).contains("not a DER SubjectPublicKeyInfo"));

    // A key created afterwards becomes Ready (the faults are used up, so a refused call retried
    // in a loop would now succeed): nothing was retried, nothing more created or imported.
    let after = unique("after");
    symmetric_key(&op, &after, json!({})).await;
    wait_ready(&api, &after).await;
    for uid in [&rejected_uid, &over_uid] {
        assert_eq!(
            requests_for(&model, "CreateKey", uid).len(),
            1,
            "CreateKey retried"
        );
        assert!(
            model_keys_owned_by(&model, uid).is_empty(),
            "a key was created"
        );
    }
    let calls = |operation: &str, key_id: &str| {
        model
            .requests_of(operation)
            .into_iter()
            .filter(|r| r.params["KeyId"].as_str() == Some(key_id))
            .collect::<Vec<_>>()
    };
    for (key, operation, fault) in [
        (&stuck, "ImportKeyMaterial", invalid_state),
        (&unwrappable, "GetParametersForImport", corrupt),
    ] {
        let owned = model_keys_owned_by(&model, key.metadata.uid.as_ref().unwrap());
        assert_eq!(owned.len(), 1, "{owned:?}");
        assert_eq!(owned[0].key_state, "PendingImport");
        assert!(owned[0].current_key_material_id.is_none());
        let refused_calls = calls(operation, &owned[0].key_id);
        assert_eq!(
            refused_calls.len(),
            1,
            "{operation} retried: {refused_calls:?}"
        );
        assert_eq!(refused_calls[0].fault, Some(fault));
        let name = key.metadata.name.as_ref().unwrap();
        let still = ready(&api.get(name).await.unwrap()).unwrap();
        assert_eq!(still, ready(key).unwrap());
    }
    let unwrappable_id = model_keys_owned_by(&model, unwrappable.metadata.uid.as_ref().unwrap());
    assert!(calls("ImportKeyMaterial", &unwrappable_id[0].key_id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_still_creating_waits_as_key_not_ready_then_follows() {
    let (model, op) = start().await;
    // New replicas stay Creating until the model's clock moves on.
    model.set_replica_creation_delay(Duration::from_secs(60));
    let primary = unique("creating");
    let scenario = ReplicaScenario::symmetric(&op, NS, &primary).await;
    scenario.primary_arn().await;
    let name = format!("{primary}-eu");
    scenario.add_replica(&name, REPLICA_REGION, json!({})).await;

    let waiting = wait_replica_reason(&op.client, NS, &name, "KeyNotReady").await;
    let status = waiting.status.unwrap();
    assert_condition(&status.conditions, "Reconciling", "True", "KeyNotReady");
    assert_condition(&status.conditions, "Stalled", "False", "KeyNotReady");
    op.wait_events(&name, &["KeyNotReady"]).await;
    let in_replica_region = |operation: &str| {
        model
            .requests_of(operation)
            .into_iter()
            .filter(|r| r.region == REPLICA_REGION && r.error.is_none())
            .count()
    };
    assert_eq!(
        in_replica_region("ReplicateKey"),
        0,
        "ReplicateKey runs in the primary's Region"
    );
    assert_eq!(
        in_replica_region("ImportKeyMaterial"),
        0,
        "imported while Creating"
    );

    // Once KMS finishes creating it, the replica gets the material without anyone acting.
    model.advance(Duration::from_secs(61));
    wait_replica_ready(&op.client, NS, &name).await;
    assert_eq!(in_replica_region("ImportKeyMaterial"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_waits_as_rotation_pending_while_a_replica_lacks_the_new_material() {
    let (model, op) = start().await;
    let primary = unique("rotating");
    let scenario = ReplicaScenario::new(
        &op,
        NS,
        &primary,
        KeySpec::SymmetricDefault,
        json!({"keyMaterial": {"secretRef": {"name": primary, "key": "material"}, "onChange": "Rotate"}}),
    )
    .await;
    scenario.primary_arn().await;
    let name = format!("{primary}-eu");
    scenario.add_replica(&name, REPLICA_REGION, json!({})).await;
    wait_replica_ready(&op.client, NS, &name).await;

    // The replica's Region fails every import (5xx, retried): it never holds the new material.
    model.inject(
        Fault::always("ImportKeyMaterial", FaultKind::ServerError).in_region(REPLICA_REGION),
    );
    let new = keyfleet_testkit::material::generate_secret_value(KeySpec::SymmetricDefault);
    update_material_secret(&op.client, NS, &primary, &new).await;

    let api = op.keys(NS);
    let pending = wait_reason(&api, &primary, "RotationPending").await;
    let status = pending.status.unwrap();
    assert_condition(&status.conditions, "Reconciling", "True", "RotationPending");
    assert!(status.pending_material_fingerprint.is_some(), "{status:#?}");
    op.wait_events(&primary, &["RotationMaterialImported", "RotationPending"])
        .await;
    // The replica tries the new material (and fails); the primary still does not rotate.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !model
        .requests_of("ImportKeyMaterial")
        .iter()
        .any(|r| r.region == REPLICA_REGION && r.fault == Some(FaultKind::ServerError))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never tried the new material"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready(&api.get(&primary).await.unwrap()),
        Some(("False".into(), "RotationPending".into()))
    );
    assert!(
        model.requests_of("RotateKeyOnDemand").is_empty(),
        "rotated before every replica held the new material"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_disabled_on_purpose_is_ready_as_key_disabled() {
    let (model, op) = start().await;
    let api = op.keys(NS);
    let name = unique("disabled");
    let key = symmetric_key(&op, &name, json!({"enabled": false})).await;
    let disabled = wait_ready_reason(&api, &name, "KeyDisabled").await;
    let status = disabled.status.unwrap();
    assert_condition(&status.conditions, "Stalled", "False", "KeyDisabled");
    let key_id = status.key_id.clone().unwrap();
    let in_kms = model.key(DEFAULT_REGION, &key_id).unwrap();
    assert_eq!(in_kms.key_state, "Disabled");
    assert!(
        in_kms.current_key_material_id.is_some(),
        "material imported"
    );
    op.wait_events(&name, &["MaterialImported", "KeyDisabled"])
        .await;
    assert!(model_keys_owned_by(&model, &key.metadata.uid.unwrap()).len() == 1);

    // Enabled again: KeyReady, and the key is Enabled in KMS.
    let enable = Patch::Merge(json!({"spec": {"enabled": true}}));
    api.patch(&name, &PatchParams::default(), &enable)
        .await
        .unwrap();
    wait_ready_reason(&api, &name, "KeyReady").await;
    assert_eq!(
        model.key(DEFAULT_REGION, &key_id).unwrap().key_state,
        "Enabled"
    );
    op.wait_events(&name, &["KeyEnabled", "KeyReady"]).await;
}
