//! Policy shortcuts (key admins, key users, external accounts) rendered into a complete key policy.

use serde_json::{Value, json};

use super::principal::{self, PrincipalError, PrincipalKind};
use crate::api::{KeyUsage, PolicyShortcuts};

/// Key-administration actions (the AWS console's key-administrator set, plus the import and
/// multi-region actions a BYOK key needs).
pub const ADMIN_ACTIONS: [&str; 20] = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:ImportKeyMaterial",
    "kms:RotateKeyOnDemand",
    "kms:ReplicateKey",
    "kms:UpdatePrimaryRegion",
    "kms:SynchronizeMultiRegionKey",
    "kms:GetParametersForImport",
];

/// The cryptographic actions that fit a key usage.
pub fn user_actions(usage: KeyUsage, symmetric: bool) -> Vec<&'static str> {
    match usage {
        KeyUsage::EncryptDecrypt if symmetric => vec![
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:ReEncrypt*",
            "kms:GenerateDataKey*",
            "kms:DescribeKey",
        ],
        KeyUsage::EncryptDecrypt => vec![
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:ReEncrypt*",
            "kms:DescribeKey",
            "kms:GetPublicKey",
        ],
        KeyUsage::SignVerify => vec![
            "kms:Sign",
            "kms:Verify",
            "kms:DescribeKey",
            "kms:GetPublicKey",
        ],
        KeyUsage::GenerateVerifyMac => {
            vec!["kms:GenerateMac", "kms:VerifyMac", "kms:DescribeKey"]
        }
    }
}

