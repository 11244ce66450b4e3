//! Material from an HSM: keys kept sensitive in SoftHSM2 (and kryoptic, for RSA/ECC private keys
//! through its RFC 5649 key wrap) are imported into LocalStack KMS with `C_WrapKey` only, and KMS
//! then agrees with the HSM; the PKCS#11 refusals are precise.
//!
//! Module level (keyfleet's PKCS#11 key source and the KMS API directly, no controller).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature;
use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec as KmsKeySpec, KeyUsageType,
    WrappingKeySpec as KmsWrappingKeySpec,
};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use keyfleet::api::{KeyFamily, KeySpec};
use keyfleet::api::{MaterialEncoding, WrappingAlgorithm, WrappingKeySpec};
use keyfleet::material::pkcs11::{
    HsmKey, KeyOrigin, PaddedKeyWrap, Pkcs11Error, TokenCapabilities, TokenConfig, TokenPool,
    TokenSelector, open_or_generate,
};
use keyfleet::material::{ImportableMaterial, KeyMaterial, MaterialError};
use support::kms_use::generate_mac;
use support::localstack::{kms_client, unique};
use support::softhsm::{
    self, TestToken, assert_kms_agrees, assert_value_unreadable, create_key, create_key_with,
};
use zeroize::Zeroizing;

fn usage(spec: KeySpec) -> KeyUsageType {
    match spec.family() {
        KeyFamily::Symmetric => KeyUsageType::EncryptDecrypt,
        KeyFamily::Hmac => KeyUsageType::GenerateVerifyMac,
        KeyFamily::Rsa | KeyFamily::Ecc => KeyUsageType::SignVerify,
    }
}

async fn create_external_key(kms: &aws_sdk_kms::Client, spec: KeySpec) -> String {
    let created = kms
        .create_key()
        .origin(aws_sdk_kms::types::OriginType::External)
        .key_spec(KmsKeySpec::from(spec.as_str()))
        .key_usage(usage(spec))
        .description(unique("keyfleet-pkcs11"))
        .send()
        .await
        .expect("CreateKey EXTERNAL");
    created
        .key_metadata()
        .expect("metadata")
        .key_id()
        .to_string()
}

/// GetParametersForImport for `algorithm`, `material.wrap` under KMS's key, ImportKeyMaterial.
async fn import(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    material: &dyn ImportableMaterial,
    algorithm: WrappingAlgorithm,
    wrapping_key_spec: WrappingKeySpec,
) -> Result<(), aws_sdk_kms::error::SdkError<ImportKeyMaterialError>> {
    let params = kms
        .get_parameters_for_import()
        .key_id(key_id)
        .wrapping_algorithm(AlgorithmSpec::from(algorithm.as_str()))
        .wrapping_key_spec(KmsWrappingKeySpec::from(wrapping_key_spec.as_str()))
        .send()
        .await
        .expect("GetParametersForImport");
    let public_key = params.public_key().expect("wrapping public key").as_ref();
    let wrapped = material
        .wrap(algorithm, public_key)
        .unwrap_or_else(|e| panic!("wrap {:?} with {algorithm}: {e}", material));
    kms.import_key_material()
        .key_id(key_id)
        .import_token(params.import_token().expect("import token").clone())
        .encrypted_key_material(Blob::new(wrapped))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .map(|_| ())
}

/// Imports the HSM key into a new EXTERNAL KMS key with the algorithm the key chose; the
/// material leaves the token only as `C_WrapKey` output. Returns the key id.
async fn import_into_kms(kms: &aws_sdk_kms::Client, key: &HsmKey, spec: KeySpec) -> String {
    let key_id = create_external_key(kms, spec).await;
    let choice = key.wrapping().expect("the token can wrap this key");
    import(
        kms,
        &key_id,
        key,
        choice.algorithm,
        choice.wrapping_key_spec,
    )
    .await
    .unwrap_or_else(|e| panic!("ImportKeyMaterial of the HSM-wrapped {spec} key: {e:?}"));
    key_id
}

