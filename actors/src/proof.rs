//! The proof of death: when an envelope can be declared dead (it never applied and never
//! will), so that its payouts may join another one. Written once, over facts that carry the
//! ledger they were observed at; every ledger adapter supplies those facts from its own
//! answers (docs/protocol.md, "Proof of death").
//!
//! An envelope with sequence number `s`, time bound `max_time`, built when the head was
//! ledger `b`, can only be included in a ledger after `b`. Facts:
//! - **expired at X**: ledger `X` closed after `max_time`, so the envelope cannot be in
//!   ledger `X` or any later one;
//! - **consumed at Y**: as of ledger `Y`, the source's sequence number was `≥ s`, so the
//!   envelope cannot be in a ledger after `Y` (by this envelope or another: unknown);
//! - **unused at U**: as of ledger `U`, the source's sequence number was `< s`, so the
//!   envelope was in no ledger up to `U` (it would have set the sequence to `s`);
//! - **absent through L**: a server whose history reached back to `b + 1` (or earlier) and
//!   had ingested up to ledger `L` did not have it, so it is in no ledger up to `L`.
//!
//! Dead when (1) expired at `X` and unused at some `U ≥ X`: no lookup needed; or (2) absent
//! through `L` with `L ≥ X` or `L ≥ Y`. A "not found" from a server that lags behind the
//! other facts, or whose history does not reach back far enough, proves nothing. Sequence
//! numbers only grow and close times only grow, so every fact stays true once observed and
//! facts from different servers and different moments may be combined.

use crate::ports::ledger::{Coverage, LedgerHead, SequenceRead};

/// What is known about one envelope's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It may still be included: keep submitting the same bytes.
    Open,
    /// It can no longer be included, but whether it was is not proven yet: its payouts wait
    /// (its channel may move on: the next envelope uses a later sequence number).
    Closed,
    /// It never applied and never will.
    Dead,
}

/// The facts gathered about one envelope, strongest first (each is kept at its most useful
/// value: the earliest expiry, the earliest consumption, the latest unused read, the
/// furthest absence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    sequence: i64,
    max_time: u64,
    first_ledger: u32,
    expired_at: Option<u32>,
    consumed_at: Option<u32>,
    unused_at: Option<u32>,
    absent_through: Option<u32>,
    /// The last miss that proved nothing because its server's history begins after
    /// `first_ledger` (pruned, or a retention window the envelope has left).
    history_gap: Option<Coverage>,
}

impl Watch {
    /// `first_ledger`: the first ledger the envelope could be in (the head when it was
    /// built, plus one).
    pub fn new(sequence: i64, max_time: u64, first_ledger: u32) -> Self {
        Self {
            sequence,
            max_time,
            first_ledger,
            expired_at: None,
            consumed_at: None,
            unused_at: None,
            absent_through: None,
            history_gap: None,
        }
    }

    pub fn observe_head(&mut self, head: LedgerHead) {
        if head.close_time > self.max_time {
            self.expired_at = Some(min_some(self.expired_at, head.sequence));
        }
    }

    pub fn observe_sequence(&mut self, read: SequenceRead) {
        // A read that does not say as of which ledger, or of an account that does not
        // exist, says nothing about time.
        let (Some(sequence), Some(ledger)) = (read.sequence, read.as_of_ledger) else {
            return;
        };
        if sequence >= self.sequence {
            self.consumed_at = Some(min_some(self.consumed_at, ledger));
        } else {
            self.unused_at = Some(self.unused_at.map_or(ledger, |u| u.max(ledger)));
        }
    }

    /// A lookup that did not find the transaction, with what the answering server covered.
    pub fn observe_miss(&mut self, coverage: Option<Coverage>) {
        let Some(c) = coverage else { return };
        if c.latest < c.oldest {
            return;
        }
        if c.oldest <= self.first_ledger {
            self.absent_through = Some(self.absent_through.map_or(c.latest, |a| a.max(c.latest)));
            self.history_gap = None;
        } else {
            self.history_gap = Some(c);
        }
    }

    /// Why no lookup can settle this envelope, if that is so: it can no longer be included,
    /// it is not proven dead, and the last server asked no longer holds the ledgers it may
    /// be in (its history begins after the envelope's first possible ledger). Its payouts
    /// keep the envelope; only an operator with a fuller history can tell what happened.
    pub fn beyond_history(&self) -> Option<String> {
        if self.fate() != Fate::Closed {
            return None;
        }
        let gap = self.history_gap?;
        Some(format!(
            "the transaction may be in ledgers {}..{} and the server's history now begins at ledger {} (it keeps ledgers {}..={}): \
             no lookup there can find it or prove it dead; check a full-history source (e.g. a Horizon with full history) for hash and sequence",
            self.first_ledger, gap.oldest, gap.oldest, gap.oldest, gap.latest
        ))
    }

