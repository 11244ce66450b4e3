//! Per-kind dispatch: which checks run for which kind of the `kms.keyfleet.dev` group, and the
//! checks across kinds (the same object twice).
//!
//! A kind contributes a [`Kind`](super::kind::Kind) implementation (see `kind.rs`): its per-object checks (after the generic
//! schema check: typed read, CEL, keyfleet's semantic validation) and its bundle-wide checks
//! (references and conflicts with other objects). A new kind gets a file, a [`Typed`](super::kind::Typed)
//! variant and an entry in [`KINDS`]; until then it gets the generic checks (schema and CEL),
//! and the test below fails.

use std::collections::HashMap;

use super::finding::{Check, Finding, ObjectRef};
use super::kind::{Bundle, KindDef};
use super::object::{Object, UNNAMED};
use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsKms, AwsReplicaKey, Pkcs11Token};

/// Every kind `keyfleet validate` knows.
pub(crate) static KINDS: [KindDef; 5] = [
    KindDef::of::<AwsKms>(),
    KindDef::of::<Pkcs11Token>(),
    KindDef::of::<AwsKeyPolicyTemplate>(),
    KindDef::of::<AwsKey>(),
    KindDef::of::<AwsReplicaKey>(),
];

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
                "add a KindDef for {kind} to validate::kinds::KINDS"
            );
        }
        assert_eq!(KINDS.len(), crate::crds::all().len());
    }
}
