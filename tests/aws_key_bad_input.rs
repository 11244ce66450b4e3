//! Bad input gets a precise Ready=False reason and a Warning event, creates no KMS key, does not
//! loop, and recovers once fixed; a crash between CreateKey and the status write leaves one key.

mod support;

use std::time::Duration;

use http::Method;
use keyfleet::api::{
    AllowedNamespaces, AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, AwsKms, AwsKmsSpec, KeySpec,
};
use keyfleet_testkit::material::{SecretFormat, generate_secret_value, generate_secret_value_as};
use kube::Api;
use kube::api::PostParams;
use memkube::{Fault, MemKube};
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;

const NS: &str = "team-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_input_yields_its_reason_an_event_and_no_key() {
    let Harness { op, kms, api } = Harness::start(NS).await;

    // A connection that only allows eu-central-1.
    let kms_name = unique("eu-only");
    let connection = AwsKms::new(
        &kms_name,
        AwsKmsSpec {
            regions: vec!["eu-central-1".into()],
            ..AwsKmsSpec::new(AllowedNamespaces::all())
        },
    );
    Api::<AwsKms>::all(op.client.clone())
        .create(&PostParams::default(), &connection)
        .await
        .unwrap();

    // An alias that already points at a key keyfleet does not manage.
    let foreign_alias = format!("alias/{}", unique("foreign"));
    let foreign = kms.create_key().send().await.unwrap().key_metadata.unwrap();
    kms.create_alias()
        .alias_name(&foreign_alias)
        .target_key_id(foreign.key_id())
        .send()
        .await
        .unwrap();

    // A Secret that exists only in another namespace.
    let elsewhere = unique("elsewhere");
    create_material_secret(&op.client, "team-b", &elsewhere, KeySpec::SymmetricDefault).await;

    let p384 = generate_secret_value(KeySpec::EccNistP384);
    let p521 = generate_secret_value(KeySpec::EccNistP521);
    let rsa2048 = generate_secret_value(KeySpec::Rsa2048);
    let sym = generate_secret_value(KeySpec::SymmetricDefault);
    let sec1 = generate_secret_value_as(KeySpec::EccNistP256, SecretFormat::Sec1Pem).unwrap();
    let too_large = vec![b'k'; 64 * 1024 + 1];
    // A template the in-memory API admits although its CRD's CEL would not (no document and no
    // shortcuts): the operator's own check protects templates admitted before the rule existed.
    let broken_template = unique("broken-template");
    let empty = serde_json::from_value::<AwsKeyPolicyTemplateSpec>(json!({})).unwrap();
    let templates = Api::<AwsKeyPolicyTemplate>::all(op.client.clone());
    let broken = AwsKeyPolicyTemplate::new(&broken_template, empty);
    templates
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    // A policy document over KMS's 32 KB limit.
    let huge_policy = json!({"Version": "2012-10-17", "Statement": [], "Sid": "x".repeat(33_000)});
    type Case<'a> = (&'a str, Option<(&'a str, &'a [u8])>, serde_json::Value);
    let cases: Vec<Case> = vec![
        ("SecretNotFound", None, json!({})),
        ("SecretKeyMissing", Some(("other-key", &sym[..])), json!({})),
        (
            "MaterialWrongLength",
            Some(("material", &sym[..31])),
            json!({}),
        ),
        (
            "MaterialUnparseable",
            Some((
                "material",
                b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
            )),
            json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"}),
        ),
        (
            "MaterialWrongCurve",
            Some(("material", &p384[..])),
            json!({"keySpec": "ECC_NIST_P256"}),
        ),
        (
            "MaterialWrongSize",
            Some(("material", &rsa2048[..])),
            json!({"keySpec": "RSA_3072", "keyUsage": "ENCRYPT_DECRYPT"}),
        ),
        (
            "MaterialWrongKeyType",
            Some(("material", &sec1[..])),
            json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"}),
        ),
        (
            "RegionNotAllowed",
            Some(("material", &sym[..])),
            json!({"kmsRef": {"name": kms_name}}),
        ),
        (
            "KmsConnectionNotFound",
            Some(("material", &sym[..])),
            json!({"kmsRef": {"name": "no-such-connection"}}),
        ),
        (
            "KeyUsageRequired",
            Some(("material", &rsa2048[..])),
            json!({"keySpec": "RSA_2048"}),
        ),
        (
            "InvalidKeyUsage",
            Some(("material", &sym[..])),
            json!({"keyUsage": "SIGN_VERIFY"}),
        ),
        (
            "AliasInUse",
            Some(("material", &sym[..])),
            json!({"alias": foreign_alias}),
        ),
        (
            "ValidToInPast",
            Some(("material", &sym[..])),
            json!({"expiration": {"validTo": "2020-01-01T00:00:00Z"}}),
        ),
        (
            "ValidToTooFar",
            Some(("material", &sym[..])),
            json!({"expiration": {"validTo": "2999-01-01T00:00:00Z"}}),
        ),
        (
            "PolicyInvalid",
            Some(("material", &sym[..])),
            json!({"policy": {"document": "{\"Version\": "}}),
        ),
        (
            "PolicyPrincipalInvalid",
            Some(("material", &sym[..])),
            json!({"policy": {"keyUsersRoles": ["app", "arn:aws:iam::1234:role/short-account"]}}),
        ),
        (
            "PolicyTemplateNotFound",
            Some(("material", &sym[..])),
            json!({"policy": {"templateRef": {"name": "no-such-template"}}}),
        ),
        ("MaterialMissing", Some(("material", b"")), json!({})),
        ("MaterialTooLarge", Some(("material", &too_large[..])), json!({})),
        (
            "MaterialInvalidEncoding",
            Some(("material", b"not*base64!")),
            json!({"keyMaterial": {"secretRef": {"name": "", "key": "material"}, "encoding": "Base64"}}),
        ),
        (
            "MaterialNotPrivateKey",
            Some((
                "material",
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            )),
            json!({"keySpec": "ECC_NIST_P256"}),
        ),
        (
            "MaterialEncrypted",
            Some((
                "material",
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            )),
            json!({"keySpec": "ECC_NIST_P256"}),
        ),
        (
            "WrappingAlgorithmUnsupported",
            Some(("material", &rsa2048[..])),
            json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY",
                   "keyMaterial": {"secretRef": {"name": "", "key": "material"},
                                   "wrappingAlgorithm": "RSAES_OAEP_SHA_256"}}),
        ),
        (
            "WrappingKeyTooSmall",
            Some(("material", &p521[..])),
            json!({"keySpec": "ECC_NIST_P521",
                   "keyMaterial": {"secretRef": {"name": "", "key": "material"},
                                   "wrappingAlgorithm": "RSAES_OAEP_SHA_256",
                                   "wrappingKeySpec": "RSA_2048"}}),
        ),
        (
            "PolicyTemplateInvalid",
            Some(("material", &sym[..])),
            json!({"policy": {"templateRef": {"name": broken_template}}}),
        ),
        (
            "AdoptKeyNotFound",
            Some(("material", &sym[..])),
            json!({"adoptKeyArn": format!(
                "arn:aws:kms:{DEFAULT_REGION}:000000000000:key/00000000-0000-0000-0000-000000000000"
            )}),
        ),
        // The rows below are refused by the CRD's validation rules at admission, which the
        // in-memory API does not run: the operator's own check still protects objects admitted
        // before a rule existed (or by an API server that skipped it).
        (
            "MaterialSourceMissing",
            Some(("material", &sym[..])),
            json!({"keyMaterial": {}}),
        ),
        (
            "InvalidAlias",
            Some(("material", &sym[..])),
            json!({"alias": "alias/aws/reserved"}),
        ),
        (
            "InvalidTags",
            Some(("material", &sym[..])),
            json!({"tags": {"aws:owner": "me"}}),
        ),
        (
            "InvalidPendingWindow",
            Some(("material", &sym[..])),
            json!({"pendingWindowDays": 3}),
        ),
        (
            "InvalidRollingValidity",
            Some(("material", &sym[..])),
            json!({"expiration": {"rollingValidity": "400d"}}),
        ),
        (
            "RotationUnsupported",
            Some(("material", &rsa2048[..])),
            json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY",
                   "keyMaterial": {"secretRef": {"name": "", "key": "material"}, "onChange": "Rotate"}}),
        ),
        (
            "PolicyTooLarge",
            Some(("material", &sym[..])),
            json!({"policy": {"document": huge_policy.to_string()}}),
        ),
    ];

    let mut created = vec![];
    for (reason, secret, spec) in &cases {
        let name = unique(&reason.to_lowercase());
        if let Some((key, value)) = secret {
            create_secret(&op.client, NS, &name, key, value).await;
        }
        // A row that spells out keyMaterial leaves the Secret's name empty: it is the key's.
        let mut spec = spec.clone();
        if let Some(secret_name) = spec.pointer_mut("/keyMaterial/secretRef/name") {
            *secret_name = json!(name);
        }
        created.push((
            reason,
            name.clone(),
            create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, spec)).await,
        ));
    }
    // The cross-namespace case: same name as the Secret in team-b.
    let cross = create_key(
        &api,
        &aws_key(&elsewhere, DEFAULT_REGION, &elsewhere, json!({})),
    )
    .await;
    created.push((&"SecretNotFound", elsewhere.clone(), cross));

    for (reason, name, _) in &created {
        let key = wait_reason(&api, name, reason).await;
        let condition = ready_condition(&key.status.as_ref().unwrap().conditions).clone();
        assert!(!condition.message.is_empty(), "{reason}: empty message");
        assert!(
            key.status.as_ref().unwrap().key_id.is_none(),
            "{reason}: a key id was recorded"
        );
        op.wait_events(name, &[reason]).await;
        assert!(
            op.events_for(name)
                .iter()
                .any(|(t, r, _)| t == "Warning" && r == *reason),
            "{reason}: no Warning event"
        );
    }

    // Never read outside the AwsKey's namespace.
    assert_eq!(
        op.kube
            .request_count(Some(Method::GET), "/namespaces/team-b/secrets"),
        0
    );

    // No hot loop: once refused, each rests (a reconcile that writes nothing and waits for a
    // change) and nothing is retried until something changes.
    for (_, name, _) in &created {
        op.wait_resting("AwsKey", NS, name).await;
    }

    // No KMS key was created for any of them.
    let owners = kms_keys_by_owner(&kms).await;
    for (reason, _, key) in &created {
        let uid = key.metadata.uid.clone().unwrap();
        assert!(
            !owners.contains_key(&uid),
            "{reason}: a KMS key was created"
        );
    }

    // Nothing is lost: creating the missing Secret (a Secret watch event) makes the key Ready.
    let (_, missing, _) = &created[0];
    create_material_secret(&op.client, NS, missing, KeySpec::SymmetricDefault).await;
    wait_ready(&api, missing).await;
    // Likewise creating the missing policy template (a template watch event).
    let (_, uses_template, _) = created
        .iter()
        .find(|(reason, _, _)| **reason == "PolicyTemplateNotFound")
        .unwrap();
    let template = AwsKeyPolicyTemplate::new(
        "no-such-template",
        serde_json::from_value::<AwsKeyPolicyTemplateSpec>(json!({"keyUsersRoles": ["app"]}))
            .unwrap(),
    );
    Api::<AwsKeyPolicyTemplate>::all(op.client.clone())
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    wait_ready(&api, uses_template).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_killed_between_create_key_and_the_status_write_leaves_exactly_one_key() {
    let kube = MemKube::new();
    let kms = kms_client(DEFAULT_REGION).await;
    let name = unique("crash");
    // The first status write (the create intent) succeeds; every status write after it (the new
    // key id first) fails until the operator is killed, as if it died right after CreateKey.
    kube.inject_fault(
        Fault::new(
            Method::PATCH,
            format!("/awskeys/{name}/status"),
            500,
            usize::MAX,
        )
        .after(1),
    );
    let first = Operator::start(kube.clone()).await;
    let api = first.keys(NS);
    create_material_secret(&first.client, NS, &name, KeySpec::SymmetricDefault).await;
    let key = create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, json!({}))).await;
    let uid = key.metadata.uid.clone().unwrap();

    let status_writes =
        || kube.request_count(Some(Method::PATCH), &format!("/awskeys/{name}/status"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while status_writes() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator never reached the status write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed (not stopped: nothing in flight finishes), then the API server recovers.
    drop(first);
    kube.clear_faults();
    let orphaned = api.get(&name).await.unwrap().status.unwrap();
    assert!(
        orphaned.key_id.is_none(),
        "the key id reached the status; the crash was not simulated"
    );
    assert!(orphaned.create_started_at.is_some());
    assert_eq!(
        kms_keys_owned_by(&kms, &uid).await.len(),
        1,
        "CreateKey did not run before the crash"
    );

    // A fresh operator process finds the key by its owner tag instead of creating another.
    let second = Operator::start(kube.clone()).await;
    let ready = wait_ready(&second.keys(NS), &name).await.status.unwrap();
    let owned = kms_keys_owned_by(&kms, &uid).await;
    assert_eq!(
        owned,
        vec![ready.key_id.clone().unwrap()],
        "exactly one KMS key for the AwsKey"
    );
    assert!(ready.create_started_at.is_none());
}

/// An object the operator cannot read (here a key spec no version of keyfleet knows, as left by
/// a newer CRD or a hand edit past admission) is reported with `ObjectInvalid` and does not stop
/// the watch: the keys around it still converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_object_is_reported_and_does_not_stop_the_watch() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let op = Operator::start(MemKube::new()).await;
    let api = op.keys(NS);
    let broken = unique("broken");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kms.keyfleet.dev",
        "v1alpha1",
        "AwsKey",
    ));
    let raw: Api<DynamicObject> = Api::namespaced_with(op.client.clone(), NS, &resource);
    let mut object = DynamicObject::new(&broken, &resource);
    object.data = json!({"spec": {
        "region": DEFAULT_REGION,
        "keySpec": "QUANTUM_9000",
        "keyMaterial": {"secretRef": {"name": broken, "key": "material"}},
    }});
    raw.create(&PostParams::default(), &object).await.unwrap();

    let fine = unique("after-broken");
    create_symmetric_key(&op, NS, &fine, json!({})).await;
    wait_ready(&api, &fine).await;
    op.wait_events(&broken, &["ObjectInvalid"]).await;
    let (_, _, note) = op
        .events_for(&broken)
        .into_iter()
        .find(|(_, reason, _)| reason == "ObjectInvalid")
        .unwrap();
    assert!(note.contains("QUANTUM_9000"), "{note}");
}
