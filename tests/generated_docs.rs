//! Documents generated from the sources they describe, checked for drift:
//!
//! - `charts/keyfleet/README.md` from `charts/keyfleet/values.yaml` (the comment block right
//!   above each key is its description; every value must have one) and `Chart.yaml`;
//! - `docs/api-reference.md` from the CRDs under `crds/` (which tests/crds.rs keeps equal to the
//!   code): every field of every kind with its type, constraints, CEL rules and description.
//!
//! `KEYFLEET_BLESS=1 cargo test --test generated_docs` rewrites both; without it a difference
//! fails the test (CI runs it through `scripts/test`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `generated` with the checked-in file (or writes it under KEYFLEET_BLESS).
fn check_generated(relative: &str, generated: &str) {
    let path: PathBuf = root().join(relative);
    if std::env::var_os("KEYFLEET_BLESS").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != generated {
        let line = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
        panic!(
            "{relative} is out of date (first difference at line {}); regenerate it with \
             KEYFLEET_BLESS=1 cargo test --test generated_docs",
            line + 1
        );
    }
}

/// Markdown table cell text: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

// ---------------------------------------------------------------------------------------------
// Chart README

/// One key of values.yaml: its dotted path and the comment block right above it.
struct ValuesKey {
    path: String,
    comment: String,
}

/// The keys of values.yaml in file order, with their comments. A comment block belongs to the
/// key on the next line; a blank line in between detaches it (file headers, section notes).
fn values_keys(text: &str) -> Vec<ValuesKey> {
    let mut keys = vec![];
    let mut stack: Vec<(usize, String)> = vec![];
    let mut comment: Vec<String> = vec![];
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            comment.push(text.trim().to_string());
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            comment.clear();
            continue;
        };
        if trimmed.starts_with('-') || key.contains(' ') {
            comment.clear();
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        keys.push(ValuesKey {
            path: path.join("."),
            comment: comment.join(" "),
        });
        comment.clear();
    }
    keys
}

fn lookup<'a>(values: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(values, |v, k| &v[k])
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn chart_readme() -> String {
    let chart_dir = root().join("charts/keyfleet");
    let values_text = std::fs::read_to_string(chart_dir.join("values.yaml")).unwrap();
    let values: Value = serde_saphyr::from_str(&values_text).unwrap();
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir.join("Chart.yaml")).unwrap())
            .unwrap();
    let keys = values_keys(&values_text);

    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    writeln!(out, "# keyfleet Helm chart\n").unwrap();
    writeln!(
        out,
        "<!-- Generated from values.yaml and Chart.yaml by tests/generated_docs.rs; edit those, \
         then run KEYFLEET_BLESS=1 cargo test --test generated_docs. -->\n"
    )
    .unwrap();
    writeln!(out, "{}\n", s(&chart["description"]).trim()).unwrap();
    writeln!(
        out,
        "Chart version `{}`, keyfleet `{}`, Kubernetes `{}`. Source: {}\n",
        s(&chart["version"]),
        s(&chart["appVersion"]),
        s(&chart["kubeVersion"]),
        s(&chart["home"])
    )
    .unwrap();
    writeln!(
        out,
        "## Install\n\n    helm install keyfleet charts/keyfleet --namespace keyfleet-system --create-namespace\n\n\
         Then follow the notes helm prints. AWS credentials (IRSA, EKS Pod Identity, cross-account \
         roles): [docs/install-eks.md](../../docs/install-eks.md); upgrades, namespaced mode and \
         removal: [docs/install.md](../../docs/install.md); metrics, alerts and the dashboard: \
         [docs/metrics.md](../../docs/metrics.md).\n"
    )
    .unwrap();
    writeln!(
        out,
        "## Values\n\n`values.schema.json` rejects unknown keys and wrong types.\n\n\
         | Key | Type | Default | Description |\n|---|---|---|---|"
    )
    .unwrap();
    let mut undocumented = vec![];
    for key in &keys {
        let value = lookup(&values, &key.path);
        let prefix = format!("{}.", key.path);
        let documented_children = keys
            .iter()
            .any(|k| k.path.starts_with(&prefix) && !k.comment.is_empty());
        if value.is_object() && documented_children {
            // A section: its own comment (if any) introduces the documented keys below it.
            if !key.comment.is_empty() {
                writeln!(
                    out,
                    "| `{}` | object | | {} |",
                    key.path,
                    cell(&key.comment)
                )
                .unwrap();
            }
            continue;
        }
        if keys.iter().any(|k| {
            key.path.starts_with(&format!("{}.", k.path))
                && lookup(&values, &k.path).is_object()
                && !keys
                    .iter()
                    .any(|c| c.path.starts_with(&format!("{}.", k.path)) && !c.comment.is_empty())
        }) {
            // Inside an object documented as a whole (e.g. resources).
            continue;
        }
        if key.comment.is_empty() {
            undocumented.push(key.path.clone());
        }
        writeln!(
            out,
            "| `{}` | {} | `{}` | {} |",
            key.path,
            type_name(value),
            cell(&serde_json::to_string(value).unwrap()),
            cell(&key.comment)
        )
        .unwrap();
    }
    assert!(
        undocumented.is_empty(),
        "values.yaml keys without a comment above them: {undocumented:?}"
    );
    out
}

