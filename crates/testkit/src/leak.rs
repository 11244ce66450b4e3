//! Leak scans: every piece of key material the tests generate is remembered here, and any text
//! (logs, events, status, CLI output, Debug renderings) can be searched for it in every form
//! it could take — raw, hex in both cases, Base64, Rust's Debug of the bytes, any 8-byte window
//! of raw (non-DER) material in hex, and any Base64 line of a PEM body. A finding names the form and the
//! place, never the material.

use std::sync::{Mutex, MutexGuard};

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::engine::general_purpose;
use zeroize::Zeroizing;

/// Material generated in this process (one test under cargo-nextest).
static MATERIALS: Mutex<Vec<Zeroizing<Vec<u8>>>> = Mutex::new(Vec::new());

/// The shortest run of material bytes searched for on its own (shorter runs occur by chance).
const WINDOW: usize = 8;

fn materials() -> MutexGuard<'static, Vec<Zeroizing<Vec<u8>>>> {
    MATERIALS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers `secret` as key material that no output may contain.
pub fn remember(secret: &[u8]) {
    if secret.len() >= WINDOW {
        materials().push(Zeroizing::new(secret.to_vec()));
    }
}

/// How many pieces of material are remembered (a scan over none proves nothing).
pub fn remembered() -> usize {
    materials().len()
}

/// The forms of `secret` to search for, each with a description that names the form and the
/// place, never the material.
fn needles(secret: &[u8]) -> Vec<(Zeroizing<String>, String)> {
    let mut out = Vec::new();
    let whole = |form: &str| format!("the whole material ({} bytes) as {form}", secret.len());
    for (form, rendering) in [
        ("raw", String::from_utf8_lossy(secret).into_owned()),
        ("lowercase hex", hex::encode(secret)),
        ("uppercase hex", hex::encode_upper(secret)),
        ("Debug bytes", format!("{secret:?}")),
        ("Base64", general_purpose::STANDARD.encode(secret)),
        (
            "unpadded Base64",
            general_purpose::STANDARD_NO_PAD.encode(secret),
        ),
        (
            "URL-safe Base64",
            general_purpose::URL_SAFE_NO_PAD.encode(secret),
        ),
    ] {
        out.push((Zeroizing::new(rendering), whole(form)));
    }
    // Windows of raw material only: a DER private key (a SEQUENCE, 0x30) also holds public
    // parts (modulus, curve point, OIDs) that may rightly be shown; its whole forms and its PEM
    // lines are searched.
    if secret.first() != Some(&0x30) {
        for (offset, window) in secret.windows(WINDOW).enumerate() {
            let place = |form: &str| format!("bytes {offset}..{} as {form}", offset + WINDOW);
            out.push((Zeroizing::new(hex::encode(window)), place("lowercase hex")));
            out.push((
                Zeroizing::new(hex::encode_upper(window)),
                place("uppercase hex"),
            ));
        }
    }
    // Text material (PEM): every Base64 body line of 16 characters or more on its own.
    if let Ok(pem) = std::str::from_utf8(secret) {
        for (number, line) in pem.lines().enumerate() {
            let line = line.trim();
            if line.len() >= 16 && !line.starts_with("-----") {
                let place = format!("line {} of the PEM body", number + 1);
                out.push((Zeroizing::new(line.to_string()), place));
            }
        }
    }
    out
}

/// Every form of some pieces of material, searched for in one pass over a text.
pub struct Scanner {
    automaton: AhoCorasick,
    places: Vec<String>,
}

impl Scanner {
    /// A scanner for `secrets`.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Scanner {
        let (patterns, places): (Vec<_>, Vec<_>) = secrets.into_iter().flat_map(needles).unzip();
        let automaton = AhoCorasick::new(patterns.iter().map(|p| p.as_bytes()))
            .unwrap_or_else(|e| panic!("leak scanner: {e}"));
        Scanner { automaton, places }
    }

    /// A scanner for every remembered piece of material.
    pub fn remembered() -> Scanner {
        let materials = materials();
        Scanner::new(materials.iter().map(|m| &m[..]))
    }

    /// The first form found in `text`, named without the material.
    pub fn find(&self, text: &str) -> Option<String> {
        let found = self.automaton.find(text)?;
        Some(self.places[found.pattern().as_usize()].clone())
    }

    /// Panics, naming `what` and the form, when `text` holds the material.
    pub fn assert_clean(&self, what: &str, text: &str) {
        if let Some(form) = self.find(text) {
            panic!("key material leaked into {what}: {form}");
        }
    }
}

/// The first form of `secret` found in `text`, named without the material.
pub fn find_leak(text: &str, secret: &[u8]) -> Option<String> {
    Scanner::new([secret]).find(text)
}

/// Panics, naming `what` and the form, when `text` holds any remembered material.
pub fn assert_no_leak(what: &str, text: &str) {
    Scanner::remembered().assert_clean(what, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_material_is_found_and_none_is_printed() {
        let secret: Vec<u8> = (0u8..32)
            .map(|b| b.wrapping_mul(37).wrapping_add(11))
            .collect();
        let forms = [
            hex::encode(&secret),
            hex::encode_upper(&secret),
            format!("{secret:?}"),
            general_purpose::STANDARD.encode(&secret),
            general_purpose::URL_SAFE_NO_PAD.encode(&secret),
            format!("prefix {} suffix", hex::encode(&secret[10..18])),
        ];
        for form in &forms {
            let found = find_leak(&format!("log line: {form}"), &secret);
            let found = found.unwrap_or_else(|| panic!("not found: form {}", forms.len()));
            assert!(!found.contains(&hex::encode(&secret[..WINDOW])), "{found}");
        }
        assert_eq!(find_leak("nothing here: 0a0b0c", &secret), None);
        // Seven bytes in hex are below the window: not a finding.
        assert_eq!(find_leak(&hex::encode(&secret[3..10]), &secret), None);
    }

    #[test]
    fn pem_body_lines_are_found() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\nAwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            find_leak("..MIGHAgEAMBMGByqGSM49AgEGCCqGSM49..", pem),
            Some("line 2 of the PEM body".into())
        );
        assert_eq!(find_leak("-----BEGIN PRIVATE KEY-----", pem), None);
    }

    #[test]
    fn remembered_material_fails_the_scan() {
        let secret = b"remembered-material-for-the-scan";
        remember(secret);
        assert!(remembered() >= 1);
        assert_no_leak("a clean text", "nothing");
        let leaked = std::panic::catch_unwind(|| {
            assert_no_leak("a log", &format!("x {}", hex::encode(secret)))
        });
        assert!(leaked.is_err());
    }
}
