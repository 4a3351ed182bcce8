//! How the core pays and retries: the bounds (each with its unit) and the tables that say
//! what each ledger result code leads to (docs/result-codes.md is the same table in words).

use crate::destinations::OpKind;
use crate::domain::AccountId;

/// Largest number of operations a Stellar transaction may hold.
pub const OPERATIONS_PER_TX_MAX: usize = 100;

/// The core's bounds. The service builds it from its settings (`[payouts]`, `[safety]`,
/// `[destinations]`, whose defaults are `config/default.toml`); the core reads no
/// configuration of its own.
#[derive(Debug, Clone)]
pub struct PayoutPolicy {
    /// The distribution account: every payment operation's source, whose balance pays out.
    pub payer: AccountId,
    /// Fee per operation offered by a channel's first envelope, in stroops (network
    /// minimum 100).
    pub fee_per_op_stroops: u32,
    /// Ceiling for the fee per operation after surges, in stroops.
    pub fee_per_op_max_stroops: u32,
    /// An envelope's `max_time` = the last ledger's close time + this, in seconds.
    pub tx_validity_s: u64,
    /// Envelopes one payout may be in before it is parked for an operator.
    pub attempts_max: u32,
    /// Payment operations per transaction, 1..=100 (1: one payout per transaction).
    pub payments_per_tx_max: usize,
    /// A batch that is not full is closed this long after its first payout arrived, in
    /// milliseconds.
    pub batch_linger_ms: u64,
    /// Pause between two checks (resubmit, look up) of an envelope whose fate is not
    /// known, in milliseconds.
    pub poll_interval_ms: u64,
    /// Pause before retrying after the journal or the ledger was unreachable, in ms.
    pub io_retry_ms: u64,
    /// Pause before a payout whose payment was `op_underfunded` joins a batch again, in ms.
    pub underfunded_retry_ms: u64,
    /// A payout actor with no message for this long stops (passivates), in milliseconds.
    pub idle_passivate_ms: u64,
    /// When the circuit breaker pauses paying (`BreakerConfig::OFF` here; the service's
    /// defaults turn it on).
    pub breaker: crate::safety::BreakerConfig,
    /// What pays a destination with no trustline or no account (default: nothing, the
    /// payout fails with the code).
    pub destinations: crate::destinations::DestinationPolicy,
}

impl PayoutPolicy {
    /// A policy for tests: round figures near the service's defaults, the breaker off.
    /// Not in the production API (the service builds its policy from its settings).
    #[cfg(any(test, feature = "test-support"))]
    pub fn new(payer: AccountId) -> Self {
        Self {
            payer,
            fee_per_op_stroops: 100,
            fee_per_op_max_stroops: 100_000,
            tx_validity_s: 60,
            attempts_max: 10,
            payments_per_tx_max: OPERATIONS_PER_TX_MAX,
            batch_linger_ms: 20,
            poll_interval_ms: 1_000,
            io_retry_ms: 500,
            underfunded_retry_ms: 30_000,
            idle_passivate_ms: 5_000,
            breaker: crate::safety::BreakerConfig::OFF,
            destinations: crate::destinations::DestinationPolicy::default(),
        }
    }

    /// The next fee per operation after a surge: twice the current, within the bounds.
    pub fn raised_fee(&self, current_per_op: u32) -> u32 {
        current_per_op
            .max(self.fee_per_op_stroops)
            .saturating_mul(2)
            .min(self.fee_per_op_max_stroops)
    }
}

/// What a member's own operation result in a failed transaction means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPolicy {
    /// Its operation would have succeeded: only a sibling failed. Joins a batch again now.
    Retry,
    /// Its operation failed for a reason that may pass (the distribution account may be
    /// topped up): joins a batch again after `underfunded_retry_ms`.
    RetryLater,
    /// The payment cannot succeed as asked: the payout fails with the code.
    Terminal,
    /// The service's configuration is wrong (a signer is missing): parked for an operator.
    Park,
}

