//! The CRD schema check: the generated `openAPIV3Schema` of each kind, turned into JSON Schema
//! (draft 4, which OpenAPI 3.0 schemas are based on) and evaluated with the `jsonschema` crate.
//!
//! The conversion adds what the API server does beyond plain JSON Schema:
//! * `nullable: true` → `null` is an allowed type (and enum value);
//! * a `null` for a field that is not nullable is pruned before validation, as the API server
//!   prunes it (so `description:` with no value is not an error) — see [`prune_nulls`];
//! * objects with `properties` and no `additionalProperties` reject unknown fields (the API
//!   server prunes them, and `kubectl apply`'s strict field validation refuses them);
//! * `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields` are honoured;
//! * the root accepts `apiVersion`, `kind` and `metadata` (checked against `ObjectMeta`'s own
//!   schema from k8s-openapi), and ignores `status` (a status subresource ignores it on writes).
//!
//! Messages are written here from the failing keyword and the schema node, not taken from
//! the validator's `Display`, so they name the field, the limit and — for unknown fields and
//! enum values — the closest valid name.

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, PatternOptions, Validator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};

/// A compiled schema check for one kind.
pub(crate) struct SchemaCheck {
    validator: Validator,
    /// The converted JSON Schema (to read limits and known properties for messages).
    json_schema: Value,
    /// The original OpenAPI schema (to know which fields are nullable when pruning nulls).
    openapi: Value,
}

/// A schema violation at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issue {
    /// JSON pointer of the offending field (for a missing field: where it should be).
    pub pointer: String,
    pub reason: &'static str,
    pub message: String,
}

impl SchemaCheck {
    /// Compiles the `openAPIV3Schema` of a CRD version.
    pub fn new(openapi: &Value) -> Result<SchemaCheck, String> {
        let mut root = openapi.clone();
        if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), object_meta_schema()?);
            // Ignored on writes through the main resource (status subresource).
            props.insert(
                "status".into(),
                json!({"x-kubernetes-preserve-unknown-fields": true}),
            );
        }
        let json_schema = to_json_schema(&root);
        let validator = jsonschema::options()
            .with_draft(Draft::Draft4)
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(&json_schema)
            .map_err(|e| format!("compiling the CRD schema: {e}"))?;
        Ok(SchemaCheck {
            validator,
            json_schema,
            openapi: root,
        })
    }

    /// Prunes nulls as the API server does, then returns every violation.
    pub fn check(&self, value: &mut Value) -> Vec<Issue> {
        prune_nulls(value, &self.openapi);
        let mut issues = Vec::new();
        for error in self.validator.iter_errors(value) {
            let at = error.instance_path().as_str().to_string();
            let schema_path = error.schema_path().as_str();
            // The schema node holding the failing keyword.
            let node = schema_path
                .rfind('/')
                .and_then(|i| self.json_schema.pointer(&schema_path[..i]))
                .unwrap_or(&Value::Null);
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    issues.push(Issue {
                        pointer: format!("{at}/{}", super::yaml::escape(name)),
                        reason: "FieldValueRequired",
                        message: format!("required field {name:?} is missing"),
                    });
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let known: Vec<&str> = node
                        .get("properties")
                        .and_then(Value::as_object)
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    for name in unexpected {
                        let hint = match closest(name, &known) {
                            Some(best) => format!(" (did you mean {best:?}?)"),
                            None if known.is_empty() => String::new(),
                            None => format!("; known fields: {}", known.join(", ")),
                        };
                        issues.push(Issue {
                            pointer: format!("{at}/{}", super::yaml::escape(name)),
                            reason: "UnknownField",
                            message: format!(
                                "unknown field {name:?}{hint}; the API server drops it, and \
                                 kubectl apply (strict field validation) refuses it"
                            ),
                        });
                    }
                }
                _ => {
                    let (reason, message) = value_issue(&error, node);
                    issues.push(Issue {
                        pointer: at,
                        reason,
                        message,
                    });
                }
            }
        }
        issues
    }
}

