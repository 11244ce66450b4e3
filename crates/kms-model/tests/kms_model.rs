//! Round trips with the aws-sdk-kms client against the served model: every behaviour, and
//! especially every refusal, of the strict KMS model; keys imported by keyfleet's own import
//! path compute what keyfleet's material computes.

use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, ImportType, IncludeKeyMaterial, KeyMaterialState,
    KeySpec as SdkKeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, MessageType, OriginType,
    SigningAlgorithmSpec, Tag, WrappingKeySpec as SdkWrappingKeySpec,
};
use keyfleet::api::KeySpec;
use keyfleet::api::{MaterialEncoding, WrappingAlgorithm, WrappingKeySpec};
use keyfleet::kms::execute::{ImportInput, ImportKind, import_material_as};
use keyfleet::kms::verify::{Method, Verification};
use keyfleet::material::KeyMaterial;
use keyfleet_testkit::material::generate_secret_value;
use kms_model::{Fault, FaultKind, KmsModel, Role, key_material_id};

const PRIMARY: &str = "us-east-1";
const REPLICA: &str = "eu-west-1";

fn client(model: &KmsModel, region: &str) -> Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(model.url())
        .credentials_provider(Credentials::new(
            "AKIDMODELTEST",
            "secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn material(spec: KeySpec) -> KeyMaterial {
    KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, &generate_secret_value(spec))
        .expect("fresh material parses")
}

/// The error code of a failed SDK call.
fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<T, aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>>,
) -> String {
    let e = r.expect_err("the call must fail");
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn create_external(c: &Client, spec: &str, usage: &str, multi_region: bool) -> String {
    c.create_key()
        .origin(OriginType::External)
        .key_spec(SdkKeySpec::from(spec))
        .key_usage(KeyUsageType::from(usage))
        .multi_region(multi_region)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("metadata")
        .key_id
}

/// The key id a CreateKey request produces.
async fn key_id_of(
    request: aws_sdk_kms::operation::create_key::builders::CreateKeyFluentBuilder,
) -> String {
    request
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("metadata")
        .key_id
}

/// ReplicateKey of `key` (called on the primary's client) into [`REPLICA`].
async fn replicate(primary: &Client, key: &str) {
    primary
        .replicate_key()
        .key_id(key)
        .replica_region(REPLICA)
        .send()
        .await
        .expect("ReplicateKey");
}

async fn state_of(c: &Client, key_id: &str) -> KeyState {
    c.describe_key()
        .key_id(key_id)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .expect("metadata")
        .key_state
        .expect("state")
}

/// keyfleet's default wrapping algorithm for the material, with an RSA_2048 wrapping key
/// (RSA_4096 keys take seconds to generate in a debug build; one test imports with them).
fn input(m: &KeyMaterial) -> ImportInput<'_> {
    let (algorithm, _) = WrappingAlgorithm::default_for(m.spec());
    ImportInput {
        material: m,
        algorithm,
        wrapping_key_spec: WrappingKeySpec::Rsa2048,
        description: None,
    }
}

/// keyfleet's own import path (GetParametersForImport, wrap, ImportKeyMaterial).
async fn keyfleet_import(
    c: &Client,
    key_id: &str,
    m: &KeyMaterial,
    kind: ImportKind<'_>,
) -> Result<Option<String>, keyfleet::kms::execute::ExecuteError> {
    import_material_as(c, key_id, &input(m), None, kind).await
}

/// keyfleet's verification of a key against the material it should hold (observe, gather
/// the evidence KMS gives, judge).
async fn keyfleet_verification(c: &Client, key: &str, m: &KeyMaterial) -> Verification {
    let depth = keyfleet::kms::ReadDepth::FULL;
    let observed = keyfleet::kms::observe::observe(c, key, depth)
        .await
        .unwrap()
        .unwrap();
    let evidence = keyfleet::kms::verify::gather(c, &observed, m.spec())
        .await
        .unwrap();
    let expected = keyfleet::kms::verify::Expected {
        material: m,
        key_material_id: None,
        previous_key_material_id: None,
    };
    keyfleet::kms::verify::judge(&expected, &evidence)
}

/// ImportKeyMaterial of already wrapped bytes, material that does not expire.
async fn send_import(
    c: &Client,
    key: &str,
    token: Blob,
    wrapped: impl Into<Blob>,
) -> Result<
    aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput,
    aws_sdk_kms::error::SdkError<
        aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError,
        aws_sdk_kms::config::http::HttpResponse,
    >,
> {
    c.import_key_material()
        .key_id(key)
        .import_token(token)
        .encrypted_key_material(wrapped.into())
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
}

/// Whether keyfleet's import failed because KMS refused the material
/// (IncorrectKeyMaterialException), which keyfleet reports as MaterialMismatch.
fn incorrect_material(r: &Result<Option<String>, keyfleet::kms::execute::ExecuteError>) -> bool {
    matches!(
        r,
        Err(keyfleet::kms::execute::ExecuteError::Kms(
            keyfleet::kms::KmsError::IncorrectKeyMaterial { .. }
        ))
    )
}

/// GetParametersForImport, then the caller's wrapping of `bytes`.
async fn params(c: &Client, key_id: &str, alg: &str, spec: &str) -> (Blob, Vec<u8>) {
    let out = c
        .get_parameters_for_import()
        .key_id(key_id)
        .wrapping_algorithm(AlgorithmSpec::from(alg))
        .wrapping_key_spec(SdkWrappingKeySpec::from(spec))
        .send()
        .await
        .expect("GetParametersForImport");
    (
        out.import_token.expect("token"),
        out.public_key.expect("public key").into_inner(),
    )
}

/// RSA-OAEP-SHA-256 of arbitrary bytes (to send what keyfleet would refuse to wrap).
fn oaep_sha256(public_der: &[u8], bytes: &[u8]) -> Vec<u8> {
    use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
    let key =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(public_der).unwrap()).unwrap();
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, bytes, &mut out, None)
        .unwrap()
        .len();
    out.truncate(n);
    out
}

fn does_not_expire(
    b: aws_sdk_kms::operation::import_key_material::builders::ImportKeyMaterialFluentBuilder,
) -> aws_sdk_kms::operation::import_key_material::builders::ImportKeyMaterialFluentBuilder {
    b.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
}

async fn rotations(c: &Client, key_id: &str) -> Vec<(String, KeyMaterialState, String)> {
    c.list_key_rotations()
        .key_id(key_id)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .expect("ListKeyRotations")
        .rotations
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            (
                r.key_material_id.unwrap_or_default(),
                r.key_material_state.expect("state"),
                r.import_state
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

async fn encrypt(c: &Client, key_id: &str, plaintext: &[u8]) -> Blob {
    c.encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plaintext))
        .send()
        .await
        .expect("Encrypt")
        .ciphertext_blob
        .expect("ciphertext")
}

async fn decrypt(c: &Client, blob: Blob) -> Vec<u8> {
    c.decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .expect("Decrypt")
        .plaintext
        .expect("plaintext")
        .into_inner()
}

#[tokio::test]
async fn unsigned_requests_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let model = KmsModel::start().await.unwrap();
    let addr = model.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = "{}";
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("MissingAuthenticationTokenException"),
        "{answer}"
    );
    assert!(
        model.requests().is_empty(),
        "an unsigned request is not a KMS call"
    );
}

#[tokio::test]
async fn region_comes_from_the_signature_and_keys_live_per_region() {
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = create_external(&east, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    assert_eq!(
        code(west.describe_key().key_id(&key).send().await),
        "NotFoundException"
    );
    let view = model.key(PRIMARY, &key).expect("the key is in us-east-1");
    assert!(
        view.arn
            .starts_with("arn:aws:kms:us-east-1:111122223333:key/")
    );
    assert_eq!(view.key_state, "PendingImport");
    let logged = model.requests_of("CreateKey");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].region, PRIMARY);
    assert_eq!(logged[0].access_key_id, "AKIDMODELTEST");
    assert_eq!(logged[0].params["Origin"], "EXTERNAL");
}

#[tokio::test]
async fn list_keys_pages_past_1000_keys() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    for _ in 0..3 {
        c.create_key().send().await.unwrap();
    }
    model.create_keys(PRIMARY, 1000);
    assert_eq!(
        code(c.list_keys().limit(1001).send().await),
        "ValidationException"
    );
    let first = c.list_keys().limit(1000).send().await.unwrap();
    assert_eq!(first.keys().len(), 1000);
    assert!(first.truncated);
    let second = c
        .list_keys()
        .limit(1000)
        .marker(first.next_marker.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.keys().len(), 3);
    assert!(!second.truncated && second.next_marker.is_none());
    let mut all: Vec<String> = first
        .keys()
        .iter()
        .chain(second.keys())
        .map(|k| k.key_id().unwrap().to_string())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1003);
    assert_eq!(
        code(c.list_keys().marker("bogus").send().await),
        "InvalidMarkerException"
    );
}

