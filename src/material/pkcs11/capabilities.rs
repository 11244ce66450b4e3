//! What a token offers for KMS imports (probed once per session pool) and the wrapping algorithm each key spec gets.

use std::os::raw::c_ulong;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::error::{from_cryptoki, is_token_gone};
use super::template::{Flag, Template};
use super::wrap::{SessionObject, ephemeral_aes_key, import_wrapping_key, oaep_name, oaep_params};
use super::{Pkcs11Error, spki};
use crate::api::{KeyFamily, KeySpec};
use crate::api::{WrappingAlgorithm, WrappingKeySpec};

/// The mechanisms that matter for wrapping key material for KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCapabilities {
    /// `CKM_RSA_PKCS_OAEP` can wrap (symmetric and HMAC keys; the AES key of the composed path).
    pub rsa_oaep_wrap: bool,
    /// OAEP with SHA-256 and MGF1-SHA-256 is accepted (SoftHSM 2.6: only SHA-1).
    pub oaep_sha256: bool,
    /// The AES key wrap with padding (RFC 5649) that can wrap (RSA/ECC private keys), if any:
    /// `CKM_AES_KEY_WRAP_KWP` when the token has it, else `CKM_AES_KEY_WRAP_PAD`.
    pub padded_key_wrap: Option<PaddedKeyWrap>,
    /// `CKM_AES_KEY_GEN` (the ephemeral AES key of the composed path).
    pub aes_key_gen: bool,
    /// The padded key wrap is RFC 5649 as KMS expects. SoftHSM 2.6's `CKM_AES_KEY_WRAP_PAD`
    /// zero-pads the key to a multiple of 8 bytes first (PKCS#11 2.40's rule for
    /// `CKM_AES_KEY_WRAP`), so the unwrapped key carries trailing zero bytes unless its length
    /// is already a multiple of 8.
    pub padded_key_wrap_conforms: bool,
}

/// A token's mechanism for AES key wrap with padding, the inner half of RSA_AES_KEY_WRAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddedKeyWrap {
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B): PKCS#11 3.0's name for RFC 5649 (kryoptic, newer HSMs).
    Kwp,
    /// `CKM_AES_KEY_WRAP_PAD` (0x210A): PKCS#11 2.40's, which some tokens implement as
    /// zero padding followed by RFC 5649 (SoftHSM 2.6), hence the conformance probe.
    Pad,
}

impl PaddedKeyWrap {
    /// The PKCS#11 name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            PaddedKeyWrap::Kwp => "CKM_AES_KEY_WRAP_KWP",
            PaddedKeyWrap::Pad => "CKM_AES_KEY_WRAP_PAD",
        }
    }

    /// The mechanism (no parameter: RFC 5649's default IV).
    pub(super) fn mechanism(self) -> Mechanism<'static> {
        match self {
            PaddedKeyWrap::Kwp => Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
                aes_key_wrap_kwp(),
                None,
            )),
            PaddedKeyWrap::Pad => Mechanism::AesKeyWrapPad,
        }
    }

    fn mechanism_type(self) -> MechanismType {
        match self {
            PaddedKeyWrap::Kwp => aes_key_wrap_kwp(),
            PaddedKeyWrap::Pad => MechanismType::AES_KEY_WRAP_PAD,
        }
    }
}

/// `CKM_AES_KEY_WRAP_KWP` (PKCS#11 3.0, value 0x210B). cryptoki 0.12 has no constant for it,
/// leaves it out of `get_mechanism_list`, and makes other mechanism types only from vendor
/// values (at least `CKM_VENDOR_DEFINED`), so the type is made here from the standard value.
fn aes_key_wrap_kwp() -> MechanismType {
    const CKM_AES_KEY_WRAP_KWP: c_ulong = 0x210B;
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over `CK_MECHANISM_TYPE` (a C
    // `unsigned long`), declared so by cryptoki to share its layout, and holds no other
    // invariant than being a mechanism number.
    unsafe { std::mem::transmute::<c_ulong, MechanismType>(CKM_AES_KEY_WRAP_KWP) }
}

/// The wrapping algorithm and wrapping key spec for one key, and whether SHA-1 was the only
/// choice (said in status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrappingChoice {
    pub algorithm: WrappingAlgorithm,
    pub wrapping_key_spec: WrappingKeySpec,
    /// The token accepts RSA-OAEP only with SHA-1, so a `*_SHA_1` algorithm was chosen.
    pub sha1_only: bool,
}

fn is_sha256(algorithm: WrappingAlgorithm) -> bool {
    matches!(
        algorithm,
        WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256
    )
}

