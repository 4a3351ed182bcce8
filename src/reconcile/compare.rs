//! The comparison itself: what the journal says of a ledger range against what the ledger
//! shows, as pure data in and findings out (no I/O; `super::Reconciler` gathers both sides).
//!
//! Journal → ledger: every settled envelope in the range is on the ledger with the same
//! outcome, ledger and fee; every dead envelope built in the range is not, and its
//! sequence was used by another transaction or its time or ledger window has passed; every
//! confirmed payout in the range has its payment; no failed payout has one.
//!
//! Ledger → journal: every value-moving operation of the distribution account is the
//! operation of a journaled envelope at the payout's place in it (`member_ids[op_index]`),
//! with the payout's destination, asset and amount, and the payout says it was paid there;
//! every transaction a payoutd account sent is a journaled envelope.

use std::collections::{BTreeMap, HashMap, HashSet};

use payoutd_stellar::history::{HistoryWindow, LedgerOp, LedgerTx, OpKind};
use serde::Serialize;

// The journal's side is read by `storage::reconcile`, which owns its row types.
pub use crate::storage::reconcile::{
    EnvelopeStatus, JournalEnvelope, JournalFacts, JournalPayout, Requested,
};

/// The ledger's side: the range, what the server held, and what it showed.
#[derive(Debug, Clone)]
pub struct LedgerFacts {
    pub from: u32,
    pub to: u32,
    /// Read after the journal snapshot: every dead envelope in it was proven by then.
    pub window: HistoryWindow,
    pub distribution: String,
    /// Accounts payoutd sends transactions from (the distribution and channel accounts).
    pub sources: HashSet<String>,
    /// Transactions of the scanned accounts by hash: the range, and for the sources of
    /// dead envelopes that needed it, the ledgers after it up to `window.latest`.
    pub txs: HashMap<String, LedgerTx>,
    /// Operations of the distribution account in the range.
    pub ops: Vec<LedgerOp>,
}

/// What a finding is about. `Note` kinds do not count as mismatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A value-moving operation of the distribution account that no journaled envelope
    /// explains: a key used outside payoutd, or a bug.
    UnknownOutflow,
    /// A settled envelope whose transaction is not on the ledger in the range.
    EnvelopeNotOnLedger,
    /// Applied in the journal, failed on the ledger, or the other way round.
    EnvelopeOutcome,
    EnvelopeLedger,
    EnvelopeFee,
    /// The journal declared it dead, the ledger included it.
    DeadEnvelopeOnLedger,
    /// The journal declared it dead, but it could still be included: its sequence number
    /// is unused and its time and ledger window is still open.
    DeadEnvelopeUnproven,
    /// The operation's destination, asset or amount is not the payout's.
    PaymentDiffers,
    /// A confirmed payout whose payment is not on the ledger.
    PayoutUnpaid,
    /// The ledger paid the payout, the payout row says otherwise (state, hash or index).
    PayoutState,
    /// A failed payout with a payment on the ledger.
    FailedPayoutPaid,
    /// More than one payment on the ledger for one payout.
    PayoutPaidTwice,
    /// A journal row that does not read back (an edited or corrupt request, a member id
    /// without a payout row).
    JournalUnreadable,
    /// Note: a transaction sent by a payoutd account that the journal does not know and
    /// that moved none of the distribution account's value (a failed one, trustline or
    /// option changes, a channel's own use).
    ForeignTransaction,
    /// Note: an operation of the distribution account that moves no value (a trustline,
    /// options, an offer).
    OtherOperation,
}

impl Kind {
    pub fn is_mismatch(&self) -> bool {
        !matches!(self, Self::ForeignTransaction | Self::OtherOperation)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownOutflow => "unknown_outflow",
            Self::EnvelopeNotOnLedger => "envelope_not_on_ledger",
            Self::EnvelopeOutcome => "envelope_outcome",
            Self::EnvelopeLedger => "envelope_ledger",
            Self::EnvelopeFee => "envelope_fee",
            Self::DeadEnvelopeOnLedger => "dead_envelope_on_ledger",
            Self::DeadEnvelopeUnproven => "dead_envelope_unproven",
            Self::PaymentDiffers => "payment_differs",
            Self::PayoutUnpaid => "payout_unpaid",
            Self::PayoutState => "payout_state",
            Self::FailedPayoutPaid => "failed_payout_paid",
            Self::PayoutPaidTwice => "payout_paid_twice",
            Self::JournalUnreadable => "journal_unreadable",
            Self::ForeignTransaction => "foreign_transaction",
            Self::OtherOperation => "other_operation",
        }
    }
}

/// One finding with its evidence: what the journal says and what the ledger shows, each a
/// map of field to value (amounts as decimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout_id: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub journal_says: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ledger_says: BTreeMap<&'static str, String>,
}

