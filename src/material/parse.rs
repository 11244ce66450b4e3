//! Secret value → checked key material: decoding, length rules, private key parsing and PKCS#8 conversion.

use super::buffer::SecretBytes;
use super::der::{self, Container, Curve, CurveParam, Pkcs8Algorithm};
use super::{KeyMaterial, MAX_SECRET_VALUE_BYTES, MaterialError, allowed_length, armor, rsa_bits};
use crate::api::MaterialEncoding;
use crate::api::{KeyFamily, KeySpec};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _};
use base64::DecodeSliceError;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

pub(super) fn from_secret_value(
    spec: KeySpec,
    encoding: MaterialEncoding,
    value: &[u8],
) -> Result<KeyMaterial, MaterialError> {
    if value.is_empty() {
        return Err(MaterialError::Empty);
    }
    // Before any decoding: every later step is then bounded by this size.
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(MaterialError::TooLarge {
            limit: MAX_SECRET_VALUE_BYTES,
            actual: value.len(),
        });
    }
    let decoded = decode(encoding, value)?;
    if decoded.is_empty() {
        return Err(MaterialError::Empty);
    }
    match spec.family() {
        KeyFamily::Symmetric | KeyFamily::Hmac => check_length(spec, encoding, decoded),
        KeyFamily::Rsa | KeyFamily::Ecc => parse_private_key(spec, encoding, &decoded),
    }
}

/// Decodes the Secret value per `encoding` into a zeroized buffer.
pub(super) fn decode(
    encoding: MaterialEncoding,
    value: &[u8],
) -> Result<SecretBytes, MaterialError> {
    match encoding {
        MaterialEncoding::Raw => Ok(SecretBytes::copy_of(value)),
        MaterialEncoding::Base64 => decode_base64(value),
        MaterialEncoding::Hex => decode_hex(value),
    }
}

fn compact(value: &[u8]) -> SecretBytes {
    let mut out = SecretBytes::with_capacity(value.len());
    out.extend_compact(value);
    out
}

fn invalid(encoding: MaterialEncoding, detail: String) -> MaterialError {
    MaterialError::InvalidEncoding { encoding, detail }
}

fn decode_base64(value: &[u8]) -> Result<SecretBytes, MaterialError> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let text = compact(value);
    let url_safe = text.iter().any(|b| *b == b'-' || *b == b'_');
    let engine = if url_safe {
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&base64::alphabet::STANDARD, config)
    };
    let mut out = SecretBytes::zeroed(base64::decoded_len_estimate(text.len()));
    let n = engine.decode_slice(&text[..], &mut out[..]).map_err(|e| {
        // Never echo the offending byte: it is part of the material.
        let detail = match e {
            DecodeSliceError::DecodeError(base64::DecodeError::InvalidByte(offset, _)) => {
                format!("invalid base64 character at position {offset} (whitespace ignored)")
            }
            DecodeSliceError::DecodeError(base64::DecodeError::InvalidLength(_)) => {
                "truncated base64 (length is not valid)".to_string()
            }
            DecodeSliceError::DecodeError(base64::DecodeError::InvalidLastSymbol(offset, _)) => {
                format!("invalid final base64 character at position {offset}")
            }
            DecodeSliceError::DecodeError(base64::DecodeError::InvalidPadding) => {
                "invalid base64 padding".to_string()
            }
            DecodeSliceError::OutputSliceTooSmall => "base64 decoding overflow".to_string(),
        };
        invalid(MaterialEncoding::Base64, detail)
    })?;
    out.truncate(n);
    Ok(out)
}

fn decode_hex(value: &[u8]) -> Result<SecretBytes, MaterialError> {
    let text = compact(value);
    if !text.len().is_multiple_of(2) {
        return Err(invalid(
            MaterialEncoding::Hex,
            format!("odd number of hex digits ({})", text.len()),
        ));
    }
    let mut out = SecretBytes::zeroed(text.len() / 2);
    hex::decode_to_slice(&text[..], &mut out[..]).map_err(|e| {
        let detail = match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                format!("invalid hex digit at position {index} (whitespace ignored)")
            }
            hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
                "invalid hex length".to_string()
            }
        };
        invalid(MaterialEncoding::Hex, detail)
    })?;
    Ok(out)
}

