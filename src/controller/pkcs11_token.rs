//! `Pkcs11Token` controller (reads the token, writes status): logs in to each token and reports
//! `Ready` (or the reason it cannot) and how keyfleet wraps the token's keys for KMS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::pkcs11::token_pool;
use super::run::watch_config;
use super::{Context, Error, Failure, status};
use crate::api::conditions::{self as condition, find_condition, set_condition};
use crate::api::{KeySpec, Pkcs11Token, Pkcs11TokenStatus, TokenWrapping};
use crate::material::pkcs11::{TokenCapabilities, TokenPool, pool::blocking};

/// How often a Ready token is checked again (session still logged in, token present).
const RECHECK_READY: Duration = Duration::from_secs(300);
/// How often a token that is not Ready is tried again.
const RECHECK_NOT_READY: Duration = Duration::from_secs(60);

/// Runs the Pkcs11Token controller until `shutdown` completes.
pub async fn run_tokens(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Pkcs11Token> = Api::all(ctx.client.clone());
    Controller::new(api, watch_config())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "Pkcs11Token reconcile error");
            }
        })
        .await;
}

fn error_policy(token: Arc<Pkcs11Token>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    warn!(token = %token.name_any(), %error, "Pkcs11Token reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(15))
}

/// The wrapping algorithms keyfleet uses with this token, as status says them.
fn wrapping(capabilities: &TokenCapabilities) -> TokenWrapping {
    let say = |choice: Result<crate::material::pkcs11::WrappingChoice, String>| match choice {
        Ok(choice) => choice.algorithm.as_str().to_string(),
        Err(why) => format!("none: {why}"),
    };
    TokenWrapping {
        secret_keys: say(capabilities.choose(KeySpec::SymmetricDefault, Some(32))),
        private_keys: say(capabilities.choose(KeySpec::Rsa2048, None)),
        sha1_only: !capabilities.oaep_sha256,
    }
}

/// Logs in (or reuses the logged-in pool), checks the session, and writes the outcome.
async fn reconcile(token: Arc<Pkcs11Token>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let name = token.name_any();
    let checked: Result<Arc<TokenPool>, Failure> = match token_pool(&ctx, &token).await {
        Ok(pool) => {
            let probe = Arc::clone(&pool);
            match blocking(pool.token_label(), move || probe.check()).await {
                Ok(()) => Ok(pool),
                Err(e) => {
                    ctx.pkcs11.forget(&name);
                    Err(super::pkcs11::failure(e))
                }
            }
        }
        Err(failure) => Err(failure),
    };
    let mut new = token.status.clone().unwrap_or_default();
    let generation = token.metadata.generation;
    let (ready, reason, message, requeue) = match checked {
        Ok(pool) => {
            new.wrapping = Some(wrapping(pool.capabilities()));
            (
                true,
                "LoggedIn",
                format!(
                    "logged in to token `{}` of {}",
                    pool.token_label(),
                    pool.module()
                ),
                RECHECK_READY,
            )
        }
        Err(Failure::Blocked(blocked)) => {
            (false, blocked.reason, blocked.message, RECHECK_NOT_READY)
        }
        Err(Failure::Transient(Error::Pkcs11(e))) => {
            (false, e.reason(), e.to_string(), RECHECK_NOT_READY)
        }
        // Kubernetes API errors: retried by the error policy, status unchanged.
        Err(Failure::Transient(e)) => return Err(e),
    };
    let before = find_condition(&new.conditions, condition::READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    set_condition(
        &mut new.conditions,
        condition::condition(condition::READY, ready, reason, &message, generation),
    );
    new.observed_generation = generation;
    let changed = before
        != find_condition(&new.conditions, condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone()));
    if changed {
        let type_ = if ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.publish(&*token, type_, reason, message.clone(), "Login")
            .await;
    }
    let api: Api<Pkcs11Token> = Api::all(ctx.client.clone());
    let old = token.status.as_ref();
    // Keep lastTransitionTime-only differences from causing writes.
    let unchanged = old.is_some_and(|o| same_status(o, &new));
    if !unchanged {
        status::write(&api, &name, old, &new)
            .await
            .map_err(Error::Kube)?;
    }
    Ok(Requeue::requeue(requeue))
}

/// Equal up to the conditions' transition times.
fn same_status(a: &Pkcs11TokenStatus, b: &Pkcs11TokenStatus) -> bool {
    let strip = |s: &Pkcs11TokenStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}
