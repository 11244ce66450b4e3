//! `AwsReplicaKey` checks: CEL rules, the replica's own settings, and — with the rest of the
//! input — its primary (present in the same namespace, multi-region, in another region, its
//! connection allowing the replica's region).
//!
//! The checks call the controller's own code ([`desired::replica_spec_errors`],
//! [`desired::replica_relation`]), so a finding here is a refusal the operator would make.

use std::collections::HashMap;

use super::finding::{Check, Finding};
use super::kind::{Bundle, Kind, KindContext, Typed, report};
use super::object::{Object, ObjectFindings};
use crate::api::{AwsKey, AwsKms, AwsReplicaKey};
use crate::desired;

impl Kind for AwsReplicaKey {
    fn into_typed(self) -> Typed {
        Typed::AwsReplicaKey(Box::new(self))
    }

    fn check(&self, _object: &Object, out: &mut ObjectFindings<'_>, _ctx: &KindContext<'_>) {
        report(out, desired::replica_spec_errors(&self.spec));
    }

    fn check_bundle(bundle: &Bundle<'_>, findings: &mut Vec<Finding>) {
        let mut keys: Vec<(&Object, &AwsKey)> = Vec::new();
        let mut kmses: HashMap<&str, &AwsKms> = HashMap::new();
        let mut replicas: Vec<(&Object, &AwsReplicaKey)> = Vec::new();
        for (object, typed) in bundle.typed() {
            match typed {
                Typed::AwsKey(key) => keys.push((object, key)),
                Typed::AwsKms(kms) => {
                    kmses.insert(object.name(), kms);
                }
                Typed::AwsReplicaKey(replica) => replicas.push((object, replica)),
                Typed::AwsKeyPolicyTemplate(_) | Typed::Pkcs11Token(_) => {}
            }
        }
        for (object, replica) in replicas {
            let mut out = bundle.findings_for(object);
            let name = &replica.spec.primary_key_ref.name;
            let same_namespace = keys
                .iter()
                .rev()
                .find(|(o, _)| o.name() == name && o.namespace() == object.namespace());
            match same_namespace {
                Some((_, primary)) => {
                    if let Err(e) = desired::replica_relation(&replica.spec, &primary.spec) {
                        out.add_at_path(Check::Reference, e.field, e.reason, e.message);
                    } else if let Some(kms_ref) = &primary.spec.kms_ref
                        && let Some(kms) = kmses.get(kms_ref.name.as_str())
                        && !kms.spec.allows_region(&replica.spec.region)
                    {
                        out.add_at(
                            Check::Reference,
                            "/spec/region",
                            "RegionNotAllowed",
                            format!(
                                "region {} is not allowed by AwsKms/{} (the primary's connection; allowed: {})",
                                replica.spec.region,
                                kms_ref.name,
                                kms.spec.regions.join(", ")
                            ),
                        );
                    }
                }
                None => {
                    let elsewhere: Vec<&str> = keys
                        .iter()
                        .filter(|(o, _)| o.name() == name)
                        .map(|(o, _)| o.namespace())
                        .collect();
                    if !elsewhere.is_empty() {
                        out.add_at(
                            Check::Reference,
                            "/spec/primaryKeyRef/name",
                            "PrimaryNotReady",
                            format!(
                                "AwsKey {name:?} is in namespace {}, not in {}: a replica's primary must be in its own namespace",
                                elsewhere.join(", "),
                                object.namespace()
                            ),
                        );
                    } else if bundle.options.require_refs {
                        out.add_at(
                            Check::Reference,
                            "/spec/primaryKeyRef/name",
                            "PrimaryNotReady",
                            format!(
                                "AwsKey {}/{name} is not in the validated manifests (--require-refs)",
                                object.namespace()
                            ),
                        );
                    }
                }
            }
            findings.extend(out.finish());
        }
    }
}
