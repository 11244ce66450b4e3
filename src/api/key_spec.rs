//! Key specs and key usages: the vocabulary shared by the CRDs, material parsing and KMS calls.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The type of KMS key (KMS `KeySpec`, CCKM `CustomerMasterKeySpec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum KeySpec {
    /// 256-bit AES-GCM key for encryption and decryption. The Secret holds exactly 32 raw bytes.
    #[serde(rename = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
    /// RSA key pair, 2048-bit modulus.
    #[serde(rename = "RSA_2048")]
    Rsa2048,
    /// RSA key pair, 3072-bit modulus.
    #[serde(rename = "RSA_3072")]
    Rsa3072,
    /// RSA key pair, 4096-bit modulus.
    #[serde(rename = "RSA_4096")]
    Rsa4096,
    /// Elliptic curve key pair on NIST P-256 (secp256r1).
    #[serde(rename = "ECC_NIST_P256")]
    EccNistP256,
    /// Elliptic curve key pair on NIST P-384 (secp384r1).
    #[serde(rename = "ECC_NIST_P384")]
    EccNistP384,
    /// Elliptic curve key pair on NIST P-521 (secp521r1).
    #[serde(rename = "ECC_NIST_P521")]
    EccNistP521,
    /// Elliptic curve key pair on secp256k1.
    #[serde(rename = "ECC_SECG_P256K1")]
    EccSecgP256k1,
    /// HMAC key for SHA-224 MACs.
    #[serde(rename = "HMAC_224")]
    Hmac224,
    /// HMAC key for SHA-256 MACs.
    #[serde(rename = "HMAC_256")]
    Hmac256,
    /// HMAC key for SHA-384 MACs.
    #[serde(rename = "HMAC_384")]
    Hmac384,
    /// HMAC key for SHA-512 MACs.
    #[serde(rename = "HMAC_512")]
    Hmac512,
}

/// The family a key spec belongs to; decides material format, wrapping and default usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Symmetric,
    Rsa,
    Ecc,
    Hmac,
}

impl KeySpec {
    /// Every supported key spec, in documentation order.
    pub const ALL: [KeySpec; 12] = [
        KeySpec::SymmetricDefault,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
        KeySpec::Hmac224,
        KeySpec::Hmac256,
        KeySpec::Hmac384,
        KeySpec::Hmac512,
    ];

    /// The name KMS uses for this spec (`SYMMETRIC_DEFAULT`, `RSA_2048`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
            KeySpec::EccNistP521 => "ECC_NIST_P521",
            KeySpec::EccSecgP256k1 => "ECC_SECG_P256K1",
            KeySpec::Hmac224 => "HMAC_224",
            KeySpec::Hmac256 => "HMAC_256",
            KeySpec::Hmac384 => "HMAC_384",
            KeySpec::Hmac512 => "HMAC_512",
        }
    }

    /// Parses the KMS name of a key spec.
    pub fn from_kms_name(name: &str) -> Option<KeySpec> {
        KeySpec::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn family(self) -> KeyFamily {
        match self {
            KeySpec::SymmetricDefault => KeyFamily::Symmetric,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => KeyFamily::Rsa,
            KeySpec::EccNistP256
            | KeySpec::EccNistP384
            | KeySpec::EccNistP521
            | KeySpec::EccSecgP256k1 => KeyFamily::Ecc,
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                KeyFamily::Hmac
            }
        }
    }

    /// The usage CCKM applies when none is given; RSA has none and must state one.
    pub fn default_usage(self) -> Option<KeyUsage> {
        match self.family() {
            KeyFamily::Symmetric => Some(KeyUsage::EncryptDecrypt),
            KeyFamily::Hmac => Some(KeyUsage::GenerateVerifyMac),
            KeyFamily::Ecc => Some(KeyUsage::SignVerify),
            KeyFamily::Rsa => None,
        }
    }

    /// The usages KMS allows for this spec.
    pub fn allowed_usages(self) -> &'static [KeyUsage] {
        match self.family() {
            KeyFamily::Symmetric => &[KeyUsage::EncryptDecrypt],
            KeyFamily::Hmac => &[KeyUsage::GenerateVerifyMac],
            KeyFamily::Ecc => &[KeyUsage::SignVerify],
            KeyFamily::Rsa => &[KeyUsage::EncryptDecrypt, KeyUsage::SignVerify],
        }
    }
}

// The cryptographic operations a key is for (KMS `KeyUsage`). A plain comment, not a doc
// comment: kube's schema for `Option<enum>` fields would replace the field's own description
// with this type's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum KeyUsage {
    /// Encrypt and decrypt (symmetric keys, RSA keys).
    #[serde(rename = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
    /// Sign and verify (RSA and ECC keys).
    #[serde(rename = "SIGN_VERIFY")]
    SignVerify,
    /// Generate and verify MACs (HMAC keys).
    #[serde(rename = "GENERATE_VERIFY_MAC")]
    GenerateVerifyMac,
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        }
    }

    pub fn from_kms_name(name: &str) -> Option<KeyUsage> {
        [
            KeyUsage::EncryptDecrypt,
            KeyUsage::SignVerify,
            KeyUsage::GenerateVerifyMac,
        ]
        .into_iter()
        .find(|u| u.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_names_round_trip_through_serde_and_lookup() {
        for spec in KeySpec::ALL {
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("\"{}\"", spec.as_str()));
            assert_eq!(KeySpec::from_kms_name(spec.as_str()), Some(spec));
        }
    }

    #[test]
    fn cckm_default_usages() {
        assert_eq!(
            KeySpec::SymmetricDefault.default_usage(),
            Some(KeyUsage::EncryptDecrypt)
        );
        assert_eq!(
            KeySpec::Hmac384.default_usage(),
            Some(KeyUsage::GenerateVerifyMac)
        );
        assert_eq!(
            KeySpec::EccSecgP256k1.default_usage(),
            Some(KeyUsage::SignVerify)
        );
        assert_eq!(KeySpec::Rsa3072.default_usage(), None);
        assert!(
            KeySpec::Rsa2048
                .allowed_usages()
                .contains(&KeyUsage::SignVerify)
        );
        assert!(
            !KeySpec::EccNistP256
                .allowed_usages()
                .contains(&KeyUsage::EncryptDecrypt)
        );
    }
}
