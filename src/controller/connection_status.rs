//! Connection status (status writes, STS reads): every `AwsKms` gets a `Ready` condition once
//! keyfleet verified it can act through it — well-formed regions, and sts:GetCallerIdentity
//! through its role (with the external id) or with the operator's own credentials — and a
//! precise reason otherwise (`RegionInvalid`, `AssumeRoleFailed`, `CredentialsUnavailable`,
//! `StsUnavailable`). Rechecked every resync, so a role whose trust policy changed shows on the
//! connection, not key by key. `kubectl wait --for=condition=Ready awskms/<name>` works.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use super::run::watch_config;
use crate::api::aws_kms::is_region_name;
use crate::api::conditions::set_readiness;
use crate::api::{AwsKms, AwsKmsStatus};
use crate::kms::{Connection, Requester};

/// A connection that failed transiently (STS unreachable) is looked at again this soon.
const TRANSIENT_RECHECK: Duration = Duration::from_secs(30);

/// What the check of one connection found.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionVerdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
    /// Clears without a change (the next recheck may pass).
    pub transient: bool,
    pub caller_arn: Option<String>,
    pub account_id: Option<String>,
}

/// Checks one connection: regions first (no AWS call), then STS.
pub async fn check(ctx: &Context, kms: &AwsKms) -> ConnectionVerdict {
    let bad: Vec<&str> = kms
        .spec
        .regions
        .iter()
        .map(String::as_str)
        .filter(|r| !is_region_name(r))
        .collect();
    if !bad.is_empty() {
        return ConnectionVerdict {
            ready: false,
            reason: "RegionInvalid",
            message: format!(
                "spec.regions holds names that are not AWS regions: {}; use names such as eu-west-1",
                bad.join(", ")
            ),
            transient: false,
            caller_arn: None,
            account_id: None,
        };
    }
    // STS is global but answers in every region; ask in the connection's first one.
    let region = kms
        .spec
        .regions
        .first()
        .cloned()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_string());
    match ctx
        .kms
        .verify(&Connection::from_aws_kms(kms), &region, &Requester::of(kms))
        .await
    {
        Ok(caller) => {
            let known = |s: String| Some(s).filter(|s| !s.is_empty());
            let message = match (kms.spec.role_arn.as_deref(), caller.arn.is_empty()) {
                (_, true) => "keyfleet can act through this connection".to_string(),
                (Some(role), false) => format!(
                    "keyfleet assumed {role} and acts as {} in account {}",
                    caller.arn, caller.account_id
                ),
                (None, false) => format!(
                    "keyfleet acts with its own credentials as {} in account {}",
                    caller.arn, caller.account_id
                ),
            };
            ConnectionVerdict {
                ready: true,
                reason: "Verified",
                message,
                transient: false,
                caller_arn: known(caller.arn),
                account_id: known(caller.account_id),
            }
        }
        Err(fault) => ConnectionVerdict {
            ready: false,
            reason: fault.reason,
            message: fault.message,
            transient: fault.transient,
            caller_arn: None,
            account_id: None,
        },
    }
}

/// The status for a verdict, keeping the conditions' transition times from `old`.
pub fn status_for(
    old: Option<&AwsKmsStatus>,
    verdict: &ConnectionVerdict,
    generation: Option<i64>,
) -> AwsKmsStatus {
    let mut status = AwsKmsStatus {
        observed_generation: generation,
        caller_arn: verdict.caller_arn.clone(),
        account_id: verdict.account_id.clone(),
        conditions: old.map(|s| s.conditions.clone()).unwrap_or_default(),
    };
    set_readiness(
        &mut status.conditions,
        verdict.ready,
        verdict.transient,
        verdict.reason,
        &verdict.message,
        generation,
    );
    status
}

async fn reconcile(kms: Arc<AwsKms>, ctx: Arc<Context>) -> Result<Requeue, kube::Error> {
    let verdict = check(&ctx, &kms).await;
    let status = status_for(kms.status.as_ref(), &verdict, kms.meta().generation);
    // Written only when it changed: the write is itself a watch event, which would otherwise
    // re-run this check at once, forever.
    if kms.status.as_ref() != Some(&status) {
        let api: Api<AwsKms> = Api::all(ctx.client.clone());
        api.patch_status(
            &kms.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
        if verdict.ready {
            info!(awskms = %kms.name_any(), message = %verdict.message, "connection verified");
        } else {
            warn!(awskms = %kms.name_any(), reason = verdict.reason, message = %verdict.message, "connection not usable");
        }
    }
    Ok(Requeue::requeue(if verdict.transient {
        TRANSIENT_RECHECK
    } else {
        ctx.settings.resync_interval
    }))
}

fn error_policy(kms: Arc<AwsKms>, error: &kube::Error, _ctx: Arc<Context>) -> Requeue {
    warn!(awskms = %kms.name_any(), %error, "writing the connection status failed; retrying");
    Requeue::requeue(TRANSIENT_RECHECK)
}

/// Runs the connection status controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api: Api<AwsKms> = Api::all(ctx.client.clone());
    Controller::new(api, watch_config())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
