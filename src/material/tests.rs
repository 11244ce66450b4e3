//! Tests of material parsing, fingerprints and wrapping with real crypto.

use super::*;
use crate::api::WrappingKeySpec;
use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{self, KeyPair as _};
use keyfleet_testkit::material::{
    SecretFormat, convert_private_key, encode_secret_value, generate_pkcs8_der,
    generate_secret_value, generate_secret_value_as, pem_encode, random_bytes,
};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// One generated PKCS#8 key per asymmetric spec (RSA generation is slow in debug builds).
fn pkcs8_for(spec: KeySpec) -> Zeroizing<Vec<u8>> {
    static KEYS: OnceLock<Mutex<HashMap<KeySpec, Zeroizing<Vec<u8>>>>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut keys = keys.lock().unwrap();
    keys.entry(spec)
        .or_insert_with(|| generate_pkcs8_der(spec).unwrap())
        .clone()
}

/// One RSA wrapping key pair per size, as KMS would hold it.
fn wrapping_key(spec: WrappingKeySpec) -> PrivateDecryptingKey {
    static KEYS: OnceLock<Mutex<HashMap<WrappingKeySpec, PrivateDecryptingKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut keys = keys.lock().unwrap();
    keys.entry(spec)
        .or_insert_with(|| {
            let size = match spec {
                WrappingKeySpec::Rsa2048 => KeySize::Rsa2048,
                WrappingKeySpec::Rsa3072 => KeySize::Rsa3072,
                WrappingKeySpec::Rsa4096 => KeySize::Rsa4096,
            };
            PrivateDecryptingKey::generate(size).unwrap()
        })
        .clone()
}

