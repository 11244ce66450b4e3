//! Tenancy boundaries against LocalStack with the real controller: connections granted to
//! namespaces (picked up when a namespace's labels change), the `default` connection, endpoint
//! allow-list, alias prefixes, policy principal limits, adoption consent, and ownership
//! re-checked before every change, replica cleanup through the recorded connection and account
//! (two accounts on the KMS model) — each refused with its reason, an event and nothing created
//! or changed in KMS, and each allowed path shown too.

mod support;

use std::collections::BTreeMap;

use aws_sdk_kms::types::Tag;
use k8s_openapi::api::core::v1::Namespace;
use keyfleet::api::{AllowedNamespaces, AwsKms, AwsKmsSpec, KeyPolicyLimits, KeySpec};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_client, kms_endpoint, unique};
use support::operator::*;
use support::outside::{adopt_by, external_key, tag};

async fn namespace(client: &kube::Client, name: &str, labels: &[(&str, &str)]) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn connection(client: &kube::Client, name: &str, spec: AwsKmsSpec) {
    Api::<AwsKms>::all(client.clone())
        .create(&PostParams::default(), &AwsKms::new(name, spec))
        .await
        .unwrap();
}

/// A Secret with fresh material and an AwsKey reading it in `ns`, with `extra` in its spec.
async fn key(op: &Operator, ns: &str, name: &str, extra: serde_json::Value) {
    create_material_secret(&op.client, ns, name, KeySpec::SymmetricDefault).await;
    create_key(&op.keys(ns), &aws_key(name, DEFAULT_REGION, name, extra)).await;
}

/// An AwsKey (with its Secret) that becomes Ready.
async fn ready_key(
    op: &Operator,
    ns: &str,
    name: &str,
    extra: serde_json::Value,
) -> keyfleet::api::AwsKey {
    key(op, ns, name, extra).await;
    wait_ready(&op.keys(ns), name).await
}

