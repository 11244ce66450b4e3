//! Cryptographic operations computed from the key's material: Encrypt/Decrypt (AES-256-GCM,
//! a ciphertext that names the key material), GenerateMac/VerifyMac, Sign/Verify,
//! GetPublicKey.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Value, json};

use super::Ctx;
use super::keys::require_enabled;
use crate::error::{KmsError, KmsResult, invalid_state, validation};
use crate::material::{self, Family, mac_algorithm, signing_algorithms};
use crate::params::{Params, b64};
use crate::state::{Key, MaterialSet};

const CIPHERTEXT_MAGIC: &[u8] = b"KMSM\x01";

/// The key of a cryptographic operation, Enabled, of the right usage.
fn usable<'s>(ctx: &'s Ctx<'_>, p: &Params<'_>, usage: &str) -> KmsResult<&'s Key> {
    let key_id = ctx.resolve(p.str("KeyId")?, true)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    require_enabled(ctx.state, key)?;
    if key.key_usage != usage {
        return Err(KmsError::new(
            "InvalidKeyUsageException",
            format!(
                "{} key usage is {} which is not valid for this operation.",
                key.arn, key.key_usage
            ),
        ));
    }
    Ok(key)
}

/// The current material of a key (id, bytes).
fn current<'k>(ctx: &Ctx<'_>, key: &'k Key) -> KmsResult<(String, &'k [u8])> {
    let id = ctx
        .state
        .sets
        .get(&key.key_id)
        .and_then(MaterialSet::current)
        .map(|e| e.id.clone())
        .ok_or_else(|| invalid_state(format!("{} has no key material.", key.arn)))?;
    let bytes = key
        .imports
        .get(&id)
        .map(|m| &m.bytes[..])
        .ok_or_else(|| invalid_state(format!("{} is pending import.", key.arn)))?;
    Ok((id, bytes))
}

fn aead(bytes: &[u8]) -> KmsResult<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| KmsError::new("KMSInternalException", "bad symmetric material"))
}

fn message(p: &Params<'_>, name: &str) -> KmsResult<Vec<u8>> {
    let m = p.blob(name)?;
    if m.is_empty() || m.len() > 4096 {
        return Err(validation(format!("{name} must be 1 to 4096 bytes")));
    }
    Ok(m)
}

fn header(key_id: &str, material_id: &[u8]) -> Vec<u8> {
    let mut h = CIPHERTEXT_MAGIC.to_vec();
    h.push(key_id.len() as u8);
    h.extend_from_slice(key_id.as_bytes());
    h.extend_from_slice(material_id);
    h
}

fn symmetric_only(p: &Params<'_>) -> KmsResult<()> {
    match p.opt_str("EncryptionAlgorithm")? {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(other) => Err(KmsError::new(
            "InvalidKeyUsageException",
            format!("the KMS model encrypts with SYMMETRIC_DEFAULT only, not {other}"),
        )),
    }
}