/// Return values that mean "the token does not do this mechanism or these parameters".
pub(super) fn is_unsupported(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::ArgumentsBad
            | RvError::FunctionNotSupported
    )
}

impl TokenCapabilities {
    /// Reads the mechanism list of `slot` and tries one RSA-OAEP-SHA-256 wrap with session
    /// objects (the mechanism list cannot say which OAEP hashes a token accepts).
    pub(super) fn probe(
        pkcs11: &Pkcs11,
        slot: Slot,
        session: &Session,
        token: &str,
    ) -> Result<TokenCapabilities, Pkcs11Error> {
        let mechanisms = pkcs11
            .get_mechanism_list(slot)
            .map_err(|e| from_cryptoki(token, e))?;
        let can_wrap = |mechanism: MechanismType| {
            mechanisms.contains(&mechanism)
                && pkcs11
                    .get_mechanism_info(slot, mechanism)
                    .is_ok_and(|info| info.wrap())
        };
        let rsa_oaep_wrap = can_wrap(MechanismType::RSA_PKCS_OAEP);
        // cryptoki drops CKM_AES_KEY_WRAP_KWP from the list: the token is asked about it.
        let kwp = PaddedKeyWrap::Kwp.mechanism_type();
        let padded_key_wrap = if pkcs11
            .get_mechanism_info(slot, kwp)
            .is_ok_and(|info| info.wrap())
        {
            Some(PaddedKeyWrap::Kwp)
        } else if can_wrap(PaddedKeyWrap::Pad.mechanism_type()) {
            Some(PaddedKeyWrap::Pad)
        } else {
            None
        };
        let aes_key_gen = mechanisms.contains(&MechanismType::AES_KEY_GEN);
        let oaep_sha256 = rsa_oaep_wrap && aes_key_gen && probe_oaep_sha256(session, token)?;
        let padded_key_wrap_conforms = match padded_key_wrap {
            Some(key_wrap) => probe_key_wrap_conforms(session, token, key_wrap)?,
            None => false,
        };
        Ok(TokenCapabilities {
            rsa_oaep_wrap,
            oaep_sha256,
            padded_key_wrap,
            aes_key_gen,
            padded_key_wrap_conforms,
        })
    }

    /// The algorithm for `spec` with this token's OAEP hash (SHA-256 when the token has it,
    /// SHA-1 otherwise), whether or not the token can carry it out, and the default wrapping
    /// key spec.
    pub fn preferred(&self, spec: KeySpec) -> (WrappingAlgorithm, WrappingKeySpec) {
        let key_wrap = matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc);
        let algorithm = match (key_wrap, self.oaep_sha256) {
            (false, true) => WrappingAlgorithm::RsaesOaepSha256,
            (false, false) => WrappingAlgorithm::RsaesOaepSha1,
            (true, true) => WrappingAlgorithm::RsaAesKeyWrapSha256,
            (true, false) => WrappingAlgorithm::RsaAesKeyWrapSha1,
        };
        (algorithm, WrappingAlgorithm::default_for(spec).1)
    }

    /// The algorithm keyfleet uses for `spec` with this token: SHA-256 variants when the token
    /// has them, SHA-1 otherwise; RSA_AES_KEY_WRAP for RSA/ECC private keys. `material_len`:
    /// the length of a secret key (None for private keys, whose PKCS#8 length is unknown).
    pub fn choose(
        &self,
        spec: KeySpec,
        material_len: Option<usize>,
    ) -> Result<WrappingChoice, String> {
        let (algorithm, wrapping_key_spec) = self.preferred(spec);
        self.supports(algorithm, material_len)?;
        Ok(WrappingChoice {
            algorithm,
            wrapping_key_spec,
            sha1_only: !self.oaep_sha256,
        })
    }

    /// Whether the token can carry out `algorithm` for material of `material_len` bytes (None:
    /// unknown, a private key) so that KMS receives exactly the key; the error names the
    /// missing or faulty mechanism. What `check_wrapping` asks before KMS is called.
    pub fn supports(
        &self,
        algorithm: WrappingAlgorithm,
        material_len: Option<usize>,
    ) -> Result<(), String> {
        self.has_mechanisms(algorithm)?;
        let aligned = material_len.is_some_and(|len| len % 8 == 0);
        if let Some(key_wrap) = self.padded_key_wrap
            && algorithm.is_key_wrap()
            && !self.padded_key_wrap_conforms
            && !aligned
        {
            let name = key_wrap.name();
            return Err(format!(
                "the token's {name} is not RFC 5649 as {algorithm} needs: it zero-pads the \
                 key to a multiple of 8 bytes before wrapping (as SoftHSM 2.6 does), so KMS \
                 would receive the key followed by stray zero bytes; use a token whose AES key \
                 wrap with padding (CKM_AES_KEY_WRAP_KWP or _PAD) follows RFC 5649"
            ));
        }
        Ok(())
    }

    /// Whether the token has the mechanisms (and OAEP hash) `algorithm` is made of.
    pub(super) fn has_mechanisms(&self, algorithm: WrappingAlgorithm) -> Result<(), String> {
        let mut missing = Vec::new();
        if !self.rsa_oaep_wrap {
            missing.push("CKM_RSA_PKCS_OAEP (wrap)");
        } else if is_sha256(algorithm) && !self.oaep_sha256 {
            return Err(format!(
                "the token refuses {}; it wraps with RSA-OAEP only under SHA-1, so use {}",
                oaep_name(algorithm),
                if algorithm.is_key_wrap() {
                    WrappingAlgorithm::RsaAesKeyWrapSha1
                } else {
                    WrappingAlgorithm::RsaesOaepSha1
                }
            ));
        }
        if algorithm.is_key_wrap() {
            if self.padded_key_wrap.is_none() {
                missing.push("CKM_AES_KEY_WRAP_KWP or CKM_AES_KEY_WRAP_PAD (wrap)");
            }
            if !self.aes_key_gen {
                missing.push("CKM_AES_KEY_GEN");
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the token lacks {} needed for {algorithm}",
                missing.join(" and ")
            ))
        }
    }
}