/// If raw material has the wrong length but reads as base64/hex text of a valid length, say so.
fn encoding_hint(spec: KeySpec, encoding: MaterialEncoding, raw: &[u8]) -> Option<&'static str> {
    let (min, max) = allowed_length(spec)?;
    if encoding != MaterialEncoding::Raw {
        return None;
    }
    let fits = |e: MaterialEncoding, hint: &'static str| {
        decode(e, raw)
            .ok()
            .filter(|d| (min..=max).contains(&d.len()))
            .map(|_| hint)
    };
    fits(
        MaterialEncoding::Hex,
        "the value looks like hex text: set the encoding to Hex",
    )
    .or_else(|| {
        fits(
            MaterialEncoding::Base64,
            "the value looks like base64 text: set the encoding to Base64",
        )
    })
    .or_else(|| {
        let trimmed = raw.trim_ascii_end();
        (trimmed.len() != raw.len() && (min..=max).contains(&trimmed.len()))
            .then_some("the value ends with whitespace or a newline; store the bytes exactly")
    })
}

fn check_length(
    spec: KeySpec,
    encoding: MaterialEncoding,
    bytes: SecretBytes,
) -> Result<KeyMaterial, MaterialError> {
    let Some((min, max)) = allowed_length(spec) else {
        return Err(MaterialError::Unparseable {
            detail: format!("{spec} has no byte-length rule"),
        });
    };
    if !(min..=max).contains(&bytes.len()) {
        return Err(MaterialError::WrongLength {
            spec,
            min,
            max,
            actual: bytes.len(),
            hint: encoding_hint(spec, encoding, &bytes),
        });
    }
    Ok(KeyMaterial::new(spec, bytes.into_zeroizing(), None))
}

fn family_name(spec: KeySpec) -> &'static str {
    match spec.family() {
        KeyFamily::Rsa => "RSA",
        KeyFamily::Ecc => "EC",
        KeyFamily::Symmetric => "AES",
        KeyFamily::Hmac => "HMAC",
    }
}

pub(super) fn spec_curve(spec: KeySpec) -> Option<Curve> {
    match spec {
        KeySpec::EccNistP256 => Some(Curve::P256),
        KeySpec::EccNistP384 => Some(Curve::P384),
        KeySpec::EccNistP521 => Some(Curve::P521),
        KeySpec::EccSecgP256k1 => Some(Curve::Secp256k1),
        _ => None,
    }
}

pub(super) fn signing_algorithm(curve: Curve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        Curve::Secp256k1 => &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
    }
}

fn unparseable(detail: impl Into<String>) -> MaterialError {
    MaterialError::Unparseable {
        detail: detail.into(),
    }
}

fn looks_like_base64_text(bytes: &[u8]) -> bool {
    bytes.len() >= 16
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(b) || b.is_ascii_whitespace())
}

