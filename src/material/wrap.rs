//! Wrapping key material for `ImportKeyMaterial`: RSAES-OAEP and RSA-AES key wrap (RFC 5649).

use super::{KeyMaterial, MaterialError, allowed_length};
use crate::api::{KeyFamily, KeySpec, WrappingAlgorithm, WrappingKeySpec};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPublicEncryptingKey,
    PublicEncryptingKey,
};
use zeroize::Zeroizing;

/// PKCS#8 lengths of EC private keys as produced by the parser (aws-lc: named curve in the
/// algorithm identifier, public key included). Used to check OAEP capacity before the Secret is read.
pub(super) fn ecc_pkcs8_len(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::EccNistP256 => Some(138),
        KeySpec::EccNistP384 => Some(185),
        KeySpec::EccNistP521 => Some(241),
        KeySpec::EccSecgP256k1 => Some(135),
        _ => None,
    }
}

impl WrappingAlgorithm {
    fn oaep(self) -> &'static OaepAlgorithm {
        match self {
            WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
                &OAEP_SHA256_MGF1SHA256
            }
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => {
                &OAEP_SHA1_MGF1SHA1
            }
        }
    }

    fn hash_len(self) -> usize {
        match self {
            WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => 32,
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => 20,
        }
    }

    /// Most material bytes this algorithm carries under a wrapping key of `wrapping_key_bits`;
    /// `None` means no practical limit (AES key wrap).
    pub fn max_material_len(self, wrapping_key_bits: usize) -> Option<usize> {
        if self.is_key_wrap() {
            None
        } else {
            // RFC 8017 §7.1.1: mLen <= k - 2hLen - 2.
            Some((wrapping_key_bits / 8).saturating_sub(2 * self.hash_len() + 2))
        }
    }

    /// Refuses combinations that can never work for `spec` (RSA private keys under RSAES_OAEP).
    fn check_family(self, spec: KeySpec) -> Result<(), MaterialError> {
        if spec.family() == KeyFamily::Rsa && !self.is_key_wrap() {
            return Err(MaterialError::WrappingUnsupported {
                spec,
                algorithm: self,
                detail: "an RSA private key (PKCS#8, over 1200 bytes) does not fit in one \
                         RSA-OAEP block and KMS accepts RSA private keys only with \
                         RSA_AES_KEY_WRAP_SHA_*; use RSA_AES_KEY_WRAP_SHA_256",
            });
        }
        Ok(())
    }

    fn check_len(
        self,
        spec: KeySpec,
        wrapping_key_bits: usize,
        len: usize,
    ) -> Result<(), MaterialError> {
        match self.max_material_len(wrapping_key_bits) {
            Some(max) if len > max => Err(MaterialError::WrappingKeyTooSmall {
                spec,
                algorithm: self,
                wrapping_key_bits,
                max,
                actual: len,
            }),
            _ => Ok(()),
        }
    }

    /// Checks, before any material is read, that this algorithm with `wrapping_key_spec` can
    /// carry `spec` material of the largest length KMS accepts for it.
    pub fn check_compatible(
        self,
        spec: KeySpec,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<(), MaterialError> {
        self.check_family(spec)?;
        let longest = allowed_length(spec)
            .map(|(_, max)| max)
            .or_else(|| ecc_pkcs8_len(spec));
        match longest {
            Some(len) => self.check_len(spec, wrapping_key_spec.bits(), len),
            None => Ok(()),
        }
    }
}

fn failed(detail: &'static str) -> MaterialError {
    MaterialError::WrapFailed { detail }
}

impl KeyMaterial {
    /// Checks that `algorithm` with a `wrapping_key_spec` key can carry this material.
    pub fn check_wrapping(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<(), MaterialError> {
        algorithm.check_family(self.spec)?;
        algorithm.check_len(self.spec, wrapping_key_spec.bits(), self.bytes.len())
    }

    /// Encrypts the import bytes for `ImportKeyMaterial` under the RSA public key from
    /// `GetParametersForImport` (DER `SubjectPublicKeyInfo`).
    ///
    /// * `RSAES_OAEP_SHA_*`: RSA-OAEP(material), MGF1 with the same hash, no label.
    /// * `RSA_AES_KEY_WRAP_SHA_*`: RSA-OAEP(fresh AES-256 key) || AES-KWP(AES key, material)
    ///   (RFC 5649; the format of PKCS#11 `CKM_RSA_AES_KEY_WRAP`).
    pub fn wrap(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_public_key_der: &[u8],
    ) -> Result<Vec<u8>, MaterialError> {
        algorithm.check_family(self.spec)?;
        let public = PublicEncryptingKey::from_der(wrapping_public_key_der).map_err(|e| {
            MaterialError::InvalidWrappingKey {
                detail: format!("not a DER SubjectPublicKeyInfo of an RSA key ({e})"),
            }
        })?;
        let bits = public.key_size_bits();
        if WrappingKeySpec::from_bits(bits).is_none() {
            return Err(MaterialError::InvalidWrappingKey {
                detail: format!(
                    "the RSA key has {bits} bits; KMS wrapping keys have 2048, 3072 or 4096"
                ),
            });
        }
        algorithm.check_len(self.spec, bits, self.bytes.len())?;
        let oaep = OaepPublicEncryptingKey::new(public)
            .map_err(|_| failed("could not set up RSA-OAEP"))?;

        let mut out = vec![0u8; oaep.ciphertext_size()];
        if !algorithm.is_key_wrap() {
            let n = oaep
                .encrypt(algorithm.oaep(), &self.bytes, &mut out, None)
                .map_err(|_| failed("RSA-OAEP encryption failed"))?
                .len();
            out.truncate(n);
            return Ok(out);
        }

        let mut aes_key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut aes_key[..])
            .map_err(|_| failed("the system random generator failed"))?;
        let n = oaep
            .encrypt(algorithm.oaep(), &aes_key[..], &mut out, None)
            .map_err(|_| failed("RSA-OAEP encryption of the AES key failed"))?
            .len();
        out.truncate(n);
        // aws-lc-rs zeroizes its copy of the key-encryption key on drop.
        let kek = AesKek::new(&AES_256, &aes_key[..])
            .map_err(|_| failed("could not set up AES key wrap"))?;
        // RFC 5649 output is the plaintext padded to a multiple of 8, plus 8 bytes.
        let mut wrapped = vec![0u8; self.bytes.len() + 16];
        let m = kek
            .wrap_with_padding(&self.bytes, &mut wrapped)
            .map_err(|_| failed("AES key wrap with padding failed"))?
            .len();
        out.extend_from_slice(&wrapped[..m]);
        Ok(out)
    }
}
