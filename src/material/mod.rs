//! Key material: the only code that touches secret bytes — parsing, checking, fingerprinting and wrapping.
//!
//! Flow: the controller reads a Secret value, calls [`KeyMaterial::from_secret_value`] (which
//! decodes, parses and checks it against the [`KeySpec`]), records [`KeyMaterial::fingerprint`]
//! in status, and hands [`KeyMaterial::wrap`] the wrapping key from `GetParametersForImport`.
//! Secret bytes live only in [`Zeroizing`] buffers and never appear in `Debug` output or errors.

// `fuzzing` is the cfg `cargo fuzz` sets (fuzz/); the fuzzing module is not in the shipped binary.
#![allow(unexpected_cfgs)]

mod armor;
mod buffer;
mod der;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod generate;
mod parse;
pub mod pkcs11;
mod source;
#[cfg(test)]
mod tests;
mod wrap;

pub use generate::generate_secret_value;
pub use source::ImportableMaterial;

use crate::api::{KeyFamily, KeySpec, MaterialEncoding, WrappingAlgorithm};
use aws_lc_rs::{digest, hmac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// The largest Secret value the material parsers read, in bytes. KMS key material is at most a
/// few KB (a 4096-bit RSA private key is about 3.3 KB as PKCS#8 PEM); anything larger is refused
/// before it is decoded, so a hostile value cannot make a reconcile expensive.
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;

/// Why key material was refused. Messages say what to fix and never contain material bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaterialError {
    /// The Secret value (or its decoded form) is empty.
    #[error("the Secret value is empty; it must hold the key material")]
    Empty,
    /// The value is larger than any key material ([`MAX_SECRET_VALUE_BYTES`]); not decoded.
    #[error(
        "the Secret value is {actual} bytes, more than the {limit} bytes keyfleet reads as key \
         material (a 4096-bit RSA private key is about 3.3 KB as PEM); store only the key"
    )]
    TooLarge { limit: usize, actual: usize },
    /// The value is not valid text of the declared encoding.
    #[error(
        "the Secret value is not valid {encoding}: {detail}; fix the value or the declared encoding"
    )]
    InvalidEncoding {
        encoding: MaterialEncoding,
        detail: String,
    },
    /// Symmetric or HMAC material of a length KMS does not import for this spec.
    #[error(
        "{spec} key material must be {} bytes, but the decoded Secret value is {actual} bytes{}",
        length_range(*min, *max),
        hint.map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    WrongLength {
        spec: KeySpec,
        min: usize,
        max: usize,
        actual: usize,
        hint: Option<&'static str>,
    },
    /// Not recognisable as PEM or DER private key material.
    #[error("the Secret value is not a usable private key: {detail}")]
    Unparseable { detail: String },
    /// A well-formed key object that is not a private key (public key, certificate, ...).
    #[error(
        "the Secret value holds {found}, not a private key; store the unencrypted private key \
         (PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`, or DER)"
    )]
    NotPrivateKey { found: &'static str },
    /// A password-protected private key.
    #[error(
        "the private key is encrypted ({format}); KMS needs the plain key: decrypt it, e.g. \
         `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem`"
    )]
    Encrypted { format: &'static str },
    /// The private key's algorithm does not match the key spec's family.
    #[error(
        "key spec {spec} needs an {expected} private key, but the Secret holds a private key of type {actual}"
    )]
    WrongKeyType {
        spec: KeySpec,
        expected: &'static str,
        actual: String,
    },
    /// An RSA key of another modulus size.
    #[error(
        "key spec {spec} needs a {expected_bits}-bit RSA key, but the Secret holds a \
         {actual_bits}-bit RSA key; use a matching spec or key"
    )]
    WrongSize {
        spec: KeySpec,
        expected_bits: usize,
        actual_bits: usize,
    },
    /// An EC key on another curve.
    #[error(
        "key spec {spec} needs an EC key on {expected}, but the Secret holds a key on {actual}"
    )]
    WrongCurve {
        spec: KeySpec,
        expected: &'static str,
        actual: String,
    },
    /// The wrapping algorithm cannot carry this kind of material at all.
    #[error("wrapping algorithm {algorithm} cannot wrap {spec} key material: {detail}")]
    WrappingUnsupported {
        spec: KeySpec,
        algorithm: WrappingAlgorithm,
        detail: &'static str,
    },
    /// RSA-OAEP cannot carry material this long under this wrapping key size.
    #[error(
        "{algorithm} with a {wrapping_key_bits}-bit wrapping key carries at most {max} bytes, \
         but the {spec} import material is {actual} bytes; use a larger wrapping key spec or \
         RSA_AES_KEY_WRAP_SHA_256"
    )]
    WrappingKeyTooSmall {
        spec: KeySpec,
        algorithm: WrappingAlgorithm,
        wrapping_key_bits: usize,
        max: usize,
        actual: usize,
    },
    /// The public key from `GetParametersForImport` is not a usable RSA wrapping key.
    #[error("the wrapping public key is not usable: {detail}")]
    InvalidWrappingKey { detail: String },
    /// A cryptographic primitive failed (should not happen).
    #[error("wrapping the key material failed: {detail}")]
    WrapFailed { detail: &'static str },
    /// Generating material for `keyMaterial.generate` failed (should not happen).
    #[error("generating key material failed: {detail}")]
    GenerationFailed { detail: &'static str },
    /// The PKCS#11 token refused or failed (material kept in an HSM).
    #[error(transparent)]
    Pkcs11(#[from] pkcs11::Pkcs11Error),
}

fn length_range(min: usize, max: usize) -> String {
    if min == max {
        format!("exactly {min}")
    } else {
        format!("{min} to {max}")
    }
}

impl MaterialError {
    /// A stable CamelCase reason for Kubernetes conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            MaterialError::Empty => "MaterialMissing",
            MaterialError::TooLarge { .. } => "MaterialTooLarge",
            MaterialError::InvalidEncoding { .. } => "MaterialInvalidEncoding",
            MaterialError::WrongLength { .. } => "MaterialWrongLength",
            MaterialError::Unparseable { .. } => "MaterialUnparseable",
            MaterialError::NotPrivateKey { .. } => "MaterialNotPrivateKey",
            MaterialError::Encrypted { .. } => "MaterialEncrypted",
            MaterialError::WrongKeyType { .. } => "MaterialWrongKeyType",
            MaterialError::WrongSize { .. } => "MaterialWrongSize",
            MaterialError::WrongCurve { .. } => "MaterialWrongCurve",
            MaterialError::WrappingUnsupported { .. } => "WrappingAlgorithmUnsupported",
            MaterialError::WrappingKeyTooSmall { .. } => "WrappingKeyTooSmall",
            MaterialError::InvalidWrappingKey { .. } => "WrappingKeyInvalid",
            MaterialError::WrapFailed { .. } => "WrappingFailed",
            MaterialError::GenerationFailed { .. } => "GenerationFailed",
            MaterialError::Pkcs11(e) => e.reason(),
        }
    }

    /// Whether fixing the Secret (rather than the resource's wrapping settings) resolves this error.
    pub fn is_material_problem(&self) -> bool {
        self.reason().starts_with("Material")
    }
}