impl Finding {
    fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            tx_hash: None,
            ledger: None,
            op_index: None,
            payout_id: None,
            journal_says: BTreeMap::new(),
            ledger_says: BTreeMap::new(),
        }
    }

    fn tx(mut self, hash: &str, ledger: Option<u32>) -> Self {
        self.tx_hash = Some(hash.to_owned());
        self.ledger = ledger;
        self
    }

    fn at(mut self, hash: Option<&str>, ledger: Option<u32>) -> Self {
        self.tx_hash = hash.map(str::to_owned);
        self.ledger = ledger;
        self
    }

    fn op(mut self, op_index: u32) -> Self {
        self.op_index = Some(op_index);
        self
    }

    fn payout(mut self, id: &str) -> Self {
        self.payout_id = Some(id.to_owned());
        self
    }

    fn journal(mut self, key: &'static str, value: impl ToString) -> Self {
        self.journal_says.insert(key, value.to_string());
        self
    }

    fn ledger(mut self, key: &'static str, value: impl ToString) -> Self {
        self.ledger_says.insert(key, value.to_string());
        self
    }

    fn sort_key(&self) -> (u32, String, u32, String, Kind) {
        (
            self.ledger.unwrap_or(u32::MAX),
            self.tx_hash.clone().unwrap_or_default(),
            self.op_index.unwrap_or(u32::MAX),
            self.payout_id.clone().unwrap_or_default(),
            self.kind,
        )
    }
}

/// A live envelope: in flight, reported with its age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub tx_hash: String,
    pub source: String,
    pub sequence: i64,
    pub payouts: usize,
    pub built_ledger: u32,
    pub age_seconds: i64,
    /// The ledger it is in, if the ledger already shows it (the journal has not recorded
    /// it yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_ledger: Option<u32>,
}

/// Payments matched per asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Total {
    pub asset: String,
    pub payments: u64,
    /// Decimal, 7 places at most, like the API's amounts.
    pub amount: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub envelopes_applied: u64,
    pub envelopes_failed: u64,
    pub envelopes_dead: u64,
    pub envelopes_live: u64,
    pub payouts_confirmed: u64,
    pub payouts_failed: u64,
    /// Transactions in the range sent by payoutd's accounts.
    pub ledger_transactions: u64,
    /// Value-moving operations of the distribution account in the range.
    pub ledger_payments: u64,
    /// Of those, the ones that are a payout's payment, as the journal says.
    pub payments_matched: u64,
    /// Fees of the journaled transactions in the range, in stroops.
    pub fees_charged_stroops: i64,
    pub mismatches: u64,
    pub notes: u64,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub mismatches: Vec<Finding>,
    pub notes: Vec<Finding>,
    pub in_flight: Vec<InFlight>,
    pub counts: Counts,
    pub totals: Vec<Total>,
    /// Where the next run without a range starts: after the range, or at the first ledger
    /// of the range holding a transaction of a live envelope (to see it settled).
    pub resume_ledger: u32,
}

/// `stroops` as a decimal: `12.5`, `100`, `0.0000001`.
pub fn decimal(stroops: i128) -> String {
    const UNIT: i128 = 10_000_000;
    let sign = if stroops < 0 { "-" } else { "" };
    let v = stroops.unsigned_abs();
    let (whole, frac) = (v / UNIT as u128, v % UNIT as u128);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let digits = format!("{frac:07}");
        format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

fn short(account: &str) -> String {
    if account.len() > 12 {
        format!("{}…{}", &account[..5], &account[account.len() - 4..])
    } else {
        account.to_owned()
    }
}

/// Whether a dead envelope's fate is settled by these transactions: it is among them, or
/// its source used its sequence number (or a later one) in one of them.
pub fn dead_resolved(e: &JournalEnvelope, txs: &HashMap<String, LedgerTx>) -> bool {
    txs.contains_key(&e.hash)
        || txs
            .values()
            .any(|t| t.source == e.source && t.sequence >= e.sequence)
}

/// Whether an envelope can no longer be included after the ledger `window.latest`.
fn window_passed(e: &JournalEnvelope, window: &HistoryWindow) -> bool {
    window.latest_close_time > e.max_time
        || e.max_ledger.is_some_and(|m| m > 0 && window.latest >= m)
}

/// Whether the journal's operation kind of a payout is the ledger's kind of its operation.
fn kind_matches(journaled: &str, ledger: &OpKind) -> bool {
    matches!(
        (journaled, ledger),
        ("payment", OpKind::Payment)
            | ("claimable_balance", OpKind::CreateClaimableBalance)
            | ("create_account", OpKind::CreateAccount)
    )
}

/// How an operation differs from the payout it pays: the names of the fields.
fn differences(op: &LedgerOp, req: &Requested) -> Vec<&'static str> {
    let mut out = Vec::new();
    let asset = req.asset.to_string();
    let account = req.destination.account().to_strkey();
    match op.kind {
        OpKind::Payment => {
            if op.destination.as_deref() != Some(req.destination.to_strkey().as_str()) {
                out.push("destination");
            }
        }
        OpKind::CreateAccount => {
            if op.destination.as_deref() != Some(account.as_str()) {
                out.push("destination");
            }
        }
        OpKind::CreateClaimableBalance => {
            if !op.claimants.contains(&account) {
                out.push("destination");
            }
        }
        // payoutd never builds these.
        OpKind::PathPayment | OpKind::AccountMerge | OpKind::Other(_) => out.push("kind"),
    }
    if op.asset.as_deref() != Some(asset.as_str()) {
        out.push("asset");
    }
    if op.amount_stroops != Some(req.amount_stroops) {
        out.push("amount");
    }
    out
}

