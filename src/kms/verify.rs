//! Verify step: proof that KMS holds the Secret's material — GetPublicKey for RSA/ECC keys,
//! GenerateMac on a probe message for HMAC keys, the KeyMaterialId for symmetric keys. The KMS
//! reads are in [`gather`]; the comparison ([`judge`]) is pure.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MacAlgorithmSpec;

use super::{Client, KmsError};
use crate::api::{KeyFamily, KeySpec};
use crate::material::ImportableMaterial;
use crate::plan::{KeyState, ObservedKey};

/// The message GenerateMac is asked to authenticate; fixed, so its MAC is comparable.
pub const PROBE_MESSAGE: &[u8] = b"keyfleet material verification probe v1";

/// How the material was (or would be) verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// KMS GetPublicKey equals the public key derived from the Secret (RSA, ECC).
    PublicKey,
    /// KMS GenerateMac on a probe equals a local HMAC with the Secret's material (HMAC).
    Mac,
    /// KMS CurrentKeyMaterialId equals the one recorded at import (symmetric).
    KeyMaterialId,
}

impl Method {
    pub fn for_spec(spec: KeySpec) -> Method {
        match spec.family() {
            KeyFamily::Rsa | KeyFamily::Ecc => Method::PublicKey,
            KeyFamily::Hmac => Method::Mac,
            KeyFamily::Symmetric => Method::KeyMaterialId,
        }
    }

    /// The `MaterialVerified=True` reason.
    pub fn verified_reason(self) -> &'static str {
        match self {
            Method::PublicKey => "PublicKeyMatches",
            Method::Mac => "MacMatches",
            Method::KeyMaterialId => "KeyMaterialIdMatches",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Method::PublicKey => "KMS GetPublicKey",
            Method::Mac => "KMS GenerateMac on a probe message",
            Method::KeyMaterialId => "KMS KeyMaterialId",
        }
    }
}

/// What KMS answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// DER SubjectPublicKeyInfo from GetPublicKey.
    PublicKey(Vec<u8>),
    /// GenerateMac of [`PROBE_MESSAGE`].
    Mac(Vec<u8>),
    /// CurrentKeyMaterialId from DescribeKey (None: KMS does not report it).
    KeyMaterialId(Option<String>),
    /// KMS would not answer (no permission, not supported, key not usable): why.
    Unavailable(String),
}

/// What KMS must hold.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub material: &'a dyn ImportableMaterial,
    /// KeyMaterialId recorded at import (the primary's, for a replica).
    pub key_material_id: Option<&'a str>,
    /// The KeyMaterialId before the last rotation: a key still reporting it is catching up.
    pub previous_key_material_id: Option<&'a str>,
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Verified(Method),
    /// KMS holds other material; the detail says what differs (never secret values).
    Mismatch {
        method: Method,
        detail: String,
    },
    /// Could not be checked; not an error.
    Unverified {
        method: Method,
        why: String,
    },
}

/// Compares KMS's answer with the Secret's material (pure).
pub fn judge(expected: &Expected<'_>, evidence: &Evidence) -> Verification {
    let method = Method::for_spec(expected.material.spec());
    let unverified = |why: String| Verification::Unverified { method, why };
    let mismatch = |detail: String| Verification::Mismatch { method, detail };
    match evidence {
        Evidence::Unavailable(why) => unverified(why.clone()),
        Evidence::PublicKey(kms) => match expected.material.public_key_der() {
            Some(local) if &local == kms => Verification::Verified(method),
            Some(local) => mismatch(format!(
                "GetPublicKey returns public key {} but the Secret's private key has public key {}",
                public_key_id(kms),
                public_key_id(&local)
            )),
            None => unverified("the Secret's material has no public key".into()),
        },
        Evidence::Mac(kms) => match expected.material.hmac(PROBE_MESSAGE) {
            Some(local) if aws_lc_rs::constant_time::verify_slices_are_equal(&local, kms).is_ok() => {
                Verification::Verified(method)
            }
            Some(_) => mismatch(
                "GenerateMac on the probe message differs from the HMAC computed with the Secret's material"
                    .into(),
            ),
            None => unverified("the Secret's material is not an HMAC key".into()),
        },
        Evidence::KeyMaterialId(None) => {
            unverified("KMS does not report a KeyMaterialId for this key".into())
        }
        Evidence::KeyMaterialId(Some(kms)) => match expected.key_material_id {
            None => unverified("no KeyMaterialId was recorded at import to compare with".into()),
            Some(recorded) if recorded == kms => Verification::Verified(method),
            Some(_) if expected.previous_key_material_id == Some(kms.as_str()) => unverified(format!(
                "KMS still reports the material before the last rotation ({kms}); the rotation is propagating"
            )),
            Some(recorded) => mismatch(format!(
                "KMS reports current key material {kms}, keyfleet imported {recorded}"
            )),
        },
    }
}

/// A short, non-secret name for a public key: the start of its SHA-256.
fn public_key_id(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    format!("sha256:{}", hex::encode(&digest.as_ref()[..8]))
}

