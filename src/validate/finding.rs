//! What `keyfleet validate` reports: findings (one per problem, with file and line) and a summary.
//!
//! Text form of a finding: `file:line: Kind/namespace/name: field: message` (cluster-scoped
//! objects: `Kind/name`). The JSON form carries the same fields plus `check` and `reason`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::manifest::InputError;

/// Which stage found the problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    /// The CRD's openAPIV3Schema (types, required, enum, pattern, bounds, unknown fields) and
    /// the object metadata the API server checks (name, namespace).
    Schema,
    /// The CRD's CEL rules (`x-kubernetes-validations`), evaluated locally.
    Cel,
    /// keyfleet's own validation of the spec (what the controller refuses with `Ready=False`).
    Semantic,
    /// Key material in a referenced Secret of the bundle, checked against the key spec.
    Material,
    /// Relations between objects: references, duplicate aliases, duplicate objects.
    Reference,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Schema => "schema",
            Check::Cel => "cel",
            Check::Semantic => "semantic",
            Check::Material => "material",
            Check::Reference => "reference",
        }
    }
}

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub kind: String,
    /// `None` for cluster-scoped kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// One problem in one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// File as given on the command line (or below a given directory); `<stdin>` for stdin.
    pub file: String,
    /// 1-based line of the offending field when known, else of the object's first line.
    pub line: usize,
    #[serde(flatten)]
    pub object: ObjectRef,
    /// Path of the offending field, e.g. `spec.keyUsage`, `spec.tags[team]`, `data[tls.key]`.
    pub field: String,
    pub message: String,
    pub check: Check,
    /// A stable CamelCase reason: the controller's `Ready=False` reason where there is one
    /// (`InvalidKeyUsage`, `MaterialWrongLength`, ...), else a Kubernetes field error type
    /// (`FieldValueRequired`, `FieldValueInvalid`, ...) or a validate-only reason.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}: {}",
            self.file, self.line, self.object, self.field, self.message
        )
    }
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Files (and stdin) read.
    pub files: usize,
    /// YAML documents read (items of `kind: List` count one each).
    pub documents: usize,
    /// keyfleet objects checked, by kind.
    pub objects: BTreeMap<String, usize>,
    /// Secrets in the input (those referenced by a key are checked).
    pub secrets: usize,
    pub findings: usize,
    /// Distinct objects with at least one finding.
    pub objects_with_findings: usize,
}

impl Summary {
    pub fn object_count(&self) -> usize {
        self.objects.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let objects = self.object_count();
        let kinds = if self.objects.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                self.objects
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if self.findings == 0 {
            write!(f, "no findings")?;
        } else {
            write!(
                f,
                "{} finding{} in {} object{}",
                self.findings,
                plural(self.findings),
                self.objects_with_findings,
                plural(self.objects_with_findings)
            )?;
        }
        write!(
            f,
            "; checked {objects} keyfleet object{}{kinds} in {} file{} ({} document{}, {} Secret{})",
            plural(objects),
            self.files,
            plural(self.files),
            self.documents,
            plural(self.documents),
            self.secrets,
            plural(self.secrets)
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The outcome of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Sorted by file (in input order), then line.
    pub findings: Vec<Finding>,
    /// Input that could not be validated; when present nothing was checked.
    pub input_errors: Vec<InputError>,
    pub summary: Summary,
}

impl Report {
    /// A report of input errors only.
    pub fn unusable(input_errors: Vec<InputError>) -> Self {
        Report {
            input_errors,
            ..Report::default()
        }
    }

    /// The process exit code: 0 clean, 1 findings, 2 unusable input.
    pub fn exit_code(&self) -> u8 {
        if !self.input_errors.is_empty() {
            2
        } else if !self.findings.is_empty() {
            1
        } else {
            0
        }
    }
}
