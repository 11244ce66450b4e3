//! Who keyfleet is in AWS: the principal its KMS calls run as, for the policy lockout check.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

use super::Connection;
use super::session::{Requester, RoleSessionCredentials};
use crate::policy::Caller;
use crate::policy::principal::iam_arn;

/// How long a failed lookup is remembered before trying again.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(300);

/// A lookup's result (None: failed) and when it was made, per connection name.
type Cache = HashMap<&'static str, (Option<Caller>, Instant)>;

/// Caller identities per connection, looked up once.
#[derive(Default)]
pub struct Callers {
    cache: Mutex<Cache>,
}

impl Callers {
    /// The principal KMS calls through `connection` for `requester` run as. For a connection
    /// with a role, the requester's role session (known without a call); otherwise sts:GetCallerIdentity (allowed for
    /// every principal). None when it cannot be determined (then only KMS's own lockout check
    /// applies).
    pub async fn caller(
        &self,
        base: Option<&SdkConfig>,
        connection: &Connection,
        region: &str,
        requester: &Requester,
    ) -> Option<Caller> {
        if let Some(role_arn) = &connection.spec.role_arn {
            return assumed_role_session(role_arn, &requester.session_name());
        }
        let base = base?;
        // Every connection without a role runs as the operator's own credentials.
        let key = "operator-credentials";
        if let Some((caller, at)) = self.lock().get(&key).cloned()
            && (caller.is_some() || at.elapsed() < RETRY_FAILED_AFTER)
        {
            return caller;
        }
        let caller = get_caller_identity(base, region).await;
        self.lock().insert(key, (caller.clone(), Instant::now()));
        caller
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn get_caller_identity(base: &SdkConfig, region: &str) -> Option<Caller> {
    // Short: a reconcile waits for this once per connection.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(10))
        .build();
    let config = aws_sdk_sts::config::Builder::from(base)
        .region(Region::new(region.to_string()))
        .timeout_config(timeouts)
        .build();
    match aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
    {
        Ok(out) => Some(Caller {
            arn: out.arn()?.to_string(),
            account_id: out.account()?.to_string(),
        }),
        Err(e) => {
            tracing::warn!(error = %aws_sdk_sts::error::DisplayErrorContext(&e), "sts:GetCallerIdentity failed; keyfleet's policy lockout check is skipped (KMS still runs its own)");
            None
        }
    }
}

/// Why keyfleet cannot act through a connection: a fixed reason and what AWS said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionFault {
    /// `AssumeRoleFailed`, `CredentialsUnavailable` or `StsUnavailable`.
    pub reason: &'static str,
    pub message: String,
    /// Whether it may clear without a change (a timeout, a 5xx, throttling).
    pub transient: bool,
}

/// Verifies that keyfleet can act through `connection`: sts:GetCallerIdentity with the
/// connection's credentials — through its role when it names one, else the operator's own.
/// The role is assumed exactly as the keys assume it ([`RoleSessionCredentials`]: the external
/// id, a session named and tagged after `requester`, the AwsKms itself), so the check passes
/// the same trust policy, and CloudTrail shows which connection asked. Needs no permission
/// beyond the role's trust policy.
pub async fn verify_connection(
    base: &SdkConfig,
    connection: &Connection,
    region: &str,
    requester: &Requester,
) -> Result<Caller, ConnectionFault> {
    let region = Region::new(region.to_string());
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(15))
        .build();
    let mut config = aws_sdk_sts::config::Builder::from(base)
        .region(region.clone())
        .timeout_config(timeouts.clone());
    if let Some(role_arn) = &connection.spec.role_arn {
        // AssumeRole runs on the operator's own credentials.
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(base)
                .region(region)
                .timeout_config(timeouts)
                .build(),
        );
        let session = RoleSessionCredentials::new(
            sts,
            role_arn,
            connection.spec.external_id.clone(),
            requester,
        );
        config = config.credentials_provider(SharedCredentialsProvider::new(session));
    }
    let client = aws_sdk_sts::Client::from_conf(config.build());
    caller_through(&client, connection.spec.role_arn.as_deref()).await
}

