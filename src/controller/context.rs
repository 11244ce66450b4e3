//! Shared state of every reconcile: operator settings, clients, event publisher, clock, the
//! per-object backoff counters and deep-read bookkeeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::events::{Event, EventType, Reporter};
use tracing::warn;

use crate::api::DeletionPolicy;
use crate::clock::Clock;
use crate::http::Readiness;
use crate::kms::line::{Place, Turn};
use crate::kms::{Connection, KmsClients};
use crate::metrics::Metrics;
use crate::tenancy::EndpointPolicy;

/// Operator settings (from `keyfleet run` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Identifies this cluster in the ownership tags of the keys it creates.
    pub cluster_id: String,
    /// How often a Ready key is re-read from KMS (DescribeKey: state, material, description).
    pub resync_interval: Duration,
    /// How often a resync also reads tags, aliases and the policy to repair their drift (also
    /// done after every spec change and until the key is Ready).
    pub drift_interval: Duration,
    /// How long a key that waits for a change (invalid spec, missing Secret) waits at most.
    pub blocked_recheck_interval: Duration,
    /// First recheck of a key waiting for something that clears on its own (a key state, a
    /// rotation); each further one waits twice as long, up to `blocked_recheck_interval`.
    pub waiting_recheck_interval: Duration,
    /// Parallel reconciles.
    pub concurrency: u16,
    /// Name reported in events.
    pub reporter: String,
    /// Namespaces whose AwsKeys and Secrets are watched; empty: all namespaces.
    pub watch_namespaces: Vec<String>,
    /// Rolling-validity material is imported again when less than this validity remains
    /// (never more than a third of the rolling validity).
    pub material_renew_before: Duration,
    /// Which KMS endpoints an AwsKms may send material to.
    pub endpoints: EndpointPolicy,
    /// The deletion policy of keys whose spec, namespace and adoption leave it open.
    pub default_deletion_policy: DeletionPolicy,
}

impl Settings {
    pub fn new(cluster_id: impl Into<String>) -> Settings {
        Settings {
            cluster_id: cluster_id.into(),
            resync_interval: Duration::from_secs(300),
            drift_interval: Duration::from_secs(600),
            blocked_recheck_interval: Duration::from_secs(600),
            waiting_recheck_interval: Duration::from_secs(10),
            concurrency: 8,
            reporter: "keyfleet".into(),
            watch_namespaces: vec![],
            material_renew_before: Duration::from_secs(30 * 24 * 3600),
            endpoints: EndpointPolicy::default(),
            default_deletion_policy: DeletionPolicy::Delete,
        }
    }
}

/// State shared by every reconcile: clients, event publisher, settings, backoff counters.
pub struct Context {
    pub client: kube::Client,
    pub kms: KmsClients,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// What reconciles read the time from (tests set a manual clock).
    pub clock: Clock,
    /// One logged-in session pool per Pkcs11Token.
    pub pkcs11: super::pkcs11::TokenPools,
    events: super::events::EventPublisher,
    backoff: Backoff,
    /// Rechecks in a row of each object that waits for something outside keyfleet.
    waiting: Backoff,
    /// Per object uid: when this process reads the key from KMS next ([`ReadSchedule`]). In
    /// memory: a restarted operator spreads the first checks and deep reads of keys that were
    /// Ready over the resync and drift intervals ([`deep_read_offset`]).
    reads: Mutex<HashMap<String, ReadSchedule>>,
    /// Per object uid: the place in line for its import quota of a key waiting to be created
    /// ([`Context::import_turn`]), with the line's (connection, region).
    places: Mutex<HashMap<String, (LineOf, Place)>>,
    /// Status writes of this instance its watch caches have not delivered yet.
    pub written: super::written::Written,
}

/// Which line a place is in: the connection's quota identity and the region.
type LineOf = (String, String);

/// Whether a key about to be created goes now ([`Context::import_turn`]).
#[derive(Debug)]
pub enum ImportTurn {
    /// Go, holding this place (None: requests are not paced) until the reconcile is over.
    Go(Option<Place>),
    /// `ahead` keys are before it in line: come back after `wait`, keeping the place.
    Later { ahead: usize, wait: Duration },
}

/// When this process reads one object from KMS next.
#[derive(Clone, Copy, Debug)]
struct ReadSchedule {
    /// The generation the last deep read found converged (None: the next read is deep).
    generation: Option<i64>,
    /// When the next deep read (tags, aliases, policy) is due.
    deep: Instant,
    /// After a start: when the first KMS check of a key that was Ready and has not changed is
    /// due; None once the first check ran.
    first_check: Option<Instant>,
}

/// What a reconcile reads from KMS ([`Context::read_due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmsRead {
    /// Nothing yet: the key's first check after a start comes after this wait.
    Later(Duration),
    /// DescribeKey now, and tags, aliases and the policy too when `deep`.
    Now { deep: bool },
}