#[test]
fn chart_readme_is_generated_from_values_yaml() {
    let readme = chart_readme();
    // Every key of the schema's top level appears.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/keyfleet/values.schema.json")).unwrap(),
    )
    .unwrap();
    for key in schema["properties"].as_object().unwrap().keys() {
        if key != "global" {
            assert!(readme.contains(&format!("| `{key}")), "{key} missing");
        }
    }
    check_generated("charts/keyfleet/README.md", &readme);
}

#[test]
fn values_comments_are_read_from_the_line_above() {
    let keys = values_keys(
        "# header\n\n# The count.\ncount: 2\nimage:\n  # Where from.\n  repository: x\n  tag: \"\"\n# detached\n\nlist: []\n",
    );
    let got: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k.path.as_str(), k.comment.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("count", "The count."),
            ("image", ""),
            ("image.repository", "Where from."),
            ("image.tag", ""),
            ("list", "")
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// API reference

/// The type column: type, format, enum, bounds, pattern, default.
fn schema_type(s: &Value) -> String {
    let mut parts = vec![];
    let t = s["type"]
        .as_str()
        .unwrap_or(if s["x-kubernetes-int-or-string"] == true {
            "int-or-string"
        } else {
            "any"
        });
    match t {
        "array" => {
            let item = schema_type(&s["items"]);
            parts.push(format!("[]{}", item.split(';').next().unwrap_or("any")));
        }
        "object" if s["additionalProperties"].is_object() => {
            parts.push(format!(
                "map[string]{}",
                schema_type(&s["additionalProperties"])
                    .split(';')
                    .next()
                    .unwrap_or("any")
            ));
        }
        other => parts.push(other.to_string()),
    }
    if let Some(f) = s["format"].as_str() {
        parts.push(format!("format {f}"));
    }
    if let Some(e) = s["enum"].as_array() {
        let names: Vec<String> = e
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect();
        parts.push(format!("one of {}", names.join(", ")));
    }
    for (key, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(n) = s.get(key).filter(|v| !v.is_null()) {
            parts.push(format!("{label} {n}"));
        }
    }
    if let Some(p) = s["pattern"].as_str() {
        parts.push(format!("pattern `{p}`"));
    }
    if !s["default"].is_null() {
        parts.push(format!("default `{}`", s["default"]));
    }
    if let Some(kind) = s["x-kubernetes-list-type"].as_str() {
        parts.push(format!("list-type {kind}"));
    }
    parts.join("; ")
}

/// One row per field under `schema`, depth first, in the schema's (alphabetical) order.
fn field_rows(schema: &Value, path: &str, out: &mut String) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, sub) in props {
        let field = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let mut description = sub["description"].as_str().unwrap_or_default().to_string();
        let rules = sub["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .chain(sub["items"]["x-kubernetes-validations"].as_array())
            .flatten();
        for rule in rules {
            let message = rule["message"].as_str().unwrap_or_default();
            let _ = write!(description, " Rule: {message}.");
        }
        writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            cell(&schema_type(sub)),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            cell(&description)
        )
        .unwrap();
        if sub["type"] == "array" {
            field_rows(&sub["items"], &format!("{field}[]"), out);
        } else {
            field_rows(sub, &field, out);
        }
    }
}

