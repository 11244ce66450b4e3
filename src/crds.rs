//! Generated CustomResourceDefinitions: the YAML `keyfleet crds` prints and `crds/` holds.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, Pkcs11Token};

/// Every CRD keyfleet serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        AwsKms::crd(),
        AwsKeyPolicyTemplate::crd(),
        AwsKey::crd(),
        AwsReplicaKey::crd(),
        Pkcs11Token::crd(),
    ]
}

/// File name under `crds/` for a CRD: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document (with a leading `---`).
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    // Multi-line descriptions as literal blocks; long one-line strings (CEL rules, messages)
    // stay on one line instead of being folded at 80 columns.
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 4096 };
    Ok(format!(
        "---\n{}",
        serde_saphyr::to_string_with_options(crd, options)?
    ))
}

/// Every CRD as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    all().iter().map(to_yaml).collect()
}
