//! The test PKCS#11 tokens: SoftHSM2 for every PKCS#11 test, kryoptic for RSA/ECC private keys
//! through the controller; the variables `./scripts/test` exports, the skip rule, and
//! sensitive test keys created with plain cryptoki calls (not through keyfleet's code).
//!
//! `scripts/softhsm init` creates a fresh SoftHSM2 token and prints `SOFTHSM2_CONF` and
//! `KEYFLEET_TEST_PKCS11_MODULE/_TOKEN/_PIN`; `scripts/kryoptic init` likewise prints
//! `KRYOPTIC_CONF` and `KEYFLEET_TEST_KRYOPTIC_MODULE/_TOKEN/_PIN`. SoftHSM 2.6's
//! `CKM_AES_KEY_WRAP_PAD` zero-pads a key before RFC 5649, so it cannot carry a private key to
//! KMS; kryoptic's `CKM_AES_KEY_WRAP_KWP` is RFC 5649. Without a token's variables a test
//! prints a skip message and returns, except under `CI=true`, where a missing token fails the
//! test.

use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_kms::primitives::Blob;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use keyfleet::api::{KeyFamily, KeySpec};
use keyfleet::material::ImportableMaterial;
use keyfleet::material::pkcs11::{Pkcs11Error, TokenConfig, TokenPool, TokenSelector};

use super::kms_use::{generate_mac, public_key};

pub const MODULE_ENV: &str = "KEYFLEET_TEST_PKCS11_MODULE";
pub const TOKEN_ENV: &str = "KEYFLEET_TEST_PKCS11_TOKEN";
pub const PIN_ENV: &str = "KEYFLEET_TEST_PKCS11_PIN";

/// Where the tests find one kind of test token.
pub struct TokenEnv {
    /// The token software, for messages.
    pub name: &'static str,
    pub module: &'static str,
    pub token: &'static str,
    pub pin: &'static str,
    /// The module's own configuration variable, which every process that opens it needs.
    pub conf: &'static str,
    /// The script that installs it and creates a throw-away token.
    pub script: &'static str,
}

/// SoftHSM2 2.6 (Debian `softhsm2`): every PKCS#11 test.
pub const SOFTHSM2: TokenEnv = TokenEnv {
    name: "SoftHSM2",
    module: MODULE_ENV,
    token: TOKEN_ENV,
    pin: PIN_ENV,
    conf: "SOFTHSM2_CONF",
    script: "scripts/softhsm",
};

/// kryoptic (crate `kryoptic`, built by `scripts/kryoptic`): RSA/ECC private keys.
pub const KRYOPTIC: TokenEnv = TokenEnv {
    name: "kryoptic",
    module: "KEYFLEET_TEST_KRYOPTIC_MODULE",
    token: "KEYFLEET_TEST_KRYOPTIC_TOKEN",
    pin: "KEYFLEET_TEST_KRYOPTIC_PIN",
    conf: "KRYOPTIC_CONF",
    script: "scripts/kryoptic",
};

/// A throw-away token of this test run.
#[derive(Clone, Debug)]
pub struct TestToken {
    pub module: PathBuf,
    pub label: String,
    pub pin: String,
}

/// The SoftHSM2 test token, or `None` after printing why the test is skipped. Panics under
/// `CI=true`.
pub fn token() -> Option<TestToken> {
    token_of(&SOFTHSM2)
}

/// The kryoptic test token (RFC 5649 key wrap), or `None` after printing why the test is
/// skipped. Panics under `CI=true`.
pub fn kryoptic() -> Option<TestToken> {
    token_of(&KRYOPTIC)
}

/// The test token that carries `spec` to KMS: kryoptic for RSA/ECC private keys, SoftHSM2
/// otherwise.
pub fn token_for(spec: KeySpec) -> Option<TestToken> {
    match spec.family() {
        KeyFamily::Rsa | KeyFamily::Ecc => kryoptic(),
        KeyFamily::Symmetric | KeyFamily::Hmac => token(),
    }
}

/// The token `env` names, or `None` after printing why the test is skipped. Panics under
/// `CI=true`.
pub fn token_of(env: &TokenEnv) -> Option<TestToken> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let TokenEnv {
        name,
        module,
        token,
        pin,
        conf,
        script,
    } = env;
    match (var(module), var(token), var(pin), var(conf)) {
        (Some(module), Some(label), Some(pin), Some(_)) => Some(TestToken {
            module: PathBuf::from(module),
            label,
            pin,
        }),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "CI=true but no {name} token: {module}, {token}, {pin} and {conf} must be set \
             (./scripts/test runs {script} install and init)"
        ),
        _ => {
            eprintln!(
                "SKIPPED: no {name} token ({module}/{token}/{pin}/{conf} unset). Run \
                 ./scripts/test, or: eval \"$({script} init | sed 's/^/export /')\""
            );
            None
        }
    }
}

