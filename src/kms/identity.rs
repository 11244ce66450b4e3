//! Who keyfleet is in AWS: the principal its KMS calls run as, for the policy lockout check.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};

use super::Connection;
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
    /// The principal KMS calls through `connection` run as. For a connection with a role, the
    /// role's session (known without a call); otherwise sts:GetCallerIdentity (allowed for
    /// every principal). None when it cannot be determined (then only KMS's own lockout check
    /// applies).
    pub async fn caller(
        &self,
        base: Option<&SdkConfig>,
        connection: &Connection,
        region: &str,
    ) -> Option<Caller> {
        if let Some(role_arn) = &connection.spec.role_arn {
            return assumed_role_session(role_arn);
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

/// The session keyfleet gets when it assumes `role_arn` (session name `keyfleet`).
fn assumed_role_session(role_arn: &str) -> Option<Caller> {
    let (account, resource) = iam_arn(role_arn)?;
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    let partition = role_arn.split(':').nth(1)?;
    Some(Caller {
        arn: format!("arn:{partition}:sts::{account}:assumed-role/{name}/keyfleet"),
        account_id: account.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_connection_calls_as_the_role_session() {
        assert_eq!(
            assumed_role_session("arn:aws:iam::111122223333:role/platform/keyfleet"),
            Some(Caller {
                arn: "arn:aws:sts::111122223333:assumed-role/keyfleet/keyfleet".into(),
                account_id: "111122223333".into()
            })
        );
        assert_eq!(
            assumed_role_session("arn:aws:iam::111122223333:user/x"),
            None
        );
    }
}