/// Reason and message for a value that breaks one keyword of its schema node (`node`).
fn value_issue(error: &jsonschema::ValidationError<'_>, node: &Value) -> (&'static str, String) {
    let instance = error.instance();
    let invalid = |message: String| ("FieldValueInvalid", message);
    match error.kind() {
        ValidationErrorKind::Type { .. } => (
            "FieldValueTypeInvalid",
            format!(
                "must be {}, got {}",
                expected_types(node.get("type")),
                describe(instance)
            ),
        ),
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<&str> = options
                .as_array()
                .map(|o| o.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let hint = instance
                .as_str()
                .and_then(|s| closest(s, &allowed))
                .map(|b| format!(" (did you mean {b}?)"))
                .unwrap_or_default();
            (
                "FieldValueNotSupported",
                format!(
                    "unsupported value {}{hint}; supported values: {}",
                    describe_value(instance),
                    allowed.join(", ")
                ),
            )
        }
        ValidationErrorKind::Pattern { pattern } => invalid(format!(
            "{} does not match the pattern {pattern}",
            describe_value(instance)
        )),
        ValidationErrorKind::MinLength { limit } => invalid(format!(
            "must be at least {limit} character{} long, got {}",
            if *limit == 1 { "" } else { "s" },
            chars(instance)
        )),
        ValidationErrorKind::MaxLength { limit } => (
            "FieldValueTooLong",
            format!(
                "must be at most {limit} characters long, got {}",
                chars(instance)
            ),
        ),
        ValidationErrorKind::Minimum { limit } => invalid(format!(
            "must be at least {}, got {instance}",
            number(limit)
        )),
        ValidationErrorKind::Maximum { limit } => {
            invalid(format!("must be at most {}, got {instance}", number(limit)))
        }
        ValidationErrorKind::MinItems { limit } => {
            invalid(format!("must have at least {limit} item(s)"))
        }
        ValidationErrorKind::MaxItems { limit } => (
            "FieldValueTooMany",
            format!("must have at most {limit} item(s)"),
        ),
        ValidationErrorKind::MinProperties { limit } => {
            invalid(format!("must have at least {limit} entr(y/ies)"))
        }
        ValidationErrorKind::MaxProperties { limit } => (
            "FieldValueTooMany",
            format!("must have at most {limit} entries"),
        ),
        ValidationErrorKind::Format { format } => invalid(match format.as_str() {
            "date-time" => format!(
                "{} is not an RFC 3339 date-time (e.g. 2030-01-31T00:00:00Z)",
                describe_value(instance)
            ),
            other => format!("{} is not a valid {other}", describe_value(instance)),
        }),
        _ => invalid(error.to_string()),
    }
}

/// `ObjectMeta`'s schema as k8s-openapi describes it, in the CRD generator's OpenAPI 3 style.
fn object_meta_schema() -> Result<Value, String> {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<ObjectMeta>())
        .map_err(|e| format!("ObjectMeta schema: {e}"))?;
    if let Some(o) = schema.as_object_mut() {
        o.remove("title");
        o.remove("$schema");
    }
    Ok(schema)
}