#[tokio::test]
async fn keyfleets_owner_scan_finds_a_key_on_the_second_page() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    assert_eq!(model.create_keys(PRIMARY, 1001).len(), 1001);
    let ours = key_id_of(
        c.create_key().tags(
            Tag::builder()
                .tag_key("keyfleet.dev/owner-uid")
                .tag_value("uid-42")
                .build()
                .unwrap(),
        ),
    )
    .await;
    let found = keyfleet::kms::observe::find_by_owner_uid(&c, "uid-42")
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some(ours.as_str()));
    assert!(
        model.requests_of("ListKeys").len() >= 2,
        "the scan needs two pages"
    );
}

#[tokio::test]
async fn keyfleet_imports_symmetric_material_with_every_wrapping_algorithm() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    for algorithm in WrappingAlgorithm::ALL {
        for wrapping_key_spec in [WrappingKeySpec::Rsa2048, WrappingKeySpec::Rsa3072] {
            let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
            let m = material(KeySpec::SymmetricDefault);
            let imported = import_material_as(
                &c,
                &key,
                &ImportInput {
                    material: &m,
                    algorithm,
                    wrapping_key_spec,
                    description: None,
                },
                None,
                ImportKind::Default,
            )
            .await
            .unwrap_or_else(|e| panic!("{algorithm} / {wrapping_key_spec}: {e}"));
            let expected = key_material_id(&key, m.import_bytes());
            assert_eq!(imported.as_deref(), Some(expected.as_str()));
            assert_eq!(state_of(&c, &key).await, KeyState::Enabled);
            let blob = encrypt(&c, &key, b"hello").await;
            assert_eq!(decrypt(&c, blob).await, b"hello");
            let gpi = model.requests_of("GetParametersForImport");
            let last = gpi.last().unwrap();
            assert_eq!(last.params["WrappingAlgorithm"], algorithm.as_str());
            assert_eq!(last.params["WrappingKeySpec"], wrapping_key_spec.as_str());
        }
    }
}

#[tokio::test]
async fn wrapping_keys_are_fresh_and_of_the_requested_size() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let mut seen = Vec::new();
    for (spec, bits) in [
        ("RSA_2048", 2048),
        ("RSA_3072", 3072),
        ("RSA_4096", 4096),
        ("RSA_2048", 2048),
    ] {
        let (_, public) = params(&c, &key, "RSAES_OAEP_SHA_256", spec).await;
        let parsed = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&public).unwrap();
        assert_eq!(parsed.key_size_bits(), bits);
        assert!(!seen.contains(&public), "a fresh wrapping key per call");
        seen.push(public);
    }
    let aws_kms = key_id_of(c.create_key()).await;
    assert_eq!(
        code(
            c.get_parameters_for_import()
                .key_id(&aws_kms)
                .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
                .wrapping_key_spec(SdkWrappingKeySpec::Rsa2048)
                .send()
                .await
        ),
        "UnsupportedOperationException"
    );
}

#[tokio::test]
async fn material_wrapped_for_other_parameters_does_not_unwrap() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let (token_a, _) = params(&c, &key, "RSAES_OAEP_SHA_256", "RSA_2048").await;
    let (_, public_b) = params(&c, &key, "RSAES_OAEP_SHA_256", "RSA_2048").await;
    let wrapped = m
        .wrap(WrappingAlgorithm::RsaesOaepSha256, &public_b)
        .unwrap();
    let r = send_import(&c, &key, token_a, Blob::new(wrapped.clone())).await;
    assert_eq!(code(r), "InvalidCiphertextException");
    // The right key, the wrong algorithm (token for SHA-1, material wrapped with SHA-256).
    let (token_sha1, public_sha1) = params(&c, &key, "RSAES_OAEP_SHA_1", "RSA_2048").await;
    let wrapped = m
        .wrap(WrappingAlgorithm::RsaesOaepSha256, &public_sha1)
        .unwrap();
    let r = send_import(&c, &key, token_sha1, Blob::new(wrapped)).await;
    assert_eq!(code(r), "InvalidCiphertextException");
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
}

#[tokio::test]
async fn import_tokens_are_bound_to_their_key_and_expire_after_24_hours() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let other = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let (token, public) = params(&c, &key, "RSAES_OAEP_SHA_256", "RSA_2048").await;
    let wrapped = Blob::new(m.wrap(WrappingAlgorithm::RsaesOaepSha256, &public).unwrap());
    let r = send_import(&c, &other, token.clone(), wrapped.clone()).await;
    assert_eq!(code(r), "InvalidImportTokenException");
    let r = send_import(&c, &key, Blob::new(b"made-up".to_vec()), wrapped.clone()).await;
    assert_eq!(code(r), "InvalidImportTokenException");
    model.advance(Duration::from_secs(24 * 3600 + 1));
    let r = send_import(&c, &key, token, wrapped).await;
    assert_eq!(code(r), "ExpiredImportTokenException");
    // keyfleet's path fetches fresh parameters and succeeds.
    keyfleet_import(&c, &key, &m, ImportKind::Default)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_length_and_wrong_kind_of_material_are_refused() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    for len in [16usize, 31, 33, 64] {
        let (token, public) = params(&c, &key, "RSAES_OAEP_SHA_256", "RSA_2048").await;
        let r = send_import(
            &c,
            &key,
            token,
            Blob::new(oaep_sha256(&public, &vec![7u8; len])),
        )
        .await;
        assert_eq!(code(r), "IncorrectKeyMaterialException", "{len} bytes");
    }
    let hmac = create_external(&c, "HMAC_384", "GENERATE_VERIFY_MAC", false).await;
    let (token, public) = params(&c, &hmac, "RSAES_OAEP_SHA_256", "RSA_2048").await;
    let r = send_import(
        &c,
        &hmac,
        token,
        Blob::new(oaep_sha256(&public, &[1u8; 32])),
    )
    .await;
    assert_eq!(
        code(r),
        "IncorrectKeyMaterialException",
        "HMAC_384 needs 48..=128 bytes"
    );
    // An EC key on another curve, an RSA key of another size.
    let p256 = create_external(&c, "ECC_NIST_P256", "SIGN_VERIFY", false).await;
    let p384 = material(KeySpec::EccNistP384);
    let (token, public) = params(&c, &p256, "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096").await;
    let r = does_not_expire(c.import_key_material())
        .key_id(&p256)
        .import_token(token)
        .encrypted_key_material(Blob::new(
            p384.wrap(WrappingAlgorithm::RsaAesKeyWrapSha256, &public)
                .unwrap(),
        ))
        .send()
        .await;
    assert_eq!(code(r), "IncorrectKeyMaterialException");
    let rsa3072 = create_external(&c, "RSA_3072", "SIGN_VERIFY", false).await;
    let rsa2048 = material(KeySpec::Rsa2048);
    let (token, public) = params(&c, &rsa3072, "RSA_AES_KEY_WRAP_SHA_1", "RSA_2048").await;
    let r = does_not_expire(c.import_key_material())
        .key_id(&rsa3072)
        .import_token(token)
        .encrypted_key_material(Blob::new(
            rsa2048
                .wrap(WrappingAlgorithm::RsaAesKeyWrapSha1, &public)
                .unwrap(),
        ))
        .send()
        .await;
    assert_eq!(code(r), "IncorrectKeyMaterialException");
    for k in [&key, &hmac, &p256, &rsa3072] {
        assert_eq!(state_of(&c, k).await, KeyState::PendingImport);
    }
}

#[tokio::test]
async fn expiration_model_and_valid_to_are_validated() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let now = model
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let cases: Vec<(Option<ExpirationModelType>, Option<i64>)> = vec![
        (None, None),
        (Some(ExpirationModelType::KeyMaterialExpires), None),
        (
            Some(ExpirationModelType::KeyMaterialExpires),
            Some(now - 60),
        ),
        (
            Some(ExpirationModelType::KeyMaterialExpires),
            Some(now + 366 * 86_400),
        ),
        (
            Some(ExpirationModelType::KeyMaterialDoesNotExpire),
            Some(now + 3600),
        ),
    ];
    for (model_type, valid_to) in cases {
        let (token, public) = params(&c, &key, "RSAES_OAEP_SHA_256", "RSA_2048").await;
        let r = c
            .import_key_material()
            .key_id(&key)
            .import_token(token)
            .encrypted_key_material(Blob::new(
                m.wrap(WrappingAlgorithm::RsaesOaepSha256, &public).unwrap(),
            ))
            .set_expiration_model(model_type.clone())
            .set_valid_to(valid_to.map(DateTime::from_secs))
            .send()
            .await;
        assert_eq!(
            code(r),
            "ValidationException",
            "{model_type:?} {valid_to:?}"
        );
    }
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
}

