//! Real crypto behind the model: key specs, RSA wrapping keys and unwrapping, checks of
//! imported material, KeyMaterialId derivation, and the material a key computes with.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use crate::error::{KmsError, KmsResult, incorrect_material, validation};

/// What a key spec is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Symmetric,
    Hmac,
    Rsa,
    Ecc,
}

pub const KEY_SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
];

pub fn family(spec: &str) -> Family {
    if spec.starts_with("RSA_") {
        Family::Rsa
    } else if spec.starts_with("ECC_") {
        Family::Ecc
    } else if spec.starts_with("HMAC_") {
        Family::Hmac
    } else {
        Family::Symmetric
    }
}

/// The key usages a spec allows, the first being the default.
pub fn usages(spec: &str) -> &'static [&'static str] {
    match family(spec) {
        Family::Symmetric => &["ENCRYPT_DECRYPT"],
        Family::Rsa => &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        Family::Ecc => &["SIGN_VERIFY", "KEY_AGREEMENT"],
        Family::Hmac => &["GENERATE_VERIFY_MAC"],
    }
}

pub fn encryption_algorithms(spec: &str, usage: &str) -> &'static [&'static str] {
    match (family(spec), usage) {
        (Family::Symmetric, _) => &["SYMMETRIC_DEFAULT"],
        (Family::Rsa, "ENCRYPT_DECRYPT") => &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
        _ => &[],
    }
}

pub fn signing_algorithms(spec: &str, usage: &str) -> &'static [&'static str] {
    if usage != "SIGN_VERIFY" {
        return &[];
    }
    match spec {
        "ECC_NIST_P256" | "ECC_SECG_P256K1" => &["ECDSA_SHA_256"],
        "ECC_NIST_P384" => &["ECDSA_SHA_384"],
        "ECC_NIST_P521" => &["ECDSA_SHA_512"],
        s if family(s) == Family::Rsa => &[
            "RSASSA_PSS_SHA_256",
            "RSASSA_PSS_SHA_384",
            "RSASSA_PSS_SHA_512",
            "RSASSA_PKCS1_V1_5_SHA_256",
            "RSASSA_PKCS1_V1_5_SHA_384",
            "RSASSA_PKCS1_V1_5_SHA_512",
        ],
        _ => &[],
    }
}

pub fn mac_algorithm(spec: &str) -> Option<&'static str> {
    Some(match spec {
        "HMAC_224" => "HMAC_SHA_224",
        "HMAC_256" => "HMAC_SHA_256",
        "HMAC_384" => "HMAC_SHA_384",
        "HMAC_512" => "HMAC_SHA_512",
        _ => return None,
    })
}

fn ecdsa_algorithm(spec: &str) -> Option<&'static EcdsaSigningAlgorithm> {
    Some(match spec {
        "ECC_NIST_P256" => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        "ECC_NIST_P384" => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        "ECC_NIST_P521" => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        "ECC_SECG_P256K1" => &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
        _ => return None,
    })
}

/// Lengths of symmetric and HMAC material KMS imports.
pub fn allowed_length(spec: &str) -> Option<(usize, usize)> {
    Some(match spec {
        "SYMMETRIC_DEFAULT" => (32, 32),
        "HMAC_224" => (28, 64),
        "HMAC_256" => (32, 64),
        "HMAC_384" => (48, 128),
        "HMAC_512" => (64, 128),
        _ => return None,
    })
}

/// The RSA wrapping algorithms of GetParametersForImport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrappingAlgorithm {
    RsaesOaepSha1,
    RsaesOaepSha256,
    RsaAesKeyWrapSha1,
    RsaAesKeyWrapSha256,
}

impl WrappingAlgorithm {
    pub fn parse(name: &str) -> KmsResult<WrappingAlgorithm> {
        Ok(match name {
            "RSAES_OAEP_SHA_1" => WrappingAlgorithm::RsaesOaepSha1,
            "RSAES_OAEP_SHA_256" => WrappingAlgorithm::RsaesOaepSha256,
            "RSA_AES_KEY_WRAP_SHA_1" => WrappingAlgorithm::RsaAesKeyWrapSha1,
            "RSA_AES_KEY_WRAP_SHA_256" => WrappingAlgorithm::RsaAesKeyWrapSha256,
            "RSAES_PKCS1_V1_5" => {
                return Err(validation(
                    "KMS does not support the RSAES_PKCS1_V1_5 wrapping algorithm (deprecated)",
                ));
            }
            other => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{other}' at 'wrappingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set"
                )));
            }
        })
    }

    fn oaep(self) -> &'static OaepAlgorithm {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => {
                &OAEP_SHA1_MGF1SHA1
            }
            _ => &OAEP_SHA256_MGF1SHA256,
        }
    }

    fn is_key_wrap(self) -> bool {
        matches!(
            self,
            WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256
        )
    }
}