/// OpenAPI (Kubernetes structural schema) → JSON Schema draft 4.
pub(crate) fn to_json_schema(node: &Value) -> Value {
    let Some(obj) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "properties" => {
                let props = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(name, s)| (name.clone(), to_json_schema(s)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" if v.is_object() => {
                out.insert(k.clone(), to_json_schema(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = v
                    .as_array()
                    .map(|l| l.iter().map(to_json_schema).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Array(list));
            }
            // Kubernetes extensions and OpenAPI-only keywords, handled below or irrelevant.
            "nullable"
            | "description"
            | "default"
            | "x-kubernetes-validations"
            | "x-kubernetes-int-or-string"
            | "x-kubernetes-preserve-unknown-fields"
            | "x-kubernetes-embedded-resource"
            | "x-kubernetes-list-type"
            | "x-kubernetes-list-map-keys"
            | "x-kubernetes-map-type" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let flag = |name: &str| obj.get(name).and_then(Value::as_bool).unwrap_or(false);
    if flag("x-kubernetes-int-or-string") {
        out.remove("type");
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if flag("nullable") {
        match out.get("type").cloned() {
            Some(Value::String(t)) => {
                out.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(mut ts)) => {
                ts.push(json!("null"));
                out.insert("type".into(), Value::Array(ts));
            }
            _ => {}
        }
        if let Some(Value::Array(values)) = out.get_mut("enum")
            && !values.contains(&Value::Null)
        {
            values.push(Value::Null);
        }
    }
    if out.contains_key("properties")
        && !out.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Removes `null` values of fields whose schema is not `nullable`, recursively, as the API
/// server does before defaulting and validation.
pub(crate) fn prune_nulls(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            map.retain(|k, v| {
                let field_schema = props.and_then(|p| p.get(k)).or(additional);
                match field_schema {
                    Some(s) if v.is_null() => {
                        s.get("nullable").and_then(Value::as_bool) == Some(true)
                    }
                    _ => true,
                }
            });
            for (k, v) in map.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    prune_nulls(v, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    prune_nulls(item, s);
                }
            }
        }
        _ => {}
    }
}

/// The candidate closest to `name`, if close enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn expected_types(types: Option<&Value>) -> String {
    let names: Vec<&str> = match types {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let described: Vec<&str> = names
        .iter()
        .map(|t| match *t {
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "a boolean (true or false)",
            "object" => "a mapping",
            "array" => "a list",
            "null" => "null",
            other => other,
        })
        .collect();
    if described.is_empty() {
        "another type".into()
    } else {
        described.join(" or ")
    }
}

/// The type of a value, with the value when it is a short scalar.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => format!("the boolean {v}"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("the integer {n}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => format!("the string {}", describe_value(v)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A scalar as it would be written, shortened.
fn describe_value(v: &Value) -> String {
    const MAX: usize = 60;
    match v {
        Value::String(s) if s.chars().count() > MAX => {
            format!(
                "{:?}",
                format!("{}…", s.chars().take(MAX).collect::<String>())
            )
        }
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A schema bound as written by people: `7`, not `7.0`.
fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(schema: Value, mut value: Value) -> Vec<Issue> {
        SchemaCheck::new(&schema).unwrap().check(&mut value)
    }

    fn spec_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["region"],
                    "properties": {
                        "region": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                        "alias": {"type": "string", "nullable": true, "maxLength": 10},
                        "days": {"type": "integer", "minimum": 7},
                        "spec": {"type": "string", "enum": ["RSA_2048", "RSA_4096"]},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "properties": {"a": {"type": "string"}}}
                    }
                }
            }
        })
    }

    #[test]
    fn nullable_fields_accept_null_and_other_nulls_are_pruned() {
        assert_eq!(
            check(
                spec_schema(),
                json!({"spec": {"region": "a", "alias": null, "days": null}})
            ),
            vec![]
        );
        // A pruned required field is then missing, as on the API server.
        let issues = check(spec_schema(), json!({"spec": {"region": null}}));
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].pointer, "/spec/region");
        assert_eq!(issues[0].reason, "FieldValueRequired");
    }

    #[test]
    fn unknown_fields_are_reported_with_a_suggestion_except_where_preserved() {
        let issues = check(
            spec_schema(),
            json!({"spec": {"region": "a", "regoin": "b", "tags": {"x": "y"}, "free": {"z": 1}},
                   "extra": 1, "metadata": {"name": "n", "namepsace": "x"}}),
        );
        let mut got: Vec<(String, String)> = issues
            .iter()
            .map(|i| (i.pointer.clone(), i.message.clone()))
            .collect();
        got.sort();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "/extra");
        assert_eq!(got[1].0, "/metadata/namepsace");
        assert!(
            got[1].1.contains("did you mean \"namespace\"?"),
            "{}",
            got[1].1
        );
        assert_eq!(got[2].0, "/spec/regoin");
        assert!(
            got[2].1.contains("did you mean \"region\"?"),
            "{}",
            got[2].1
        );
    }

    #[test]
    fn messages_name_the_limit_and_the_value() {
        let issues = check(
            spec_schema(),
            json!({"spec": {"region": "EU", "alias": "a-very-long-alias", "days": 3,
                             "spec": "RSA_2049", "tags": {"a": 1}}}),
        );
        let by_ptr = |p: &str| {
            issues
                .iter()
                .find(|i| i.pointer == p)
                .map(|i| i.message.clone())
                .unwrap_or_else(|| panic!("no issue at {p}: {issues:?}"))
        };
        assert_eq!(
            by_ptr("/spec/region"),
            "\"EU\" does not match the pattern ^[a-z0-9-]+$"
        );
        assert_eq!(
            by_ptr("/spec/alias"),
            "must be at most 10 characters long, got 17"
        );
        assert_eq!(by_ptr("/spec/days"), "must be at least 7, got 3");
        assert_eq!(
            by_ptr("/spec/spec"),
            "unsupported value \"RSA_2049\" (did you mean RSA_2048?); supported values: RSA_2048, RSA_4096"
        );
        assert_eq!(
            by_ptr("/spec/tags/a"),
            "must be a string, got the integer 1"
        );
    }
}
