//! The write fence: KMS writes leave this instance only while it may be the only writer — always
//! without leader election, else until a deadline set from its last observed Lease renewal.
//!
//! The fence sits in the SDK's HTTP client ([`FencedHttpClient`], under the rate limiter), so a
//! write is checked just before it goes on the wire, after any wait for a rate-limit slot, and
//! no call site can forget it. Reads pass: a stale reader changes nothing.
//!
//! The deadline: when this instance sees the Lease name it as holder with `renewTime` R (written
//! by this instance's own clock before the renewal was sent) and `leaseDurationSeconds` D, it may
//! write until `R + D − margin`. Other instances take over only after `R + D` by their clocks;
//! the margin (see [`crate::leader::LeaderElection::write_margin`]) covers the clock skew between
//! nodes and the time a request sent just before the deadline takes to reach KMS.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::sync::watch;
use tokio::time::Instant;

use super::quota::operation_of;

/// Whether writes may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// No leader election: this instance is the only writer.
    Always,
    /// Leading: writes until this instant (exclusive).
    Until(Instant),
    /// Standing by, or the lease was lost.
    Closed,
}

impl Gate {
    fn allows_at(self, now: Instant) -> bool {
        match self {
            Gate::Always => true,
            Gate::Until(deadline) => now < deadline,
            Gate::Closed => false,
        }
    }
}

/// The write fence shared by the KMS clients (which check it) and the leader election (which
/// moves it). Starts open; leader election closes it until the first renewal it observes.
#[derive(Debug)]
pub struct WriteFence {
    gate: watch::Sender<Gate>,
}

/// A KMS write withheld by the fence.
#[derive(Debug, thiserror::Error)]
#[error(
    "KMS {operation} withheld: this instance has not renewed its leader Lease in time (or lost it)"
)]
pub struct WriteFenced {
    pub operation: String,
}

impl WriteFence {
    /// An open fence: every write passes (no leader election).
    pub fn open() -> Arc<WriteFence> {
        Arc::new(WriteFence {
            gate: watch::Sender::new(Gate::Always),
        })
    }

    /// Closes the fence until the next [`WriteFence::renewed`].
    pub fn close(&self) {
        self.gate.send_replace(Gate::Closed);
    }

    /// A renewal of this instance's lease was observed: writes may go out until `deadline` (a
    /// later deadline than the current one only; an open fence without election stays open).
    pub fn renewed(&self, deadline: Instant) {
        self.gate.send_if_modified(|gate| match *gate {
            Gate::Always => false,
            Gate::Until(current) if current >= deadline => false,
            Gate::Until(_) | Gate::Closed => {
                *gate = Gate::Until(deadline);
                true
            }
        });
    }

    /// Whether a write would pass now.
    pub fn allows_writes(&self) -> bool {
        self.gate.borrow().allows_at(Instant::now())
    }

    /// The current deadline of writes (None: open without election, or closed).
    pub fn deadline(&self) -> Option<Instant> {
        match *self.gate.borrow() {
            Gate::Until(deadline) => Some(deadline),
            Gate::Always | Gate::Closed => None,
        }
    }

    /// Passes reads always and writes while the fence is open.
    pub fn check(&self, operation: &str) -> Result<(), WriteFenced> {
        if !is_write(operation) || self.allows_writes() {
            Ok(())
        } else {
            Err(WriteFenced {
                operation: operation.to_string(),
            })
        }
    }

    /// Completes once writes may go out.
    pub async fn opened(&self) {
        let mut gate = self.gate.subscribe();
        loop {
            let current = *gate.borrow_and_update();
            if current.allows_at(Instant::now()) {
                return;
            }
            // The sender lives in `self`, which outlives this borrow: `changed` cannot fail.
            let _ = gate.changed().await;
        }
    }

    /// Completes once writes may no longer go out: closed, or the deadline passed without a
    /// renewal.
    pub async fn closed(&self) {
        let mut gate = self.gate.subscribe();
        loop {
            let current = *gate.borrow_and_update();
            match current {
                Gate::Closed => return,
                Gate::Until(deadline) if Instant::now() >= deadline => return,
                Gate::Until(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = gate.changed() => {}
                    }
                }
                Gate::Always => {
                    let _ = gate.changed().await;
                }
            }
        }
    }
}

/// Whether a KMS operation changes KMS (or, like `GetParametersForImport`, prepares a change).
/// Everything but the known reads counts as a write, so a new operation is fenced by default.
pub fn is_write(operation: &str) -> bool {
    const READS: &[&str] = &[
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "GenerateRandom",
        "Sign",
        "Verify",
        "VerifyMac",
    ];
    let read = (operation.starts_with("Describe")
        || operation.starts_with("List")
        || (operation.starts_with("Get") && operation != "GetParametersForImport"))
        || READS.contains(&operation);
    !read
}

/// The write deadline after a renewal at `renewed` (wall clock, as written in the Lease) of a
/// lease valid for `lease`: `renewed + lease − margin`, as an [`Instant`] (`now` and `wall_now`
/// are the same moment on both clocks). Already passed: `now`.
pub fn deadline_after_renewal(
    renewed: SystemTime,
    lease: Duration,
    margin: Duration,
    wall_now: SystemTime,
    now: Instant,
) -> Instant {
    let until = renewed + lease.saturating_sub(margin);
    match until.duration_since(wall_now) {
        Ok(left) => now + left,
        Err(_) => now,
    }
}

/// An HTTP client that refuses KMS writes while the fence is closed, before they are sent.
#[derive(Clone, Debug)]
pub struct FencedHttpClient {
    inner: SharedHttpClient,
    fence: Arc<WriteFence>,
}