/// The RSA size of a `WrappingKeySpec`.
pub fn wrapping_key_size(spec: &str) -> KmsResult<KeySize> {
    Ok(match spec {
        "RSA_2048" => KeySize::Rsa2048,
        "RSA_3072" => KeySize::Rsa3072,
        "RSA_4096" => KeySize::Rsa4096,
        other => {
            return Err(validation(format!(
                "1 validation error detected: Value '{other}' at 'wrappingKeySpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048, RSA_3072, RSA_4096]"
            )));
        }
    })
}

/// A fresh RSA wrapping key pair: the private half (kept with the import token) and the DER
/// SubjectPublicKeyInfo handed out.
pub struct WrappingKey {
    private: OaepPrivateDecryptingKey,
    pub public_der: Vec<u8>,
}

impl WrappingKey {
    pub fn generate(size: KeySize) -> KmsResult<WrappingKey> {
        let failed = || KmsError::new("KMSInternalException", "wrapping key generation failed");
        let private = PrivateDecryptingKey::generate(size).map_err(|_| failed())?;
        let public_der = private
            .public_key()
            .as_der()
            .map_err(|_| failed())?
            .as_ref()
            .to_vec();
        let private = OaepPrivateDecryptingKey::new(private).map_err(|_| failed())?;
        Ok(WrappingKey {
            private,
            public_der,
        })
    }

    /// Unwraps `EncryptedKeyMaterial` as `algorithm` prescribes; InvalidCiphertextException
    /// when it was not wrapped with this key and algorithm.
    pub fn unwrap(
        &self,
        algorithm: WrappingAlgorithm,
        wrapped: &[u8],
    ) -> KmsResult<Zeroizing<Vec<u8>>> {
        let invalid = || {
            KmsError::new(
                "InvalidCiphertextException",
                "KMS could not decrypt the wrapped key material with the wrapping key and algorithm of this import token",
            )
        };
        let k = self.private.key_size_bytes();
        let mut out = Zeroizing::new(vec![0u8; self.private.min_output_size().max(k)]);
        if !algorithm.is_key_wrap() {
            if wrapped.len() != k {
                return Err(invalid());
            }
            let n = self
                .private
                .decrypt(algorithm.oaep(), wrapped, &mut out, None)
                .map_err(|_| invalid())?
                .len();
            out.truncate(n);
            return Ok(out);
        }
        if wrapped.len() <= k {
            return Err(invalid());
        }
        let n = self
            .private
            .decrypt(algorithm.oaep(), &wrapped[..k], &mut out, None)
            .map_err(|_| invalid())?
            .len();
        if n != 32 {
            return Err(invalid());
        }
        let kek = AesKek::new(&AES_256, &out[..n]).map_err(|_| invalid())?;
        let rest = &wrapped[k..];
        let mut material = Zeroizing::new(vec![0u8; rest.len()]);
        let m = kek
            .unwrap_with_padding(rest, &mut material)
            .map_err(|_| invalid())?
            .len();
        material.truncate(m);
        Ok(material)
    }
}

/// Checks unwrapped material against the key's spec, as KMS does at import.
pub fn check_material(spec: &str, bytes: &[u8]) -> KmsResult<()> {
    if let Some((min, max)) = allowed_length(spec) {
        if bytes.len() < min || bytes.len() > max {
            return Err(incorrect_material(format!(
                "{spec} key material must be {min}..={max} bytes; the imported material is {} bytes",
                bytes.len()
            )));
        }
        return Ok(());
    }
    match family(spec) {
        Family::Rsa => {
            let pair = RsaKeyPair::from_pkcs8(bytes).map_err(|_| {
                incorrect_material(format!(
                    "the imported material is not a PKCS#8 RSA private key for {spec}"
                ))
            })?;
            let bits = pair.public_modulus_len() * 8;
            if format!("RSA_{bits}") != spec {
                return Err(incorrect_material(format!(
                    "the imported RSA key has {bits} bits; the key spec is {spec}"
                )));
            }
            Ok(())
        }
        Family::Ecc => {
            let alg = ecdsa_algorithm(spec).ok_or_else(|| validation("unknown ECC spec"))?;
            EcdsaKeyPair::from_pkcs8(alg, bytes).map(drop).map_err(|_| {
                incorrect_material(format!(
                    "the imported material is not a PKCS#8 EC private key on the curve of {spec}"
                ))
            })
        }
        _ => Ok(()),
    }
}

