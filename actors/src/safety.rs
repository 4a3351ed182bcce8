//! Money safety in the core: the cluster-wide pause (the kill switch) and the circuit
//! breaker that pulls it by itself.
//!
//! **Pause.** One flag for the whole cluster, kept in the journal. While it is set no
//! instance journals a new envelope: the journal refuses the prepare itself
//! ([`PrepareError::Paused`](crate::ports::journal::PrepareError::Paused)), so a pause
//! holds at once on every instance, and each instance also reads the flag every
//! `control_poll_interval_ms` so its workers stop building in the first place. Envelopes
//! already journaled keep being submitted and looked up (abandoning them is how payments
//! get made twice), and ingress keeps accepting. Only an operator clears it.
//!
//! **Breaker.** Each instance counts, over a sliding window of `breaker_window_ms`, the
//! signals that something upstream or in the configuration is wrong: rejections that say a
//! channel's key or account is unusable (`tx_bad_auth` and its kind), payments refused for
//! the distribution account's balance (`op_underfunded`), and payouts that end `failed`
//! compared with all that settle. Past a threshold it pauses the cluster with the evidence
//! as the reason. A threshold of 0 turns that signal off.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The cluster-wide pause as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Who paused: an admin token's name, `cli:<user>`, or `circuit-breaker`.
    pub by: String,
    pub reason: String,
    /// When, in milliseconds since the Unix epoch (database clock).
    pub since_unix_ms: i64,
}

/// The name the breaker pauses under.
pub const BREAKER: &str = "circuit-breaker";

/// The breaker's thresholds, each with its unit; 0 turns a signal off. The service's
/// `[safety]` section deserializes into it directly (its keys are `breaker_` + the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// The sliding window the signals are counted over, in milliseconds.
    #[serde(rename = "breaker_window_ms")]
    pub window_ms: u64,
    /// Rejections that disable a channel (`tx_bad_auth`, `tx_insufficient_balance`, …)
    /// within the window that trip the breaker.
    #[serde(rename = "breaker_channel_rejections_max")]
    pub channel_rejections_max: u32,
    /// Payments refused with `op_underfunded` within the window that trip it.
    #[serde(rename = "breaker_underfunded_max")]
    pub underfunded_max: u32,
    /// Share of settled payouts that ended `failed` within the window, in percent, that
    /// trips it (once at least `failure_samples_min` settled).
    #[serde(rename = "breaker_failure_percent_max")]
    pub failure_percent_max: u32,
    #[serde(rename = "breaker_failure_samples_min")]
    pub failure_samples_min: u32,
}

impl BreakerConfig {
    /// Every signal off.
    pub const OFF: Self = Self {
        window_ms: 60_000,
        channel_rejections_max: 0,
        underfunded_max: 0,
        failure_percent_max: 0,
        failure_samples_min: 0,
    };
}

/// One signal the channel workers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A rejection that says a channel cannot be used.
    ChannelRejected,
    /// One payment refused for the distribution account's balance.
    Underfunded,
    /// A payout settled: `true` if it ended `failed`.
    Settled { failed: bool },
}