    /// The source's sequence was seen at or past the envelope's: a later envelope of this
    /// channel needs a later sequence number, so the channel may move on.
    pub fn consumed(&self) -> bool {
        self.consumed_at.is_some()
    }

    pub fn fate(&self) -> Fate {
        if self.death().is_some() {
            Fate::Dead
        } else if self.expired_at.is_some() || self.consumed_at.is_some() {
            Fate::Closed
        } else {
            Fate::Open
        }
    }

    /// The proof, in words, if the envelope is dead.
    pub fn death(&self) -> Option<String> {
        if let (Some(x), Some(u)) = (self.expired_at, self.unused_at)
            && u >= x
        {
            return Some(format!(
                "expired: ledger {x} closed past max_time {}, and the source sequence was still below {} as of ledger {u}",
                self.max_time, self.sequence
            ));
        }
        let absent = self.absent_through?;
        if let Some(x) = self.expired_at
            && absent >= x
        {
            return Some(format!(
                "expired: ledger {x} closed past max_time {}, and the transaction is in no ledger from {} to {absent}",
                self.max_time, self.first_ledger
            ));
        }
        if let Some(y) = self.consumed_at
            && absent >= y
        {
            return Some(format!(
                "superseded: the source sequence reached {} by ledger {y}, and the transaction is in no ledger from {} to {absent}",
                self.sequence, self.first_ledger
            ));
        }
        None
    }

    /// Why the envelope is not proven dead yet (for logs and the payout's reason).
    pub fn pending_reason(&self) -> String {
        match (self.expired_at.or(self.consumed_at), self.absent_through) {
            (None, _) => "may still be included".to_owned(),
            (Some(bound), None) => format!(
                "can no longer be included after ledger {bound}; no lookup yet covers ledgers {}..={bound}",
                self.first_ledger
            ),
            (Some(bound), Some(a)) => format!(
                "can no longer be included after ledger {bound}; lookups so far cover ledgers {}..={a} only",
                self.first_ledger
            ),
        }
    }
}

