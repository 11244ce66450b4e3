//! Using a KMS key the way its consumers do: Encrypt, Decrypt, GenerateMac, GetPublicKey,
//! ListAliases.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{AliasListEntry, MacAlgorithmSpec};
use keyfleet::api::KeySpec;

/// The MAC algorithm of an HMAC key spec.
pub fn mac_algorithm(spec: KeySpec) -> MacAlgorithmSpec {
    match spec {
        KeySpec::Hmac224 => MacAlgorithmSpec::HmacSha224,
        KeySpec::Hmac256 => MacAlgorithmSpec::HmacSha256,
        KeySpec::Hmac384 => MacAlgorithmSpec::HmacSha384,
        _ => MacAlgorithmSpec::HmacSha512,
    }
}

/// Encrypt of `plaintext` under `key_id`: the ciphertext.
pub async fn encrypt(kms: &Client, key_id: &str, plaintext: &[u8]) -> Blob {
    let out = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plaintext.to_vec()))
        .send()
        .await
        .unwrap();
    out.ciphertext_blob.unwrap()
}

/// Decrypt of `ciphertext` (naming the key when `key_id` is set): the plaintext.
pub async fn decrypt(kms: &Client, key_id: Option<&str>, ciphertext: Blob) -> Option<Vec<u8>> {
    let out = kms
        .decrypt()
        .set_key_id(key_id.map(str::to_string))
        .ciphertext_blob(ciphertext)
        .send()
        .await
        .unwrap();
    out.plaintext().map(|b| b.as_ref().to_vec())
}

/// GenerateMac of `message` with the HMAC key `key_id` of `spec`.
pub async fn generate_mac(
    kms: &Client,
    key_id: &str,
    spec: KeySpec,
    message: &[u8],
) -> Option<Vec<u8>> {
    let out = kms
        .generate_mac()
        .key_id(key_id)
        .mac_algorithm(mac_algorithm(spec))
        .message(Blob::new(message.to_vec()))
        .send()
        .await
        .expect("GenerateMac");
    out.mac().map(|b| b.as_ref().to_vec())
}

/// ListAliases of one key (every page): the names of its aliases.
pub async fn alias_names(kms: &Client, key_id: &str) -> Vec<String> {
    let aliases: Vec<_> = kms
        .list_aliases()
        .key_id(key_id)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .expect("ListAliases KeyId");
    aliases
        .iter()
        .filter_map(|a: &AliasListEntry| a.alias_name().map(str::to_string))
        .collect()
}

/// GetPublicKey of an RSA or ECC key: its SubjectPublicKeyInfo (DER).
pub async fn public_key(kms: &Client, key_id: &str) -> Option<Vec<u8>> {
    let out = kms
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .expect("GetPublicKey");
    out.public_key().map(|b| b.as_ref().to_vec())
}