impl Context {
    pub fn new(client: kube::Client, kms: KmsClients, settings: Settings) -> Context {
        let events = super::events::EventPublisher::new(
            client.clone(),
            Reporter {
                controller: settings.reporter.clone(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            kms,
            settings,
            metrics: Metrics::shared(),
            readiness: Arc::new(Readiness::default()),
            clock: Clock::system(),
            pkcs11: Default::default(),
            events,
            backoff: Backoff::default(),
            waiting: Backoff::default(),
            reads: Mutex::new(HashMap::new()),
            places: Mutex::new(HashMap::new()),
            written: Default::default(),
        }
    }

    /// Uses these metrics and readiness (shared with the HTTP endpoints) instead of private ones.
    pub fn with_telemetry(mut self, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Context {
        self.metrics = metrics;
        self.readiness = readiness;
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Context {
        self.clock = clock;
        self
    }

    /// The renewal threshold setting as a signed duration.
    pub fn renew_before(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.settings.material_renew_before)
            .unwrap_or(jiff::SignedDuration::MAX)
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.events.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "failed to publish event");
        }
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReadSchedule>> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this reconcile of object `uid` at `generation` reads from KMS.
    ///
    /// An object this process has not read yet whose status says it was Ready at this
    /// generation (`was_ready`: a restart finds a converged fleet) is spread out: its first deep
    /// read comes [`deep_read_offset`] into the drift interval, and — while it stays
    /// `unchanged` (nothing keyfleet acts on at once differs from what it last found Ready) —
    /// its first check (DescribeKey) waits for the same offset within the resync interval, so
    /// that a rolling update costs a fraction of a read per key in its first minute instead of
    /// one each, and later checks keep their places. A changed object, or one woken by a change
    /// a watch saw ([`Context::check_soon`]), is read at once. Otherwise tags, aliases and the
    /// policy are read when the spec changed since the last deep read, or the drift interval
    /// elapsed.
    pub fn read_due(
        &self,
        uid: &str,
        generation: Option<i64>,
        was_ready: bool,
        unchanged: bool,
    ) -> KmsRead {
        let now = Instant::now();
        let mut reads = self.reads();
        let schedule = match reads.get_mut(uid) {
            Some(schedule) => schedule,
            None if was_ready => {
                let offset = deep_read_offset(uid, self.settings.drift_interval);
                let check = first_check_offset(offset, self.settings.resync_interval);
                reads.entry(uid.to_string()).or_insert(ReadSchedule {
                    generation,
                    deep: now + offset,
                    first_check: Some(now + check),
                })
            }
            None => return KmsRead::Now { deep: true },
        };
        if let Some(due) = schedule.first_check {
            if unchanged && now < due {
                return KmsRead::Later(due - now);
            }
            schedule.first_check = None;
        }
        KmsRead::Now {
            deep: schedule.generation != generation || now >= schedule.deep,
        }
    }

    /// A watch saw a change that concerns object `uid` (its connection, namespace, Secret or
    /// a replica of it changed after the start): a first check still waiting comes at once.
    pub fn check_soon(&self, uid: &str) {
        if let Some(schedule) = self.reads().get_mut(uid) {
            schedule.first_check = None;
        }
    }

    /// Records a deep read that found object `uid` converged (Ready): the next is due a drift
    /// interval later.
    pub fn deep_read_done(&self, uid: &str, generation: Option<i64>) {
        let schedule = ReadSchedule {
            generation,
            deep: Instant::now() + self.settings.drift_interval,
            first_check: None,
        };
        self.reads().insert(uid.to_string(), schedule);
    }

    /// Object `uid` is not converged (a blocker, a failure): its next reconcile reads deeply, at
    /// once.
    pub fn read_deeply_next(&self, uid: &str) {
        let schedule = ReadSchedule {
            generation: None,
            deep: Instant::now(),
            first_check: None,
        };
        self.reads().insert(uid.to_string(), schedule);
    }

    /// Forgets a deleted object: its read schedule, its place in line if it waited for one, and
    /// its last status write.
    pub fn forget(&self, uid: &str) {
        self.reads().remove(uid);
        self.places().remove(uid);
        self.written.forget(uid);
    }

    fn places(&self) -> std::sync::MutexGuard<'_, HashMap<String, (LineOf, Place)>> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Object `uid`'s turn to create its KMS key (and import into it) under `connection`'s
    /// GetParametersForImport quota in `region` ([`crate::kms::line`]): it joins the line the
    /// first time, keeps its place while it comes back later, and goes with it once no more
    /// than [`crate::kms::line::GOING`] places before it are held.
    pub fn import_turn(&self, uid: &str, connection: &Connection, region: &str) -> ImportTurn {
        let line = (connection.quota_identity(), region.to_string());
        let mut places = self.places();
        let place = match places.remove(uid) {
            Some((of, place)) if of == line => place,
            // New, or its spec moved it to another connection or region: the end of that line.
            _ => match self.kms.import_place(connection, region) {
                Some(place) => place,
                None => return ImportTurn::Go(None),
            },
        };
        match place.turn() {
            Turn::Now => ImportTurn::Go(Some(place)),
            Turn::Later { ahead, wait } => {
                places.insert(uid.to_string(), (line, place));
                ImportTurn::Later { ahead, wait }
            }
        }
    }

    /// Backoff for transient failures of one object, keyed `kind/namespace/name`.
    pub(super) fn next_backoff(&self, key: String) -> Duration {
        self.backoff.next(key)
    }

    pub(super) fn reset_backoff(&self, key: &str) {
        self.backoff.reset(key);
    }

    /// When an object waiting for something outside keyfleet looks again: the waiting recheck
    /// interval, doubled at each recheck in a row, up to the blocked recheck interval.
    pub(super) fn next_wait(&self, key: &str) -> Duration {
        let n = self.waiting.bump(key.to_string());
        let first = self.settings.waiting_recheck_interval;
        first
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.settings.blocked_recheck_interval.max(first))
    }

    /// The object no longer waits: its next wait starts from the first interval again.
    pub(super) fn stop_waiting(&self, key: &str) {
        self.waiting.reset(key);
    }
}

/// Where in the drift interval the first deep read of a converged object falls after a
/// restart: fixed per object (a hash of its uid), spread evenly over `[0, drift)`.
pub fn deep_read_offset(uid: &str, drift: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same uid gets the same offset in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    let millis = drift.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % millis)
}

