//! Strict request quotas: per (Region, operation) a token bucket holding one request, refilled
//! at the operation's rate; a ReplicateKey also takes a CreateKey token in the replica Region.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

pub struct Quotas {
    rates: BTreeMap<String, f64>,
    fallback: f64,
    /// When each bucket holds a token again.
    next: HashMap<(String, String), Instant>,
}

impl Quotas {
    pub fn new<'a>(rates: impl IntoIterator<Item = &'a (&'a str, f64)>, fallback: f64) -> Quotas {
        Quotas {
            rates: rates
                .into_iter()
                .map(|(op, r)| (op.to_string(), *r))
                .collect(),
            fallback,
            next: HashMap::new(),
        }
    }

    fn period(&self, op: &str) -> Duration {
        let rate = self.rates.get(op).copied().unwrap_or(self.fallback);
        Duration::from_secs_f64(1.0 / rate.max(1e-6))
    }

    fn ready(&self, region: &str, op: &str, now: Instant) -> bool {
        self.next
            .get(&(region.to_string(), op.to_string()))
            .is_none_or(|t| *t <= now)
    }

    fn take(&mut self, region: &str, op: &str, now: Instant) {
        let period = self.period(op);
        self.next
            .insert((region.to_string(), op.to_string()), now + period);
    }

    /// Takes the request's tokens; false (nothing taken) when it is over the quota.
    pub fn admit(&mut self, region: &str, op: &str, replica_region: Option<&str>) -> bool {
        let now = Instant::now();
        let replica_ok = replica_region.is_none_or(|r| self.ready(r, "CreateKey", now));
        if !self.ready(region, op, now) || !replica_ok {
            return false;
        }
        self.take(region, op, now);
        if let Some(r) = replica_region {
            self.take(r, "CreateKey", now);
        }
        true
    }
}
