//! Counters and gauges the core updates as it works; the service renders them for
//! Prometheus. Plain atomics: cheap enough to bump on every duplicate. Labels taken from
//! ledger answers are bounded (`policy::metric_code`): unknown codes count as `other`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::policy::metric_code;

/// Upper bounds (milliseconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// Upper bounds (payouts) of the batch size histogram buckets.
pub const BATCH_SIZE_BUCKETS: [u64; 8] = [1, 2, 5, 10, 25, 50, 75, 100];

/// A cumulative histogram over fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub fn new(bounds: [u64; N]) -> Self {
        Self {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        for (i, bound) in self.bounds.iter().enumerate() {
            if value <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (Prometheus style), total count and sum.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let buckets = self
            .bounds
            .iter()
            .zip(self.buckets.iter())
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub conflicts: AtomicU64,
    pub confirmed: AtomicU64,
    pub failed: AtomicU64,
    pub parked: AtomicU64,
    pub cancelled: AtomicU64,
    pub requeued: AtomicU64,
    pub adopted: AtomicU64,
    pub envelopes_built: AtomicU64,
    pub envelopes_dead: AtomicU64,
    /// Envelopes that could no longer apply before their fate was proven.
    pub envelopes_closed: AtomicU64,
    pub submissions: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub actors_spawned: AtomicU64,
    pub overloaded: AtomicU64,
    pub worker_restarts: AtomicU64,
    /// Payouts not kept in the ready queue for lack of room (read back from the journal).
    pub spilled: AtomicU64,
    /// Payout actors alive right now.
    pub live_actors: AtomicI64,
    /// Channel workers running, those with a live envelope, those disabled.
    pub channels_running: AtomicI64,
    pub channels_busy: AtomicI64,
    pub channels_disabled: AtomicI64,
    /// Payouts in the ready queue.
    pub ready_queue: AtomicI64,
    /// Envelopes not proven yet that can no longer apply (their payouts wait).
    pub envelopes_unresolved: AtomicI64,
    /// Unresolved envelopes older than the ledger server's history (an operator must look).
    pub envelopes_beyond_history: AtomicI64,
    /// Requests waiting in the broker for this consumer group (undelivered + unacknowledged),
    /// and the age of the oldest, in milliseconds (read by the broker ingress).
    pub broker_waiting: AtomicI64,
    pub broker_oldest_waiting_ms: AtomicI64,
    /// What the service's scheduled reconciliation found (set by the service).
    pub reconcile: ReconcileGauges,
    /// 1 while paying is paused cluster-wide (as this instance last read it), else 0.
    pub paused: AtomicI64,
    /// Times this instance's circuit breaker paused the cluster.
    pub breaker_trips: AtomicU64,
    /// Envelopes refused by the journal because paying was paused.
    pub prepares_paused: AtomicU64,
    /// Payouts held by a spending limit, and released again when their window moved on.
    pub payouts_held: AtomicU64,
    pub payouts_released: AtomicU64,
    /// Ledger answers by outcome code (`applied`, `tx_failed`, `tx_bad_seq`, `unknown`…).
    ledger_outcomes: Mutex<BTreeMap<&'static str, u64>>,
    pub submit_latency_ms: Histogram<14>,
    pub batch_size: Histogram<8>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            requeued: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
            envelopes_built: AtomicU64::new(0),
            envelopes_dead: AtomicU64::new(0),
            envelopes_closed: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            actor_restarts: AtomicU64::new(0),
            actors_spawned: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            worker_restarts: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            live_actors: AtomicI64::new(0),
            channels_running: AtomicI64::new(0),
            channels_busy: AtomicI64::new(0),
            channels_disabled: AtomicI64::new(0),
            ready_queue: AtomicI64::new(0),
            envelopes_unresolved: AtomicI64::new(0),
            envelopes_beyond_history: AtomicI64::new(0),
            broker_waiting: AtomicI64::new(0),
            broker_oldest_waiting_ms: AtomicI64::new(0),
            reconcile: ReconcileGauges::default(),
            paused: AtomicI64::new(0),
            breaker_trips: AtomicU64::new(0),
            prepares_paused: AtomicU64::new(0),
            payouts_held: AtomicU64::new(0),
            payouts_released: AtomicU64::new(0),
            ledger_outcomes: Mutex::new(BTreeMap::new()),
            submit_latency_ms: Histogram::new(LATENCY_BUCKETS_MS),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
        }
    }
}

/// The scheduled reconciliation of journal and ledger, as the service last read it from its
/// runs journal (so every instance shows the same, whichever ran the check).
#[derive(Debug, Default)]
pub struct ReconcileGauges {
    /// The scheduled check is on in this instance (the gauges are rendered only then).
    pub enabled: AtomicBool,
    /// Mismatches the last completed run found (any instance's).
    pub mismatches: AtomicI64,
    /// When the last clean run finished, unix milliseconds on this host's clock; 0 = never.
    pub last_clean_unix_ms: AtomicI64,
    /// The last ledger a completed run checked; 0 = none yet.
    pub checked_ledger: AtomicI64,
    /// Runs of this instance by result.
    pub runs_clean: AtomicU64,
    pub runs_mismatches: AtomicU64,
    pub runs_error: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn gauge(gauge: &AtomicI64, delta: i64) {
        gauge.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a ledger answer by its code; a code the core does not know counts as `other`.
    pub fn ledger_outcome(&self, code: &str) {
        // A poisoned lock only means another thread panicked mid-increment; the map is
        // still a valid map, so keep counting.
        let mut map = self
            .ledger_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *map.entry(metric_code(code)).or_insert(0) += 1;
    }

    pub fn ledger_outcomes(&self) -> BTreeMap<&'static str, u64> {
        self.ledger_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
