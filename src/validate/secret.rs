//! Secrets of the input: the value of one key as the API server would store it.
//!
//! `stringData` entries are merged over `data` (as the API server does on write); `data` values
//! are base64 (standard alphabet, padded; line breaks ignored). Decoded values live only in
//! zeroized buffers, and nothing here puts a value, or a character of it, into a message.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use zeroize::Zeroizing;

use super::object::Object;
use super::yaml::escape;

/// A Secret document.
pub(crate) struct SecretDoc {
    pub object: Object,
}

/// The value under one key of a Secret.
pub(crate) enum SecretValue {
    /// The bytes, and the JSON pointer of the entry they came from.
    Bytes {
        bytes: Zeroizing<Vec<u8>>,
        pointer: String,
    },
    /// An entry the API server refuses (see [`SecretDoc::problems`]).
    Invalid,
    /// No such key.
    Missing,
}

impl SecretDoc {
    pub fn new(object: Object) -> Self {
        SecretDoc { object }
    }

    fn section(&self, name: &str) -> Option<&serde_json::Map<String, Value>> {
        self.object.doc.value.get(name).and_then(Value::as_object)
    }

    /// Every key of `data` and `stringData`, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = ["data", "stringData"]
            .iter()
            .filter_map(|s| self.section(s))
            .flat_map(|m| m.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The value under `key`; `stringData` wins over `data`.
    pub fn value(&self, key: &str) -> SecretValue {
        if let Some(v) = self.section("stringData").and_then(|m| m.get(key)) {
            let pointer = format!("/stringData/{}", escape(key));
            return match v {
                Value::String(s) => SecretValue::Bytes {
                    bytes: Zeroizing::new(s.as_bytes().to_vec()),
                    pointer,
                },
                _ => SecretValue::Invalid,
            };
        }
        match self.section("data").and_then(|m| m.get(key)) {
            None => SecretValue::Missing,
            Some(v) => {
                let pointer = format!("/data/{}", escape(key));
                match v {
                    Value::String(s) => match decode(s) {
                        Some(bytes) => SecretValue::Bytes { bytes, pointer },
                        None => SecretValue::Invalid,
                    },
                    _ => SecretValue::Invalid,
                }
            }
        }
    }

    /// Entries the API server refuses (the whole Secret with them): `data` values that are not
    /// base64, and values that are not strings. As (pointer, reason, message).
    pub fn problems(&self) -> Vec<(String, &'static str, String)> {
        let mut out = Vec::new();
        for section in ["data", "stringData"] {
            let Some(map) = self.section(section) else {
                continue;
            };
            for (k, v) in map {
                let pointer = format!("/{section}/{}", escape(k));
                match v {
                    Value::String(s) if section == "data" && decode(s).is_none() => out.push((
                        pointer,
                        "SecretDataInvalidBase64",
                        "not valid base64, so the API server refuses this Secret: base64-encode \
                         the value (`base64 -w0`), or put it under stringData as text"
                            .to_string(),
                    )),
                    Value::String(_) => {}
                    _ => out.push((
                        pointer,
                        "FieldValueTypeInvalid",
                        format!(
                            "{section} values must be strings (quote the value), so the API \
                             server refuses this Secret"
                        ),
                    )),
                }
            }
        }
        out
    }
}

/// Decodes a `data` value; `None` when it is not base64.
fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.bytes()
            .filter(|b| *b != b'\n' && *b != b'\r')
            .collect(),
    );
    let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(compact.len())]);
    let n = STANDARD.decode_slice(&compact[..], &mut out[..]).ok()?;
    out.truncate(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Source;

    fn secret(yaml: &str) -> SecretDoc {
        let docs = crate::validate::yaml::load(0, &Source::new("s.yaml", yaml)).unwrap();
        SecretDoc::new(Object::new(docs[0].clone(), "Secret", true, "default"))
    }

    fn bytes(v: SecretValue) -> Vec<u8> {
        match v {
            SecretValue::Bytes { bytes, .. } => bytes.to_vec(),
            _ => panic!("not bytes"),
        }
    }

    #[test]
    fn string_data_wins_over_data_and_data_is_base64() {
        let s = secret(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  a: aGVsbG8=\n  b: aGk=\nstringData:\n  b: plain\n",
        );
        assert_eq!(bytes(s.value("a")), b"hello");
        assert_eq!(bytes(s.value("b")), b"plain");
        assert!(matches!(s.value("c"), SecretValue::Missing));
        assert_eq!(s.keys(), ["a", "b"]);
    }

    #[test]
    fn invalid_base64_is_detected() {
        let s = secret("kind: Secret\ndata:\n  a: not*base64\n  b: aGk=\n");
        assert!(matches!(s.value("a"), SecretValue::Invalid));
        let problems = s.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "/data/a");
        assert_eq!(problems[0].1, "SecretDataInvalidBase64");
    }
}
