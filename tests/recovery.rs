//! Recovery where a reconcile cannot know what happened: a CreateKey whose answer was lost is
//! found again by its owner tag among thousands of other keys (paged ListKeys), also when the
//! AwsKey is deleted while the creation is still in doubt; a connection deleted before its
//! keys keeps their finalizers until it returns (cleanup never guesses another); an expired
//! import token is answered with fresh import parameters; a reconcile triggered while the
//! controller's cache lags behind its own status writes starts from the API's object. On the
//! strict KMS model where AWS behaviour matters, LocalStack otherwise.

mod support;

use std::time::Duration;

use keyfleet::api::{AllowedNamespaces, AwsKms, AwsKmsSpec};
use kms_model::{Fault, FaultKind, KmsModel};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;

const NS: &str = "recovery";

/// The ids of the model's keys owned by `uid`, and how many keys it holds in all.
fn owned_by(model: &KmsModel, uid: &str) -> (Vec<String>, usize) {
    let owned = model_keys_owned_by(model, uid);
    (
        owned.into_iter().map(|k| k.key_id).collect(),
        model.keys().len(),
    )
}

/// Waits until the model recorded a request of `operation` answered with `error`.
async fn wait_request(model: &KmsModel, operation: &str, error: &str) {
    let answered = async || {
        model
            .requests_of(operation)
            .iter()
            .any(|r| r.error.as_deref() == Some(error))
    };
    let what = format!("no {operation} answered {error}");
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        &what,
        answered,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_create_answer_is_found_again_among_thousands_of_keys() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    // 1,500 other keys: the one keyfleet makes is on ListKeys' second page (oldest first).
    let others = model.create_keys(DEFAULT_REGION, 1500).len();
    model.inject(Fault::once("CreateKey", FaultKind::LostAnswer));
    let name = unique("lost");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    let ready = wait_ready(&op.keys(NS), &name).await;

    let uid = ready.uid().unwrap();
    let (owned, total) = owned_by(&model, &uid);
    assert_eq!(owned.len(), 1, "exactly one key for the object: {owned:?}");
    assert_eq!(total, others + 1, "nothing else was created");
    assert_eq!(
        ready.status.unwrap().key_id.as_deref(),
        Some(owned[0].as_str())
    );
    let creates = model.requests_of("CreateKey");
    assert_eq!(creates.len(), 1, "no second CreateKey");
    assert_eq!(creates[0].error.as_deref(), Some("KMSInternalException"));
    assert!(creates[0].took_effect, "the lost answer's call took effect");
    let pages: Vec<_> = model
        .requests_of("ListKeys")
        .into_iter()
        .filter(|r| r.params.get("Marker").is_some())
        .collect();
    assert!(
        !pages.is_empty(),
        "the search never asked for a second page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_awskey_deleted_while_its_creation_is_in_doubt_deletes_the_key_it_made() {
    // The answer of CreateKey is lost, and the search for the key fails until KMS recovers.
    let faults = [
        Fault::once("CreateKey", FaultKind::LostAnswer),
        Fault::always("ListKeys", FaultKind::ServerError),
    ];
    let ModelHarness { model, op, .. } = ModelHarness::start(faults).await;
    let name = unique("doubt");
    let key = create_symmetric_key(&op, NS, &name, json!({"deletionPolicy": "Delete"})).await;
    wait_request(&model, "CreateKey", "KMSInternalException").await;
    wait_request(&model, "ListKeys", "KMSInternalException").await;
    let keys = op.keys(NS);
    let in_doubt = keys.get(&name).await.unwrap();
    let status = in_doubt.status.unwrap_or_default();
    assert!(
        status.key_id.is_none() && status.create_started_at.is_some(),
        "the creation is in doubt: {status:?}"
    );
    keys.delete(&name, &DeleteParams::default()).await.unwrap();
    // Cleanup cannot know yet whether a key exists: the finalizer stays. The proof that cleanup
    // ran: its searches fail after the deletion.
    let failed_searches = || {
        model
            .requests_of("ListKeys")
            .iter()
            .filter(|r| r.error.is_some())
            .count()
    };
    let before = failed_searches();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while failed_searches() < before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cleanup never searched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        keys.get_opt(&name).await.unwrap().is_some(),
        "the finalizer was released while the key may exist"
    );
    model.clear_faults();
    wait_gone(&keys, &name).await;

    let uid = key.uid().unwrap();
    let (owned, total) = owned_by(&model, &uid);
    assert_eq!((owned.len(), total), (1, 1), "{owned:?} of {total}");
    let made = model.key(DEFAULT_REGION, &owned[0]).unwrap();
    assert_eq!(
        made.key_state, "PendingDeletion",
        "the key it made is deleted"
    );
    op.wait_events(&name, &["KeyDeletionScheduled"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_deleted_before_its_key_holds_the_cleanup_until_it_returns() {
    let op = Operator::start(MemKube::new()).await;
    let connections = Api::<AwsKms>::all(op.client.clone());
    let conn = unique("conn");
    let spec = AwsKmsSpec::new(AllowedNamespaces::all());
    connections
        .create(&PostParams::default(), &AwsKms::new(&conn, spec.clone()))
        .await
        .unwrap();
    let ns = unique("recovery");
    let name = unique("orphan");
    let extra = json!({"kmsRef": {"name": conn}, "deletionPolicy": "Delete"});
    create_symmetric_key(&op, &ns, &name, extra).await;
    let keys = op.keys(&ns);
    let ready = wait_ready(&keys, &name).await;
    let key_id = ready.status.unwrap().key_id.clone().unwrap();

    connections
        .delete(&conn, &DeleteParams::default())
        .await
        .unwrap();
    keys.delete(&name, &DeleteParams::default()).await.unwrap();
    // The cleanup's own event (the key's reconcile may have reported the missing connection
    // before it was deleted, with the same reason).
    let cleanup_event = || {
        op.events_for(&name)
            .into_iter()
            .find(|(kind, reason, note)| {
                kind == "Warning"
                    && reason == "KmsConnectionNotFound"
                    && note.starts_with("cannot clean up the KMS key")
            })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let note = loop {
        if let Some((_, _, note)) = cleanup_event() {
            break note;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cleanup event: {:?}",
            op.events_for(&name)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(note.contains(&conn), "{note}");
    assert!(
        keys.get_opt(&name).await.unwrap().is_some(),
        "the finalizer stays without the connection the key was made through"
    );
    let kms = kms_client(DEFAULT_REGION).await;
    assert_eq!(key_state(&kms, &key_id).await, "Enabled");

    connections
        .create(&PostParams::default(), &AwsKms::new(&conn, spec))
        .await
        .unwrap();
    wait_gone(&keys, &name).await;
    assert_eq!(key_state(&kms, &key_id).await, "PendingDeletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_import_token_is_answered_with_fresh_import_parameters() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    model.inject(Fault::once(
        "ImportKeyMaterial",
        FaultKind::Refuse("ExpiredImportTokenException"),
    ));
    let name = unique("expired");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    let ready = wait_ready(&op.keys(NS), &name).await;
    let imports = model.requests_of("ImportKeyMaterial");
    assert_eq!(imports.len(), 2, "{imports:?}");
    assert_eq!(
        imports[0].error.as_deref(),
        Some("ExpiredImportTokenException")
    );
    assert_eq!(imports[1].error, None);
    let params = model.requests_of("GetParametersForImport");
    assert_eq!(params.len(), 2, "fresh parameters for the second import");
    assert_ne!(
        imports[0].params["ImportToken"], imports[1].params["ImportToken"],
        "the second import used a new token"
    );
    let key_id = ready.status.unwrap().key_id.clone().unwrap();
    assert_eq!(
        model.key(DEFAULT_REGION, &key_id).unwrap().key_state,
        "Enabled"
    );
    let reasons: Vec<String> = op
        .events_for(&name)
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    assert!(
        !reasons.iter().any(|r| r.starts_with("Kms")),
        "an expired token is not a refusal: {reasons:?}"
    );
}

/// SIGTERM during an import: the operator stops while ImportKeyMaterial is on the wire and is
/// gone before KMS answered (the pod's grace period ended). The request is dropped with it, the
/// key stays PendingImport, and the next instance imports the material again — with fresh
/// import parameters — into the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_cut_off_by_shutdown_is_completed_by_the_next_instance() {
    use support::kms_recorder::KmsRecorder;

    let kube = MemKube::new();
    let wire = KmsRecorder::default();
    wire.hold_next("ImportKeyMaterial", 1);
    let first = Operator::start_with(kube.clone(), wire.localstack_clients().await, settings());
    let ns = unique("recovery");
    let name = unique("cut");
    let key = create_symmetric_key(&first, &ns, &name, json!({})).await;
    wire.wait_held(1, Duration::from_secs(30)).await;
    drop(first);
    assert_eq!(
        (wire.held(), wire.cancelled()),
        (0, 1),
        "the import went away with the process"
    );
    wire.release();
    let keys = Api::<keyfleet::api::AwsKey>::namespaced(kube.client(), &ns);
    let cut = keys.get(&name).await.unwrap().status.unwrap_or_default();
    let key_id = cut
        .key_id
        .clone()
        .expect("the key was created before the import");
    let kms = kms_client(DEFAULT_REGION).await;
    let state = |described: aws_sdk_kms::operation::describe_key::DescribeKeyOutput| {
        described
            .key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str().to_string())
    };
    let before = kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(state(before).as_deref(), Some("PendingImport"));

    let second = Operator::start_with(kube.clone(), wire.localstack_clients().await, settings());
    let ready = wait_ready(&second.keys(&ns), &name).await;
    assert_eq!(
        ready.status.unwrap().key_id.as_deref(),
        Some(key_id.as_str())
    );
    let after = kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(state(after).as_deref(), Some("Enabled"));
    assert_eq!(
        kms_keys_owned_by(&kms, &key.uid().unwrap()).await,
        vec![key_id],
        "one key for the object"
    );
    assert!(
        wire.count("ImportKeyMaterial") >= 1,
        "the second instance imported"
    );
    assert!(
        wire.count("GetParametersForImport") >= 2,
        "fresh import parameters for the second import"
    );
}

/// Reconciles of `kind` that ended in an error (`keyfleet_reconciles_total{result="error"}`).
fn reconcile_errors(op: &Operator, kind: &str) -> u64 {
    let prefix = format!("keyfleet_reconciles_total{{kind=\"{kind}\"");
    op.metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("result=\"error\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The controller's AwsKey cache lags behind the API (its watch delivers each change 3 s late;
/// the Secret's watch does not), and a Secret change triggers the key just after it became
/// Ready: that reconcile starts from the API's object, not from the cached copy older than the
/// controller's own status writes. No second CreateKey or import, no 409 Conflict from a write
/// based on the old copy, and the status stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reconcile_while_the_cache_lags_behind_its_own_writes_starts_from_the_api() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let lag = Duration::from_secs(3);
    op.kube.lag_watches("awskeys", lag);
    let name = unique("lagging");
    create_symmetric_key(&op, NS, &name, json!({})).await;
    let api = op.keys(NS);
    // Read from the API, which is current: the cache gets this version `lag` later.
    let ready_key = wait_ready(&api, &name).await;
    let seen_ready = tokio::time::Instant::now();
    let since = op.reconciles("AwsKey");
    let errors = reconcile_errors(&op, "AwsKey");

    // A label on the Secret (its material unchanged) triggers the key at once.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(op.client.clone(), NS);
    secrets
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    op.wait_reconciles("AwsKey", since, 1).await;
    assert!(
        seen_ready.elapsed() < lag,
        "the reconcile came {:?} after Ready, when the cache may have caught up: this run shows nothing",
        seen_ready.elapsed()
    );

    assert_eq!(model.requests_of("CreateKey").len(), 1);
    let imports = model.requests_of("ImportKeyMaterial");
    assert_eq!(imports.len(), 1, "{imports:?}");
    assert_eq!(
        reconcile_errors(&op, "AwsKey"),
        errors,
        "a reconcile failed (a write based on the old copy meets 409 Conflict)"
    );
    let now = api.get(&name).await.unwrap();
    assert_eq!(ready(&now), Some(("True".into(), "KeyReady".into())));
    // All but the creation intent, which the first reconcile after the creation clears.
    let settled = |k: &keyfleet::api::AwsKey| {
        let mut status = k.status.clone().unwrap_or_default();
        status.create_started_at = None;
        status
    };
    assert_eq!(
        settled(&now),
        settled(&ready_key),
        "the status stayed as it was"
    );
}
