//! Fresh random key material for every KMS key spec, in every input format keyfleet's parser
//! accepts.
//!
//! Key specs and encodings are named the way KMS and the CRDs write them (`RSA_2048`,
//! `Base64`): every function takes anything that displays as that name, such as keyfleet's
//! `KeySpec` and `MaterialEncoding`, so this crate does not depend on keyfleet and serves its
//! unit tests as well as its integration tests and benchmarks.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose;
use zeroize::Zeroizing;

/// Why material could not be generated (a format that does not fit the spec, an unknown spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationError(String);

impl fmt::Display for GenerationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "test material generation failed: {}", self.0)
    }
}

impl std::error::Error for GenerationError {}

/// What a KMS key spec name says about its material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// SYMMETRIC_DEFAULT: 32 raw bytes.
    Symmetric,
    /// HMAC_*: raw bytes, digest length by default.
    Hmac(usize),
    /// RSA_*: a private key of this modulus size.
    Rsa(usize),
    /// ECC_*: a private key on this curve.
    Ecc(&'static EcdsaSigningAlgorithm),
}

fn family(spec: &dyn fmt::Display) -> Result<Family, GenerationError> {
    Ok(match spec.to_string().as_str() {
        "SYMMETRIC_DEFAULT" => Family::Symmetric,
        "HMAC_224" => Family::Hmac(28),
        "HMAC_256" => Family::Hmac(32),
        "HMAC_384" => Family::Hmac(48),
        "HMAC_512" => Family::Hmac(64),
        "RSA_2048" => Family::Rsa(2048),
        "RSA_3072" => Family::Rsa(3072),
        "RSA_4096" => Family::Rsa(4096),
        "ECC_NIST_P256" => Family::Ecc(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        "ECC_NIST_P384" => Family::Ecc(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        "ECC_NIST_P521" => Family::Ecc(&signature::ECDSA_P521_SHA512_ASN1_SIGNING),
        "ECC_SECG_P256K1" => Family::Ecc(&signature::ECDSA_P256K1_SHA256_ASN1_SIGNING),
        other => return Err(failed(&format!("unknown key spec {other}"))),
    })
}

/// A way the key material can be stored in a Secret value (before any [`MaterialEncoding`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretFormat {
    /// The raw bytes (symmetric and HMAC specs only).
    Raw,
    /// PEM `PRIVATE KEY` (PKCS#8).
    Pkcs8Pem,
    /// DER PKCS#8 `PrivateKeyInfo`.
    Pkcs8Der,
    /// PEM `RSA PRIVATE KEY` (PKCS#1; RSA specs only).
    Pkcs1Pem,
    /// DER PKCS#1 `RSAPrivateKey` (RSA specs only).
    Pkcs1Der,
    /// PEM `EC PRIVATE KEY` (SEC1 with curve parameters; ECC specs only).
    Sec1Pem,
    /// DER SEC1 `ECPrivateKey` (ECC specs only).
    Sec1Der,
}

impl SecretFormat {
    pub const ALL: [SecretFormat; 7] = [
        SecretFormat::Raw,
        SecretFormat::Pkcs8Pem,
        SecretFormat::Pkcs8Der,
        SecretFormat::Pkcs1Pem,
        SecretFormat::Pkcs1Der,
        SecretFormat::Sec1Pem,
        SecretFormat::Sec1Der,
    ];

    /// Whether the parser accepts this format for `spec` (a KMS key spec name).
    pub fn applies_to(self, spec: impl fmt::Display) -> bool {
        let Ok(family) = family(&spec) else {
            return false;
        };
        match self {
            SecretFormat::Raw => matches!(family, Family::Symmetric | Family::Hmac(_)),
            SecretFormat::Pkcs8Pem | SecretFormat::Pkcs8Der => {
                matches!(family, Family::Rsa(_) | Family::Ecc(_))
            }
            SecretFormat::Pkcs1Pem | SecretFormat::Pkcs1Der => matches!(family, Family::Rsa(_)),
            SecretFormat::Sec1Pem | SecretFormat::Sec1Der => matches!(family, Family::Ecc(_)),
        }
    }

    /// Every format the parser accepts for `spec`.
    pub fn all_for(spec: impl fmt::Display) -> Vec<SecretFormat> {
        SecretFormat::ALL
            .into_iter()
            .filter(|f| f.applies_to(&spec))
            .collect()
    }
}

fn failed(detail: &str) -> GenerationError {
    GenerationError(detail.to_string())
}

/// Fresh random material for `spec` in its primary format: 32 random bytes for
/// SYMMETRIC_DEFAULT, digest-length random bytes for HMAC, PKCS#8 PEM for RSA/ECC.
///
/// # Panics
/// Only if the system random generator or aws-lc key generation fails, or `spec` is not a
/// KMS key spec name.
pub fn generate_secret_value(spec: impl fmt::Display) -> Zeroizing<Vec<u8>> {
    let format = if SecretFormat::Pkcs8Pem.applies_to(&spec) {
        SecretFormat::Pkcs8Pem
    } else {
        SecretFormat::Raw
    };
    match generate_secret_value_as(&spec, format) {
        Ok(value) => value,
        Err(e) => panic!("generate_secret_value({spec}): {e}"),
    }
}

/// Fresh random material for `spec` in `format`; refuses formats that do not apply to `spec`.
pub fn generate_secret_value_as(
    spec: impl fmt::Display,
    format: SecretFormat,
) -> Result<Zeroizing<Vec<u8>>, GenerationError> {
    if !format.applies_to(&spec) {
        return Err(failed("format does not apply to this key spec"));
    }
    // Every value handed out is remembered for the leak scans (crate::leak).
    let value = match family(&spec)? {
        Family::Symmetric => random_bytes(32)?,
        Family::Hmac(len) => random_bytes(len)?,
        Family::Rsa(_) | Family::Ecc(_) => {
            let pkcs8 = generate_pkcs8_der(&spec)?;
            crate::leak::remember(&pkcs8);
            convert_private_key(&spec, &pkcs8, format)?
        }
    };
    crate::leak::remember(&value);
    Ok(value)
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>, GenerationError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut out[..]).map_err(|_| failed("random generator"))?;
    Ok(out)
}