fn min_some(current: Option<u32>, seen: u32) -> u32 {
    current.map_or(seen, |c| c.min(seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: i64 = 1_000;
    const MAX_TIME: u64 = 500;

    /// Built when the head was ledger 100: it can be in ledger 101 at the earliest.
    fn watch() -> Watch {
        Watch::new(SEQ, MAX_TIME, 101)
    }

    fn head(sequence: u32, close_time: u64) -> LedgerHead {
        LedgerHead {
            sequence,
            close_time,
        }
    }

    fn seq(sequence: i64, ledger: u32) -> SequenceRead {
        SequenceRead {
            sequence: Some(sequence),
            as_of_ledger: Some(ledger),
        }
    }

    fn cov(oldest: u32, latest: u32) -> Option<Coverage> {
        Some(Coverage { oldest, latest })
    }

    #[test]
    fn fresh_is_open() {
        let mut w = watch();
        w.observe_head(head(110, MAX_TIME));
        w.observe_sequence(seq(SEQ - 1, 110));
        w.observe_miss(cov(1, 110));
        assert_eq!(w.fate(), Fate::Open);
    }

    #[test]
    fn expired_with_the_sequence_unused_is_dead_without_a_lookup() {
        let mut w = watch();
        w.observe_head(head(120, MAX_TIME + 1));
        w.observe_sequence(seq(SEQ - 1, 119));
        assert_eq!(
            w.fate(),
            Fate::Closed,
            "an unused read before the expiry ledger"
        );
        w.observe_sequence(seq(SEQ - 1, 120));
        assert_eq!(w.fate(), Fate::Dead);
    }

    #[test]
    fn a_lagging_lookup_does_not_prove_a_consumed_sequence_dead() {
        // The source sequence is consumed as of ledger 300 (by this envelope, most likely),
        // and a node 150 ledgers behind says "not found": no evidence.
        let mut w = watch();
        w.observe_sequence(seq(SEQ, 300));
        w.observe_miss(cov(1, 150));
        assert_eq!(w.fate(), Fate::Closed);
        assert!(w.death().is_none());
        // Once a lookup covers ledger 300, the miss is proof.
        w.observe_miss(cov(1, 300));
        assert_eq!(w.fate(), Fate::Dead);
    }

    #[test]
    fn a_pruned_history_proves_nothing() {
        let mut w = watch();
        w.observe_head(head(400, MAX_TIME + 10));
        w.observe_miss(cov(102, 400)); // history starts after the first possible ledger
        assert_eq!(w.fate(), Fate::Closed);
        w.observe_miss(cov(101, 400));
        assert_eq!(w.fate(), Fate::Dead);
    }

    #[test]
    fn a_closed_envelope_past_the_history_says_so_until_a_fuller_server_answers() {
        let mut w = watch();
        w.observe_miss(cov(150, 400));
        assert_eq!(w.beyond_history(), None, "open: it may still be included");
        w.observe_sequence(seq(SEQ, 300));
        w.observe_miss(cov(150, 400));
        assert_eq!(w.fate(), Fate::Closed);
        let why = w.beyond_history().expect("flagged");
        assert!(why.contains("begins at ledger 150"), "{why}");
        w.observe_miss(cov(1, 400));
        assert_eq!(w.fate(), Fate::Dead);
        assert_eq!(w.beyond_history(), None);
    }

    #[test]
    fn an_expiry_needs_a_lookup_past_the_expiry_ledger() {
        let mut w = watch();
        w.observe_head(head(130, MAX_TIME + 5));
        w.observe_miss(cov(1, 129));
        assert_eq!(w.fate(), Fate::Closed);
        w.observe_miss(cov(1, 130));
        assert_eq!(w.fate(), Fate::Dead);
    }

    #[test]
    fn reads_without_a_ledger_prove_nothing() {
        let mut w = watch();
        w.observe_sequence(SequenceRead {
            sequence: Some(SEQ + 5),
            as_of_ledger: None,
        });
        w.observe_miss(None);
        w.observe_miss(cov(1, u32::MAX));
        assert_eq!(w.fate(), Fate::Open);
        w.observe_sequence(SequenceRead {
            sequence: None,
            as_of_ledger: Some(200),
        });
        assert_eq!(w.fate(), Fate::Open);
    }

    #[test]
    fn the_earliest_expiry_and_consumption_count() {
        let mut w = watch();
        w.observe_sequence(seq(SEQ + 3, 200));
        w.observe_sequence(seq(SEQ + 9, 900));
        w.observe_miss(cov(1, 250));
        assert_eq!(
            w.fate(),
            Fate::Dead,
            "consumed by ledger 200, absent through 250"
        );
    }

    /// Model check: for every small world (the envelope in ledger `k` or nowhere, the source
    /// sequence history, servers with any lag and pruning), `Dead` is never declared for an
    /// envelope that was included.
    #[test]
    fn never_dead_when_included() {
        // Ledgers 1..=12, the envelope built at head 2 (first possible ledger 3), max_time
        // such that ledger 8 is the first to close past it (close time = ledger number).
        let first = 3u32;
        let max_time = 7u64;
        for included in [None, Some(3u32), Some(5), Some(7)] {
            // The source sequence: one below the envelope's until the ledger it is included
            // in (or, when not included, until someone else consumes it at ledger 9 or never).
            for other_at in [None, Some(9u32), Some(4)] {
                if included.is_some() && other_at.is_some_and(|o| o < included.unwrap_or(0)) {
                    continue; // someone else consumed it first: it could not be included
                }
                let seq_at = |ledger: u32| -> i64 {
                    match (included, other_at) {
                        (Some(k), _) if ledger >= k => SEQ,
                        (None, Some(o)) if ledger >= o => SEQ + 1,
                        _ => SEQ - 1,
                    }
                };
                for head_seen in 1..=12u32 {
                    for read_at in 1..=12u32 {
                        for latest in 1..=12u32 {
                            for oldest in 1..=5u32 {
                                let mut w = Watch::new(SEQ, max_time, first);
                                w.observe_head(head(head_seen, u64::from(head_seen)));
                                w.observe_sequence(seq(seq_at(read_at), read_at));
                                let found = included.is_some_and(|k| k >= oldest && k <= latest);
                                if !found {
                                    w.observe_miss(cov(oldest, latest));
                                }
                                if included.is_some() {
                                    assert_ne!(
                                        w.fate(),
                                        Fate::Dead,
                                        "included {included:?}, other {other_at:?}, head {head_seen}, read {read_at}, cover {oldest}..={latest}: {:?}",
                                        w.death()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
