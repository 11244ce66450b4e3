//! Test helpers: fresh random key material for every spec, in every input format the parser accepts.

use super::parse::{signing_algorithm, spec_curve};
use super::{MaterialEncoding, MaterialError, armor, der, rsa_bits};
use crate::api::{KeyFamily, KeySpec};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::EcdsaKeyPair;
use base64::Engine as _;
use zeroize::Zeroizing;

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

    /// Whether the parser accepts this format for `spec`.
    pub fn applies_to(self, spec: KeySpec) -> bool {
        match self {
            SecretFormat::Raw => matches!(spec.family(), KeyFamily::Symmetric | KeyFamily::Hmac),
            SecretFormat::Pkcs8Pem | SecretFormat::Pkcs8Der => {
                matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc)
            }
            SecretFormat::Pkcs1Pem | SecretFormat::Pkcs1Der => spec.family() == KeyFamily::Rsa,
            SecretFormat::Sec1Pem | SecretFormat::Sec1Der => spec.family() == KeyFamily::Ecc,
        }
    }

    /// Every format the parser accepts for `spec`.
    pub fn all_for(spec: KeySpec) -> Vec<SecretFormat> {
        SecretFormat::ALL
            .into_iter()
            .filter(|f| f.applies_to(spec))
            .collect()
    }
}

fn failed(detail: &str) -> MaterialError {
    MaterialError::Unparseable {
        detail: format!("test material generation failed: {detail}"),
    }
}

/// Fresh random material for `spec` in its primary format: 32 random bytes for
/// SYMMETRIC_DEFAULT, digest-length random bytes for HMAC, PKCS#8 PEM for RSA/ECC.
///
/// # Panics
/// Only if the system random generator or aws-lc key generation fails.
pub fn generate_secret_value(spec: KeySpec) -> Zeroizing<Vec<u8>> {
    let format = if spec.family() == KeyFamily::Rsa || spec.family() == KeyFamily::Ecc {
        SecretFormat::Pkcs8Pem
    } else {
        SecretFormat::Raw
    };
    match generate_secret_value_as(spec, format) {
        Ok(value) => value,
        Err(e) => panic!("generate_secret_value({spec}): {e}"),
    }
}

/// Fresh random material for `spec` in `format`; refuses formats that do not apply to `spec`.
pub fn generate_secret_value_as(
    spec: KeySpec,
    format: SecretFormat,
) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    if !format.applies_to(spec) {
        return Err(failed("format does not apply to this key spec"));
    }
    match spec.family() {
        KeyFamily::Symmetric | KeyFamily::Hmac => {
            let len = match spec {
                KeySpec::Hmac224 => 28,
                KeySpec::Hmac256 => 32,
                KeySpec::Hmac384 => 48,
                KeySpec::Hmac512 => 64,
                _ => 32,
            };
            random_bytes(len)
        }
        KeyFamily::Rsa | KeyFamily::Ecc => {
            let pkcs8 = generate_pkcs8_der(spec)?;
            convert_private_key(spec, &pkcs8, format)
        }
    }
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut out[..]).map_err(|_| failed("random generator"))?;
    Ok(out)
}

/// A fresh RSA/ECC private key for `spec` as PKCS#8 DER.
pub fn generate_pkcs8_der(spec: KeySpec) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    if let Some(bits) = rsa_bits(spec) {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            _ => KeySize::Rsa4096,
        };
        let key = RsaKeyPair::generate(size).map_err(|_| failed("RSA key generation"))?;
        let der = key.as_der().map_err(|_| failed("RSA PKCS#8 encoding"))?;
        return Ok(Zeroizing::new(der.as_ref().to_vec()));
    }
    let curve = spec_curve(spec).ok_or_else(|| failed("not an RSA or ECC spec"))?;
    let key = EcdsaKeyPair::generate(signing_algorithm(curve))
        .map_err(|_| failed("EC key generation"))?;
    let doc = key.to_pkcs8v1().map_err(|_| failed("EC PKCS#8 encoding"))?;
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

/// Re-encodes an RSA/ECC PKCS#8 DER private key for `spec` in another [`SecretFormat`].
pub fn convert_private_key(
    spec: KeySpec,
    pkcs8_der: &[u8],
    format: SecretFormat,
) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    if !format.applies_to(spec) || format == SecretFormat::Raw {
        return Err(failed("format does not apply to this key spec"));
    }
    match format {
        SecretFormat::Pkcs8Der => Ok(Zeroizing::new(pkcs8_der.to_vec())),
        SecretFormat::Pkcs8Pem => Ok(pem_encode("PRIVATE KEY", pkcs8_der)),
        SecretFormat::Pkcs1Der | SecretFormat::Pkcs1Pem => {
            // PKCS#8 privateKey OCTET STRING of an rsaEncryption key is the PKCS#1 RSAPrivateKey.
            let pkcs1 = der::pkcs8_inner_key(pkcs8_der).ok_or_else(|| failed("not PKCS#8"))?;
            Ok(if format == SecretFormat::Pkcs1Der {
                Zeroizing::new(pkcs1.to_vec())
            } else {
                pem_encode("RSA PRIVATE KEY", pkcs1)
            })
        }
        SecretFormat::Sec1Der | SecretFormat::Sec1Pem => {
            let curve = spec_curve(spec).ok_or_else(|| failed("not an ECC spec"))?;
            let key = EcdsaKeyPair::from_pkcs8(signing_algorithm(curve), pkcs8_der)
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

/// Encodes DER as a PEM block with `label`.
pub fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<Vec<u8>> {
    armor::encode(label, der)
}

/// Encodes raw Secret bytes as text of `encoding` (the inverse of the parser's decoding).
pub fn encode_secret_value(raw: &[u8], encoding: MaterialEncoding) -> Zeroizing<Vec<u8>> {
    match encoding {
        MaterialEncoding::Raw => Zeroizing::new(raw.to_vec()),
        MaterialEncoding::Base64 => Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .into_bytes(),
        ),
        MaterialEncoding::Hex => Zeroizing::new(hex::encode(raw).into_bytes()),
    }
}
