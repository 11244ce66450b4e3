//! Fresh key material for `keyMaterial.generate` (no I/O): aws-lc-rs's random generator and key
//! generation, written as the Secret value that [`super::KeyMaterial::from_secret_value`] reads.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::EcdsaKeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::buffer::SecretBytes;
use super::parse::{signing_algorithm, spec_curve};
use super::{MaterialError, allowed_length, armor, rsa_bits};
use crate::api::{KeyFamily, KeySpec, MaterialEncoding};

/// A Secret value holding fresh material of `spec` in `encoding`: 32 random bytes for
/// SYMMETRIC_DEFAULT, random bytes of the digest size for HMAC (28, 32, 48 or 64), a new RSA or
/// EC private key as PKCS#8 (PEM text for `Raw`, the DER bytes under `Base64` and `Hex`).
pub fn generate_secret_value(
    spec: KeySpec,
    encoding: MaterialEncoding,
) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    let raw = match spec.family() {
        KeyFamily::Symmetric | KeyFamily::Hmac => random_bytes(spec)?,
        KeyFamily::Rsa => rsa_pkcs8(spec)?,
        KeyFamily::Ecc => ecc_pkcs8(spec)?,
    };
    let private_key = matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc);
    let value = match encoding {
        MaterialEncoding::Raw if private_key => armor::private_key_pem(&raw),
        MaterialEncoding::Raw => raw,
        MaterialEncoding::Base64 => {
            let mut out = SecretBytes::zeroed(base64::encoded_len(raw.len(), true).unwrap_or(0));
            let n = STANDARD
                .encode_slice(&raw[..], &mut out[..])
                .map_err(|_| failed("base64 encoding"))?;
            out.truncate(n);
            out
        }
        MaterialEncoding::Hex => {
            let mut out = SecretBytes::zeroed(raw.len() * 2);
            hex::encode_to_slice(&raw[..], &mut out[..]).map_err(|_| failed("hex encoding"))?;
            out
        }
    };
    Ok(value.into_zeroizing())
}

fn failed(detail: &'static str) -> MaterialError {
    MaterialError::GenerationFailed { detail }
}

/// Symmetric and HMAC material: the shortest length KMS accepts, which is the key size of
/// SYMMETRIC_DEFAULT and the digest size of each HMAC spec.
fn random_bytes(spec: KeySpec) -> Result<SecretBytes, MaterialError> {
    let (len, _) = allowed_length(spec).ok_or_else(|| failed("no length rule for the key spec"))?;
    let mut bytes = SecretBytes::zeroed(len);
    aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| failed("the random generator failed"))?;
    Ok(bytes)
}

fn rsa_pkcs8(spec: KeySpec) -> Result<SecretBytes, MaterialError> {
    let size = match rsa_bits(spec) {
        Some(2048) => KeySize::Rsa2048,
        Some(3072) => KeySize::Rsa3072,
        Some(4096) => KeySize::Rsa4096,
        _ => return Err(failed("no RSA key size for the key spec")),
    };
    let key = RsaKeyPair::generate(size).map_err(|_| failed("RSA key generation failed"))?;
    let der = AsDer::<Pkcs8V1Der<'static>>::as_der(&key)
        .map_err(|_| failed("PKCS#8 encoding of the RSA key failed"))?;
    Ok(SecretBytes::copy_of(der.as_ref()))
}

fn ecc_pkcs8(spec: KeySpec) -> Result<SecretBytes, MaterialError> {
    let curve = spec_curve(spec).ok_or_else(|| failed("no curve for the key spec"))?;
    let key = EcdsaKeyPair::generate(signing_algorithm(curve))
        .map_err(|_| failed("EC key generation failed"))?;
    let der = key
        .to_pkcs8v1()
        .map_err(|_| failed("PKCS#8 encoding of the EC key failed"))?;
    Ok(SecretBytes::copy_of(der.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::KeyMaterial;

    /// Every spec in every encoding: the parser reads the value back as material of the spec,
    /// and two generations never give the same material.
    #[test]
    fn generated_values_parse_as_material_of_their_spec_and_differ() {
        for spec in KeySpec::ALL {
            for encoding in [
                MaterialEncoding::Raw,
                MaterialEncoding::Base64,
                MaterialEncoding::Hex,
            ] {
                // RSA key generation is slow in debug builds: one encoding is enough for the
                // large sizes (the encodings themselves are the same code for every spec).
                if matches!(spec, KeySpec::Rsa3072 | KeySpec::Rsa4096)
                    && encoding != MaterialEncoding::Raw
                {
                    continue;
                }
                let first = generate_secret_value(spec, encoding).unwrap();
                let second = generate_secret_value(spec, encoding).unwrap();
                let a = KeyMaterial::from_secret_value(spec, encoding, &first)
                    .unwrap_or_else(|e| panic!("{spec} {encoding}: {e}"));
                let b = KeyMaterial::from_secret_value(spec, encoding, &second).unwrap();
                assert_ne!(a.fingerprint(), b.fingerprint(), "{spec} {encoding}");
                if let Some((len, _)) = allowed_length(spec) {
                    assert_eq!(a.import_bytes().len(), len, "{spec}");
                }
            }
        }
    }

    #[test]
    fn raw_private_keys_are_pkcs8_pem_text() {
        let value = generate_secret_value(KeySpec::EccNistP256, MaterialEncoding::Raw).unwrap();
        let text = std::str::from_utf8(&value).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(text.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
    }
}