/// Refused with `reason` and a Warning event, and no KMS key carries the object's uid.
async fn refused(op: &Operator, ns: &str, name: &str, reason: &str) -> String {
    let key = wait_reason(&op.keys(ns), name, reason).await;
    op.wait_events(name, &[reason]).await;
    let uid = key.metadata.uid.clone().unwrap();
    let kms = kms_client(DEFAULT_REGION).await;
    assert!(
        kms_keys_owned_by(&kms, &uid).await.is_empty(),
        "{name}: a KMS key was created although it was refused with {reason}"
    );
    ready_message(&key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_serve_only_the_namespaces_they_are_granted() {
    let op = Operator::start(MemKube::new()).await;
    let (payments, orders) = (unique("payments"), unique("orders"));
    namespace(&op.client, &payments, &[("team", "payments")]).await;
    namespace(&op.client, &orders, &[("team", "orders")]).await;
    let pay = unique("pay");
    connection(
        &op.client,
        &pay,
        AwsKmsSpec::new(AllowedNamespaces::matching(BTreeMap::from([(
            "team".into(),
            "payments".into(),
        )]))),
    )
    .await;

    key(&op, &payments, "granted", json!({"kmsRef": {"name": pay}})).await;
    wait_ready(&op.keys(&payments), "granted").await;

    key(&op, &orders, "squatter", json!({"kmsRef": {"name": pay}})).await;
    refused(&op, &orders, "squatter", "KmsConnectionNotAllowed").await;

    // The administrator labels the namespace: picked up without a restart.
    Api::<Namespace>::all(op.client.clone())
        .patch(
            &orders,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .unwrap();
    wait_ready(&op.keys(&orders), "squatter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_without_kms_ref_uses_the_default_connection_and_none_means_not_found() {
    let op = Operator::start(MemKube::new()).await;
    let ns = unique("tenant");
    Api::<AwsKms>::all(op.client.clone())
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    key(&op, &ns, "implicit", json!({})).await;
    let message = refused(&op, &ns, "implicit", "KmsConnectionNotFound").await;
    assert!(message.contains("no AwsKms named default"), "{message}");

    connection(
        &op.client,
        "default",
        AwsKmsSpec::new(AllowedNamespaces::all()),
    )
    .await;
    let ready = wait_ready(&op.keys(&ns), "implicit").await;
    assert_eq!(ready.status.unwrap().connection.as_deref(), Some("default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn material_goes_only_to_allowed_endpoints() {
    let endpoint = kms_endpoint().await;
    let ns = unique("tenant");
    let custom = unique("custom");
    // Refused by default: http:// to a host that is not AWS KMS.
    {
        let op = Operator::start(MemKube::new()).await;
        let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
        spec.endpoint_url = Some(endpoint.clone());
        connection(&op.client, &custom, spec).await;
        key(&op, &ns, "elsewhere", json!({"kmsRef": {"name": custom}})).await;
        let message = refused(&op, &ns, "elsewhere", "KmsEndpointNotAllowed").await;
        assert!(message.contains("is not https://"), "{message}");
    }
    // Allowed when the operator runs with --allow-custom-kms-endpoints.
    let mut custom_ok = settings();
    custom_ok.endpoints.allow_custom = true;
    let op = Operator::start_with(MemKube::new(), localstack_clients().await, custom_ok);
    let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
    spec.endpoint_url = Some(endpoint);
    connection(&op.client, &custom, spec).await;
    ready_key(&op, &ns, "test-double", json!({"kmsRef": {"name": custom}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aliases_and_policies_stay_inside_the_connections_limits() {
    let op = Operator::start(MemKube::new()).await;
    let ns = unique("tenant");
    let strict = unique("strict");
    let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
    spec.alias_prefix = Some("alias/{namespace}/".into());
    spec.key_policy = Some(KeyPolicyLimits {
        allowed_accounts: vec!["000000000000".into()],
        ..Default::default()
    });
    connection(&op.client, &strict, spec).await;
    let via = |extra: serde_json::Value| {
        let mut spec = json!({"kmsRef": {"name": strict}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        spec
    };
    let root = json!({"Sid": "Root", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "kms:*", "Resource": "*"});
    let policy = |extra: serde_json::Value| {
        let document = json!({"Version": "2012-10-17", "Statement": [root.clone(), extra]});
        json!({"document": document.to_string()})
    };

    key(
        &op,
        &ns,
        "squat",
        via(json!({"alias": "alias/payments/orders"})),
    )
    .await;
    let message = refused(&op, &ns, "squat", "AliasNotAllowed").await;
    assert!(message.contains(&format!("alias/{ns}/")), "{message}");

    let thief = json!({"Sid": "Thief", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::444455556666:root"}, "Action": "kms:Decrypt", "Resource": "*"});
    key(&op, &ns, "exfil", via(json!({"policy": policy(thief)}))).await;
    let message = refused(&op, &ns, "exfil", "PolicyNotAllowed").await;
    assert!(
        message.contains("\"Thief\"") && message.contains("444455556666"),
        "{message}"
    );

    let anyone = json!({"Sid": "Anyone", "Effect": "Allow", "Principal": "*",
        "Action": "kms:Decrypt", "Resource": "*"});
    key(&op, &ns, "public", via(json!({"policy": policy(anyone)}))).await;
    refused(&op, &ns, "public", "PolicyNotAllowed").await;

    key(
        &op,
        &ns,
        "bypass",
        via(json!({"bypassPolicyLockoutSafetyCheck": true})),
    )
    .await;
    let message = refused(&op, &ns, "bypass", "PolicyNotAllowed").await;
    assert!(
        message.contains("bypassPolicyLockoutSafetyCheck"),
        "{message}"
    );

    let user = json!({"Sid": "Users", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:role/app"}, "Action": "kms:Decrypt", "Resource": "*"});
    let alias = format!("alias/{ns}/orders");
    ready_key(
        &op,
        &ns,
        "inside",
        via(json!({"alias": alias, "policy": policy(user)})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_keyfleet_did_not_create_are_adopted_only_with_consent_and_retained() {
    let ns = unique("tenant");
    let Harness { op, kms, .. } = Harness::start(&ns).await;

    let theirs = external_key(&kms, vec![tag("owner", "another-team")]).await;
    key(&op, &ns, "grab", json!({"adoptKeyArn": theirs})).await;
    let message = wait_reason(&op.keys(&ns), "grab", "AdoptionRefused").await;
    let message = ready_message(&message);
    assert!(
        message.contains(&format!("keyfleet.dev/adopt-by={ns}/grab")),
        "{message}"
    );
    let tags = kms
        .list_resource_tags()
        .key_id(&theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().len(),
        1,
        "the refused key was touched: {tags:?}"
    );

    // The key's owner consents: adopted; deleting the AwsKey (no deletionPolicy) retains it.
    let consenting = external_key(&kms, vec![adopt_by(&ns, "adopted")]).await;
    let adopted = ready_key(&op, &ns, "adopted", json!({"adoptKeyArn": consenting}))
        .await
        .status
        .unwrap();
    assert_eq!(adopted.adopted, Some(true));
    assert_eq!(
        adopted.deletion_policy,
        Some(keyfleet::api::DeletionPolicy::Retain)
    );
    op.delete_key(&ns, "adopted").await;
    assert_eq!(key_state(&kms, &consenting).await, "Enabled");
    op.wait_events("adopted", &["KeyRetained"]).await;

    // A connection that allows unowned keys: adopted without the key's tag.
    let open = unique("open");
    let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
    spec.adoption = Some(keyfleet::api::AdoptionPolicy {
        allow_unowned_keys: true,
    });
    connection(&op.client, &open, spec).await;
    let plain = external_key(&kms, vec![]).await;
    ready_key(
        &op,
        &ns,
        "open",
        json!({"adoptKeyArn": plain, "kmsRef": {"name": open}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_is_no_longer_ours_is_left_alone() {
    let ns = unique("tenant");
    let Harness { op, kms, .. } = Harness::start(&ns).await;
    let arn = ready_key(&op, &ns, "taken", json!({"description": "before"}))
        .await
        .status
        .unwrap()
        .arn
        .clone()
        .unwrap();

    // Someone hands the key to another owner in AWS; then the spec changes.
    kms.tag_resource()
        .key_id(&arn)
        .tags(
            Tag::builder()
                .tag_key("keyfleet.dev/owner-uid")
                .tag_value("someone-else")
                .build()
                .unwrap(),
        )
        .tags(
            Tag::builder()
                .tag_key("keyfleet.dev/owner")
                .tag_value("other-team/thief")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    op.keys(&ns)
        .patch(
            "taken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"description": "after"}})),
        )
        .await
        .unwrap();
    let lost = wait_reason(&op.keys(&ns), "taken", "OwnershipLost").await;
    op.wait_events("taken", &["OwnershipLost"]).await;
    let message = ready_message(&lost);
    assert!(
        message.contains("owned by AwsKey other-team/thief"),
        "{message}"
    );
    assert_eq!(describe(&kms, &arn).await.description(), Some("before"));

    // Deleting the AwsKey releases it without scheduling the key's deletion.
    op.delete_key(&ns, "taken").await;
    assert_eq!(key_state(&kms, &arn).await, "Enabled");
}

/// What LocalStack cannot show (it accepts any policy): KMS refusing the intended policy of a
/// new key — here, on the strict KMS model (crates/kms-model), a statement without a Principal,
/// which KMS refuses as MalformedPolicyDocumentException. The key must stay unusable —
/// PendingImport, no GetParametersForImport, no ImportKeyMaterial — and report
/// `PolicyRejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_key_whose_policy_kms_refuses_gets_no_material() {
    let ModelHarness { model, op, .. } = ModelHarness::start([]).await;
    let client = op.client.clone();
    let ns = unique("tenant");
    let name = unique("rejected");
    create_material_secret(&client, &ns, &name, KeySpec::SymmetricDefault).await;
    let api = Api::<keyfleet::api::AwsKey>::namespaced(client.clone(), &ns);
    let refused_by_kms = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Root", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "NoPrincipal", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]});
    create_key(
        &api,
        &aws_key(
            &name,
            "eu-west-1",
            &name,
            json!({"policy": {"document": refused_by_kms.to_string()}}),
        ),
    )
    .await;
    let refused = wait_reason(&op.keys(&ns), &name, "PolicyRejected").await;
    let status = refused.status.unwrap();
    assert_eq!(status.key_state.as_deref(), Some("PendingImport"));
    let puts = model.requests_of("PutKeyPolicy");
    assert!(!puts.is_empty(), "the intended policy was never put");
    for put in &puts {
        assert_eq!(
            put.error.as_deref(),
            Some("MalformedPolicyDocumentException")
        );
        assert!(
            put.params["Policy"]
                .as_str()
                .unwrap()
                .contains("NoPrincipal")
        );
    }
    assert!(
        model.requests_of("GetParametersForImport").is_empty(),
        "GetParametersForImport before the policy was in place"
    );
    assert!(
        model.requests_of("ImportKeyMaterial").is_empty(),
        "material imported before the policy was in place"
    );
    let in_kms = model
        .key("eu-west-1", status.key_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(in_kms.key_state, "PendingImport");
    assert!(
        !in_kms.policy.contains("NoPrincipal"),
        "KMS kept its policy"
    );
}

/// Replica cleanup never guesses: it runs through the connection recorded in the replica's
/// status, and a key that connection cannot find counts as gone only when the key's ARN is in
/// the account the connection reaches. Two accounts are two KMS models; the connection names a
/// role in account B and B's endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_cleanup_uses_the_recorded_connection_and_never_mistakes_another_account() {
    use keyfleet::api::AwsReplicaKey;
    use keyfleet::kms::KmsClients;
    use kms_model::{KmsModel, ModelConfig};
    use support::replicas::{ReplicaScenario, wait_replica_ready};

    let account_a = KmsModel::start().await.unwrap();
    let account_b = KmsModel::start_with(ModelConfig {
        account_id: "222233334444".into(),
    })
    .await
    .unwrap();
    let mut custom = settings();
    custom.endpoints.allow_custom = true;
    let clients = KmsClients::from_config(support::localstack::sdk_config(&account_a.url()));
    let op = Operator::start_with(MemKube::new(), clients, custom);
    let connections = Api::<AwsKms>::all(op.client.clone());
    let conn = unique("account-b");
    // Points the connection at the role of `role_account` and at the KMS model behind `url`.
    let repoint = async |role_account: &str, url: String| {
        let patch = json!({"spec": {"roleArn": format!("arn:aws:iam::{role_account}:role/keyfleet"), "endpointUrl": url}});
        connections
            .patch(&conn, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    };
    let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
    spec.role_arn = Some("arn:aws:iam::222233334444:role/keyfleet".into());
    spec.endpoint_url = Some(account_b.url());
    connection(&op.client, &conn, spec).await;

    let ns = unique("tenant");
    let primary = unique("primary");
    let scenario = ReplicaScenario::new(
        &op,
        &ns,
        &primary,
        KeySpec::SymmetricDefault,
        json!({"kmsRef": {"name": conn}, "deletionPolicy": "Retain"}),
    )
    .await;
    let replica = format!("{primary}-eu");
    scenario
        .add_replica(&replica, "eu-west-1", json!({"deletionPolicy": "Delete"}))
        .await;
    let ready = wait_replica_ready(&op.client, &ns, &replica).await;
    let status = ready.status.unwrap();
    assert_eq!(status.connection.as_deref(), Some(conn.as_str()));
    let arn = status.arn.clone().unwrap();
    assert!(
        arn.starts_with("arn:aws:kms:eu-west-1:222233334444:key/"),
        "{arn}"
    );
    let key_id = arn.rsplit('/').next().unwrap().to_string();
    assert!(
        account_a.keys().is_empty(),
        "nothing was created in account A"
    );

    // The primary goes first (Retain): the replica now has nothing to follow but its status.
    op.delete_key(&ns, &primary).await;

    // The recorded connection is repointed to account A, where the replica does not exist.
    repoint("111122223333", account_a.url()).await;
    let replicas = Api::<AwsReplicaKey>::namespaced(op.client.clone(), &ns);
    replicas
        .delete(&replica, &DeleteParams::default())
        .await
        .unwrap();
    op.wait_events(&replica, &["KeyNotFoundInConnectionAccount"])
        .await;
    let message = op
        .events_for(&replica)
        .into_iter()
        .find(|(_, reason, _)| reason == "KeyNotFoundInConnectionAccount")
        .map(|(_, _, note)| note)
        .unwrap();
    assert!(
        message.contains(&arn) && message.contains("111122223333"),
        "{message}"
    );
    let stuck = replicas.get(&replica).await.unwrap();
    assert!(
        stuck.metadata.deletion_timestamp.is_some() && !stuck.finalizers().is_empty(),
        "the finalizer stays while the replica may still exist"
    );
    assert_eq!(
        account_b.key("eu-west-1", &key_id).unwrap().key_state,
        "Enabled",
        "the replica in account B is untouched"
    );
    assert!(
        account_a.requests_of("ScheduleKeyDeletion").is_empty()
            && account_b.requests_of("ScheduleKeyDeletion").is_empty(),
        "no deletion was scheduled anywhere"
    );

    // Restored: cleanup runs through the connection again and deletes the replica in B.
    repoint("222233334444", account_b.url()).await;
    wait_gone(&replicas, &replica).await;
    assert_eq!(
        account_b.key("eu-west-1", &key_id).unwrap().key_state,
        "PendingDeletion"
    );
    op.wait_events(&replica, &["KeyDeletionScheduled"]).await;
}

/// `--watch-namespaces`: the controller acts only in the namespaces it watches. A key in another
/// namespace, created first, gets no status, no KMS key, and its Secret is never read, while a
/// key created after it in a watched namespace becomes Ready (the proof that reconciles ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_acts_only_in_the_namespaces_it_watches() {
    let (watched, other) = (unique("watched"), unique("other"));
    let mut scoped = settings();
    scoped.watch_namespaces = vec![watched.clone()];
    let op = Operator::start_with(MemKube::new(), localstack_clients().await, scoped);
    key(&op, &other, "outside", json!({})).await;
    key(&op, &watched, "inside", json!({})).await;
    wait_ready(&op.keys(&watched), "inside").await;
    op.wait_events("inside", &["KeyReady"]).await;

    let outside = op.keys(&other).get("outside").await.unwrap();
    assert!(outside.status.is_none(), "{:?}", outside.status);
    assert!(
        outside.finalizers().is_empty(),
        "{:?}",
        outside.finalizers()
    );
    assert!(op.events_for("outside").is_empty());
    let uid = outside.metadata.uid.clone().unwrap();
    let kms = kms_client(DEFAULT_REGION).await;
    assert!(kms_keys_owned_by(&kms, &uid).await.is_empty());
    let secret_reads = op.kube.request_count(
        Some(http::Method::GET),
        &format!("/namespaces/{other}/secrets"),
    );
    assert_eq!(
        secret_reads, 0,
        "a Secret outside the watched namespaces was read"
    );
    let read_inside = op.kube.request_count(
        Some(http::Method::GET),
        &format!("/namespaces/{watched}/secrets"),
    );
    assert!(read_inside > 0, "the count sees Secret reads at all");
}
