//! YAML with positions: a multi-document stream → JSON values plus the source line of every node.
//!
//! Parsing is saphyr's (a YAML 1.2 loader that keeps spans); this module only converts its
//! `MarkedYaml` tree into `serde_json::Value` (what the schema, CEL and serde checks take) and
//! records, per JSON pointer, the line where that field (its key) or list item starts.
//!
//! Kubernetes reads YAML through `sigs.k8s.io/yaml` (YAML 1.1 scalars), so plain `yes`/`no`/
//! `on`/`off` (and `y`/`n`) are booleans there; they are resolved the same way here, or a
//! manifest kubectl accepts would be reported as a type error.

use std::collections::HashMap;
use std::sync::Arc;

use std::borrow::Cow;

use saphyr::{MarkedYaml, Scalar, ScalarStyle, ScanError, Tag, YamlData, YamlLoader};
use saphyr_parser::Parser;
use serde_json::{Map, Number, Value};

use crate::manifest::{InputError, Source};

/// Source lines by JSON pointer (`""` is the document root, `/spec/keyUsage` a field).
#[derive(Debug, Default)]
pub(crate) struct Lines(HashMap<String, usize>);

impl Lines {
    fn insert(&mut self, pointer: &str, line: usize) {
        self.0.insert(pointer.to_string(), line);
    }
}

/// One YAML document (or one item of a `kind: List` document).
#[derive(Debug, Clone)]
pub(crate) struct Document {
    /// Index of the source in the run's list of sources.
    pub source: usize,
    pub value: Value,
    lines: Arc<Lines>,
    /// Pointer of this document's root inside `lines` (non-empty for `List` items).
    base: String,
}

impl Document {
    /// Line of the document's root node.
    pub fn start_line(&self) -> usize {
        self.line_of("")
    }

    /// Line of the node at `pointer` (relative to this document); for a node that is not in the
    /// source (a missing field) the line of its nearest present ancestor.
    pub fn line_of(&self, pointer: &str) -> usize {
        let mut p = format!("{}{}", self.base, pointer);
        loop {
            if let Some(line) = self.lines.0.get(&p) {
                return *line;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return 1,
            }
        }
    }

    /// A document for one item of this (List) document's `items`.
    pub fn item(&self, index: usize, value: Value) -> Document {
        Document {
            source: self.source,
            value,
            lines: Arc::clone(&self.lines),
            base: format!("{}/items/{index}", self.base),
        }
    }
}

/// Parses every document of `source`. Empty documents are skipped.
pub(crate) fn load(index: usize, source: &Source) -> Result<Vec<Document>, InputError> {
    let syntax_error = |e: &ScanError| InputError {
        file: source.name.clone(),
        line: Some(e.marker().line()),
        column: Some(e.marker().col() + 1),
        message: format!("YAML syntax error: {}", e.info()),
    };
    let mut parser = Parser::new_from_str(&source.text);
    let mut loader = YamlLoader::<MarkedYaml<'_>>::default();
    // Scalars are resolved here (see `scalar`), which needs their style and tag.
    loader.early_parse(false);
    parser
        .load(&mut loader, true)
        .map_err(|e| syntax_error(&e))?;
    if let Some(e) = loader.error() {
        return Err(syntax_error(e));
    }
    let docs = loader.into_documents();
    let mut out = Vec::with_capacity(docs.len());
    for doc in &docs {
        if matches!(doc.data, YamlData::BadValue) {
            continue; // an empty document (`---` followed by nothing)
        }
        let mut lines = Lines::default();
        let value =
            convert(doc, String::new(), &mut lines).map_err(|(line, message)| InputError {
                file: source.name.clone(),
                line: Some(line),
                column: None,
                message,
            })?;
        if value.is_null() {
            continue; // a document holding only comments or `~`
        }
        out.push(Document {
            source: index,
            value,
            lines: Arc::new(lines),
            base: String::new(),
        });
    }
    Ok(out)
}

type ConvertError = (usize, String);

fn convert(
    node: &MarkedYaml<'_>,
    pointer: String,
    lines: &mut Lines,
) -> Result<Value, ConvertError> {
    let line = node.span.start.line();
    lines.insert(&pointer, line);
    Ok(match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, style, tag) => scalar(text, *style, tag.as_ref())
            .ok_or_else(|| {
                // The value itself is not quoted: it may be key material.
                let tag = match tag {
                    Some(t) if t.is_yaml_core_schema() => format!("!!{}", t.suffix),
                    Some(t) => format!("{}{}", t.handle, t.suffix),
                    None => String::new(),
                };
                (line, format!("the value does not fit its YAML tag {tag}"))
            })?,
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(item, format!("{pointer}/{i}"), lines)?);
            }
            Value::Array(out)
        }
        YamlData::Mapping(map) => {
            let mut out = Map::with_capacity(map.len());
            // YAML 1.1 merge keys (`<<: *defaults`), which Kubernetes' YAML reader honours:
            // merged entries first, so the mapping's own keys override them (values and lines).
            for (key, value) in map.iter().filter(|(k, _)| is_merge_key(k)) {
                let sources = match &value.data {
                    YamlData::Sequence(items) => items.iter().collect(),
                    _ => vec![value],
                };
                for source in sources {
                    match convert(source, pointer.clone(), lines)? {
                        Value::Object(entries) => out.extend(entries),
                        _ => {
                            return Err((
                                key.span.start.line(),
                                "a merge key (<<) takes a mapping or a list of mappings".into(),
                            ));
                        }
                    }
                }
            }
            for (key, value) in map.iter().filter(|(k, _)| !is_merge_key(k)) {
                let name = key_string(key).ok_or_else(|| {
                    (
                        key.span.start.line(),
                        "a mapping key must be a string, number or boolean, not a list or mapping"
                            .to_string(),
                    )
                })?;
                let child = format!("{pointer}/{}", escape(&name));
                let converted = convert(value, child.clone(), lines)?;
                // The field's line is where its key is, not where a nested value starts.
                lines.insert(&child, key.span.start.line());
                out.insert(name, converted);
            }
            lines.insert(&pointer, line);
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => convert(inner, pointer, lines)?,
        YamlData::Alias(_) | YamlData::BadValue => {
            // The loader expands aliases; what is left is a value it could not represent (an
            // invalid tagged scalar such as `!!int abc`).
            return Err((
                line,
                "a value that cannot be read (invalid tagged scalar or alias)".into(),
            ));
        }
    })
}