/// A stable, non-secret identifier of key material, for status and change detection.
///
/// * RSA/ECC: `sha256:` + the first 16 bytes (hex) of SHA-256 over the public key's DER
///   `SubjectPublicKeyInfo` — the same bytes KMS `GetPublicKey` returns, so it can be checked
///   with `openssl pkey -pubout -outform der | sha256sum`, and it does not depend on the private
///   key's encoding (PKCS#1, SEC1 or PKCS#8 give the same fingerprint).
/// * Symmetric/HMAC: `hmac-sha256:` + the first 16 bytes (hex) of
///   HMAC-SHA256(key = material, message = `keyfleet/material-fingerprint/v1`). Keying the MAC
///   with the material keeps it one-way and domain-separated from every other use of the key;
///   like any deterministic fingerprint it lets someone confirm a *guessed* key, which is
///   infeasible for random material of 224 bits or more.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct MaterialFingerprint(String);

/// The message MACed to fingerprint symmetric and HMAC material.
pub const FINGERPRINT_LABEL: &[u8] = b"keyfleet/material-fingerprint/v1";

/// Bytes of digest shown in a fingerprint.
const FINGERPRINT_BYTES: usize = 16;

impl MaterialFingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:` + SHA-256 of a DER SubjectPublicKeyInfo (RSA/ECC, whatever holds the key).
    fn of_public_key(spki: &[u8]) -> Self {
        let digest = digest::digest(&digest::SHA256, spki);
        MaterialFingerprint(format!(
            "sha256:{}",
            hex::encode(&digest.as_ref()[..FINGERPRINT_BYTES])
        ))
    }

    /// `<algorithm>:` + a MAC of [`FINGERPRINT_LABEL`] under the material.
    fn of_label_mac(algorithm: &str, tag: &[u8]) -> Self {
        let shown = &tag[..tag.len().min(FINGERPRINT_BYTES)];
        MaterialFingerprint(format!("{algorithm}:{}", hex::encode(shown)))
    }

    /// `kcv:` + a PKCS#11 token's CKA_CHECK_VALUE of a key.
    fn of_check_value(kcv: &[u8]) -> Self {
        MaterialFingerprint(format!("kcv:{}", hex::encode(kcv)))
    }

    /// Wraps a fingerprint read back from status (not validated).
    pub fn from_status(value: impl Into<String>) -> Self {
        MaterialFingerprint(value.into())
    }
}

impl fmt::Display for MaterialFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checked key material for one key spec: exactly the bytes `ImportKeyMaterial` expects
/// (32 bytes for SYMMETRIC_DEFAULT, raw bytes for HMAC, PKCS#8 DER for RSA/ECC).
///
/// Not `Clone`; the bytes are zeroized on drop and never printed.
pub struct KeyMaterial {
    spec: KeySpec,
    bytes: Zeroizing<Vec<u8>>,
    /// DER `SubjectPublicKeyInfo` for RSA/ECC (not secret).
    public_key_der: Option<Vec<u8>>,
}

impl KeyMaterial {
    /// Decodes, parses and checks a Secret value for `spec`; see [`MaterialError`] for refusals.
    pub fn from_secret_value(
        spec: KeySpec,
        encoding: MaterialEncoding,
        value: &[u8],
    ) -> Result<KeyMaterial, MaterialError> {
        parse::from_secret_value(spec, encoding, value)
    }

    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The exact plaintext bytes to import (before wrapping). Secret: do not log or persist.
    pub fn import_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The DER `SubjectPublicKeyInfo` of an RSA/ECC key (what KMS `GetPublicKey` returns).
    pub fn public_key_der(&self) -> Option<Vec<u8>> {
        self.public_key_der.clone()
    }

    /// HMAC of `message` with this key and the spec's SHA-2 digest; `None` unless an HMAC spec.
    /// Equals what KMS `GenerateMac` returns for the imported key.
    pub fn hmac(&self, message: &[u8]) -> Option<Vec<u8>> {
        let algorithm = match self.spec {
            KeySpec::Hmac224 => hmac::HMAC_SHA224,
            KeySpec::Hmac256 => hmac::HMAC_SHA256,
            KeySpec::Hmac384 => hmac::HMAC_SHA384,
            KeySpec::Hmac512 => hmac::HMAC_SHA512,
            _ => return None,
        };
        let key = hmac::Key::new(algorithm, &self.bytes);
        Some(hmac::sign(&key, message).as_ref().to_vec())
    }

    /// A stable, non-secret identifier of this material (see [`MaterialFingerprint`]).
    pub fn fingerprint(&self) -> MaterialFingerprint {
        match &self.public_key_der {
            Some(spki) => MaterialFingerprint::of_public_key(spki),
            None => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.bytes);
                let tag = hmac::sign(&key, FINGERPRINT_LABEL);
                MaterialFingerprint::of_label_mac("hmac-sha256", tag.as_ref())
            }
        }
    }

    fn new(spec: KeySpec, bytes: Zeroizing<Vec<u8>>, public_key_der: Option<Vec<u8>>) -> Self {
        debug_assert_eq!(
            public_key_der.is_some(),
            matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc)
        );
        KeyMaterial {
            spec,
            bytes,
            public_key_der,
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("spec", &format_args!("{}", self.spec))
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// The length range KMS accepts for imported symmetric/HMAC material; `None` for RSA/ECC.
pub fn allowed_length(spec: KeySpec) -> Option<(usize, usize)> {
    match spec {
        KeySpec::SymmetricDefault => Some((32, 32)),
        KeySpec::Hmac224 => Some((28, 64)),
        KeySpec::Hmac256 => Some((32, 64)),
        KeySpec::Hmac384 => Some((48, 128)),
        KeySpec::Hmac512 => Some((64, 128)),
        _ => None,
    }
}

/// The RSA modulus size of an RSA spec.
pub(crate) fn rsa_bits(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::Rsa2048 => Some(2048),
        KeySpec::Rsa3072 => Some(3072),
        KeySpec::Rsa4096 => Some(4096),
        _ => None,
    }
}