#[tokio::test]
async fn material_expires_at_valid_to_on_the_manual_clock() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let valid_to = jiff::Timestamp::from_second(
        model
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 3600,
    )
    .unwrap();
    import_material_as(&c, &key, &input(&m), Some(valid_to), ImportKind::Default)
        .await
        .unwrap();
    let meta = c
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state, Some(KeyState::Enabled));
    assert_eq!(meta.valid_to.map(|t| t.secs()), Some(valid_to.as_second()));
    assert_eq!(
        meta.expiration_model,
        Some(ExpirationModelType::KeyMaterialExpires)
    );
    let blob = encrypt(&c, &key, b"before expiry").await;
    model.advance(Duration::from_secs(3601));
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
    assert_eq!(
        code(c.decrypt().ciphertext_blob(blob.clone()).send().await),
        "KMSInvalidStateException"
    );
    // Re-importing the same material (no expiry now) brings the key and its ciphertexts back.
    keyfleet_import(&c, &key, &m, ImportKind::Default)
        .await
        .unwrap();
    assert_eq!(state_of(&c, &key).await, KeyState::Enabled);
    assert_eq!(decrypt(&c, blob).await, b"before expiry");
}

#[tokio::test]
async fn different_material_is_refused_once_a_key_has_material() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    for (spec, usage, ks) in [
        (
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
            KeySpec::SymmetricDefault,
        ),
        ("HMAC_256", "GENERATE_VERIFY_MAC", KeySpec::Hmac256),
        ("ECC_NIST_P256", "SIGN_VERIFY", KeySpec::EccNistP256),
    ] {
        let key = create_external(&c, spec, usage, false).await;
        keyfleet_import(&c, &key, &material(ks), ImportKind::Default)
            .await
            .unwrap();
        let other = keyfleet_import(&c, &key, &material(ks), ImportKind::Default).await;
        assert!(incorrect_material(&other), "{spec}: {other:?}");
    }
}

#[tokio::test]
async fn deleting_material_makes_the_key_pending_import_until_the_same_material_returns() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let id = keyfleet_import(&c, &key, &m, ImportKind::Default)
        .await
        .unwrap()
        .unwrap();
    let blob = encrypt(&c, &key, b"kept").await;
    let out = c
        .delete_imported_key_material()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_material_id.as_deref(), Some(id.as_str()));
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
    assert_eq!(
        code(
            c.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(c.disable_key().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    assert_eq!(model.key(PRIMARY, &key).unwrap().imported.len(), 0);
    let again = keyfleet_import(&c, &key, &m, ImportKind::Default)
        .await
        .unwrap();
    assert_eq!(
        again.as_deref(),
        Some(id.as_str()),
        "KeyMaterialId derives from the material"
    );
    assert_eq!(decrypt(&c, blob).await, b"kept");
}

#[tokio::test]
async fn on_demand_rotation_needs_pending_material_and_keeps_old_ciphertexts() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let first = material(KeySpec::SymmetricDefault);
    let first_id = keyfleet_import(&c, &key, &first, ImportKind::Default)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        code(c.rotate_key_on_demand().key_id(&key).send().await),
        "KMSInvalidStateException",
        "nothing pending"
    );
    let old = encrypt(&c, &key, b"old").await;
    let second = material(KeySpec::SymmetricDefault);
    let second_id = keyfleet_import(&c, &key, &second, ImportKind::New)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first_id, second_id);
    assert_eq!(
        rotations(&c, &key).await,
        vec![
            (
                first_id.clone(),
                KeyMaterialState::Current,
                "IMPORTED".into()
            ),
            (
                second_id.clone(),
                KeyMaterialState::PendingRotation,
                "IMPORTED".into()
            ),
        ]
    );
    let only_rotations = c.list_key_rotations().key_id(&key).send().await.unwrap();
    assert!(
        only_rotations.rotations().is_empty(),
        "ROTATIONS_ONLY lists completed rotations"
    );
    // A second NEW material while one is pending, and NEW with a KeyMaterialId, are refused.
    assert!(
        keyfleet_import(
            &c,
            &key,
            &material(KeySpec::SymmetricDefault),
            ImportKind::New
        )
        .await
        .is_err()
    );
    assert_eq!(
        model
            .requests_of("ImportKeyMaterial")
            .last()
            .unwrap()
            .error
            .as_deref(),
        Some("KMSInvalidStateException")
    );
    assert!(
        keyfleet::kms::execute::rotation_ready(&c, &key, &second_id)
            .await
            .unwrap()
    );
    c.rotate_key_on_demand().key_id(&key).send().await.unwrap();
    let meta = c
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(
        meta.current_key_material_id.as_deref(),
        Some(second_id.as_str())
    );
    assert_eq!(
        rotations(&c, &key).await,
        vec![
            (
                first_id.clone(),
                KeyMaterialState::NonCurrent,
                "IMPORTED".into()
            ),
            (
                second_id.clone(),
                KeyMaterialState::Current,
                "IMPORTED".into()
            ),
        ]
    );
    let listed = c.list_key_rotations().key_id(&key).send().await.unwrap();
    assert_eq!(listed.rotations().len(), 1);
    assert!(listed.rotations()[0].rotation_date.is_some());
    assert_eq!(
        decrypt(&c, old).await,
        b"old",
        "non-current material still decrypts"
    );
    let new = encrypt(&c, &key, b"new").await;
    assert_eq!(decrypt(&c, new).await, b"new");
    // Deleting the non-current material makes the key unusable until it is re-imported.
    c.delete_imported_key_material()
        .key_id(&key)
        .key_material_id(&first_id)
        .send()
        .await
        .unwrap();
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
    assert_eq!(rotations(&c, &key).await[0].2, "PENDING_IMPORT");
    let back = keyfleet_import(
        &c,
        &key,
        &first,
        ImportKind::Existing {
            key_material_id: Some(&first_id),
        },
    )
    .await
    .unwrap();
    assert_eq!(back.as_deref(), Some(first_id.as_str()));
    assert_eq!(state_of(&c, &key).await, KeyState::Enabled);
    // EXISTING with a KeyMaterialId that names other material.
    let r = keyfleet_import(
        &c,
        &key,
        &second,
        ImportKind::Existing {
            key_material_id: Some(&first_id),
        },
    )
    .await;
    assert!(r.is_err());
    assert_eq!(
        model
            .requests_of("ImportKeyMaterial")
            .last()
            .unwrap()
            .error
            .as_deref(),
        Some("IncorrectKeyMaterialException")
    );
}

#[tokio::test]
async fn new_material_with_a_key_material_id_is_invalid() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let (token, public) = params(&c, &key, "RSAES_OAEP_SHA_256", "RSA_2048").await;
    let r = does_not_expire(c.import_key_material())
        .key_id(&key)
        .import_token(token)
        .encrypted_key_material(Blob::new(
            m.wrap(WrappingAlgorithm::RsaesOaepSha256, &public).unwrap(),
        ))
        .import_type(ImportType::NewKeyMaterial)
        .key_material_id("0".repeat(64))
        .send()
        .await;
    assert_eq!(code(r), "ValidationException");
    // Deleting pending material removes it from the key.
    keyfleet_import(&c, &key, &m, ImportKind::Default)
        .await
        .unwrap();
    let pending = keyfleet_import(
        &c,
        &key,
        &material(KeySpec::SymmetricDefault),
        ImportKind::New,
    )
    .await
    .unwrap()
    .unwrap();
    c.delete_imported_key_material()
        .key_id(&key)
        .key_material_id(&pending)
        .send()
        .await
        .unwrap();
    assert_eq!(rotations(&c, &key).await.len(), 1);
    assert_eq!(state_of(&c, &key).await, KeyState::Enabled);
}