/// Imports an HSM private key into a new EXTERNAL KMS key through the composed
/// RSA_AES_KEY_WRAP path in the token. Two gaps of this test bed are bridged by the test
/// playing KMS (unwrapping the token's output exactly as KMS documents it), never by
/// keyfleet:
/// * LocalStack 4.9.2 does not implement RSA_AES_KEY_WRAP_SHA_1 (AWS KMS does), the only
///   private-key algorithm SoftHSM's SHA-1-only RSA-OAEP allows;
/// * SoftHSM 2.6's CKM_AES_KEY_WRAP_PAD zero-pads the key to 8 bytes before RFC 5649, so the
///   unwrapped PKCS#8 carries stray zero bytes (keyfleet refuses such a token for private
///   keys, `Pkcs11KeyNotWrappable`; the test strips them after checking they are exactly
///   that padding).
///
/// The recovered PKCS#8 must be a private key of the spec whose public key is the HSM key's;
/// it is imported into LocalStack with RSA_AES_KEY_WRAP_SHA_256 when the token's own output
/// cannot be.
async fn import_private_key_into_kms(
    kms: &aws_sdk_kms::Client,
    key: &HsmKey,
    spec: KeySpec,
    caps: &TokenCapabilities,
) -> String {
    let key_id = create_external_key(kms, spec).await;
    let algorithm = match key.wrapping() {
        Ok(choice) => choice.algorithm,
        Err(refusal) => {
            assert!(!caps.padded_key_wrap_conforms, "{refusal}");
            assert_eq!(refusal.reason(), "Pkcs11KeyNotWrappable");
            assert!(
                refusal.to_string().contains("CKM_AES_KEY_WRAP_PAD"),
                "{refusal}"
            );
            let algorithm = if caps.oaep_sha256 {
                WrappingAlgorithm::RsaAesKeyWrapSha256
            } else {
                WrappingAlgorithm::RsaAesKeyWrapSha1
            };
            let checked = key.check_wrapping(algorithm, WrappingKeySpec::Rsa4096);
            assert!(
                matches!(&checked, Err(MaterialError::Pkcs11(e)) if e.reason() == "Pkcs11KeyNotWrappable"),
                "the import path is refused before KMS is asked: {checked:?}"
            );
            eprintln!("{spec}: keyfleet refuses this token for import, as it must: {refusal}");
            algorithm
        }
    };
    let mut pkcs8 = unwrap_as_kms(key, algorithm, WrappingKeySpec::Rsa4096);
    if !caps.padded_key_wrap_conforms {
        strip_softhsm_zero_padding(&mut pkcs8);
    }
    let material = the_hsm_keys_pkcs8(key, spec, &pkcs8);
    if key.wrapping().is_ok() {
        match import(kms, &key_id, key, algorithm, WrappingKeySpec::Rsa4096).await {
            Ok(()) => return key_id,
            Err(e) if format!("{e:?}").contains("Unsupported padding") => {
                eprintln!("LocalStack lacks {algorithm}: importing the PKCS#8 KMS would unwrap");
            }
            Err(e) => panic!("ImportKeyMaterial of the HSM-wrapped {spec} key: {e:?}"),
        }
    }
    import(
        kms,
        &key_id,
        &material,
        WrappingAlgorithm::RsaAesKeyWrapSha256,
        WrappingKeySpec::Rsa4096,
    )
    .await
    .unwrap_or_else(|e| panic!("ImportKeyMaterial of the {spec} PKCS#8: {e:?}"));
    key_id
}

/// The private key a token wrapped, as KMS recovers it: a PKCS#8 key of `spec` whose public
/// key is the HSM key's.
fn the_hsm_keys_pkcs8(key: &HsmKey, spec: KeySpec, pkcs8: &[u8]) -> KeyMaterial {
    let material = KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, pkcs8)
        .unwrap_or_else(|e| panic!("the token's wrapped {spec} key is no PKCS#8 key: {e}"));
    assert_eq!(
        material.public_key_der(),
        key.public_key_der(),
        "the key the token wrapped is the HSM key"
    );
    material
}