fn op_evidence(f: Finding, op: &LedgerOp) -> Finding {
    let mut f = f.ledger("kind", op.kind.name());
    if let Some(d) = &op.destination {
        f = f.ledger("destination", d);
    }
    if !op.claimants.is_empty() {
        f = f.ledger("claimants", op.claimants.join(","));
    }
    if let Some(a) = &op.asset {
        f = f.ledger("asset", a);
    }
    if let Some(a) = op.amount_stroops {
        f = f.ledger("amount", decimal(i128::from(a)));
    }
    f
}

fn request_evidence(f: Finding, req: &Requested) -> Finding {
    f.journal("destination", req.destination.to_strkey())
        .journal("asset", req.asset.to_string())
        .journal("amount", decimal(i128::from(req.amount_stroops)))
}

fn what_op(op: &LedgerOp) -> String {
    let amount = op
        .amount_stroops
        .map(|a| decimal(i128::from(a)))
        .unwrap_or_else(|| "the whole balance".to_owned());
    let to = match (&op.destination, op.claimants.first()) {
        (Some(d), _) => short(d),
        (None, Some(c)) => format!("a claimable balance for {}", short(c)),
        (None, None) => "?".to_owned(),
    };
    format!(
        "{} of {amount} {} to {to}",
        op.kind.name(),
        op.asset.as_deref().unwrap_or("?")
    )
}

/// One comparison under way: both sides, the findings so far, and what several passes
/// share.
struct Comparison<'a> {
    j: &'a JournalFacts,
    l: &'a LedgerFacts,
    f: Findings,
    /// Dead envelopes already reported as found on the ledger.
    reported_dead: HashSet<&'a str>,
    /// Transactions in which the distribution account moved value.
    outflow_txs: HashSet<&'a str>,
    /// Where the ledger paid each payout: (tx hash, ledger, operation index).
    paid: BTreeMap<&'a str, Vec<(&'a str, u32, u32)>>,
    /// Payments and their sum per asset.
    totals: BTreeMap<String, (u64, i128)>,
    /// Payouts whose state was already reported against what the ledger paid.
    state_reported: HashSet<&'a str>,
}

impl<'a> Comparison<'a> {
    fn new(j: &'a JournalFacts, l: &'a LedgerFacts) -> Self {
        let outflow_txs = l
            .ops
            .iter()
            .filter(|o| o.source == l.distribution && o.kind.moves_value())
            .map(|o| o.tx_hash.as_str())
            .collect();
        Self {
            j,
            l,
            f: Findings {
                resume_ledger: l.to.saturating_add(1),
                ..Findings::default()
            },
            reported_dead: HashSet::new(),
            outflow_txs,
            paid: BTreeMap::new(),
            totals: BTreeMap::new(),
            state_reported: HashSet::new(),
        }
    }

    /// Ledger → journal: every transaction a payoutd account sent in the range.
    // Long because: one pass over the ledger's transactions, each check a finding of its
    // own, in the order docs/reconcile.md lists them
    fn ledger_transactions(&mut self) {
        let (j, l): (&'a JournalFacts, &'a LedgerFacts) = (self.j, self.l);
        let in_range = |ledger: u32| l.from <= ledger && ledger <= l.to;
        let Self {
            f,
            reported_dead,
            outflow_txs,
            ..
        } = self;
        let mut txs: Vec<&LedgerTx> = l.txs.values().collect();
        txs.sort_by(|a, b| (a.ledger, &a.paging_token).cmp(&(b.ledger, &b.paging_token)));
        for t in txs.iter().filter(|t| in_range(t.ledger)) {
            if !l.sources.contains(&t.source) {
                continue;
            }
            f.counts.ledger_transactions += 1;
            let Some(e) = j.envelopes.get(&t.hash) else {
                if !(t.successful && outflow_txs.contains(t.hash.as_str())) {
                    f.notes.push(
                        Finding::new(
                            Kind::ForeignTransaction,
                            format!(
                                "a {} transaction from {} (sequence {}) that payoutd did not build",
                                if t.successful { "successful" } else { "failed" },
                                short(&t.source),
                                t.sequence
                            ),
                        )
                        .tx(&t.hash, Some(t.ledger))
                        .ledger("source", &t.source)
                        .ledger("sequence", t.sequence)
                        .ledger("successful", t.successful),
                    );
                }
                continue;
            };
            match e.status {
                EnvelopeStatus::Live => {
                    f.resume_ledger = f.resume_ledger.min(t.ledger);
                }
                EnvelopeStatus::Dead => {
                    reported_dead.insert(e.hash.as_str());
                    f.mismatches.push(
                        Finding::new(
                            Kind::DeadEnvelopeOnLedger,
                            format!(
                                "the journal declared this envelope dead, but the ledger {} it in ledger {}",
                                if t.successful { "applied" } else { "included (failed)" },
                                t.ledger
                            ),
                        )
                        .tx(&t.hash, Some(t.ledger))
                        .journal("status", "dead")
                        .journal("payouts", e.member_ids.join(","))
                        .ledger("successful", t.successful)
                        .ledger("fee_charged_stroops", t.fee_charged),
                    );
                }
                EnvelopeStatus::Applied | EnvelopeStatus::Failed => {
                    if e.ledger.is_none_or(|x| !in_range(x)) {
                        f.mismatches.push(
                            Finding::new(
                                Kind::EnvelopeLedger,
                                format!(
                                    "the journal says {} in ledger {}, the ledger has it in {}",
                                    e.status.as_str(),
                                    e.ledger.map_or("?".to_owned(), |x| x.to_string()),
                                    t.ledger
                                ),
                            )
                            .tx(&t.hash, Some(t.ledger))
                            .journal(
                                "ledger",
                                e.ledger.map_or("none".to_owned(), |x| x.to_string()),
                            )
                            .ledger("ledger", t.ledger),
                        );
                    }
                }
            }
        }
    }