/// Where in the resync interval the first check of a converged, unchanged object falls after a
/// restart: its deep-read offset within the resync interval, so that the resyncs that follow
/// (one interval apart) reach the first deep read on time.
pub fn first_check_offset(deep_read_offset: Duration, resync: Duration) -> Duration {
    let resync = resync.as_nanos().max(1);
    Duration::from_nanos((deep_read_offset.as_nanos() % resync) as u64)
}

/// Exponential backoff per object for transient failures: 2 s, 4 s, ... up to 256 s.
#[derive(Default)]
pub(super) struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn next(&self, key: String) -> Duration {
        let n = self.bump(key);
        Duration::from_secs(1u64 << n.min(8)).min(Duration::from_secs(300))
    }

    /// Counts one more in a row for `key`; returns the count (1 the first time).
    fn bump(&self, key: String) -> u32 {
        let mut failures = self.failures();
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub(super) fn reset(&self, key: &str) {
        self.failures().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AwsKey, AwsReplicaKey};
    use crate::controller::reconcile::object_key;

    #[test]
    fn deep_read_offsets_are_fixed_per_object_and_spread_over_the_drift_interval() {
        let drift = Duration::from_secs(600);
        let offsets: Vec<Duration> = (0..1000)
            .map(|i| deep_read_offset(&format!("uid-{i}"), drift))
            .collect();
        assert_eq!(offsets[7], deep_read_offset("uid-7", drift));
        assert!(offsets.iter().all(|o| *o < drift));
        // Every tenth of the interval gets some of them, none more than twice its share.
        for tenth in 0..10u32 {
            let n = offsets
                .iter()
                .filter(|o| (o.as_secs() / 60) as u32 == tenth)
                .count();
            assert!((50..=200).contains(&n), "tenth {tenth}: {n} of 1000");
        }
    }

    #[test]
    fn an_awskey_and_an_awsreplicakey_of_one_name_back_off_separately() {
        let key: AwsKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsKey",
            "metadata": {"name": "orders", "namespace": "team"},
            "spec": {"region": "us-east-1", "keySpec": "SYMMETRIC_DEFAULT",
                     "keyMaterial": {"secretRef": {"name": "m", "key": "k"}}}
        }))
        .unwrap();
        let replica: AwsReplicaKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "kms.keyfleet.dev/v1alpha1", "kind": "AwsReplicaKey",
            "metadata": {"name": "orders", "namespace": "team"},
            "spec": {"region": "eu-west-1", "primaryKeyRef": {"name": "orders"}}
        }))
        .unwrap();
        let (k, r) = (object_key(&key), object_key(&replica));
        assert_eq!(k, "AwsKey/team/orders");
        assert_eq!(r, "AwsReplicaKey/team/orders");

        let backoff = Backoff::default();
        assert_eq!(backoff.next(k.clone()), Duration::from_secs(2));
        assert_eq!(backoff.next(k.clone()), Duration::from_secs(4));
        assert_eq!(backoff.next(r.clone()), Duration::from_secs(2));
        backoff.reset(&k);
        assert_eq!(backoff.next(k), Duration::from_secs(2));
        assert_eq!(backoff.next(r), Duration::from_secs(4));
        for _ in 0..20 {
            backoff.next("x".into());
        }
        assert_eq!(backoff.next("x".into()), Duration::from_secs(256));
    }
}