impl FencedHttpClient {
    pub fn new(inner: SharedHttpClient, fence: Arc<WriteFence>) -> FencedHttpClient {
        FencedHttpClient { inner, fence }
    }
}

impl HttpClient for FencedHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FencedConnector {
            inner: self.inner.http_connector(settings, components),
            fence: self.fence.clone(),
        })
    }
}

#[derive(Debug)]
struct FencedConnector {
    inner: SharedHttpConnector,
    fence: Arc<WriteFence>,
}

impl HttpConnector for FencedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = operation_of(request.headers().get("x-amz-target")).unwrap_or("Unknown");
        match self.fence.check(operation) {
            Ok(()) => self.inner.call(request),
            // Not retried by the SDK (no error kind); the controller backs off as for any
            // transient KMS failure.
            Err(e) => HttpConnectorFuture::ready(Err(ConnectorError::other(Box::new(e), None))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_types::body::SdkBody;

    #[test]
    fn writes_are_every_operation_but_the_known_reads() {
        for write in [
            "CreateKey",
            "ReplicateKey",
            "ImportKeyMaterial",
            "GetParametersForImport",
            "PutKeyPolicy",
            "TagResource",
            "UntagResource",
            "CreateAlias",
            "UpdateAlias",
            "DeleteAlias",
            "EnableKey",
            "DisableKey",
            "UpdateKeyDescription",
            "ScheduleKeyDeletion",
            "CancelKeyDeletion",
            "DeleteImportedKeyMaterial",
            "RotateKeyOnDemand",
            "SomethingNew",
            "Unknown",
        ] {
            assert!(is_write(write), "{write}");
        }
        for read in [
            "DescribeKey",
            "GetKeyPolicy",
            "GetPublicKey",
            "ListAliases",
            "ListResourceTags",
            "ListKeyRotations",
            "GenerateMac",
        ] {
            assert!(!is_write(read), "{read}");
        }
    }

    #[test]
    fn the_deadline_is_the_renewal_plus_the_lease_minus_the_margin() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let (lease, margin) = (Duration::from_secs(15), Duration::from_millis(2500));
        // Renewed 4 s ago: 8.5 s left.
        let renewed = wall - Duration::from_secs(4);
        assert_eq!(
            deadline_after_renewal(renewed, lease, margin, wall, now),
            now + Duration::from_millis(8500)
        );
        // Renewed long ago: already passed.
        let stale = wall - Duration::from_secs(60);
        assert_eq!(deadline_after_renewal(stale, lease, margin, wall, now), now);
    }

    #[test]
    fn a_renewal_opens_until_its_deadline_and_never_moves_it_back() {
        let fence = WriteFence::open();
        assert!(fence.check("CreateKey").is_ok());
        fence.renewed(Instant::now() - Duration::from_secs(1));
        assert!(
            fence.allows_writes(),
            "without election the fence stays open"
        );

        fence.close();
        assert!(fence.check("CreateKey").is_err());
        assert!(fence.check("DescribeKey").is_ok(), "reads always pass");
        let later = Instant::now() + Duration::from_secs(60);
        fence.renewed(later);
        assert_eq!(fence.deadline(), Some(later));
        assert!(fence.check("ScheduleKeyDeletion").is_ok());
        fence.renewed(later - Duration::from_secs(30));
        assert_eq!(
            fence.deadline(),
            Some(later),
            "an older renewal moved it back"
        );
        fence.renewed(Instant::now() - Duration::from_secs(1));
        assert!(fence.allows_writes());

        fence.close();
        fence.renewed(Instant::now() - Duration::from_millis(1));
        assert!(
            !fence.allows_writes(),
            "a renewal past its deadline opened it"
        );
    }

    #[tokio::test]
    async fn closed_completes_at_the_deadline_and_opened_at_a_renewal() {
        let fence = WriteFence::open();
        fence.close();
        let deadline = Instant::now() + Duration::from_millis(100);
        let opened = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.opened().await })
        };
        fence.renewed(deadline);
        opened.await.unwrap();
        fence.closed().await;
        assert!(Instant::now() >= deadline);
        assert!(!fence.allows_writes());
    }

    /// An HTTP client answering `{}` to everything, counting what reaches it.
    #[derive(Clone, Debug, Default)]
    struct Wire(Arc<AtomicUsize>);

    impl HttpConnector for Wire {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            self.0.fetch_add(1, Ordering::SeqCst);
            let response = HttpResponse::new(200.try_into().unwrap(), SdkBody::from("{}"));
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn a_closed_fence_keeps_writes_off_the_wire_and_lets_reads_through() {
        let wire = Wire::default();
        let fence = WriteFence::open();
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .http_client(FencedHttpClient::new(
                SharedHttpClient::new(crate::kms::StandIn(wire.clone())),
                fence.clone(),
            ))
            .build();
        let kms = aws_sdk_kms::Client::from_conf(config);
        fence.close();
        let err = kms.create_key().send().await.unwrap_err();
        let message = crate::kms::KmsError::from_sdk("CreateKey", err);
        assert!(message.is_transient(), "{message}");
        assert!(message.to_string().contains("withheld"), "{message}");
        assert_eq!(wire.0.load(Ordering::SeqCst), 0, "the write was sent");
        kms.describe_key().key_id("k").send().await.unwrap();
        assert_eq!(wire.0.load(Ordering::SeqCst), 1, "the read was not sent");
        fence.renewed(Instant::now() + Duration::from_secs(60));
        kms.create_key().send().await.unwrap();
        assert_eq!(wire.0.load(Ordering::SeqCst), 2);
    }
}