/// The breaker's sliding window. Not shared across instances: each trips on what it sees.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    seen: VecDeque<(Instant, Signal)>,
    tripped: bool,
    /// The journal has been seen holding a pause since the trip.
    journaled: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            seen: VecDeque::new(),
            tripped: false,
            journaled: false,
        }
    }

    /// An observation of the journal's pause. Returns whether an unpaused view may be
    /// taken: not while this breaker tripped and its pause has not been seen in the journal
    /// yet (a read from before its write is no operator's resume). A pause lifted after it
    /// was seen is one: the breaker counts afresh.
    pub fn observe(&mut self, paused: bool) -> bool {
        if paused {
            self.journaled |= self.tripped;
            return true;
        }
        if self.tripped && !self.journaled {
            return false;
        }
        self.reset();
        true
    }

    /// Records a signal; returns the evidence when this one trips the breaker (once: it
    /// stays quiet until [`reset`](Self::reset)).
    pub fn record(&mut self, signal: Signal, now: Instant) -> Option<String> {
        let c = self.config;
        if self.tripped
            || (c.channel_rejections_max == 0
                && c.underfunded_max == 0
                && c.failure_percent_max == 0)
        {
            return None;
        }
        let window = Duration::from_millis(c.window_ms);
        while self
            .seen
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            self.seen.pop_front();
        }
        self.seen.push_back((now, signal));
        let (mut rejected, mut underfunded, mut settled, mut failed) = (0u32, 0u32, 0u32, 0u32);
        for (_, s) in &self.seen {
            match s {
                Signal::ChannelRejected => rejected += 1,
                Signal::Underfunded => underfunded += 1,
                Signal::Settled { failed: f } => {
                    settled += 1;
                    failed += u32::from(*f);
                }
            }
        }
        let secs = c.window_ms / 1_000;
        let evidence = if c.channel_rejections_max > 0 && rejected >= c.channel_rejections_max {
            Some(format!(
                "{rejected} rejections that make a channel unusable (tx_bad_auth and the like) within {secs} s (breaker_channel_rejections_max {})",
                c.channel_rejections_max
            ))
        } else if c.underfunded_max > 0 && underfunded >= c.underfunded_max {
            Some(format!(
                "{underfunded} payments refused with op_underfunded within {secs} s (breaker_underfunded_max {})",
                c.underfunded_max
            ))
        } else if c.failure_percent_max > 0
            && settled >= c.failure_samples_min.max(1)
            && u64::from(failed) * 100 >= u64::from(c.failure_percent_max) * u64::from(settled)
        {
            Some(format!(
                "{failed} of {settled} settled payouts failed within {secs} s (breaker_failure_percent_max {}%)",
                c.failure_percent_max
            ))
        } else {
            None
        };
        if evidence.is_some() {
            self.tripped = true;
            self.seen.clear();
        }
        evidence
    }

    /// After an operator resumed: count afresh.
    pub fn reset(&mut self) {
        self.tripped = false;
        self.journaled = false;
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window_ms: 10_000,
            channel_rejections_max: 3,
            underfunded_max: 5,
            failure_percent_max: 50,
            failure_samples_min: 4,
        }
    }

    #[test]
    fn trips_once_on_a_spike_of_channel_rejections() {
        let mut b = Breaker::new(config());
        let t = Instant::now();
        assert!(b.record(Signal::ChannelRejected, t).is_none());
        assert!(b.record(Signal::ChannelRejected, t).is_none());
        let why = b.record(Signal::ChannelRejected, t).expect("trips");
        assert!(why.contains("3 rejections"), "{why}");
        assert!(b.record(Signal::ChannelRejected, t).is_none(), "once");
        // A read from before the breaker's pause was written does not reset it.
        assert!(!b.observe(false));
        assert!(
            b.record(Signal::ChannelRejected, t).is_none(),
            "still tripped"
        );
        assert!(b.observe(true));
        // The operator lifts it: counted afresh.
        assert!(b.observe(false));
        assert!(b.record(Signal::ChannelRejected, t).is_none());
    }

    #[test]
    fn signals_older_than_the_window_do_not_count() {
        let mut b = Breaker::new(config());
        let t = Instant::now();
        b.record(Signal::ChannelRejected, t);
        b.record(Signal::ChannelRejected, t);
        let later = t + Duration::from_millis(10_001);
        assert!(b.record(Signal::ChannelRejected, later).is_none());
    }

    #[test]
    fn the_failure_rate_needs_enough_samples() {
        let mut b = Breaker::new(config());
        let t = Instant::now();
        assert!(b.record(Signal::Settled { failed: true }, t).is_none());
        assert!(b.record(Signal::Settled { failed: true }, t).is_none());
        assert!(b.record(Signal::Settled { failed: false }, t).is_none());
        let why = b
            .record(Signal::Settled { failed: false }, t)
            .expect("2 of 4");
        assert!(why.contains("2 of 4"), "{why}");
    }

    #[test]
    fn off_never_trips() {
        let mut b = Breaker::new(BreakerConfig::OFF);
        let t = Instant::now();
        for _ in 0..1_000 {
            assert!(b.record(Signal::ChannelRejected, t).is_none());
            assert!(b.record(Signal::Settled { failed: true }, t).is_none());
        }
    }
}