fn spki_of(key: &PrivateDecryptingKey) -> Vec<u8> {
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

fn parse(spec: KeySpec, value: &[u8]) -> Result<KeyMaterial, MaterialError> {
    KeyMaterial::from_secret_value(spec, MaterialEncoding::Raw, value)
}

fn public_key_of_pkcs8(spec: KeySpec, pkcs8: &[u8]) -> Vec<u8> {
    match spec.family() {
        KeyFamily::Rsa => aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec(),
        _ => {
            let curve = parse::spec_curve(spec).unwrap();
            signature::EcdsaKeyPair::from_pkcs8(parse::signing_algorithm(curve), pkcs8)
                .unwrap()
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec()
        }
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

// ---------------------------------------------------------------- accepted inputs

#[test]
fn every_spec_parses_from_every_accepted_format_and_encoding() {
    for spec in KeySpec::ALL {
        for format in SecretFormat::all_for(spec) {
            let raw = match spec.family() {
                KeyFamily::Rsa | KeyFamily::Ecc => {
                    convert_private_key(spec, &pkcs8_for(spec), format).unwrap()
                }
                _ => generate_secret_value_as(spec, format).unwrap(),
            };
            for encoding in [
                MaterialEncoding::Raw,
                MaterialEncoding::Base64,
                MaterialEncoding::Hex,
            ] {
                let value = encode_secret_value(&raw, encoding);
                let material = KeyMaterial::from_secret_value(spec, encoding, &value)
                    .unwrap_or_else(|e| panic!("{spec} {format:?} {encoding}: {e}"));
                assert_eq!(material.spec(), spec);
                match spec.family() {
                    KeyFamily::Rsa | KeyFamily::Ecc => {
                        // Whatever came in, KMS gets PKCS#8 DER of the same key.
                        assert_eq!(
                            der::classify(material.import_bytes())
                                .map(|c| matches!(c, der::Container::Pkcs8(_))),
                            Some(true),
                            "{spec} {format:?}"
                        );
                        assert_eq!(
                            material.public_key_der().unwrap(),
                            public_key_of_pkcs8(spec, &pkcs8_for(spec)),
                            "{spec} {format:?}"
                        );
                        assert!(material.hmac(b"x").is_none());
                    }
                    _ => {
                        assert_eq!(material.import_bytes(), &raw[..]);
                        assert!(material.public_key_der().is_none());
                    }
                }
            }
        }
    }
}

#[test]
fn generate_secret_value_default_formats_parse() {
    for spec in KeySpec::ALL {
        let value = generate_secret_value(spec);
        let material = parse(spec, &value).unwrap();
        if matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc) {
            assert!(value.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
        } else {
            assert_eq!(material.import_bytes(), &value[..]);
        }
    }
    assert!(generate_secret_value_as(KeySpec::Rsa2048, SecretFormat::Sec1Pem).is_err());
    assert!(generate_secret_value_as(KeySpec::EccNistP256, SecretFormat::Raw).is_err());
}

#[test]
fn pkcs1_and_sec1_inputs_become_pkcs8_of_the_same_key() {
    for spec in [
        KeySpec::Rsa2048,
        KeySpec::EccNistP256,
        KeySpec::EccSecgP256k1,
    ] {
        let pkcs8 = pkcs8_for(spec);
        let original_public = public_key_of_pkcs8(spec, &pkcs8);
        let formats: &[SecretFormat] = if spec.family() == KeyFamily::Rsa {
            &[SecretFormat::Pkcs1Der, SecretFormat::Pkcs1Pem]
        } else {
            &[SecretFormat::Sec1Der, SecretFormat::Sec1Pem]
        };
        for format in formats {
            let value = convert_private_key(spec, &pkcs8, *format).unwrap();
            assert_ne!(&value[..], &pkcs8[..]);
            let material = parse(spec, &value).unwrap();
            // The import bytes parse as PKCS#8 on their own and carry the original public key.
            assert_eq!(
                public_key_of_pkcs8(spec, material.import_bytes()),
                original_public
            );
            assert_eq!(material.public_key_der().unwrap(), original_public);
            assert_eq!(
                material.fingerprint(),
                parse(spec, &pkcs8).unwrap().fingerprint()
            );
        }
    }
}

#[test]
fn sec1_pem_after_ec_parameters_block_is_accepted() {
    let spec = KeySpec::EccNistP384;
    let pkcs8 = pkcs8_for(spec);
    let mut value = pem_encode(
        "EC PARAMETERS",
        &tlv(der::OID, &[0x2b, 0x81, 0x04, 0x00, 0x22]),
    );
    value.extend_from_slice(&convert_private_key(spec, &pkcs8, SecretFormat::Sec1Pem).unwrap());
    let material = parse(spec, &value).unwrap();
    assert_eq!(
        material.public_key_der().unwrap(),
        public_key_of_pkcs8(spec, &pkcs8)
    );
}

#[test]
fn pem_with_certificate_and_crlf_is_accepted_when_it_holds_one_key() {
    let spec = KeySpec::EccNistP256;
    let pkcs8 = pkcs8_for(spec);
    let key_pem = String::from_utf8(pem_encode("PRIVATE KEY", &pkcs8).to_vec()).unwrap();
    let cert = pem_encode("CERTIFICATE", &fake_certificate());
    let text = format!(
        "Bag Attributes: ignored\n{}{}",
        key_pem.replace('\n', "\r\n"),
        String::from_utf8(cert.to_vec()).unwrap()
    );
    let material = parse(spec, text.as_bytes()).unwrap();
    assert_eq!(
        material.public_key_der().unwrap(),
        public_key_of_pkcs8(spec, &pkcs8)
    );
}

#[test]
fn ec_pkcs8_lengths_match_the_wrapping_capacity_table() {
    for spec in KeySpec::ALL
        .into_iter()
        .filter(|s| s.family() == KeyFamily::Ecc)
    {
        let fresh = generate_secret_value(spec);
        let material = parse(spec, &fresh).unwrap();
        assert_eq!(
            Some(material.import_bytes().len()),
            wrap::ecc_pkcs8_len(spec),
            "{spec}"
        );
    }
}

// ---------------------------------------------------------------- refusals

#[test]
fn symmetric_material_must_be_exactly_32_bytes() {
    for len in [31, 33, 1] {
        // Non-ASCII bytes: random ones could end in whitespace or read as hex/base64 text and
        // (rightly) earn an encoding hint.
        let value: Vec<u8> = (0..len).map(|i| 0x80 | (i as u8 & 0x7f)).collect();
        let err = parse(KeySpec::SymmetricDefault, &value).unwrap_err();
        assert_eq!(
            err,
            MaterialError::WrongLength {
                spec: KeySpec::SymmetricDefault,
                min: 32,
                max: 32,
                actual: len,
                hint: None,
            }
        );
        assert_eq!(err.reason(), "MaterialWrongLength");
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    }
    assert!(parse(KeySpec::SymmetricDefault, &random_bytes(32).unwrap()).is_ok());
}

#[test]
fn wrong_length_hints_at_the_encoding() {
    let mut raw = random_bytes(32).unwrap();
    // Random material ending in whitespace would hide the newline hint below.
    raw[31] |= 0x80;
    let as_b64 = encode_secret_value(&raw, MaterialEncoding::Base64);
    let err = parse(KeySpec::SymmetricDefault, &as_b64).unwrap_err();
    assert!(
        err.to_string().contains("set the encoding to Base64"),
        "{err}"
    );
    let as_hex = encode_secret_value(&raw, MaterialEncoding::Hex);
    let err = parse(KeySpec::SymmetricDefault, &as_hex).unwrap_err();
    assert!(err.to_string().contains("set the encoding to Hex"), "{err}");
    let mut with_newline = raw.to_vec();
    with_newline.push(b'\n');
    let err = parse(KeySpec::SymmetricDefault, &with_newline).unwrap_err();
    assert!(err.to_string().contains("newline"), "{err}");
}

#[test]
fn hmac_length_bounds_follow_kms() {
    let bounds = [
        (KeySpec::Hmac224, 28, 64),
        (KeySpec::Hmac256, 32, 64),
        (KeySpec::Hmac384, 48, 128),
        (KeySpec::Hmac512, 64, 128),
    ];
    for (spec, min, max) in bounds {
        assert_eq!(allowed_length(spec), Some((min, max)));
        for ok in [min, max] {
            let material = parse(spec, &random_bytes(ok).unwrap()).unwrap();
            assert_eq!(material.import_bytes().len(), ok);
        }
        for bad in [min - 1, max + 1] {
            let err = parse(spec, &random_bytes(bad).unwrap()).unwrap_err();
            assert!(
                matches!(err, MaterialError::WrongLength { spec: s, min: lo, max: hi, actual, .. }
                    if s == spec && lo == min && hi == max && actual == bad),
                "{spec} {bad}: {err:?}"
            );
            assert_eq!(err.reason(), "MaterialWrongLength");
            assert!(err.to_string().contains(&format!("{min} to {max} bytes")));
        }
    }
}

#[test]
fn rsa_2048_key_for_rsa_3072_spec_is_wrong_size() {
    for format in SecretFormat::all_for(KeySpec::Rsa2048) {
        let value =
            convert_private_key(KeySpec::Rsa2048, &pkcs8_for(KeySpec::Rsa2048), format).unwrap();
        let err = parse(KeySpec::Rsa3072, &value).unwrap_err();
        assert_eq!(
            err,
            MaterialError::WrongSize {
                spec: KeySpec::Rsa3072,
                expected_bits: 3072,
                actual_bits: 2048
            },
            "{format:?}"
        );
        assert_eq!(err.reason(), "MaterialWrongSize");
    }
    let err = parse(KeySpec::Rsa2048, &pkcs8_for(KeySpec::Rsa4096)).unwrap_err();
    assert!(matches!(
        err,
        MaterialError::WrongSize {
            actual_bits: 4096,
            ..
        }
    ));
}

#[test]
fn p384_key_for_p256_spec_is_wrong_curve() {
    for format in SecretFormat::all_for(KeySpec::EccNistP384) {
        let value = convert_private_key(
            KeySpec::EccNistP384,
            &pkcs8_for(KeySpec::EccNistP384),
            format,
        )
        .unwrap();
        let err = parse(KeySpec::EccNistP256, &value).unwrap_err();
        assert_eq!(
            err,
            MaterialError::WrongCurve {
                spec: KeySpec::EccNistP256,
                expected: "P-256",
                actual: "P-384".to_string()
            },
            "{format:?}"
        );
        assert_eq!(err.reason(), "MaterialWrongCurve");
    }
    // secp256k1 and P-256 have the same size but are different curves.
    let err = parse(KeySpec::EccNistP256, &pkcs8_for(KeySpec::EccSecgP256k1)).unwrap_err();
    assert!(matches!(err, MaterialError::WrongCurve { ref actual, .. } if actual == "secp256k1"));
}

#[test]
fn rsa_key_for_ecc_spec_and_ec_key_for_rsa_spec_are_wrong_key_type() {
    let rsa = generate_secret_value_as(KeySpec::Rsa2048, SecretFormat::Pkcs1Pem).unwrap();
    let err = parse(KeySpec::EccNistP256, &rsa).unwrap_err();
    assert_eq!(
        err,
        MaterialError::WrongKeyType {
            spec: KeySpec::EccNistP256,
            expected: "EC",
            actual: "RSA".to_string()
        }
    );
    assert_eq!(err.reason(), "MaterialWrongKeyType");

    let ec = convert_private_key(
        KeySpec::EccNistP256,
        &pkcs8_for(KeySpec::EccNistP256),
        SecretFormat::Sec1Der,
    )
    .unwrap();
    let err = parse(KeySpec::Rsa2048, &ec).unwrap_err();
    assert!(
        matches!(err, MaterialError::WrongKeyType { expected: "RSA", ref actual, .. } if actual == "EC")
    );

    let ed25519 = signature::Ed25519KeyPair::generate()
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let err = parse(KeySpec::EccNistP256, ed25519.as_ref()).unwrap_err();
    assert!(matches!(err, MaterialError::WrongKeyType { ref actual, .. } if actual == "Ed25519"));
}

#[test]
fn public_keys_are_refused() {
    let pkcs8 = pkcs8_for(KeySpec::Rsa2048);
    let spki = public_key_of_pkcs8(KeySpec::Rsa2048, &pkcs8);
    for value in [
        pem_encode("PUBLIC KEY", &spki),
        Zeroizing::new(spki.clone()),
    ] {
        let err = parse(KeySpec::Rsa2048, &value).unwrap_err();
        assert_eq!(
            err,
            MaterialError::NotPrivateKey {
                found: "a public key"
            }
        );
        assert_eq!(err.reason(), "MaterialNotPrivateKey");
    }
    let ec_spki = public_key_of_pkcs8(KeySpec::EccNistP256, &pkcs8_for(KeySpec::EccNistP256));
    let err = parse(KeySpec::EccNistP256, &pem_encode("PUBLIC KEY", &ec_spki)).unwrap_err();
    assert_eq!(err.reason(), "MaterialNotPrivateKey");
}

/// A DER structure shaped like an X.509 certificate (tbs, algorithm, signature).
fn fake_certificate() -> Vec<u8> {
    let sha256_rsa = tlv(
        der::SEQUENCE,
        &tlv(
            der::OID,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        ),
    );
    let tbs = tlv(
        der::SEQUENCE,
        &[tlv(0xa0, &tlv(der::INTEGER, &[2])), tlv(der::INTEGER, &[7])].concat(),
    );
    tlv(
        der::SEQUENCE,
        &[tbs, sha256_rsa, tlv(der::BIT_STRING, &[0, 1, 2, 3])].concat(),
    )
}

#[test]
fn certificates_are_refused() {
    let cert = fake_certificate();
    let err = parse(KeySpec::Rsa2048, &pem_encode("CERTIFICATE", &cert)).unwrap_err();
    assert_eq!(
        err,
        MaterialError::NotPrivateKey {
            found: "a certificate"
        }
    );
    let err = parse(KeySpec::Rsa2048, &cert).unwrap_err();
    assert!(
        matches!(err, MaterialError::NotPrivateKey { found } if found.starts_with("a certificate"))
    );
}

#[test]
fn encrypted_keys_are_refused() {
    // PKCS#8 EncryptedPrivateKeyInfo: { { PBES2, params }, ciphertext }.
    let pbes2 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    let alg = tlv(
        der::SEQUENCE,
        &[tlv(der::OID, &pbes2), tlv(der::SEQUENCE, &[])].concat(),
    );
    let encrypted = tlv(
        der::SEQUENCE,
        &[alg, tlv(der::OCTET_STRING, &random_bytes(96).unwrap())].concat(),
    );
    let err = parse(
        KeySpec::Rsa2048,
        &pem_encode("ENCRYPTED PRIVATE KEY", &encrypted),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "MaterialEncrypted");
    assert!(matches!(err, MaterialError::Encrypted { .. }));
    let err = parse(KeySpec::Rsa2048, &encrypted).unwrap_err();
    assert_eq!(
        err,
        MaterialError::Encrypted {
            format: "PKCS#8 EncryptedPrivateKeyInfo"
        }
    );

    // Legacy OpenSSL encryption: RFC 1421 headers in an `RSA PRIVATE KEY` block.
    let body = String::from_utf8(
        encode_secret_value(&random_bytes(120).unwrap(), MaterialEncoding::Base64).to_vec(),
    )
    .unwrap();
    let legacy = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\n{body}\n-----END RSA PRIVATE KEY-----\n"
    );
    let err = parse(KeySpec::Rsa2048, legacy.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        MaterialError::Encrypted {
            format: "PEM with `Proc-Type: 4,ENCRYPTED` header"
        }
    );
    assert!(err.to_string().contains("openssl pkcs8 -topk8 -nocrypt"));
}

#[test]
fn garbage_is_unparseable() {
    let cases: Vec<Vec<u8>> = vec![
        b"not a key at all!".to_vec(),
        random_bytes(64).unwrap().iter().map(|b| b | 0x80).collect(),
        vec![0x30, 0x82, 0x01],                          // truncated DER
        tlv(der::SEQUENCE, &tlv(der::INTEGER, &[0])),    // DER, wrong shape
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n".to_vec(), // no END
        b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n".to_vec(),
        pem_encode("PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x00]).to_vec(),
        pem_encode("OPENSSH PRIVATE KEY", b"openssh-key-v1\0").to_vec(),
        pem_encode("SOMETHING ELSE", b"x").to_vec(),
    ];
    for value in cases {
        for spec in [KeySpec::Rsa2048, KeySpec::EccNistP256] {
            let err = parse(spec, &value).unwrap_err();
            assert!(
                matches!(err, MaterialError::Unparseable { .. }),
                "{spec} {:?}: {err:?}",
                String::from_utf8_lossy(&value)
            );
            assert_eq!(err.reason(), "MaterialUnparseable");
        }
    }
    // A corrupted key body (valid DER shape, invalid RSA key) is caught by aws-lc.
    let mut pkcs1 = convert_private_key(
        KeySpec::Rsa2048,
        &pkcs8_for(KeySpec::Rsa2048),
        SecretFormat::Pkcs1Der,
    )
    .unwrap();
    let last = pkcs1.len() - 1;
    pkcs1[last] ^= 0x01;
    let err = parse(KeySpec::Rsa2048, &pkcs1).unwrap_err();
    assert_eq!(err.reason(), "MaterialUnparseable", "{err}");
    // Two keys in one value are ambiguous.
    let mut two = generate_secret_value(KeySpec::EccNistP256);
    two.extend_from_slice(&generate_secret_value(KeySpec::EccNistP256));
    let err = parse(KeySpec::EccNistP256, &two).unwrap_err();
    assert!(err.to_string().contains("2 private keys"), "{err}");
    // Raw base64 text of a DER key: tell the user to set the encoding.
    let b64 = encode_secret_value(&pkcs8_for(KeySpec::EccNistP256), MaterialEncoding::Base64);
    let err = parse(KeySpec::EccNistP256, &b64).unwrap_err();
    assert!(
        err.to_string().contains("set the encoding to Base64"),
        "{err}"
    );
}

// ---------------------------------------------------------------- hostile input: bounded work

const EMPTY_BLOCK: &[u8] = b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n";

/// `len` bytes (at least) of back-to-back empty PEM blocks.
fn empty_blocks(len: usize) -> Vec<u8> {
    EMPTY_BLOCK.repeat(len.div_ceil(EMPTY_BLOCK.len()))
}

#[test]
fn a_megabyte_of_empty_pem_blocks_is_refused_before_any_buffer_is_reserved() {
    let value = empty_blocks(1 << 20);
    for spec in KeySpec::ALL {
        for encoding in [
            MaterialEncoding::Raw,
            MaterialEncoding::Base64,
            MaterialEncoding::Hex,
        ] {
            buffer::work::take_reserved();
            let err = KeyMaterial::from_secret_value(spec, encoding, &value).unwrap_err();
            assert_eq!(
                err,
                MaterialError::TooLarge {
                    limit: MAX_SECRET_VALUE_BYTES,
                    actual: value.len()
                }
            );
            assert_eq!(err.reason(), "MaterialTooLarge");
            // Refused by its size alone: not one byte was copied, decoded or zeroized.
            assert_eq!(buffer::work::take_reserved(), 0, "{spec} {encoding}");
        }
    }
    let message = MaterialError::TooLarge {
        limit: MAX_SECRET_VALUE_BYTES,
        actual: value.len(),
    }
    .to_string();
    assert!(message.contains("65536 bytes"), "{message}");
    assert!(message.contains(&value.len().to_string()), "{message}");
    assert!(!message.contains("BEGIN"), "{message}");
}

#[test]
fn the_size_limit_is_inclusive_and_applies_before_decoding() {
    // Exactly the limit is read (and refused for what it is); one byte more is not read.
    let mut at_limit = empty_blocks(MAX_SECRET_VALUE_BYTES);
    at_limit.truncate(MAX_SECRET_VALUE_BYTES);
    let err = parse(KeySpec::Rsa2048, &at_limit).unwrap_err();
    assert_eq!(err.reason(), "MaterialUnparseable", "{err}");
    at_limit.push(b'\n');
    let err = parse(KeySpec::Rsa2048, &at_limit).unwrap_err();
    assert_eq!(err.reason(), "MaterialTooLarge", "{err}");
    // Symmetric material too: the limit is checked before the length rule decodes anything.
    let err = KeyMaterial::from_secret_value(
        KeySpec::SymmetricDefault,
        MaterialEncoding::Hex,
        &vec![b'0'; MAX_SECRET_VALUE_BYTES + 2],
    )
    .unwrap_err();
    assert_eq!(err.reason(), "MaterialTooLarge", "{err}");
}

#[test]
fn pem_blocks_are_capped_and_their_buffers_sized_to_their_bodies() {
    // Straight to the PEM reader, past the size limit: a megabyte of empty blocks. The old
    // reader reserved (and zeroized) a buffer of the whole input for each of its ~19,000 BEGIN
    // lines, about 20 GB; now the 17th BEGIN line ends the read and empty bodies reserve nothing.
    let value = empty_blocks(1 << 20);
    buffer::work::take_reserved();
    let err = armor::parse_blocks(&value).unwrap_err();
    assert_eq!(buffer::work::take_reserved(), 0);
    assert_eq!(err.reason(), "MaterialUnparseable");
    assert!(
        err.to_string()
            .contains(&format!("more than {} blocks", armor::MAX_PEM_BLOCKS)),
        "{err}"
    );
    // The cap itself is accepted: a key with 15 certificates.
    let key = pem_encode("PRIVATE KEY", &pkcs8_for(KeySpec::EccNistP256));
    let cert = pem_encode("CERTIFICATE", &fake_certificate());
    let mut chain = key.to_vec();
    for _ in 1..armor::MAX_PEM_BLOCKS {
        chain.extend_from_slice(&cert);
    }
    buffer::work::take_reserved();
    let blocks = armor::parse_blocks(&chain).unwrap();
    assert_eq!(blocks.len(), armor::MAX_PEM_BLOCKS);
    // Each block reserves its base64 body and its decoded DER (3/4 of that), nothing more:
    // under twice the input, where the old reader reserved 16 times the input.
    let reserved = buffer::work::take_reserved();
    assert!(
        reserved < 2 * chain.len(),
        "{reserved} bytes reserved for {} bytes of PEM",
        chain.len()
    );
    assert!(parse(KeySpec::EccNistP256, &chain).is_ok());
    chain.extend_from_slice(&cert);
    let err = parse(KeySpec::EccNistP256, &chain).unwrap_err();
    assert!(err.to_string().contains("more than 16 blocks"), "{err}");
}

#[test]
fn empty_values_are_missing() {
    for spec in [KeySpec::SymmetricDefault, KeySpec::Rsa2048] {
        for encoding in [
            MaterialEncoding::Raw,
            MaterialEncoding::Base64,
            MaterialEncoding::Hex,
        ] {
            let err = KeyMaterial::from_secret_value(spec, encoding, b"").unwrap_err();
            assert_eq!(err, MaterialError::Empty);
            assert_eq!(err.reason(), "MaterialMissing");
        }
    }
    let err = KeyMaterial::from_secret_value(KeySpec::Hmac256, MaterialEncoding::Base64, b" \n")
        .unwrap_err();
    assert_eq!(err, MaterialError::Empty);
}

#[test]
fn bad_base64_and_hex_are_invalid_encoding() {
    let cases: [(MaterialEncoding, &[u8]); 6] = [
        (MaterialEncoding::Base64, b"AAAA*AAA"),
        (MaterialEncoding::Base64, b"AAAAA"),
        (MaterialEncoding::Base64, b"AA=A"),
        (MaterialEncoding::Hex, b"abc"),
        (MaterialEncoding::Hex, b"zz00"),
        (MaterialEncoding::Hex, b"00 11 2g"),
    ];
    for (encoding, value) in cases {
        let err =
            KeyMaterial::from_secret_value(KeySpec::SymmetricDefault, encoding, value).unwrap_err();
        assert!(
            matches!(err, MaterialError::InvalidEncoding { encoding: e, .. } if e == encoding),
            "{encoding} {:?}: {err:?}",
            String::from_utf8_lossy(value)
        );
        assert_eq!(err.reason(), "MaterialInvalidEncoding");
    }
    // Whitespace (line-wrapped base64, spaced hex) and URL-safe base64 are fine.
    let raw = random_bytes(32).unwrap();
    let b64 = encode_secret_value(&raw, MaterialEncoding::Base64);
    let wrapped = [&b64[..20], b"\n", &b64[20..], b"\n"].concat();
    let m = KeyMaterial::from_secret_value(
        KeySpec::SymmetricDefault,
        MaterialEncoding::Base64,
        &wrapped,
    )
    .unwrap();
    assert_eq!(m.import_bytes(), &raw[..]);
    let url: Vec<u8> = b64
        .iter()
        .filter(|b| **b != b'=')
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            other => *other,
        })
        .collect();
    let m =
        KeyMaterial::from_secret_value(KeySpec::SymmetricDefault, MaterialEncoding::Base64, &url)
            .unwrap();
    assert_eq!(m.import_bytes(), &raw[..]);
    let spaced = hex::encode_upper(&raw[..])
        .into_bytes()
        .chunks(2)
        .collect::<Vec<_>>()
        .join(&b' ');
    let m =
        KeyMaterial::from_secret_value(KeySpec::SymmetricDefault, MaterialEncoding::Hex, &spaced)
            .unwrap();
    assert_eq!(m.import_bytes(), &raw[..]);
}

#[test]
fn reasons_are_stable_camel_case_and_distinct_per_kind() {
    let errors = [
        MaterialError::Empty,
        MaterialError::InvalidEncoding {
            encoding: MaterialEncoding::Hex,
            detail: String::new(),
        },
        MaterialError::WrongLength {
            spec: KeySpec::Hmac256,
            min: 1,
            max: 2,
            actual: 3,
            hint: None,
        },
        MaterialError::Unparseable {
            detail: String::new(),
        },
        MaterialError::NotPrivateKey { found: "x" },
        MaterialError::Encrypted { format: "x" },
        MaterialError::WrongKeyType {
            spec: KeySpec::Rsa2048,
            expected: "RSA",
            actual: "EC".into(),
        },
        MaterialError::WrongSize {
            spec: KeySpec::Rsa2048,
            expected_bits: 2048,
            actual_bits: 4096,
        },
        MaterialError::WrongCurve {
            spec: KeySpec::EccNistP256,
            expected: "P-256",
            actual: "P-384".into(),
        },
        MaterialError::WrappingUnsupported {
            spec: KeySpec::Rsa2048,
            algorithm: WrappingAlgorithm::RsaesOaepSha1,
            detail: "",
        },
        MaterialError::WrappingKeyTooSmall {
            spec: KeySpec::EccNistP521,
            algorithm: WrappingAlgorithm::RsaesOaepSha1,
            wrapping_key_bits: 2048,
            max: 214,
            actual: 241,
        },
        MaterialError::InvalidWrappingKey {
            detail: String::new(),
        },
        MaterialError::WrapFailed { detail: "" },
        MaterialError::TooLarge {
            limit: 1,
            actual: 2,
        },
    ];
    let reasons: Vec<&str> = errors.iter().map(|e| e.reason()).collect();
    assert_eq!(
        reasons,
        [
            "MaterialMissing",
            "MaterialInvalidEncoding",
            "MaterialWrongLength",
            "MaterialUnparseable",
            "MaterialNotPrivateKey",
            "MaterialEncrypted",
            "MaterialWrongKeyType",
            "MaterialWrongSize",
            "MaterialWrongCurve",
            "WrappingAlgorithmUnsupported",
            "WrappingKeyTooSmall",
            "WrappingKeyInvalid",
            "WrappingFailed",
            "MaterialTooLarge",
        ]
    );
    for r in reasons {
        assert!(r.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(r.starts_with(|c: char| c.is_ascii_uppercase()));
    }
    assert!(errors[2].is_material_problem());
    assert!(!errors[10].is_material_problem());
    assert!(errors[13].is_material_problem());
}

// ---------------------------------------------------------------- no leaks

/// `needle` must appear in none of: the text itself, nor hex/base64 renderings of it.
fn assert_no_leak(text: &str, secret: &[u8]) {
    let renderings = [
        String::from_utf8_lossy(secret).into_owned(),
        hex::encode(secret),
        hex::encode_upper(secret),
        format!("{secret:?}"),
        String::from_utf8(encode_secret_value(secret, MaterialEncoding::Base64).to_vec()).unwrap(),
    ];
    for r in renderings {
        assert!(!text.contains(&r), "leaked {r:?} in {text:?}");
    }
    // Also no 8-byte window of the secret in hex (partial dumps).
    for window in secret.windows(8) {
        assert!(
            !text.contains(&hex::encode(window)),
            "leaked part in {text:?}"
        );
    }
}

#[test]
fn debug_and_errors_never_contain_material() {
    let secret = b"TOP-SECRET-MATERIAL-0123456789ab";
    assert_eq!(secret.len(), 32);
    let material = parse(KeySpec::SymmetricDefault, secret).unwrap();
    let debug = format!("{material:?}");
    assert_eq!(
        debug,
        "KeyMaterial { spec: SYMMETRIC_DEFAULT, len: 32, .. }"
    );
    assert_no_leak(&debug, secret);
    assert_no_leak(material.fingerprint().as_str(), secret);

    let mut errors = Vec::new();
    for spec in KeySpec::ALL {
        for encoding in [
            MaterialEncoding::Raw,
            MaterialEncoding::Base64,
            MaterialEncoding::Hex,
        ] {
            let long = [&secret[..], b"!"].concat();
            for value in [&secret[..31], &long[..]] {
                if let Err(e) = KeyMaterial::from_secret_value(spec, encoding, value) {
                    errors.push(e);
                }
            }
        }
    }
    // Invalid characters inside the material must not be echoed either.
    for (encoding, value, invalid) in [
        (
            MaterialEncoding::Base64,
            &b"TOPSECRETMATERIAL$0123456789"[..],
            '$',
        ),
        (
            MaterialEncoding::Hex,
            b"00112233445566778899aabbccddeeffQ0",
            'Q',
        ),
    ] {
        let err =
            KeyMaterial::from_secret_value(KeySpec::SymmetricDefault, encoding, value).unwrap_err();
        assert!(!err.to_string().contains(invalid), "{encoding:?}");
        errors.push(err);
    }
    assert!(errors.len() > 20);
    for e in &errors {
        assert_no_leak(&e.to_string(), &secret[..16]);
        assert_no_leak(&format!("{e:?}"), &secret[..16]);
    }

    // Asymmetric: neither the PKCS#8 bytes nor any part of them shows up.
    let rsa = parse(KeySpec::Rsa2048, &pkcs8_for(KeySpec::Rsa2048)).unwrap();
    let debug = format!("{rsa:?}");
    assert!(
        debug.starts_with("KeyMaterial { spec: RSA_2048, len: 12"),
        "{debug}"
    );
    assert_no_leak(&debug, rsa.import_bytes());
}

#[test]
fn no_type_that_holds_material_prints_it() {
    // Every type under material/ that can hold key bytes, built from one real key of each
    // family and container, formatted with {:?}: lengths and kinds only.
    for spec in [KeySpec::Rsa2048, KeySpec::EccNistP384] {
        let pkcs8 = pkcs8_for(spec);
        let inner = der::pkcs8_inner_key(&pkcs8).unwrap();
        let mut renderings = Vec::new();

        // DER elements: the outer sequence, each of its children, and the inner private key's.
        let outer = der::single(&pkcs8).unwrap();
        renderings.push(format!("{outer:?}"));
        for child in der::children(outer.value).unwrap() {
            renderings.push(format!("{child:?}"));
        }
        for child in der::children(der::single(inner).unwrap().value).unwrap() {
            renderings.push(format!("{child:?}"));
        }
        assert_eq!(
            renderings[0],
            format!("Tlv {{ tag: 0x30, len: {} }}", outer.value.len())
        );

        // PEM blocks and the DER picked from them.
        let pem = pem_encode("PRIVATE KEY", &pkcs8);
        let blocks = armor::parse_blocks(&pem).unwrap();
        renderings.push(format!("{blocks:?}"));
        assert_eq!(
            renderings.last().unwrap(),
            &format!(
                "[PemBlock {{ kind: PrivateKey, legacy_encrypted: false, der_len: {} }}]",
                pkcs8.len()
            )
        );
        renderings.push(format!("{:?}", armor::select_private_key(&pem).unwrap()));

        // Decoded Secret values in every encoding, and the checked material.
        for encoding in [
            MaterialEncoding::Raw,
            MaterialEncoding::Base64,
            MaterialEncoding::Hex,
        ] {
            let value = encode_secret_value(&pkcs8, encoding);
            let decoded = parse::decode(encoding, &value).unwrap();
            renderings.push(format!("{decoded:?}"));
            let material = KeyMaterial::from_secret_value(spec, encoding, &value).unwrap();
            renderings.push(format!("{material:?}"));
            renderings.push(format!("{:?}", &material as &dyn ImportableMaterial));
        }
        assert_eq!(
            renderings.last().unwrap(),
            &format!("KeyMaterial {{ spec: {spec}, len: {}, .. }}", pkcs8.len())
        );

        for rendering in &renderings {
            assert_no_leak(rendering, &pkcs8);
            assert_no_leak(rendering, inner);
            // No DER element of the private key shows up either (the private exponent, the
            // primes, the EC scalar).
            for child in der::children(der::single(inner).unwrap().value).unwrap() {
                if child.value.len() >= 8 {
                    assert_no_leak(rendering, child.value);
                }
            }
        }
    }
    let buffer = buffer::SecretBytes::copy_of(b"TOP-SECRET-MATERIAL-0123456789ab");
    assert_eq!(format!("{buffer:?}"), "SecretBytes { len: 32 }");
}

// ---------------------------------------------------------------- HMAC and fingerprints

/// RFC 2104 from the bare digest, independent of aws-lc's HMAC.
fn reference_hmac(algorithm: &'static digest::Algorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    let block = if algorithm.output_len() > 32 { 128 } else { 64 };
    let mut k = if key.len() > block {
        digest::digest(algorithm, key).as_ref().to_vec()
    } else {
        key.to_vec()
    };
    k.resize(block, 0);
    let inner_input: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let inner = digest::digest(algorithm, &inner_input);
    let outer_input: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(inner.as_ref().iter().copied())
        .collect();
    digest::digest(algorithm, &outer_input).as_ref().to_vec()
}

#[test]
fn hmac_matches_an_independent_computation() {
    let cases = [
        (KeySpec::Hmac224, &digest::SHA224, 28),
        (KeySpec::Hmac256, &digest::SHA256, 32),
        (KeySpec::Hmac384, &digest::SHA384, 48),
        (KeySpec::Hmac512, &digest::SHA512, 64),
    ];
    for (spec, algorithm, out_len) in cases {
        let (min, max) = allowed_length(spec).unwrap();
        for len in [min, max] {
            let key = random_bytes(len).unwrap();
            let material = parse(spec, &key).unwrap();
            let message = b"keyfleet hmac check";
            let mac = material.hmac(message).unwrap();
            assert_eq!(mac.len(), out_len);
            assert_eq!(
                mac,
                reference_hmac(algorithm, &key, message),
                "{spec} len {len}"
            );
        }
    }
    // RFC 4231 test case 2 for HMAC-SHA-256 (key "Jefe", padded to the 32-byte minimum would
    // change it, so check the reference implementation itself against the RFC).
    assert_eq!(
        hex::encode(reference_hmac(
            &digest::SHA256,
            b"Jefe",
            b"what do ya want for nothing?"
        )),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let symmetric = parse(KeySpec::SymmetricDefault, &random_bytes(32).unwrap()).unwrap();
    assert!(symmetric.hmac(b"x").is_none());
}

#[test]
fn fingerprints_are_stable_distinct_and_documented() {
    for spec in KeySpec::ALL {
        let a = generate_secret_value(spec);
        let b = generate_secret_value(spec);
        let fa = parse(spec, &a).unwrap().fingerprint();
        assert_eq!(fa, parse(spec, &a).unwrap().fingerprint(), "{spec} stable");
        assert_ne!(
            fa,
            parse(spec, &b).unwrap().fingerprint(),
            "{spec} distinct"
        );
        let hex_part = fa.as_str().rsplit(':').next().unwrap();
        assert_eq!(hex_part.len(), 32);
        assert!(
            hex_part
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    // Asymmetric: SHA-256 of the SubjectPublicKeyInfo.
    let m = parse(KeySpec::EccNistP256, &pkcs8_for(KeySpec::EccNistP256)).unwrap();
    let spki = m.public_key_der().unwrap();
    let expected = hex::encode(&digest::digest(&digest::SHA256, &spki).as_ref()[..16]);
    assert_eq!(m.fingerprint().as_str(), format!("sha256:{expected}"));
    // Symmetric/HMAC: HMAC-SHA256 keyed by the material over the fixed label.
    let key = random_bytes(48).unwrap();
    let m = parse(KeySpec::Hmac384, &key).unwrap();
    let expected = hex::encode(&reference_hmac(&digest::SHA256, &key, FINGERPRINT_LABEL)[..16]);
    assert_eq!(m.fingerprint().as_str(), format!("hmac-sha256:{expected}"));
    // Same material, different encodings: same fingerprint.
    let b64 = encode_secret_value(&key, MaterialEncoding::Base64);
    let m2 =
        KeyMaterial::from_secret_value(KeySpec::Hmac384, MaterialEncoding::Base64, &b64).unwrap();
    assert_eq!(m.fingerprint(), m2.fingerprint());
    assert_eq!(
        serde_json::to_string(&m.fingerprint()).unwrap(),
        format!("\"hmac-sha256:{expected}\"")
    );
}

// ---------------------------------------------------------------- wrapping

fn oaep_of(algorithm: WrappingAlgorithm) -> &'static OaepAlgorithm {
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            &OAEP_SHA256_MGF1SHA256
        }
        _ => &OAEP_SHA1_MGF1SHA1,
    }
}

/// What KMS does on ImportKeyMaterial: unwrap with the private wrapping key.
fn unwrap_locally(
    algorithm: WrappingAlgorithm,
    private: &PrivateDecryptingKey,
    wrapped: &[u8],
) -> Vec<u8> {
    let modulus_len = private.key_size_bytes();
    let oaep = OaepPrivateDecryptingKey::new(private.clone()).unwrap();
    let mut buf = vec![0u8; oaep.min_output_size()];
    if !algorithm.is_key_wrap() {
        assert_eq!(wrapped.len(), modulus_len);
        return oaep
            .decrypt(oaep_of(algorithm), wrapped, &mut buf, None)
            .unwrap()
            .to_vec();
    }
    let (rsa_part, kwp_part) = wrapped.split_at(modulus_len);
    let aes_key = oaep
        .decrypt(oaep_of(algorithm), rsa_part, &mut buf, None)
        .unwrap()
        .to_vec();
    assert_eq!(aes_key.len(), 32);
    assert_eq!(kwp_part.len() % 8, 0);
    let kek = AesKek::new(&AES_256, &aes_key).unwrap();
    let mut out = vec![0u8; kwp_part.len()];
    kek.unwrap_with_padding(kwp_part, &mut out)
        .unwrap()
        .to_vec()
}

#[test]
fn wrapping_round_trips_with_every_algorithm() {
    let specs = [
        KeySpec::SymmetricDefault,
        KeySpec::Hmac224,
        KeySpec::Hmac512,
        KeySpec::Rsa2048,
        KeySpec::Rsa4096,
        KeySpec::EccNistP256,
        KeySpec::EccNistP521,
    ];
    let mut round_trips = 0;
    for spec in specs {
        let value = match spec.family() {
            KeyFamily::Rsa | KeyFamily::Ecc => pkcs8_for(spec),
            _ => generate_secret_value(spec),
        };
        let material = parse(spec, &value).unwrap();
        for wks in WrappingKeySpec::ALL {
            let private = wrapping_key(wks);
            let public = spki_of(&private);
            for algorithm in WrappingAlgorithm::ALL {
                let checked = material.check_wrapping(algorithm, wks);
                assert_eq!(
                    checked.is_ok(),
                    algorithm.check_compatible(spec, wks).is_ok(),
                    "{spec} {algorithm} {wks}"
                );
                match material.wrap(algorithm, &public) {
                    Ok(wrapped) => {
                        assert!(checked.is_ok());
                        assert_ne!(&wrapped[..], material.import_bytes());
                        let unwrapped = unwrap_locally(algorithm, &private, &wrapped);
                        assert_eq!(
                            &unwrapped[..],
                            material.import_bytes(),
                            "{spec} {algorithm} {wks}"
                        );
                        // Fresh randomness every time (OAEP seed, ephemeral AES key).
                        assert_ne!(material.wrap(algorithm, &public).unwrap(), wrapped);
                        round_trips += 1;
                    }
                    Err(e) => assert_eq!(Err(e), checked, "{spec} {algorithm} {wks}"),
                }
            }
        }
    }
    // 7 specs x 3 key sizes x 4 algorithms, minus RSA under OAEP (12) and P-521 under OAEP/2048 (2).
    assert_eq!(round_trips, 70);
}

#[test]
fn oaep_refuses_rsa_material_and_too_long_ecc_material() {
    let rsa = parse(KeySpec::Rsa2048, &pkcs8_for(KeySpec::Rsa2048)).unwrap();
    let public = spki_of(&wrapping_key(WrappingKeySpec::Rsa4096));
    for algorithm in [
        WrappingAlgorithm::RsaesOaepSha256,
        WrappingAlgorithm::RsaesOaepSha1,
    ] {
        let err = rsa.wrap(algorithm, &public).unwrap_err();
        assert!(matches!(
            err,
            MaterialError::WrappingUnsupported {
                spec: KeySpec::Rsa2048,
                ..
            }
        ));
        assert_eq!(err.reason(), "WrappingAlgorithmUnsupported");
        assert!(err.to_string().contains("RSA_AES_KEY_WRAP_SHA_256"));
        assert!(
            algorithm
                .check_compatible(KeySpec::Rsa4096, WrappingKeySpec::Rsa4096)
                .is_err()
        );
    }
    // P-521 PKCS#8 (241 bytes) exceeds one OAEP block under RSA_2048 with either hash.
    let p521 = parse(KeySpec::EccNistP521, &pkcs8_for(KeySpec::EccNistP521)).unwrap();
    let public_2048 = spki_of(&wrapping_key(WrappingKeySpec::Rsa2048));
    let err = p521
        .wrap(WrappingAlgorithm::RsaesOaepSha1, &public_2048)
        .unwrap_err();
    assert_eq!(
        err,
        MaterialError::WrappingKeyTooSmall {
            spec: KeySpec::EccNistP521,
            algorithm: WrappingAlgorithm::RsaesOaepSha1,
            wrapping_key_bits: 2048,
            max: 214,
            actual: 241
        }
    );
    assert_eq!(err.reason(), "WrappingKeyTooSmall");
    assert!(matches!(
        WrappingAlgorithm::RsaesOaepSha256
            .check_compatible(KeySpec::EccNistP521, WrappingKeySpec::Rsa2048),
        Err(MaterialError::WrappingKeyTooSmall { max: 190, .. })
    ));
    // P-384 (185 bytes) just fits RSA_2048 with SHA-256 (190).
    assert!(
        WrappingAlgorithm::RsaesOaepSha256
            .check_compatible(KeySpec::EccNistP384, WrappingKeySpec::Rsa2048)
            .is_ok()
    );
    assert!(
        WrappingAlgorithm::RsaesOaepSha256
            .check_compatible(KeySpec::EccNistP521, WrappingKeySpec::Rsa3072)
            .is_ok()
    );
    // OAEP capacities: k - 2*hLen - 2.
    assert_eq!(
        WrappingAlgorithm::RsaesOaepSha256.max_material_len(2048),
        Some(190)
    );
    assert_eq!(
        WrappingAlgorithm::RsaesOaepSha1.max_material_len(2048),
        Some(214)
    );
    assert_eq!(
        WrappingAlgorithm::RsaesOaepSha256.max_material_len(4096),
        Some(446)
    );
    assert_eq!(
        WrappingAlgorithm::RsaAesKeyWrapSha1.max_material_len(2048),
        None
    );
    // Symmetric and HMAC material fits every combination.
    for spec in KeySpec::ALL
        .into_iter()
        .filter(|s| allowed_length(*s).is_some())
    {
        for algorithm in WrappingAlgorithm::ALL {
            for wks in WrappingKeySpec::ALL {
                assert!(
                    algorithm.check_compatible(spec, wks).is_ok(),
                    "{spec} {algorithm} {wks}"
                );
            }
        }
    }
}

#[test]
fn wrapping_refuses_unusable_public_keys() {
    let material = parse(KeySpec::SymmetricDefault, &random_bytes(32).unwrap()).unwrap();
    let ec_spki = public_key_of_pkcs8(KeySpec::EccNistP256, &pkcs8_for(KeySpec::EccNistP256));
    for bad in [&b"garbage"[..], &ec_spki[..], &[][..]] {
        let err = material
            .wrap(WrappingAlgorithm::RsaesOaepSha256, bad)
            .unwrap_err();
        assert!(
            matches!(err, MaterialError::InvalidWrappingKey { .. }),
            "{err:?}"
        );
        assert_eq!(err.reason(), "WrappingKeyInvalid");
    }
    // An RSA key pair (not just a public key) is not what GetParametersForImport returns.
    let pkcs8 = pkcs8_for(KeySpec::Rsa2048);
    let err = material
        .wrap(WrappingAlgorithm::RsaesOaepSha256, &pkcs8)
        .unwrap_err();
    assert_eq!(err.reason(), "WrappingKeyInvalid");
}

#[test]
fn wrapping_defaults_and_kms_names() {
    for spec in KeySpec::ALL {
        let (algorithm, wks) = WrappingAlgorithm::default_for(spec);
        match spec.family() {
            KeyFamily::Symmetric | KeyFamily::Hmac => {
                assert_eq!(algorithm, WrappingAlgorithm::RsaesOaepSha256);
                assert_eq!(wks, WrappingKeySpec::Rsa2048);
            }
            KeyFamily::Rsa | KeyFamily::Ecc => {
                assert_eq!(algorithm, WrappingAlgorithm::RsaAesKeyWrapSha256);
                assert_eq!(wks, WrappingKeySpec::Rsa4096);
            }
        }
        assert!(algorithm.check_compatible(spec, wks).is_ok(), "{spec}");
    }
    for algorithm in WrappingAlgorithm::ALL {
        let json = serde_json::to_string(&algorithm).unwrap();
        assert_eq!(json, format!("\"{}\"", algorithm.as_str()));
        assert_eq!(
            WrappingAlgorithm::from_kms_name(algorithm.as_str()),
            Some(algorithm)
        );
    }
    assert_eq!(
        WrappingAlgorithm::ALL.map(|a| a.as_str()),
        [
            "RSAES_OAEP_SHA_256",
            "RSAES_OAEP_SHA_1",
            "RSA_AES_KEY_WRAP_SHA_256",
            "RSA_AES_KEY_WRAP_SHA_1"
        ]
    );
    for wks in WrappingKeySpec::ALL {
        let json = serde_json::to_string(&wks).unwrap();
        assert_eq!(json, format!("\"{}\"", wks.as_str()));
        assert_eq!(WrappingKeySpec::from_kms_name(wks.as_str()), Some(wks));
        assert_eq!(WrappingKeySpec::from_bits(wks.bits()), Some(wks));
    }
    assert_eq!(MaterialEncoding::default(), MaterialEncoding::Raw);
    for (encoding, name) in [
        (MaterialEncoding::Raw, "\"Raw\""),
        (MaterialEncoding::Base64, "\"Base64\""),
        (MaterialEncoding::Hex, "\"Hex\""),
    ] {
        assert_eq!(serde_json::to_string(&encoding).unwrap(), name);
        assert_eq!(
            serde_json::from_str::<MaterialEncoding>(name).unwrap(),
            encoding
        );
    }
    let schema = serde_json::to_value(schemars::schema_for!(WrappingAlgorithm)).unwrap();
    assert!(schema.to_string().contains("RSA_AES_KEY_WRAP_SHA_256"));
}

#[test]
fn sec1_without_curve_parameters_uses_the_spec_curve() {
    let spec = KeySpec::EccNistP256;
    let pkcs8 = pkcs8_for(spec);
    let sec1 = convert_private_key(spec, &pkcs8, SecretFormat::Sec1Der).unwrap();
    let seq = der::single(&sec1).unwrap();
    let items = der::children(seq.value).unwrap();
    assert!(items.iter().any(|t| t.tag == der::CONTEXT_0));
    let without_params: Vec<u8> = items
        .iter()
        .filter(|t| t.tag != der::CONTEXT_0)
        .flat_map(|t| tlv(t.tag, t.value))
        .collect();
    let stripped = tlv(der::SEQUENCE, &without_params);
    assert_eq!(
        der::classify(&stripped),
        Some(der::Container::Sec1(der::CurveParam::Absent))
    );
    let material = parse(spec, &pem_encode("EC PRIVATE KEY", &stripped)).unwrap();
    assert_eq!(
        material.public_key_der().unwrap(),
        public_key_of_pkcs8(spec, &pkcs8)
    );
    // Under another curve's spec the embedded public point does not fit: refused, not imported.
    let err = parse(KeySpec::EccSecgP256k1, &stripped).unwrap_err();
    assert_eq!(err.reason(), "MaterialUnparseable", "{err}");
}
