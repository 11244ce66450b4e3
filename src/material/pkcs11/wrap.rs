//! `C_WrapKey` under KMS's wrapping key: RSA-OAEP for secret keys, RSA-AES key wrap composed in the token for private keys.
//!
//! Every object created here is a session object (`CKA_TOKEN` false) destroyed before the
//! call returns; only ciphertext leaves the token.

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::Pkcs11Error;
use super::capabilities::{PaddedKeyWrap, is_unsupported};
use super::error::{ckr_name, from_cryptoki, is_token_gone};
use super::template::{Flag, Template};
use crate::api::WrappingAlgorithm;
/// RSA-OAEP parameters of a KMS wrapping algorithm (hash and MGF1 hash alike, no label).
pub(super) fn oaep_params(algorithm: WrappingAlgorithm) -> PkcsOaepParams<'static> {
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            PkcsOaepParams::new(
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                PkcsOaepSource::empty(),
            )
        }
        WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => {
            PkcsOaepParams::new(
                MechanismType::SHA1,
                PkcsMgfType::MGF1_SHA1,
                PkcsOaepSource::empty(),
            )
        }
    }
}

/// Human-readable OAEP hash of an algorithm, for messages.
pub(super) fn oaep_name(algorithm: WrappingAlgorithm) -> &'static str {
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            "CKM_RSA_PKCS_OAEP with SHA-256/MGF1-SHA-256"
        }
        WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => {
            "CKM_RSA_PKCS_OAEP with SHA-1/MGF1-SHA-1"
        }
    }
}

/// Destroys a session object when dropped (ephemeral keys, KMS's imported wrapping key).
pub(super) struct SessionObject<'s> {
    pub session: &'s Session,
    pub handle: cryptoki::object::ObjectHandle,
}

impl<'s> SessionObject<'s> {
    /// Creates a session object (`C_CreateObject`) from `template`, destroyed when dropped.
    pub(super) fn create(
        session: &'s Session,
        template: &[Attribute],
    ) -> Result<SessionObject<'s>, CryptokiError> {
        let handle = session.create_object(template)?;
        Ok(SessionObject { session, handle })
    }
}

impl Drop for SessionObject<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.session.destroy_object(self.handle) {
            tracing::debug!(error = %e, "could not destroy a PKCS#11 session object");
        }
    }
}

/// Imports an RSA public key (DER SPKI) as a session object that may wrap.
pub(super) fn import_wrapping_key<'s>(
    session: &'s Session,
    modulus: Vec<u8>,
    public_exponent: Vec<u8>,
) -> Result<SessionObject<'s>, CryptokiError> {
    let template = Template::session_key(ObjectClass::PUBLIC_KEY, KeyType::RSA)
        .off(&[Flag::Private])
        .on(&[Flag::Wrap, Flag::Encrypt])
        .off(&[Flag::Verify])
        .with(Attribute::Modulus(modulus))
        .with(Attribute::PublicExponent(public_exponent));
    SessionObject::create(session, &template)
}

/// Generates an ephemeral AES-256 session key that can only wrap, is sensitive, and can
/// itself be exported only by wrapping.
pub(super) fn ephemeral_aes_key(session: &Session) -> Result<SessionObject<'_>, CryptokiError> {
    let template = Template::session_key(ObjectClass::SECRET_KEY, KeyType::AES)
        .with(Attribute::ValueLen(32.into()))
        .on(&[
            Flag::Private,
            Flag::Sensitive,
            Flag::Extractable,
            Flag::Wrap,
        ])
        .off(&[
            Flag::Unwrap,
            Flag::Encrypt,
            Flag::Decrypt,
            Flag::Sign,
            Flag::Verify,
            Flag::Derive,
        ]);
    let handle = session.generate_key(&Mechanism::AesKeyGen, &template)?;
    Ok(SessionObject { session, handle })
}

/// What went wrong in one wrapping step, before it is given the key's label.
pub(super) enum WrapFailure {
    /// The token refused: the detail names the attribute or mechanism.
    NotWrappable(String),
    /// The token or session went away, or another failure.
    Call(CryptokiError),
}