    /// Journal → ledger: settled envelopes of the range.
    // Long because: one pass over the settled envelopes, each check a finding of its own,
    // in the order docs/reconcile.md lists them
    fn settled_envelopes(&mut self) {
        let (j, l): (&'a JournalFacts, &'a LedgerFacts) = (self.j, self.l);
        let in_range = |ledger: u32| l.from <= ledger && ledger <= l.to;
        let Self { f, .. } = self;
        for hash in &j.settled {
            let Some(e) = j.envelopes.get(hash) else {
                continue;
            };
            match e.status {
                EnvelopeStatus::Applied => f.counts.envelopes_applied += 1,
                _ => f.counts.envelopes_failed += 1,
            }
            let journal_ledger = e.ledger.unwrap_or(0);
            let Some(t) = l.txs.get(hash).filter(|t| in_range(t.ledger)) else {
                f.mismatches.push(
                    Finding::new(
                        Kind::EnvelopeNotOnLedger,
                        format!(
                            "the journal says {} in ledger {journal_ledger}; the ledger has no such transaction in ledgers {}..={}",
                            e.status.as_str(),
                            l.from,
                            l.to
                        ),
                    )
                    .tx(hash, Some(journal_ledger))
                    .journal("status", e.status.as_str())
                    .journal("ledger", journal_ledger)
                    .journal("source", &e.source)
                    .journal("sequence", e.sequence)
                    .journal("payouts", e.member_ids.join(",")),
                );
                continue;
            };
            if let Some(fee) = e.fee_charged {
                f.counts.fees_charged_stroops = f.counts.fees_charged_stroops.saturating_add(fee);
            }
            let says_applied = e.status == EnvelopeStatus::Applied;
            if says_applied != t.successful {
                f.mismatches.push(
                    Finding::new(
                        Kind::EnvelopeOutcome,
                        format!(
                            "the journal says {}, the ledger says {}",
                            e.status.as_str(),
                            if t.successful { "applied" } else { "failed" }
                        ),
                    )
                    .tx(hash, Some(t.ledger))
                    .journal("status", e.status.as_str())
                    .ledger("successful", t.successful),
                );
            }
            if e.ledger != Some(t.ledger) {
                f.mismatches.push(
                    Finding::new(
                        Kind::EnvelopeLedger,
                        format!(
                            "the journal says ledger {journal_ledger}, the ledger has it in {}",
                            t.ledger
                        ),
                    )
                    .tx(hash, Some(t.ledger))
                    .journal("ledger", journal_ledger)
                    .ledger("ledger", t.ledger),
                );
            }
            if e.fee_charged != Some(t.fee_charged) {
                f.mismatches.push(
                    Finding::new(
                        Kind::EnvelopeFee,
                        format!(
                            "the journal says a fee of {} stroops, the ledger charged {}",
                            e.fee_charged.map_or("?".to_owned(), |x| x.to_string()),
                            t.fee_charged
                        ),
                    )
                    .tx(hash, Some(t.ledger))
                    .journal(
                        "fee_charged_stroops",
                        e.fee_charged.map_or("none".to_owned(), |x| x.to_string()),
                    )
                    .ledger("fee_charged_stroops", t.fee_charged),
                );
            }
        }
    }

    /// Ledger → journal: the distribution account's operations.
    fn distribution_operations(&mut self) {
        let l: &'a LedgerFacts = self.l;
        for op in l
            .ops
            .iter()
            .filter(|o| l.from <= o.ledger && o.ledger <= l.to)
        {
            self.operation(op);
        }
        self.paid_twice();
    }

    /// Payouts the ledger paid more than once.
    fn paid_twice(&mut self) {
        let Self { f, paid, .. } = self;
        for (id, list) in paid.iter() {
            if list.len() > 1 {
                let places: Vec<String> = list
                    .iter()
                    .map(|(h, i, l)| format!("{h} op {i} (ledger {l})"))
                    .collect();
                f.mismatches.push(
                    Finding::new(
                        Kind::PayoutPaidTwice,
                        format!("{} payments on the ledger for one payout", list.len()),
                    )
                    .payout(id)
                    .ledger("payments", places.join("; ")),
                );
            }
        }
    }

