//! `keyfleet render-policy`: the policy keyfleet would apply to each key of a set of manifests,
//! and its hash, printed as text or JSON. Rendering is the operator's own code
//! ([`crate::desired`], [`crate::policy`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use super::args::{OutputFormat, RenderPolicyArgs};
use crate::api::{AwsKey, AwsKeyPolicyTemplate, AwsReplicaKey};
use crate::desired;
use crate::policy::{KeyIdentity, hash};

/// `keyfleet render-policy`: reads manifests and prints each key's rendered policy and hash.
pub fn run(args: &RenderPolicyArgs) -> anyhow::Result<()> {
    let target = match (&args.key_arn, &args.account_id) {
        (Some(arn), _) => Target::Key(KeyIdentity::from_arn(arn).with_context(|| {
            format!("{arn} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")
        })?),
        (None, Some(account_id)) => Target::NewKey {
            account_id: account_id.clone(),
        },
        (None, None) => anyhow::bail!("give --account-id or --key-arn"),
    };
    let objects: Vec<serde_json::Value> = crate::manifest::read_manifests(&args.files)?
        .into_iter()
        .map(|m| m.value)
        .collect();
    let rendered = render(&objects, &target, &args.namespace);
    if rendered.is_empty() {
        anyhow::bail!("no AwsKey or AwsReplicaKey in the input");
    }
    let mut text = String::new();
    match args.output {
        OutputFormat::Json => writeln!(text, "{}", serde_json::to_string_pretty(&rendered)?)?,
        OutputFormat::Text => {
            for r in &rendered {
                write!(text, "# {} {}/{}", r.kind, r.namespace, r.name)?;
                if let Some(t) = &r.template {
                    write!(text, " (AwsKeyPolicyTemplate {t})")?;
                }
                match (&r.policy_hash, &r.policy, &r.note) {
                    (Some(hash), Some(policy), _) => {
                        writeln!(text, "\n# policyHash: {hash}")?;
                        writeln!(text, "{}", serde_json::to_string_pretty(policy)?)?;
                    }
                    (_, _, note) => writeln!(text, "\n# {}", note.as_deref().unwrap_or(""))?,
                }
            }
        }
    }
    // A closed pipe (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Which key identity to render for.
#[derive(Clone, Debug)]
pub enum Target {
    /// A key about to be created in this account (`${KeyId}` shows as `<new-key-id>`).
    NewKey { account_id: String },
    /// An existing key: the hash then equals its `status.policyHash`.
    Key(KeyIdentity),
}

/// One key's rendered policy, or why it has none.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `sha256:<hex>`; None when there is no policy to render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// Why nothing was rendered: the AWS default policy, or the refusal keyfleet would report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Renders the policy of every AwsKey and AwsReplicaKey in `objects` (parsed manifests), with the
/// AwsKeyPolicyTemplates among them. `default_namespace` is used for objects without one.
pub fn render(objects: &[Value], target: &Target, default_namespace: &str) -> Vec<Rendered> {
    let kind_of = |o: &Value| o["kind"].as_str().unwrap_or_default().to_string();
    let namespace_of = |o: &Value| {
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace)
            .to_string()
    };
    let templates: HashMap<String, AwsKeyPolicyTemplate> = objects
        .iter()
        .filter(|o| kind_of(o) == "AwsKeyPolicyTemplate")
        .filter_map(|o| serde_json::from_value::<AwsKeyPolicyTemplate>(o.clone()).ok())
        .map(|t| (t.metadata.name.clone().unwrap_or_default(), t))
        .collect();
    let keys: HashMap<(String, String), AwsKey> = objects
        .iter()
        .filter(|o| kind_of(o) == "AwsKey")
        .filter_map(|o| {
            let key = serde_json::from_value::<AwsKey>(o.clone()).ok()?;
            Some(((namespace_of(o), key.metadata.name.clone()?), key))
        })
        .collect();

    let mut out = Vec::new();
    for object in objects {
        let kind = match kind_of(object).as_str() {
            "AwsKey" => "AwsKey",
            "AwsReplicaKey" => "AwsReplicaKey",
            _ => continue,
        };
        let namespace = namespace_of(object);
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut rendered = Rendered {
            kind,
            namespace: namespace.clone(),
            name,
            template: None,
            policy_hash: None,
            policy: None,
            note: None,
        };
        let inputs = match kind {
            "AwsKey" => serde_json::from_value::<AwsKey>(object.clone())
                .map_err(|e| format!("not a readable AwsKey: {e}"))
                .map(|k| (k.spec.settings.policy, k.spec.key_spec, k.spec.key_usage, k.spec.settings.region)),
            _ => serde_json::from_value::<AwsReplicaKey>(object.clone())
                .map_err(|e| format!("not a readable AwsReplicaKey: {e}"))
                .and_then(|r| {
                    let primary = keys
                        .get(&(namespace.clone(), r.spec.primary_key_ref.name.clone()))
                        .ok_or_else(|| {
                            format!(
                                "its primary AwsKey {namespace}/{} is not in the input (the policy depends on its key usage)",
                                r.spec.primary_key_ref.name
                            )
                        })?;
                    Ok((
                        r.spec.settings.policy,
                        primary.spec.key_spec,
                        primary.spec.key_usage,
                        r.spec.settings.region,
                    ))
                }),
        };
        match inputs.and_then(|(policy, key_spec, usage, region)| {
            let usage = desired::key_usage(key_spec, usage).map_err(|e| e.to_string())?;
            let template = policy
                .as_ref()
                .and_then(|p| p.template_ref.as_ref())
                .and_then(|t| templates.get(&t.name));
            let desired = desired::desired_policy(policy.as_ref(), template, key_spec, usage)
                .map_err(|e| format!("{} ({})", e, e.reason))?;
            Ok((desired, region))
        }) {
            Err(note) => rendered.note = Some(note),
            Ok((None, _)) => {
                rendered.note = Some("no spec.policy: the AWS default key policy".into())
            }
            Ok((Some(desired), region)) => {
                let identity = match target {
                    Target::NewKey { account_id } => {
                        KeyIdentity::preview(account_id, &region, "<new-key-id>")
                    }
                    Target::Key(identity) => identity.clone(),
                };
                let policy = desired.render(&identity);
                rendered.policy_hash = Some(hash(&policy));
                rendered.policy = Some(policy);
                rendered.template = desired.template;
            }
        }
        out.push(rendered);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str, policy: Value) -> Value {
        json!({"apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsKey",
            "metadata": {"name": name, "namespace": "payments"},
            "spec": {"region": "eu-west-1", "keySpec": "HMAC_256", "multiRegion": true,
                "keyMaterial": {"secretRef": {"name": "m", "key": "k"}}, "policy": policy}})
    }

    #[test]
    fn keys_and_replicas_render_with_their_templates_and_usage() {
        let objects = vec![
            json!({"apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsKeyPolicyTemplate",
                "metadata": {"name": "std"}, "spec": {"keyUsersRoles": ["app"]}}),
            key("hmac", json!({"templateRef": {"name": "std"}})),
            json!({"apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsReplicaKey",
                "metadata": {"name": "hmac-dr", "namespace": "payments"},
                "spec": {"primaryKeyRef": {"name": "hmac"}, "region": "eu-central-1",
                    "policy": {"templateRef": {"name": "std"}}}}),
            json!({"apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsReplicaKey",
                "metadata": {"name": "orphan", "namespace": "payments"},
                "spec": {"primaryKeyRef": {"name": "elsewhere"}, "region": "eu-central-1"}}),
            key("missing", json!({"templateRef": {"name": "nope"}})),
        ];
        let out = render(
            &objects,
            &Target::NewKey {
                account_id: "111122223333".into(),
            },
            "default",
        );
        assert_eq!(out.len(), 4);
        let key = &out[0];
        assert_eq!((key.kind, key.name.as_str()), ("AwsKey", "hmac"));
        assert_eq!(key.template.as_deref(), Some("std"));
        let policy = key.policy.as_ref().unwrap().to_string();
        assert!(
            policy.contains("arn:aws:iam::111122223333:role/app"),
            "{policy}"
        );
        assert!(policy.contains("kms:GenerateMac"), "{policy}");
        assert_eq!(key.policy_hash, Some(hash(key.policy.as_ref().unwrap())));
        let replica = &out[1];
        assert_eq!(replica.kind, "AwsReplicaKey");
        assert!(
            replica
                .policy
                .as_ref()
                .unwrap()
                .to_string()
                .contains("kms:GenerateMac")
        );
        assert!(
            out[2]
                .note
                .as_ref()
                .unwrap()
                .contains("primary AwsKey payments/elsewhere is not in the input")
        );
        assert!(
            out[3]
                .note
                .as_ref()
                .unwrap()
                .contains("PolicyTemplateNotFound")
        );
    }

    #[test]
    fn an_existing_key_renders_with_its_own_arn() {
        let doc = json!({"Statement": [{"Effect": "Allow", "Resource": "${KeyArn}"}]}).to_string();
        let objects = vec![key("k", json!({"document": doc}))];
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1";
        let out = render(
            &objects,
            &Target::Key(KeyIdentity::from_arn(arn).unwrap()),
            "default",
        );
        assert_eq!(
            out[0].policy.as_ref().unwrap()["Statement"][0]["Resource"],
            arn
        );
    }
}
