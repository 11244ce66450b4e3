//! Per-kind dispatch: which checks run for which kind of the `kms.keyfleet.dev` group.
//!
//! A kind contributes a [`KindDef`]: its per-object checks (after the generic schema check:
//! typed read, CEL, keyfleet's semantic validation) and its bundle-wide checks (references and
//! conflicts with other objects). A new kind gets a file, a [`Typed`] variant and an entry in
//! [`KINDS`]; until then it gets the generic checks (schema and CEL), and the test below fails.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cel::CelRules;
use super::finding::{Check, Finding, ObjectRef};
use super::object::{Object, ObjectFindings, UNNAMED};
use super::{
    Bundle, Options, aws_key, aws_key_policy_template, aws_kms, aws_replica_key, pkcs11_token,
};
use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, Pkcs11Token};

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

/// Every kind `keyfleet validate` knows.
pub(crate) static KINDS: [KindDef; 5] = [
    aws_kms::KIND,
    aws_key_policy_template::KIND,
    aws_key::KIND,
    aws_replica_key::KIND,
    pkcs11_token::KIND,
];

/// An object read into its Rust type.
// The variants are named after the kinds.
#[allow(clippy::enum_variant_names)]
pub(crate) enum Typed {
    AwsKey(Box<AwsKey>),
    AwsKms(Box<AwsKms>),
    AwsReplicaKey(Box<AwsReplicaKey>),
    AwsKeyPolicyTemplate(Box<AwsKeyPolicyTemplate>),
    Pkcs11Token(Box<Pkcs11Token>),
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

/// The same object (kind, namespace, name) twice in the input: applying both, the later one
/// silently replaces the earlier.
pub(crate) fn check_duplicates(bundle: &Bundle<'_>, findings: &mut Vec<Finding>) {
    let mut first: HashMap<&ObjectRef, &Object> = HashMap::new();
    for checked in &bundle.objects {
        let object = &checked.object;
        if object.name() == UNNAMED {
            continue;
        }
        match first.get(&object.id) {
            None => {
                first.insert(&object.id, object);
            }
            Some(earlier) => {
                let mut out = bundle.findings_for(object);
                out.add_at(
                    Check::Reference,
                    "/metadata/name",
                    "DuplicateObject",
                    format!(
                        "{} is defined twice (first at {}); when both are applied the later \
                         one replaces the earlier: keep one",
                        object.id,
                        bundle.location(earlier)
                    ),
                );
                findings.extend(out.finish());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_kind_has_its_checks() {
        for crd in crate::crds::all() {
            let kind = &crd.spec.names.kind;
            assert!(
                KINDS.iter().any(|d| d.kind == kind),
                "add a KindDef for {kind} to lint::kinds::KINDS"
            );
        }
        assert_eq!(KINDS.len(), crate::crds::all().len());
    }
}
