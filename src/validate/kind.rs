//! The contract between the engine and each kind's checks: what a kind supplies (a [`Kind`]
//! implementation, registered as a [`KindDef`]), what its checks get ([`KindContext`],
//! [`Bundle`]) and the typed objects they share ([`Typed`]). Per-kind files depend on this file;
//! it depends on none of them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cel::CelRules;
use super::finding::{Check, Finding};
use super::object::{Object, ObjectFindings};
use super::options::Options;
use super::secret::SecretDoc;
use kube::core::object::HasSpec;

use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, KindName, Pkcs11Token};
use crate::desired::SpecError;
use crate::manifest::Source;

/// What a kind of the `kms.keyfleet.dev` group checks beyond its schema and CEL rules.
pub(crate) trait Kind:
    HasSpec<Spec: KindName> + DeserializeOwned + Serialize + Sized
{
    /// The kind's name (`AwsKey`).
    const KIND: &'static str = <Self::Spec as KindName>::KIND;
    /// The object as the bundle-wide checks see it.
    fn into_typed(self) -> Typed;
    /// keyfleet's own checks of one object that could be read (the schema and CEL checks ran).
    fn check(&self, object: &Object, out: &mut ObjectFindings<'_>, ctx: &KindContext<'_>);
    /// Checks that need the other objects of the input; runs once per run.
    fn check_bundle(_bundle: &Bundle<'_>, _findings: &mut Vec<Finding>) {}
}

/// Reports refusals of keyfleet's own validation (the operator's `desired` step) as findings.
pub(crate) fn report(out: &mut ObjectFindings<'_>, refusals: impl IntoIterator<Item = SpecError>) {
    for e in refusals {
        out.add_at_path(Check::Semantic, e.field, e.reason, e.message);
    }
}

/// The per-object check of every kind: read the object into its type (reporting why it cannot
/// be), run the kind's CEL rules, then its own checks.
fn check_object<K: Kind>(
    object: &Object,
    value: &Value,
    out: &mut ObjectFindings<'_>,
    ctx: &KindContext<'_>,
) -> Option<Typed> {
    let typed: K = read(value, out)?;
    ctx.cel.check(&typed, out);
    typed.check(object, out, ctx);
    Some(typed.into_typed())
}

impl KindDef {
    /// The checks of the kind `K`.
    pub(crate) const fn of<K: Kind>() -> KindDef {
        KindDef {
            kind: K::KIND,
            check_object: check_object::<K>,
            check_bundle: K::check_bundle,
        }
    }
}

/// A kind's checks, as the engine runs them.
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
// The variants are named after the kinds.
pub(crate) enum Typed {
    AwsKey(Box<AwsKey>),
    AwsKms(Box<AwsKms>),
    AwsReplicaKey(Box<AwsReplicaKey>),
    AwsKeyPolicyTemplate(Box<AwsKeyPolicyTemplate>),
    Pkcs11Token(Box<Pkcs11Token>),
}

/// Reads the object into its type. A failure after schema findings is expected (they explain
/// it); one without is reported, as the controller could not read the object either.
fn read<T: DeserializeOwned>(value: &Value, out: &mut ObjectFindings<'_>) -> Option<T> {
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