/// Wraps a 12-byte session secret of known value under a session AES key of known value with
/// the token's padded key wrap and unwraps it here: RFC 5649 gives back exactly 12 bytes. Both
/// probe keys are random, exist only for this call, and protect nothing. A token that refuses
/// to create them (keys of known value are forbidden on some HSMs) is assumed to conform.
fn probe_key_wrap_conforms(
    session: &Session,
    token: &str,
    key_wrap: PaddedKeyWrap,
) -> Result<bool, Pkcs11Error> {
    let mut kek_value = [0u8; 32];
    let mut secret_value = [0u8; 12];
    if aws_lc_rs::rand::fill(&mut kek_value).is_err()
        || aws_lc_rs::rand::fill(&mut secret_value).is_err()
    {
        return Ok(true);
    }
    let attempt = || -> Result<Vec<u8>, CryptokiError> {
        let kek = Template::session_key(ObjectClass::SECRET_KEY, KeyType::AES)
            .on(&[Flag::Wrap])
            .with(Attribute::Value(kek_value.to_vec()));
        let kek = SessionObject::create(session, &kek)?;
        let secret = Template::session_key(ObjectClass::SECRET_KEY, KeyType::GENERIC_SECRET)
            .on(&[Flag::Extractable])
            .with(Attribute::Value(secret_value.to_vec()));
        let secret = SessionObject::create(session, &secret)?;
        session.wrap_key(&key_wrap.mechanism(), kek.handle, secret.handle)
    };
    match attempt() {
        Ok(wrapped) => {
            let Ok(kek) = AesKek::new(&AES_256, &kek_value) else {
                return Ok(true);
            };
            let mut out = vec![0u8; wrapped.len()];
            Ok(kek
                .unwrap_with_padding(&wrapped, &mut out)
                .is_ok_and(|unwrapped| unwrapped == secret_value))
        }
        Err(e @ CryptokiError::Pkcs11(rv, _)) if is_token_gone(rv) => Err(from_cryptoki(token, e)),
        Err(e) => {
            tracing::debug!(token, mechanism = key_wrap.name(), error = %e, "key wrap probe not possible; assuming RFC 5649");
            Ok(true)
        }
    }
}

