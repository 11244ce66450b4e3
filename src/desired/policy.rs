//! `spec.policy` → the desired policy: a raw document, a template's document or shortcuts,
//! rendered up to the key's identity (placeholders stay until KMS reports it).

use crate::api::{
    AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, KeyPolicy, KeyPolicyForm, KeySpec, KeyUsage,
};
use crate::policy::{self, DesiredPolicy, KeyIdentity};

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

/// A template's document, or its shortcuts rendered for a key of `usage`; the refusal names
/// the template (it is reported on the key).
fn template_document(
    name: &str,
    template: &AwsKeyPolicyTemplateSpec,
    usage: KeyUsage,
    symmetric: bool,
) -> Result<serde_json::Value, SpecError> {
    template_body(template, usage, symmetric).map_err(|e| SpecError {
        field: "spec.policy.templateRef",
        ..naming(name, e)
    })
}

/// A template's refusal as a key using it (or `keyfleet validate`) words it: naming the
/// template.
fn naming(name: &str, e: SpecError) -> SpecError {
    SpecError {
        message: format!("AwsKeyPolicyTemplate {name}: {}", e.message),
        ..e
    }
}

/// A template's document, or its shortcuts rendered for a key of `usage`; the refusal is the
/// template's own (`PolicyTemplateInvalid`, the template's field).
fn template_body(
    template: &AwsKeyPolicyTemplateSpec,
    usage: KeyUsage,
    symmetric: bool,
) -> Result<serde_json::Value, SpecError> {
    match (&template.document, template.shortcuts.is_empty()) {
        (Some(text), true) => policy::parse_document(text)
            .map_err(|e| refuse("PolicyTemplateInvalid", "spec.document", e.to_string())),
        (None, false) => policy::shortcuts::render(&template.shortcuts, usage, symmetric)
            .map_err(|e| refuse("PolicyTemplateInvalid", "spec", e.to_string())),
        _ => Err(refuse(
            "PolicyTemplateInvalid",
            "spec",
            "a template takes exactly one of: document, or the shortcuts",
        )),
    }
}

/// The key a template is rendered for when no key is at hand (its status, `keyfleet
/// validate`): the shape of a real key ARN, with the documentation's example ids.
pub fn sample_key() -> KeyIdentity {
    KeyIdentity::preview(
        "111122223333",
        "us-east-1",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
    )
}

/// A template on its own, rendered for [`sample_key`] (a symmetric encryption key): the policy
/// a key using it would get, or why it cannot be rendered (the template's field and the
/// problem, with reason `PolicyTemplateInvalid`).
pub fn render_template_sample(
    template: &AwsKeyPolicyTemplateSpec,
) -> Result<serde_json::Value, SpecError> {
    let body = template_body(template, KeyUsage::EncryptDecrypt, true)?;
    let key = sample_key();
    let rendered = policy::document::fill_placeholders(&body, &key);
    let bytes = rendered.to_string().len();
    if bytes > policy::MAX_POLICY_BYTES {
        return Err(refuse(
            "PolicyTemplateInvalid",
            if template.document.is_some() {
                "spec.document"
            } else {
                "spec"
            },
            format!(
                "rendered for a key such as {}, the policy is {bytes} bytes; KMS accepts at most {}",
                key.key_arn,
                policy::MAX_POLICY_BYTES
            ),
        ));
    }
    Ok(rendered)
}

/// Every refusal of an `AwsKeyPolicyTemplate` on its own (for any key usage), worded as the
/// keys using it report it.
pub fn template_errors(name: &str, template: &AwsKeyPolicyTemplateSpec) -> Vec<SpecError> {
    render_template_sample(template)
        .err()
        .map(|e| naming(name, e))
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
