//! Fuzzing entry points for the material parsers (built for `cargo fuzz` and for tests only).
//!
//! `fuzz/fuzz_targets/*.rs` call these with libFuzzer's input; the replay test below runs the
//! checked-in seed corpus (`fuzz/corpus/<target>/`) through the same functions on stable, so
//! CI exercises every seed without a fuzzer. Each entry also checks invariants that must hold
//! for any input; a violation panics, which the fuzzer reports as a crash.

use super::{KeyMaterial, MaterialEncoding, MaterialError, armor, der};
use crate::api::{KeyFamily, KeySpec};

/// The encodings, in the order the selector byte picks them.
pub const ENCODINGS: [MaterialEncoding; 3] = [
    MaterialEncoding::Raw,
    MaterialEncoding::Base64,
    MaterialEncoding::Hex,
];

/// The key spec and encoding the first byte of a `secret_value` input selects (`None` if empty).
pub fn secret_value_selector(data: &[u8]) -> Option<(KeySpec, MaterialEncoding)> {
    let selector = usize::from(*data.first()?);
    let specs = KeySpec::ALL.len();
    Some((
        KeySpec::ALL[selector % specs],
        ENCODINGS[(selector / specs) % ENCODINGS.len()],
    ))
}

/// The selector byte for `spec` and `encoding` (the inverse of [`secret_value_selector`]).
pub fn secret_value_selector_byte(spec: KeySpec, encoding: MaterialEncoding) -> u8 {
    let spec_index = KeySpec::ALL.iter().position(|s| *s == spec).unwrap_or(0);
    let encoding_index = ENCODINGS.iter().position(|e| *e == encoding).unwrap_or(0);
    u8::try_from(encoding_index * KeySpec::ALL.len() + spec_index).unwrap_or(0)
}

/// [`KeyMaterial::from_secret_value`] over every key spec and encoding: the first byte picks
/// both, the rest is the Secret value. Returns the spec and the outcome (a refusal's reason).
///
/// Invariants: a refusal is a material problem with a message of bounded length; accepted
/// material re-parses from its own import bytes (PKCS#8 DER or raw) to the same fingerprint.
pub fn secret_value(data: &[u8]) -> Option<(KeySpec, Result<(), &'static str>)> {
    let (spec, encoding) = secret_value_selector(data)?;
    let value = &data[1..];
    match KeyMaterial::from_secret_value(spec, encoding, value) {
        Ok(material) => {
            assert_eq!(material.spec(), spec);
            let again = KeyMaterial::from_secret_value(
                spec,
                MaterialEncoding::Raw,
                material.import_bytes(),
            )
            .unwrap_or_else(|e| panic!("{spec}: accepted material does not re-parse: {e}"));
            assert_eq!(again.fingerprint(), material.fingerprint(), "{spec}");
            assert_eq!(
                material.public_key_der().is_some(),
                matches!(spec.family(), KeyFamily::Rsa | KeyFamily::Ecc)
            );
            Some((spec, Ok(())))
        }
        Err(e) => {
            check_refusal(&e, value);
            Some((spec, Err(e.reason())))
        }
    }
}

fn check_refusal(e: &MaterialError, value: &[u8]) {
    assert!(e.is_material_problem(), "{}: {e}", e.reason());
    // Messages are built from fixed text, sizes and public identifiers (OIDs), never from the
    // value: their length does not grow with it.
    let message = e.to_string();
    assert!(
        message.len() < 1024,
        "a {}-byte value gave a {}-byte message",
        value.len(),
        message.len()
    );
}

/// The PEM reader: every block of `data`, then the private key selection.
///
/// Invariants: at most [`armor::MAX_PEM_BLOCKS`] blocks; a selected key is one of the blocks.
pub fn pem(data: &[u8]) -> usize {
    let blocks = armor::parse_blocks(data);
    let count = match &blocks {
        Ok(blocks) => {
            assert!(blocks.len() <= armor::MAX_PEM_BLOCKS);
            blocks.len()
        }
        Err(e) => {
            assert_eq!(e.reason(), "MaterialUnparseable");
            0
        }
    };
    if let Ok(key) = armor::select_private_key(data) {
        let blocks =
            blocks.unwrap_or_else(|e| panic!("a key was selected from a refused text: {e}"));
        assert!(blocks.iter().any(|b| b.der[..] == key[..]));
    }
    count
}