/// sts:GetCallerIdentity with `client`'s credentials; `role_arn` names the role they come from.
pub async fn caller_through(
    client: &aws_sdk_sts::Client,
    role_arn: Option<&str>,
) -> Result<Caller, ConnectionFault> {
    use aws_sdk_sts::error::SdkError;
    let e = match client.get_caller_identity().send().await {
        Ok(out) => {
            return Ok(Caller {
                arn: out.arn().unwrap_or_default().to_string(),
                account_id: out.account().unwrap_or_default().to_string(),
            });
        }
        Err(e) => e,
    };
    let said = aws_sdk_sts::error::DisplayErrorContext(&e).to_string();
    let credentials_failed = credentials_error_in(&e);
    let (reason, transient) = match (&e, role_arn) {
        // The role could not be assumed: trust policy, external id, or the operator's own
        // permission (sts:AssumeRole) refuse it.
        _ if credentials_failed && role_arn.is_some() => ("AssumeRoleFailed", false),
        _ if credentials_failed => ("CredentialsUnavailable", false),
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => ("StsUnavailable", true),
        (SdkError::ServiceError(service), _) if service.raw().status().is_server_error() => {
            ("StsUnavailable", true)
        }
        (_, Some(_)) => ("AssumeRoleFailed", false),
        (_, None) => ("CredentialsUnavailable", false),
    };
    let message = match role_arn {
        Some(role) => format!("keyfleet cannot act through role {role}: {said}"),
        None => format!("keyfleet's own AWS credentials do not work: {said}"),
    };
    Err(ConnectionFault {
        reason,
        message,
        transient,
    })
}

/// Whether resolving credentials (the credentials provider, e.g. sts:AssumeRole) failed.
fn credentials_error_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// The session keyfleet gets when it assumes `role_arn` with `session_name`.
fn assumed_role_session(role_arn: &str, session_name: &str) -> Option<Caller> {
    let (account, resource) = iam_arn(role_arn)?;
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    let partition = role_arn.split(':').nth(1)?;
    Some(Caller {
        arn: format!("arn:{partition}:sts::{account}:assumed-role/{name}/{session_name}"),
        account_id: account.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::lockout;
    use serde_json::json;

    #[test]
    fn a_role_connection_calls_as_the_objects_role_session() {
        let session = Requester::new("payments", "orders").session_name();
        assert_eq!(
            assumed_role_session("arn:aws:iam::111122223333:role/platform/keyfleet", &session),
            Some(Caller {
                arn: "arn:aws:sts::111122223333:assumed-role/keyfleet/kf.payments.orders".into(),
                account_id: "111122223333".into()
            })
        );
        assert_eq!(
            assumed_role_session("arn:aws:iam::111122223333:user/x", &session),
            None
        );
    }

    #[test]
    fn the_lockout_check_accepts_policies_naming_the_role_for_every_session_name() {
        let role = "arn:aws:iam::111122223333:role/platform/keyfleet";
        let names = [
            Requester::new("payments", "orders"),
            Requester::new("team-a", "db.orders.v2"),
            Requester::new("n".repeat(63), "k".repeat(253)),
            Requester::new("a.b", "c"),
        ];
        for requester in names {
            let caller = assumed_role_session(role, &requester.session_name()).unwrap();
            let by_role = json!({"Statement": [{"Effect": "Allow",
                "Principal": {"AWS": role}, "Action": "kms:*", "Resource": "*"}]});
            assert_eq!(lockout::check(&by_role, &caller), Ok(()), "{}", caller.arn);
            let by_session = json!({"Statement": [{"Effect": "Allow",
                "Principal": {"AWS": caller.arn}, "Action": "kms:*", "Resource": "*"}]});
            assert_eq!(
                lockout::check(&by_session, &caller),
                Ok(()),
                "{}",
                caller.arn
            );
            // Another object's session is another principal.
            let other = assumed_role_session(role, "kf.other.key").unwrap();
            let by_other = json!({"Statement": [{"Effect": "Allow",
                "Principal": {"AWS": other.arn}, "Action": "kms:*", "Resource": "*"}]});
            assert!(lockout::check(&by_other, &caller).is_err());
        }
    }
}