#[tokio::test]
async fn replicas_are_born_pending_import_and_take_only_the_primarys_material() {
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = create_external(&east, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", true).await;
    assert!(key.starts_with("mrk-"));
    let m = material(KeySpec::SymmetricDefault);
    let id = keyfleet_import(&east, &key, &m, ImportKind::Default)
        .await
        .unwrap()
        .unwrap();
    let replica = east
        .replicate_key()
        .key_id(&key)
        .replica_region(REPLICA)
        .description("replica")
        .send()
        .await
        .unwrap()
        .replica_key_metadata
        .unwrap();
    assert_eq!(replica.key_id, key, "replicas share the key id");
    assert_eq!(
        replica.key_state,
        Some(KeyState::PendingImport),
        "never copies imported material"
    );
    assert_eq!(
        code(
            east.replicate_key()
                .key_id(&key)
                .replica_region(REPLICA)
                .send()
                .await
        ),
        "AlreadyExistsException"
    );
    let primary_meta = east
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let mr = primary_meta.multi_region_configuration.unwrap();
    assert_eq!(
        mr.multi_region_key_type.as_ref().unwrap().as_str(),
        "PRIMARY"
    );
    assert_eq!(mr.replica_keys().len(), 1);
    assert_eq!(mr.replica_keys()[0].region(), Some(REPLICA));
    let blob = encrypt(&east, &key, b"across regions").await;
    assert_eq!(
        code(west.decrypt().ciphertext_blob(blob.clone()).send().await),
        "KMSInvalidStateException"
    );
    let other = keyfleet_import(
        &west,
        &key,
        &material(KeySpec::SymmetricDefault),
        ImportKind::Default,
    )
    .await;
    assert!(incorrect_material(&other), "{other:?}");
    let replica_id = keyfleet_import(&west, &key, &m, ImportKind::Default)
        .await
        .unwrap();
    assert_eq!(replica_id.as_deref(), Some(id.as_str()));
    assert_eq!(state_of(&west, &key).await, KeyState::Enabled);
    assert_eq!(decrypt(&west, blob).await, b"across regions");
    assert_eq!(model.keys().len(), 2);
}

#[tokio::test]
async fn multi_region_rotation_waits_for_every_replica() {
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = create_external(&east, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", true).await;
    let first = material(KeySpec::SymmetricDefault);
    keyfleet_import(&east, &key, &first, ImportKind::Default)
        .await
        .unwrap();
    replicate(&east, &key).await;
    keyfleet_import(&west, &key, &first, ImportKind::Default)
        .await
        .unwrap();
    let second = material(KeySpec::SymmetricDefault);
    assert!(
        keyfleet_import(&west, &key, &second, ImportKind::New)
            .await
            .is_err(),
        "new material goes into the primary only"
    );
    assert_eq!(
        model
            .requests_of("ImportKeyMaterial")
            .last()
            .unwrap()
            .error
            .as_deref(),
        Some("UnsupportedOperationException")
    );
    let second_id = keyfleet_import(&east, &key, &second, ImportKind::New)
        .await
        .unwrap()
        .unwrap();
    let states = rotations(&east, &key).await;
    assert_eq!(
        states[1].1,
        KeyMaterialState::PendingMultiRegionImportAndRotation
    );
    assert_eq!(rotations(&west, &key).await[1].2, "PENDING_IMPORT");
    assert!(
        !keyfleet::kms::execute::rotation_ready(&east, &key, &second_id)
            .await
            .unwrap()
    );
    assert_eq!(
        code(east.rotate_key_on_demand().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    keyfleet_import(
        &west,
        &key,
        &second,
        ImportKind::Existing {
            key_material_id: Some(&second_id),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        rotations(&east, &key).await[1].1,
        KeyMaterialState::PendingRotation
    );
    assert_eq!(
        code(west.rotate_key_on_demand().key_id(&key).send().await),
        "UnsupportedOperationException",
        "rotate on the primary"
    );
    east.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    for c in [&east, &west] {
        let meta = c
            .describe_key()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        assert_eq!(
            meta.current_key_material_id.as_deref(),
            Some(second_id.as_str())
        );
        assert_eq!(meta.key_state, Some(KeyState::Enabled));
    }
    let view = model.key(REPLICA, &key).unwrap();
    assert_eq!(
        view.materials.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        vec![Role::NonCurrent, Role::Current]
    );
}

#[tokio::test]
async fn a_primary_with_replicas_waits_in_pending_replica_deletion() {
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = create_external(&east, "HMAC_256", "GENERATE_VERIFY_MAC", true).await;
    replicate(&east, &key).await;
    assert_eq!(
        code(
            east.schedule_key_deletion()
                .key_id(&key)
                .pending_window_in_days(6)
                .send()
                .await
        ),
        "ValidationException"
    );
    let out = east
        .schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_state, Some(KeyState::PendingReplicaDeletion));
    assert!(out.deletion_date.is_none());
    assert_eq!(
        code(east.schedule_key_deletion().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    west.schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(state_of(&west, &key).await, KeyState::PendingDeletion);
    model.advance(Duration::from_secs(7 * 86_400 + 1));
    assert_eq!(
        code(west.describe_key().key_id(&key).send().await),
        "NotFoundException"
    );
    let meta = east
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state, Some(KeyState::PendingDeletion));
    assert!(meta.deletion_date.is_some());
    model.advance(Duration::from_secs(7 * 86_400 + 1));
    assert!(model.keys().is_empty());
}

#[tokio::test]
async fn cancelled_deletion_leaves_the_key_disabled() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = key_id_of(c.create_key()).await;
    c.create_alias()
        .alias_name("alias/kept")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(c.cancel_key_deletion().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    c.schedule_key_deletion().key_id(&key).send().await.unwrap();
    assert_eq!(
        code(
            c.tag_resource()
                .key_id(&key)
                .tags(Tag::builder().tag_key("a").tag_value("b").build().unwrap())
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(
            c.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    c.cancel_key_deletion().key_id(&key).send().await.unwrap();
    assert_eq!(state_of(&c, &key).await, KeyState::Disabled);
    assert_eq!(
        code(
            c.encrypt()
                .key_id("alias/kept")
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "DisabledException"
    );
    c.enable_key().key_id(&key).send().await.unwrap();
    let blob = encrypt(&c, "alias/kept", b"x").await;
    assert_eq!(decrypt(&c, blob).await, b"x");
}

#[tokio::test]
async fn hmac_keys_mac_with_the_imported_material() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    for (ks, spec, alg) in [
        (KeySpec::Hmac224, "HMAC_224", MacAlgorithmSpec::HmacSha224),
        (KeySpec::Hmac256, "HMAC_256", MacAlgorithmSpec::HmacSha256),
        (KeySpec::Hmac384, "HMAC_384", MacAlgorithmSpec::HmacSha384),
        (KeySpec::Hmac512, "HMAC_512", MacAlgorithmSpec::HmacSha512),
    ] {
        let key = create_external(&c, spec, "GENERATE_VERIFY_MAC", false).await;
        let m = material(ks);
        let id = keyfleet_import(&c, &key, &m, ImportKind::Default)
            .await
            .unwrap();
        assert_eq!(id, None, "KeyMaterialId is for symmetric encryption keys");
        let mac = c
            .generate_mac()
            .key_id(&key)
            .mac_algorithm(alg.clone())
            .message(Blob::new(b"probe".to_vec()))
            .send()
            .await
            .unwrap()
            .mac
            .unwrap()
            .into_inner();
        assert_eq!(Some(mac.clone()), m.hmac(b"probe"));
        c.verify_mac()
            .key_id(&key)
            .mac_algorithm(alg.clone())
            .message(Blob::new(b"probe".to_vec()))
            .mac(Blob::new(mac.clone()))
            .send()
            .await
            .unwrap();
        let mut bad = mac;
        bad[0] ^= 1;
        assert_eq!(
            code(
                c.verify_mac()
                    .key_id(&key)
                    .mac_algorithm(alg.clone())
                    .message(Blob::new(b"probe".to_vec()))
                    .mac(Blob::new(bad))
                    .send()
                    .await
            ),
            "KMSInvalidMacException"
        );
        let wrong = if spec == "HMAC_256" {
            MacAlgorithmSpec::HmacSha512
        } else {
            MacAlgorithmSpec::HmacSha256
        };
        assert_eq!(
            code(
                c.generate_mac()
                    .key_id(&key)
                    .mac_algorithm(wrong)
                    .message(Blob::new(b"probe".to_vec()))
                    .send()
                    .await
            ),
            "InvalidKeyUsageException"
        );
        assert_eq!(
            keyfleet_verification(&c, &key, &m).await,
            Verification::Verified(Method::Mac)
        );
    }
}

#[tokio::test]
async fn asymmetric_keys_sign_and_publish_the_imported_public_key() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    for (ks, spec, alg) in [
        (
            KeySpec::Rsa2048,
            "RSA_2048",
            SigningAlgorithmSpec::RsassaPssSha256,
        ),
        (
            KeySpec::Rsa3072,
            "RSA_3072",
            SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
        ),
        (
            KeySpec::EccNistP256,
            "ECC_NIST_P256",
            SigningAlgorithmSpec::EcdsaSha256,
        ),
        (
            KeySpec::EccNistP384,
            "ECC_NIST_P384",
            SigningAlgorithmSpec::EcdsaSha384,
        ),
        (
            KeySpec::EccNistP521,
            "ECC_NIST_P521",
            SigningAlgorithmSpec::EcdsaSha512,
        ),
        (
            KeySpec::EccSecgP256k1,
            "ECC_SECG_P256K1",
            SigningAlgorithmSpec::EcdsaSha256,
        ),
    ] {
        let key = create_external(&c, spec, "SIGN_VERIFY", false).await;
        let m = material(ks);
        // keyfleet's defaults (RSA_AES_KEY_WRAP_SHA_256, RSA_4096) once; RSA_2048 elsewhere.
        let (algorithm, wrapping_key_spec) = match spec {
            "RSA_2048" => WrappingAlgorithm::default_for(ks),
            _ => (
                WrappingAlgorithm::RsaAesKeyWrapSha256,
                WrappingKeySpec::Rsa2048,
            ),
        };
        let import = ImportInput {
            material: &m,
            algorithm,
            wrapping_key_spec,
            description: None,
        };
        import_material_as(&c, &key, &import, None, ImportKind::Default)
            .await
            .unwrap();
        let public = c
            .get_public_key()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .public_key
            .unwrap()
            .into_inner();
        assert_eq!(Some(public.clone()), m.public_key_der(), "{spec}");
        let sig = c
            .sign()
            .key_id(&key)
            .message(Blob::new(b"signed message".to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(alg.clone())
            .send()
            .await
            .unwrap()
            .signature
            .unwrap()
            .into_inner();
        let verified = c
            .verify()
            .key_id(&key)
            .message(Blob::new(b"signed message".to_vec()))
            .signing_algorithm(alg.clone())
            .signature(Blob::new(sig.clone()))
            .send()
            .await
            .unwrap();
        assert!(verified.signature_valid);
        assert_eq!(
            code(
                c.verify()
                    .key_id(&key)
                    .message(Blob::new(b"other message".to_vec()))
                    .signing_algorithm(alg.clone())
                    .signature(Blob::new(sig))
                    .send()
                    .await
            ),
            "KMSInvalidSignatureException",
            "{spec}"
        );
        assert_eq!(
            keyfleet_verification(&c, &key, &m).await,
            Verification::Verified(Method::PublicKey),
            "{spec}"
        );
    }
}

#[tokio::test]
async fn key_policies_must_be_json_small_and_not_lock_the_caller_out() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = key_id_of(c.create_key()).await;
    let default = c
        .get_key_policy()
        .key_id(&key)
        .policy_name("default")
        .send()
        .await
        .unwrap();
    assert!(
        default
            .policy()
            .unwrap()
            .contains("arn:aws:iam::111122223333:root")
    );
    assert_eq!(
        code(
            c.put_key_policy()
                .key_id(&key)
                .policy_name("default")
                .policy("{not json")
                .send()
                .await
        ),
        "MalformedPolicyDocumentException"
    );
    let huge = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*","Sid":"{}"}}]}}"#,
        "x".repeat(33_000)
    );
    assert_eq!(
        code(
            c.put_key_policy()
                .key_id(&key)
                .policy_name("default")
                .policy(huge)
                .send()
                .await
        ),
        "LimitExceededException"
    );
    let lockout = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/other"},"Action":"kms:*","Resource":"*"}]}"#;
    assert_eq!(
        code(
            c.put_key_policy()
                .key_id(&key)
                .policy_name("default")
                .policy(lockout)
                .send()
                .await
        ),
        "MalformedPolicyDocumentException"
    );
    c.put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(lockout)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .unwrap();
    let caller = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/AKIDMODELTEST"},"Action":["kms:PutKeyPolicy","kms:Describe*"],"Resource":"*"}]}"#;
    c.put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(caller)
        .send()
        .await
        .unwrap();
    assert_eq!(model.key(PRIMARY, &key).unwrap().policy, caller);
}

#[tokio::test]
async fn aliases_and_tags_follow_kms_rules_and_page() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let a = key_id_of(c.create_key()).await;
    let b = key_id_of(c.create_key()).await;
    for i in 0..60 {
        c.create_alias()
            .alias_name(format!("alias/a-{i:02}"))
            .target_key_id(&a)
            .send()
            .await
            .unwrap();
    }
    c.create_alias()
        .alias_name("alias/b")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            c.create_alias()
                .alias_name("alias/b")
                .target_key_id(&a)
                .send()
                .await
        ),
        "AlreadyExistsException"
    );
    assert_eq!(
        code(
            c.create_alias()
                .alias_name("no-prefix")
                .target_key_id(&a)
                .send()
                .await
        ),
        "ValidationException"
    );
    let first = c.list_aliases().key_id(&a).send().await.unwrap();
    assert_eq!(first.aliases().len(), 50, "ListAliases pages 50 by default");
    assert!(first.truncated);
    let rest = c
        .list_aliases()
        .key_id(&a)
        .marker(first.next_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.aliases().len(), 10);
    assert_eq!(
        c.list_aliases()
            .limit(100)
            .send()
            .await
            .unwrap()
            .aliases()
            .len(),
        61
    );
    assert_eq!(
        code(c.list_aliases().limit(101).send().await),
        "ValidationException"
    );
    c.update_alias()
        .alias_name("alias/b")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.describe_key()
            .key_id("alias/b")
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .key_id,
        a
    );
    c.delete_alias().alias_name("alias/b").send().await.unwrap();
    assert_eq!(
        code(c.delete_alias().alias_name("alias/b").send().await),
        "NotFoundException"
    );
    assert_eq!(
        code(
            c.tag_resource()
                .key_id("alias/a-00")
                .tags(Tag::builder().tag_key("k").tag_value("v").build().unwrap())
                .send()
                .await
        ),
        "NotFoundException",
        "TagResource takes no alias"
    );
    assert_eq!(
        code(
            c.tag_resource()
                .key_id(&a)
                .tags(
                    Tag::builder()
                        .tag_key("aws:x")
                        .tag_value("v")
                        .build()
                        .unwrap()
                )
                .send()
                .await
        ),
        "TagException"
    );
    let comma = Tag::builder()
        .tag_key("k")
        .tag_value("a,b")
        .build()
        .unwrap();
    assert_eq!(
        code(c.tag_resource().key_id(&a).tags(comma).send().await),
        "TagException"
    );
    for i in 0..50 {
        c.tag_resource()
            .key_id(&a)
            .tags(
                Tag::builder()
                    .tag_key(format!("k{i:02}"))
                    .tag_value("v")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        code(
            c.tag_resource()
                .key_id(&a)
                .tags(
                    Tag::builder()
                        .tag_key("one-too-many")
                        .tag_value("v")
                        .build()
                        .unwrap()
                )
                .send()
                .await
        ),
        "TagException"
    );
    let tags = c
        .list_resource_tags()
        .key_id(&a)
        .limit(30)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().len(), 30);
    let more = c
        .list_resource_tags()
        .key_id(&a)
        .limit(30)
        .marker(tags.next_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(more.tags().len(), 20);
    c.untag_resource()
        .key_id(&a)
        .tag_keys("k00")
        .send()
        .await
        .unwrap();
    assert_eq!(model.key(PRIMARY, &a).unwrap().tags.len(), 49);
    c.update_key_description()
        .key_id(&a)
        .description("described")
        .send()
        .await
        .unwrap();
    assert_eq!(model.key(PRIMARY, &a).unwrap().description, "described");
}

#[tokio::test]
async fn create_key_checks_spec_and_usage() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    assert_eq!(
        code(c.create_key().key_spec(SdkKeySpec::Hmac256).send().await),
        "ValidationException",
        "HMAC keys need GENERATE_VERIFY_MAC"
    );
    assert_eq!(
        code(
            c.create_key()
                .key_spec(SdkKeySpec::EccNistP256)
                .key_usage(KeyUsageType::EncryptDecrypt)
                .send()
                .await
        ),
        "ValidationException"
    );
    let meta = c
        .create_key()
        .key_spec(SdkKeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.mac_algorithms().len(), 1);
    assert_eq!(meta.key_state, Some(KeyState::Enabled));
}

#[tokio::test]
async fn quotas_throttle_per_region_and_operation_without_burst() {
    let model = KmsModel::start().await.unwrap();
    // AWS's table at a hundredth of the rate: CreateKey one per 20 s, DescribeKey 20 per
    // second; the buckets refill on the manual clock, so nothing here depends on timing.
    let quotas = keyfleet::kms::KmsQuotas::aws_defaults().scaled(0.01);
    model.enforce_quotas(quotas.iter(), 0.05);
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = key_id_of(east.create_key().multi_region(true)).await;
    assert_eq!(
        code(east.create_key().send().await),
        "ThrottlingException",
        "CreateKey: no burst"
    );
    // Another operation, another Region: their own buckets.
    east.describe_key().key_id(&key).send().await.unwrap();
    west.create_key().send().await.unwrap();
    // ReplicateKey also takes a CreateKey token in the replica's Region.
    assert_eq!(
        code(
            east.replicate_key()
                .key_id(&key)
                .replica_region(REPLICA)
                .send()
                .await
        ),
        "ThrottlingException"
    );
    model.advance(Duration::from_secs(20));
    replicate(&east, &key).await;
    east.create_key().send().await.unwrap();
    let throttled: Vec<(String, String)> = model
        .requests()
        .iter()
        .filter(|r| r.error.as_deref() == Some("ThrottlingException"))
        .map(|r| (r.region.clone(), r.operation.clone()))
        .collect();
    assert_eq!(
        throttled,
        vec![
            (PRIMARY.to_string(), "CreateKey".to_string()),
            (PRIMARY.to_string(), "ReplicateKey".to_string())
        ]
    );
    assert_eq!(model.keys().len(), 4);
}

#[tokio::test]
async fn injected_faults_are_applied_and_recorded() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    model.inject(Fault::once("CreateKey", FaultKind::LostAnswer));
    let lost = c.create_key().description("lost").send().await;
    assert_eq!(code(lost), "KMSInternalException");
    assert_eq!(model.keys().len(), 1, "the lost answer's key exists");
    model.inject(Fault::once("CreateKey", FaultKind::ServerError));
    assert_eq!(code(c.create_key().send().await), "KMSInternalException");
    assert_eq!(
        model.keys().len(),
        1,
        "a 500 before the call creates nothing"
    );
    model.inject(Fault::once("ListKeys", FaultKind::Throttle));
    assert_eq!(code(c.list_keys().send().await), "ThrottlingException");
    model.inject(Fault::always("DescribeKey", FaultKind::AccessDenied).in_region(PRIMARY));
    let key = &model.keys()[0].key_id;
    assert_eq!(
        code(c.describe_key().key_id(key).send().await),
        "AccessDeniedException"
    );
    assert_eq!(
        code(c.describe_key().key_id(key).send().await),
        "AccessDeniedException"
    );
    let log = model.requests();
    let faults: Vec<_> = log
        .iter()
        .filter_map(|r| r.fault.map(|f| (r.operation.as_str(), f, r.took_effect)))
        .collect();
    assert_eq!(
        faults,
        vec![
            ("CreateKey", FaultKind::LostAnswer, true),
            ("CreateKey", FaultKind::ServerError, false),
            ("ListKeys", FaultKind::Throttle, false),
            ("DescribeKey", FaultKind::AccessDenied, false),
            ("DescribeKey", FaultKind::AccessDenied, false),
        ]
    );
    assert_eq!(log[0].params["Description"], "lost");
    assert!(
        model
            .pending_faults()
            .iter()
            .all(|f| f.operation == "DescribeKey")
    );
}

fn sts(model: &KmsModel, access_key: &str) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(PRIMARY))
        .endpoint_url(model.url())
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            access_key, "secret", None, None, "test",
        ))
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