/// The length of the DER SEQUENCE (a PKCS#8 key) that `bytes` begins with, header included.
fn der_sequence_len(bytes: &[u8]) -> usize {
    assert_eq!(bytes.first(), Some(&0x30), "a DER SEQUENCE");
    let first = usize::from(bytes[1]);
    if first < 0x80 {
        2 + first
    } else {
        let n = first & 0x7f;
        2 + n
            + bytes[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    }
}

/// Removes SoftHSM 2.6's zero padding after a DER SEQUENCE, asserting that it is exactly
/// that: zero bytes up to the next multiple of 8.
fn strip_softhsm_zero_padding(pkcs8: &mut Zeroizing<Vec<u8>>) {
    let der_len = der_sequence_len(pkcs8);
    assert!(der_len <= pkcs8.len());
    assert_eq!(
        pkcs8.len(),
        der_len.div_ceil(8) * 8,
        "padded to a multiple of 8"
    );
    assert!(
        pkcs8[der_len..].iter().all(|b| *b == 0),
        "the padding is zero bytes"
    );
    pkcs8.truncate(der_len);
}

/// What KMS does with RSA_AES_KEY_WRAP_SHA_* material, with a wrapping key pair of the test's
/// own: the token wraps under its public half; the private half recovers the PKCS#8 key.
fn unwrap_as_kms(
    key: &HsmKey,
    algorithm: WrappingAlgorithm,
    wrapping_key_spec: WrappingKeySpec,
) -> Zeroizing<Vec<u8>> {
    let size = match wrapping_key_spec {
        WrappingKeySpec::Rsa2048 => KeySize::Rsa2048,
        WrappingKeySpec::Rsa3072 => KeySize::Rsa3072,
        WrappingKeySpec::Rsa4096 => KeySize::Rsa4096,
    };
    let kms_key = PrivateDecryptingKey::generate(size).expect("wrapping key pair");
    let public = kms_key
        .public_key()
        .as_der()
        .expect("SPKI")
        .as_ref()
        .to_vec();
    let wrapped = key
        .wrap(algorithm, &public)
        .expect("C_WrapKey in the token");
    let block = size.len();
    assert!(
        wrapped.len() > block,
        "OAEP block followed by the AES-KWP ciphertext"
    );
    let oaep = match algorithm {
        WrappingAlgorithm::RsaAesKeyWrapSha1 => &OAEP_SHA1_MGF1SHA1,
        _ => &OAEP_SHA256_MGF1SHA256,
    };
    let decrypting = OaepPrivateDecryptingKey::new(kms_key).expect("OAEP key");
    let mut aes_key = Zeroizing::new(vec![0u8; block]);
    let aes_len = decrypting
        .decrypt(oaep, &wrapped[..block], &mut aes_key, None)
        .expect("RSA-OAEP decryption of the ephemeral AES key")
        .len();
    assert_eq!(aes_len, 32, "the ephemeral key is AES-256");
    let kek = AesKek::new(&AES_256, &aes_key[..32]).expect("AES KEK");
    let mut pkcs8 = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = kek
        .unwrap_with_padding(&wrapped[block..], &mut pkcs8)
        .expect("RFC 5649 unwrap of the private key")
        .len();
    pkcs8.truncate(len);
    pkcs8
}

/// Signs `message` in the token with the private key labelled `label` and verifies the
/// signature with the SubjectPublicKeyInfo keyfleet derived: that public key (the one compared
/// with KMS GetPublicKey) is the HSM key's.
fn assert_public_key_is_the_hsm_keys(pool: &TokenPool, spec: KeySpec, label: &str, spki: &[u8]) {
    let message = format!("signed in the token: {label}").into_bytes();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &message);
    let signature = pool
        .with_session(|session| {
            let key = softhsm::find_labelled(pool, session, label, ObjectClass::PRIVATE_KEY)?[0];
            match spec.family() {
                KeyFamily::Ecc => session.sign(&Mechanism::Ecdsa, key, digest.as_ref()),
                _ => session.sign(&Mechanism::Sha256RsaPkcs, key, &message),
            }
            .map_err(|e| pool.error(e))
        })
        .expect("C_Sign in the token");
    let verified = match spec.family() {
        KeyFamily::Ecc => {
            let point = &spki[spki.len() - 65..];
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(&message, &signature)
        }
        _ => signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, spki)
            .verify(&message, &signature),
    };
    assert!(
        verified.is_ok(),
        "the token's signature verifies with keyfleet's {spec} public key"
    );
}