    /// One operation of the distribution account in the range.
    // Long because it walks one operation through the questions in order (moves value? a
    // payoutd envelope? which member? the right payout? paid as asked?), and the first answer
    // that is wrong is the finding; each question needs what the earlier ones found.
    fn operation(&mut self, op: &'a LedgerOp) {
        let (j, l): (&'a JournalFacts, &'a LedgerFacts) = (self.j, self.l);
        let Self {
            f,
            paid,
            totals,
            state_reported,
            ..
        } = self;
        if op.source != l.distribution {
            return;
        }
        if !op.kind.moves_value() {
            f.notes.push(
                Finding::new(
                    Kind::OtherOperation,
                    format!(
                        "a {} operation of the distribution account (moves no value)",
                        op.kind.name()
                    ),
                )
                .tx(&op.tx_hash, Some(op.ledger))
                .op(op.op_index)
                .ledger("kind", op.kind.name()),
            );
            return;
        }
        f.counts.ledger_payments += 1;
        let unknown = |why: String| {
            op_evidence(
                Finding::new(Kind::UnknownOutflow, why)
                    .tx(&op.tx_hash, Some(op.ledger))
                    .op(op.op_index),
                op,
            )
        };
        let Some(e) = j.envelopes.get(&op.tx_hash) else {
            f.mismatches.push(unknown(format!(
                "a {} from the distribution account that no journaled envelope explains",
                what_op(op)
            )));
            return;
        };
        let Some(id) = e.member_ids.get(op.op_index as usize) else {
            f.mismatches.push(unknown(format!(
                "operation {} ({}) of a journaled envelope of {} payouts",
                op.op_index,
                what_op(op),
                e.member_ids.len()
            )));
            return;
        };
        paid.entry(id.as_str())
            .or_default()
            .push((op.tx_hash.as_str(), op.op_index, op.ledger));
        let Some(p) = j.payouts.get(id) else {
            f.mismatches.push(
                Finding::new(
                    Kind::JournalUnreadable,
                    format!("envelope member {id} has no payout row"),
                )
                .tx(&op.tx_hash, Some(op.ledger))
                .op(op.op_index)
                .payout(id),
            );
            return;
        };
        let req = match &p.request {
            Ok(req) => req,
            Err(why) => {
                f.mismatches.push(
                    Finding::new(
                        Kind::JournalUnreadable,
                        format!("the stored request does not read back: {why}"),
                    )
                    .tx(&op.tx_hash, Some(op.ledger))
                    .op(op.op_index)
                    .payout(id),
                );
                return;
            }
        };
        let mut diffs = differences(op, req);
        if !kind_matches(&p.op_kind, &op.kind) && !diffs.contains(&"kind") {
            diffs.push("kind");
        }
        if !diffs.is_empty() {
            f.mismatches.push(op_evidence(
                request_evidence(
                    Finding::new(
                        Kind::PaymentDiffers,
                        format!(
                            "the ledger's {} differs from the payout in {}",
                            what_op(op),
                            diffs.join(", ")
                        ),
                    )
                    .tx(&op.tx_hash, Some(op.ledger))
                    .op(op.op_index)
                    .payout(id),
                    req,
                ),
                op,
            ));
        }
        match e.status {
            // The journal will record it (or has, after its snapshot): the next run sees it.
            EnvelopeStatus::Live => return,
            // Reported with its transaction.
            EnvelopeStatus::Dead => return,
            EnvelopeStatus::Applied | EnvelopeStatus::Failed => {}
        }
        let paid_here = p.state == "confirmed"
            && p.tx_hash.as_deref() == Some(op.tx_hash.as_str())
            && p.op_index == Some(op.op_index);
        if !paid_here {
            state_reported.insert(id.as_str());
            let kind = if p.state == "failed" {
                Kind::FailedPayoutPaid
            } else {
                Kind::PayoutState
            };
            f.mismatches.push(
                Finding::new(
                    kind,
                    format!(
                        "the ledger paid this payout here; the journal has it {} in {} at operation {}",
                        p.state,
                        p.tx_hash.as_deref().unwrap_or("no transaction"),
                        p.op_index.map_or("?".to_owned(), |x| x.to_string())
                    ),
                )
                .tx(&op.tx_hash, Some(op.ledger))
                .op(op.op_index)
                .payout(id)
                .journal("state", &p.state)
                .journal("tx_hash", p.tx_hash.as_deref().unwrap_or("none"))
                .journal(
                    "op_index",
                    p.op_index.map_or("none".to_owned(), |x| x.to_string()),
                ),
            );
            return;
        }
        if diffs.is_empty() {
            f.counts.payments_matched += 1;
            let t = totals.entry(req.asset.to_string()).or_default();
            t.0 += 1;
            t.1 += i128::from(req.amount_stroops);
        }
    }