#[tokio::test]
async fn sts_answers_caller_identity_and_assume_role_with_external_id() {
    let model = KmsModel::start().await.unwrap();
    let who = sts(&model, "AKIDSTS")
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(who.account(), Some("111122223333"));
    assert_eq!(who.arn(), Some("arn:aws:iam::111122223333:user/AKIDSTS"));
    let role = "arn:aws:iam::111122223333:role/platform/keyfleet";
    model.add_role(role, Some("ext-42"));
    let denied = sts(&model, "AKIDSTS")
        .assume_role()
        .role_arn(role)
        .role_session_name("keyfleet")
        .external_id("wrong")
        .send()
        .await;
    assert_eq!(
        denied
            .expect_err("wrong ExternalId")
            .as_service_error()
            .and_then(|e| e.meta().code()),
        Some("AccessDenied")
    );
    let out = sts(&model, "AKIDSTS")
        .assume_role()
        .role_arn(role)
        .role_session_name("keyfleet")
        .external_id("ext-42")
        .send()
        .await
        .unwrap();
    let creds = out.credentials.unwrap();
    assert_eq!(
        out.assumed_role_user.unwrap().arn,
        "arn:aws:sts::111122223333:assumed-role/keyfleet/keyfleet"
    );
    let session = sts(&model, &creds.access_key_id)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        session.arn(),
        Some("arn:aws:sts::111122223333:assumed-role/keyfleet/keyfleet")
    );
    let assumed: Vec<_> = model
        .requests_of("sts:AssumeRole")
        .into_iter()
        .map(|r| (r.params["ExternalId"].as_str().map(str::to_string), r.error))
        .collect();
    assert_eq!(
        assumed,
        vec![
            (Some("wrong".to_string()), Some("AccessDenied".to_string())),
            (Some("ext-42".to_string()), None)
        ]
    );
}

