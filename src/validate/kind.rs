//! The contract between the engine and each kind's checks: what a kind supplies
//! ([`KindDef`]), what its checks get ([`KindContext`], [`Bundle`]) and the typed objects they
//! share ([`Typed`]). Per-kind files depend on this file; it depends on none of them.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cel::CelRules;
use super::finding::{Check, Finding};
use super::object::{Object, ObjectFindings};
use super::options::Options;
use super::secret::SecretDoc;
use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey};
use crate::manifest::Source;

/// A kind's checks.
pub(crate) struct KindDef {
    pub kind: &'static str,
    /// Checks one object whose schema check has run (`value`: the object with nulls pruned);
    /// returns its typed form when it can be read, for the bundle-wide checks.
    pub check_object:
        fn(&Object, &Value, &mut ObjectFindings<'_>, &KindContext<'_>) -> Option<Typed>,
    /// Checks that need the other objects of the input; runs once per run.
    pub check_bundle: fn(&Bundle<'_>, &mut Vec<Finding>),
}

/// What a kind's per-object check gets besides the object.
pub(crate) struct KindContext<'a> {
    pub options: &'a Options,
    /// The kind's CEL rules, compiled once.
    pub cel: &'a CelRules,
}

/// An object read into its Rust type.
// The variants are named after the kinds, which all start with `Aws`.
#[allow(clippy::enum_variant_names)]
pub(crate) enum Typed {
    AwsKey(Box<AwsKey>),
    AwsKms(Box<AwsKms>),
    AwsReplicaKey(Box<AwsReplicaKey>),
    AwsKeyPolicyTemplate(Box<AwsKeyPolicyTemplate>),
}

/// Reads the object into its type. A failure after schema findings is expected (they explain
/// it); one without is reported, as the controller could not read the object either.
pub(crate) fn read<T: DeserializeOwned>(value: &Value, out: &mut ObjectFindings<'_>) -> Option<T> {
    match serde_json::from_value::<T>(value.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            if !out.has_schema_findings() {
                out.add_at(
                    Check::Schema,
                    "",
                    "Undecodable",
                    format!("keyfleet cannot read this object: {e}"),
                );
            }
            None
        }
    }
}

/// Every object and Secret of a run, after the per-object checks.
pub(crate) struct Bundle<'a> {
    pub sources: &'a [Source],
    pub options: &'a Options,
    pub objects: Vec<Checked>,
    pub secrets: Vec<SecretDoc>,
}

/// An object of a keyfleet kind, with its typed form when it could be read.
pub(crate) struct Checked {
    pub object: Object,
    pub typed: Option<Typed>,
}

impl Bundle<'_> {
    /// Every object that could be read into its type.
    pub fn typed(&self) -> impl Iterator<Item = (&Object, &Typed)> {
        self.objects
            .iter()
            .filter_map(|c| c.typed.as_ref().map(|t| (&c.object, t)))
    }

    /// Where an object starts, as `file:line`.
    pub fn location(&self, object: &Object) -> String {
        format!(
            "{}:{}",
            self.sources
                .get(object.doc.source)
                .map(|s| s.name.as_str())
                .unwrap_or_default(),
            object.doc.start_line()
        )
    }

    /// A finding collector for `object`.
    pub fn findings_for<'b>(&'b self, object: &'b Object) -> ObjectFindings<'b> {
        ObjectFindings::new(object, self.sources)
    }
}
