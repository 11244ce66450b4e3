//! KMS keys and material made outside keyfleet, behind its back: what the adoption,
//! tenancy and material-mismatch tests start from.

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::create_key::builders::CreateKeyFluentBuilder;
use aws_sdk_kms::types::{KeyState, OriginType, Tag};
use keyfleet::api::{KeySpec, MaterialEncoding, WrappingAlgorithm};
use keyfleet::kms::execute::{ImportInput, import_material};
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;

/// One KMS tag.
pub fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().tag_key(k).tag_value(v).build().unwrap()
}

/// The tag by which a key consents to adoption by the AwsKey `<ns>/<name>`.
pub fn adopt_by(ns: &str, name: &str) -> Tag {
    tag("keyfleet.dev/adopt-by", &format!("{ns}/{name}"))
}

/// The ARN of the key `request` creates.
pub async fn created_arn(request: CreateKeyFluentBuilder) -> String {
    let created = request.send().await.unwrap();
    created.key_metadata.unwrap().arn().unwrap().to_string()
}

/// An EXTERNAL-origin key (waiting for material) with `tags`; its ARN.
pub async fn external_key(kms: &Client, tags: Vec<Tag>) -> String {
    created_arn(
        kms.create_key()
            .origin(OriginType::External)
            .set_tags(Some(tags)),
    )
    .await
}

/// An EXTERNAL-origin multi-region primary with `tags`; its ARN.
pub async fn external_multi_region_key(kms: &Client, tags: Vec<Tag>) -> String {
    let request = kms
        .create_key()
        .origin(OriginType::External)
        .multi_region(true);
    created_arn(request.set_tags(Some(tags))).await
}

/// Imports fresh `spec` material, generated here and held by no Secret, into `key_id` with the
/// default wrapping.
pub async fn import_other_material(kms: &Client, key_id: &str, spec: KeySpec) {
    let value = generate_secret_value(spec);
    let material = KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, &value).unwrap();
    let (algorithm, wrapping_key_spec) = WrappingAlgorithm::default_for(spec);
    let input = ImportInput {
        material: &material,
        algorithm,
        wrapping_key_spec,
        description: None,
    };
    import_material(kms, key_id, &input, None).await.unwrap();
}

/// An EXTERNAL key (multi-Region primary if `multi_region`) that consents to adoption by the
/// AwsKey `<ns>/<name>` and holds fresh SYMMETRIC_DEFAULT material no Secret holds
/// ([`import_other_material`]); its ARN.
pub async fn adoptable_key_with_other_material(
    kms: &Client,
    ns: &str,
    name: &str,
    multi_region: bool,
) -> String {
    let tags = vec![adopt_by(ns, name)];
    let arn = if multi_region {
        external_multi_region_key(kms, tags).await
    } else {
        external_key(kms, tags).await
    };
    import_other_material(kms, &arn, KeySpec::SymmetricDefault).await;
    arn
}

/// ScheduleKeyDeletion with the shortest waiting period (7 days); the state KMS reports.
pub async fn schedule_deletion(kms: &Client, key_id: &str) -> Option<KeyState> {
    let out = kms
        .schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    out.key_state
}

/// DeleteImportedKeyMaterial: the key goes to PendingImport.
pub async fn delete_material(kms: &Client, key_id: &str) {
    kms.delete_imported_key_material()
        .key_id(key_id)
        .send()
        .await
        .expect("DeleteImportedKeyMaterial");
}
