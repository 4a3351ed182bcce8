//! The journal held against the ledger at the end of a test. Every payment from the
//! distribution account is mapped to its payout through the journal: the envelope with that
//! transaction hash, its member list (`envelopes.member_ids`, in operation order) and the
//! payment's operation index. Then: every payout is confirmed and paid exactly once, by the
//! transaction the journal names; no payment is outside a journaled envelope; no envelope
//! the journal declared dead is on the ledger; no envelope is still live.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use payoutd_simulator::AppliedPayment;
use sqlx::{PgPool, Row};

use crate::support::simadmin::SimAdmin;

pub struct PayoutRow {
    pub state: String,
    pub tx_hash: Option<String>,
    pub attempt: i32,
    pub reason: Option<String>,
}

pub struct EnvelopeRow {
    /// The payouts of the transaction, in operation order.
    pub members: Vec<String>,
    pub status: String,
    /// How it ended (for a dead one: the proof).
    pub note: Option<String>,
}

/// The journal's payouts, keyed by id.
pub async fn payouts(pool: &PgPool) -> BTreeMap<String, PayoutRow> {
    sqlx::query("SELECT payout_id, state, tx_hash, attempt, reason FROM payouts")
        .fetch_all(pool)
        .await
        .expect("read payouts")
        .into_iter()
        .map(|r| {
            (
                r.get("payout_id"),
                PayoutRow {
                    state: r.get("state"),
                    tx_hash: r.get("tx_hash"),
                    attempt: r.get("attempt"),
                    reason: r.get("reason"),
                },
            )
        })
        .collect()
}

/// The journal's envelopes, keyed by transaction hash.
pub async fn envelopes(pool: &PgPool) -> HashMap<String, EnvelopeRow> {
    sqlx::query("SELECT tx_hash, member_ids, status, note FROM envelopes")
        .fetch_all(pool)
        .await
        .expect("read envelopes")
        .into_iter()
        .map(|r| {
            (
                r.get("tx_hash"),
                EnvelopeRow {
                    members: r.get("member_ids"),
                    status: r.get("status"),
                    note: r.get("note"),
                },
            )
        })
        .collect()
}

/// What the audit found.
#[derive(Default)]
pub struct Audit {
    pub expected: usize,
    pub confirmed: usize,
    /// Payouts with more than one payment on the ledger, and the most any had.
    pub paid_twice: usize,
    pub most_payments: usize,
    pub unpaid: usize,
    /// Payouts that were in more than one envelope.
    pub rebuilt: usize,
    pub ledger_payments: usize,
    pub outside_journal: usize,
    pub envelopes: usize,
    pub envelopes_dead: usize,
    /// Dead envelopes that are on the ledger.
    pub dead_but_applied: usize,
    pub violations: Vec<String>,
}

impl Audit {
    /// Holds the journal of `pool` against the ledger, for the payouts `expected`.
    pub async fn run(
        pool: &PgPool,
        sim: &SimAdmin,
        distribution: &str,
        expected: &[String],
    ) -> Self {
        let journal = payouts(pool).await;
        let envelopes = envelopes(pool).await;
        let mut a = Audit {
            expected: expected.len(),
            envelopes: envelopes.len(),
            envelopes_dead: envelopes.values().filter(|e| e.status == "dead").count(),
            ..Audit::default()
        };
        let mut paid_by: HashMap<String, Vec<AppliedPayment>> = HashMap::new();
        let mut dead_seen = std::collections::HashSet::new();
        for p in sim
            .payments(None)
            .await
            .into_iter()
            .filter(|p| p.source == distribution)
        {
            a.ledger_payments += 1;
            let Some(env) = envelopes.get(&p.tx_hash) else {
                a.outside_journal += 1;
                a.violations.push(format!(
                    "payment in tx {} (op {}, ledger {}) is in no journaled envelope",
                    p.tx_hash, p.op_index, p.ledger
                ));
                continue;
            };
            if env.status == "dead" && dead_seen.insert(p.tx_hash.clone()) {
                a.dead_but_applied += 1;
                a.violations.push(format!(
                    "tx {} of {:?} is in ledger {} but the journal declared it dead: {:?}",
                    p.tx_hash, env.members, p.ledger, env.note
                ));
            }
            let Some(member) = env.members.get(p.op_index as usize) else {
                a.outside_journal += 1;
                a.violations.push(format!(
                    "tx {} pays at operation {} but has only {} journaled members",
                    p.tx_hash,
                    p.op_index,
                    env.members.len()
                ));
                continue;
            };
            paid_by.entry(member.clone()).or_default().push(p);
        }
        for (hash, env) in &envelopes {
            if env.status == "live" {
                a.violations.push(format!(
                    "envelope {hash} of {:?} is still live at the end",
                    env.members
                ));
            }
        }
        for id in expected {
            let paid = paid_by.remove(id).unwrap_or_default();
            a.most_payments = a.most_payments.max(paid.len());
            if paid.len() > 1 {
                a.paid_twice += 1;
                let hashes: Vec<&str> = paid.iter().map(|p| p.tx_hash.as_str()).collect();
                a.violations.push(format!(
                    "DOUBLE PAYMENT: {id} paid {} times (tx {hashes:?})",
                    paid.len()
                ));
            }
            let Some(row) = journal.get(id) else {
                a.violations
                    .push(format!("{id} was accepted but is not in the journal"));
                continue;
            };
            if row.state == "confirmed" {
                a.confirmed += 1;
            } else {
                a.violations.push(format!(
                    "{id} is {} at the end, not confirmed ({:?})",
                    row.state, row.reason
                ));
            }
            match paid.as_slice() {
                [] => {
                    a.unpaid += 1;
                    a.violations
                        .push(format!("{id} has no payment on the ledger ({})", row.state));
                }
                [p] if row.state == "confirmed" && row.tx_hash.as_deref() != Some(&p.tx_hash) => {
                    a.violations.push(format!(
                        "{id} is confirmed by tx {:?} but paid by tx {}",
                        row.tx_hash, p.tx_hash
                    ));
                }
                _ => {}
            }
            if row.attempt > 1 {
                a.rebuilt += 1;
            }
        }
        for (id, paid) in paid_by {
            a.outside_journal += paid.len();
            a.violations.push(format!(
                "{id} was paid on the ledger but is not one of the test's payouts"
            ));
        }
        a
    }

    /// Fails the test with every violation found.
    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.violations.is_empty(),
            "{what}: {self}\n  - {}",
            self.violations
                .iter()
                .take(60)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  - ")
        );
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} payouts: {} confirmed, {} paid twice or more (at most {} payments), {} unpaid, \
             {} in more than one envelope; {} payments from the distribution account, {} outside the journal; {} envelopes, \
             {} declared dead, {} of those on the ledger; {} violations",
            self.expected,
            self.confirmed,
            self.paid_twice,
            self.most_payments,
            self.unpaid,
            self.rebuilt,
            self.ledger_payments,
            self.outside_journal,
            self.envelopes,
            self.envelopes_dead,
            self.dead_but_applied,
            self.violations.len()
        )
    }
}

/// The payouts that have at least one payment on the ledger (mapped as above).
pub async fn paid_ids(
    pool: &PgPool,
    sim: &SimAdmin,
    distribution: &str,
) -> std::collections::HashSet<String> {
    let envelopes = envelopes(pool).await;
    sim.payments(None)
        .await
        .into_iter()
        .filter(|p| p.source == distribution)
        .filter_map(|p| {
            envelopes
                .get(&p.tx_hash)
                .and_then(|e| e.members.get(p.op_index as usize).cloned())
        })
        .collect()
}
