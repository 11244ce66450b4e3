//! One object of the input (identity, document, lines) and the collector of its findings.
//!
//! Field paths are rendered the way the API server writes them: `spec.keyUsage`,
//! `spec.regions[0]`, and map keys that are not plain names in brackets
//! (`spec.tags[keyfleet.dev/owner]`, `data[tls.key]`).

use serde_json::Value;

use super::finding::{Check, Finding, ObjectRef};
use super::yaml::{Document, escape};
use crate::manifest::Source;

/// An object of the input.
#[derive(Clone, Debug)]
pub(crate) struct Object {
    pub doc: Document,
    pub id: ObjectRef,
}

/// Shown for an object without `metadata.name` (that is reported too).
pub(crate) const UNNAMED: &str = "(unnamed)";

impl Object {
    /// Identifies the document; `namespaced` decides whether `metadata.namespace` (or
    /// `default_namespace`) applies.
    pub fn new(doc: Document, kind: &str, namespaced: bool, default_namespace: &str) -> Object {
        let meta = |field: &str| {
            doc.value
                .get("metadata")
                .and_then(|m| m.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let name = meta("name")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| UNNAMED.to_string());
        let namespace = namespaced.then(|| {
            meta("namespace")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| default_namespace.to_string())
        });
        Object {
            id: ObjectRef {
                kind: kind.to_string(),
                namespace,
                name,
            },
            doc,
        }
    }

    /// The namespace of a namespaced object (`""` for cluster-scoped ones).
    pub fn namespace(&self) -> &str {
        self.id.namespace.as_deref().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.id.name
    }
}

/// Collects the findings of one object. Per-object checks run in stages (schema, CEL,
/// semantic); a later stage's finding on a field an earlier stage already reported (or on a
/// field inside or around it) is dropped, so one mistake gives one finding.
pub(crate) struct ObjectFindings<'a> {
    object: &'a Object,
    file: &'a str,
    out: Vec<Finding>,
}

impl<'a> ObjectFindings<'a> {
    pub fn new(object: &'a Object, sources: &'a [Source]) -> Self {
        ObjectFindings {
            object,
            file: sources
                .get(object.doc.source)
                .map(|s| s.name.as_str())
                .unwrap_or_default(),
            out: Vec::new(),
        }
    }

    /// Adds a finding at the field `pointer` (JSON pointer; need not exist in the document).
    pub fn add_at(
        &mut self,
        check: Check,
        pointer: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.out.push(Finding {
            file: self.file.to_string(),
            line: self.object.doc.line_of(pointer),
            object: self.object.id.clone(),
            field: field_path(&self.object.doc.value, pointer),
            message: message.into(),
            check,
            reason: reason.to_string(),
        });
    }

    /// Adds a finding at a dotted field path (`spec.keyUsage`), as `SpecError` and CEL give.
    pub fn add_at_path(
        &mut self,
        check: Check,
        path: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let pointer = pointer_from_path(path);
        self.add_at(check, &pointer, reason, message);
    }

    /// Whether any schema finding was made (the typed object may then not be readable).
    pub fn has_schema_findings(&self) -> bool {
        self.out.iter().any(|f| f.check == Check::Schema)
    }

    pub fn finish(self) -> Vec<Finding> {
        let staged = |c: Check| matches!(c, Check::Schema | Check::Cel | Check::Semantic);
        let mut kept: Vec<Finding> = Vec::with_capacity(self.out.len());
        for f in self.out {
            let shadowed = staged(f.check)
                && kept
                    .iter()
                    .any(|k| staged(k.check) && k.check < f.check && related(&k.field, &f.field));
            if !shadowed {
                kept.push(f);
            }
        }
        kept
    }
}

/// Whether one field path is the other or contains it.
fn related(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    within(a, b) || within(b, a)
}

/// Checks what the API server checks of every object's metadata beyond its schema: a name
/// (`kubectl apply` needs one), DNS-1123 subdomain names and DNS-1123 label namespaces.
pub(crate) fn check_metadata(object: &Object, out: &mut ObjectFindings<'_>) {
    let meta = object.doc.value.get("metadata");
    match meta.and_then(|m| m.get("name")) {
        None | Some(Value::Null) => out.add_at(
            Check::Schema,
            "/metadata/name",
            "FieldValueRequired",
            if meta.and_then(|m| m.get("generateName")).is_some() {
                "metadata.name is required: kubectl apply cannot use generateName"
            } else {
                "metadata.name is required"
            },
        ),
        Some(Value::String(name)) => {
            if let Some(problem) = dns_subdomain_problem(name) {
                out.add_at(
                    Check::Schema,
                    "/metadata/name",
                    "FieldValueInvalid",
                    format!("{name:?} is not a valid name: {problem}"),
                );
            }
        }
        Some(_) => {} // a type error, reported by the schema check
    }
    if let Some(Value::String(ns)) = meta.and_then(|m| m.get("namespace"))
        && object.id.namespace.is_some()
        && let Some(problem) = dns_label_problem(ns)
    {
        out.add_at(
            Check::Schema,
            "/metadata/namespace",
            "FieldValueInvalid",
            format!("{ns:?} is not a valid namespace: {problem}"),
        );
    }
}

