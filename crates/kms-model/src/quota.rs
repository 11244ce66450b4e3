//! Strict request quotas: per (Region, operation) a token bucket holding one request, refilled
//! at the operation's rate on the model's clock; a ReplicateKey also takes a CreateKey token in
//! the replica Region.

use std::collections::{BTreeMap, HashMap};

pub struct Quotas {
    rates: BTreeMap<String, f64>,
    fallback: f64,
    /// When each bucket holds a token again (model time, epoch milliseconds).
    next_ms: HashMap<(String, String), f64>,
}

impl Quotas {
    pub fn new(rates: BTreeMap<String, f64>, fallback: f64) -> Quotas {
        Quotas {
            rates,
            fallback,
            next_ms: HashMap::new(),
        }
    }

    fn period_ms(&self, op: &str) -> f64 {
        let rate = self.rates.get(op).copied().unwrap_or(self.fallback);
        1000.0 / rate.max(1e-9)
    }

    fn ready(&self, region: &str, op: &str, now_ms: f64) -> bool {
        self.next_ms
            .get(&(region.to_string(), op.to_string()))
            .is_none_or(|t| *t <= now_ms)
    }

    fn take(&mut self, region: &str, op: &str, now_ms: f64) {
        let next = now_ms + self.period_ms(op);
        self.next_ms
            .insert((region.to_string(), op.to_string()), next);
    }

    /// Takes the request's tokens; false (nothing taken) when it is over the quota.
    pub fn admit(
        &mut self,
        now_ms: i64,
        region: &str,
        op: &str,
        replica_region: Option<&str>,
    ) -> bool {
        let now = now_ms as f64;
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
