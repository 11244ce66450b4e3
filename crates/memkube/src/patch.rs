//! Patch algorithms: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target` in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Parses a JSON pointer into unescaped reference tokens.
fn pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {path:?}"));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(index(t)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = index(t)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// An array index token (no leading zeros, no sign).
fn index(t: &str) -> Option<usize> {
    if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    t.parse().ok()
}

fn missing(path: &str) -> String {
    format!("doc is missing path: {path:?}: missing value")
}

fn add(doc: &mut Value, tokens: &[String], value: Value, path: &str) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            match index(last) {
                Some(i) if i <= a.len() => {
                    a.insert(i, value);
                    Ok(())
                }
                _ => Err(format!(
                    "add operation does not apply: index out of bounds: {path:?}"
                )),
            }
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, tokens: &[String], path: &str) -> Result<Value, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the document root".into());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => m.remove(last).ok_or_else(|| missing(path)),
        Some(Value::Array(a)) => match index(last) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(format!(
                "remove operation does not apply: index out of bounds: {path:?}"
            )),
        },
        _ => Err(missing(path)),
    }
}

fn str_field<'a>(op: &'a Map<String, Value>, f: &str) -> Result<&'a str, String> {
    op.get(f)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("operation missing {f:?} string field"))
}

/// Applies an RFC 6902 JSON patch to `doc` in place (callers keep a copy for atomicity).
///
/// Like kube-apiserver's implementation, a `test` of a missing path against `null` succeeds.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or_else(|| "json patch must be an array of operations".to_string())?;
    for op in ops {
        let op = op
            .as_object()
            .ok_or_else(|| "json patch operation must be an object".to_string())?;
        let kind = str_field(op, "op")?;
        let path = str_field(op, "path")?;
        let tokens = pointer(path)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} operation missing \"value\""))
        };
        match kind {
            "add" => add(doc, &tokens, value()?, path)?,
            "remove" => {
                remove(doc, &tokens, path)?;
            }
            "replace" => {
                let v = value()?;
                match get_mut(doc, &tokens) {
                    Some(slot) => *slot = v,
                    None => {
                        return Err(format!(
                            "replace operation does not apply: doc is missing key: {path}"
                        ));
                    }
                }
            }
            "move" => {
                let from = str_field(op, "from")?;
                let from_tokens = pointer(from)?;
                if tokens.starts_with(&from_tokens) && tokens.len() > from_tokens.len() {
                    return Err(format!("cannot move {from:?} into its own child {path:?}"));
                }
                let v = remove(doc, &from_tokens, from)?;
                add(doc, &tokens, v, path)?;
            }
            "copy" => {
                let from = str_field(op, "from")?;
                let v = get(doc, &pointer(from)?)
                    .cloned()
                    .ok_or_else(|| missing(from))?;
                add(doc, &tokens, v, path)?;
            }
            "test" => {
                let expected = op.get("value").cloned().unwrap_or(Value::Null);
                let ok = match get(doc, &tokens) {
                    None => expected.is_null(),
                    Some(actual) => *actual == expected,
                };
                if !ok {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("unexpected json patch operation {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut d = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut d,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            d,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"metadata": {"name": "x"}, "list": ["a", "b"]});
        json_patch(
            &mut d,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f1"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "f2"},
                {"op": "replace", "path": "/list/0", "value": "A"},
                {"op": "add", "path": "/list/1", "value": "ins"},
                {"op": "remove", "path": "/list/2"},
                {"op": "copy", "from": "/metadata/name", "path": "/copied"},
                {"op": "move", "from": "/copied", "path": "/moved"},
                {"op": "test", "path": "/metadata/finalizers/1", "value": "f2"},
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"name": "x", "finalizers": ["f1", "f2"]}, "list": ["A", "ins"], "moved": "x"})
        );
        let err = json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "nope"}]),
        );
        assert!(err.unwrap_err().contains("test failed"));
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(
            json_patch(
                &mut d,
                &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}])
            )
            .is_err()
        );
        assert!(
            json_patch(
                &mut d,
                &json!([{"op": "add", "path": "/list/9", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut d, &json!([{"op": "bogus", "path": "/x"}])).is_err());
    }
}