fn parse_private_key(
    spec: KeySpec,
    encoding: MaterialEncoding,
    bytes: &[u8],
) -> Result<KeyMaterial, MaterialError> {
    let pem_der;
    let der: &[u8] = if armor::looks_like_pem(bytes) {
        pem_der = armor::select_private_key(bytes)?;
        &pem_der
    } else if bytes.first() == Some(&der::SEQUENCE) {
        bytes
    } else if encoding == MaterialEncoding::Raw && looks_like_base64_text(bytes) {
        return Err(unparseable(
            "the value is neither PEM nor DER but looks like base64 text; set the encoding to \
             Base64 (or Hex)",
        ));
    } else {
        return Err(unparseable(
            "the value is neither PEM text nor a DER structure (expected a PKCS#8, PKCS#1 or \
             SEC1 private key)",
        ));
    };
    let container = der::classify(der).ok_or_else(|| {
        unparseable("the DER data is not a PKCS#8, PKCS#1 or SEC1 private key, or is malformed")
    })?;
    let expected = family_name(spec);
    let wrong_type = |actual: &str| MaterialError::WrongKeyType {
        spec,
        expected,
        actual: actual.to_string(),
    };
    match container {
        Container::EncryptedPkcs8 => Err(MaterialError::Encrypted {
            format: "PKCS#8 EncryptedPrivateKeyInfo",
        }),
        Container::PublicKey => Err(MaterialError::NotPrivateKey {
            found: "a public key",
        }),
        Container::Certificate => Err(MaterialError::NotPrivateKey {
            found: "a certificate (or certificate request)",
        }),
        Container::Pkcs8(Pkcs8Algorithm::Other(name)) => Err(wrong_type(&name)),
        Container::Pkcs8(Pkcs8Algorithm::Rsa { modulus_bits }) => {
            if spec.family() != KeyFamily::Rsa {
                return Err(wrong_type("RSA"));
            }
            let modulus_bits = modulus_bits.ok_or_else(|| {
                unparseable("the PKCS#8 key says RSA but does not contain a PKCS#1 RSA key")
            })?;
            check_rsa_size(spec, modulus_bits)?;
            let key = RsaKeyPair::from_pkcs8(der)
                .map_err(|e| unparseable(format!("the RSA private key is invalid ({e})")))?;
            finish_rsa(spec, &key)
        }
        Container::Pkcs1 { modulus_bits } => {
            if spec.family() != KeyFamily::Rsa {
                return Err(wrong_type("RSA"));
            }
            check_rsa_size(spec, modulus_bits)?;
            let key = RsaKeyPair::from_der(der)
                .map_err(|e| unparseable(format!("the RSA private key is invalid ({e})")))?;
            finish_rsa(spec, &key)
        }
        Container::Pkcs8(Pkcs8Algorithm::Ec(curve)) | Container::Sec1(curve) => {
            let Some(expected_curve) = spec_curve(spec) else {
                return Err(wrong_type("EC"));
            };
            match &curve {
                CurveParam::Named(c) if *c == expected_curve => {}
                CurveParam::Absent => {}
                other => {
                    return Err(MaterialError::WrongCurve {
                        spec,
                        expected: expected_curve.name(),
                        actual: other.describe(),
                    });
                }
            }
            let key = EcdsaKeyPair::from_private_key_der(signing_algorithm(expected_curve), der)
                .map_err(|e| {
                    unparseable(format!(
                        "the EC private key is not a valid {} key ({e})",
                        expected_curve.name()
                    ))
                })?;
            let pkcs8 = key
                .to_pkcs8v1()
                .map_err(|_| unparseable("the EC private key could not be re-encoded as PKCS#8"))?;
            let spki = public_key_der(key.public_key(), "EC")?;
            Ok(private_key(spec, pkcs8.as_ref(), spki.as_ref()))
        }
    }
}

fn check_rsa_size(spec: KeySpec, actual_bits: usize) -> Result<(), MaterialError> {
    let expected_bits = rsa_bits(spec).unwrap_or(0);
    if actual_bits != expected_bits {
        return Err(MaterialError::WrongSize {
            spec,
            expected_bits,
            actual_bits,
        });
    }
    Ok(())
}

fn finish_rsa(spec: KeySpec, key: &RsaKeyPair) -> Result<KeyMaterial, MaterialError> {
    // Defence in depth: the size aws-lc computed must agree with the DER we read.
    check_rsa_size(spec, key.public_modulus_len() * 8)?;
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(key)
        .map_err(|_| unparseable("the RSA private key could not be re-encoded as PKCS#8"))?;
    let spki = public_key_der(key.public_key(), "RSA")?;
    Ok(private_key(spec, pkcs8.as_ref(), spki.as_ref()))
}

/// The public key of a parsed `family` (RSA, EC) key pair, as DER SPKI.
fn public_key_der(
    public_key: &impl AsDer<PublicKeyX509Der<'static>>,
    family: &str,
) -> Result<PublicKeyX509Der<'static>, MaterialError> {
    public_key
        .as_der()
        .map_err(|_| unparseable(format!("the {family} public key could not be encoded")))
}

/// RSA/ECC material: the PKCS#8 private key to import and its public key (DER SPKI).
fn private_key(spec: KeySpec, pkcs8: &[u8], spki: &[u8]) -> KeyMaterial {
    KeyMaterial::new(spec, Zeroizing::new(pkcs8.to_vec()), Some(spki.to_vec()))
}