/// The KeyMaterialId of material imported into a key: derived from the key id and the
/// material (as AWS documents), so the same bytes give the same id in every Region of a
/// multi-Region key, and different bytes never match.
pub fn key_material_id(key_id: &str, bytes: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"kms-model/key-material-id/v1\0");
    ctx.update(key_id.as_bytes());
    ctx.update(b"\0");
    ctx.update(bytes);
    hex::encode(ctx.finish().as_ref())
}

/// Fresh material KMS generates itself (Origin AWS_KMS).
pub fn generate(spec: &str) -> KmsResult<Zeroizing<Vec<u8>>> {
    let failed = || KmsError::new("KMSInternalException", "key generation failed");
    match family(spec) {
        Family::Symmetric | Family::Hmac => {
            let (_, max) = allowed_length(spec).ok_or_else(failed)?;
            let len = if spec == "SYMMETRIC_DEFAULT" {
                32
            } else {
                max / 2
            };
            let mut bytes = Zeroizing::new(vec![0u8; len]);
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| failed())?;
            Ok(bytes)
        }
        Family::Rsa => {
            let size = match spec {
                "RSA_2048" => KeySize::Rsa2048,
                "RSA_3072" => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let pair = RsaKeyPair::generate(size).map_err(|_| failed())?;
            let der =
                AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).map_err(|_| failed())?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        Family::Ecc => {
            let alg = ecdsa_algorithm(spec).ok_or_else(failed)?;
            let doc = EcdsaKeyPair::generate_pkcs8(alg, &aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| failed())?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
    }
}

/// The DER SubjectPublicKeyInfo of RSA/ECC material (what GetPublicKey returns).
pub fn public_key_der(spec: &str, bytes: &[u8]) -> KmsResult<Vec<u8>> {
    let failed = || KmsError::new("KMSInternalException", "public key derivation failed");
    match family(spec) {
        Family::Rsa => {
            let pair = RsaKeyPair::from_pkcs8(bytes).map_err(|_| failed())?;
            Ok(pair
                .public_key()
                .as_der()
                .map_err(|_| failed())?
                .as_ref()
                .to_vec())
        }
        Family::Ecc => {
            let alg = ecdsa_algorithm(spec).ok_or_else(failed)?;
            let pair = EcdsaKeyPair::from_pkcs8(alg, bytes).map_err(|_| failed())?;
            Ok(pair
                .public_key()
                .as_der()
                .map_err(|_| failed())?
                .as_ref()
                .to_vec())
        }
        _ => Err(KmsError::new(
            "UnsupportedOperationException",
            "GetPublicKey needs an asymmetric KMS key",
        )),
    }
}

/// HMAC of `message` under HMAC material.
pub fn hmac(spec: &str, key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::hmac;
    let alg = match spec {
        "HMAC_224" => hmac::HMAC_SHA224,
        "HMAC_256" => hmac::HMAC_SHA256,
        "HMAC_384" => hmac::HMAC_SHA384,
        "HMAC_512" => hmac::HMAC_SHA512,
        _ => return None,
    };
    Some(
        hmac::sign(&hmac::Key::new(alg, key), message)
            .as_ref()
            .to_vec(),
    )
}

fn digest_of(algorithm: &str) -> Option<&'static aws_lc_rs::digest::Algorithm> {
    use aws_lc_rs::digest;
    Some(if algorithm.ends_with("SHA_256") {
        &digest::SHA256
    } else if algorithm.ends_with("SHA_384") {
        &digest::SHA384
    } else if algorithm.ends_with("SHA_512") {
        &digest::SHA512
    } else {
        return None;
    })
}