/// keyfleet's own connection code: an AwsKms with roleArn and externalId assumes the role
/// through STS (carrying the ExternalId) and calls KMS as the role session.
#[tokio::test]
async fn keyfleet_connections_assume_their_role_with_the_external_id() {
    use keyfleet::api::{AllowedNamespaces, AwsKmsSpec};
    use keyfleet::kms::{Connection, KmsClients};
    let model = KmsModel::start().await.unwrap();
    let role = "arn:aws:iam::111122223333:role/keyfleet";
    model.add_role(role, Some("ext-42"));
    let base = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(PRIMARY))
        .endpoint_url(model.url())
        .credentials_provider(Credentials::new(
            "AKIDOPERATOR",
            "secret",
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let clients = KmsClients::from_config(base);
    let connection = |external_id: &str| Connection {
        name: format!("conn-{external_id}"),
        version: Some("1".into()),
        spec: AwsKmsSpec {
            role_arn: Some(role.to_string()),
            external_id: Some(external_id.to_string()),
            endpoint_url: Some(model.url()),
            ..AwsKmsSpec::new(AllowedNamespaces::all())
        },
    };
    let requester = keyfleet::kms::Requester::new("team-a", "orders");
    let kms = clients
        .client(&connection("ext-42"), PRIMARY, &requester)
        .await;
    kms.create_key()
        .description("as the role")
        .send()
        .await
        .unwrap();
    let create = &model.requests_of("CreateKey")[0];
    assert!(create.access_key_id.starts_with("ASIA"), "{create:?}");
    let assume = &model.requests_of("sts:AssumeRole")[0];
    assert_eq!(assume.params["ExternalId"], "ext-42");
    assert_eq!(assume.params["RoleSessionName"], "kf.team-a.orders");
    assert_eq!(assume.access_key_id, "AKIDOPERATOR");
    // A wrong ExternalId: STS refuses, and no KMS call goes out.
    let wrong = clients
        .client(&connection("nope"), PRIMARY, &requester)
        .await;
    assert!(wrong.list_keys().send().await.is_err());
    assert!(model.requests_of("ListKeys").is_empty());
    assert_eq!(
        model
            .requests_of("sts:AssumeRole")
            .last()
            .unwrap()
            .error
            .as_deref(),
        Some("AccessDenied")
    );
}

#[tokio::test]
async fn ciphertexts_are_bound_to_key_and_encryption_context() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let a = key_id_of(c.create_key()).await;
    let b = key_id_of(c.create_key()).await;
    let blob = c
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new(b"secret".to_vec()))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    assert_eq!(
        code(c.decrypt().ciphertext_blob(blob.clone()).send().await),
        "InvalidCiphertextException",
        "the encryption context is part of the ciphertext"
    );
    assert_eq!(
        code(
            c.decrypt()
                .ciphertext_blob(blob.clone())
                .encryption_context("purpose", "test")
                .key_id(&b)
                .send()
                .await
        ),
        "IncorrectKeyException"
    );
    let mut tampered = blob.clone().into_inner();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        code(
            c.decrypt()
                .ciphertext_blob(Blob::new(tampered))
                .encryption_context("purpose", "test")
                .send()
                .await
        ),
        "InvalidCiphertextException"
    );
    let plain = c
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("purpose", "test")
        .key_id(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext.unwrap().into_inner(), b"secret");
    c.disable_key().key_id(&a).send().await.unwrap();
    assert_eq!(
        code(
            c.encrypt()
                .key_id(&a)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "DisabledException"
    );
    let hmac = key_id_of(
        c.create_key()
            .key_spec(SdkKeySpec::Hmac256)
            .key_usage(KeyUsageType::GenerateVerifyMac),
    )
    .await;
    assert_eq!(
        code(
            c.encrypt()
                .key_id(&hmac)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "InvalidKeyUsageException"
    );
    assert_eq!(
        code(c.list_key_rotations().key_id(&hmac).send().await),
        "UnsupportedOperationException"
    );
}

#[tokio::test]
async fn digests_sign_like_raw_messages() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = key_id_of(
        c.create_key()
            .key_spec(SdkKeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify),
    )
    .await;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"message");
    let sig = c
        .sign()
        .key_id(&key)
        .message(Blob::new(digest.as_ref().to_vec()))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap()
        .signature
        .unwrap();
    let ok = c
        .verify()
        .key_id(&key)
        .message(Blob::new(b"message".to_vec()))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .signature(sig)
        .send()
        .await
        .unwrap();
    assert!(ok.signature_valid);
    assert_eq!(
        code(
            c.sign()
                .key_id(&key)
                .message(Blob::new(vec![0u8; 31]))
                .message_type(MessageType::Digest)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
        ),
        "ValidationException"
    );
    assert_eq!(
        code(
            c.sign()
                .key_id(&key)
                .message(Blob::new(b"m".to_vec()))
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha384)
                .send()
                .await
        ),
        "InvalidKeyUsageException"
    );
}