/// A fresh RSA/ECC private key for `spec` as PKCS#8 DER.
pub fn generate_pkcs8_der(spec: impl fmt::Display) -> Result<Zeroizing<Vec<u8>>, GenerationError> {
    match family(&spec)? {
        Family::Rsa(bits) => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let key = RsaKeyPair::generate(size).map_err(|_| failed("RSA key generation"))?;
            let der = key.as_der().map_err(|_| failed("RSA PKCS#8 encoding"))?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        Family::Ecc(algorithm) => {
            let key = EcdsaKeyPair::generate(algorithm).map_err(|_| failed("EC key generation"))?;
            let doc = key.to_pkcs8v1().map_err(|_| failed("EC PKCS#8 encoding"))?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
        Family::Symmetric | Family::Hmac(_) => Err(failed("not an RSA or ECC spec")),
    }
}

/// Re-encodes an RSA/ECC PKCS#8 DER private key for `spec` in another [`SecretFormat`].
pub fn convert_private_key(
    spec: impl fmt::Display,
    pkcs8_der: &[u8],
    format: SecretFormat,
) -> Result<Zeroizing<Vec<u8>>, GenerationError> {
    if !format.applies_to(&spec) || format == SecretFormat::Raw {
        return Err(failed("format does not apply to this key spec"));
    }
    match format {
        SecretFormat::Pkcs8Der => Ok(Zeroizing::new(pkcs8_der.to_vec())),
        SecretFormat::Pkcs8Pem => Ok(pem_encode("PRIVATE KEY", pkcs8_der)),
        SecretFormat::Pkcs1Der | SecretFormat::Pkcs1Pem => {
            // PKCS#8 privateKey OCTET STRING of an rsaEncryption key is the PKCS#1 RSAPrivateKey.
            let pkcs1 = pkcs8_inner_key(pkcs8_der).ok_or_else(|| failed("not PKCS#8"))?;
            Ok(if format == SecretFormat::Pkcs1Der {
                Zeroizing::new(pkcs1.to_vec())
            } else {
                pem_encode("RSA PRIVATE KEY", pkcs1)
            })
        }
        SecretFormat::Sec1Der | SecretFormat::Sec1Pem => {
            let Family::Ecc(algorithm) = family(&spec)? else {
                return Err(failed("not an ECC spec"));
            };
            let key = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8_der)
                .map_err(|_| failed("EC PKCS#8 parsing"))?;
            let sec1 = key
                .private_key()
                .as_der()
                .map_err(|_| failed("SEC1 encoding"))?;
            Ok(if format == SecretFormat::Sec1Der {
                Zeroizing::new(sec1.as_ref().to_vec())
            } else {
                pem_encode("EC PRIVATE KEY", sec1.as_ref())
            })
        }
        SecretFormat::Raw => Err(failed("format does not apply to this key spec")),
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` of an RSA key: the content of
/// its third element, the `privateKey` OCTET STRING.
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    let (tag, content, _) = read_tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (version, _, rest) = read_tlv(content)?;
    let (_algorithm, _, rest) = read_tlv(rest)?;
    let (tag, key, _) = read_tlv(rest)?;
    (version == INTEGER && tag == OCTET_STRING).then_some(key)
}

/// One DER tag-length-value: (tag, content, what follows).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Encodes DER as a PEM block with `label` and 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<Vec<u8>> {
    let b64 = Zeroizing::new(general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(Vec::with_capacity(
        b64.len() + b64.len() / 64 + 2 * label.len() + 40,
    ));
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    out
}

/// Encodes raw Secret bytes as text of `encoding` (`Raw`, `Base64` or `Hex`: keyfleet's
/// `MaterialEncoding` names), the inverse of the parser's decoding.
///
/// # Panics
/// On an encoding name other than those three.
pub fn encode_secret_value(raw: &[u8], encoding: impl fmt::Display) -> Zeroizing<Vec<u8>> {
    match encoding.to_string().as_str() {
        "Raw" => Zeroizing::new(raw.to_vec()),
        "Base64" => Zeroizing::new(general_purpose::STANDARD.encode(raw).into_bytes()),
        "Hex" => Zeroizing::new(hex::encode(raw).into_bytes()),
        other => panic!("unknown material encoding {other}"),
    }
}
