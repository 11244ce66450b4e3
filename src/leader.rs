//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager): only the holder
//! runs the controller, and only until its write fence's deadline ([`crate::kms::fence`]); a
//! standby takes over when the leader stops or its lease expires.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::controller::{self, Context};
use crate::kms::WriteFence;
use crate::kms::fence::deadline_after_renewal;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Seconds a lease is valid without renewal: how long a crashed leader blocks a takeover.
    pub lease_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    pub renew_grace_seconds: u64,
}

impl LeaderElection {
    pub fn new(
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderElection {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_seconds: 15,
            renew_grace_seconds: 5,
        }
    }

    /// The field manager of this instance's Lease writes: `keyfleet-lease-<identity>`.
    pub fn field_manager(&self) -> String {
        format!("keyfleet-lease-{}", self.identity)
    }

    /// How long before its lease can expire the leader stops writing to KMS: half the renew
    /// grace (2.5 s with the defaults). Renewals are due a whole grace before expiry, so a
    /// renewal may be late by half the grace without stopping the leader, and a write sent just
    /// before the deadline has the other half (clock skew between nodes plus the time the
    /// request takes to reach KMS) before a standby may take over.
    pub fn write_margin(&self) -> Duration {
        Duration::from_secs(self.renew_grace_seconds) / 2
    }
}

/// Why a leader's controller stopped.
enum Stop {
    Shutdown,
    /// No renewal observed before the write deadline.
    Unrenewed,
    /// The lease manager reports another holder (or stopped).
    Lost,
}

/// Runs the controller until `shutdown`: directly without leader election, else whenever this
/// instance holds the Lease and has renewed it in time.
///
/// With leader election the KMS write fence opens only on a renewal of this instance's Lease
/// that it observed, until `renewTime + leaseDuration - write_margin`. When that deadline passes
/// without a new renewal (the lease manager keeps reporting leadership while it retries) or the
/// lease is lost, the controller is dropped: in-flight reconciles are cancelled, not awaited,
/// and the instance stands by. On shutdown in-flight reconciles finish (the fence still applies).
pub async fn run(
    ctx: Arc<Context>,
    election: Option<LeaderElection>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.boxed().shared();
    let Some(election) = election else {
        ctx.readiness.set_leader(true);
        ctx.metrics.set_leader(true);
        controller::run(ctx, shutdown).await;
        return Ok(());
    };
    let fence = ctx.kms.fence().clone();
    fence.close();
    let manager = LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        // The crate's default field manager carries a random suffix, not the identity.
        .with_field_manager(election.field_manager())
        .with_duration(election.lease_seconds)
        .with_grace(election.renew_grace_seconds)
        .build()
        .await?;
    let renewals = tokio::spawn(follow_renewals(
        ctx.client.clone(),
        election.clone(),
        fence.clone(),
    ));
    let (mut leading, lease_task) = manager.watch().await;
    loop {
        ctx.readiness.set_leader(false);
        ctx.metrics.set_leader(false);
        info!(lease = %election.lease_name, identity = %election.identity, "standing by for the lease");
        tokio::select! {
            _ = shutdown.clone() => break,
            acquired = acquired(&mut leading, &fence) => if !acquired { break },
        }
        ctx.readiness.set_leader(true);
        ctx.metrics.set_leader(true);
        info!(identity = %election.identity, "acquired the lease: running the controller");
        let stop = tokio::select! {
            _ = controller::run(ctx.clone(), shutdown.clone()) => Stop::Shutdown,
            _ = fence.closed() => Stop::Unrenewed,
            _ = lost(&mut leading) => Stop::Lost,
        };
        fence.close();
        match stop {
            Stop::Shutdown => break,
            Stop::Unrenewed => warn!(
                "no renewal of the lease observed before the write deadline: KMS writes stopped, in-flight reconciles cancelled, standing by"
            ),
            Stop::Lost => warn!("lost the lease: in-flight reconciles cancelled, standing by"),
        }
    }
    fence.close();
    ctx.readiness.set_leader(false);
    ctx.metrics.set_leader(false);
    renewals.abort();
    // Closing the channel ends the lease task; releasing lets a standby take over at once.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(10), lease_task).await {
        Ok(Ok(Ok(manager))) => {
            if let Err(e) = manager.release().await {
                warn!(error = %e, "could not release the lease; it expires on its own");
            }
        }
        Ok(Ok(Err(e))) => warn!(error = %e, "lease manager failed"),
        Ok(Err(e)) => warn!(error = %e, "lease task panicked"),
        Err(_) => warn!("lease task did not stop in time; the lease expires on its own"),
    }
    Ok(())
}