fn mac_algorithm(spec: KeySpec) -> Option<MacAlgorithmSpec> {
    Some(match spec {
        KeySpec::Hmac224 => MacAlgorithmSpec::HmacSha224,
        KeySpec::Hmac256 => MacAlgorithmSpec::HmacSha256,
        KeySpec::Hmac384 => MacAlgorithmSpec::HmacSha384,
        KeySpec::Hmac512 => MacAlgorithmSpec::HmacSha512,
        _ => return None,
    })
}

/// Asks KMS for the evidence the key's spec calls for. Missing permissions, unsupported calls
/// and unusable key states become [`Evidence::Unavailable`]; throttling and outages are errors
/// (retried).
pub async fn gather(
    client: &Client,
    observed: &ObservedKey,
    spec: KeySpec,
) -> Result<Evidence, KmsError> {
    let method = Method::for_spec(spec);
    if method == Method::KeyMaterialId {
        return Ok(Evidence::KeyMaterialId(
            observed.current_key_material_id.clone(),
        ));
    }
    if observed.state != KeyState::Enabled {
        return Ok(Evidence::Unavailable(format!(
            "the key is {}; {} needs an Enabled key",
            observed.state.as_str(),
            method.describe()
        )));
    }
    let answer = match mac_algorithm(spec) {
        None => client
            .get_public_key()
            .key_id(&observed.identity.key_id)
            .send()
            .await
            .map(|out| {
                Evidence::PublicKey(out.public_key.map(Blob::into_inner).unwrap_or_default())
            })
            .map_err(|e| KmsError::from_sdk("GetPublicKey", e)),
        Some(algorithm) => client
            .generate_mac()
            .key_id(&observed.identity.key_id)
            .mac_algorithm(algorithm)
            .message(Blob::new(PROBE_MESSAGE))
            .send()
            .await
            .map(|out| Evidence::Mac(out.mac.map(Blob::into_inner).unwrap_or_default()))
            .map_err(|e| KmsError::from_sdk("GenerateMac", e)),
    };
    match answer {
        Ok(evidence) => Ok(evidence),
        Err(e) if e.is_transient() => Err(e),
        Err(e @ KmsError::NotFound { .. }) => Err(e),
        Err(e) => Ok(Evidence::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MaterialEncoding;
    use crate::material::KeyMaterial;
    use keyfleet_testkit::material::generate_secret_value;

    fn material(spec: KeySpec) -> KeyMaterial {
        KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, &generate_secret_value(spec))
            .unwrap()
    }

    fn expected(m: &KeyMaterial) -> Expected<'_> {
        Expected {
            material: m,
            key_material_id: Some("km-1"),
            previous_key_material_id: Some("km-0"),
        }
    }

    #[test]
    fn public_keys_are_compared_with_the_secrets_private_key() {
        let mine = material(KeySpec::EccNistP256);
        let other = material(KeySpec::EccNistP256);
        let e = expected(&mine);
        let same = Evidence::PublicKey(mine.public_key_der().unwrap());
        assert_eq!(judge(&e, &same), Verification::Verified(Method::PublicKey));
        let different = Evidence::PublicKey(other.public_key_der().unwrap());
        assert!(matches!(
            judge(&e, &different),
            Verification::Mismatch { method: Method::PublicKey, detail } if detail.contains("GetPublicKey")
        ));
    }

    #[test]
    fn macs_are_compared_with_a_local_hmac() {
        let mine = material(KeySpec::Hmac384);
        let other = material(KeySpec::Hmac384);
        let e = expected(&mine);
        let same = Evidence::Mac(mine.hmac(PROBE_MESSAGE).unwrap());
        assert_eq!(judge(&e, &same), Verification::Verified(Method::Mac));
        let different = Evidence::Mac(other.hmac(PROBE_MESSAGE).unwrap());
        assert!(matches!(
            judge(&e, &different),
            Verification::Mismatch {
                method: Method::Mac,
                ..
            }
        ));
    }

    #[test]
    fn key_material_ids_are_compared_with_the_recorded_one() {
        let m = material(KeySpec::SymmetricDefault);
        let e = expected(&m);
        let id = |s: &str| Evidence::KeyMaterialId(Some(s.into()));
        assert_eq!(
            judge(&e, &id("km-1")),
            Verification::Verified(Method::KeyMaterialId)
        );
        assert!(matches!(
            judge(&e, &id("km-9")),
            Verification::Mismatch { detail, .. } if detail.contains("km-9") && detail.contains("km-1")
        ));
        // The material before the last rotation is a rotation catching up, not a mismatch.
        assert!(matches!(
            judge(&e, &id("km-0")),
            Verification::Unverified { .. }
        ));
        assert!(matches!(
            judge(&e, &Evidence::KeyMaterialId(None)),
            Verification::Unverified { .. }
        ));
        let unrecorded = Expected {
            key_material_id: None,
            ..e
        };
        assert!(matches!(
            judge(&unrecorded, &id("km-1")),
            Verification::Unverified { .. }
        ));
    }

    #[test]
    fn unavailable_evidence_is_unverified_not_an_error() {
        let m = material(KeySpec::Rsa2048);
        let v = judge(
            &expected(&m),
            &Evidence::Unavailable("access denied".into()),
        );
        assert_eq!(
            v,
            Verification::Unverified {
                method: Method::PublicKey,
                why: "access denied".into()
            }
        );
    }
}
