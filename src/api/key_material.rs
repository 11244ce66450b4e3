//! Key material vocabulary of the CRDs: how material is encoded in its Secret, and how it is
//! wrapped for import (KMS `WrappingAlgorithm` and `WrappingKeySpec`). The checks that use them
//! live in `crate::material`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key_spec::{KeyFamily, KeySpec};

/// How the key material is encoded inside the Secret value (after Kubernetes' own base64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MaterialEncoding {
    /// The value is the material itself: raw bytes for symmetric/HMAC keys, PEM or DER for
    /// RSA/ECC private keys.
    #[default]
    Raw,
    /// The value is standard (or URL-safe) base64 of the raw bytes; whitespace is ignored.
    Base64,
    /// The value is hexadecimal text of the raw bytes; whitespace is ignored.
    Hex,
}

impl MaterialEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            MaterialEncoding::Raw => "Raw",
            MaterialEncoding::Base64 => "Base64",
            MaterialEncoding::Hex => "Hex",
        }
    }
}

// How material is encrypted for import (KMS `WrappingAlgorithm`; `GetParametersForImport`).
// A plain comment, not a doc comment: kube's schema for `Option<enum>` fields would replace the
// field's own description with this type's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WrappingAlgorithm {
    /// RSA-OAEP, SHA-256 and MGF1-SHA-256, directly over the material.
    #[serde(rename = "RSAES_OAEP_SHA_256")]
    RsaesOaepSha256,
    /// RSA-OAEP, SHA-1 and MGF1-SHA-1, directly over the material.
    #[serde(rename = "RSAES_OAEP_SHA_1")]
    RsaesOaepSha1,
    /// A fresh AES-256 key, RSA-OAEP-SHA-256 encrypted, then AES key wrap with padding (RFC 5649).
    #[serde(rename = "RSA_AES_KEY_WRAP_SHA_256")]
    RsaAesKeyWrapSha256,
    /// As `RSA_AES_KEY_WRAP_SHA_256` with RSA-OAEP-SHA-1 for the AES key.
    #[serde(rename = "RSA_AES_KEY_WRAP_SHA_1")]
    RsaAesKeyWrapSha1,
}

// The RSA wrapping key size requested from `GetParametersForImport` (KMS `WrappingKeySpec`).
// A plain comment for the same reason as `WrappingAlgorithm`'s.
// Each discriminant is the modulus size in bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WrappingKeySpec {
    /// 2048-bit RSA wrapping key.
    #[serde(rename = "RSA_2048")]
    Rsa2048 = 2048,
    /// 3072-bit RSA wrapping key.
    #[serde(rename = "RSA_3072")]
    Rsa3072 = 3072,
    /// 4096-bit RSA wrapping key.
    #[serde(rename = "RSA_4096")]
    Rsa4096 = 4096,
}

impl WrappingAlgorithm {
    pub const ALL: [WrappingAlgorithm; 4] = [
        WrappingAlgorithm::RsaesOaepSha256,
        WrappingAlgorithm::RsaesOaepSha1,
        WrappingAlgorithm::RsaAesKeyWrapSha256,
        WrappingAlgorithm::RsaAesKeyWrapSha1,
    ];

    /// The KMS name.
    pub fn as_str(self) -> &'static str {
        match self {
            WrappingAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            WrappingAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            WrappingAlgorithm::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
            WrappingAlgorithm::RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
        }
    }

    pub fn from_kms_name(name: &str) -> Option<WrappingAlgorithm> {
        WrappingAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
    }

    /// The default for a key spec: RSAES_OAEP_SHA_256 / RSA_2048 for symmetric and HMAC
    /// material, RSA_AES_KEY_WRAP_SHA_256 / RSA_4096 for RSA and ECC private keys.
    pub fn default_for(spec: KeySpec) -> (WrappingAlgorithm, WrappingKeySpec) {
        match spec.family() {
            KeyFamily::Symmetric | KeyFamily::Hmac => {
                (WrappingAlgorithm::RsaesOaepSha256, WrappingKeySpec::Rsa2048)
            }
            KeyFamily::Rsa | KeyFamily::Ecc => (
                WrappingAlgorithm::RsaAesKeyWrapSha256,
                WrappingKeySpec::Rsa4096,
            ),
        }
    }

    /// Whether the material is AES-key-wrapped (two-part output) rather than OAEP-encrypted.
    pub fn is_key_wrap(self) -> bool {
        matches!(
            self,
            WrappingAlgorithm::RsaAesKeyWrapSha256 | WrappingAlgorithm::RsaAesKeyWrapSha1
        )
    }
}

impl WrappingKeySpec {
    pub const ALL: [WrappingKeySpec; 3] = [
        WrappingKeySpec::Rsa2048,
        WrappingKeySpec::Rsa3072,
        WrappingKeySpec::Rsa4096,
    ];

    /// The KMS name.
    pub fn as_str(self) -> &'static str {
        match self {
            WrappingKeySpec::Rsa2048 => "RSA_2048",
            WrappingKeySpec::Rsa3072 => "RSA_3072",
            WrappingKeySpec::Rsa4096 => "RSA_4096",
        }
    }

    pub fn from_kms_name(name: &str) -> Option<WrappingKeySpec> {
        WrappingKeySpec::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// RSA modulus size in bits (the discriminant).
    pub fn bits(self) -> usize {
        self as usize
    }

    pub fn from_bits(bits: usize) -> Option<WrappingKeySpec> {
        WrappingKeySpec::ALL.into_iter().find(|s| s.bits() == bits)
    }
}