/// Renders the shortcuts for a key of `usage` (`symmetric` for SYMMETRIC_DEFAULT keys).
/// Principal names are rendered with `${Partition}`/`${AccountId}` placeholders.
pub fn render(
    shortcuts: &PolicyShortcuts,
    usage: KeyUsage,
    symmetric: bool,
) -> Result<Value, PrincipalError> {
    let list = |name: &'static str, entries: &[String], kind: PrincipalKind| {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| principal::render(name, i, e, kind))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut admins = list("keyAdmins", &shortcuts.key_admins, PrincipalKind::User)?;
    admins.extend(list(
        "keyAdminsRoles",
        &shortcuts.key_admins_roles,
        PrincipalKind::Role,
    )?);
    let mut users = list("keyUsers", &shortcuts.key_users, PrincipalKind::User)?;
    users.extend(list(
        "keyUsersRoles",
        &shortcuts.key_users_roles,
        PrincipalKind::Role,
    )?);
    users.extend(list(
        "externalAccounts",
        &shortcuts.external_accounts,
        PrincipalKind::Account,
    )?);

    let mut statements = vec![allow(
        "Enable IAM User Permissions",
        json!("arn:${Partition}:iam::${AccountId}:root"),
        json!("kms:*"),
    )];
    if !admins.is_empty() {
        let admin_actions = json!(ADMIN_ACTIONS);
        statements.push(allow(
            "Allow access for Key Administrators",
            json!(admins),
            admin_actions,
        ));
    }
    if !users.is_empty() {
        let user_actions = json!(user_actions(usage, symmetric));
        statements.push(allow("Allow use of the key", json!(users), user_actions));
        let mut grants = allow(
            "Allow attachment of persistent resources",
            json!(users),
            json!(["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]),
        );
        grants["Condition"] = json!({"Bool": {"kms:GrantIsForAWSResource": "true"}});
        statements.push(grants);
    }
    Ok(json!({
        "Version": "2012-10-17",
        "Id": "keyfleet-key-policy",
        "Statement": statements
    }))
}

/// An Allow statement of `actions` on the key for the AWS `principals`.
fn allow(sid: &str, principals: Value, actions: Value) -> Value {
    json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": principals},
        "Action": actions,
        "Resource": "*"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::{KeyIdentity, fill_placeholders};

    fn shortcuts(json: Value) -> PolicyShortcuts {
        serde_json::from_value(json).unwrap()
    }

    fn statement<'a>(policy: &'a Value, sid: &str) -> Option<&'a Value> {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
    }

    #[test]
    fn admins_users_and_external_accounts_render_into_the_four_statements() {
        let s = shortcuts(json!({
            "keyAdmins": ["alice"],
            "keyAdminsRoles": ["arn:aws:iam::111122223333:role/platform/kms-admin"],
            "keyUsers": ["bob"],
            "keyUsersRoles": ["orders-app"],
            "externalAccounts": ["444455556666"]
        }));
        let rendered = render(&s, KeyUsage::EncryptDecrypt, true).unwrap();
        let id = KeyIdentity::from_arn("arn:aws:kms:eu-west-1:111122223333:key/k1").unwrap();
        let policy = fill_placeholders(&rendered, &id);

        let root = statement(&policy, "Enable IAM User Permissions").unwrap();
        assert_eq!(root["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
        assert_eq!(root["Action"], "kms:*");

        let admins = statement(&policy, "Allow access for Key Administrators").unwrap();
        assert_eq!(
            admins["Principal"]["AWS"],
            json!([
                "arn:aws:iam::111122223333:user/alice",
                "arn:aws:iam::111122223333:role/platform/kms-admin"
            ])
        );
        let admin_actions = admins["Action"].as_array().unwrap();
        for needed in [
            "kms:Put*",
            "kms:ScheduleKeyDeletion",
            "kms:ImportKeyMaterial",
        ] {
            assert!(admin_actions.contains(&json!(needed)), "{needed}");
        }
        assert!(!admin_actions.contains(&json!("kms:Decrypt")));

        let use_ = statement(&policy, "Allow use of the key").unwrap();
        assert_eq!(
            use_["Principal"]["AWS"],
            json!([
                "arn:aws:iam::111122223333:user/bob",
                "arn:aws:iam::111122223333:role/orders-app",
                "arn:aws:iam::444455556666:root"
            ])
        );
        assert!(
            use_["Action"]
                .as_array()
                .unwrap()
                .contains(&json!("kms:GenerateDataKey*"))
        );
        let grants = statement(&policy, "Allow attachment of persistent resources").unwrap();
        assert_eq!(grants["Principal"], use_["Principal"]);
        assert_eq!(
            grants["Condition"]["Bool"]["kms:GrantIsForAWSResource"],
            "true"
        );
    }

    #[test]
    fn user_actions_follow_the_key_usage() {
        let s = shortcuts(json!({"keyUsersRoles": ["app"]}));
        let actions = |usage, symmetric| {
            let p = render(&s, usage, symmetric).unwrap();
            statement(&p, "Allow use of the key").unwrap()["Action"].clone()
        };
        let sign = actions(KeyUsage::SignVerify, false);
        assert!(sign.as_array().unwrap().contains(&json!("kms:Sign")));
        assert!(!sign.as_array().unwrap().contains(&json!("kms:Decrypt")));
        let mac = actions(KeyUsage::GenerateVerifyMac, false);
        assert_eq!(
            mac,
            json!(["kms:GenerateMac", "kms:VerifyMac", "kms:DescribeKey"])
        );
        let rsa = actions(KeyUsage::EncryptDecrypt, false);
        assert!(rsa.as_array().unwrap().contains(&json!("kms:GetPublicKey")));
        assert!(
            !rsa.as_array()
                .unwrap()
                .contains(&json!("kms:GenerateDataKey*"))
        );
    }

    #[test]
    fn only_admins_gives_no_users_statements_and_a_bad_entry_is_refused() {
        let p = render(
            &shortcuts(json!({"keyAdminsRoles": ["ops"]})),
            KeyUsage::SignVerify,
            false,
        )
        .unwrap();
        assert_eq!(p["Statement"].as_array().unwrap().len(), 2);
        assert!(statement(&p, "Allow use of the key").is_none());
        let err = render(
            &shortcuts(json!({"keyUsers": ["ok", "not ok"]})),
            KeyUsage::SignVerify,
            false,
        )
        .unwrap_err();
        assert_eq!((err.list, err.index), ("keyUsers", 1));
    }
}
