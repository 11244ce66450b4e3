//! Adopting an existing key on purpose (and refusing keys owned elsewhere), and material
//! expiry (`expiration.validTo`) applied, reported and changed, against LocalStack.

mod support;

use aws_sdk_kms::types::ExpirationModelType;
use kube::api::{Patch, PatchParams};

use serde_json::json;
use support::localstack::unique;
use support::operator::*;
use support::outside::{adopt_by, created_arn, external_key, tag};

const NS: &str = "team-a";

/// Applies an AwsKey `<prefix>-…` (and its Secret) that adopts `arn`; returns its name.
async fn adopting_key(op: &Operator, prefix: &str, arn: &str) -> String {
    let name = unique(prefix);
    let adopt = json!({"adoptKeyArn": arn});
    create_symmetric_key(op, NS, &name, adopt).await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unowned_key_is_adopted_by_arn_and_owned_keys_are_refused() {
    let Harness { op, kms, api } = Harness::start(NS).await;

    // Unowned EXTERNAL key, still waiting for material, consenting to this AwsKey: adopted,
    // imported, tagged.
    let name = unique("adopt");
    let arn = external_key(&kms, vec![tag("cost-center", "42"), adopt_by(NS, &name)]).await;
    let created = create_symmetric_key(
        &op,
        NS,
        &name,
        json!({"adoptKeyArn": arn, "tags": {"cost-center": "42"}}),
    )
    .await;
    let status = wait_ready(&api, &name).await.status.unwrap();
    assert_eq!(status.arn.as_deref(), Some(arn.as_str()));
    assert_eq!(status.key_state.as_deref(), Some("Enabled"));
    let tags = kms.list_resource_tags().key_id(&arn).send().await.unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.tag_key() == "keyfleet.dev/owner-uid"
                && Some(t.tag_value()) == created.metadata.uid.as_deref())
    );

    // Owned by another AwsKey of this cluster, or by another cluster: refused, untouched.
    let refusals = [
        (
            "other-awskey",
            vec![
                tag("keyfleet.dev/owner-uid", "someone-else"),
                tag("keyfleet.dev/owner", "team-b/payments"),
                tag("keyfleet.dev/cluster", CLUSTER_ID),
            ],
            "team-b/payments",
        ),
        (
            "other-cluster",
            vec![
                tag("keyfleet.dev/owner-uid", "x"),
                tag("keyfleet.dev/owner", "team-a/y"),
                tag("keyfleet.dev/cluster", "prod-eu"),
            ],
            "prod-eu",
        ),
    ];
    for (label, tags, needle) in refusals {
        let arn = external_key(&kms, tags).await;
        let name = adopting_key(&op, label, &arn).await;
        let refused = wait_reason(&api, &name, "AdoptionRefused").await;
        let message = refused.status.unwrap().conditions[0].message.clone();
        assert!(message.contains(needle), "{label}: {message}");
        let meta = describe(&kms, &arn).await;
        assert_eq!(
            meta.key_state().map(|s| s.as_str()),
            Some("PendingImport"),
            "{label}: the refused key was touched"
        );
        op.wait_events(&name, &["AdoptionRefused"]).await;
    }

    // A key with AWS-generated material cannot take imported material, even when it consents
    // to the adoption.
    let name = unique("native");
    let native = created_arn(kms.create_key().tags(adopt_by(NS, &name))).await;
    let adopt = json!({"adoptKeyArn": native});
    create_symmetric_key(&op, NS, &name, adopt).await;
    let incompatible = wait_reason(&api, &name, "KeyIncompatible").await;
    assert!(
        incompatible.status.unwrap().conditions[0]
            .message
            .contains("origin is AWS_KMS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_to_is_imported_reported_and_a_new_value_reimports_the_same_material() {
    let Harness { op, kms, api } = Harness::start(NS).await;
    let name = unique("expiring");
    let first = jiff::Timestamp::now().as_second() + 30 * 86_400;
    let first_ts = jiff::Timestamp::from_second(first).unwrap();
    create_symmetric_key(
        &op,
        NS,
        &name,
        json!({"expiration": {"validTo": first_ts.to_string()}}),
    )
    .await;
    let status = wait_ready(&api, &name).await.status.unwrap();
    assert_eq!(
        status.material_valid_to.clone().map(|t| t.0.as_second()),
        Some(first)
    );
    let key_id = status.key_id.clone().unwrap();
    let meta = describe(&kms, &key_id).await;
    assert_eq!(
        meta.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialExpires)
    );
    // LocalStack stores ValidTo but leaves it out of DescribeKey; the exact value sent with
    // ImportKeyMaterial is checked in key_lifecycle.rs (aws-smithy-mocks).

    let second = first + 30 * 86_400;
    let second_ts = jiff::Timestamp::from_second(second).unwrap();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"expiration": {"validTo": second_ts.to_string()}}})),
    )
    .await
    .unwrap();
    let updated = wait_for_within(
        &api,
        &name,
        std::time::Duration::from_secs(60),
        "the new validTo",
        |k| {
            k.status
                .as_ref()
                .and_then(|s| s.material_valid_to.as_ref())
                .map(|t| t.0.as_second())
                == Some(second)
        },
    )
    .await;
    assert_eq!(
        updated.status.clone().unwrap().material_fingerprint,
        status.material_fingerprint
    );
    let imports = op.event_count(&name, "MaterialImported");
    assert_eq!(
        imports, 2,
        "one import at creation, one for the new validTo"
    );
}
