//! `AwsKeyPolicyTemplate` checks: CEL rules and the template's own document or shortcuts; with the rest of the input, the keys that use it.
//!
//! The checks call the controller's own code ([`desired::template_errors`],
//! [`desired::desired_policy`]), so a finding here is a refusal the operator would make.

use std::collections::HashMap;

use super::finding::{Check, Finding};
use super::kind::{Bundle, Kind, KindContext, Typed, report};
use super::object::{Object, ObjectFindings};
use crate::api::{AwsKeyPolicyTemplate, KeyPolicy};
use crate::desired;

impl Kind for AwsKeyPolicyTemplate {
    fn into_typed(self) -> Typed {
        Typed::AwsKeyPolicyTemplate(Box::new(self))
    }

    fn check(&self, object: &Object, out: &mut ObjectFindings<'_>, _ctx: &KindContext<'_>) {
        report(out, desired::template_errors(object.name(), &self.spec));
    }

    /// A key whose `templateRef` names a template of the input: its policy rendered with it (the
    /// users statement depends on the key's usage). A template missing from the input is reported
    /// only with `--require-refs`.
    fn check_bundle(bundle: &Bundle<'_>, findings: &mut Vec<Finding>) {
        let mut templates: HashMap<&str, &AwsKeyPolicyTemplate> = HashMap::new();
        let mut keys = Vec::new();
        for (object, typed) in bundle.typed() {
            match typed {
                Typed::AwsKeyPolicyTemplate(t) => {
                    templates.insert(object.name(), t);
                }
                Typed::AwsKey(key) => keys.push((
                    object,
                    key.spec.policy.as_ref(),
                    key.spec.key_spec,
                    key.spec.key_usage,
                )),
                Typed::AwsReplicaKey(_) | Typed::AwsKms(_) | Typed::Pkcs11Token(_) => {}
            }
        }
        for (object, policy, key_spec, usage) in keys {
            let Some(name) = template_name(policy) else {
                continue;
            };
            let mut out = bundle.findings_for(object);
            match templates.get(name) {
                Some(template) => {
                    let usage = usage
                        .or(key_spec.default_usage())
                        .unwrap_or(crate::api::KeyUsage::EncryptDecrypt);
                    if let Err(e) = desired::desired_policy(policy, Some(template), key_spec, usage)
                        && e.reason != "PolicyTemplateInvalid"
                    {
                        out.add_at_path(Check::Reference, e.field, e.reason, e.message);
                    }
                }
                None if bundle.options.require_refs => out.add_at(
                    Check::Reference,
                    "/spec/policy/templateRef/name",
                    "PolicyTemplateNotFound",
                    format!(
                        "AwsKeyPolicyTemplate {name} is not in the validated manifests (--require-refs)"
                    ),
                ),
                None => {}
            }
            findings.extend(out.finish());
        }
    }
}

fn template_name(policy: Option<&KeyPolicy>) -> Option<&str> {
    policy?.template_name()
}