/// What `code`, the result of a member's own operation of kind `kind`, means for it
/// (before `destinations::reroute` is asked whether another kind can pay it).
pub fn op_policy(kind: OpKind, code: &str) -> OpPolicy {
    match (kind, code) {
        (_, "op_success") => OpPolicy::Retry,
        (_, "op_underfunded") => OpPolicy::RetryLater,
        // A claimable balance locks one base reserve of the distribution account per
        // claimant: the account is short of XLM, which a top-up fixes.
        (OpKind::ClaimableBalance, "op_low_reserve") => OpPolicy::RetryLater,
        (_, "op_bad_auth" | "op_no_source_account") => OpPolicy::Park,
        _ => OpPolicy::Terminal,
    }
}

/// What a rejection before inclusion means for the envelope's channel and members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionPolicy {
    /// The envelope may still (or later) be valid: keep submitting it until it is applied,
    /// failed or provably dead.
    WaitUntilDead,
    /// The channel account cannot be used (its key or its account is wrong, it cannot pay
    /// fees): the channel stops building envelopes; the envelope is watched until dead and
    /// its payouts then go to other channels.
    DisableChannel,
    /// The envelope can never be valid (a bug): its payouts are parked for an operator,
    /// keeping the envelope until it is provably dead.
    ParkMembers,
}

pub fn rejection_policy(code: &str) -> RejectionPolicy {
    match code {
        "tx_bad_auth"
        | "tx_bad_auth_extra"
        | "tx_no_source_account"
        | "tx_no_account"
        | "tx_insufficient_balance"
        | "tx_bad_sponsorship" => RejectionPolicy::DisableChannel,
        "tx_malformed" | "tx_not_supported" | "tx_missing_operation" | "transaction_malformed" => {
            RejectionPolicy::ParkMembers
        }
        _ => RejectionPolicy::WaitUntilDead,
    }
}

/// Every ledger result code the core knows by name; anything else is counted as `other`
/// in metrics, so a server cannot grow the label set without bound.
pub const KNOWN_CODES: &[&str] = &[
    "applied",
    "pending",
    "unknown",
    "tx_failed",
    "tx_fee_bump_inner_failed",
    "tx_too_early",
    "tx_too_late",
    "tx_missing_operation",
    "tx_bad_seq",
    "tx_bad_auth",
    "tx_insufficient_balance",
    "tx_no_source_account",
    "tx_no_account",
    "tx_insufficient_fee",
    "tx_bad_auth_extra",
    "tx_internal_error",
    "tx_not_supported",
    "tx_bad_sponsorship",
    "tx_bad_minseq_age_or_gap",
    "tx_malformed",
    "tx_soroban_invalid",
    "transaction_malformed",
    "op_success",
    "op_malformed",
    "op_underfunded",
    "op_src_no_trust",
    "op_src_not_authorized",
    "op_no_destination",
    "op_no_trust",
    "op_not_authorized",
    "op_line_full",
    "op_no_issuer",
    "op_bad_auth",
    "op_no_source_account",
    "op_not_supported",
    "op_too_many_subentries",
    "op_exceeded_work_limit",
    "op_too_many_sponsoring",
    "op_already_exists",
    "op_low_reserve",
    "op_inner",
];

/// `code` if the core knows it, else `"other"` (for metric labels).
pub fn metric_code(code: &str) -> &'static str {
    KNOWN_CODES
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_become_other() {
        assert_eq!(metric_code("tx_bad_seq"), "tx_bad_seq");
        assert_eq!(metric_code("tx_\u{1F4A9}_made_up"), "other");
        assert_eq!(metric_code(""), "other");
    }

    #[test]
    fn fee_raise_is_bounded() {
        let mut p = PayoutPolicy::new(AccountId::from_bytes([1; 32]));
        p.fee_per_op_max_stroops = 1_000;
        assert_eq!(p.raised_fee(100), 200);
        assert_eq!(p.raised_fee(0), 200);
        assert_eq!(p.raised_fee(800), 1_000);
        assert_eq!(p.raised_fee(u32::MAX), 1_000);
    }
}