fn rsa_padding(algorithm: &str) -> Option<&'static dyn signature::RsaEncoding> {
    Some(match algorithm {
        "RSASSA_PSS_SHA_256" => &signature::RSA_PSS_SHA256,
        "RSASSA_PSS_SHA_384" => &signature::RSA_PSS_SHA384,
        "RSASSA_PSS_SHA_512" => &signature::RSA_PSS_SHA512,
        "RSASSA_PKCS1_V1_5_SHA_256" => &signature::RSA_PKCS1_SHA256,
        "RSASSA_PKCS1_V1_5_SHA_384" => &signature::RSA_PKCS1_SHA384,
        "RSASSA_PKCS1_V1_5_SHA_512" => &signature::RSA_PKCS1_SHA512,
        _ => return None,
    })
}

fn verification_algorithm(
    spec: &str,
    algorithm: &str,
) -> Option<&'static dyn signature::VerificationAlgorithm> {
    Some(match (spec, algorithm) {
        ("ECC_NIST_P256", "ECDSA_SHA_256") => &signature::ECDSA_P256_SHA256_ASN1,
        ("ECC_NIST_P384", "ECDSA_SHA_384") => &signature::ECDSA_P384_SHA384_ASN1,
        ("ECC_NIST_P521", "ECDSA_SHA_512") => &signature::ECDSA_P521_SHA512_ASN1,
        ("ECC_SECG_P256K1", "ECDSA_SHA_256") => &signature::ECDSA_P256K1_SHA256_ASN1,
        (_, "RSASSA_PSS_SHA_256") => &signature::RSA_PSS_2048_8192_SHA256,
        (_, "RSASSA_PSS_SHA_384") => &signature::RSA_PSS_2048_8192_SHA384,
        (_, "RSASSA_PSS_SHA_512") => &signature::RSA_PSS_2048_8192_SHA512,
        (_, "RSASSA_PKCS1_V1_5_SHA_256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        (_, "RSASSA_PKCS1_V1_5_SHA_384") => &signature::RSA_PKCS1_2048_8192_SHA384,
        (_, "RSASSA_PKCS1_V1_5_SHA_512") => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    })
}

/// Signs a RAW message, or a DIGEST of the algorithm's hash length.
pub fn sign(
    spec: &str,
    key: &[u8],
    algorithm: &str,
    message: &[u8],
    digest: bool,
) -> KmsResult<Vec<u8>> {
    let failed = || KmsError::new("KMSInternalException", "signing failed");
    let digest_alg = digest_of(algorithm).ok_or_else(|| validation("unknown signing algorithm"))?;
    let prehashed = if digest {
        aws_lc_rs::digest::Digest::import_less_safe(message, digest_alg).map_err(|_| {
            validation(format!(
                "a DIGEST message for {algorithm} must be {} bytes",
                digest_alg.output_len()
            ))
        })?
    } else {
        aws_lc_rs::digest::digest(digest_alg, message)
    };
    match family(spec) {
        Family::Rsa => {
            let pair = RsaKeyPair::from_pkcs8(key).map_err(|_| failed())?;
            let padding = rsa_padding(algorithm).ok_or_else(failed)?;
            let mut out = vec![0u8; pair.public_modulus_len()];
            pair.sign_digest(padding, &prehashed, &mut out)
                .map_err(|_| failed())?;
            Ok(out)
        }
        Family::Ecc => {
            let alg = ecdsa_algorithm(spec).ok_or_else(failed)?;
            let pair = EcdsaKeyPair::from_pkcs8(alg, key).map_err(|_| failed())?;
            Ok(pair
                .sign_digest(&prehashed)
                .map_err(|_| failed())?
                .as_ref()
                .to_vec())
        }
        _ => Err(failed()),
    }
}

/// Verifies a signature against the public key (RAW messages; DIGEST ones for ECDSA too).
pub fn verify(
    spec: &str,
    public_der: &[u8],
    algorithm: &str,
    message: &[u8],
    digest: bool,
    sig: &[u8],
) -> KmsResult<bool> {
    let alg = verification_algorithm(spec, algorithm)
        .ok_or_else(|| validation("signing algorithm not valid for this key"))?;
    let key = signature::ParsedPublicKey::new(alg, public_der)
        .map_err(|_| KmsError::new("KMSInternalException", "public key parse failed"))?;
    if digest {
        let digest_alg = digest_of(algorithm).ok_or_else(|| validation("unknown algorithm"))?;
        let d = aws_lc_rs::digest::Digest::import_less_safe(message, digest_alg)
            .map_err(|_| validation("DIGEST message of the wrong length"))?;
        return Ok(key.verify_digest_sig(&d, sig).is_ok());
    }
    Ok(key.verify_sig(message, sig).is_ok())
}