#[tokio::test]
async fn update_primary_region_swaps_primary_and_replica() {
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = key_id_of(east.create_key().multi_region(true)).await;
    replicate(&east, &key).await;
    let blob = encrypt(&east, &key, b"shared material").await;
    assert_eq!(
        decrypt(&west, blob).await,
        b"shared material",
        "KMS-made material is shared"
    );
    assert_eq!(
        code(
            west.replicate_key()
                .key_id(&key)
                .replica_region("ap-south-1")
                .send()
                .await
        ),
        "UnsupportedOperationException",
        "a replica cannot be replicated"
    );
    east.update_primary_region()
        .key_id(&key)
        .primary_region(REPLICA)
        .send()
        .await
        .unwrap();
    let meta = west
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let mr = meta.multi_region_configuration.unwrap();
    assert_eq!(
        mr.multi_region_key_type.as_ref().unwrap().as_str(),
        "PRIMARY"
    );
    assert_eq!(mr.replica_keys()[0].region(), Some(PRIMARY));
    assert_eq!(
        model.key(PRIMARY, &key).unwrap().primary_region.as_deref(),
        Some(REPLICA)
    );
}

/// keyfleet finding: when the answer of an ImportKeyMaterial(NEW_KEY_MATERIAL) is lost, a
/// retry of the same NEW import is refused (the material is already associated with the key)
/// with IncorrectKeyMaterialException. keyfleet now recognises its own pending material by its
/// KeyMaterialDescription and goes on (tests/material_retention.rs,
/// `a_rotation_whose_answers_are_lost_completes_once`).
#[tokio::test]
async fn a_lost_new_material_answer_makes_keyfleets_retry_fail() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    keyfleet_import(
        &c,
        &key,
        &material(KeySpec::SymmetricDefault),
        ImportKind::Default,
    )
    .await
    .unwrap();
    let next = material(KeySpec::SymmetricDefault);
    model.inject(Fault::once("ImportKeyMaterial", FaultKind::LostAnswer));
    assert!(
        keyfleet_import(&c, &key, &next, ImportKind::New)
            .await
            .is_err()
    );
    let pending = model.key(PRIMARY, &key).unwrap();
    assert_eq!(pending.materials.len(), 2, "the lost call took effect");
    assert_eq!(pending.materials[1].1, Role::Pending);
    let retry = keyfleet_import(&c, &key, &next, ImportKind::New).await;
    assert!(incorrect_material(&retry), "{retry:?}");
}

/// keyfleet finding: with expiring material (validTo / rollingValidity) and rotation, the
/// material that became NON_CURRENT keeps its ValidTo; when it passes, KMS deletes it and the
/// key goes to PendingImport although the current material is valid. keyfleet now renews it
/// from a `keyMaterial.retained` Secret, raises `MaterialWillExpire` when none holds it, and
/// refuses such a rotation until the old material is retained (tests/material_retention.rs).
#[tokio::test]
async fn expiry_of_non_current_material_makes_a_rotated_key_pending_import() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let now = model
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let soon = jiff::Timestamp::from_second(now + 3600).unwrap();
    let later = jiff::Timestamp::from_second(now + 30 * 86_400).unwrap();
    let first = material(KeySpec::SymmetricDefault);
    import_material_as(&c, &key, &input(&first), Some(soon), ImportKind::Default)
        .await
        .unwrap();
    let second = material(KeySpec::SymmetricDefault);
    import_material_as(&c, &key, &input(&second), Some(later), ImportKind::New)
        .await
        .unwrap();
    c.rotate_key_on_demand().key_id(&key).send().await.unwrap();
    // keyfleet's renewal: the current (second) material again, with a fresh expiry.
    import_material_as(&c, &key, &input(&second), Some(later), ImportKind::Default)
        .await
        .unwrap();
    let meta = c
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state, Some(KeyState::Enabled));
    // DescribeKey's ValidTo is the earliest expiry of any material the key holds: the
    // renewal does not move it, so keyfleet's expiry check (observed ValidTo vs desired)
    // keeps asking for another import of the current material.
    assert_eq!(meta.valid_to.map(|t| t.secs()), Some(soon.as_second()));
    model.advance(Duration::from_secs(3601));
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
    assert_eq!(rotations(&c, &key).await[0].2, "PENDING_IMPORT");
}

#[tokio::test]
async fn replicas_can_be_made_to_stay_creating_for_a_while() {
    let model = KmsModel::start().await.unwrap();
    model.set_replica_creation_delay(Duration::from_secs(5));
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = create_external(&east, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", true).await;
    let m = material(KeySpec::SymmetricDefault);
    keyfleet_import(&east, &key, &m, ImportKind::Default)
        .await
        .unwrap();
    let out = east
        .replicate_key()
        .key_id(&key)
        .replica_region(REPLICA)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.replica_key_metadata.unwrap().key_state,
        Some(KeyState::Creating)
    );
    let err = keyfleet_import(&west, &key, &m, ImportKind::Default)
        .await
        .expect_err("no import while Creating");
    assert!(
        matches!(
            err,
            keyfleet::kms::execute::ExecuteError::Kms(keyfleet::kms::KmsError::InvalidState { .. })
        ),
        "{err}"
    );
    // Managing the key works meanwhile.
    west.update_key_description()
        .key_id(&key)
        .description("while creating")
        .send()
        .await
        .unwrap();
    model.advance(Duration::from_secs(5));
    assert_eq!(state_of(&west, &key).await, KeyState::PendingImport);
    keyfleet_import(&west, &key, &m, ImportKind::Default)
        .await
        .unwrap();
    assert_eq!(state_of(&west, &key).await, KeyState::Enabled);
}

#[tokio::test]
async fn keyfleets_deletion_of_a_primary_with_replicas_is_done_once_scheduled() {
    use keyfleet::kms::execute::{DeletionOutcome, schedule_deletion};
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let key = key_id_of(east.create_key().multi_region(true)).await;
    replicate(&east, &key).await;
    assert_eq!(
        schedule_deletion(&east, &key, 7).await.unwrap(),
        DeletionOutcome::Scheduled
    );
    assert_eq!(
        model.key(PRIMARY, &key).unwrap().key_state,
        "PendingReplicaDeletion"
    );
    assert_eq!(
        schedule_deletion(&east, &key, 7).await.unwrap(),
        DeletionOutcome::AlreadyGone
    );
    let refused = model.requests_of("ScheduleKeyDeletion");
    assert_eq!(
        refused.last().unwrap().error.as_deref(),
        Some("KMSInvalidStateException")
    );
}

