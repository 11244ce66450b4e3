//! An HSM-resident key as import material: found by label, checked against the key spec through its attributes, never extracted.

use std::fmt;
use std::sync::Arc;

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::capabilities::WrappingChoice;
use super::pool::{TokenPool, block_in_place, blocking};
use super::template::Template;
use super::wrap::wrap_for_kms;
use super::{Pkcs11Error, spki};
use crate::api::{KeyFamily, KeySpec};
use crate::api::{WrappingAlgorithm, WrappingKeySpec};
use crate::material::der::{self, Curve};
use crate::material::parse::spec_curve;
use crate::material::{
    FINGERPRINT_LABEL, ImportableMaterial, MaterialError, MaterialFingerprint, allowed_length,
    rsa_bits,
};

/// A key object in a token, checked against a key spec: the material of an `AwsKey` whose
/// plaintext never leaves the HSM. Holds no secret: label, public data, fingerprint.
pub struct HsmKey {
    pool: Arc<TokenPool>,
    label: String,
    spec: KeySpec,
    fingerprint: MaterialFingerprint,
    public_key_der: Option<Vec<u8>>,
    /// CKA_VALUE_LEN of a secret key (None for private keys).
    secret_len: Option<usize>,
    /// The algorithm for this key with this token, or why the token cannot wrap it.
    wrapping: Result<WrappingChoice, String>,
    sensitive: bool,
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmKey")
            .field("token", &self.pool.token_label())
            .field("label", &self.label)
            .field("spec", &format_args!("{}", self.spec))
            .field("fingerprint", &self.fingerprint.as_str())
            .field(
                "wrapping",
                &self.wrapping.as_ref().map(|c| c.algorithm.as_str()),
            )
            .finish_non_exhaustive()
    }
}

/// The attributes read from a key object (never CKA_VALUE).
struct Attributes(Vec<Attribute>);

impl Attributes {
    fn key_type(&self) -> Option<KeyType> {
        self.0.iter().find_map(|a| match a {
            Attribute::KeyType(t) => Some(*t),
            _ => None,
        })
    }

    fn flag(&self, wanted: AttributeType) -> Option<bool> {
        self.0.iter().find_map(|a| match (a, wanted) {
            (Attribute::Extractable(b), AttributeType::Extractable)
            | (Attribute::Sensitive(b), AttributeType::Sensitive)
            | (Attribute::WrapWithTrusted(b), AttributeType::WrapWithTrusted)
            | (Attribute::Sign(b), AttributeType::Sign) => Some(*b),
            _ => None,
        })
    }

    fn bytes(&self, wanted: AttributeType) -> Option<&[u8]> {
        self.0.iter().find_map(|a| match (a, wanted) {
            (Attribute::Modulus(v), AttributeType::Modulus)
            | (Attribute::PublicExponent(v), AttributeType::PublicExponent)
            | (Attribute::EcParams(v), AttributeType::EcParams)
            | (Attribute::EcPoint(v), AttributeType::EcPoint)
            | (Attribute::CheckValue(v), AttributeType::CheckValue)
            | (Attribute::Id(v), AttributeType::Id) => Some(v.as_slice()),
            _ => None,
        })
    }

    fn value_len(&self) -> Option<u64> {
        self.0.iter().find_map(|a| match a {
            Attribute::ValueLen(len) => Some(**len),
            _ => None,
        })
    }
}

/// Attributes read from the key object; CKA_VALUE is never asked for.
const KEY_ATTRIBUTES: [AttributeType; 11] = [
    AttributeType::KeyType,
    AttributeType::ValueLen,
    AttributeType::Extractable,
    AttributeType::Sensitive,
    AttributeType::WrapWithTrusted,
    AttributeType::Sign,
    AttributeType::Modulus,
    AttributeType::PublicExponent,
    AttributeType::EcParams,
    AttributeType::CheckValue,
    AttributeType::Id,
];

