//! Label and field selectors as sent in `labelSelector` / `fieldSelector` query parameters.

use super::status::ApiError;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn bad(sel: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: invalid selector: {sel:?}"
    ))
}

fn key(k: &str, whole: &str) -> Result<String, ApiError> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(bad(whole));
    }
    Ok(k.to_string())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e,!f,g in (x,y),h notin (z)`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = if let Some(rest) = part.strip_prefix('!') {
                LabelReq::NotExists(key(rest, part)?)
            } else if let Some(open) = part.find('(') {
                let lhs = part[..open].trim_end();
                let inner = part[open + 1..]
                    .trim_end()
                    .strip_suffix(')')
                    .ok_or_else(|| bad(part))?;
                let values: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if let Some(k) = lhs.strip_suffix("notin") {
                    LabelReq::NotIn(key(k, part)?, values)
                } else if let Some(k) = lhs.strip_suffix("in") {
                    LabelReq::In(key(k, part)?, values)
                } else {
                    return Err(bad(part));
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::NotEq(key(k, part)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::Eq(key(k, part)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::Eq(key(k, part)?, v.trim().to_string())
            } else {
                LabelReq::Exists(key(part, part)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value` / `path!=value` on dotted JSON paths
/// (`metadata.name`, `metadata.namespace`, `type`, `involvedObject.name` ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

fn field_value(obj: &Value, path: &[String]) -> String {
    let mut cur = obj;
    for p in path {
        match cur.get(p) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace!=y`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {part:?}"
                )));
            };
            let path = key(k, part)?.split('.').map(str::to_string).collect();
            reqs.push((path, eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(path, eq, v)| (field_value(obj, path) == *v) == *eq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "x", "tier": "db"}}});
        let m = |s: &str| LabelSelector::parse(s).map(|l| l.matches(&o));
        assert_eq!(m("app=x"), Ok(true));
        assert_eq!(m("app==x,tier"), Ok(true));
        assert_eq!(m("app!=x"), Ok(false));
        assert_eq!(m("missing!=x"), Ok(true));
        assert_eq!(m("!tier"), Ok(false));
        assert_eq!(m("!other"), Ok(true));
        assert_eq!(m("tier in (web, db)"), Ok(true));
        assert_eq!(m("tier notin (web,db)"), Ok(false));
        assert_eq!(m("app=x,tier=web"), Ok(false));
        assert_eq!(m(""), Ok(true));
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "n"}, "type": "Opaque"});
        let m = |s: &str| FieldSelector::parse(s).map(|f| f.matches(&o));
        assert_eq!(m("metadata.name=a"), Ok(true));
        assert_eq!(m("metadata.name=b"), Ok(false));
        assert_eq!(m("metadata.namespace!=n"), Ok(false));
        assert_eq!(m("metadata.name==a,type=Opaque"), Ok(true));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