/// keyfleet finding, through keyfleet's planner fed by DescribeKey alone: with
/// `rollingValidity` and a rotation, DescribeKey's ValidTo stays the NON_CURRENT material's
/// (the earliest), so every plan asks for another import of the current material, and the key
/// still goes to PendingImport when the old material's ValidTo passes. The controller now
/// reads the inventory of such a key and renews the current material by its own ValidTo
/// (tests/material_retention.rs, `unretained_material_raises_material_will_expire_...`).
#[tokio::test]
async fn rolling_validity_after_a_rotation_plans_an_import_on_every_reconcile() {
    use keyfleet::plan::{DesiredKey, MaterialFacts, RotationFacts, plan_key};
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let now = || {
        jiff::Timestamp::from_second(
            model
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        )
        .unwrap()
    };
    let day = jiff::SignedDuration::from_hours(24);
    let rolling = day * 30;
    let desired = DesiredKey {
        key_spec: KeySpec::SymmetricDefault,
        key_usage: keyfleet::api::KeyUsage::EncryptDecrypt,
        description: String::new(),
        tags: Default::default(),
        alias: None,
        policy: None,
        bypass_policy_lockout_safety_check: false,
        multi_region: false,
        valid_to: None,
        rolling_validity: Some(rolling),
        on_change: keyfleet::api::MaterialChangePolicy::Rotate,
        retire: vec![],
        expiring_previous_material: Default::default(),
        enabled: true,
    };
    let first = material(KeySpec::SymmetricDefault);
    let second = material(KeySpec::SymmetricDefault);
    import_material_as(
        &c,
        &key,
        &input(&first),
        Some(now() + rolling),
        ImportKind::Default,
    )
    .await
    .unwrap();
    import_material_as(
        &c,
        &key,
        &input(&second),
        Some(now() + rolling),
        ImportKind::New,
    )
    .await
    .unwrap();
    c.rotate_key_on_demand().key_id(&key).send().await.unwrap();
    model.advance(Duration::from_secs(25 * 86_400));
    let fingerprint = second.fingerprint();
    let plan = |observed: &keyfleet::plan::ObservedKey| {
        let facts = MaterialFacts {
            secret_fingerprint: fingerprint.as_str(),
            imported_fingerprint: Some(fingerprint.as_str()),
            now: now(),
            renew_before: day * 7,
            rotation: RotationFacts::None,
            retained: &[],
            unproven: false,
            unlisted: false,
        };
        plan_key(&desired, observed, &facts, None, false)
    };
    let depth = keyfleet::kms::ReadDepth::FULL;
    for round in 0..3 {
        let observed = keyfleet::kms::observe::observe(&c, &key, depth)
            .await
            .unwrap()
            .unwrap();
        let p = plan(&observed);
        assert!(
            matches!(
                p.actions.as_slice(),
                [keyfleet::plan::Action::ImportMaterial { .. }]
            ),
            "round {round}: {p:?}"
        );
        // What keyfleet executes: the current material again, valid for another 30 days.
        import_material_as(
            &c,
            &key,
            &input(&second),
            Some(now() + rolling),
            ImportKind::Default,
        )
        .await
        .unwrap();
    }
    // Control: the same renewal on a key that never rotated converges.
    let control = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    import_material_as(
        &c,
        &control,
        &input(&second),
        Some(now() + rolling),
        ImportKind::Default,
    )
    .await
    .unwrap();
    let observed = keyfleet::kms::observe::observe(&c, &control, depth)
        .await
        .unwrap()
        .unwrap();
    assert!(plan(&observed).actions.is_empty(), "{:?}", plan(&observed));
    model.advance(Duration::from_secs(5 * 86_400 + 1));
    assert_eq!(state_of(&c, &key).await, KeyState::PendingImport);
    assert_eq!(state_of(&c, &control).await, KeyState::Enabled);
}

/// keyfleet finding: a replica added after its primary rotated must hold every material of
/// the key (AWS: "import all of the key materials associated with the KMS key to change its
/// state to Enabled"). keyfleet now imports the old material from a `keyMaterial.retained`
/// Secret (and without one says so: `NonCurrentMaterialMissing`); tests/material_retention.rs,
/// `retained_material_keeps_a_rotated_key_whole_on_the_primary_and_a_later_replica`.
#[tokio::test]
async fn a_replica_added_after_a_rotation_needs_every_material() {
    let model = KmsModel::start().await.unwrap();
    let east = client(&model, PRIMARY);
    let west = client(&model, REPLICA);
    let key = create_external(&east, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", true).await;
    let first = material(KeySpec::SymmetricDefault);
    let second = material(KeySpec::SymmetricDefault);
    let first_id = keyfleet_import(&east, &key, &first, ImportKind::Default)
        .await
        .unwrap()
        .unwrap();
    keyfleet_import(&east, &key, &second, ImportKind::New)
        .await
        .unwrap();
    east.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    replicate(&east, &key).await;
    keyfleet_import(&west, &key, &second, ImportKind::Default)
        .await
        .unwrap();
    assert_eq!(state_of(&west, &key).await, KeyState::PendingImport);
    let r = rotations(&west, &key).await;
    assert_eq!(
        r[0],
        (
            first_id.clone(),
            KeyMaterialState::NonCurrent,
            "PENDING_IMPORT".to_string()
        )
    );
    // Only the old material (which the Secret no longer holds) completes the replica.
    keyfleet_import(
        &west,
        &key,
        &first,
        ImportKind::Existing {
            key_material_id: Some(&first_id),
        },
    )
    .await
    .unwrap();
    assert_eq!(state_of(&west, &key).await, KeyState::Enabled);
}

/// keyfleet finding: with keyfleet's own retry settings, one lost answer (a 500 after the call
/// took effect) turns a rotation step into a refusal: the SDK resends ImportKeyMaterial(NEW)
/// and KMS answers IncorrectKeyMaterialException (keyfleet: permanent MaterialMismatch);
/// it resends RotateKeyOnDemand and KMS answers KMSInvalidStateException although the
/// rotation happened — and `rotation_ready` then says "not ready" for good, because the
/// material is CURRENT, not PENDING_ROTATION. keyfleet's controller now checks the key's
/// CurrentKeyMaterialId after such a refusal (tests/material_retention.rs,
/// `a_rotation_whose_answers_are_lost_completes_once`).
#[tokio::test]
async fn lost_answers_with_keyfleets_retries_turn_rotation_steps_into_refusals() {
    let model = KmsModel::start().await.unwrap();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(PRIMARY))
        .endpoint_url(model.url())
        .credentials_provider(Credentials::new(
            "AKIDMODELTEST",
            "secret",
            None,
            None,
            "test",
        ))
        .retry_config(keyfleet::kms::clients::retry_config())
        .build();
    let c = Client::from_conf(conf);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    keyfleet_import(
        &c,
        &key,
        &material(KeySpec::SymmetricDefault),
        ImportKind::Default,
    )
    .await
    .unwrap();
    let next = material(KeySpec::SymmetricDefault);
    let next_id = key_material_id(&key, next.import_bytes());
    model.inject(Fault::once("ImportKeyMaterial", FaultKind::LostAnswer));
    let imported = keyfleet_import(&c, &key, &next, ImportKind::New).await;
    assert!(incorrect_material(&imported), "{imported:?}");
    let imports = model.requests_of("ImportKeyMaterial");
    let last_two: Vec<_> = imports[imports.len() - 2..]
        .iter()
        .map(|r| (r.fault, r.error.clone()))
        .collect();
    assert_eq!(
        last_two,
        vec![
            (
                Some(FaultKind::LostAnswer),
                Some("KMSInternalException".to_string())
            ),
            (None, Some("IncorrectKeyMaterialException".to_string())),
        ]
    );
    model.inject(Fault::once("RotateKeyOnDemand", FaultKind::LostAnswer));
    assert_eq!(
        code(c.rotate_key_on_demand().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    let meta = c
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(
        meta.current_key_material_id.as_deref(),
        Some(next_id.as_str()),
        "it rotated"
    );
    assert!(
        !keyfleet::kms::execute::rotation_ready(&c, &key, &next_id)
            .await
            .unwrap()
    );
}

/// KMS refuses a ValidTo more than 365 days ahead with ValidationException. (Found here as a
/// keyfleet finding; keyfleet now refuses such a spec itself, ValidToTooFar, before any call.)
#[tokio::test]
async fn a_valid_to_beyond_365_days_reaches_kms_and_is_refused() {
    let model = KmsModel::start().await.unwrap();
    let c = client(&model, PRIMARY);
    let key = create_external(&c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false).await;
    let m = material(KeySpec::SymmetricDefault);
    let now = model
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let far = jiff::Timestamp::from_second(now + 400 * 86_400).unwrap();
    let r = import_material_as(&c, &key, &input(&m), Some(far), ImportKind::Default).await;
    assert!(
        matches!(
            &r,
            Err(keyfleet::kms::execute::ExecuteError::Kms(
                keyfleet::kms::KmsError::Rejected { code, .. }
            )) if code == "ValidationException"
        ),
        "{r:?}"
    );
    let near = jiff::Timestamp::from_second(now + 365 * 86_400).unwrap();
    import_material_as(&c, &key, &input(&m), Some(near), ImportKind::Default)
        .await
        .unwrap();
}
