//! Simulator configuration: network, ledger close cadence, fees, persistence and faults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default ledger capacity in operations (the public network's classic limit).
pub const DEFAULT_OPS_PER_LEDGER_MAX: u32 = 1_000;
/// Default history window of the Stellar RPC interface, in ledgers: RPC's stock window
/// (seven days of 5-second ledgers).
pub const DEFAULT_RPC_RETENTION_LEDGERS: u32 = 120_960;

/// When ledgers close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseMode {
    /// Only [`crate::Simulator::close_ledger`] or `POST /sim/close_ledger` close a ledger.
    /// Close times advance by `close_time_step_s`, independent of the wall clock.
    Manual,
    /// A task started by [`crate::spawn`] (or [`crate::spawn_closer`]) closes a ledger every
    /// `close_interval_ms`, empty or not. Close time is `max(previous + 1, now)`.
    Interval { close_interval_ms: u64 },
    /// Every accepted submission closes a ledger at once. Close time is `max(previous, now)`,
    /// so thousands of ledgers a second do not run the ledger clock ahead of the wall clock.
    Instant,
}

/// Everything a [`crate::Simulator`] needs to start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The network passphrase; its sha256 is the network id that transaction hashes commit to.
    pub network_passphrase: String,
    /// When ledgers close.
    pub close_mode: CloseMode,
    /// How long `POST /transactions` waits for inclusion before answering 504.
    pub submit_wait_ms: u64,
    /// Seeds the fault-injection RNG, so a run with faults can be replayed.
    pub seed: u64,
    /// The faults injected from the start (changeable at runtime).
    pub faults: Faults,
    /// If set: the state is loaded from here on start and written after every change.
    pub state_file: Option<PathBuf>,
    /// Unix seconds of ledger 1's close time; `None` = now.
    pub genesis_close_time: Option<u64>,
    /// Close time step between ledgers in [`CloseMode::Manual`].
    pub close_time_step_s: u64,
    /// Minimum fee per operation, in stroops (changeable at runtime).
    pub base_fee_stroops: i64,
    /// Base reserve in stroops: an account must keep `(2 + trustlines) * base_reserve`
    /// of XLM that neither fees nor payments may spend (the real network's rule, 0.5 XLM).
    /// Set 0 to let accounts spend down to zero.
    pub base_reserve_stroops: i64,
    /// Ledger capacity in operations (at least 1). When the open ledger holds more, the
    /// transactions with the highest fee per operation go first and the rest wait for a
    /// later ledger (surge pricing). The public network's classic limit is 1000.
    pub ops_per_ledger_max: u32,
    /// How many ledgers of history the Stellar RPC interface keeps (at least 1): its
    /// `oldestLedger` is `max(genesis, latest - rpc_retention_ledgers + 1)`, or the node's
    /// elder ledger under [`Faults::history_retention_ledgers`] if that is later.
    pub rpc_retention_ledgers: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            network_passphrase: crate::TESTNET_PASSPHRASE.to_owned(),
            close_mode: CloseMode::Manual,
            submit_wait_ms: 30_000,
            seed: 0,
            faults: Faults::default(),
            state_file: None,
            genesis_close_time: None,
            close_time_step_s: 5,
            base_fee_stroops: 100,
            base_reserve_stroops: 5_000_000,
            ops_per_ledger_max: DEFAULT_OPS_PER_LEDGER_MAX,
            rpc_retention_ledgers: DEFAULT_RPC_RETENTION_LEDGERS,
        }
    }
}

/// Faults injected into the Horizon and Stellar RPC answers.
///
/// In JSON (`PUT /sim/faults`) every field may be left out; it then takes the value of
/// [`Faults::default`] (everything off, `p_lookup_lagging` 1.0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added to every Horizon and RPC answer (not to `/sim/*` admin answers).
    pub latency_ms: u64,
    /// Probability that a submission answers 503 or 500 without accepting the transaction.
    pub p_5xx_before_apply: f64,
    /// Probability that a submission is accepted and applied normally, but answered with a
    /// 504 timeout instead of its result (the "lost answer" that causes double payments).
    pub p_lose_answer_after_apply: f64,
    /// The next `count` submissions are rejected with `code` before inclusion.
    pub reject_next: Option<RejectNext>,
    /// How many ledgers the lagging node is behind the head (0 = no lagging node). It has
    /// ingested `max(genesis, head - lookup_lag_ledgers)`; lookups, listings, re-posts and
    /// RPC reads it serves do not see transactions in later ledgers, and RPC's
    /// `getLedgerEntries` shows accounts as they were at its latest ledger.
    pub lookup_lag_ledgers: u32,
    /// Probability that a lookup by hash, a history listing page, a submission or an RPC
    /// ledger read is served by the lagging node (drawn per request from the seeded RNG).
    /// Only matters while `lookup_lag_ledgers > 0`.
    pub p_lookup_lagging: f64,
    /// How many ledgers of history a node keeps (0 = all): its elder ledger is
    /// `max(genesis, latest - history_retention_ledgers + 1)`, and transactions in older
    /// ledgers are invisible to lookups and re-posts. History is hidden, never deleted:
    /// the state file and `/sim/payments` keep all of it.
    pub history_retention_ledgers: u32,
    /// Probability that core answers a submission TRY_AGAIN_LATER (its queue is full)
    /// without accepting it: Horizon's 503 `transaction_submission_try_again_later`, the
    /// async and RPC status `TRY_AGAIN_LATER`. Drawn, from a stream of its own, after the
    /// checks that come first in core (an envelope that is invalid or already pending is
    /// answered as such).
    pub p_try_again_later: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            p_5xx_before_apply: 0.0,
            p_lose_answer_after_apply: 0.0,
            reject_next: None,
            lookup_lag_ledgers: 0,
            // A lag, once set, applies to every request unless a probability says otherwise.
            p_lookup_lagging: 1.0,
            history_retention_ledgers: 0,
            p_try_again_later: 0.0,
        }
    }
}

/// Reject the next `count` submissions with a transaction result code such as
/// `tx_insufficient_fee` or `tx_bad_seq`; nothing is consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectNext {
    pub code: String,
    pub count: u32,
}

/// How many faults of each kind were injected since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Answers delayed by `latency_ms`.
    pub latency: u64,
    /// Submissions answered 5xx without being accepted.
    pub server_errors_before_apply: u64,
    /// Submissions applied but answered 504.
    pub answers_lost_after_apply: u64,
    /// Submissions rejected by `reject_next`.
    pub rejected_by_code: u64,
    /// Lookups by hash, listing pages, submissions and RPC reads served by the lagging node
    /// (while a lag is set).
    #[serde(default)]
    pub answers_from_lagging_node: u64,
    /// Lookups answered 404 (RPC: `NOT_FOUND`) and re-posts answered by core (`tx_bad_seq`)
    /// because the transaction is in a ledger the lagging node has not ingested yet.
    #[serde(default)]
    pub transactions_hidden_by_lag: u64,
    /// Lookups answered 404 (RPC: `NOT_FOUND`) and re-posts answered by core because the
    /// transaction is in a ledger older than the answering node's elder ledger (RPC: its
    /// `oldestLedger`).
    #[serde(default)]
    pub transactions_hidden_by_pruning: u64,
    /// Submissions answered TRY_AGAIN_LATER by `p_try_again_later`.
    #[serde(default)]
    pub try_again_later_injected: u64,
}
