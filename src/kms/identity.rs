//! Who keyfleet is in AWS: the principal its KMS calls run as, for the policy lockout check.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};

use super::Connection;
use super::session::Requester;
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