/// One spec end to end: a sensitive key in the token → KMS → KMS agrees with the HSM.
async fn hsm_key_imports_and_kms_agrees(spec: KeySpec) {
    let prefix = format!("kf-{}", spec.as_str().to_ascii_lowercase());
    let Some((pool, label)) = softhsm::pool_with_key(spec, &prefix) else {
        return;
    };
    assert_value_unreadable(&pool, spec, &label);

    let key = HsmKey::open_async(Arc::clone(&pool), spec, label.clone())
        .await
        .unwrap_or_else(|e| panic!("open {spec} key {label}: {e}"));
    assert!(key.is_sensitive());
    let debug = format!("{key:?}");
    assert!(
        debug.contains(&label) && debug.contains(spec.as_str()),
        "{debug}"
    );
    let caps = pool.capabilities().clone();
    let private_key = matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc);
    if private_key {
        let spki = key.public_key_der().expect("the HSM key's public key");
        assert_public_key_is_the_hsm_keys(&pool, spec, &label, &spki);
        assert!(key.fingerprint().as_str().starts_with("sha256:"));
    }
    eprintln!(
        "{spec}: token capabilities {caps:?}; fingerprint {}",
        key.fingerprint()
    );

    let kms = kms_client("us-east-1").await;
    let key_id = if private_key {
        import_private_key_into_kms(&kms, &key, spec, &caps).await
    } else {
        let choice = key
            .wrapping()
            .expect("secret keys are wrapped with RSA-OAEP");
        assert_eq!(choice.sha1_only, !caps.oaep_sha256);
        assert!(
            !choice.algorithm.is_key_wrap(),
            "secret keys go through RSAES_OAEP"
        );
        eprintln!(
            "{spec}: wrapping with {} / {}",
            choice.algorithm, choice.wrapping_key_spec
        );
        import_into_kms(&kms, &key, spec).await
    };
    assert_kms_agrees(&kms, &pool, &key, &key_id, spec, &label).await;
}

/// The composed RSA_AES_KEY_WRAP path (ephemeral AES key generated in the token,
/// CKM_AES_KEY_WRAP_PAD over the key, CKM_RSA_PKCS_OAEP over the AES key) with a key that
/// SoftHSM 2.6 wraps correctly (32 bytes, a multiple of 8): the test unwraps the output as KMS
/// does, imports the result into LocalStack, and the token decrypts KMS's ciphertext.
#[tokio::test(flavor = "multi_thread")]
async fn the_composed_rsa_aes_key_wrap_carries_the_hsm_key_to_kms() {
    let spec = KeySpec::SymmetricDefault;
    let Some((pool, label)) = softhsm::pool_with_key(spec, "kf-composed") else {
        return;
    };
    assert_value_unreadable(&pool, spec, &label);
    let key = HsmKey::open(&pool, spec, &label).expect("open");
    let algorithm = if pool.capabilities().oaep_sha256 {
        WrappingAlgorithm::RsaAesKeyWrapSha256
    } else {
        WrappingAlgorithm::RsaAesKeyWrapSha1
    };
    key.check_wrapping(algorithm, WrappingKeySpec::Rsa4096)
        .expect("a 32-byte key is aligned: the composed path is open even on SoftHSM 2.6");
    let value = unwrap_as_kms(&key, algorithm, WrappingKeySpec::Rsa4096);
    assert_eq!(value.len(), 32, "KMS recovers exactly the 32-byte AES key");
    let material = KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, &value)
        .expect("SYMMETRIC_DEFAULT material");

    let kms = kms_client("us-east-1").await;
    let key_id = create_external_key(&kms, spec).await;
    import(
        &kms,
        &key_id,
        &material,
        WrappingAlgorithm::RsaesOaepSha256,
        WrappingKeySpec::Rsa2048,
    )
    .await
    .expect("ImportKeyMaterial");
    assert_kms_agrees(&kms, &pool, &key, &key_id, spec, &label).await;
}

softhsm::test_per_spec!(hsm_key_imports_and_kms_agrees {
    symmetric_default_from_the_hsm_decrypts_in_kms_and_the_token_alike: SymmetricDefault,
    hmac_256_from_the_hsm_gives_kms_the_same_mac: Hmac256,
    ecc_nist_p256_from_the_hsm_gives_kms_the_same_public_key: EccNistP256,
    rsa_2048_from_the_hsm_gives_kms_the_same_public_key: Rsa2048,
});

