//! Material from an HSM through the real controller (in-memory Kubernetes API, LocalStack KMS,
//! SoftHSM2, and kryoptic for RSA/ECC private keys): a `Pkcs11Token` becomes Ready after login;
//! `AwsKey`s whose `keyMaterial.pkcs11` names sensitive token keys become Ready and KMS agrees
//! with the HSM; a replica in a second region is imported from the same HSM key; the refusals
//! are precise reasons, among them a private key on SoftHSM 2.6, whose padded key wrap is not
//! RFC 5649.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use k8s_openapi::api::core::v1::Namespace;
use keyfleet::api::{AwsKey, KeyFamily, KeySpec, Pkcs11Token, Pkcs11TokenSpec};
use keyfleet::material::ImportableMaterial;
use keyfleet::material::pkcs11::HsmKey;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use memkube::MemKube;
use serde_json::{Value, json};
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;
use support::outside::delete_material;
use support::replicas::*;
use support::softhsm::{self, TestToken, assert_kms_agrees};

const NS: &str = "team-hsm";
const PIN_NS: &str = "keyfleet-system";

/// A running operator with the test token registered as Pkcs11Token `token_name`.
struct Bed {
    op: Operator,
    token: TestToken,
}

async fn token_status(client: &kube::Client, name: &str) -> Option<(String, String, String)> {
    let api: Api<Pkcs11Token> = Api::all(client.clone());
    let token = api.get_opt(name).await.expect("get Pkcs11Token")?;
    let c = token
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

async fn wait_token(client: &kube::Client, name: &str, status: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let current = token_status(client, name).await;
        if let Some((s, r, message)) = &current
            && s == status
            && r == reason
        {
            return message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Pkcs11Token {name}: timed out waiting for Ready={status}/{reason}; now {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the PIN Secret and a Pkcs11Token for the test token; `extra` overrides spec fields.
async fn create_token(bed: &Bed, name: &str, pin: &str, extra: Value) {
    let secret = unique("pin");
    create_secret(
        &bed.op.client,
        PIN_NS,
        &secret,
        "pin",
        format!("{pin}\n").as_bytes(),
    )
    .await;
    let mut spec = json!({
        "module": bed.token.module,
        "tokenLabel": bed.token.label,
        "pinSecretRef": {"namespace": PIN_NS, "name": secret, "key": "pin"},
        "allowedNamespaces": {"from": "All"},
    });
    spec.as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    let token = Pkcs11Token::new(
        name,
        serde_json::from_value::<Pkcs11TokenSpec>(spec).expect("Pkcs11Token spec"),
    );
    Api::<Pkcs11Token>::all(bed.op.client.clone())
        .create(&PostParams::default(), &token)
        .await
        .expect("create Pkcs11Token");
}

impl Bed {
    /// A Pkcs11Token `hsm-…` for the test token, with its PIN; its name.
    async fn token_object(&self) -> String {
        let name = unique("hsm");
        create_token(self, &name, &self.token.pin, json!({})).await;
        name
    }
}

/// An operator and the SoftHSM2 test token.
async fn start() -> Option<Bed> {
    start_with(softhsm::token()).await
}

/// An operator and `token` (`None`: the test is skipped, as the fixture said).
async fn start_with(token: Option<TestToken>) -> Option<Bed> {
    let token = token?;
    let op = Operator::start(MemKube::new()).await;
    Some(Bed { op, token })
}

/// [`start_with`] and a Pkcs11Token for `token` ([`Bed::token_object`]): the bed and the
/// token object's name.
async fn start_with_token_object(token: Option<TestToken>) -> Option<(Bed, String)> {
    let bed = start_with(token).await?;
    let token_name = bed.token_object().await;
    Some((bed, token_name))
}

/// An AwsKey of `spec` whose material is the token key `label`.
fn hsm_key(name: &str, token: &str, label: &str, spec: KeySpec, extra: Value) -> AwsKey {
    let mut base = json!({
        "region": DEFAULT_REGION,
        "keySpec": spec.as_str(),
        "keyMaterial": {"pkcs11": {"tokenRef": {"name": token}, "keyLabel": label}},
    });
    if matches!(spec, KeySpec::Rsa2048) {
        base["keyUsage"] = json!("SIGN_VERIFY");
    }
    base.as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    AwsKey::new(name, serde_json::from_value(base).expect("AwsKey spec"))
}

/// One spec through the controller, on the test token that carries it (kryoptic for RSA/ECC
/// private keys): Ready, and KMS agrees with the HSM.
async fn hsm_key_becomes_ready_and_kms_agrees(spec: KeySpec) {
    let Some((bed, token_name)) = start_with_token_object(softhsm::token_for(spec)).await else {
        return;
    };
    wait_token(&bed.op.client, &token_name, "True", "LoggedIn").await;

    let (pool, label) = bed.token.pool_with_key(
        spec,
        &format!("kf-op-{}", spec.as_str().to_ascii_lowercase()),
    );
    softhsm::assert_value_unreadable(&pool, spec, &label);
    let hsm = HsmKey::open(&pool, spec, &label).expect("open the test key");

    let api = bed.op.keys(NS);
    let name = unique("hsm-key");
    create_key(&api, &hsm_key(&name, &token_name, &label, spec, json!({}))).await;
    let key = wait_ready(&api, &name).await;
    let status = key.status.expect("status");
    let key_id = status.key_id.clone().expect("key id");
    assert_eq!(
        status.material_fingerprint.as_deref(),
        Some(hsm.fingerprint().as_str()),
        "status records the HSM key's fingerprint"
    );
    let kms = kms_client(DEFAULT_REGION).await;
    assert_kms_agrees(&kms, &pool, &hsm, &key_id, spec, &label).await;
    if matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc) {
        let wrapping = Api::<Pkcs11Token>::all(bed.op.client.clone())
            .get(&token_name)
            .await
            .expect("get Pkcs11Token")
            .status
            .and_then(|s| s.wrapping)
            .expect("status.wrapping");
        assert_eq!(
            (wrapping.private_keys.as_str(), wrapping.sha1_only),
            ("RSA_AES_KEY_WRAP_SHA_256", false),
            "the token's status names the private-key wrapping in use"
        );
    }
    // The controller's own verifier compared KMS with the HSM: GenerateMac with C_Sign in the
    // token, GetPublicKey with the HSM key's public key.
    let method = match spec.family() {
        KeyFamily::Hmac => Some("MacMatches"),
        KeyFamily::Rsa | KeyFamily::Ecc => Some("PublicKeyMatches"),
        KeyFamily::Symmetric => None,
    };
    if let Some(method) = method {
        assert_eq!(
            condition_of(&status.conditions, "MaterialVerified"),
            Some(("True".to_string(), method.to_string())),
            "the controller verified {spec} against the HSM"
        );
    }
}

softhsm::test_per_spec!(hsm_key_becomes_ready_and_kms_agrees {
    symmetric_default_hsm_key_through_the_controller: SymmetricDefault,
    hmac_256_hsm_key_through_the_controller: Hmac256,
    ecc_nist_p256_hsm_key_through_the_controller: EccNistP256,
    rsa_2048_hsm_key_through_the_controller: Rsa2048,
});

/// A private key on SoftHSM 2.6, whose CKM_AES_KEY_WRAP_PAD zero-pads the key to 8 bytes
/// before RFC 5649: refused with `Pkcs11KeyNotWrappable` naming the mechanism, and an event;
/// the KMS key waits in PendingImport instead of receiving a corrupted key.
async fn a_private_key_on_softhsm_is_refused(spec: KeySpec) {
    let Some((bed, token_name)) = start_with_token_object(softhsm::token()).await else {
        return;
    };
    let (pool, label) = bed.token.pool_with_key(spec, "kf-op-softhsm-private");
    let capabilities = pool.capabilities();
    assert!(
        !capabilities.padded_key_wrap_conforms,
        "SoftHSM's padded key wrap now conforms to RFC 5649 ({capabilities:?}): private keys \
         can go through it, and this refusal test no longer applies"
    );
    let api = bed.op.keys(NS);
    let name = unique("hsm-softhsm-private");
    create_key(&api, &hsm_key(&name, &token_name, &label, spec, json!({}))).await;
    let key = wait_reason(&api, &name, "Pkcs11KeyNotWrappable").await;
    let status = key.status.expect("status");
    let message = &status.conditions[0].message;
    assert!(
        message.contains("CKM_AES_KEY_WRAP_PAD") && message.contains("not RFC 5649"),
        "{message}"
    );
    assert_eq!(
        (
            status.key.key_state.as_deref(),
            status.key.material_fingerprint.as_deref()
        ),
        (Some("PendingImport"), None),
        "no material reached KMS"
    );
    bed.op.wait_events(&name, &["Pkcs11KeyNotWrappable"]).await;
}

softhsm::test_per_spec!(a_private_key_on_softhsm_is_refused {
    ecc_nist_p256_on_softhsm_is_refused_as_its_key_wrap_pads: EccNistP256,
    rsa_2048_on_softhsm_is_refused_as_its_key_wrap_pads: Rsa2048,
});

/// A multi-Region primary of `spec` from an HSM key, and a replica in a second region that
/// keyfleet imports from the same HSM key, wrapped under that region's own wrapping key.
async fn a_replica_is_imported_from_the_same_hsm_key(spec: KeySpec) {
    let Some((bed, token_name)) = start_with_token_object(softhsm::token_for(spec)).await else {
        return;
    };
    let (pool, label) = bed.token.pool_with_key(spec, "kf-op-mrk");
    let api = bed.op.keys(NS);
    let primary = unique("hsm-mrk");
    create_key(
        &api,
        &hsm_key(
            &primary,
            &token_name,
            &label,
            spec,
            json!({"multiRegion": true}),
        ),
    )
    .await;
    wait_ready(&api, &primary).await;
    let region = "eu-west-1";
    let name = format!("{primary}-{region}");
    create_replica(
        &bed.op.client,
        NS,
        &replica(&name, &primary, region, json!({})),
    )
    .await;
    let arn = wait_replica_ready(&bed.op.client, NS, &name)
        .await
        .status
        .expect("status")
        .arn
        .clone()
        .expect("replica ARN");
    // LocalStack copies material on ReplicateKey; take it away so keyfleet must import the
    // HSM key wrapped under the replica region's own wrapping key.
    let kms = kms_client(region).await;
    delete_material(&kms, &arn).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = key_state(&kms, &arn).await;
        if state == "Enabled" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica was not re-imported from the HSM key (state {state:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hsm = HsmKey::open(&pool, spec, &label).expect("open");
    assert_kms_agrees(&kms, &pool, &hsm, &arn, spec, &label).await;
}

softhsm::test_per_spec!(a_replica_is_imported_from_the_same_hsm_key {
    a_replica_in_a_second_region_is_imported_from_the_same_hsm_key: SymmetricDefault,
    an_ecc_nist_p256_replica_in_a_second_region_is_imported_from_the_same_hsm_key: EccNistP256,
});

/// `generate: {}` with a free label: keyfleet generates a sensitive `spec` key in the token
/// (kryoptic for RSA/ECC), imports it, and KMS agrees with the HSM.
async fn a_generated_hsm_key_becomes_ready_and_kms_agrees(spec: KeySpec) {
    let Some((bed, token_name)) = start_with_token_object(softhsm::token_for(spec)).await else {
        return;
    };
    let label = unique("kf-op-gen");
    let api = bed.op.keys(NS);
    let name = unique("hsm-gen");
    let generate = json!({"keyMaterial": {"pkcs11": {
        "tokenRef": {"name": token_name}, "keyLabel": label, "generate": {}}}});
    create_key(&api, &hsm_key(&name, &token_name, &label, spec, generate)).await;
    let key_id = wait_ready(&api, &name)
        .await
        .status
        .and_then(|s| s.key_id.clone())
        .expect("key id");
    let pool = bed.token.pool();
    softhsm::assert_value_unreadable(&pool, spec, &label);
    let hsm = HsmKey::open(&pool, spec, &label).expect("generated key");
    let kms = kms_client(DEFAULT_REGION).await;
    assert_kms_agrees(&kms, &pool, &hsm, &key_id, spec, &label).await;
}

softhsm::test_per_spec!(a_generated_hsm_key_becomes_ready_and_kms_agrees {
    a_generated_hsm_key_becomes_ready: Hmac256,
    a_generated_ecc_nist_p256_hsm_key_becomes_ready: EccNistP256,
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_and_key_refusals_are_precise_reasons() {
    let Some(bed) = start().await else {
        return;
    };
    let api = bed.op.keys(NS);
    let key_on = |token: &str, label: &str| {
        hsm_key(
            &unique("refused"),
            token,
            label,
            KeySpec::SymmetricDefault,
            json!({}),
        )
    };
    // A key on `token` and `label` is refused with `reason`.
    let refused = async |token: &str, label: &str, reason: &str| {
        let key = key_on(token, label);
        create_key(&api, &key).await;
        wait_reason(&api, &key.metadata.name.clone().unwrap(), reason).await;
    };

    // No such Pkcs11Token.
    refused("no-such-token", "x", "Pkcs11TokenNotFound").await;

    // A module that does not load, a token that does not exist, a wrong PIN.
    let cases = [
        (
            "Pkcs11ModuleNotLoadable",
            json!({"module": "/nonexistent/libpkcs11.so"}),
            None,
        ),
        (
            "TokenNotFound",
            json!({"tokenLabel": "no-such-token"}),
            None,
        ),
        ("LoginFailed", json!({}), Some("0000")),
    ];
    for (reason, extra, pin) in cases {
        let token_name = unique("bad");
        create_token(&bed, &token_name, pin.unwrap_or(&bed.token.pin), extra).await;
        let message = wait_token(&bed.op.client, &token_name, "False", reason).await;
        assert!(
            !message.contains("0000"),
            "the PIN is never echoed: {message}"
        );
        refused(&token_name, "x", reason).await;
    }

    // A token that admits only labelled namespaces.
    let token_name = unique("hsm-selective");
    create_token(
        &bed,
        &token_name,
        &bed.token.pin,
        json!({"allowedNamespaces": {"from": "Selector",
            "selector": {"matchLabels": {"hsm-access": "yes"}}}}),
    )
    .await;
    let (pool, label) = bed
        .token
        .pool_with_key(KeySpec::SymmetricDefault, "kf-op-tenancy");
    refused(&token_name, &label, "NamespaceNotAllowed").await;
    let admitted = "team-hsm-admitted";
    Api::<Namespace>::all(bed.op.client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(admitted.to_string()),
                    labels: Some(BTreeMap::from([("hsm-access".into(), "yes".into())])),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create Namespace");
    let admitted_api = bed.op.keys(admitted);
    let key = key_on(&token_name, &label);
    create_key(&admitted_api, &key).await;
    wait_ready(&admitted_api, &key.metadata.name.clone().unwrap()).await;

    // A key the token will not export.
    let token_name = bed.token_object().await;
    let stuck = unique("kf-op-stuck");
    softhsm::create_key(&pool, KeySpec::SymmetricDefault, &stuck, false);
    let key = key_on(&token_name, &stuck);
    create_key(&api, &key).await;
    let refused = wait_reason(
        &api,
        &key.metadata.name.clone().unwrap(),
        "Pkcs11KeyNotWrappable",
    )
    .await;
    let message = refused.status.unwrap().conditions[0].message.clone();
    assert!(message.contains("CKA_EXTRACTABLE is false"), "{message}");
    assert!(
        bed.op
            .events_for(&key.metadata.name.unwrap())
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "Pkcs11KeyNotWrappable"),
        "an event says why"
    );
}

/// The HSM key refused through the controller, each with its reason and an event, before
/// anything reaches KMS: missing, not unique, of another type, unusable (an HMAC key that may
/// not sign: keyfleet fingerprints it with C_Sign); and a token whose PIN Secret, or the key in
/// it, is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsm_key_and_pin_refusals_are_precise_reasons() {
    let Some(bed) = start().await else {
        return;
    };
    let api = bed.op.keys(NS);
    let pool = bed.token.pool();
    let token_name = bed.token_object().await;
    let twice = unique("kf-op-twice");
    softhsm::create_key(&pool, KeySpec::SymmetricDefault, &twice, true);
    softhsm::create_key(&pool, KeySpec::SymmetricDefault, &twice, true);
    let hmac = unique("kf-op-hmac");
    softhsm::create_key(&pool, KeySpec::Hmac256, &hmac, true);
    let no_sign = unique("kf-op-no-sign");
    pool.with_session(|session| {
        session
            .generate_key(
                &Mechanism::GenericSecretKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Label(no_sign.as_bytes().to_vec()),
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sign(false),
                ],
            )
            .map(drop)
            .map_err(|e| pool.error(e))
    })
    .expect("create an HMAC key that may not sign");
    let pin_secret = unique("pin");
    create_secret(&bed.op.client, PIN_NS, &pin_secret, "pin", b"unused").await;
    let no_pin = unique("hsm-no-pin");
    create_token(
        &bed,
        &no_pin,
        &bed.token.pin,
        json!({"pinSecretRef": {"namespace": PIN_NS, "name": "no-such-secret", "key": "pin"}}),
    )
    .await;
    let pin_elsewhere = unique("hsm-pin-elsewhere");
    create_token(
        &bed,
        &pin_elsewhere,
        &bed.token.pin,
        json!({"pinSecretRef": {"namespace": PIN_NS, "name": pin_secret, "key": "other"}}),
    )
    .await;

    let cases = [
        (
            "Pkcs11KeyNotFound",
            &token_name,
            "no-such-label",
            KeySpec::SymmetricDefault,
        ),
        (
            "Pkcs11KeyAmbiguous",
            &token_name,
            &twice[..],
            KeySpec::SymmetricDefault,
        ),
        (
            "Pkcs11KeySpecMismatch",
            &token_name,
            &hmac[..],
            KeySpec::SymmetricDefault,
        ),
        (
            "Pkcs11KeyUnusable",
            &token_name,
            &no_sign[..],
            KeySpec::Hmac256,
        ),
        (
            "PinSecretNotFound",
            &no_pin,
            &twice[..],
            KeySpec::SymmetricDefault,
        ),
        (
            "PinSecretKeyMissing",
            &pin_elsewhere,
            &twice[..],
            KeySpec::SymmetricDefault,
        ),
    ];
    for (reason, token, label, spec) in cases {
        let name = unique("hsm-refused");
        create_key(&api, &hsm_key(&name, token, label, spec, json!({}))).await;
        let refused = wait_reason(&api, &name, reason).await;
        assert!(
            refused.status.unwrap().key_id.is_none(),
            "{reason}: a KMS key was created"
        );
        bed.op.wait_events(&name, &[reason]).await;
        let events = bed.op.events_for(&name);
        assert!(
            events.iter().any(|(t, r, _)| t == "Warning" && r == reason),
            "{reason}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_waiting_for_its_token_proceeds_once_the_token_is_fixed() {
    let Some(bed) = start().await else {
        return;
    };
    let (_pool, label) = bed
        .token
        .pool_with_key(KeySpec::SymmetricDefault, "kf-op-wait");
    let token_name = unique("hsm-wrong-pin");
    create_token(&bed, &token_name, "0000", json!({})).await;
    wait_token(&bed.op.client, &token_name, "False", "LoginFailed").await;
    let api = bed.op.keys(NS);
    let name = unique("hsm-waiting");
    create_key(
        &api,
        &hsm_key(
            &name,
            &token_name,
            &label,
            KeySpec::SymmetricDefault,
            json!({}),
        ),
    )
    .await;
    wait_reason(&api, &name, "LoginFailed").await;

    // The owner points the token at the right PIN: the token logs in, and the key (which
    // would otherwise wait for its blocked recheck, 10 minutes) follows at once.
    let secret = unique("pin-fixed");
    create_secret(
        &bed.op.client,
        PIN_NS,
        &secret,
        "pin",
        bed.token.pin.as_bytes(),
    )
    .await;
    let tokens: Api<Pkcs11Token> = Api::all(bed.op.client.clone());
    let mut token = tokens.get(&token_name).await.expect("get Pkcs11Token");
    token.spec.pin_secret_ref.name = secret;
    tokens
        .replace(&token_name, &PostParams::default(), &token)
        .await
        .expect("replace Pkcs11Token");
    wait_token(&bed.op.client, &token_name, "True", "LoggedIn").await;
    wait_ready(&api, &name).await;
}
