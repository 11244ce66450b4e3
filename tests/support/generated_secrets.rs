//! Secrets keyfleet created for `keyMaterial.generate`: what every one of them must look like.

use k8s_openapi::api::core::v1::Secret;

/// Checks a Secret keyfleet generated for the AwsKey `for_key` — immutable, labelled
/// `app.kubernetes.io/managed-by: keyfleet` and `keyfleet.dev/generated-for`, without owner
/// reference (deleting the AwsKey never deletes the material) — and returns its value under
/// `material`, remembered for the operator's leak scan.
pub fn generated_material(secret: &Secret, for_key: &str) -> Vec<u8> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    assert_eq!(secret.immutable, Some(true), "{name}: immutable");
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("keyfleet"),
        "{name}"
    );
    assert_eq!(
        labels.get("keyfleet.dev/generated-for").map(String::as_str),
        Some(for_key),
        "{name}"
    );
    assert!(
        secret
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty),
        "{name}: deleting the AwsKey must never delete the material"
    );
    material_of(secret)
}

/// The value of a Secret under `material`, remembered for the operator's leak scan.
pub fn material_of(secret: &Secret) -> Vec<u8> {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get("material"))
        .expect("key material")
        .0
        .clone();
    keyfleet_testkit::leak::remember(&value);
    value
}