/// The composed RSA_AES_KEY_WRAP on kryoptic, whose `CKM_AES_KEY_WRAP_KWP` is RFC 5649: the
/// token's output, unwrapped as KMS does, is exactly the PKCS#8 of the HSM key (no stray
/// bytes), and LocalStack imports the token's own output, after which GetPublicKey is the
/// HSM key's public key.
async fn kryoptic_wraps_the_private_key_as_kms_unwraps_it(spec: KeySpec) {
    let Some(token) = softhsm::kryoptic() else {
        return;
    };
    let prefix = format!("kf-kwp-{}", spec.as_str().to_ascii_lowercase());
    let (pool, label) = token.pool_with_key(spec, &prefix);
    assert_value_unreadable(&pool, spec, &label);
    let caps = pool.capabilities();
    assert_eq!(caps.padded_key_wrap, Some(PaddedKeyWrap::Kwp), "{caps:?}");
    assert!(
        caps.padded_key_wrap_conforms && caps.oaep_sha256,
        "{caps:?}"
    );
    let key = HsmKey::open(&pool, spec, &label).expect("open");
    let choice = key.wrapping().expect("kryoptic carries private keys");
    assert_eq!(choice.algorithm, WrappingAlgorithm::RsaAesKeyWrapSha256);
    assert!(!choice.sha1_only);

    let pkcs8 = unwrap_as_kms(&key, choice.algorithm, WrappingKeySpec::Rsa4096);
    assert_eq!(
        pkcs8.len(),
        der_sequence_len(&pkcs8),
        "RFC 5649 gives back exactly the PKCS#8 key"
    );
    the_hsm_keys_pkcs8(&key, spec, &pkcs8);

    let kms = kms_client("us-east-1").await;
    let key_id = import_into_kms(&kms, &key, spec).await;
    assert_kms_agrees(&kms, &pool, &key, &key_id, spec, &label).await;
}

softhsm::test_per_spec!(kryoptic_wraps_the_private_key_as_kms_unwraps_it {
    ecc_nist_p256_wrapped_by_kryoptic_is_exactly_the_hsm_key_in_kms: EccNistP256,
    rsa_2048_wrapped_by_kryoptic_is_exactly_the_hsm_key_in_kms: Rsa2048,
});

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_key_is_sensitive_found_again_and_imports() {
    let Some(token) = softhsm::token() else {
        return;
    };
    let pool = token.pool();
    let label = unique("kf-generated-hmac");
    let (generated, origin) = open_or_generate(&pool, KeySpec::Hmac256, &label).expect("generate");
    assert_eq!(origin, KeyOrigin::Generated);
    assert_value_unreadable(&pool, KeySpec::Hmac256, &label);
    // Never overwritten: the second call finds the same key (same fingerprint).
    let (found, origin) = open_or_generate(&pool, KeySpec::Hmac256, &label).expect("find");
    assert_eq!(origin, KeyOrigin::Found);
    assert_eq!(found.fingerprint(), generated.fingerprint());

    let kms = kms_client("us-east-1").await;
    let key_id = import_into_kms(&kms, &found, KeySpec::Hmac256).await;
    assert_eq!(
        generate_mac(&kms, &key_id, KeySpec::Hmac256, b"generated").await,
        found.hmac(b"generated")
    );

    // A generated EC key pair: the private half is sensitive, the public half is paired.
    let ec_label = unique("kf-generated-p256");
    let (ec, origin) = open_or_generate(&pool, KeySpec::EccNistP256, &ec_label).expect("EC");
    assert_eq!(origin, KeyOrigin::Generated);
    assert_value_unreadable(&pool, KeySpec::EccNistP256, &ec_label);
    assert!(ec.public_key_der().is_some_and(|d| d.len() == 91));
}

#[test]
fn a_label_taken_by_another_kind_of_object_is_not_overwritten() {
    let Some((pool, label)) = softhsm::pool_with_key(KeySpec::SymmetricDefault, "kf-taken") else {
        return;
    };
    let err =
        open_or_generate(&pool, KeySpec::Hmac256, &label).expect_err("AES key is no HMAC key");
    assert_eq!(err.reason(), "Pkcs11KeySpecMismatch", "{err}");
    assert!(err.to_string().contains("CKA_KEY_TYPE"), "{err}");
}