    /// Journal → ledger: confirmed and failed payouts of the range.
    fn settled_payouts(&mut self) {
        let j: &'a JournalFacts = self.j;
        let Self {
            f,
            paid,
            state_reported,
            ..
        } = self;
        let mut confirmed: Vec<&String> = j.confirmed.iter().collect();
        confirmed.sort();
        for id in confirmed {
            f.counts.payouts_confirmed += 1;
            let Some(p) = j.payouts.get(id) else { continue };
            let found = paid.get(id.as_str()).is_some_and(|list| {
                list.iter()
                    .any(|(h, i, _)| p.tx_hash.as_deref() == Some(*h) && p.op_index == Some(*i))
            });
            if !found && !state_reported.contains(id.as_str()) {
                f.mismatches.push(
                    Finding::new(
                        Kind::PayoutUnpaid,
                        format!(
                            "confirmed in ledger {}, but the ledger shows no payment for it at operation {} of its transaction",
                            p.ledger.map_or("?".to_owned(), |x| x.to_string()),
                            p.op_index.map_or("?".to_owned(), |x| x.to_string())
                        ),
                    )
                    .at(p.tx_hash.as_deref(), p.ledger)
                    .payout(id)
                    .journal("state", &p.state)
                    .journal("ledger", p.ledger.map_or("none".to_owned(), |x| x.to_string())),
                );
            }
        }
        let mut failed: Vec<&String> = j.failed.iter().collect();
        failed.sort();
        for id in failed {
            f.counts.payouts_failed += 1;
            if paid.contains_key(id.as_str()) && !state_reported.contains(id.as_str()) {
                f.mismatches.push(
                    Finding::new(
                        Kind::FailedPayoutPaid,
                        "failed in the journal, but the ledger shows a payment for it",
                    )
                    .payout(id),
                );
            }
        }
    }

    /// Dead envelopes built in the range.
    fn dead_envelopes(&mut self) {
        let (j, l): (&'a JournalFacts, &'a LedgerFacts) = (self.j, self.l);
        let Self {
            f, reported_dead, ..
        } = self;
        for hash in &j.dead {
            let Some(e) = j.envelopes.get(hash) else {
                continue;
            };
            f.counts.envelopes_dead += 1;
            if let Some(t) = l.txs.get(hash) {
                if !reported_dead.contains(hash.as_str()) {
                    f.mismatches.push(
                        Finding::new(
                            Kind::DeadEnvelopeOnLedger,
                            format!(
                                "the journal declared this envelope dead, but the ledger {} it in ledger {}",
                                if t.successful { "applied" } else { "included (failed)" },
                                t.ledger
                            ),
                        )
                        .tx(hash, Some(t.ledger))
                        .journal("status", "dead")
                        .ledger("successful", t.successful),
                    );
                }
                continue;
            }
            let used = l
                .txs
                .values()
                .any(|t| t.source == e.source && t.sequence >= e.sequence);
            if used || window_passed(e, &l.window) {
                continue;
            }
            f.mismatches.push(
                Finding::new(
                    Kind::DeadEnvelopeUnproven,
                    format!(
                        "the journal declared this envelope dead, but it could still be included: sequence {} of {} is unused up to ledger {} and its window is open (max time {}, latest close {})",
                        e.sequence,
                        short(&e.source),
                        l.window.latest,
                        e.max_time,
                        l.window.latest_close_time
                    ),
                )
                .tx(hash, None)
                .journal("status", "dead")
                .journal("source", &e.source)
                .journal("sequence", e.sequence)
                .journal("max_time", e.max_time)
                .ledger("latest_ledger", l.window.latest)
                .ledger("latest_close_time", l.window.latest_close_time),
            );
        }
    }

    /// Live envelopes: in flight.
    fn live_envelopes(&mut self) {
        let (j, l): (&'a JournalFacts, &'a LedgerFacts) = (self.j, self.l);
        let Self { f, .. } = self;
        for hash in &j.live {
            let Some(e) = j.envelopes.get(hash) else {
                continue;
            };
            f.counts.envelopes_live += 1;
            f.in_flight.push(InFlight {
                tx_hash: e.hash.clone(),
                source: e.source.clone(),
                sequence: e.sequence,
                payouts: e.member_ids.len(),
                built_ledger: e.built_ledger,
                age_seconds: e.age_ms.max(0) / 1000,
                on_ledger: l.txs.get(hash).map(|t| t.ledger),
            });
        }
        f.in_flight
            .sort_by(|a, b| (a.built_ledger, &a.tx_hash).cmp(&(b.built_ledger, &b.tx_hash)));
    }
}

/// Compares the two sides. `findings.resume_ledger` is `to + 1` unless something in the
/// range is still in flight.
pub fn compare(j: &JournalFacts, l: &LedgerFacts) -> Findings {
    let mut c = Comparison::new(j, l);
    c.ledger_transactions();
    c.settled_envelopes();
    c.distribution_operations();
    c.settled_payouts();
    c.dead_envelopes();
    c.live_envelopes();
    let Comparison { mut f, totals, .. } = c;
    f.totals = totals
        .into_iter()
        .map(|(asset, (payments, sum))| Total {
            asset,
            payments,
            amount: decimal(sum),
        })
        .collect();
    f.mismatches.sort_by_key(Finding::sort_key);
    f.notes.sort_by_key(Finding::sort_key);
    f.counts.mismatches = f.mismatches.len() as u64;
    f.counts.notes = f.notes.len() as u64;
    f
}

#[cfg(test)]
mod tests {
    use payoutd_actors::domain::{AccountId, Asset, Destination};

    use super::*;

    const DIST: [u8; 32] = [1; 32];
    const CHAN: [u8; 32] = [2; 32];
    const DEST: [u8; 32] = [3; 32];

