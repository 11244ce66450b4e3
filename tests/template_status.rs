//! AwsKeyPolicyTemplate status: the real controller, in process, against the in-memory
//! Kubernetes API (keys on the strict KMS model: their KMS side is not the subject here). A
//! template reports whether it renders (`Ready`, reason `Rendered`, or `PolicyTemplateInvalid`
//! with `Stalled` and a Warning event) and how many AwsKeys and AwsReplicaKeys use it; the
//! count follows keys that are created, deleted or pointed elsewhere within seconds, from the
//! key watches and not from a resync (the resync interval is set far beyond the waits).

mod support;

use std::time::Duration;

use keyfleet::api::{AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, AwsReplicaKey};
use keyfleet::kms::KmsClients;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use memkube::MemKube;
use serde_json::{Value, json};
use support::localstack::unique;
use support::operator::*;

/// How long a count or condition may take to follow a change: seconds, not a resync.
const FOLLOWS_WITHIN: Duration = Duration::from_secs(10);

/// A policy document with every placeholder keyfleet fills in.
const DOCUMENT: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow",
  "Principal":{"AWS":"arn:${Partition}:iam::${AccountId}:root"},"Action":"kms:*",
  "Resource":"${KeyArn}","Condition":{"StringEquals":{"kms:CallerAccount":"${AccountId}",
  "aws:RequestedRegion":"${Region}","x:KeyId":"${KeyId}"}}}]}"#;

/// The operator on the strict KMS model, resyncing only every 10 minutes (with `namespaces`
/// watched, or all when empty).
async fn start(namespaces: &[&str]) -> (Operator, kms_model::KmsModel) {
    let model = kms_model::KmsModel::start().await.unwrap();
    let clients = KmsClients::from_config(support::localstack::sdk_config(&model.url()));
    let mut s = settings();
    s.resync_interval = Duration::from_secs(600);
    s.watch_namespaces = namespaces.iter().map(|n| n.to_string()).collect();
    (Operator::start_with(MemKube::new(), clients, s), model)
}

fn templates(client: &kube::Client) -> Api<AwsKeyPolicyTemplate> {
    Api::all(client.clone())
}

async fn create_template(client: &kube::Client, prefix: &str, spec: Value) -> String {
    let name = unique(prefix);
    let spec: AwsKeyPolicyTemplateSpec = serde_json::from_value(spec).unwrap();
    templates(client)
        .create(
            &PostParams::default(),
            &AwsKeyPolicyTemplate::new(&name, spec),
        )
        .await
        .unwrap();
    name
}

/// An AwsKey in `namespace` whose policy comes from `template`.
async fn create_key_using(client: &kube::Client, namespace: &str, name: &str, template: &str) {
    let key = aws_key(
        name,
        "us-east-1",
        "material",
        json!({"multiRegion": true, "policy": {"templateRef": {"name": template}}}),
    );
    create_key(&Api::namespaced(client.clone(), namespace), &key).await;
}

/// An AwsReplicaKey of `primary` in `namespace` whose policy comes from `template`.
async fn create_replica_using(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    primary: &str,
    template: &str,
) {
    let replica: AwsReplicaKey = serde_json::from_value(json!({
        "apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsReplicaKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"region": "eu-west-1", "primaryKeyRef": {"name": primary},
                 "policy": {"templateRef": {"name": template}}}
    }))
    .unwrap();
    Api::<AwsReplicaKey>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &replica)
        .await
        .unwrap();
}