/// Wraps an ephemeral AES key with RSA-OAEP-SHA-256 under a throw-away RSA public key.
fn probe_oaep_sha256(session: &Session, token: &str) -> Result<bool, Pkcs11Error> {
    let probe_key = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| {
        Pkcs11Error::OperationFailed {
            token: token.to_string(),
            function: "probe".to_string(),
            code: "RSA key generation for the OAEP probe failed".to_string(),
        }
    })?;
    let spki_der = probe_key
        .public_key()
        .as_der()
        .map(|d| d.as_ref().to_vec())
        .ok();
    let Some((n, e)) = spki_der.as_deref().and_then(spki::rsa_components) else {
        return Ok(false);
    };
    let attempt = || -> Result<Vec<u8>, CryptokiError> {
        let wrapping = import_wrapping_key(session, n, e)?;
        let aes = ephemeral_aes_key(session)?;
        let params = oaep_params(WrappingAlgorithm::RsaesOaepSha256);
        session.wrap_key(&Mechanism::RsaPkcsOaep(params), wrapping.handle, aes.handle)
    };
    match attempt() {
        Ok(_) => Ok(true),
        Err(e @ CryptokiError::Pkcs11(rv, _)) if is_token_gone(rv) => Err(from_cryptoki(token, e)),
        Err(CryptokiError::Pkcs11(rv, _)) if is_unsupported(rv) => Ok(false),
        Err(e) => {
            tracing::debug!(token, error = %e, "RSA-OAEP-SHA-256 probe failed; assuming SHA-1 only");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(oaep_sha256: bool, kwp: bool, conforms: bool) -> TokenCapabilities {
        TokenCapabilities {
            rsa_oaep_wrap: true,
            oaep_sha256,
            padded_key_wrap: kwp.then_some(PaddedKeyWrap::Pad),
            aes_key_gen: true,
            padded_key_wrap_conforms: conforms,
        }
    }

    #[test]
    fn the_kwp_mechanism_is_the_standard_value() {
        assert_eq!(*PaddedKeyWrap::Kwp.mechanism_type(), 0x210B);
        assert_eq!(
            PaddedKeyWrap::Kwp.mechanism().mechanism_type(),
            PaddedKeyWrap::Kwp.mechanism_type()
        );
        assert_eq!(
            PaddedKeyWrap::Pad.mechanism().mechanism_type(),
            MechanismType::AES_KEY_WRAP_PAD
        );
    }

    #[test]
    fn sha256_variants_are_preferred_and_sha1_only_when_the_token_has_nothing_else() {
        let full = caps(true, true, true);
        let choice = full.choose(KeySpec::Hmac256, Some(32)).expect("HMAC");
        assert_eq!(choice.algorithm, WrappingAlgorithm::RsaesOaepSha256);
        assert!(!choice.sha1_only);
        let choice = full.choose(KeySpec::EccNistP256, None).expect("ECC");
        assert_eq!(choice.algorithm, WrappingAlgorithm::RsaAesKeyWrapSha256);
        assert_eq!(choice.wrapping_key_spec, WrappingKeySpec::Rsa4096);

        let sha1 = caps(false, true, true);
        let choice = sha1
            .choose(KeySpec::SymmetricDefault, Some(32))
            .expect("AES");
        assert_eq!(choice.algorithm, WrappingAlgorithm::RsaesOaepSha1);
        assert!(choice.sha1_only);
        let refused = sha1
            .supports(WrappingAlgorithm::RsaesOaepSha256, Some(32))
            .expect_err("no SHA-256 OAEP");
        assert!(refused.contains("RSAES_OAEP_SHA_1"), "{refused}");
    }

    #[test]
    fn private_keys_need_a_conforming_key_wrap_with_padding() {
        let missing = caps(true, false, false)
            .choose(KeySpec::Rsa2048, None)
            .expect_err("no KWP");
        assert!(missing.contains("CKM_AES_KEY_WRAP_PAD (wrap)"), "{missing}");
        let softhsm = caps(false, true, false);
        let refused = softhsm
            .choose(KeySpec::Rsa2048, None)
            .expect_err("zero-padding KWP");
        assert!(refused.contains("not RFC 5649"), "{refused}");
        // Material whose length is a multiple of 8 is not padded: the same token carries it.
        assert!(
            softhsm
                .supports(WrappingAlgorithm::RsaAesKeyWrapSha1, Some(32))
                .is_ok()
        );
        assert!(
            softhsm
                .supports(WrappingAlgorithm::RsaAesKeyWrapSha1, Some(28))
                .is_err()
        );
        // A token with CKM_AES_KEY_WRAP_KWP that conforms (kryoptic) carries private keys.
        let kwp = TokenCapabilities {
            padded_key_wrap: Some(PaddedKeyWrap::Kwp),
            ..caps(true, true, true)
        };
        let choice = kwp.choose(KeySpec::Rsa2048, None).expect("KWP");
        assert_eq!(choice.algorithm, WrappingAlgorithm::RsaAesKeyWrapSha256);
        // The preference stays the token's hash even when it cannot be carried out.
        assert_eq!(
            softhsm.preferred(KeySpec::EccNistP256).0,
            WrappingAlgorithm::RsaAesKeyWrapSha1
        );
    }
}
