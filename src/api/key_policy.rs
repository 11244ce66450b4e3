//! `spec.policy` of AwsKey and AwsReplicaKey: a document, a template reference or principal
//! shortcuts (the shortcuts are also the body of an AwsKeyPolicyTemplate).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::refs::LocalObjectRef;

/// The principals one shortcut may list: the CEL test of an entry `p`, and what the admission
/// message calls them.
struct Principals {
    test: String,
    names: String,
}

/// IAM principals of one sort (`user` or `role`): names, or ARNs in any account.
fn iam(sort: &str) -> Principals {
    Principals {
        test: format!(
            "p.matches('^[\\\\w+=,.@-]{{1,64}}$') || \
             p.matches('^arn:aws[a-z-]*:iam::[0-9]{{12}}:{sort}/[\\\\w+=,.@/-]+$')"
        ),
        names: format!(
            "IAM {sort} names or {sort} ARNs (arn:aws:iam::<12-digit account>:{sort}/<name>)"
        ),
    }
}

/// AWS accounts: ids, or their root ARNs.
fn accounts() -> Principals {
    Principals {
        test: "p.matches('^[0-9]{12}$') || p.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:root$')"
            .to_string(),
        names: "12-digit AWS account ids or arn:aws:iam::<account>:root".to_string(),
    }
}

/// Declares [`PolicyShortcuts`] from one table: every shortcut is a list of at most 50
/// principals of one sort, held to that sort by a CEL rule, and `is_empty` covers them all.
macro_rules! policy_shortcuts {
    ($($(#[$doc:meta])* $field:ident ($json:literal): $principals:expr;)+) => {
        /// Principal shortcuts (CCKM `key_admins`, `key_admins_roles`, `key_users`,
        /// `key_users_roles`, `external_accounts`), rendered by keyfleet into a complete key
        /// policy: the account-root statement, an administrators statement, a users statement
        /// with the cryptographic actions of the key's usage, and the grant statement for AWS
        /// services.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
        pub struct PolicyShortcuts {
            $(
                $(#[$doc])*
                #[serde(rename = $json, default, skip_serializing_if = "Vec::is_empty")]
                #[x_kube(validation = Rule::new("self.size() <= 50").message(concat!("at most 50 ", $json)))]
                #[x_kube(validation = Rule::new(format!("self.all(p, {})", $principals.test)).message(format!("{} entries must be {}", $json, $principals.names).as_str()))]
                pub $field: Vec<String>,
            )+
        }

        impl PolicyShortcuts {
            /// True when no shortcut is given.
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_empty())+
            }
        }
    };
}

policy_shortcuts! {
    /// IAM users who administer the key: user names (`alice`, rendered as
    /// `arn:aws:iam::<key account>:user/alice`) or user ARNs.
    key_admins("keyAdmins"): iam("user");
    /// IAM roles that administer the key: role names or role ARNs.
    key_admins_roles("keyAdminsRoles"): iam("role");
    /// IAM users who use the key in cryptographic operations: user names or user ARNs.
    key_users("keyUsers"): iam("user");
    /// IAM roles that use the key in cryptographic operations: role names or role ARNs.
    key_users_roles("keyUsersRoles"): iam("role");
    /// Other AWS accounts that may use the key: 12-digit account ids or
    /// `arn:aws:iam::<account>:root`. They join the users and grant statements.
    external_accounts("externalAccounts"): accounts();
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