/// Resolves a scalar the way Kubernetes reads it: quoted → string; plain → YAML 1.1 boolean
/// words, else the YAML 1.2 core schema (null, bool, int, float, string); tagged → per tag.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Cow<'_, Tag>>) -> Option<Value> {
    if style == ScalarStyle::Plain
        && tag.is_none()
        && let Some(b) = yaml11_bool(text)
    {
        return Some(Value::Bool(b));
    }
    Scalar::parse_from_cow_and_metadata(Cow::Borrowed(text), style, tag).map(|s| scalar_value(&s))
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            // JSON has no NaN or infinity; keep the text so the schema reports a type error.
            .unwrap_or_else(|| Value::String(f.to_string())),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

/// The YAML 1.1 booleans Kubernetes' YAML reader accepts besides `true`/`false`.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn is_merge_key(key: &MarkedYaml<'_>) -> bool {
    matches!(&key.data, YamlData::Representation(text, ScalarStyle::Plain, None) if text == "<<")
}

/// A mapping key as JSON object key (Kubernetes turns scalar keys into strings); `None` for
/// collection keys.
fn key_string(key: &MarkedYaml<'_>) -> Option<String> {
    match &key.data {
        YamlData::Representation(text, _, _) => Some(text.to_string()),
        YamlData::Value(v) => Some(match scalar_value(v) {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        YamlData::Tagged(_, inner) => key_string(inner),
        _ => None,
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub(crate) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load_str(text: &str) -> Vec<Document> {
        load(0, &Source::new("t.yaml", text)).unwrap()
    }

    #[test]
    fn documents_values_and_lines() {
        let docs = load_str(
            "# comment\n---\napiVersion: v1\nkind: X\nspec:\n  list:\n    - a\n    - b: 1\n  block: |\n    text\n---\n---\n# only a comment\n---\nkind: Y\n",
        );
        assert_eq!(
            docs.len(),
            2,
            "empty and comment-only documents are skipped"
        );
        let d = &docs[0];
        assert_eq!(
            d.value,
            json!({"apiVersion": "v1", "kind": "X", "spec": {"list": ["a", {"b": 1}], "block": "text\n"}})
        );
        assert_eq!(d.start_line(), 3);
        assert_eq!(d.line_of("/spec"), 5);
        assert_eq!(d.line_of("/spec/list/1/b"), 8);
        assert_eq!(d.line_of("/spec/block"), 9);
        assert_eq!(
            d.line_of("/spec/missing/deeper"),
            5,
            "nearest present ancestor"
        );
        assert_eq!(docs[1].start_line(), 15);
    }

    #[test]
    fn scalars_resolve_as_kubernetes_reads_them() {
        let d = &load_str(
            "a: yes\nb: \"yes\"\nc: off\nd: 10\ne: 1.5\nf: ~\ng: 0x1f\nh: '30'\ni: !!str 30\nj:\n",
        )[0];
        assert_eq!(
            d.value,
            json!({"a": true, "b": "yes", "c": false, "d": 10, "e": 1.5, "f": null,
                   "g": 31, "h": "30", "i": "30", "j": null})
        );
    }

    #[test]
    fn merge_keys_are_honoured_and_own_keys_win() {
        let d = &load_str(
            "defaults: &d\n  region: eu-west-1\n  keySpec: HMAC_256\nspec:\n  <<: *d\n  keySpec: HMAC_512\n",
        )[0];
        assert_eq!(
            d.value["spec"],
            json!({"region": "eu-west-1", "keySpec": "HMAC_512"})
        );
        assert_eq!(d.line_of("/spec/keySpec"), 6);
    }

    #[test]
    fn list_items_keep_their_lines() {
        let docs = load_str("kind: List\nitems:\n  - kind: A\n    spec:\n      x: 1\n");
        let item = docs[0].item(0, docs[0].value["items"][0].clone());
        assert_eq!(item.start_line(), 3);
        assert_eq!(item.line_of("/spec/x"), 5);
    }

    #[test]
    fn a_value_that_does_not_fit_its_tag_is_an_input_error_without_the_value() {
        let e = load(0, &Source::new("t.yaml", "a: 1\nb: !!int s3cr3t\n")).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.message.starts_with("the value does not fit its YAML tag"),
            "{e}"
        );
        assert!(!e.message.contains("s3cr3t"));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = load(0, &Source::new("t.yaml", "a: 1\nb: [1, 2\nc: 3\n")).unwrap_err();
        assert_eq!(e.file, "t.yaml");
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
        assert!(e.message.starts_with("YAML syntax error: "), "{e}");
    }
}
