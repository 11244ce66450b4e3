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
