//! The seam between the import path and wherever material lives: a Secret today, an HSM next.

use super::{KeyMaterial, MaterialError, MaterialFingerprint};
use crate::api::KeySpec;
use crate::api::{WrappingAlgorithm, WrappingKeySpec};

/// Material that can be wrapped for `ImportKeyMaterial` and compared with what KMS holds,
/// without the import path or the verifier knowing where it lives. A source that keeps its
/// plaintext elsewhere (an HSM) wraps there and returns only ciphertext. `Debug` must never
/// print material.
pub trait ImportableMaterial: Send + Sync + std::fmt::Debug {
    /// The key spec this material was checked against.
    fn spec(&self) -> KeySpec;
    /// A stable, non-secret identifier of the material (recorded in status).
    fn fingerprint(&self) -> MaterialFingerprint;
    /// Whether `algorithm` with a `wrapping_key_spec` key can carry this material.
    fn check_wrapping(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<(), MaterialError>;
    /// The material encrypted under KMS's wrapping public key (DER SubjectPublicKeyInfo).
    fn wrap(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_public_key_der: &[u8],
    ) -> Result<Vec<u8>, MaterialError>;
    /// The DER SubjectPublicKeyInfo of an RSA/ECC key (what `GetPublicKey` returns).
    fn public_key_der(&self) -> Option<Vec<u8>>;
    /// HMAC of `message` with an HMAC key (what `GenerateMac` returns); None otherwise.
    fn hmac(&self, message: &[u8]) -> Option<Vec<u8>>;
    /// The wrapping algorithm and wrapping key spec to use when the resource names none: a
    /// source that cannot do every algorithm (an HSM without SHA-256 OAEP) says which it can.
    /// None: the key spec's default.
    fn preferred_wrapping(&self) -> Option<(WrappingAlgorithm, WrappingKeySpec)> {
        None
    }
}

impl ImportableMaterial for KeyMaterial {
    fn spec(&self) -> KeySpec {
        KeyMaterial::spec(self)
    }
    fn fingerprint(&self) -> MaterialFingerprint {
        KeyMaterial::fingerprint(self)
    }
    fn check_wrapping(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<(), MaterialError> {
        KeyMaterial::check_wrapping(self, algorithm, wrapping_key_spec)
    }
    fn wrap(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_public_key_der: &[u8],
    ) -> Result<Vec<u8>, MaterialError> {
        KeyMaterial::wrap(self, algorithm, wrapping_public_key_der)
    }
    fn public_key_der(&self) -> Option<Vec<u8>> {
        KeyMaterial::public_key_der(self)
    }
    fn hmac(&self, message: &[u8]) -> Option<Vec<u8>> {
        KeyMaterial::hmac(self, message)
    }
}
