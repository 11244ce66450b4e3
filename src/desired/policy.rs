//! `spec.policy` → the desired policy: a raw document, a template's document or shortcuts,
//! rendered up to the key's identity (placeholders stay until KMS reports it).

use crate::api::{
    AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, KeyPolicy, KeyPolicyForm, KeySpec, KeyUsage,
};
use crate::policy::{self, DesiredPolicy};

use super::{SpecError, refuse};

/// The policy a key must have: `spec.policy` in any of its three forms, rendered up to the
/// key's identity (placeholders); `None` for the AWS default policy. `template` is the
/// `AwsKeyPolicyTemplate` named by `templateRef`, when it exists.
pub fn desired_policy(
    policy: Option<&KeyPolicy>,
    template: Option<&AwsKeyPolicyTemplate>,
    key_spec: KeySpec,
    usage: KeyUsage,
) -> Result<Option<DesiredPolicy>, SpecError> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    let symmetric = key_spec == KeySpec::SymmetricDefault;
    let document = match policy.form() {
        None => {
            return Err(refuse(
                "PolicyInvalid",
                "spec.policy",
                "policy takes exactly one of: document, templateRef, or the shortcuts (keyAdmins, keyAdminsRoles, keyUsers, keyUsersRoles, externalAccounts)",
            ));
        }
        Some(KeyPolicyForm::Document(text)) => policy::parse_document(text)
            .map_err(|e| refuse(e.reason(), "spec.policy.document", e.to_string()))?,
        Some(KeyPolicyForm::Shortcuts(shortcuts)) => {
            policy::shortcuts::render(shortcuts, usage, symmetric)
                .map_err(|e| refuse("PolicyPrincipalInvalid", "spec.policy", e.to_string()))?
        }
        Some(KeyPolicyForm::Template(name)) => {
            let Some(template) = template.filter(|t| t.metadata.name.as_deref() == Some(name))
            else {
                return Err(refuse(
                    "PolicyTemplateNotFound",
                    "spec.policy.templateRef",
                    format!(
                        "AwsKeyPolicyTemplate {name} does not exist; create it or change spec.policy"
                    ),
                ));
            };
            template_document(name, &template.spec, usage, symmetric)?
        }
    };
    Ok(Some(DesiredPolicy {
        document,
        template: policy.template_ref.as_ref().map(|t| t.name.clone()),
        keep_manageable_by: None,
    }))
}

/// A template's document, or its shortcuts rendered for a key of `usage`.
fn template_document(
    name: &str,
    template: &AwsKeyPolicyTemplateSpec,
    usage: KeyUsage,
    symmetric: bool,
) -> Result<serde_json::Value, SpecError> {
    let invalid = |message: String| {
        refuse(
            "PolicyTemplateInvalid",
            "spec.policy.templateRef",
            format!("AwsKeyPolicyTemplate {name}: {message}"),
        )
    };
    match (&template.document, template.shortcuts.is_empty()) {
        (Some(text), true) => policy::parse_document(text).map_err(|e| invalid(e.to_string())),
        (None, false) => policy::shortcuts::render(&template.shortcuts, usage, symmetric)
            .map_err(|e| invalid(e.to_string())),
        _ => Err(invalid(
            "a template takes exactly one of: document, or the shortcuts".into(),
        )),
    }
}

/// Every refusal of an `AwsKeyPolicyTemplate` on its own (for any key usage).
pub fn template_errors(name: &str, template: &AwsKeyPolicyTemplateSpec) -> Vec<SpecError> {
    template_document(name, template, KeyUsage::EncryptDecrypt, true)
        .err()
        .map(|e| SpecError {
            field: if template.document.is_some() && template.shortcuts.is_empty() {
                "spec.document"
            } else {
                "spec"
            },
            ..e
        })
        .into_iter()
        .collect()
}

/// The checks of [`desired_policy`] that need no template (`keyfleet validate`).
pub(super) fn check_policy(
    policy: Option<&KeyPolicy>,
    key_spec: KeySpec,
    usage: Option<KeyUsage>,
) -> Result<(), SpecError> {
    if policy.is_some_and(|p| matches!(p.form(), Some(KeyPolicyForm::Template(_)))) {
        return Ok(());
    }
    let usage = usage
        .or(key_spec.default_usage())
        .unwrap_or(KeyUsage::EncryptDecrypt);
    desired_policy(policy, None, key_spec, usage).map(|_| ())
}