/// The object class a spec's key must have, and its name for messages.
fn expected_class(spec: KeySpec) -> (ObjectClass, &'static str) {
    match spec.family() {
        KeyFamily::Symmetric | KeyFamily::Hmac => (ObjectClass::SECRET_KEY, "secret key"),
        KeyFamily::Rsa | KeyFamily::Ecc => (ObjectClass::PRIVATE_KEY, "private key"),
    }
}

/// The HMAC mechanism of an HMAC spec.
fn hmac_mechanism(spec: KeySpec) -> Option<Mechanism<'static>> {
    match spec {
        KeySpec::Hmac224 => Some(Mechanism::Sha224Hmac),
        KeySpec::Hmac256 => Some(Mechanism::Sha256Hmac),
        KeySpec::Hmac384 => Some(Mechanism::Sha384Hmac),
        KeySpec::Hmac512 => Some(Mechanism::Sha512Hmac),
        _ => None,
    }
}

/// The handles of the objects of `class` labelled `label`.
pub(super) fn find_objects(
    session: &Session,
    label: &str,
    class: Option<ObjectClass>,
) -> Result<Vec<ObjectHandle>, CryptokiError> {
    let mut template = Template::default().with(Attribute::Label(label.as_bytes().to_vec()));
    if let Some(class) = class {
        template = template.with(Attribute::Class(class));
    }
    session.find_objects(&template)
}

/// What an `HsmKey` needs to refer to its token in messages.
struct Names<'a> {
    token: &'a str,
    label: &'a str,
    spec: KeySpec,
}

