//! Typed access to the members of an AWS JSON 1.1 request body, with AWS's validation errors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::error::{KmsResult, validation};

/// The request body of one operation.
pub struct Params<'a>(pub &'a Map<String, Value>);

fn missing(name: &str) -> crate::error::KmsError {
    validation(format!(
        "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
    ))
}

impl<'a> Params<'a> {
    pub fn opt_str(&self, name: &str) -> KmsResult<Option<&'a str>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(validation(format!("{name} must be a string"))),
        }
    }

    pub fn str(&self, name: &str) -> KmsResult<&'a str> {
        self.opt_str(name)?.ok_or_else(|| missing(name))
    }

    pub fn opt_blob(&self, name: &str) -> KmsResult<Option<Vec<u8>>> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => STANDARD
                .decode(s)
                .map(Some)
                .map_err(|_| validation(format!("{name} is not valid base64"))),
        }
    }

    pub fn blob(&self, name: &str) -> KmsResult<Vec<u8>> {
        self.opt_blob(name)?.ok_or_else(|| missing(name))
    }

    pub fn opt_int(&self, name: &str) -> KmsResult<Option<i64>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| validation(format!("{name} must be an integer"))),
        }
    }

    pub fn opt_bool(&self, name: &str) -> KmsResult<Option<bool>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(validation(format!("{name} must be a boolean"))),
        }
    }

    /// A timestamp (epoch seconds, possibly fractional) as epoch milliseconds.
    pub fn opt_time_ms(&self, name: &str) -> KmsResult<Option<i64>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|s| Some((s * 1000.0).round() as i64))
                .ok_or_else(|| validation(format!("{name} must be a timestamp"))),
        }
    }

    pub fn opt_str_list(&self, name: &str) -> KmsResult<Option<Vec<String>>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| validation(format!("{name} must hold strings")))
                })
                .collect::<KmsResult<Vec<_>>>()
                .map(Some),
            Some(_) => Err(validation(format!("{name} must be a list"))),
        }
    }

    /// `Tags`: a list of `{TagKey, TagValue}`.
    pub fn opt_tags(&self, name: &str) -> KmsResult<Option<Vec<(String, String)>>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| {
                    let key = t.get("TagKey").and_then(Value::as_str);
                    let value = t.get("TagValue").and_then(Value::as_str);
                    match (key, value) {
                        (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
                        _ => Err(validation("each tag needs a TagKey and a TagValue")),
                    }
                })
                .collect::<KmsResult<Vec<_>>>()
                .map(Some),
            Some(_) => Err(validation(format!("{name} must be a list"))),
        }
    }

    /// `EncryptionContext`: a string-to-string map, canonicalised (sorted) for AAD.
    pub fn encryption_context(&self) -> KmsResult<Vec<u8>> {
        match self.0.get("EncryptionContext") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(map)) => {
                let mut pairs: Vec<(&String, &str)> = Vec::new();
                for (k, v) in map {
                    let v = v
                        .as_str()
                        .ok_or_else(|| validation("EncryptionContext values must be strings"))?;
                    pairs.push((k, v));
                }
                pairs.sort();
                Ok(serde_json::to_vec(&pairs).unwrap_or_default())
            }
            Some(_) => Err(validation("EncryptionContext must be a map")),
        }
    }

    /// `Limit` within `1..=max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> KmsResult<usize> {
        match self.opt_int("Limit")? {
            None => Ok(default),
            Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
            Some(n) => Err(validation(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
            ))),
        }
    }
}

pub fn b64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

pub fn time(ms: i64) -> Value {
    serde_json::json!(ms as f64 / 1000.0)
}