/// The condition of `type_` as (status, reason, message).
fn condition(t: &AwsKeyPolicyTemplate, type_: &str) -> Option<(String, String, String)> {
    let c = t
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn keys(t: &AwsKeyPolicyTemplate) -> Option<i64> {
    Some(t.status.as_ref()?.keys)
}

/// Asserts the template's Ready and Stalled conditions, each as (status, reason); returns
/// Ready's message.
fn assert_ready_and_stalled(
    t: &AwsKeyPolicyTemplate,
    ready: (&str, &str),
    stalled: (&str, &str),
) -> String {
    let (status, reason, message) = condition(t, "Ready").expect("a Ready condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ready,
        "Ready: {message}"
    );
    let (status, reason, _) = condition(t, "Stalled").expect("a Stalled condition");
    assert_eq!((status.as_str(), reason.as_str()), stalled, "Stalled");
    message
}

/// `kubectl wait --for=condition=Ready`: Ready=True, written for the current generation.
fn ready_now(t: &AwsKeyPolicyTemplate) -> bool {
    condition(t, "Ready").is_some_and(|(s, _, _)| s == "True")
        && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
}

/// Waits (seconds, not a resync) until the template `name` satisfies `check`.
async fn wait_template(
    client: &kube::Client,
    name: &str,
    what: &str,
    check: impl Fn(&AwsKeyPolicyTemplate) -> bool,
) -> AwsKeyPolicyTemplate {
    wait_for_within(&templates(client), name, FOLLOWS_WITHIN, what, check).await
}

/// Waits until the template `name` counts `n` keys.
async fn wait_count(client: &kube::Client, name: &str, n: i64, what: &str) -> AwsKeyPolicyTemplate {
    wait_template(client, name, what, |t| keys(t) == Some(n)).await
}

/// Waits until the newest reconcile of the template `name` waits at least a minute for the
/// next: its watch ignores its own status writes, so it rests until a key or the template
/// changes. The proof a "nothing more happens" check needs.
async fn wait_template_resting(name: &str) {
    wait_resting_lines(&[&format!("template={name} "), "template reconciled"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_counts_the_keys_using_it_as_they_come_and_go() {
    let (mut op, _model) = start(&[]).await;
    let client = op.client.clone();
    let standard = create_template(&client, "standard", json!({"document": DOCUMENT})).await;
    let other = create_template(&client, "other", json!({"keyUsersRoles": ["app"]})).await;

    // Two AwsKeys in two namespaces and an AwsReplicaKey use `standard`; one key uses `other`.
    create_key_using(&client, "team-a", "orders", &standard).await;
    create_key_using(&client, "team-b", "orders", &standard).await;
    create_replica_using(&client, "team-a", "orders-eu", "orders", &standard).await;
    create_key_using(&client, "team-a", "billing", &other).await;

    let t = wait_template(&client, &standard, "Ready with 3 keys", |t| {
        ready_now(t) && keys(t) == Some(3)
    })
    .await;
    let message = assert_ready_and_stalled(&t, ("True", "Rendered"), ("False", "Rendered"));
    assert!(
        message.contains("for a key such as arn:aws:kms:us-east-1:111122223333:key/"),
        "{message}"
    );
    wait_template(&client, &other, "Ready with 1 key", |t| {
        ready_now(t) && keys(t) == Some(1)
    })
    .await;
    // The count only: no key of any namespace is named in the cluster-scoped status.
    let status = serde_json::to_string(&t.status).unwrap();
    assert!(
        !status.contains("team-a") && !status.contains("orders"),
        "{status}"
    );

    // A deleted key (its finalizer released once the deletion policy ran) stops counting.
    Api::<keyfleet::api::AwsKey>::namespaced(client.clone(), "team-b")
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_count(&client, &standard, 2, "2 keys after a deletion").await;

    // A key pointed at another template moves from one count to the other.
    Api::<keyfleet::api::AwsKey>::namespaced(client.clone(), "team-a")
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"policy": {"templateRef": {"name": other}}}})),
        )
        .await
        .unwrap();
    wait_count(&client, &standard, 1, "1 key after a move").await;
    wait_count(&client, &other, 2, "2 keys after a move").await;

    // A template nobody uses reports 0 (and is still Ready: it renders).
    let unused = create_template(
        &client,
        "unused",
        json!({"externalAccounts": ["444455556666"]}),
    )
    .await;
    let t = wait_template(&client, &unused, "Ready", ready_now).await;
    assert_eq!(keys(&t), Some(0));

    // The controller stops with the others (its key watches included).
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_that_does_not_render_is_stalled_until_fixed() {
    let (op, _model) = start(&[]).await;
    let client = op.client.clone();
    // `${KeyARN}` is not a placeholder keyfleet knows (it is `${KeyArn}`); admission cannot
    // tell, the template's status does.
    let name = create_template(
        &client,
        "typo",
        json!({"document": DOCUMENT.replace("${KeyArn}", "${KeyARN}")}),
    )
    .await;
    let t = wait_template(&client, &name, "PolicyTemplateInvalid", |t| {
        condition(t, "Ready").is_some_and(|(_, r, _)| r == "PolicyTemplateInvalid")
    })
    .await;
    assert_eq!(keys(&t), Some(0));
    let invalid = ("True", "PolicyTemplateInvalid");
    let message = assert_ready_and_stalled(&t, ("False", "PolicyTemplateInvalid"), invalid);
    assert!(
        message.starts_with("spec.document: unknown placeholder ${KeyARN}"),
        "{message}"
    );
    assert_eq!(
        condition(&t, "Stalled").map(|(_, _, m)| m),
        Some(message.clone()),
        "Stalled says what Ready says"
    );
    assert!(!ready_now(&t));
    // A key using a broken template still counts (it reports the same reason).
    create_key_using(&client, "team-a", "payments", &name).await;
    let t = wait_template(&client, &name, "1 key", |t| keys(t) == Some(1)).await;
    op.wait_events(&name, &["PolicyTemplateInvalid"]).await;
    let events = op.events_for(&name);
    assert!(
        events.iter().any(|(type_, reason, note)| type_ == "Warning"
            && reason == "PolicyTemplateInvalid"
            && note.contains("${KeyARN}")),
        "{events:?}"
    );

    // No hot loop: the status writes do not retrigger the controller, which rests until a key
    // or the template changes.
    wait_template_resting(&name).await;
    let warnings = |op: &Operator| {
        op.events_for(&name)
            .iter()
            .filter(|(type_, _, _)| type_ == "Warning")
            .count()
    };
    assert_eq!(warnings(&op), 1, "{:?}", op.events_for(&name));

    // Fixed: Ready for the new generation (what `kubectl wait --for=condition=Ready` waits for).
    let generation = t.metadata.generation.unwrap();
    templates(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"document": DOCUMENT}})),
        )
        .await
        .unwrap();
    let t = wait_template(&client, &name, "Ready after the fix", ready_now).await;
    assert_eq!(t.metadata.generation, Some(generation + 1));
    assert_eq!(
        t.status.as_ref().unwrap().observed_generation,
        Some(generation + 1)
    );
    assert_eq!(condition(&t, "Ready").unwrap().1, "Rendered");
    assert_eq!(condition(&t, "Stalled").unwrap().0, "False");
    assert_eq!(keys(&t), Some(1));
    op.wait_events(&name, &["Rendered"]).await;
    let events = op.events_for(&name);
    assert!(
        events
            .iter()
            .any(|(type_, reason, _)| type_ == "Normal" && reason == "Rendered"),
        "{events:?}"
    );
}

/// With `--watch-namespaces`, the count covers the watched namespaces (the operator may not
/// read keys elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_count_covers_the_watched_namespaces() {
    let (op, _model) = start(&["team-a", "team-c"]).await;
    let client = op.client.clone();
    let name = create_template(&client, "scoped", json!({"document": DOCUMENT})).await;
    let t = wait_template(&client, &name, "Ready", ready_now).await;
    assert_eq!(keys(&t), Some(0));
    create_key_using(&client, "team-a", "orders", &name).await;
    create_key_using(&client, "team-b", "orders", &name).await;
    create_key_using(&client, "team-c", "orders", &name).await;
    create_replica_using(&client, "team-c", "orders-eu", "orders", &name).await;
    let t = wait_template(&client, &name, "3 keys", |t| {
        ready_now(t) && keys(t) == Some(3)
    })
    .await;
    // And stays there: team-b's key is not counted late either.
    wait_template_resting(&name).await;
    let again = templates(&client).get(&name).await.unwrap();
    assert_eq!(keys(&again), keys(&t));
}