impl Names<'_> {
    fn mismatch(&self, detail: impl Into<String>) -> Pkcs11Error {
        Pkcs11Error::KeySpecMismatch {
            token: self.token.to_string(),
            label: self.label.to_string(),
            spec: self.spec,
            detail: detail.into(),
        }
    }

    fn not_wrappable(&self, detail: impl Into<String>) -> Pkcs11Error {
        Pkcs11Error::KeyNotWrappable {
            token: self.token.to_string(),
            label: self.label.to_string(),
            detail: detail.into(),
        }
    }

    fn unusable(&self, detail: impl Into<String>) -> Pkcs11Error {
        Pkcs11Error::KeyUnusable {
            token: self.token.to_string(),
            label: self.label.to_string(),
            detail: detail.into(),
        }
    }

    /// The one key object of the spec's class with this label.
    fn find_key(&self, session: &Session) -> Result<ObjectHandle, Pkcs11Error> {
        let (class, class_name) = expected_class(self.spec);
        let found = find_objects(session, self.label, Some(class))
            .map_err(|e| super::error::from_cryptoki(self.token, e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => {
                let others = find_objects(session, self.label, None)
                    .map_err(|e| super::error::from_cryptoki(self.token, e))?;
                if others.is_empty() {
                    Err(Pkcs11Error::KeyNotFound {
                        token: self.token.to_string(),
                        label: self.label.to_string(),
                        class: class_name,
                    })
                } else {
                    Err(self.mismatch(format!(
                        "the objects labelled `{}` are not a {class_name} ({} needs a {class_name})",
                        self.label, self.spec
                    )))
                }
            }
            many => Err(Pkcs11Error::KeyAmbiguous {
                token: self.token.to_string(),
                label: self.label.to_string(),
                class: class_name,
                count: many.len(),
            }),
        }
    }

    /// The value of the attribute `name`, or a mismatch saying the token does not report it.
    fn reported<T>(&self, value: Option<T>, name: &str) -> Result<T, Pkcs11Error> {
        value.ok_or_else(|| self.mismatch(format!("the token does not report {name}")))
    }

    /// `Ok` when the key fits, else a mismatch with `detail`.
    fn require(&self, fits: bool, detail: impl FnOnce() -> String) -> Result<(), Pkcs11Error> {
        if fits {
            Ok(())
        } else {
            Err(self.mismatch(detail()))
        }
    }

    fn check_type(&self, attributes: &Attributes, wanted: KeyType) -> Result<(), Pkcs11Error> {
        let t = self.reported(attributes.key_type(), "CKA_KEY_TYPE")?;
        self.require(t == wanted, || {
            format!("CKA_KEY_TYPE is {t}; {} needs {wanted}", self.spec)
        })
    }

    /// Type and length of a secret key; modulus size of an RSA key; curve of an EC key.
    fn check_spec(&self, attributes: &Attributes) -> Result<(), Pkcs11Error> {
        match self.spec.family() {
            KeyFamily::Symmetric | KeyFamily::Hmac => {
                let wanted = if self.spec.family() == KeyFamily::Symmetric {
                    KeyType::AES
                } else {
                    KeyType::GENERIC_SECRET
                };
                self.check_type(attributes, wanted)?;
                let (min, max) = allowed_length(self.spec).unwrap_or((0, usize::MAX));
                let len = self.reported(attributes.value_len(), "CKA_VALUE_LEN")?;
                let fits = usize::try_from(len).is_ok_and(|l| (min..=max).contains(&l));
                self.require(fits, || {
                    let range = if min == max {
                        format!("{min}")
                    } else {
                        format!("{min} to {max}")
                    };
                    format!(
                        "CKA_VALUE_LEN is {len} bytes; {} material must be {range} bytes",
                        self.spec
                    )
                })
            }
            KeyFamily::Rsa => {
                self.check_type(attributes, KeyType::RSA)?;
                let modulus =
                    self.reported(attributes.bytes(AttributeType::Modulus), "CKA_MODULUS")?;
                let bits = der::unsigned_bit_len(modulus);
                let wanted = rsa_bits(self.spec).unwrap_or(0);
                self.require(bits == wanted, || {
                    format!(
                        "the RSA modulus (CKA_MODULUS) has {bits} bits; {} needs {wanted}",
                        self.spec
                    )
                })
            }
            KeyFamily::Ecc => {
                self.check_type(attributes, KeyType::EC)?;
                let curve = self.curve()?;
                let params =
                    self.reported(attributes.bytes(AttributeType::EcParams), "CKA_EC_PARAMS")?;
                self.require(params == spki::ec_params(curve), || {
                    format!(
                        "CKA_EC_PARAMS names {}; {} needs {}",
                        describe_ec_params(params),
                        self.spec,
                        curve.name()
                    )
                })
            }
        }
    }

    fn curve(&self) -> Result<Curve, Pkcs11Error> {
        spec_curve(self.spec).ok_or_else(|| self.mismatch("not an ECC key spec"))
    }

    /// CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED, before any C_WrapKey.
    fn check_exportable(&self, attributes: &Attributes) -> Result<(), Pkcs11Error> {
        if attributes.flag(AttributeType::Extractable) == Some(false) {
            return Err(self.not_wrappable(
                "CKA_EXTRACTABLE is false: the token will not export the key, not even wrapped \
                 (the attribute cannot be set back to true; use a key generated with \
                 CKA_EXTRACTABLE true and CKA_SENSITIVE true)",
            ));
        }
        if attributes.flag(AttributeType::WrapWithTrusted) == Some(true) {
            return Err(self.not_wrappable(
                "CKA_WRAP_WITH_TRUSTED is true: only keys the token's security officer marked \
                 CKA_TRUSTED may wrap it, and KMS's wrapping key is a new session object for \
                 every import",
            ));
        }
        Ok(())
    }

    /// The DER SPKI of an RSA/ECC key: from the private key's public attributes (RSA) or the
    /// public key object with the same label or CKA_ID.
    fn public_key_der(
        &self,
        session: &Session,
        attributes: &Attributes,
    ) -> Result<Option<Vec<u8>>, Pkcs11Error> {
        match self.spec.family() {
            KeyFamily::Symmetric | KeyFamily::Hmac => Ok(None),
            KeyFamily::Rsa => {
                if let (Some(n), Some(e)) = (
                    attributes.bytes(AttributeType::Modulus),
                    attributes.bytes(AttributeType::PublicExponent),
                ) {
                    return Ok(Some(spki::rsa_spki(n, e)));
                }
                let public = self.public_object(session, attributes)?;
                match (
                    public.bytes(AttributeType::Modulus),
                    public.bytes(AttributeType::PublicExponent),
                ) {
                    (Some(n), Some(e)) => Ok(Some(spki::rsa_spki(n, e))),
                    _ => {
                        Err(self
                            .unusable("the RSA public key has no CKA_MODULUS/CKA_PUBLIC_EXPONENT"))
                    }
                }
            }
            KeyFamily::Ecc => {
                let curve = self.curve()?;
                let public = self.public_object(session, attributes)?;
                if public.bytes(AttributeType::EcParams) != Some(&spki::ec_params(curve)[..]) {
                    return Err(self.unusable(format!(
                        "the public key object is not on {} (CKA_EC_PARAMS)",
                        curve.name()
                    )));
                }
                let point = public
                    .bytes(AttributeType::EcPoint)
                    .and_then(|p| spki::ec_point(curve, p))
                    .ok_or_else(|| {
                        self.unusable("the public key object has no usable CKA_EC_POINT")
                    })?;
                Ok(Some(spki::ec_spki(curve, &point)))
            }
        }
    }

    /// The public key object paired with the private key (same label, else same CKA_ID).
    fn public_object(
        &self,
        session: &Session,
        private: &Attributes,
    ) -> Result<Attributes, Pkcs11Error> {
        let gone = |e| super::error::from_cryptoki(self.token, e);
        let mut found =
            find_objects(session, self.label, Some(ObjectClass::PUBLIC_KEY)).map_err(gone)?;
        if found.len() != 1
            && let Some(id) = private.bytes(AttributeType::Id).filter(|id| !id.is_empty())
        {
            let template =
                Template::of_class(ObjectClass::PUBLIC_KEY).with(Attribute::Id(id.to_vec()));
            found = session.find_objects(&template).map_err(gone)?;
        }
        let [handle] = found.as_slice() else {
            return Err(self.unusable(format!(
                "no single public key object labelled `{}` (or with the private key's CKA_ID); \
                 keyfleet needs it to verify KMS's public key",
                self.label
            )));
        };
        session
            .get_attributes(
                *handle,
                &[
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .map(Attributes)
            .map_err(gone)
    }

    /// See [`HsmKey::fingerprint`](ImportableMaterial::fingerprint) for the forms.
    fn fingerprint(
        &self,
        session: &Session,
        key: ObjectHandle,
        attributes: &Attributes,
        public_key_der: Option<&[u8]>,
    ) -> Result<MaterialFingerprint, Pkcs11Error> {
        if let Some(spki) = public_key_der {
            return Ok(MaterialFingerprint::of_public_key(spki));
        }
        let can_sign = attributes.flag(AttributeType::Sign) == Some(true);
        let gone = |e| super::error::from_cryptoki(self.token, e);
        if self.spec.family() == KeyFamily::Hmac {
            if !can_sign {
                return Err(self.unusable(
                    "CKA_SIGN is false: keyfleet fingerprints an HMAC key and checks KMS's MAC \
                     with C_Sign (CKM_SHA*_HMAC) in the token",
                ));
            }
            return match session.sign(&Mechanism::Sha256Hmac, key, FINGERPRINT_LABEL) {
                Ok(tag) => Ok(MaterialFingerprint::of_label_mac("hmac-sha256", &tag)),
                // Shorter than SHA-256's minimum key size in this token (HMAC_224 keys).
                Err(CryptokiError::Pkcs11(RvError::KeySizeRange, _)) => {
                    let mechanism = hmac_mechanism(self.spec)
                        .ok_or_else(|| self.mismatch("not an HMAC key spec"))?;
                    let tag = session
                        .sign(&mechanism, key, FINGERPRINT_LABEL)
                        .map_err(gone)?;
                    let prefix = format!("hmac-{}", self.spec.as_str().to_ascii_lowercase());
                    Ok(MaterialFingerprint::of_label_mac(&prefix, &tag))
                }
                Err(e) => Err(gone(e)),
            };
        }
        if can_sign {
            let tag = session
                .sign(&Mechanism::AesCMac, key, FINGERPRINT_LABEL)
                .map_err(gone)?;
            return Ok(MaterialFingerprint::of_label_mac("aes-cmac", &tag));
        }
        match attributes.bytes(AttributeType::CheckValue) {
            Some(kcv) if !kcv.is_empty() => Ok(MaterialFingerprint::of_check_value(kcv)),
            _ => Err(self.unusable(
                "CKA_SIGN is false and the token reports no CKA_CHECK_VALUE: keyfleet \
                 fingerprints an AES key with C_Sign (CKM_AES_CMAC) in the token",
            )),
        }
    }
}

/// A curve named by CKA_EC_PARAMS, for messages.
fn describe_ec_params(params: &[u8]) -> String {
    match der::single(params) {
        Some(tlv) if tlv.tag == der::OID => format!("curve {}", der::oid_to_string(tlv.value)),
        _ => "explicit curve parameters".to_string(),
    }
}

impl HsmKey {
    /// Finds the key labelled `label` in the pool's token and checks it against `spec`
    /// through its attributes (blocking). Its value is never read.
    pub fn open(pool: &Arc<TokenPool>, spec: KeySpec, label: &str) -> Result<HsmKey, Pkcs11Error> {
        let names = Names {
            token: pool.token_label(),
            label,
            spec,
        };
        let (fingerprint, public_key_der, sensitive, secret_len) =
            pool.with_session(|session| {
                let key = names.find_key(session)?;
                let attributes = session
                    .get_attributes(key, &KEY_ATTRIBUTES)
                    .map(Attributes)
                    .map_err(|e| pool.error(e))?;
                names.check_spec(&attributes)?;
                names.check_exportable(&attributes)?;
                let public_key_der = names.public_key_der(session, &attributes)?;
                let fingerprint =
                    names.fingerprint(session, key, &attributes, public_key_der.as_deref())?;
                let sensitive = attributes.flag(AttributeType::Sensitive) == Some(true);
                let secret_len = match spec.family() {
                    KeyFamily::Symmetric | KeyFamily::Hmac => attributes
                        .value_len()
                        .and_then(|len| usize::try_from(len).ok()),
                    KeyFamily::Rsa | KeyFamily::Ecc => None,
                };
                Ok((fingerprint, public_key_der, sensitive, secret_len))
            })?;
        Ok(HsmKey {
            pool: Arc::clone(pool),
            label: label.to_string(),
            spec,
            fingerprint,
            public_key_der,
            secret_len,
            wrapping: pool.capabilities().choose(spec, secret_len),
            sensitive,
        })
    }

    /// [`HsmKey::open`] on a blocking thread.
    pub async fn open_async(
        pool: Arc<TokenPool>,
        spec: KeySpec,
        label: String,
    ) -> Result<HsmKey, Pkcs11Error> {
        let token = pool.token_label().to_string();
        blocking(&token, move || HsmKey::open(&pool, spec, &label)).await
    }

    /// The label of the key object.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The token pool the key lives in.
    pub fn pool(&self) -> &Arc<TokenPool> {
        &self.pool
    }

    /// The wrapping algorithm keyfleet chose for this key with this token, or
    /// `Pkcs11KeyNotWrappable` naming the mechanism the token lacks or gets wrong. The key is
    /// usable for verification (public key, HMAC) either way.
    pub fn wrapping(&self) -> Result<WrappingChoice, Pkcs11Error> {
        self.wrapping
            .clone()
            .map_err(|detail| self.names().not_wrappable(detail))
    }

    /// Whether CKA_SENSITIVE is true (its value cannot be read out of the token).
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }

    fn names(&self) -> Names<'_> {
        Names {
            token: self.pool.token_label(),
            label: &self.label,
            spec: self.spec,
        }
    }
}

