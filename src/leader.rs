//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager): only the holder
//! runs the controller; a standby takes over when the leader stops or its lease expires.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::controller::{self, Context};

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
}

/// Runs the controller until `shutdown`: directly without leader election, else whenever this
/// instance holds the Lease. A lost lease stops the controller (in-flight reconciles finish)
/// and puts the instance back on standby.
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
    let manager = LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_seconds)
        .with_grace(election.renew_grace_seconds)
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    loop {
        ctx.readiness.set_leader(false);
        ctx.metrics.set_leader(false);
        info!(lease = %election.lease_name, identity = %election.identity, "standing by for the lease");
        tokio::select! {
            _ = shutdown.clone() => break,
            acquired = leading.wait_for(|l| *l) => if acquired.is_err() { break },
        }
        ctx.readiness.set_leader(true);
        ctx.metrics.set_leader(true);
        info!(identity = %election.identity, "acquired the lease: running the controller");
        let mut watch = leading.clone();
        let lost = async move {
            let _ = watch.wait_for(|l| !*l).await;
        };
        let stop = futures::future::select(shutdown.clone(), lost.boxed()).map(drop);
        controller::run(ctx.clone(), stop).await;
        if shutdown.peek().is_some() {
            break;
        }
        warn!("lost the lease: controller stopped, standing by");
    }
    ctx.readiness.set_leader(false);
    ctx.metrics.set_leader(false);
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