fn api_reference() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let crds: Vec<Value> = files
        .iter()
        .map(|f| serde_saphyr::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    let mut out = String::from(
        "# API reference\n\n<!-- Generated from crds/*.yaml by tests/generated_docs.rs; edit the \
         Rust types under src/api/, regenerate the CRDs (KEYFLEET_UPDATE_CRDS=1 cargo test --test \
         crds), then run KEYFLEET_BLESS=1 cargo test --test generated_docs. -->\n\n\
         Every keyfleet kind, every field: type and constraints as the API server enforces them \
         (OpenAPI schema and CEL rules), and the description `kubectl explain` shows.\n\n",
    );
    for crd in &crds {
        let names = &crd["spec"]["names"];
        let kind = names["kind"].as_str().unwrap();
        let anchor = kind.to_lowercase();
        writeln!(out, "- [{kind}](#{anchor})").unwrap();
    }
    for crd in &crds {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let kind = names["kind"].as_str().unwrap();
        for version in spec["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            writeln!(out, "\n## {kind}\n").unwrap();
            writeln!(
                out,
                "`{}/{}`, {} (`{}`; short name {}; categories {}).\n",
                spec["group"].as_str().unwrap(),
                version["name"].as_str().unwrap(),
                if spec["scope"] == "Namespaced" {
                    "namespaced"
                } else {
                    "cluster-scoped"
                },
                names["plural"].as_str().unwrap(),
                code_list(&names["shortNames"]),
                code_list(&names["categories"]),
            )
            .unwrap();
            if let Some(d) = schema["description"].as_str() {
                writeln!(out, "{d}\n").unwrap();
            }
            if let Some(columns) = version["additionalPrinterColumns"].as_array() {
                let names: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        format!(
                            "{} (`{}`)",
                            c["name"].as_str().unwrap(),
                            c["jsonPath"].as_str().unwrap()
                        )
                    })
                    .collect();
                writeln!(out, "`kubectl get` columns: {}.\n", names.join(", ")).unwrap();
            }
            for part in ["spec", "status"] {
                let sub = &schema["properties"][part];
                if sub.is_null() {
                    continue;
                }
                writeln!(out, "### {kind} {part}\n").unwrap();
                let rules = sub["x-kubernetes-validations"].as_array();
                if let Some(rules) = rules {
                    for rule in rules {
                        writeln!(
                            out,
                            "- Rule: {}",
                            cell(rule["message"].as_str().unwrap_or_default())
                        )
                        .unwrap();
                    }
                    out.push('\n');
                }
                writeln!(
                    out,
                    "| Field | Type | Required | Description |\n|---|---|---|---|"
                )
                .unwrap();
                field_rows(sub, part, &mut out);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn api_reference_is_generated_from_the_crds() {
    let reference = api_reference();
    for kind in keyfleet::crds::all()
        .iter()
        .map(|c| c.spec.names.kind.clone())
    {
        assert!(
            reference.contains(&format!("\n## {kind}\n")),
            "{kind} missing"
        );
    }
    for field in [
        "`spec.keyMaterial.secretRef.name`",
        "`spec.region`",
        "`status.conditions`",
        "`spec.primaryKeyRef.name`",
        "`spec.roleArn`",
    ] {
        assert!(reference.contains(field), "{field} missing");
    }
    check_generated("docs/api-reference.md", &reference);
}

// ---------------------------------------------------------------------------------------------
// Links

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = vec![];
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link in the README, the top-level documents, docs/ and the chart README points
/// at a file that exists, and at a heading that exists when it names one; the README stays an
/// overview (under 15 KB).
#[test]
fn documentation_links_resolve() {
    let mut files: Vec<PathBuf> = ["README.md", "SECURITY.md", "CHANGELOG.md"]
        .iter()
        .map(|f| root().join(f))
        .collect();
    files.push(root().join("charts/keyfleet/README.md"));
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut broken = vec![];
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = file.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            let shown = format!("{}: {target}", file.strip_prefix(root()).unwrap().display());
            if !resolved.exists() {
                broken.push(format!("{shown} (no such file)"));
            } else if !anchor.is_empty() {
                let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&target_text).iter().any(|a| a == anchor) {
                    broken.push(format!("{shown} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 40, "only {checked} links found");
    let readme = std::fs::metadata(root().join("README.md")).unwrap().len();
    assert!(
        readme < 15 * 1024,
        "README.md is {readme} bytes; move detail to docs/"
    );
}

/// A list of names as inline code, comma-separated; `none` when there is no list.
fn code_list(names: &Value) -> String {
    names
        .as_array()
        .map(|n| {
            n.iter()
                .map(|s| format!("`{}`", s.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into())
}