    fn acct(k: [u8; 32]) -> String {
        AccountId::from_bytes(k).to_strkey()
    }

    fn hash(n: u8) -> String {
        hex::encode([n; 32])
    }

    fn window() -> HistoryWindow {
        HistoryWindow {
            network_passphrase: "test".into(),
            elder: 1,
            latest: 30,
            latest_close_time: 1_000,
        }
    }

    fn envelope(
        n: u8,
        status: EnvelopeStatus,
        ledger: Option<u32>,
        members: &[&str],
    ) -> JournalEnvelope {
        JournalEnvelope {
            hash: hash(n),
            source: acct(CHAN),
            sequence: 100 + i64::from(n),
            max_time: 2_000,
            max_ledger: None,
            built_ledger: 10,
            member_ids: members.iter().map(|m| m.to_string()).collect(),
            status,
            ledger,
            fee_charged: ledger.map(|_| 100 * members.len() as i64),
            age_ms: 5_000,
        }
    }

    fn payout(
        id: &str,
        state: &str,
        tx: Option<(u8, u32)>,
        ledger: Option<u32>,
        amount: i64,
    ) -> JournalPayout {
        JournalPayout {
            payout_id: id.into(),
            state: state.into(),
            request: Ok(Requested {
                destination: Destination::Account(AccountId::from_bytes(DEST)),
                asset: Asset::Native,
                amount_stroops: amount,
            }),
            tx_hash: tx.map(|(n, _)| hash(n)),
            op_index: tx.map(|(_, i)| i),
            ledger,
            op_kind: "payment".into(),
        }
    }

    fn tx(n: u8, ledger: u32, successful: bool, ops: u32) -> LedgerTx {
        LedgerTx {
            hash: hash(n),
            ledger,
            close_time: 900,
            successful,
            source: acct(CHAN),
            sequence: 100 + i64::from(n),
            fee_charged: 100 * i64::from(ops),
            operation_count: ops,
            paging_token: ((u64::from(ledger) << 32) | (u64::from(n) << 12)).to_string(),
        }
    }

    fn pay(n: u8, ledger: u32, index: u32, amount: i64) -> LedgerOp {
        LedgerOp {
            tx_hash: hash(n),
            ledger,
            op_index: index,
            close_time: 900,
            source: acct(DIST),
            kind: OpKind::Payment,
            destination: Some(acct(DEST)),
            claimants: Vec::new(),
            asset: Some("native".into()),
            amount_stroops: Some(amount),
            paging_token: ((u64::from(ledger) << 32) | (u64::from(n) << 12) | u64::from(index + 1))
                .to_string(),
        }
    }

    /// A batch of two applied in ledger 12, a batch of two failed in 13 (its second member
    /// failed, the first was paid later in 14).
    fn clean() -> (JournalFacts, LedgerFacts) {
        let mut j = JournalFacts::default();
        for e in [
            envelope(1, EnvelopeStatus::Applied, Some(12), &["a", "b"]),
            envelope(2, EnvelopeStatus::Failed, Some(13), &["c", "d"]),
            envelope(3, EnvelopeStatus::Applied, Some(14), &["c"]),
        ] {
            j.settled.push(e.hash.clone());
            j.envelopes.insert(e.hash.clone(), e);
        }
        for p in [
            payout("a", "confirmed", Some((1, 0)), Some(12), 10),
            payout("b", "confirmed", Some((1, 1)), Some(12), 20),
            payout("c", "confirmed", Some((3, 0)), Some(14), 30),
            payout("d", "failed", Some((2, 1)), Some(13), 40),
        ] {
            if p.state == "confirmed" {
                j.confirmed.push(p.payout_id.clone());
            } else {
                j.failed.push(p.payout_id.clone());
            }
            j.payouts.insert(p.payout_id.clone(), p);
        }
        let l = LedgerFacts {
            from: 10,
            to: 20,
            window: window(),
            distribution: acct(DIST),
            sources: [acct(DIST), acct(CHAN)].into_iter().collect(),
            txs: [tx(1, 12, true, 2), tx(2, 13, false, 2), tx(3, 14, true, 1)]
                .into_iter()
                .map(|t| (t.hash.clone(), t))
                .collect(),
            ops: vec![pay(1, 12, 0, 10), pay(1, 12, 1, 20), pay(3, 14, 0, 30)],
        };
        (j, l)
    }

    fn kinds(f: &Findings) -> Vec<Kind> {
        f.mismatches.iter().map(|m| m.kind).collect()
    }

    #[test]
    fn a_clean_range_agrees() {
        let (j, l) = clean();
        let f = compare(&j, &l);
        assert_eq!(kinds(&f), vec![], "{:#?}", f.mismatches);
        assert_eq!(f.counts.payments_matched, 3);
        assert_eq!(f.counts.envelopes_applied, 2);
        assert_eq!(f.counts.envelopes_failed, 1);
        assert_eq!(f.counts.fees_charged_stroops, 500);
        assert_eq!(f.resume_ledger, 21);
        assert_eq!(
            f.totals,
            vec![Total {
                asset: "native".into(),
                payments: 3,
                amount: "0.000006".into()
            }]
        );
    }

