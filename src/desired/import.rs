//! How material is wrapped for ImportKeyMaterial: the wrapping algorithm and wrapping key
//! spec, defaulted per key spec and checked to fit the material.

use crate::api::{KeyMaterialSource, KeySpec, WrappingAlgorithm, WrappingKeySpec};

use super::{SpecError, refuse};

/// How material is wrapped for ImportKeyMaterial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportSettings {
    pub algorithm: WrappingAlgorithm,
    pub wrapping_key_spec: WrappingKeySpec,
}

/// Wrapping algorithm and wrapping key spec, defaulted per key spec and checked to fit.
pub fn import_settings(
    source: &KeyMaterialSource,
    spec: KeySpec,
) -> Result<ImportSettings, SpecError> {
    let (default_alg, default_wks) = WrappingAlgorithm::default_for(spec);
    let algorithm = source.wrapping_algorithm.unwrap_or(default_alg);
    let wrapping_key_spec = source.wrapping_key_spec.unwrap_or(default_wks);
    algorithm
        .check_compatible(spec, wrapping_key_spec)
        .map_err(|e| {
            refuse(
                e.reason(),
                "spec.keyMaterial.wrappingAlgorithm",
                e.to_string(),
            )
        })?;
    Ok(ImportSettings {
        algorithm,
        wrapping_key_spec,
    })
}

/// The longest `KeyMaterialDescription` keyfleet sends (KMS's limit is 256 characters).
pub const MAX_MATERIAL_DESCRIPTION: usize = 256;

/// The `KeyMaterialDescription` of an import: `keyfleet <fingerprint> <source> for <kind>
/// <namespace>/<name>`, e.g. `keyfleet hmac-sha256:1f2e… Secret team-a/orders rv 4711 for
/// AwsKey team-a/orders`. Only non-secret facts: the material's fingerprint, where it was read
/// (a Secret and its resourceVersion, or a PKCS#11 token and label) and the object importing it.
/// Characters outside letters, digits and `: / _ . -` become `-`, runs of spaces collapse, and
/// the text is cut at [`MAX_MATERIAL_DESCRIPTION`] (the fingerprint comes first, so it always
/// survives).
pub fn material_description(
    fingerprint: &str,
    source: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> String {
    let text = format!("keyfleet {fingerprint} {source} for {kind} {namespace}/{name}");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c {
            c if c.is_ascii_alphanumeric() || ":/_.-".contains(c) => c,
            c if c.is_whitespace() => ' ',
            _ => '-',
        };
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(c);
    }
    out.truncate(MAX_MATERIAL_DESCRIPTION);
    out.trim_end().to_string()
}

/// The fingerprint a [`material_description`] starts with, if `description` is one of
/// keyfleet's.
pub fn described_fingerprint(description: &str) -> Option<&str> {
    description.strip_prefix("keyfleet ")?.split(' ').next()
}