impl TestToken {
    pub fn config(&self) -> TokenConfig {
        TokenConfig {
            module: self.module.clone(),
            token: TokenSelector::Label(self.label.clone()),
            max_sessions: 4,
        }
    }

    /// The token's pool with a new extractable `spec` key labelled `<prefix>-…`, and that label.
    pub fn pool_with_key(&self, spec: KeySpec, prefix: &str) -> (Arc<TokenPool>, String) {
        let pool = self.pool();
        let label = super::localstack::unique(prefix);
        create_key(&pool, spec, &label, true);
        (pool, label)
    }

    /// The logged-in session pool of the test token.
    pub fn pool(&self) -> Arc<TokenPool> {
        TokenPool::open(&self.config(), self.pin.as_bytes()).expect("open the test token")
    }
}

/// The test token's pool with a new extractable `spec` key labelled `<prefix>-…`, and that
/// label; `None` after printing why the test is skipped.
pub fn pool_with_key(spec: KeySpec, prefix: &str) -> Option<(Arc<TokenPool>, String)> {
    Some(token()?.pool_with_key(spec, prefix))
}

/// DER CKA_EC_PARAMS (named curve OID) of an ECC spec.
pub fn ec_params(spec: KeySpec) -> Vec<u8> {
    match spec {
        KeySpec::EccNistP256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        KeySpec::EccNistP384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        other => panic!("no test curve for {other}"),
    }
}

/// Creates a key for `spec` in the token the way an HSM administrator would: a token object,
/// `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` as given. AES keys can also decrypt (so the test
/// can decrypt a KMS ciphertext in the token); RSA keys are 2048-bit unless `rsa_bits` says.
pub fn create_key(pool: &TokenPool, spec: KeySpec, label: &str, extractable: bool) {
    create_key_with(pool, spec, label, extractable, None)
}

pub fn create_key_with(
    pool: &TokenPool,
    spec: KeySpec,
    label: &str,
    extractable: bool,
    rsa_bits: Option<u64>,
) {
    let label = label.as_bytes().to_vec();
    let private = |extra: &[Attribute]| {
        let mut template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(extractable),
            Attribute::Label(label.clone()),
        ];
        template.extend_from_slice(extra);
        template
    };
    pool.with_session(|session| {
        let result = match spec.family() {
            KeyFamily::Symmetric | KeyFamily::Hmac => {
                let (mechanism, key_type, usage) = if spec.family() == KeyFamily::Symmetric {
                    let usage = [Attribute::Encrypt(true), Attribute::Decrypt(true)];
                    (Mechanism::AesKeyGen, KeyType::AES, usage.to_vec())
                } else {
                    let usage = [Attribute::Verify(true)];
                    (
                        Mechanism::GenericSecretKeyGen,
                        KeyType::GENERIC_SECRET,
                        usage.to_vec(),
                    )
                };
                let mut secret = vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(key_type),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sign(true),
                ];
                secret.extend(usage);
                session
                    .generate_key(&mechanism, &private(&secret))
                    .map(|_| ())
            }
            KeyFamily::Rsa | KeyFamily::Ecc => {
                let (mechanism, shape) = if spec.family() == KeyFamily::Rsa {
                    let shape = vec![
                        Attribute::ModulusBits(rsa_bits.unwrap_or(2048).into()),
                        Attribute::PublicExponent(vec![1, 0, 1]),
                    ];
                    (Mechanism::RsaPkcsKeyPairGen, shape)
                } else {
                    (
                        Mechanism::EccKeyPairGen,
                        vec![Attribute::EcParams(ec_params(spec))],
                    )
                };
                let mut public = vec![Attribute::Token(true), Attribute::Label(label.clone())];
                public.extend(shape);
                public.push(Attribute::Verify(true));
                session
                    .generate_key_pair(&mechanism, &public, &private(&[Attribute::Sign(true)]))
                    .map(|_| ())
            }
        };
        result.map_err(|e| pool.error(e))
    })
    .expect("create the test key in the token");
}

/// Asserts that the token refuses to reveal the key's value (`C_GetAttributeValue(CKA_VALUE)`,
/// and `CKA_PRIVATE_EXPONENT` for RSA): only `C_WrapKey` can export it.
pub fn assert_value_unreadable(pool: &TokenPool, spec: KeySpec, label: &str) {
    let class = match spec.family() {
        KeyFamily::Symmetric | KeyFamily::Hmac => ObjectClass::SECRET_KEY,
        KeyFamily::Rsa | KeyFamily::Ecc => ObjectClass::PRIVATE_KEY,
    };
    let secret_attribute = match spec.family() {
        KeyFamily::Rsa => AttributeType::PrivateExponent,
        _ => AttributeType::Value,
    };
    pool.with_session(|session| {
        let found = find_labelled(pool, session, label, class)?;
        assert_eq!(found.len(), 1, "one {class} labelled {label}");
        let info = session
            .get_attribute_info(found[0], &[secret_attribute])
            .map_err(|e| pool.error(e))?;
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{secret_attribute} of {label} must be refused as sensitive, got {info:?}"
        );
        let read = session
            .get_attributes(found[0], &[secret_attribute])
            .map_err(|e| pool.error(e))?;
        assert!(read.is_empty(), "the token returned {secret_attribute}");
        Ok(())
    })
    .expect("read the key's attributes");
}

