//! Principals of the policy shortcuts: IAM user/role names or ARNs and account ids, checked and rendered as ARNs.

/// What a shortcut list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Role,
    Account,
}

impl PrincipalKind {
    fn expected(self) -> &'static str {
        match self {
            PrincipalKind::User => {
                "an IAM user name (letters, digits and _+=,.@-, at most 64) or a user ARN (arn:aws:iam::<12-digit account>:user/<name>)"
            }
            PrincipalKind::Role => {
                "an IAM role name (letters, digits and _+=,.@-, at most 64) or a role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
            }
            PrincipalKind::Account => "a 12-digit AWS account id or arn:aws:iam::<account>:root",
        }
    }
}

/// A shortcut entry that is not a principal of its list's kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{list}[{index}] {value:?} is not {}", kind.expected())]
pub struct PrincipalError {
    /// The shortcut list (`keyAdmins`, …).
    pub list: &'static str,
    pub index: usize,
    pub value: String,
    pub kind: PrincipalKind,
}

/// The principal ARN for a shortcut entry; names become ARNs in the key's own account
/// (`${Partition}` and `${AccountId}` are filled in per key).
pub fn render(
    list: &'static str,
    index: usize,
    entry: &str,
    kind: PrincipalKind,
) -> Result<String, PrincipalError> {
    let error = || PrincipalError {
        list,
        index,
        value: entry.to_string(),
        kind,
    };
    match kind {
        PrincipalKind::Account if is_account_id(entry) => {
            Ok(format!("arn:${{Partition}}:iam::{entry}:root"))
        }
        PrincipalKind::Account => match iam_arn(entry) {
            Some((_, "root")) => Ok(entry.to_string()),
            _ => Err(error()),
        },
        PrincipalKind::User | PrincipalKind::Role => {
            let resource = if kind == PrincipalKind::User {
                "user"
            } else {
                "role"
            };
            if is_iam_name(entry) {
                return Ok(format!(
                    "arn:${{Partition}}:iam::${{AccountId}}:{resource}/{entry}"
                ));
            }
            match iam_arn(entry) {
                Some((_, path))
                    if path
                        .strip_prefix(resource)
                        .and_then(|p| p.strip_prefix('/'))
                        .is_some_and(is_iam_path_and_name) =>
                {
                    Ok(entry.to_string())
                }
                _ => Err(error()),
            }
        }
    }
}

/// True for a 12-digit account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_iam_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

fn is_iam_path_and_name(s: &str) -> bool {
    let (path, name) = s.rsplit_once('/').unwrap_or(("", s));
    is_iam_name(name) && path.split('/').filter(|p| !p.is_empty()).all(is_iam_name)
}

/// `(account, resource)` of an IAM ARN `arn:<partition>:iam::<account>:<resource>`.
pub fn iam_arn(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    if !partition.starts_with("aws") {
        return None;
    }
    let rest = rest.strip_prefix("iam::")?;
    let (account, resource) = rest.split_once(':')?;
    (is_account_id(account) && !resource.is_empty()).then_some((account, resource))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PrincipalKind::*;

    #[test]
    fn names_become_arns_of_the_key_account_and_arns_are_kept() {
        assert_eq!(
            render("keyAdmins", 0, "alice", User).unwrap(),
            "arn:${Partition}:iam::${AccountId}:user/alice"
        );
        assert_eq!(
            render("keyUsersRoles", 0, "app-reader", Role).unwrap(),
            "arn:${Partition}:iam::${AccountId}:role/app-reader"
        );
        for arn in [
            "arn:aws:iam::111122223333:role/ops/app",
            "arn:aws-us-gov:iam::111122223333:role/app",
        ] {
            assert_eq!(render("keyUsersRoles", 0, arn, Role).unwrap(), arn);
        }
        assert_eq!(
            render("externalAccounts", 0, "444455556666", Account).unwrap(),
            "arn:${Partition}:iam::444455556666:root"
        );
        assert_eq!(
            render(
                "externalAccounts",
                0,
                "arn:aws:iam::444455556666:root",
                Account
            )
            .unwrap(),
            "arn:aws:iam::444455556666:root"
        );
    }

    #[test]
    fn wrong_principals_are_refused_with_list_index_and_what_was_expected() {
        let cases = [
            ("bob smith", User),
            ("arn:aws:iam::111122223333:role/app", User),
            ("arn:aws:iam::1111:user/bob", User),
            ("arn:aws:sts::111122223333:assumed-role/app/s", Role),
            ("*", Role),
            ("", Role),
            ("12345", Account),
            ("arn:aws:iam::444455556666:user/bob", Account),
            ("x".repeat(65).as_str(), User),
        ]
        .map(|(v, k)| (v.to_string(), k));
        for (value, kind) in cases {
            let err = render("keyUsers", 3, &value, kind).unwrap_err();
            assert_eq!(err.index, 3);
            let text = err.to_string();
            assert!(text.starts_with("keyUsers[3] "), "{text}");
            assert!(text.contains(kind.expected()), "{text}");
        }
    }
}