/// Waits until the lease manager reports this instance as the holder and the fence is open
/// (a renewal of ours observed); false when the lease manager stopped.
async fn acquired(leading: &mut watch::Receiver<bool>, fence: &WriteFence) -> bool {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return false;
        }
        tokio::select! {
            _ = fence.opened() => return true,
            lost = leading.wait_for(|l| !*l) => if lost.is_err() { return false },
        }
    }
}

/// Completes when the lease manager reports another holder, or stops.
async fn lost(leading: &mut watch::Receiver<bool>) {
    let _ = leading.wait_for(|l| !*l).await;
}

/// Watches the Lease and moves the fence: a renewal by this instance extends the write
/// deadline; another holder, or none, closes the fence. Without RBAC to list and watch the
/// Lease (older charts grant get/update/patch only) it reads the Lease every quarter of the
/// renew grace instead.
async fn follow_renewals(client: kube::Client, election: LeaderElection, fence: Arc<WriteFence>) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let margin = election.write_margin();
    let observe = |lease: Option<&Lease>| match renewal_of(lease, &election.identity) {
        Some((renewed, lease)) => fence.renewed(deadline_after_renewal(
            renewed,
            lease,
            margin,
            SystemTime::now(),
            tokio::time::Instant::now(),
        )),
        None => fence.close(),
    };
    let mut leases = watcher::watch_object(api.clone(), &election.lease_name)
        .default_backoff()
        .boxed();
    while let Some(event) = leases.next().await {
        match event {
            Ok(lease) => observe(lease.as_ref()),
            Err(watcher::Error::InitialListFailed(kube::Error::Api(e))) if e.is_forbidden() => {
                warn!(error = %e, "may not list and watch the Lease (grant list and watch on it): reading it periodically instead");
                break;
            }
            // The fence stays as it is: without news of a renewal its deadline passes.
            Err(e) => debug!(error = %e, "watching the lease"),
        }
    }
    drop(leases);
    let every = Duration::from_secs(election.renew_grace_seconds) / 4;
    loop {
        match api.get_opt(&election.lease_name).await {
            Ok(lease) => observe(lease.as_ref()),
            Err(e) => debug!(error = %e, "reading the lease"),
        }
        tokio::time::sleep(every).await;
    }
}

/// When this instance last renewed `lease` and for how long it is valid; None when another
/// instance, or none, holds it.
fn renewal_of(lease: Option<&Lease>, identity: &str) -> Option<(SystemTime, Duration)> {
    let spec = lease?.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = SystemTime::from(spec.renew_time.as_ref()?.0);
    let seconds = u64::try_from(spec.lease_duration_seconds?).ok()?;
    Some((renewed, Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<jiff::Timestamp>) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "keyfleet"},
            "spec": {
                "holderIdentity": holder,
                "renewTime": renewed.map(|t| t.to_string()),
                "leaseDurationSeconds": 15,
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_our_own_renewal_counts() {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let ours = lease(Some("a"), Some(at));
        assert_eq!(
            renewal_of(Some(&ours), "a"),
            Some((SystemTime::from(at), Duration::from_secs(15)))
        );
        assert_eq!(renewal_of(Some(&ours), "b"), None);
        assert_eq!(renewal_of(Some(&lease(None, Some(at))), "a"), None);
        assert_eq!(renewal_of(Some(&lease(Some("a"), None)), "a"), None);
        assert_eq!(renewal_of(None, "a"), None);
    }

    #[test]
    fn the_write_margin_is_half_the_renew_grace() {
        let mut election = LeaderElection::new("ns", "keyfleet", "a");
        assert_eq!(election.write_margin(), Duration::from_millis(2500));
        election.renew_grace_seconds = 2;
        assert_eq!(election.write_margin(), Duration::from_secs(1));
    }
}
