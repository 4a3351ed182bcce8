//! Counters and gauges the core updates as it works; the service renders them for
//! Prometheus. Plain atomics: cheap enough to bump on every duplicate.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (milliseconds) of the submission latency histogram buckets.
pub const SUBMIT_LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 30_000];

#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub conflicts: AtomicU64,
    pub confirmed: AtomicU64,
    pub failed: AtomicU64,
    pub parked: AtomicU64,
    pub cancelled: AtomicU64,
    pub envelopes_built: AtomicU64,
    pub submissions: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub actors_spawned: AtomicU64,
    pub overloaded: AtomicU64,
    /// Actors alive right now.
    pub live_actors: AtomicI64,
    /// Payouts being driven right now (accepted, prepared or submitted, with a live actor).
    pub in_flight: AtomicI64,
    /// Ledger answers by outcome code (`applied`, `tx_failed:op_no_destination`, `tx_bad_seq`, `unknown`…).
    ledger_outcomes: Mutex<BTreeMap<String, u64>>,
    submit_latency_buckets: [AtomicU64; SUBMIT_LATENCY_BUCKETS_MS.len()],
    submit_latency_count: AtomicU64,
    submit_latency_sum_ms: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn ledger_outcome(&self, code: &str) {
        // A poisoned lock only means another thread panicked mid-increment; the map is
        // still a valid map, so keep counting.
        let mut map = self
            .ledger_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *map.entry(code.to_owned()).or_insert(0) += 1;
    }

    pub fn ledger_outcomes(&self) -> BTreeMap<String, u64> {
        self.ledger_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn observe_submit_latency_ms(&self, ms: u64) {
        for (i, bound) in SUBMIT_LATENCY_BUCKETS_MS.iter().enumerate() {
            if ms <= *bound {
                self.submit_latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.submit_latency_count.fetch_add(1, Ordering::Relaxed);
        self.submit_latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (Prometheus style), total count and sum in milliseconds.
    pub fn submit_latency(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let buckets = SUBMIT_LATENCY_BUCKETS_MS
            .iter()
            .zip(self.submit_latency_buckets.iter())
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        (
            buckets,
            self.submit_latency_count.load(Ordering::Relaxed),
            self.submit_latency_sum_ms.load(Ordering::Relaxed),
        )
    }
}