pub fn encrypt(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    symmetric_only(p)?;
    let plaintext = message(p, "Plaintext")?;
    let context = p.encryption_context()?;
    let key = usable(ctx, p, "ENCRYPT_DECRYPT")?;
    if key.family() != Family::Symmetric {
        return Err(KmsError::new(
            "UnsupportedOperationException",
            "the KMS model encrypts with symmetric keys only",
        ));
    }
    let (id, bytes) = current(ctx, key)?;
    let id_raw = hex::decode(&id).unwrap_or_default();
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| KmsError::new("KMSInternalException", "random generator failed"))?;
    let mut blob = header(&key.key_id, &id_raw);
    let mut aad = blob.clone();
    aad.extend_from_slice(&context);
    let mut sealed = plaintext;
    aead(bytes)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut sealed,
        )
        .map_err(|_| KmsError::new("KMSInternalException", "encryption failed"))?;
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&sealed);
    Ok(json!({
        "CiphertextBlob": b64(&blob),
        "KeyId": key.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

fn invalid_ciphertext() -> KmsError {
    KmsError::new("InvalidCiphertextException", "The ciphertext is not valid")
}

pub fn decrypt(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    symmetric_only(p)?;
    let blob = p.blob("CiphertextBlob")?;
    let context = p.encryption_context()?;
    let rest = blob
        .strip_prefix(CIPHERTEXT_MAGIC)
        .ok_or_else(invalid_ciphertext)?;
    let (&n, rest) = rest.split_first().ok_or_else(invalid_ciphertext)?;
    if rest.len() < n as usize + 32 + NONCE_LEN {
        return Err(invalid_ciphertext());
    }
    let (key_id, rest) = rest.split_at(n as usize);
    let (material_id, rest) = rest.split_at(32);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let key_id = std::str::from_utf8(key_id).map_err(|_| invalid_ciphertext())?;
    if let Some(requested) = p.opt_str("KeyId")? {
        let requested = ctx.resolve(requested, true)?;
        if requested != key_id {
            return Err(KmsError::new(
                "IncorrectKeyException",
                "The key ID in the request does not identify the key that encrypted the ciphertext",
            ));
        }
    }
    let owned = Params(p.0);
    let mut with_key = owned.0.clone();
    with_key.insert("KeyId".into(), json!(key_id));
    let key = usable(ctx, &Params(&with_key), "ENCRYPT_DECRYPT")?;
    let material = key
        .imports
        .get(&hex::encode(material_id))
        .ok_or_else(invalid_ciphertext)?;
    let mut aad = header(key_id, material_id);
    aad.extend_from_slice(&context);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid_ciphertext())?;
    let mut buf = sealed.to_vec();
    let plain = aead(&material.bytes)?
        .open_in_place(nonce, Aad::from(&aad), &mut buf)
        .map_err(|_| invalid_ciphertext())?;
    Ok(json!({
        "Plaintext": b64(plain),
        "KeyId": key.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

fn mac(ctx: &Ctx<'_>, p: &Params<'_>) -> KmsResult<(Vec<u8>, String, &'static str)> {
    let msg = message(p, "Message")?;
    let algorithm = p.str("MacAlgorithm")?;
    let key = usable(ctx, p, "GENERATE_VERIFY_MAC")?;
    let expected = mac_algorithm(&key.key_spec);
    if expected != Some(algorithm) {
        return Err(KmsError::new(
            "InvalidKeyUsageException",
            format!(
                "{algorithm} is not valid for {} ({})",
                key.arn, key.key_spec
            ),
        ));
    }
    let (_, bytes) = current(ctx, key)?;
    let out = material::hmac(&key.key_spec, bytes, &msg)
        .ok_or_else(|| KmsError::new("KMSInternalException", "HMAC failed"))?;
    Ok((out, key.arn.clone(), expected.unwrap_or_default()))
}

pub fn generate_mac(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let (out, arn, algorithm) = mac(ctx, p)?;
    Ok(json!({"Mac": b64(&out), "MacAlgorithm": algorithm, "KeyId": arn}))
}

pub fn verify_mac(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let given = p.blob("Mac")?;
    let (out, arn, algorithm) = mac(ctx, p)?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(&out, &given).is_err() {
        return Err(KmsError::new(
            "KMSInvalidMacException",
            "The MAC is not valid",
        ));
    }
    Ok(json!({"MacValid": true, "MacAlgorithm": algorithm, "KeyId": arn}))
}

fn signing<'s>(ctx: &'s Ctx<'_>, p: &Params<'_>) -> KmsResult<(&'s Key, &'s str, Vec<u8>, bool)> {
    let msg = message(p, "Message")?;
    let digest = match p.opt_str("MessageType")? {
        None | Some("RAW") => false,
        Some("DIGEST") => true,
        Some(other) => return Err(validation(format!("MessageType {other} is not valid"))),
    };
    let algorithm = p.str("SigningAlgorithm")?;
    let key = usable(ctx, p, "SIGN_VERIFY")?;
    if !signing_algorithms(&key.key_spec, &key.key_usage).contains(&algorithm) {
        return Err(KmsError::new(
            "InvalidKeyUsageException",
            format!(
                "{algorithm} is not valid for {} ({})",
                key.arn, key.key_spec
            ),
        ));
    }
    let algorithm = signing_algorithms(&key.key_spec, &key.key_usage)
        .iter()
        .find(|a| **a == algorithm)
        .copied()
        .unwrap_or_default();
    Ok((key, algorithm, msg, digest))
}

pub fn sign(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let (key, algorithm, msg, digest) = signing(ctx, p)?;
    let (_, bytes) = current(ctx, key)?;
    let sig = material::sign(&key.key_spec, bytes, algorithm, &msg, digest)?;
    Ok(json!({"Signature": b64(&sig), "SigningAlgorithm": algorithm, "KeyId": key.arn}))
}

pub fn verify(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let sig = p.blob("Signature")?;
    let (key, algorithm, msg, digest) = signing(ctx, p)?;
    let (_, bytes) = current(ctx, key)?;
    let public = material::public_key_der(&key.key_spec, bytes)?;
    if !material::verify(&key.key_spec, &public, algorithm, &msg, digest, &sig)? {
        return Err(KmsError::new(
            "KMSInvalidSignatureException",
            "The signature is not valid",
        ));
    }
    Ok(json!({"SignatureValid": true, "SigningAlgorithm": algorithm, "KeyId": key.arn}))
}

pub fn get_public_key(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, true)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    let usage = key.key_usage.clone();
    let key = usable(ctx, p, &usage)?;
    if !matches!(key.family(), Family::Rsa | Family::Ecc) {
        return Err(KmsError::new(
            "UnsupportedOperationException",
            format!("{} is not an asymmetric KMS key", key.arn),
        ));
    }
    let (_, bytes) = current(ctx, key)?;
    let public = material::public_key_der(&key.key_spec, bytes)?;
    let mut out = json!({
        "KeyId": key.arn,
        "PublicKey": b64(&public),
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "KeyUsage": key.key_usage,
    });
    let sig = signing_algorithms(&key.key_spec, &key.key_usage);
    if !sig.is_empty() {
        out["SigningAlgorithms"] = json!(sig);
    }
    let enc = material::encryption_algorithms(&key.key_spec, &key.key_usage);
    if !enc.is_empty() {
        out["EncryptionAlgorithms"] = json!(enc);
    }
    Ok(out)
}