/// The objects of `class` labelled `label` in the token.
pub fn find_labelled(
    pool: &TokenPool,
    session: &Session,
    label: &str,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
    session
        .find_objects(&[
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Class(class),
        ])
        .map_err(|e| pool.error(e))
}

/// Decrypts a LocalStack KMS ciphertext in the token. LocalStack 4.9's blob is
/// key id (36) || IV (16) || GCM tag (16) || AES-256-GCM(PKCS#7-padded plaintext), with the
/// encryption context's sorted key/value pairs as AAD.
pub fn decrypt_in_token(pool: &TokenPool, label: &str, blob: &[u8], aad: &[u8]) -> Vec<u8> {
    assert!(blob.len() > 68, "ciphertext blob too short");
    let mut iv = blob[36..52].to_vec();
    let tag = &blob[52..68];
    let mut ciphertext_and_tag = blob[68..].to_vec();
    ciphertext_and_tag.extend_from_slice(tag);
    let padded = pool
        .with_session(|session| {
            let key = find_labelled(pool, session, label, ObjectClass::SECRET_KEY)?[0];
            let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(|e| pool.error(e))?;
            session
                .decrypt(&Mechanism::AesGcm(params), key, &ciphertext_and_tag)
                .map_err(|e| pool.error(e))
        })
        .expect("C_Decrypt (AES-GCM) of KMS's ciphertext in the token");
    let pad = usize::from(*padded.last().expect("non-empty plaintext"));
    padded[..padded.len() - pad].to_vec()
}

/// KMS and the HSM hold the same key: the token decrypts KMS's ciphertext (symmetric),
/// GenerateMac equals C_Sign (HMAC), GetPublicKey equals the HSM key's public key (RSA/ECC).
pub async fn assert_kms_agrees(
    kms: &aws_sdk_kms::Client,
    pool: &TokenPool,
    key: &dyn ImportableMaterial,
    key_id: &str,
    spec: KeySpec,
    label: &str,
) {
    match spec.family() {
        KeyFamily::Symmetric => {
            let plaintext = format!("material from an HSM, {label}").into_bytes();
            let encrypted = kms
                .encrypt()
                .key_id(key_id)
                .plaintext(Blob::new(plaintext.clone()))
                .encryption_context("purpose", "pkcs11-test")
                .send()
                .await
                .expect("KMS Encrypt");
            let blob = encrypted.ciphertext_blob().expect("ciphertext").as_ref();
            let decrypted = kms
                .decrypt()
                .ciphertext_blob(Blob::new(blob.to_vec()))
                .encryption_context("purpose", "pkcs11-test")
                .send()
                .await
                .expect("KMS Decrypt");
            assert_eq!(
                decrypted.plaintext().map(|p| p.as_ref()),
                Some(&plaintext[..])
            );
            let in_token = decrypt_in_token(pool, label, blob, b"purposepkcs11-test");
            assert_eq!(in_token, plaintext, "the token decrypts KMS's ciphertext");
        }
        KeyFamily::Hmac => {
            let message = format!("probe for {label}").into_bytes();
            let kms_mac = generate_mac(kms, key_id, KeySpec::Hmac256, &message).await;
            let hsm_mac = key.hmac(&message).expect("C_Sign HMAC in the token");
            assert_eq!(hsm_mac.len(), 32);
            assert_eq!(
                kms_mac,
                Some(hsm_mac),
                "GenerateMac equals C_Sign(CKM_SHA256_HMAC)"
            );
        }
        KeyFamily::Rsa | KeyFamily::Ecc => {
            let kms_public = public_key(kms, key_id).await;
            let hsm_public = key.public_key_der().expect("the HSM key's public key");
            assert_eq!(
                kms_public,
                Some(hsm_public),
                "GetPublicKey equals the HSM key's SubjectPublicKeyInfo"
            );
        }
    }
}

/// One test per key spec, each running the same `scenario(spec)` (one key of each family), so
/// that each reports on its own.
#[allow(unused_macros)]
macro_rules! test_per_spec {
    ($scenario:ident { $($test:ident: $spec:ident),+ $(,)? }) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            $scenario(keyfleet::api::KeySpec::$spec).await;
        }
    )+};
}
#[allow(unused_imports)]
pub(crate) use test_per_spec;