    #[test]
    fn each_discrepancy_is_named() {
        // An outflow nobody journaled.
        let (j, mut l) = clean();
        l.txs.insert(hash(9), tx(9, 15, true, 1));
        l.txs.get_mut(&hash(9)).unwrap().source = acct(DIST);
        l.ops.push(pay(9, 15, 0, 99));
        assert_eq!(kinds(&compare(&j, &l)), vec![Kind::UnknownOutflow]);
        // A confirmed payout whose transaction is missing.
        let (j, mut l) = clean();
        l.txs.remove(&hash(3));
        l.ops.retain(|o| o.tx_hash != hash(3));
        assert_eq!(
            kinds(&compare(&j, &l)),
            vec![Kind::EnvelopeNotOnLedger, Kind::PayoutUnpaid]
        );
        // An amount edited in the journal.
        let (mut j, l) = clean();
        if let Ok(r) = &mut j.payouts.get_mut("b").unwrap().request {
            r.amount_stroops = 21;
        }
        let f = compare(&j, &l);
        assert_eq!(kinds(&f), vec![Kind::PaymentDiffers]);
        assert_eq!(f.mismatches[0].journal_says["amount"], "0.0000021");
        assert_eq!(f.mismatches[0].ledger_says["amount"], "0.000002");
        // An envelope declared dead whose transaction applied.
        let (mut j, l) = clean();
        j.envelopes.get_mut(&hash(1)).unwrap().status = EnvelopeStatus::Dead;
        j.settled.retain(|h| *h != hash(1));
        j.dead.push(hash(1));
        assert_eq!(kinds(&compare(&j, &l)), vec![Kind::DeadEnvelopeOnLedger]);
        // A failed payout that the ledger paid, and a payout paid twice.
        let (mut j, mut l) = clean();
        j.envelopes.get_mut(&hash(3)).unwrap().member_ids = vec!["d".into()];
        l.ops.push(pay(1, 12, 1, 20));
        let k = kinds(&compare(&j, &l));
        assert!(k.contains(&Kind::FailedPayoutPaid), "{k:?}");
        assert!(k.contains(&Kind::PayoutPaidTwice), "{k:?}");
    }

    #[test]
    fn dead_envelopes_need_a_proof() {
        let (mut j, mut l) = clean();
        let mut e = envelope(5, EnvelopeStatus::Dead, None, &["x"]);
        e.sequence = 500;
        j.dead.push(e.hash.clone());
        j.envelopes.insert(e.hash.clone(), e.clone());
        // Open window, sequence unused: not proven.
        assert_eq!(kinds(&compare(&j, &l)), vec![Kind::DeadEnvelopeUnproven]);
        assert!(!dead_resolved(&e, &l.txs));
        // Its window passed by the latest ledger.
        l.window.latest_close_time = 2_001;
        assert_eq!(kinds(&compare(&j, &l)), vec![]);
        // Or its sequence was used by another transaction.
        l.window.latest_close_time = 1_000;
        let mut other = tx(6, 16, true, 1);
        other.sequence = 500;
        l.txs.insert(other.hash.clone(), other);
        assert!(dead_resolved(&e, &l.txs));
        assert_eq!(kinds(&compare(&j, &l)), vec![]);
    }

    #[test]
    fn live_envelopes_hold_the_resume_point_and_claimable_balances_match_by_claimant() {
        let (mut j, mut l) = clean();
        let e = envelope(7, EnvelopeStatus::Live, None, &["y"]);
        j.live.push(e.hash.clone());
        j.envelopes.insert(e.hash.clone(), e);
        let mut y = payout("y", "submitted", Some((7, 0)), None, 70);
        y.op_kind = "claimable_balance".into();
        j.payouts.insert("y".into(), y);
        l.txs.insert(hash(7), tx(7, 16, true, 1));
        let mut cb = pay(7, 16, 0, 70);
        cb.kind = OpKind::CreateClaimableBalance;
        cb.destination = None;
        cb.claimants = vec![acct(DEST)];
        l.ops.push(cb.clone());
        let f = compare(&j, &l);
        assert_eq!(kinds(&f), vec![]);
        // The same balance for a payout the journal says a payment pays: the kind differs.
        j.payouts.get_mut("y").unwrap().op_kind = "payment".into();
        let f = compare(&j, &l);
        assert_eq!(kinds(&f), vec![Kind::PaymentDiffers]);
        assert!(
            f.mismatches[0].detail.contains("kind"),
            "{:?}",
            f.mismatches[0]
        );
        j.payouts.get_mut("y").unwrap().op_kind = "claimable_balance".into();
        let f = compare(&j, &l);
        assert_eq!(kinds(&f), vec![]);
        assert_eq!(f.resume_ledger, 16);
        assert_eq!(f.in_flight.len(), 1);
        assert_eq!(f.in_flight[0].on_ledger, Some(16));
        assert_eq!(f.in_flight[0].age_seconds, 5);
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal(125_000_000), "12.5");
        assert_eq!(decimal(1), "0.0000001");
        assert_eq!(decimal(1_000_000_000), "100");
        assert_eq!(decimal(i128::from(i64::MAX) * 2), "1844674407370.9551614");
    }
}