#[test]
fn a_non_extractable_key_is_refused_naming_cka_extractable() {
    let Some(token) = softhsm::token() else {
        return;
    };
    let pool = token.pool();
    for spec in [KeySpec::SymmetricDefault, KeySpec::EccNistP256] {
        let label = unique("kf-stuck");
        create_key(&pool, spec, &label, false);
        let err = HsmKey::open(&pool, spec, &label).expect_err("not extractable");
        assert_eq!(err.reason(), "Pkcs11KeyNotWrappable", "{err}");
        assert!(
            err.to_string().contains("CKA_EXTRACTABLE is false"),
            "{err}"
        );
        assert!(err.to_string().contains(&label), "{err}");
    }
}

#[test]
fn a_key_of_another_spec_is_refused_precisely() {
    let Some(token) = softhsm::token() else {
        return;
    };
    let pool = token.pool();

    let aes = unique("kf-aes");
    create_key(&pool, KeySpec::SymmetricDefault, &aes, true);
    let err = HsmKey::open(&pool, KeySpec::Hmac256, &aes).expect_err("AES is not HMAC");
    assert_eq!(err.reason(), "Pkcs11KeySpecMismatch", "{err}");
    assert!(err.to_string().contains("CKK_GENERIC_SECRET"), "{err}");

    let p256 = unique("kf-p256");
    create_key(&pool, KeySpec::EccNistP256, &p256, true);
    let err = HsmKey::open(&pool, KeySpec::EccNistP384, &p256).expect_err("wrong curve");
    assert_eq!(err.reason(), "Pkcs11KeySpecMismatch", "{err}");
    assert!(
        err.to_string()
            .contains("CKA_EC_PARAMS names curve 1.2.840.10045.3.1.7")
            && err.to_string().contains("P-384"),
        "{err}"
    );
    let err = HsmKey::open(&pool, KeySpec::Rsa2048, &p256).expect_err("EC is not RSA");
    assert!(err.to_string().contains("CKA_KEY_TYPE"), "{err}");

    let rsa = unique("kf-rsa3072");
    create_key_with(&pool, KeySpec::Rsa3072, &rsa, true, Some(3072));
    let err = HsmKey::open(&pool, KeySpec::Rsa2048, &rsa).expect_err("wrong modulus");
    assert!(
        err.to_string()
            .contains("has 3072 bits; RSA_2048 needs 2048"),
        "{err}"
    );

    let missing = unique("kf-missing");
    let err = HsmKey::open(&pool, KeySpec::Hmac256, &missing).expect_err("no such label");
    assert_eq!(err.reason(), "Pkcs11KeyNotFound", "{err}");
}

#[test]
fn a_wrapping_algorithm_the_token_cannot_do_is_refused_before_kms_is_asked() {
    let Some((pool, label)) = softhsm::pool_with_key(KeySpec::Hmac256, "kf-oaep") else {
        return;
    };
    let key = HsmKey::open(&pool, KeySpec::Hmac256, &label).expect("open");
    let result = key.check_wrapping(WrappingAlgorithm::RsaesOaepSha256, WrappingKeySpec::Rsa2048);
    if pool.capabilities().oaep_sha256 {
        assert!(result.is_ok(), "{result:?}");
    } else {
        let Err(MaterialError::Pkcs11(err)) = result else {
            panic!("SHA-256 OAEP on a SHA-1-only token must be refused: {result:?}");
        };
        assert_eq!(err.reason(), "Pkcs11KeyNotWrappable");
        assert!(
            err.to_string().contains("SHA-256") && err.to_string().contains("RSAES_OAEP_SHA_1"),
            "{err}"
        );
    }
    assert!(
        key.check_wrapping(WrappingAlgorithm::RsaesOaepSha1, WrappingKeySpec::Rsa2048)
            .is_ok()
    );
}

#[test]
fn a_wrong_pin_is_login_failed() {
    let Some(token) = softhsm::token() else {
        return;
    };
    let err = TokenPool::open(&token.config(), b"not-the-pin").expect_err("wrong PIN");
    assert_eq!(err.reason(), "LoginFailed", "{err}");
    assert!(
        !err.to_string().contains("not-the-pin"),
        "the PIN must not be echoed: {err}"
    );
}