const DNS_CHARS: &str = "lowercase letters, digits and '-'";

fn dns_label_problem(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 63 {
        return Some("a DNS-1123 label has 1-63 characters".into());
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !s.chars().all(ok_char) {
        return Some(format!("a DNS-1123 label has only {DNS_CHARS}"));
    }
    if !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Some("a DNS-1123 label starts and ends with a letter or digit".into());
    }
    None
}

fn dns_subdomain_problem(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 253 {
        return Some("a DNS-1123 subdomain has 1-253 characters".into());
    }
    for part in s.split('.') {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if part.is_empty()
            || !part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || !part.starts_with(alnum)
            || !part.ends_with(alnum)
        {
            return Some(format!(
                "use {DNS_CHARS} (and '.' between parts), starting and ending with a letter or digit"
            ));
        }
    }
    None
}

/// A JSON pointer rendered as a field path, using `value` to tell list indexes from map keys.
pub(crate) fn field_path(value: &Value, pointer: &str) -> String {
    let mut out = String::new();
    let mut current = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match current {
            Some(Value::Array(items)) => {
                out.push_str(&format!("[{segment}]"));
                current = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                let plain = !segment.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&segment);
                } else {
                    out.push_str(&format!("[{segment}]"));
                }
                current = other.and_then(|v| v.get(&segment));
            }
        }
    }
    if out.is_empty() {
        "(object)".to_string()
    } else {
        out
    }
}

/// A dotted field path (`spec.keyMaterial.secretRef`, `spec.regions[0]`, `spec.tags[a.b]`)
/// as a JSON pointer.
pub(crate) fn pointer_from_path(path: &str) -> String {
    let mut pointer = String::new();
    let mut token = String::new();
    let mut in_brackets = false;
    let flush = |token: &mut String, pointer: &mut String| {
        if !token.is_empty() {
            pointer.push('/');
            pointer.push_str(&escape(token));
            token.clear();
        }
    };
    for c in path.chars() {
        match c {
            '[' if !in_brackets => {
                flush(&mut token, &mut pointer);
                in_brackets = true;
            }
            ']' if in_brackets => {
                flush(&mut token, &mut pointer);
                in_brackets = false;
            }
            '.' if !in_brackets => flush(&mut token, &mut pointer),
            c => token.push(c),
        }
    }
    flush(&mut token, &mut pointer);
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths_read_like_the_api_servers() {
        let v = json!({"spec": {"regions": ["a", "b"], "tags": {"keyfleet.dev/owner": "x", "team": "y"}}});
        assert_eq!(field_path(&v, "/spec/regions/1"), "spec.regions[1]");
        assert_eq!(
            field_path(&v, "/spec/tags/keyfleet.dev~1owner"),
            "spec.tags[keyfleet.dev/owner]"
        );
        assert_eq!(field_path(&v, "/spec/tags/team"), "spec.tags.team");
        assert_eq!(
            field_path(&v, "/spec/missing/deeper"),
            "spec.missing.deeper"
        );
        assert_eq!(field_path(&v, ""), "(object)");
    }

    #[test]
    fn dotted_paths_become_pointers() {
        assert_eq!(pointer_from_path("spec.keyUsage"), "/spec/keyUsage");
        assert_eq!(pointer_from_path("spec.regions[2]"), "/spec/regions/2");
        assert_eq!(
            pointer_from_path("spec.tags[keyfleet.dev/owner]"),
            "/spec/tags/keyfleet.dev~1owner"
        );
        assert_eq!(pointer_from_path(""), "");
    }

    #[test]
    fn names_and_namespaces_follow_dns_rules() {
        assert_eq!(dns_subdomain_problem("orders-key.v2"), None);
        assert!(dns_subdomain_problem("Orders").is_some());
        assert!(dns_subdomain_problem("-a").is_some());
        assert!(dns_subdomain_problem("a..b").is_some());
        assert_eq!(dns_label_problem("team-a"), None);
        assert!(dns_label_problem("team.a").is_some());
        assert!(dns_label_problem(&"a".repeat(64)).is_some());
    }

    #[test]
    fn a_later_stage_does_not_repeat_a_field_already_reported() {
        assert!(related("spec.alias", "spec.alias"));
        assert!(related(
            "spec.keyMaterial",
            "spec.keyMaterial.wrappingAlgorithm"
        ));
        assert!(related("spec.tags[a]", "spec.tags"));
        assert!(!related("spec.keyUsage", "spec.keySpec"));
        assert!(!related("spec.key", "spec.keyUsage"));
    }
}
