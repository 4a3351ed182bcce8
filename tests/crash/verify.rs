//! The verdict of a run: waits (bounded) until every stored payout is terminal, then holds
//! the journal against the simulated ledger. Never twice: no payout has two payments, and
//! every payment from the distribution account is an envelope the journal knows. Never
//! lost: every accepted payout is in the journal, terminal, and a confirmed one is on the
//! ledger with the journaled hash, amount and destination.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use payoutd_simulator::AppliedPayment;
use payoutd_simulator::PaymentKind;
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::Row;

use crate::feeder::FeedStats;
use crate::workload::{self, Expect, PayoutSpec};

/// Waits until every accepted payout is stored (a NATS message may still be on its way
/// through the broker) and no stored payout is active; `Err` with what is left when the
/// time runs out.
pub async fn settle(pool: &PgPool, accepted: &[String], timeout_ms: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let counts: Result<(i64, i64), sqlx::Error> = async {
            let active = sqlx::query_scalar(
                "SELECT count(*) FROM payouts WHERE state IN ('accepted','prepared','submitted')",
            )
            .fetch_one(pool)
            .await?;
            let stored =
                sqlx::query_scalar("SELECT count(*) FROM payouts WHERE payout_id = ANY($1)")
                    .bind(accepted)
                    .fetch_one(pool)
                    .await?;
            Ok((active, stored))
        }
        .await;
        match counts {
            Ok((0, stored)) if stored as usize == accepted.len() => return Ok(()),
            Ok((active, stored)) if Instant::now() >= deadline => {
                return Err(format!(
                    "{active} payouts still active and {} accepted payouts not stored",
                    accepted.len() - stored as usize
                ));
            }
            Err(e) if Instant::now() >= deadline => panic!("cannot read the journal: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A payout row as the journal holds it.
struct JournalRow {
    state: String,
    reason: Option<String>,
    attempt: i32,
    tx_hash: Option<String>,
    ledger: Option<i32>,
    /// The operation that paid it or pays it next.
    op_kind: String,
    balance_id: Option<String>,
    request: RawRequest,
}

#[derive(Deserialize)]
struct RawRequest {
    destination: String,
    asset: String,
    amount: String,
    memo: Option<RawMemo>,
}

#[derive(Deserialize)]
struct RawMemo {
    #[serde(rename = "type")]
    kind: String,
    value: Option<String>,
}

struct EnvelopeRow {
    /// The payouts of the transaction, in operation order.
    members: Vec<String>,
    status: String,
}

async fn load_journal(
    pool: &PgPool,
) -> (BTreeMap<String, JournalRow>, HashMap<String, EnvelopeRow>) {
    let rows = sqlx::query(
        "SELECT payout_id, state, reason, attempt, tx_hash, ledger, op_kind, balance_id,
                request::text AS request FROM payouts",
    )
    .fetch_all(pool)
    .await
    .expect("read payouts");
    let mut payouts = BTreeMap::new();
    for row in rows {
        let id: String = row.get("payout_id");
        let request: String = row.get("request");
        let request: RawRequest = serde_json::from_str(&request)
            .unwrap_or_else(|e| panic!("journaled request of {id} does not parse: {e}"));
        payouts.insert(
            id,
            JournalRow {
                state: row.get("state"),
                reason: row.get("reason"),
                attempt: row.get("attempt"),
                tx_hash: row.get("tx_hash"),
                ledger: row.get("ledger"),
                op_kind: row.get("op_kind"),
                balance_id: row.get("balance_id"),
                request,
            },
        );
    }
    let rows = sqlx::query("SELECT tx_hash, member_ids, status FROM envelopes")
        .fetch_all(pool)
        .await
        .expect("read envelopes");
    let envelopes = rows
        .into_iter()
        .map(|row| {
            (
                row.get::<String, _>("tx_hash"),
                EnvelopeRow {
                    members: row.get("member_ids"),
                    status: row.get("status"),
                },
            )
        })
        .collect();
    (payouts, envelopes)
}

/// Counts and violations of one run.
#[derive(Debug, Default)]
pub struct Verdict {
    pub stored: usize,
    pub confirmed: usize,
    pub failed: usize,
    /// Payouts the ledger had to refuse (no such account, no trustline).
    pub expected_failures: usize,
    pub envelopes: usize,
    pub envelopes_dead: usize,
    /// Payouts that needed more than one envelope.
    pub rebuilt: usize,
    pub ledger_payments: usize,
    /// Payouts paid more than once on the ledger.
    pub double_payments: usize,
    /// Accepted payouts missing from the journal, not terminal, or confirmed but unpaid.
    pub lost_payouts: usize,
    /// Terminal state contrary to what the ledger had to do (a payable payout failed, an
    /// unpayable one confirmed).
    pub wrong_outcomes: usize,
    /// Payments from the distribution account the journal does not account for.
    pub unknown_payments: usize,
    /// Journal and ledger disagree on hash, amount, asset, destination or ledger.
    pub mismatches: usize,
    /// Envelopes still live at the end although every payout is terminal.
    pub unsettled_envelopes: usize,
    /// Transactions that carried more than one payout.
    pub batched_envelopes: usize,
    /// Member events logged in batch-step rows (`envelope_events`), not one row each.
    pub batch_step_events: u64,
    /// Confirmed payouts paid by a claimable balance, and by creating their account.
    pub claimable_balances: usize,
    pub accounts_created: usize,
    pub violations: Vec<String>,
}

impl Verdict {
    fn violation(&mut self, text: String) {
        self.violations.push(text);
    }
}

fn memo_of(raw: &Option<RawMemo>) -> Option<(String, String)> {
    raw.as_ref()
        .filter(|m| m.kind != "none")
        .map(|m| (m.kind.clone(), m.value.clone().unwrap_or_default()))
}

fn asset_matches(expected: &str, journaled: &str) -> bool {
    expected == journaled || (expected == "native" && journaled.eq_ignore_ascii_case("xlm"))
}

/// Holds journal, ledger and what was sent against each other.
pub async fn check(
    pool: &PgPool,
    sim: &crate::support::simadmin::SimAdmin,
    specs: &[PayoutSpec],
    feed: &FeedStats,
    distribution: &str,
) -> Verdict {
    let (journal, envelopes) = load_journal(pool).await;
    let mut v = Verdict {
        stored: journal.len(),
        envelopes: envelopes.len(),
        envelopes_dead: envelopes.values().filter(|e| e.status == "dead").count(),
        expected_failures: specs.iter().filter(|s| s.expect == Expect::Fails).count(),
        ..Verdict::default()
    };
    let dead_letters: Vec<(String, String, String)> =
        sqlx::query_as("SELECT source, code, reason FROM dead_letters ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("read dead letters");
    for (source, code, reason) in dead_letters {
        v.violation(format!(
            "a valid request was dead-lettered ({source}): {code}: {reason}"
        ));
    }
    // The list of payouts waiting for an envelope holds the accepted payouts, no others
    // (every payout is terminal by now, so it is empty).
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT w.payout_id FROM payouts_waiting w LEFT JOIN payouts p USING (payout_id)
         WHERE p.state IS DISTINCT FROM 'accepted' ORDER BY 1 LIMIT 10",
    )
    .fetch_all(pool)
    .await
    .expect("read payouts_waiting");
    if !stale.is_empty() {
        v.violation(format!("listed as waiting but not accepted: {stale:?}"));
    }
    // Every payout's history holds each of its versions once: in its own event rows, in
    // its row (the accept, when no outbox was on), or in the batch-step rows of the
    // envelopes it was in, found as its history finds them (the envelope it is in or was
    // paid by, and those its own events name). No batch-step entry
    // is out of reach. The main instance logs per member (its outbox is on), the second per
    // batch step.
    // Each payout's envelopes, as `envelopes_of_payout!` in src/storage/journal.rs finds
    // one payout's: the one it is in or was paid by, and those its own events name.
    macro_rules! envelopes_of_payouts {
        () => {
            "WITH envs AS (
                 SELECT payout_id, tx_hash FROM payouts WHERE tx_hash IS NOT NULL
                 UNION
                 SELECT payout_id, detail->>'tx_hash' FROM payout_events WHERE detail ? 'tx_hash'
             )"
        };
    }
    let (broken, reached, entries): (Vec<String>, i64, i64) = {
        let broken = sqlx::query_scalar(
            concat!(
            envelopes_of_payouts!(),
            ", batch AS (
                 SELECT e.payout_id, b.versions[i] AS version
                 FROM envs e JOIN envelope_events b USING (tx_hash)
                 CROSS JOIN LATERAL array_position(b.payout_ids, e.payout_id) AS i
                 WHERE i IS NOT NULL
             ), logged AS (
                 SELECT payout_id, version FROM payout_events UNION ALL SELECT * FROM batch
                 UNION ALL SELECT payout_id, version FROM (",
            payoutd::accept_event!(),
            ") a
             )
             SELECT p.payout_id || ' v' || p.version || ': ' || string_agg(l.version::text, ',' ORDER BY l.version)
             FROM payouts p LEFT JOIN logged l USING (payout_id)
             GROUP BY p.payout_id, p.version
             HAVING count(l.version) <> p.version OR count(DISTINCT l.version) <> p.version
                 OR max(l.version) <> p.version
             ORDER BY 1 LIMIT 10"
        ),
        )
        .fetch_all(pool)
        .await
        .expect("read the payouts' histories");
        let (reached, entries): (i64, i64) = sqlx::query_as(concat!(
            envelopes_of_payouts!(),
            "
             SELECT (SELECT count(*) FROM envs e JOIN envelope_events b USING (tx_hash)
                     WHERE e.payout_id = ANY(b.payout_ids)),
                    (SELECT coalesce(sum(cardinality(payout_ids)), 0)::bigint FROM envelope_events)"
        ))
        .fetch_one(pool)
        .await
        .expect("count the batch-step entries");
        (broken, reached, entries)
    };
    if !broken.is_empty() {
        v.violation(format!(
            "histories without each version once (payout vN: versions logged): {broken:?}"
        ));
    }
    if reached != entries {
        v.violation(format!(
            "{} of {entries} batch-step event entries belong to no payout's history",
            entries - reached
        ));
    }
    v.batch_step_events = entries as u64;
    v.batched_envelopes = envelopes.values().filter(|e| e.members.len() > 1).count();
    for (hash, env) in &envelopes {
        if env.status == "live" {
            v.unsettled_envelopes += 1;
            v.violation(format!(
                "envelope {hash} of {:?} is still live at the end",
                env.members
            ));
        }
    }
    for refused in &feed.refused {
        v.violation(format!("payoutd refused a valid request: {refused}"));
    }
    for gave_up in &feed.gave_up {
        v.violation(format!("a delivery was never answered: {gave_up}"));
    }
    // Every payment from the distribution account is one operation of a journaled
    // envelope; the envelope's member list says whose.
    let mut paid_by: HashMap<String, Vec<AppliedPayment>> = HashMap::new();
    for p in sim
        .payments(None)
        .await
        .into_iter()
        .filter(|p| p.source == distribution)
    {
        v.ledger_payments += 1;
        let Some(env) = envelopes.get(&p.tx_hash) else {
            v.unknown_payments += 1;
            v.violation(format!(
                "payment in tx {} (op {}, ledger {}) is not an envelope in the journal",
                p.tx_hash, p.op_index, p.ledger
            ));
            continue;
        };
        if env.status == "dead" {
            v.violation(format!(
                "tx {} of {:?} was applied in ledger {} but is journaled dead",
                p.tx_hash, env.members, p.ledger
            ));
        }
        let Some(member) = env.members.get(p.op_index as usize) else {
            v.unknown_payments += 1;
            v.violation(format!(
                "tx {} has a payment at operation {} but only {} journaled members",
                p.tx_hash,
                p.op_index,
                env.members.len()
            ));
            continue;
        };
        paid_by.entry(member.clone()).or_default().push(p);
    }
    for spec in specs {
        let accepted = feed.accepted.contains(&spec.id);
        let paid = paid_by.remove(&spec.id).unwrap_or_default();
        if paid.len() > 1 {
            v.double_payments += 1;
            let hashes: Vec<&str> = paid.iter().map(|p| p.tx_hash.as_str()).collect();
            v.violation(format!(
                "DOUBLE PAYMENT: {} paid {} times on the ledger (tx {hashes:?}; journal: {:?})",
                spec.id,
                paid.len(),
                journal
                    .get(&spec.id)
                    .map(|j| (&j.state, &j.tx_hash, j.attempt))
            ));
        }
        let Some(row) = journal.get(&spec.id) else {
            if accepted {
                v.lost_payouts += 1;
                v.violation(format!(
                    "LOST: {} was accepted but is not in the journal",
                    spec.id
                ));
            }
            if !paid.is_empty() {
                v.unknown_payments += paid.len();
                v.violation(format!(
                    "{} is not in the journal but was paid on the ledger",
                    spec.id
                ));
            }
            continue;
        };
        check_request(&mut v, spec, row);
        if row.attempt > 1 {
            v.rebuilt += 1;
        }
        match row.state.as_str() {
            "confirmed" => {
                v.confirmed += 1;
                if spec.expect == Expect::Fails {
                    v.wrong_outcomes += 1;
                    v.violation(format!(
                        "{} is confirmed but the ledger had to refuse it",
                        spec.id
                    ));
                }
                match paid.as_slice() {
                    [] => {
                        v.lost_payouts += 1;
                        v.violation(format!(
                            "LOST: {} is confirmed (tx {:?}) but the ledger has no payment for it",
                            spec.id, row.tx_hash
                        ));
                    }
                    [payment] => {
                        match payment.kind {
                            PaymentKind::CreateClaimableBalance => v.claimable_balances += 1,
                            PaymentKind::CreateAccount => v.accounts_created += 1,
                            _ => {}
                        }
                        check_payment(&mut v, spec, row, payment, distribution)
                    }
                    _ => {}
                }
            }
            "failed" => {
                v.failed += 1;
                if spec.expect != Expect::Fails {
                    v.wrong_outcomes += 1;
                    v.violation(format!(
                        "{} failed ({:?}) but the ledger would have paid it",
                        spec.id, row.reason
                    ));
                }
                if !paid.is_empty() {
                    v.wrong_outcomes += 1;
                    v.violation(format!(
                        "{} is failed in the journal but was paid on the ledger",
                        spec.id
                    ));
                }
            }
            other => {
                v.lost_payouts += 1;
                v.violation(format!(
                    "LOST: {} is still {other} at the end ({:?}; accepted by the harness: {accepted})",
                    spec.id, row.reason
                ));
            }
        }
    }
    let sent: std::collections::HashSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    for id in journal.keys() {
        if !sent.contains(id.as_str()) {
            v.violation(format!("the journal holds a payout nobody sent: {id}"));
        }
    }
    for (id, paid) in paid_by {
        v.unknown_payments += paid.len();
        v.violation(format!("{id} was paid on the ledger but nobody sent it"));
    }
    v
}

/// The journaled request is the one that was sent.
fn check_request(v: &mut Verdict, spec: &PayoutSpec, row: &JournalRow) {
    let r = &row.request;
    let memo = spec
        .memo
        .as_ref()
        .map(|(k, val)| (k.to_string(), val.clone()));
    let same = r.destination == spec.destination
        && asset_matches(&spec.asset, &r.asset)
        && workload::stroops(&r.amount) == Some(spec.stroops)
        && memo_of(&r.memo) == memo;
    if !same {
        v.mismatches += 1;
        v.violation(format!(
            "{}: journaled request ({} {} {} {:?}) is not the one sent ({} {} {} {:?})",
            spec.id,
            r.destination,
            r.asset,
            r.amount,
            memo_of(&r.memo),
            spec.destination,
            spec.asset,
            spec.stroops,
            memo
        ));
    }
}

/// The one payment of a confirmed payout is the journaled one, for the requested amount.
fn check_payment(
    v: &mut Verdict,
    spec: &PayoutSpec,
    row: &JournalRow,
    p: &AppliedPayment,
    distribution: &str,
) {
    let mut wrong = Vec::new();
    if row.tx_hash.as_deref() != Some(p.tx_hash.as_str()) {
        wrong.push(format!("hash {:?} vs ledger {}", row.tx_hash, p.tx_hash));
    }
    if row.ledger != i32::try_from(p.ledger).ok() {
        wrong.push(format!("ledger {:?} vs ledger {}", row.ledger, p.ledger));
    }
    if p.destination != spec.destination {
        wrong.push(format!(
            "destination {} vs {}",
            p.destination, spec.destination
        ));
    }
    if p.asset != spec.asset {
        wrong.push(format!("asset {} vs {}", p.asset, spec.asset));
    }
    if p.amount_stroops != spec.stroops {
        wrong.push(format!("amount {} vs {}", p.amount_stroops, spec.stroops));
    }
    if let Some(memo) = &spec.ledger_memo
        && p.memo.as_deref() != Some(memo.as_str())
    {
        wrong.push(format!("memo {:?} vs the caller's {memo}", p.memo));
    }
    let kind_ok = match spec.expect {
        Expect::PaidByClaimableBalance => p.kind == PaymentKind::CreateClaimableBalance,
        Expect::PaidCreatingAccount => {
            matches!(p.kind, PaymentKind::Payment | PaymentKind::CreateAccount)
        }
        Expect::Paid | Expect::Fails => p.kind == PaymentKind::Payment,
    };
    let journaled_kind = match p.kind {
        PaymentKind::Payment => "payment",
        PaymentKind::CreateAccount => "create_account",
        PaymentKind::CreateClaimableBalance => "claimable_balance",
    };
    if !kind_ok || row.op_kind != journaled_kind {
        wrong.push(format!(
            "paid by {:?} (journal: {}) for a payout expected {:?}",
            p.kind, row.op_kind, spec.expect
        ));
    }
    if row.balance_id != p.balance_id {
        wrong.push(format!(
            "balance id {:?} vs ledger {:?}",
            row.balance_id, p.balance_id
        ));
    }
    if p.source != distribution {
        wrong.push(format!(
            "paid from {} not the distribution account",
            p.source
        ));
    }
    if !wrong.is_empty() {
        v.mismatches += 1;
        v.violation(format!(
            "{}: journal and ledger disagree: {}",
            spec.id,
            wrong.join("; ")
        ));
    }
}
