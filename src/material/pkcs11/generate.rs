//! Generating a key of a spec inside the token (`keyMaterial.pkcs11.generate`): sensitive, exportable only by wrapping, never over an existing label.

use std::sync::{Arc, PoisonError};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;

use super::key::{HsmKey, find_objects};
use super::pool::{TokenPool, blocking};
use super::{Pkcs11Error, spki};
use crate::api::{KeyFamily, KeySpec};
use crate::material::parse::spec_curve;
use crate::material::{allowed_length, rsa_bits};

/// Whether [`open_or_generate`] found the key or made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The token already held an object with the label.
    Found,
    /// keyfleet generated the key in the token.
    Generated,
}

/// Opens the key labelled `label`; when the token has no object of that label at all,
/// generates one for `spec` first (blocking). An existing object is never replaced: a label
/// that is taken by something else is refused by [`HsmKey::open`] as it stands.
///
/// Generated keys: `CKA_TOKEN` true, `CKA_PRIVATE` true, `CKA_SENSITIVE` true (the value can
/// never be read), `CKA_EXTRACTABLE` true (the only way out is `C_WrapKey`, which is how KMS
/// receives it), `CKA_WRAP_WITH_TRUSTED` false (KMS's wrapping key is a session object keyfleet
/// imports per import and cannot be CKA_TRUSTED without the security officer's PIN), and
/// only the usages keyfleet needs: CKA_SIGN for HMAC and AES keys (fingerprint and MAC
/// check), CKA_SIGN/CKA_VERIFY for key pairs.
pub fn open_or_generate(
    pool: &Arc<TokenPool>,
    spec: KeySpec,
    label: &str,
) -> Result<(HsmKey, KeyOrigin), Pkcs11Error> {
    // One generation at a time per token, so two reconciles cannot both create the label.
    let _generating = pool
        .generation
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let exists = pool.with_session(|session| {
        find_objects(session, label, None)
            .map(|found| !found.is_empty())
            .map_err(|e| pool.error(e))
    })?;
    if exists {
        return Ok((HsmKey::open(pool, spec, label)?, KeyOrigin::Found));
    }
    pool.with_session(|session| generate(session, spec, label).map_err(|e| pool.error(e)))?;
    tracing::info!(token = pool.token_label(), label, spec = %spec, "generated a key in the PKCS#11 token");
    Ok((HsmKey::open(pool, spec, label)?, KeyOrigin::Generated))
}

/// [`open_or_generate`] on a blocking thread.
pub async fn open_or_generate_async(
    pool: Arc<TokenPool>,
    spec: KeySpec,
    label: String,
) -> Result<(HsmKey, KeyOrigin), Pkcs11Error> {
    let token = pool.token_label().to_string();
    blocking(&token, move || open_or_generate(&pool, spec, &label)).await
}

/// A random CKA_ID shared by the two halves of a key pair.
fn random_id() -> Vec<u8> {
    let mut id = vec![0u8; 16];
    if aws_lc_rs::rand::fill(&mut id).is_err() {
        id.clear();
    }
    id
}

fn generate(session: &Session, spec: KeySpec, label: &str) -> Result<(), cryptoki::error::Error> {
    let label = label.as_bytes().to_vec();
    let id = random_id();
    let private_common = |extra: &mut Vec<Attribute>| {
        extra.extend([
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(false),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
    };
    // The public half of a key pair: a token object anyone logged in may read, for verifying.
    let public_common = |extra: Vec<Attribute>| {
        let mut template = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
            Attribute::Verify(true),
        ];
        template.extend(extra);
        template
    };
    match spec.family() {
        KeyFamily::Symmetric | KeyFamily::Hmac => {
            let (mechanism, key_type) = if spec.family() == KeyFamily::Symmetric {
                (Mechanism::AesKeyGen, KeyType::AES)
            } else {
                (Mechanism::GenericSecretKeyGen, KeyType::GENERIC_SECRET)
            };
            let len = allowed_length(spec).map_or(32, |(min, _)| min);
            let mut template = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::ValueLen((len as u64).into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Wrap(false),
            ];
            private_common(&mut template);
            session.generate_key(&mechanism, &template)?;
        }
        KeyFamily::Rsa => {
            let bits = rsa_bits(spec).unwrap_or(2048) as u64;
            let public = public_common(vec![
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Encrypt(true),
            ]);
            let mut private = vec![Attribute::Sign(true), Attribute::Decrypt(true)];
            private_common(&mut private);
            session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
        }
        KeyFamily::Ecc => {
            let params = spec_curve(spec).map(spki::ec_params).unwrap_or_default();
            let public = public_common(vec![Attribute::EcParams(params)]);
            let mut private = vec![Attribute::Sign(true)];
            private_common(&mut private);
            session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
        }
    }
    Ok(())
}
