//! Spec and status pieces shared by several kinds: references, policy, deletion, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object by name (same namespace, or cluster-scoped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key inside a Secret in the same namespace as the resource that references it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret. It is always read from the namespace of the referencing resource;
    /// Secrets in other namespaces cannot be referenced.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data` whose value is the key material.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What happens to the KMS key when the Kubernetes resource is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Schedule deletion of the KMS key with `pendingWindowDays`. Re-applying the resource
    /// within the window cancels the deletion and restores the key.
    Delete,
    /// Leave the KMS key untouched in AWS; only the Kubernetes resource goes away.
    Retain,
    /// Crypto-shred: delete the imported key material (DeleteImportedKeyMaterial) and keep the
    /// key, which goes to PendingImport and cannot be used. Re-applying the resource imports
    /// the material from the Secret again.
    DeleteMaterial,
}

impl std::str::FromStr for DeletionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Delete" => Ok(DeletionPolicy::Delete),
            "Retain" => Ok(DeletionPolicy::Retain),
            "DeleteMaterial" => Ok(DeletionPolicy::DeleteMaterial),
            other => Err(format!(
                "{other:?} is not a deletion policy (Delete, Retain, DeleteMaterial)"
            )),
        }
    }
}

/// Namespace annotation that sets the deletion policy of keys whose spec sets none.
pub const DEFAULT_DELETION_POLICY_ANNOTATION: &str = "keyfleet.dev/default-deletion-policy";

/// The deletion policy in effect: the spec's; for an adopted key Retain; else the namespace's
/// annotation (when it names a policy); else the operator's default.
pub fn effective_deletion_policy(
    spec: Option<DeletionPolicy>,
    adopted: bool,
    namespace_annotation: Option<&str>,
    operator_default: DeletionPolicy,
) -> DeletionPolicy {
    match (spec, adopted) {
        (Some(policy), _) => policy,
        (None, true) => DeletionPolicy::Retain,
        (None, false) => namespace_annotation
            .and_then(|a| a.parse().ok())
            .unwrap_or(operator_default),
    }
}

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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("[has(self.document), has(self.templateRef), {HAS_SHORTCUTS}].filter(x, x).size() == 1")).message("policy takes exactly one of: document, templateRef, or the shortcuts (keyAdmins, keyAdminsRoles, keyUsers, keyUsersRoles, externalAccounts)"))]
pub struct KeyPolicy {
    /// A complete key policy document (JSON), applied with PutKeyPolicy and kept in place:
    /// changes made in AWS are put back on the next resync. It may use the placeholders
    /// `${AccountId}`, `${Region}`, `${KeyArn}`, `${KeyId}` and `${Partition}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32768))]
    pub document: Option<String>,
    /// An `AwsKeyPolicyTemplate` (cluster-scoped) to render the policy from. The key is tagged
    /// `keyfleet.dev/policy-template=<name>`; changing the template re-applies the policy of
    /// every key that uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Expiration of the imported key material (CCKM `KeyExpiration` + `ValidTo`): a fixed
/// `validTo`, or a `rollingValidity` that keyfleet keeps renewing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.validTo) && has(self.rollingValidity))").message("validTo and rollingValidity are mutually exclusive"))]
pub struct Expiration {
    /// RFC 3339 time at which KMS deletes the imported material and the key becomes unusable
    /// (state PendingImport). Without it the material does not expire. Changing it re-imports
    /// the same material with the new expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<Time>,
    /// Rolling validity of the material, in days (`90d`) or hours (`720h`), at most 365 days
    /// (AWS's cap). Every import sets ValidTo to now plus this duration, and keyfleet imports
    /// the same material again (on the primary and on every replica) before the remaining
    /// validity falls under the operator's renewal threshold. A dead-man's switch: when
    /// keyfleet stops renewing, the material expires and the key becomes unusable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(([1-9][0-9]?|[1-2][0-9]{2}|3[0-5][0-9]|36[0-5])d|([1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-5][0-9]|8760)h)$"
    ))]
    pub rolling_validity: Option<String>,
}

impl Expiration {
    /// The rolling validity as a duration; `None` when unset or not of the form `<n>d` /
    /// `<n>h` (the CRD schema admits nothing else).
    pub fn rolling_validity(&self) -> Option<Result<jiff::SignedDuration, String>> {
        let text = self.rolling_validity.as_deref()?;
        let parsed = if let Some(days) = text.strip_suffix('d') {
            days.parse::<i64>().ok().map(|d| d * 24)
        } else if let Some(hours) = text.strip_suffix('h') {
            hours.parse::<i64>().ok()
        } else {
            None
        };
        Some(match parsed {
            Some(h) if (1..=365 * 24).contains(&h) => Ok(jiff::SignedDuration::from_hours(h)),
            _ => Err(format!(
                "rollingValidity {text:?} is not a duration of 1d-365d (or 1h-8760h)"
            )),
        })
    }
}

/// Condition types and reasons written by keyfleet.
pub mod condition {
    /// `True` when the KMS key exists, is in the desired state, holds the material and has the
    /// whole spec applied.
    pub const READY: &str = "Ready";
    /// Whether the material in KMS is proven to be the material in the Secret; the reason
    /// names the method (`PublicKeyMatches`, `MacMatches`, `KeyMaterialIdMatches`), a
    /// mismatch (`MaterialVerificationFailed`) or `Unverified` (no permission, not supported).
    pub const MATERIAL_VERIFIED: &str = "MaterialVerified";
}

/// Replaces (or adds) the condition of the same type, keeping `lastTransitionTime` when the
/// status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if existing.status == new.status {
            new.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = new;
    } else {
        conditions.push(new);
    }
}

/// Builds a condition stamped with the current time.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// Returns the condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = vec![];
        let mut first = condition(condition::READY, false, "Reconciling", "a", Some(1));
        first.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        set_condition(&mut conditions, first);
        set_condition(
            &mut conditions,
            condition(condition::READY, false, "KeyGone", "b", Some(2)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "KeyGone");
        assert_eq!(
            conditions[0].last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
        set_condition(
            &mut conditions,
            condition(condition::READY, true, "Ready", "c", Some(2)),
        );
        assert_ne!(
            conditions[0].last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
    }
}
