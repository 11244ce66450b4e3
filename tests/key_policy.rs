//! Key policies against LocalStack with the real controller wiring: the three forms of
//! `spec.policy` (document, shortcuts, template) applied and read back, a template change fanned
//! out to every key (and replica) that uses it, a deleted template reported, a policy that would
//! lock keyfleet out refused (unless bypassed), a hand-edited template policy put back.

mod support;

use std::time::Duration;

use keyfleet::api::{AwsKey, AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, KeySpec};
use keyfleet::policy::{self, KeyIdentity};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use memkube::MemKube;
use serde_json::{Value, json};
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::replicas::*;

const NS: &str = "policies";
/// LocalStack's account; its sts:GetCallerIdentity answers `arn:aws:iam::000000000000:root`.
const ACCOUNT: &str = "000000000000";

async fn key_policy(kms: &aws_sdk_kms::Client, key_id: &str) -> Value {
    let text = kms
        .get_key_policy()
        .key_id(key_id)
        .policy_name("default")
        .send()
        .await
        .expect("GetKeyPolicy")
        .policy()
        .expect("a policy")
        .to_string();
    serde_json::from_str(&text).expect("policy JSON")
}

async fn key_tags(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<(String, String)> {
    kms.list_resource_tags()
        .key_id(key_id)
        .send()
        .await
        .expect("ListResourceTags")
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
}

/// Polls GetKeyPolicy until `check` holds.
async fn wait_policy(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let policy = key_policy(kms, key_id).await;
        if check(&policy) {
            return policy;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key_id}: policy never became {what}: {policy:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn templates(client: &kube::Client) -> Api<AwsKeyPolicyTemplate> {
    Api::all(client.clone())
}

/// Creates an AwsKeyPolicyTemplate `<prefix>-…` of `spec`; returns its name.
async fn create_template(client: &kube::Client, prefix: &str, spec: Value) -> String {
    let name = unique(prefix);
    let spec: AwsKeyPolicyTemplateSpec = serde_json::from_value(spec).expect("template spec");
    templates(client)
        .create(
            &PostParams::default(),
            &AwsKeyPolicyTemplate::new(&name, spec),
        )
        .await
        .expect("create template");
    name
}

/// The `Principal.AWS` list of the statement with `sid`.
fn principals(policy: &Value, sid: &str) -> Vec<String> {
    let statement = policy["Statement"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["Sid"] == sid))
        .unwrap_or_else(|| panic!("no statement {sid} in {policy:#}"));
    match &statement["Principal"]["AWS"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        other => panic!("unexpected principal {other}"),
    }
}

async fn ready_key(api: &Api<AwsKey>, name: &str) -> (String, String, Option<String>) {
    let status = wait_ready(api, name).await.status.unwrap();
    (
        status.key_id.clone().unwrap(),
        status.arn.clone().unwrap(),
        status.policy_hash.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_policy_form_is_applied_read_back_and_hashed_in_status() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let template = create_template(
        &op.client,
        "tpl-doc",
        json!({"description": "root + readers, scoped to the key", "document": json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:${Partition}:iam::${AccountId}:root"}, "Action": "kms:*", "Resource": "*"},
                {"Sid": "Readers", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::${AccountId}:role/readers"},
                 "Action": "kms:DescribeKey", "Resource": "${KeyArn}",
                 "Condition": {"StringEquals": {"kms:CallerAccount": "${AccountId}", "aws:PrincipalTag/team": "${aws:PrincipalTag/team}"}}}
            ]}).to_string()}),
    )
    .await;

    let document = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"}
    ]});
    let forms = [
        (
            "doc",
            KeySpec::SymmetricDefault,
            json!({"document": document.to_string()}),
        ),
        (
            "short",
            KeySpec::EccNistP256,
            json!({
                "keyAdminsRoles": ["kms-admins"],
                "keyUsers": ["alice"],
                "keyUsersRoles": ["arn:aws:iam::111122223333:role/signer"],
                "externalAccounts": ["444455556666"]
            }),
        ),
        (
            "tpl",
            KeySpec::SymmetricDefault,
            json!({"templateRef": {"name": template}}),
        ),
    ];
    let mut names = vec![];
    for (form, spec, policy) in forms {
        let name = unique(&format!("policy-{form}"));
        create_key_with_material(&op, NS, &name, spec, json!({ "policy": policy })).await;
        names.push(name);
    }

    // A raw document: applied as written.
    let (doc_id, _, doc_hash) = ready_key(&api, &names[0]).await;
    let applied = key_policy(&kms, &doc_id).await;
    assert_eq!(applied, document);
    assert_eq!(doc_hash, Some(policy::hash(&applied)));

    // Shortcuts: the four statements, names rendered as ARNs of the key's account, signing
    // actions for an ECC key.
    let (short_id, _, short_hash) = ready_key(&api, &names[1]).await;
    let applied = key_policy(&kms, &short_id).await;
    assert_eq!(
        principals(&applied, "Enable IAM User Permissions"),
        [format!("arn:aws:iam::{ACCOUNT}:root")]
    );
    assert_eq!(
        principals(&applied, "Allow access for Key Administrators"),
        [format!("arn:aws:iam::{ACCOUNT}:role/kms-admins")]
    );
    let users = [
        format!("arn:aws:iam::{ACCOUNT}:user/alice"),
        "arn:aws:iam::111122223333:role/signer".to_string(),
        "arn:aws:iam::444455556666:root".to_string(),
    ];
    assert_eq!(principals(&applied, "Allow use of the key"), users);
    assert_eq!(
        principals(&applied, "Allow attachment of persistent resources"),
        users
    );
    let use_actions = applied["Statement"][2]["Action"].to_string();
    assert!(
        use_actions.contains("kms:Sign") && !use_actions.contains("kms:Decrypt"),
        "{use_actions}"
    );
    assert_eq!(short_hash, Some(policy::hash(&applied)));

    // A template: placeholders filled in for this key, IAM variables kept, the key tagged.
    let (tpl_id, tpl_arn, tpl_hash) = ready_key(&api, &names[2]).await;
    let applied = key_policy(&kms, &tpl_id).await;
    let readers = &applied["Statement"][1];
    assert_eq!(readers["Resource"], tpl_arn);
    assert_eq!(
        applied["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    assert_eq!(
        readers["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:role/readers")
    );
    assert_eq!(
        readers["Condition"]["StringEquals"]["kms:CallerAccount"],
        ACCOUNT
    );
    assert_eq!(
        readers["Condition"]["StringEquals"]["aws:PrincipalTag/team"],
        "${aws:PrincipalTag/team}"
    );
    assert!(
        key_tags(&kms, &tpl_id)
            .await
            .contains(&("keyfleet.dev/policy-template".into(), template.clone()))
    );
    assert_eq!(tpl_hash, Some(policy::hash(&applied)));
    // The same rendering `keyfleet render-policy` previews for this key's identity.
    let identity = KeyIdentity::from_arn(&tpl_arn).unwrap();
    let key = api.get(&names[2]).await.unwrap();
    let template_obj = templates(&op.client).get(&template).await.unwrap();
    let desired = keyfleet::desired::desired_policy(
        key.spec.policy.as_ref(),
        Some(&template_obj),
        KeySpec::SymmetricDefault,
        keyfleet::api::KeyUsage::EncryptDecrypt,
    )
    .unwrap()
    .unwrap();
    assert_eq!(desired.render(&identity), applied);
    // `keyfleet render-policy --key-arn` previews exactly what the key got: same hash.
    let dir = tempfile::tempdir().unwrap();
    let manifests = format!(
        "{}---\n{}",
        serde_saphyr::to_string(&template_obj).unwrap(),
        serde_saphyr::to_string(&key).unwrap()
    );
    std::fs::write(dir.path().join("policy.yaml"), manifests).unwrap();
    let mut render = std::process::Command::new(env!("CARGO_BIN_EXE_keyfleet"));
    render
        .args(["render-policy", "-o", "json", "--key-arn", &tpl_arn, "-f"])
        .arg(dir.path());
    let out = support::tools::run_ok(&mut render, "keyfleet render-policy");
    let previews: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(previews[0]["name"], names[2].as_str());
    assert_eq!(previews[0]["policyHash"].as_str(), tpl_hash.as_deref());
    assert_eq!(previews[0]["policy"], applied);
    for name in &names {
        op.wait_events(name, &["PolicyUpdated"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_change_reaches_every_key_and_replica_using_it_and_its_deletion_is_reported() {
    // Drift reads far apart: a template change must not wait for one.
    let mut slow_drift = settings();
    slow_drift.drift_interval = Duration::from_secs(600);
    let op = Operator::start_with(MemKube::new(), localstack_clients().await, slow_drift);
    let kms = kms_client(DEFAULT_REGION).await;
    let api = op.keys(NS);
    let template = create_template(
        &op.client,
        "tpl-fleet",
        json!({"keyUsersRoles": ["app-v1"]}),
    )
    .await;
    let uses = json!({"templateRef": {"name": template}});

    let plain = unique("fan-plain");
    let primary = unique("fan-mrk");
    let sym = KeySpec::SymmetricDefault;
    create_key_with_material(&op, NS, &plain, sym, json!({ "policy": uses })).await;
    let multi_region = json!({"multiRegion": true, "policy": uses});
    create_key_with_material(&op, NS, &primary, sym, multi_region).await;
    let replica_region = "eu-central-1";
    let replica_name = format!("{primary}-dr");
    create_replica(
        &op.client,
        NS,
        &replica(
            &replica_name,
            &primary,
            replica_region,
            json!({"policy": uses}),
        ),
    )
    .await;
    let (plain_id, _, _) = ready_key(&api, &plain).await;
    let (primary_id, _, _) = ready_key(&api, &primary).await;
    let replica_status = wait_replica_ready(&op.client, NS, &replica_name)
        .await
        .status
        .unwrap();
    let replica_id = replica_status.key_id.clone().unwrap();
    let replica_kms = kms_client(replica_region).await;
    let keys = [
        (&kms, &plain_id),
        (&kms, &primary_id),
        (&replica_kms, &replica_id),
    ];
    let user_role = |policy: &Value| principals(policy, "Allow use of the key");
    for (client, id) in keys {
        let applied = key_policy(client, id).await;
        assert_eq!(
            user_role(&applied),
            [format!("arn:aws:iam::{ACCOUNT}:role/app-v1")]
        );
    }
    assert!(
        key_tags(&replica_kms, &replica_id)
            .await
            .contains(&("keyfleet.dev/policy-template".into(), template.clone()))
    );

    // One edit of the template re-renders and re-applies the policy of all three keys.
    templates(&op.client)
        .patch(
            &template,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keyUsersRoles": ["app-v2"], "keyAdmins": ["carol"]}})),
        )
        .await
        .unwrap();
    for (client, id) in keys {
        let applied = wait_policy(client, id, "the v2 template", |p| {
            p.to_string().contains("role/app-v2")
        })
        .await;
        assert_eq!(
            user_role(&applied),
            [format!("arn:aws:iam::{ACCOUNT}:role/app-v2")]
        );
        assert_eq!(
            principals(&applied, "Allow access for Key Administrators"),
            [format!("arn:aws:iam::{ACCOUNT}:user/carol")]
        );
    }
    for name in [&plain, &primary] {
        let expected = policy::hash(&key_policy(&kms, &ready_key_id(&api, name).await).await);
        wait_for(&api, name, "the new policyHash", |k| {
            k.status.as_ref().and_then(|s| s.policy_hash.as_deref()) == Some(expected.as_str())
        })
        .await;
    }

    // Deleting the template in use is reported on each key, not silently ignored.
    templates(&op.client)
        .delete(&template, &Default::default())
        .await
        .unwrap();
    for name in [&plain, &primary] {
        let key = wait_reason(&api, name, "PolicyTemplateNotFound").await;
        let message = ready_message(&key);
        assert!(
            message.contains(&format!("AwsKeyPolicyTemplate {template} does not exist")),
            "{message}"
        );
        op.wait_events(name, &["PolicyTemplateNotFound"]).await;
    }
    wait_replica_reason(&op.client, NS, &replica_name, "PolicyTemplateNotFound").await;
    // The policy in KMS stays the last one applied.
    assert!(
        key_policy(&kms, &plain_id)
            .await
            .to_string()
            .contains("role/app-v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_that_would_lock_keyfleet_out_is_refused_unless_bypassed() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("lockout");
    // Management for another role only: keyfleet (the account root in LocalStack) could never
    // change, read or re-import this key again.
    let locking = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "OnlyOps", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/ops")}, "Action": "kms:*", "Resource": "*"}
    ]});
    let policy = json!({"policy": {"document": locking.to_string()}});
    create_symmetric_key(&op, NS, &name, policy).await;
    let key = wait_reason(&api, &name, "PolicyLockout").await;
    let message = ready_message(&key);
    let status = key.status.unwrap();
    assert!(
        message.contains("arn:aws:iam::000000000000:root") && message.contains("kms:PutKeyPolicy"),
        "{message}"
    );
    assert!(
        message.contains("bypassPolicyLockoutSafetyCheck"),
        "{message}"
    );
    op.wait_events(&name, &["PolicyLockout"]).await;
    // Refused before anything is created in KMS.
    assert_eq!(status.key_id, None);
    assert_eq!(status.policy_hash, None);
    let uid = key.metadata.uid.clone().unwrap();
    assert_eq!(kms_keys_owned_by(&kms, &uid).await, Vec::<String>::new());
    assert_eq!(op.event_count(&name, "PolicyUpdated"), 0);

    // Handing management over on purpose.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"bypassPolicyLockoutSafetyCheck": true}})),
    )
    .await
    .unwrap();
    let (key_id, _, hash) = ready_key(&api, &name).await;
    assert_eq!(key_policy(&kms, &key_id).await, locking);
    assert_eq!(hash, Some(policy::hash(&locking)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_policy_changed_by_hand_is_put_back() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let admins = json!({"keyAdminsRoles": ["kms-admins"]});
    let template = create_template(&op.client, "tpl-drift", admins).await;
    let name = unique("tpl-drift");
    let policy = json!({"policy": {"templateRef": {"name": template}}});
    create_key_with_material(&op, NS, &name, KeySpec::Hmac256, policy).await;
    let (key_id, _, hash) = ready_key(&api, &name).await;
    let rendered = key_policy(&kms, &key_id).await;
    kms.put_key_policy()
        .key_id(&key_id)
        .policy_name("default")
        .policy(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}]}).to_string())
        .send()
        .await
        .unwrap();
    let repaired = wait_policy(&kms, &key_id, "the template's policy again", |p| {
        *p == rendered
    })
    .await;
    assert_eq!(Some(policy::hash(&repaired)), hash);
    wait_for(&api, &name, "two PolicyUpdated events", |_| {
        op.event_count(&name, "PolicyUpdated") >= 2
    })
    .await;
}
