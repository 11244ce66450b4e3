//! `spec.policy` of AwsKey and AwsReplicaKey: a document, a template reference or principal
//! shortcuts (the shortcuts are also the body of an AwsKeyPolicyTemplate).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::refs::LocalObjectRef;

/// Principal shortcuts (CCKM `key_admins`, `key_admins_roles`, `key_users`, `key_users_roles`,
/// `external_accounts`), rendered by keyfleet into a complete key policy: the account-root
/// statement, an administrators statement, a users statement with the cryptographic actions of
/// the key's usage, and the grant statement for AWS services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyShortcuts {
    /// IAM users who administer the key: user names (`alice`, rendered as
    /// `arn:aws:iam::<key account>:user/alice`) or user ARNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 50").message("at most 50 keyAdmins"))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[\\\\w+=,.@-]{1,64}$') || p.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:user/[\\\\w+=,.@/-]+$'))").message("keyAdmins entries must be IAM user names or user ARNs (arn:aws:iam::<12-digit account>:user/<name>)"))]
    pub key_admins: Vec<String>,
    /// IAM roles that administer the key: role names or role ARNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 50").message("at most 50 keyAdminsRoles"))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[\\\\w+=,.@-]{1,64}$') || p.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\\\\w+=,.@/-]+$'))").message("keyAdminsRoles entries must be IAM role names or role ARNs (arn:aws:iam::<12-digit account>:role/<name>)"))]
    pub key_admins_roles: Vec<String>,
    /// IAM users who use the key in cryptographic operations: user names or user ARNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 50").message("at most 50 keyUsers"))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[\\\\w+=,.@-]{1,64}$') || p.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:user/[\\\\w+=,.@/-]+$'))").message("keyUsers entries must be IAM user names or user ARNs (arn:aws:iam::<12-digit account>:user/<name>)"))]
    pub key_users: Vec<String>,
    /// IAM roles that use the key in cryptographic operations: role names or role ARNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 50").message("at most 50 keyUsersRoles"))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[\\\\w+=,.@-]{1,64}$') || p.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\\\\w+=,.@/-]+$'))").message("keyUsersRoles entries must be IAM role names or role ARNs (arn:aws:iam::<12-digit account>:role/<name>)"))]
    pub key_users_roles: Vec<String>,
    /// Other AWS accounts that may use the key: 12-digit account ids or
    /// `arn:aws:iam::<account>:root`. They join the users and grant statements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 50").message("at most 50 externalAccounts"))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[0-9]{12}$') || p.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:root$'))").message("externalAccounts entries must be 12-digit AWS account ids or arn:aws:iam::<account>:root"))]
    pub external_accounts: Vec<String>,
}

impl PolicyShortcuts {
    /// True when no shortcut is given.
    pub fn is_empty(&self) -> bool {
        self.key_admins.is_empty()
            && self.key_admins_roles.is_empty()
            && self.key_users.is_empty()
            && self.key_users_roles.is_empty()
            && self.external_accounts.is_empty()
    }
}

/// CEL: true when any shortcut field is present.
pub(crate) const HAS_SHORTCUTS: &str = "(has(self.keyAdmins) || has(self.keyAdminsRoles) || has(self.keyUsers) || has(self.keyUsersRoles) || has(self.externalAccounts))";

/// The key policy (CCKM `Policy`, `policytemplate` or the principal shortcuts): exactly one of
/// a raw `document`, a `templateRef`, or the shortcuts. Leave `policy` unset to keep the AWS
/// default key policy.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("[has(self.document), has(self.templateRef), {HAS_SHORTCUTS}].filter(x, x).size() == 1")).message("policy takes exactly one of: document, templateRef, or the shortcuts (keyAdmins, keyAdminsRoles, keyUsers, keyUsersRoles, externalAccounts)"))]
pub struct KeyPolicy {
    /// A complete key policy document (JSON), applied with PutKeyPolicy and kept in place:
    /// changes made in AWS are put back on the next resync. It may use the placeholders
    /// `${AccountId}`, `${Region}`, `${KeyArn}`, `${KeyId}` and `${Partition}`.
    #[schemars(length(min = 1, max = 32768))]
    pub document: Option<String>,
    /// An `AwsKeyPolicyTemplate` (cluster-scoped) to render the policy from. The key is tagged
    /// `keyfleet.dev/policy-template=<name>`; changing the template re-applies the policy of
    /// every key that uses it.
    pub template_ref: Option<LocalObjectRef>,
    /// Principal shortcuts, rendered into a complete key policy.
    #[serde(flatten)]
    pub shortcuts: PolicyShortcuts,
}

/// Which of its three forms a [`KeyPolicy`] takes.
#[derive(Clone, Copy, Debug)]
pub enum KeyPolicyForm<'a> {
    Document(&'a str),
    Template(&'a str),
    Shortcuts(&'a PolicyShortcuts),
}

impl KeyPolicy {
    /// The `AwsKeyPolicyTemplate` named in `templateRef`, if any.
    pub fn template_name(&self) -> Option<&str> {
        self.template_ref.as_ref().map(|t| t.name.as_str())
    }

    /// The one form given, or None when the spec gives several or none (admission refuses
    /// both; the operator reports them).
    pub fn form(&self) -> Option<KeyPolicyForm<'_>> {
        let shortcuts = (!self.shortcuts.is_empty()).then_some(&self.shortcuts);
        match (
            self.document.as_deref(),
            self.template_ref.as_ref(),
            shortcuts,
        ) {
            (Some(doc), None, None) => Some(KeyPolicyForm::Document(doc)),
            (None, Some(t), None) => Some(KeyPolicyForm::Template(&t.name)),
            (None, None, Some(s)) => Some(KeyPolicyForm::Shortcuts(s)),
            _ => None,
        }
    }
}