#[test]
fn an_unknown_token_is_token_not_found() {
    let Some(token) = softhsm::token() else {
        return;
    };
    let config = TokenConfig {
        token: TokenSelector::Label("no-such-token".to_string()),
        ..token.config()
    };
    let err = TokenPool::open(&config, token.pin.as_bytes()).expect_err("unknown token");
    assert_eq!(err.reason(), "TokenNotFound", "{err}");
    assert!(
        err.to_string().contains(&token.label),
        "lists the tokens present: {err}"
    );
}

#[test]
fn a_bad_module_path_is_pkcs11_module_not_loadable() {
    for module in [
        "/nonexistent/libpkcs11.so",
        "/etc/hostname",
        "relative/lib.so",
    ] {
        let config = TokenConfig {
            module: PathBuf::from(module),
            token: TokenSelector::Label("any".to_string()),
            max_sessions: 1,
        };
        let err = TokenPool::open(&config, b"1234").expect_err("not a module");
        assert!(
            matches!(err, Pkcs11Error::ModuleNotLoadable { .. }),
            "{err:?}"
        );
        assert_eq!(err.reason(), "Pkcs11ModuleNotLoadable");
        assert!(err.to_string().contains(module), "{err}");
    }
}

#[test]
fn the_session_pool_never_opens_more_than_its_bound() {
    let Some(token) = softhsm::token() else {
        return;
    };
    let pool = token.pool();
    let max = TestToken::config(&token).max_sessions;
    let busy = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3 * max)
        .map(|_| {
            let (pool, busy, peak) = (Arc::clone(&pool), Arc::clone(&busy), Arc::clone(&peak));
            std::thread::spawn(move || {
                pool.with_session(|session| {
                    let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    session.get_session_info().map_err(|e| pool.error(e))?;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    busy.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic").expect("a session");
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak >= 1 && peak <= max,
        "peak {peak} sessions in use, bound {max}"
    );
    pool.check().expect("still logged in");
}

#[test]
fn a_token_that_goes_away_is_an_error_not_a_panic() {
    let Some(token) = softhsm::token() else {
        return;
    };
    // A second throw-away token, made for this test alone (token labels hold 32 bytes).
    let label = format!("gone-{}", std::process::id());
    let init = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--pin", &token.pin, "--so-pin", "5678"])
        .output()
        .expect("softhsm2-util runs");
    assert!(init.status.success(), "{init:?}");
    let config = TokenConfig {
        token: TokenSelector::Label(label.clone()),
        ..token.config()
    };
    let pool = TokenPool::open(&config, token.pin.as_bytes()).expect("open the second token");
    create_key(&pool, KeySpec::SymmetricDefault, "doomed", true);
    let key = HsmKey::open(&pool, KeySpec::SymmetricDefault, "doomed").expect("open the key");
    pool.check().expect("logged in");

    let delete = std::process::Command::new("softhsm2-util")
        .args(["--delete-token", "--token", &label])
        .output()
        .expect("softhsm2-util runs");
    assert!(delete.status.success(), "{delete:?}");

    let wrapping_key = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("RSA key");
    let public = wrapping_key
        .public_key()
        .as_der()
        .expect("SPKI")
        .as_ref()
        .to_vec();
    let wrapped = key.wrap(WrappingAlgorithm::RsaesOaepSha1, &public);
    let reopened = HsmKey::open(&pool, KeySpec::SymmetricDefault, "doomed");
    // SoftHSM keeps the session and drops the objects; a hardware token reports
    // CKR_DEVICE_REMOVED or CKR_TOKEN_NOT_PRESENT (Pkcs11TokenUnavailable). Either way: errors.
    let Err(MaterialError::Pkcs11(wrap_error)) = wrapped else {
        panic!("wrapping a key of a deleted token must fail: {wrapped:?}");
    };
    assert!(
        matches!(
            wrap_error.reason(),
            "Pkcs11KeyNotFound" | "Pkcs11TokenUnavailable" | "Pkcs11OperationFailed"
        ),
        "{wrap_error}"
    );
    assert!(
        reopened.is_err(),
        "the key of a deleted token cannot be opened"
    );
}