impl ImportableMaterial for HsmKey {
    fn spec(&self) -> KeySpec {
        self.spec
    }

    /// * RSA/ECC: `sha256:` over the public key's DER SPKI, exactly as for a Secret's key.
    /// * HMAC: `hmac-sha256:` HMAC-SHA256 of [`FINGERPRINT_LABEL`] computed by the token
    ///   (`C_Sign`): the same value a Secret holding the same bytes gets.
    /// * AES (SYMMETRIC_DEFAULT): `aes-cmac:` AES-CMAC of the label by the token (the key
    ///   needs CKA_SIGN), else `kcv:` the token's CKA_CHECK_VALUE (3 bytes, enough to notice
    ///   another key, not to identify one).
    ///
    /// All are computed once, when the key is opened; none reveals the key.
    fn fingerprint(&self) -> MaterialFingerprint {
        self.fingerprint.clone()
    }

    fn check_wrapping(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<(), MaterialError> {
        algorithm.check_compatible(self.spec, wrapping_key_spec)?;
        self.pool
            .capabilities()
            .supports(algorithm, self.secret_len)
            .map_err(|detail| MaterialError::Pkcs11(self.names().not_wrappable(detail)))
    }

    fn wrap(
        &self,
        algorithm: WrappingAlgorithm,
        wrapping_public_key_der: &[u8],
    ) -> Result<Vec<u8>, MaterialError> {
        let (modulus, exponent) =
            spki::rsa_components(wrapping_public_key_der).ok_or_else(|| {
                MaterialError::InvalidWrappingKey {
                    detail: "not a DER SubjectPublicKeyInfo of an RSA key".to_string(),
                }
            })?;
        let bits = der::unsigned_bit_len(&modulus);
        let wrapping_key_spec =
            WrappingKeySpec::from_bits(bits).ok_or_else(|| MaterialError::InvalidWrappingKey {
                detail: format!(
                    "the RSA key has {bits} bits; KMS wrapping keys have 2048, 3072 or 4096"
                ),
            })?;
        // The mechanisms only: `check_wrapping`, which the import path calls before asking
        // KMS for a wrapping key, also refuses a token whose key wrap would corrupt the key.
        algorithm.check_compatible(self.spec, wrapping_key_spec)?;
        let names = self.names();
        self.pool
            .capabilities()
            .has_mechanisms(algorithm)
            .map_err(|detail| MaterialError::Pkcs11(names.not_wrappable(detail)))?;
        block_in_place(|| {
            self.pool.with_session(|session| {
                let key = names.find_key(session)?;
                let key_wrap = self.pool.capabilities().padded_key_wrap;
                wrap_for_kms(session, key, algorithm, key_wrap, modulus, exponent)
                    .map_err(|failure| failure.into_error(names.token, names.label))
            })
        })
        .map_err(MaterialError::Pkcs11)
    }

    fn public_key_der(&self) -> Option<Vec<u8>> {
        self.public_key_der.clone()
    }

    /// The token's choice (SHA-1 variants on a token without SHA-256 OAEP), also when the
    /// token cannot carry it out: `check_wrapping` then names the reason.
    fn preferred_wrapping(&self) -> Option<(WrappingAlgorithm, WrappingKeySpec)> {
        Some(self.pool.capabilities().preferred(self.spec))
    }

    fn hmac(&self, message: &[u8]) -> Option<Vec<u8>> {
        let mechanism = hmac_mechanism(self.spec)?;
        let names = self.names();
        let result = block_in_place(|| {
            self.pool.with_session(|session| {
                let key = names.find_key(session)?;
                session
                    .sign(&mechanism, key, message)
                    .map_err(|e| self.pool.error(e))
            })
        });
        match result {
            Ok(mac) => Some(mac),
            Err(e) => {
                tracing::warn!(token = names.token, label = names.label, reason = e.reason(), error = %e, "C_Sign (HMAC) in the token failed");
                None
            }
        }
    }
}
