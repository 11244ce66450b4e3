//! The CEL rules of the PKCS#11 API (what the API server enforces at admission), evaluated
//! locally with the generated schema: `keyMaterial` names exactly one source and stays put;
//! a `Pkcs11Token` names one token, an absolute module and a well-formed `allowedNamespaces`.

use keyfleet::api::{AwsKey, AwsKeySpec, Pkcs11Token, Pkcs11TokenSpec};
use serde_json::{Value, json};

fn key(material: Value) -> AwsKey {
    let spec = json!({
        "region": "eu-west-1",
        "keySpec": "SYMMETRIC_DEFAULT",
        "keyMaterial": material,
    });
    AwsKey::new(
        "k",
        serde_json::from_value::<AwsKeySpec>(spec).expect("AwsKey spec"),
    )
}

fn messages(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
    match result {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn assert_refused(errors: &[String], needle: &str) {
    assert!(
        errors.iter().any(|m| m.contains(needle)),
        "expected a rejection containing {needle:?}, got {errors:?}"
    );
}

const HSM: &str = "hsm";

fn pkcs11(label: &str) -> Value {
    json!({"pkcs11": {"tokenRef": {"name": HSM}, "keyLabel": label}})
}

#[test]
fn a_pkcs11_key_is_admitted() {
    assert_eq!(
        messages(key(pkcs11("orders")).validate_cel()),
        Vec::<String>::new()
    );
    let generate = json!({"pkcs11": {"tokenRef": {"name": HSM}, "keyLabel": "k", "generate": {}}});
    assert_eq!(messages(key(generate).validate_cel()), Vec::<String>::new());
}

#[test]
fn key_material_needs_exactly_one_source() {
    let both = json!({"secretRef": {"name": "m", "key": "k"},
                      "pkcs11": {"tokenRef": {"name": HSM}, "keyLabel": "k"}});
    assert_refused(
        &messages(key(both).validate_cel()),
        "exactly one of secretRef and pkcs11",
    );
    assert_refused(
        &messages(key(json!({})).validate_cel()),
        "exactly one of secretRef and pkcs11",
    );
}

#[test]
fn the_hsm_key_cannot_change_without_rotate() {
    let update = |old: Value, new: Value| messages(key(new).validate_cel_update(&key(old)));
    assert_refused(
        &update(pkcs11("a"), pkcs11("b")),
        "keyMaterial is immutable except onChange",
    );
    assert_refused(
        &update(json!({"secretRef": {"name": "m", "key": "k"}}), pkcs11("a")),
        "keyMaterial is immutable except onChange",
    );
    let other_token = json!({"pkcs11": {"tokenRef": {"name": "other"}, "keyLabel": "a"}});
    assert_refused(
        &update(pkcs11("a"), other_token),
        "keyMaterial is immutable except onChange",
    );
    // Unchanged, adding generate, or with onChange: Rotate: admitted.
    assert_eq!(update(pkcs11("a"), pkcs11("a")), Vec::<String>::new());
    let generate = json!({"pkcs11": {"tokenRef": {"name": HSM}, "keyLabel": "a", "generate": {}}});
    assert_eq!(update(pkcs11("a"), generate), Vec::<String>::new());
    let rotate =
        json!({"pkcs11": {"tokenRef": {"name": HSM}, "keyLabel": "b"}, "onChange": "Rotate"});
    assert_eq!(update(pkcs11("a"), rotate), Vec::<String>::new());
}

fn token(extra: Value) -> Pkcs11Token {
    let mut spec = json!({
        "module": "/usr/lib/softhsm/libsofthsm2.so",
        "tokenLabel": "payments",
        "pinSecretRef": {"namespace": "keyfleet", "name": "hsm-pin", "key": "pin"},
        "allowedNamespaces": {"from": "All"},
    });
    let map = spec.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    Pkcs11Token::new(
        HSM,
        serde_json::from_value::<Pkcs11TokenSpec>(spec).expect("Pkcs11Token spec"),
    )
}

#[test]
fn a_token_is_admitted_by_label_or_slot_with_a_selector() {
    assert_eq!(
        messages(token(json!({})).validate_cel()),
        Vec::<String>::new()
    );
    let by_slot = json!({"tokenLabel": null, "slot": 3,
        "allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "pay"}}}});
    assert_eq!(
        messages(token(by_slot).validate_cel()),
        Vec::<String>::new()
    );
}

#[test]
fn a_token_names_exactly_one_token() {
    assert_refused(
        &messages(token(json!({"slot": 1})).validate_cel()),
        "exactly one of tokenLabel and slot",
    );
    assert_refused(
        &messages(token(json!({"tokenLabel": null})).validate_cel()),
        "exactly one of tokenLabel and slot",
    );
}

#[test]
fn the_module_is_an_absolute_path() {
    assert_refused(
        &messages(token(json!({"module": "libsofthsm2.so"})).validate_cel()),
        "module must be an absolute path",
    );
}

#[test]
fn allowed_namespaces_has_a_selector_exactly_with_from_selector() {
    let no_selector = json!({"allowedNamespaces": {"from": "Selector"}});
    assert_refused(
        &messages(token(no_selector).validate_cel()),
        "selector is required with from: Selector",
    );
    let stray =
        json!({"allowedNamespaces": {"from": "All", "selector": {"matchLabels": {"a": "b"}}}});
    assert_refused(
        &messages(token(stray).validate_cel()),
        "not allowed with from: All",
    );
}