/// The DER reader: element splitting, container classification and OID rendering.
///
/// Invariants: elements lie within their input; children of a constructed value add up to it.
pub fn der(data: &[u8]) -> Option<&'static str> {
    if let Some((tlv, rest)) = der::read_tlv(data) {
        assert!(tlv.value.len() + rest.len() < data.len());
        if let Some(children) = der::children(tlv.value) {
            let total: usize = children.iter().map(|c| c.value.len()).sum();
            assert!(total <= tlv.value.len());
            for child in children.iter().filter(|c| c.tag == der::OID) {
                let dotted = der::oid_to_string(child.value);
                assert!(dotted.len() < 32 * 40, "{} characters", dotted.len());
            }
        }
        let _ = der::unsigned_bit_len(tlv.value);
    }
    let _ = der::pkcs8_inner_key(data);
    der::classify(data).map(|container| match container {
        der::Container::Pkcs8(_) => "Pkcs8",
        der::Container::Pkcs1 { .. } => "Pkcs1",
        der::Container::Sec1(_) => "Sec1",
        der::Container::EncryptedPkcs8 => "EncryptedPkcs8",
        der::Container::PublicKey => "PublicKey",
        der::Container::Certificate => "Certificate",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{}: only {} seeds",
            dir.display(),
            files.len()
        );
        files
    }

    #[test]
    fn the_secret_value_corpus_replays_and_covers_every_spec_and_encoding() {
        let mut accepted = BTreeSet::new();
        let mut encodings = BTreeSet::new();
        let mut refusals = BTreeSet::new();
        for (path, bytes) in corpus("secret_value") {
            let (spec, encoding) = secret_value_selector(&bytes).unwrap();
            match secret_value(&bytes) {
                Some((_, Ok(()))) => {
                    accepted.insert(spec.to_string());
                    encodings.insert(encoding.as_str());
                }
                Some((_, Err(reason))) => {
                    refusals.insert(reason);
                }
                None => panic!("{}: empty seed", path.display()),
            }
        }
        let every_spec: BTreeSet<String> = KeySpec::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(accepted, every_spec, "specs with an accepted seed");
        assert_eq!(encodings, BTreeSet::from(["Base64", "Hex", "Raw"]));
        for reason in [
            "MaterialNotPrivateKey",
            "MaterialEncrypted",
            "MaterialWrongKeyType",
            "MaterialWrongCurve",
            "MaterialUnparseable",
        ] {
            assert!(
                refusals.contains(reason),
                "no seed refused with {reason}: {refusals:?}"
            );
        }
    }

    #[test]
    fn the_pem_corpus_replays() {
        let blocks: usize = corpus("pem").iter().map(|(_, bytes)| pem(bytes)).sum();
        assert!(blocks >= 10, "only {blocks} blocks read from the PEM seeds");
    }

    #[test]
    fn the_der_corpus_replays_and_holds_every_container() {
        let kinds: BTreeSet<&str> = corpus("der")
            .iter()
            .filter_map(|(_, bytes)| der(bytes))
            .collect();
        for kind in [
            "Pkcs8",
            "Pkcs1",
            "Sec1",
            "EncryptedPkcs8",
            "PublicKey",
            "Certificate",
        ] {
            assert!(kinds.contains(kind), "no {kind} seed: {kinds:?}");
        }
    }

    #[test]
    fn selector_bytes_round_trip() {
        for spec in KeySpec::ALL {
            for encoding in ENCODINGS {
                let byte = secret_value_selector_byte(spec, encoding);
                assert_eq!(secret_value_selector(&[byte]), Some((spec, encoding)));
            }
        }
    }
}