impl WrapFailure {
    pub(super) fn into_error(self, token: &str, label: &str) -> Pkcs11Error {
        match self {
            WrapFailure::NotWrappable(detail) => Pkcs11Error::KeyNotWrappable {
                token: token.to_string(),
                label: label.to_string(),
                detail,
            },
            WrapFailure::Call(e) => from_cryptoki(token, e),
        }
    }
}

/// Classifies a `C_WrapKey` failure of `mechanism` over the key.
fn wrap_failure(step: &str, mechanism: &str, error: CryptokiError) -> WrapFailure {
    match error {
        CryptokiError::Pkcs11(RvError::KeyUnextractable, _) => WrapFailure::NotWrappable(
            "CKA_EXTRACTABLE is false: the token will not export the key, not even wrapped \
             (the attribute cannot be set back to true; generate the key with CKA_EXTRACTABLE \
             true and CKA_SENSITIVE true)"
                .to_string(),
        ),
        CryptokiError::Pkcs11(RvError::KeyNotWrappable, _) => WrapFailure::NotWrappable(format!(
            "the token refuses to wrap it with {mechanism} ({step}: CKR_KEY_NOT_WRAPPABLE)"
        )),
        CryptokiError::Pkcs11(rv, _) if is_unsupported(rv) && !is_token_gone(rv) => {
            WrapFailure::NotWrappable(format!(
                "the token refuses {mechanism} ({step}: {})",
                ckr_name(rv)
            ))
        }
        other => WrapFailure::Call(other),
    }
}

/// `C_WrapKey` of `key` for `ImportKeyMaterial` under KMS's RSA wrapping key (`modulus`,
/// `public_exponent` from `GetParametersForImport`).
///
/// * `RSAES_OAEP_SHA_*`: `C_WrapKey(CKM_RSA_PKCS_OAEP)` of the secret key: the ciphertext of
///   its `CKA_VALUE`.
/// * `RSA_AES_KEY_WRAP_SHA_*`: composed in the token, exactly the format of
///   `CKM_RSA_AES_KEY_WRAP` and of [`crate::material::KeyMaterial::wrap`]:
///   `OAEP(ephemeral AES-256 key) || AES-KWP(ephemeral key, PKCS#8 private key)`, with the
///   token's `key_wrap` (RFC 5649). cryptoki 0.12 has no `CKM_RSA_AES_KEY_WRAP` mechanism
///   (it drops unknown mechanisms from the list and refuses standard ones as vendor
///   mechanisms), so the composed path is used on every token; the ephemeral key is a
///   sensitive session object that only wraps.
pub(super) fn wrap_for_kms(
    session: &Session,
    key: ObjectHandle,
    algorithm: WrappingAlgorithm,
    key_wrap: Option<PaddedKeyWrap>,
    modulus: Vec<u8>,
    public_exponent: Vec<u8>,
) -> Result<Vec<u8>, WrapFailure> {
    let oaep = Mechanism::RsaPkcsOaep(oaep_params(algorithm));
    let kms_key = import_wrapping_key(session, modulus, public_exponent).map_err(|e| {
        wrap_failure(
            "importing KMS's wrapping key as a session object",
            "CKO_PUBLIC_KEY",
            e,
        )
    })?;
    if !algorithm.is_key_wrap() {
        return session
            .wrap_key(&oaep, kms_key.handle, key)
            .map_err(|e| wrap_failure("wrapping the key", oaep_name(algorithm), e));
    }
    let Some(key_wrap) = key_wrap else {
        return Err(WrapFailure::NotWrappable(format!(
            "the token lacks CKM_AES_KEY_WRAP_KWP or CKM_AES_KEY_WRAP_PAD (wrap) needed for \
             {algorithm}"
        )));
    };
    let aes = ephemeral_aes_key(session)
        .map_err(|e| wrap_failure("generating the ephemeral AES-256 key", "CKM_AES_KEY_GEN", e))?;
    let wrapped_key = session
        .wrap_key(&key_wrap.mechanism(), aes.handle, key)
        .map_err(|e| wrap_failure("wrapping the private key", key_wrap.name(), e))?;
    let mut out = session
        .wrap_key(&oaep, kms_key.handle, aes.handle)
        .map_err(|e| wrap_failure("wrapping the ephemeral AES key", oaep_name(algorithm), e))?;
    out.extend_from_slice(&wrapped_key);
    Ok(out)
}
