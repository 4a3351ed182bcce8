//! The payout core over the in-memory journal and ledger: the protocol's cases one by one
//! (batches, lost answers, expiry by ledger time, failed operations, lagging and pruned
//! lookups, restarts, orphans, disjoint channel keys, cancel, resume, restart budgets).
//! Fast, deterministic in outcome (conditions are awaited, never slept on blindly).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use payoutd_actors::domain::{
    AccountId, Amount, Asset, Destination, Memo, PayoutId, PayoutRequest,
};
use payoutd_actors::memory::{Hooked, Hooks, MemJournal, MemLedger, Scripted};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{ControlStore, Journal, JournalError, PayoutStore};
use payoutd_actors::queue::ReadyQueue;
use payoutd_actors::state::{PayoutRecord, PayoutState, Step};
use payoutd_actors::{
    ClusterConfig, Context, PayoutError, PayoutPolicy, Payouts, ServiceConfig, SubmitAnswer,
    SupervisorConfig,
};

const PAYER: [u8; 32] = [1; 32];

fn channel(n: u8) -> AccountId {
    AccountId::from_bytes([100 + n; 32])
}

fn channels(n: u8) -> Vec<AccountId> {
    (0..n).map(channel).collect()
}

/// A destination of its own per payout number, so payments map to payouts one to one.
fn dest(n: u32) -> AccountId {
    let mut key = [7u8; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    AccountId::from_bytes(key)
}

fn request(n: u32) -> PayoutRequest {
    request_with(n, "1", None)
}

fn request_with(n: u32, amount: &str, memo: Option<Memo>) -> PayoutRequest {
    PayoutRequest::new(
        PayoutId::parse(&format!("p-{n}")).unwrap(),
        Destination::Account(dest(n)),
        Asset::Native,
        Amount::parse(amount).unwrap(),
        memo,
    )
}

fn id(n: u32) -> PayoutId {
    PayoutId::parse(&format!("p-{n}")).unwrap()
}

fn policy() -> PayoutPolicy {
    let mut p = PayoutPolicy::new(AccountId::from_bytes(PAYER));
    p.poll_interval_ms = 5;
    p.io_retry_ms = 5;
    p.batch_linger_ms = 5;
    p.underfunded_retry_ms = 20;
    p.idle_passivate_ms = 60_000;
    p
}

fn cluster() -> ClusterConfig {
    ClusterConfig {
        heartbeat_interval_ms: 10,
        instance_ttl_ms: 100,
        orphan_sweep_interval_ms: 20,
        queue_refill_interval_ms: 20,
        ..ClusterConfig::default()
    }
}

struct Instance {
    payouts: Payouts,
}

async fn start_with(
    journal: Arc<dyn Journal>,
    ledger: Arc<MemLedger>,
    name: &str,
    keyed: Vec<AccountId>,
    policy: PayoutPolicy,
) -> Instance {
    let ctx = Arc::new(Context::new(
        journal,
        ledger,
        policy,
        Arc::new(Metrics::default()),
        name,
        Arc::new(ReadyQueue::new(100_000)),
    ));
    let config = ServiceConfig {
        supervisor: SupervisorConfig::default(),
        cluster: cluster(),
        call_timeout_ms: 5_000,
        channels: keyed,
    };
    Instance {
        payouts: Payouts::start(ctx, config).await.unwrap(),
    }
}

async fn start(journal: &Arc<MemJournal>, ledger: &Arc<MemLedger>, chans: u8) -> Instance {
    start_with(
        journal.clone(),
        ledger.clone(),
        "a",
        channels(chans),
        policy(),
    )
    .await
}

fn world(chans: u8) -> (Arc<MemJournal>, Arc<MemLedger>) {
    (
        Arc::new(MemJournal::new()),
        Arc::new(MemLedger::new(
            &[channels(chans), vec![AccountId::from_bytes(PAYER)]].concat(),
        )),
    )
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn wait_state(journal: &MemJournal, n: u32, state: PayoutState) -> PayoutRecord {
    let pid = id(n);
    eventually(&format!("p-{n} {state}"), || async {
        journal
            .load(&pid)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.state == state)
    })
    .await;
    journal.load(&pid).await.unwrap().unwrap()
}

/// Payments on the ledger per payout number.
fn payments(ledger: &MemLedger) -> HashMap<AccountId, usize> {
    let mut out = HashMap::new();
    for p in ledger.payments() {
        *out.entry(p.op.destination.account()).or_insert(0) += 1;
    }
    out
}

fn assert_paid_once(ledger: &MemLedger, ns: impl IntoIterator<Item = u32>) {
    let paid = payments(ledger);
    for n in ns {
        assert_eq!(
            paid.get(&dest(n)).copied().unwrap_or(0),
            1,
            "payments of p-{n}"
        );
    }
}

#[tokio::test]
async fn pays_once_and_confirms() {
    let (journal, ledger) = world(2);
    let a = start(&journal, &ledger, 2).await;
    let answer = a.payouts.submit(request(1)).await.unwrap();
    assert!(matches!(answer, SubmitAnswer::Created(_)));
    let r = wait_state(&journal, 1, PayoutState::Confirmed).await;
    assert!(r.inclusion.is_some() && r.envelope.is_some());
    assert_paid_once(&ledger, [1]);
    let kinds: Vec<String> = journal
        .events(&id(1))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["accepted", "prepared", "confirmed"]);
}

#[tokio::test]
async fn many_payouts_share_few_transactions() {
    let (journal, ledger) = world(2);
    // No ledger while they arrive: they all wait, then go in full batches.
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 2).await;
    let mut calls = Vec::new();
    for n in 0..450 {
        let p = a.payouts.clone();
        calls.push(tokio::spawn(async move { p.submit(request(n)).await }));
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    for n in 0..450 {
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    assert_paid_once(&ledger, 0..450);
    let applied = journal
        .envelopes()
        .into_iter()
        .filter(|(_, status)| *status == "applied")
        .count();
    assert!(applied <= 8, "450 payouts in {applied} transactions");
    assert_eq!(ledger.included(), applied);
}

#[tokio::test]
async fn one_payment_per_transaction_when_asked() {
    let (journal, ledger) = world(2);
    let mut p = policy();
    p.payments_per_tx_max = 1;
    let a = start_with(journal.clone(), ledger.clone(), "a", channels(2), p).await;
    for n in 0..10 {
        a.payouts.submit(request(n)).await.unwrap();
    }
    for n in 0..10 {
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    assert_eq!(ledger.included(), 10);
}

#[tokio::test]
async fn fifty_identical_requests_make_one_payout() {
    let (journal, ledger) = world(1);
    let a = start(&journal, &ledger, 1).await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let p = a.payouts.clone();
            tokio::spawn(async move { p.submit(request(1)).await })
        })
        .collect();
    let mut created = 0;
    for c in calls {
        if matches!(c.await.unwrap().unwrap(), SubmitAnswer::Created(_)) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    wait_state(&journal, 1, PayoutState::Confirmed).await;
    let accepted = journal
        .events(&id(1))
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "accepted")
        .count();
    assert_eq!(accepted, 1);
    assert_paid_once(&ledger, [1]);
}

#[tokio::test]
async fn duplicates_of_a_live_payout_cost_no_write() {
    let (journal, ledger) = world(1);
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    let writes = journal.writes.load(Ordering::SeqCst);
    for _ in 0..100 {
        let answer = a.payouts.submit(request(1)).await.unwrap();
        assert!(matches!(answer, SubmitAnswer::Duplicate(_)));
    }
    // The prepare of its batch may have been written meanwhile; nothing else.
    assert!(journal.writes.load(Ordering::SeqCst) <= writes + 2);
}

/// Pays payout 1 until the journal holds it in `state`, then makes every journal call
/// fail and waits for a duplicate answered with that record: the actor answers from its
/// cache, which the channel worker's notices bring to the rows it wrote (until a notice
/// arrives, the cache is the record as the actor last knew it).
async fn a_duplicate_is_answered_from_the_cache(
    journal: &Arc<MemJournal>,
    ledger: &Arc<MemLedger>,
    state: PayoutState,
) {
    let a = start(journal, ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    let record = wait_state(journal, 1, state).await;
    journal.unavailable.store(true, Ordering::SeqCst);
    eventually(
        &format!("a duplicate answered with the {state} record"),
        || async {
            matches!(
                a.payouts.submit(request(1)).await,
                Ok(SubmitAnswer::Duplicate(r)) if r == record
            )
        },
    )
    .await;
}

#[tokio::test]
async fn a_duplicate_of_a_paid_payout_is_answered_by_its_actor_without_a_read() {
    let (journal, ledger) = world(1);
    // The settlement's notice.
    a_duplicate_is_answered_from_the_cache(&journal, &ledger, PayoutState::Confirmed).await;
}

#[tokio::test]
async fn a_duplicate_of_a_payout_in_flight_is_answered_by_its_actor_without_a_read() {
    let (journal, ledger) = world(1);
    // No ledger closes: the envelope stays submitted. The prepare's and the submission's
    // notices.
    let ledger = Arc::new(Arc::into_inner(ledger).unwrap().manual());
    a_duplicate_is_answered_from_the_cache(&journal, &ledger, PayoutState::Submitted).await;
}

#[tokio::test]
async fn different_content_is_a_conflict_and_changes_nothing() {
    let (journal, ledger) = world(1);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    let err = a
        .payouts
        .submit(request_with(1, "2", None))
        .await
        .unwrap_err();
    assert!(matches!(err, PayoutError::Conflict { .. }), "{err:?}");
    let r = wait_state(&journal, 1, PayoutState::Confirmed).await;
    assert_eq!(r.request.amount().stroops(), 10_000_000);
}

#[tokio::test]
async fn a_lost_answer_is_found_by_hash_and_not_paid_again() {
    let (journal, ledger) = world(1);
    ledger.script(Scripted::LoseAnswer);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    wait_state(&journal, 1, PayoutState::Confirmed).await;
    assert_paid_once(&ledger, [1]);
    assert_eq!(journal.envelopes().len(), 1, "never a second envelope");
}

#[tokio::test]
async fn a_new_envelope_only_after_expiry_by_ledger_time() {
    let (journal, ledger) = world(1);
    let ledger = Arc::new(Arc::into_inner(ledger).unwrap().manual());
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    wait_state(&journal, 1, PayoutState::Submitted).await;
    // max_time is the head's close time + 60 s; ledgers close 5 s apart. Until a ledger
    // closes past it, the envelope stays.
    for _ in 0..12 {
        ledger.close_ledger();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(journal.envelopes().len(), 1, "no rebuild before expiry");
    ledger.close_ledger();
    eventually("a second envelope after expiry", || async {
        journal.envelopes().len() == 2
    })
    .await;
    let statuses: Vec<&str> = journal.envelopes().iter().map(|(_, s)| *s).collect();
    assert!(statuses.contains(&"dead"), "{statuses:?}");
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    eventually("included", || async {
        ledger.close_ledger();
        journal.load(&id(1)).await.unwrap().unwrap().state == PayoutState::Confirmed
    })
    .await;
    assert_paid_once(&ledger, [1]);
}

#[tokio::test]
async fn a_failed_operation_fails_its_payout_and_the_others_go_again() {
    let (journal, ledger) = world(1);
    ledger.set_missing(dest(2));
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    // The first batch closes when it is full, not after a linger of a few ms that a loaded
    // machine can outlast between two submits; the second (four) after its linger.
    let mut p = policy();
    p.payments_per_tx_max = 5;
    p.batch_linger_ms = 1_000;
    let a = start_with(journal.clone(), ledger.clone(), "a", channels(1), p).await;
    for n in 0..5 {
        a.payouts.submit(request(n)).await.unwrap();
    }
    eventually("all in one envelope", || async {
        journal
            .envelopes()
            .first()
            .is_some_and(|(b, _)| b.members.len() == 5)
    })
    .await;
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    let failed = wait_state(&journal, 2, PayoutState::Failed).await;
    assert!(failed.reason.unwrap().contains("op_no_destination"));
    for n in [0, 1, 3, 4] {
        let r = wait_state(&journal, n, PayoutState::Confirmed).await;
        assert_eq!(r.attempt, 2);
    }
    assert_paid_once(&ledger, [0, 1, 3, 4]);
    assert_eq!(payments(&ledger).get(&dest(2)), None);
}

#[tokio::test]
async fn underfunded_payouts_try_again_later() {
    let (journal, ledger) = world(1);
    ledger.set_underfunded(dest(1), true);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    eventually("a failed attempt", || async {
        journal.envelopes().iter().any(|(_, s)| *s == "failed")
    })
    .await;
    ledger.set_underfunded(dest(1), false);
    wait_state(&journal, 1, PayoutState::Confirmed).await;
    assert_paid_once(&ledger, [1]);
}

#[tokio::test]
async fn a_lagging_lookup_never_leads_to_a_second_payment() {
    let (journal, ledger) = world(2);
    ledger.set_lookup_lag(150);
    ledger.script(Scripted::LoseAnswer);
    let a = start(&journal, &ledger, 2).await;
    a.payouts.submit(request(1)).await.unwrap();
    // Applied, answer lost; the sequence is consumed but the lookup server is 150 ledgers
    // behind: no proof either way. The payout waits; the channel moves on.
    wait_state(&journal, 1, PayoutState::Submitted).await;
    for n in 2..6 {
        a.payouts.submit(request(n)).await.unwrap();
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    assert_eq!(
        journal.load(&id(1)).await.unwrap().unwrap().state,
        PayoutState::Submitted
    );
    // The lookup server catches up: the payout is found confirmed, paid once.
    for _ in 0..150 {
        ledger.close_ledger();
    }
    wait_state(&journal, 1, PayoutState::Confirmed).await;
    assert_paid_once(&ledger, 1..6);
}

#[tokio::test]
async fn a_pruned_history_never_proves_an_envelope_dead() {
    let (journal, ledger) = world(1);
    let ledger = Arc::new(Arc::into_inner(ledger).unwrap().manual());
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    // The lookup server holds history only from far in the future of the envelope.
    ledger.set_history_elder(1_000_000);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    wait_state(&journal, 1, PayoutState::Submitted).await;
    // Someone else consumes the channel's sequence: the envelope can no longer apply, but
    // whether it did cannot be proven from this history.
    ledger.bump_sequence(&channel(0), (1 << 32) + 5);
    for _ in 0..20 {
        ledger.close_ledger();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = journal.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, PayoutState::Submitted);
    assert_eq!(journal.envelopes().len(), 1, "never rebuilt");
    drop(a);
}

#[tokio::test]
async fn caller_memos_get_transactions_of_their_own() {
    let (journal, ledger) = world(1);
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 1).await;
    a.payouts
        .submit(request_with(1, "1", Some(Memo::Id(7))))
        .await
        .unwrap();
    a.payouts
        .submit(request_with(2, "1", Some(Memo::Id(7))))
        .await
        .unwrap();
    a.payouts
        .submit(request_with(3, "1", Some(Memo::Id(8))))
        .await
        .unwrap();
    a.payouts
        .submit(request_with(4, "1", Some(Memo::None)))
        .await
        .unwrap();
    a.payouts.submit(request(5)).await.unwrap();
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    for n in 1..=5 {
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    let memo_of = |n: u32| {
        ledger
            .payments()
            .into_iter()
            .find(|p| p.op.destination.account() == dest(n))
            .unwrap()
            .memo
    };
    assert_eq!(memo_of(1), Memo::Id(7));
    assert_eq!(memo_of(2), Memo::Id(7));
    assert_eq!(memo_of(3), Memo::Id(8));
    assert_eq!(memo_of(4), Memo::None, "an explicit none means no memo");
    assert!(
        matches!(memo_of(5), Memo::Hash(_)),
        "no memo: one that names it"
    );
}

#[tokio::test]
async fn cancel_before_the_envelope_and_not_after() {
    let (journal, ledger) = world(1);
    let ledger = Arc::new(Arc::into_inner(ledger).unwrap().manual());
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    // Accepted while the ledger is unreachable: no envelope can be built.
    ledger.flags().unavailable.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 1).await;
    a.payouts.submit(request(1)).await.unwrap();
    let cancelled = a.payouts.cancel(&id(1), "test".into()).await.unwrap();
    assert_eq!(cancelled.state, PayoutState::Cancelled);
    ledger.flags().unavailable.store(false, Ordering::SeqCst);
    a.payouts.submit(request(2)).await.unwrap();
    wait_state(&journal, 2, PayoutState::Submitted).await;
    let err = a
        .payouts
        .cancel(&id(2), "too late".into())
        .await
        .unwrap_err();
    assert!(matches!(err, PayoutError::NotCancellable { .. }), "{err:?}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        journal.load(&id(1)).await.unwrap().unwrap().state,
        PayoutState::Cancelled,
        "a cancelled payout joins no batch"
    );
}

#[tokio::test]
async fn parked_at_attempts_max_resumes_with_a_fresh_budget() {
    let (journal, ledger) = world(1);
    let ledger = Arc::new(Arc::into_inner(ledger).unwrap().manual());
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let mut p = policy();
    p.attempts_max = 2;
    let a = start_with(journal.clone(), ledger.clone(), "a", channels(1), p).await;
    a.payouts.submit(request(1)).await.unwrap();
    eventually("parked after two dead envelopes", || async {
        ledger.close_ledger();
        journal.load(&id(1)).await.unwrap().unwrap().state == PayoutState::Parked
    })
    .await;
    let parked = journal.load(&id(1)).await.unwrap().unwrap();
    assert!(parked.reason.unwrap().contains("attempts_max"));
    assert!(parked.envelope.is_none(), "its last envelope is dead");
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    let resumed = a.payouts.resume(&id(1), "fixed".into()).await.unwrap();
    assert_eq!((resumed.state, resumed.attempt), (PayoutState::Accepted, 0));
    eventually("confirmed after resume", || async {
        ledger.close_ledger();
        journal.load(&id(1)).await.unwrap().unwrap().state == PayoutState::Confirmed
    })
    .await;
    assert_paid_once(&ledger, [1]);
}

#[tokio::test]
async fn a_restart_recovers_queued_and_journaled_work() {
    let (journal, ledger) = world(2);
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 2).await;
    for n in 0..300 {
        a.payouts.submit(request(n)).await.unwrap();
    }
    eventually("envelopes journaled", || async {
        journal.envelopes().len() == 2
    })
    .await;
    a.payouts.shutdown(1_000).await;
    drop(a);
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    // Same instance name: its accepted payouts are its own again; its channels' envelopes
    // are resubmitted with the journaled bytes.
    let _b = start(&journal, &ledger, 2).await;
    for n in 0..300 {
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    assert_paid_once(&ledger, 0..300);
}

#[tokio::test]
async fn orphans_of_a_dead_instance_are_adopted() {
    let (journal, ledger) = world(2);
    ledger.flags().unavailable.store(true, Ordering::SeqCst);
    let a = start_with(
        journal.clone(),
        ledger.clone(),
        "a",
        vec![channel(0)],
        policy(),
    )
    .await;
    for n in 0..20 {
        a.payouts.submit(request(n)).await.unwrap();
    }
    // "a" dies for good (its actors are frozen: it stops heartbeating and no longer takes
    // part; the journal says its heartbeat expired).
    a.payouts
        .context()
        .queue
        .take(1000, Duration::ZERO, std::time::Instant::now());
    std::mem::forget(a);
    journal.expire("a");
    ledger.flags().unavailable.store(false, Ordering::SeqCst);
    let _b = start_with(
        journal.clone(),
        ledger.clone(),
        "b",
        vec![channel(1)],
        policy(),
    )
    .await;
    for n in 0..20 {
        let r = wait_state(&journal, n, PayoutState::Confirmed).await;
        assert_eq!(r.owner.as_deref(), Some("b"));
    }
    assert_paid_once(&ledger, 0..20);
}

#[tokio::test]
async fn disjoint_keys_settle_each_others_envelopes_without_parking() {
    let (journal, shared) = world(2);
    let payer = AccountId::from_bytes(PAYER);
    let la = Arc::new(shared.view(&[channel(0), payer]));
    let lb = Arc::new(shared.view(&[channel(1), payer]));
    shared.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start_with(journal.clone(), la, "a", vec![channel(0)], policy()).await;
    let b = start_with(journal.clone(), lb, "b", vec![channel(1)], policy()).await;
    for n in 0..10 {
        let inst = if n % 2 == 0 { &a } else { &b };
        inst.payouts.submit(request(n)).await.unwrap();
    }
    eventually("envelopes on both channels", || async {
        journal.envelopes().len() == 2
    })
    .await;
    // Duplicates and reads land on the other instance: nothing is driven there.
    for n in 0..10 {
        let other = if n % 2 == 0 { &b } else { &a };
        other.payouts.submit(request(n)).await.unwrap();
        other.payouts.get(&id(n)).await.unwrap();
    }
    // "a" dies for good; its envelope (channel 0, whose key only "a" had) is settled by "b"
    // with the journaled bytes.
    std::mem::forget(a);
    journal.expire("a");
    shared.flags().submit_outage.store(false, Ordering::SeqCst);
    for n in 0..10 {
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    assert_paid_once(&shared, 0..10);
    assert!(journal.all().iter().all(|r| r.state != PayoutState::Parked));
    drop(b);
}

#[tokio::test]
async fn the_journal_down_is_an_error_not_a_loss() {
    let (journal, ledger) = world(1);
    let a = start(&journal, &ledger, 1).await;
    journal.unavailable.store(true, Ordering::SeqCst);
    let err = a.payouts.submit(request(1)).await.unwrap_err();
    assert!(matches!(err, PayoutError::Unavailable(_)), "{err:?}");
    journal.unavailable.store(false, Ordering::SeqCst);
    a.payouts.submit(request(1)).await.unwrap();
    wait_state(&journal, 1, PayoutState::Confirmed).await;
}

#[tokio::test]
async fn a_journal_outage_mid_batch_pays_once() {
    let (journal, ledger) = world(1);
    let a = start(&journal, &ledger, 1).await;
    for n in 0..30 {
        a.payouts.submit(request(n)).await.unwrap();
        if n == 10 {
            journal.unavailable.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            journal.unavailable.store(false, Ordering::SeqCst);
        }
    }
    for n in 0..30 {
        wait_state(&journal, n, PayoutState::Confirmed).await;
    }
    assert_paid_once(&ledger, 0..30);
}

/// Panics in `apply` of a cancel for one payout, a given number of times.
struct PanicOnCancel {
    target: PayoutId,
    left: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Hooks for PanicOnCancel {
    async fn before_apply(&self, c: &PayoutRecord, s: &Step) -> Result<(), JournalError> {
        if c.id() == &self.target
            && matches!(s, Step::Cancelled { .. })
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                .is_ok()
        {
            panic!("planted bug in apply");
        }
        Ok(())
    }
}

fn panicking(journal: &Arc<MemJournal>, n: u32, times: u32) -> Arc<Hooked<MemJournal>> {
    Arc::new(Hooked::new(
        journal.clone(),
        Arc::new(PanicOnCancel {
            target: id(n),
            left: times.into(),
        }),
    ))
}

#[tokio::test]
async fn a_panicking_actor_is_restarted_then_parked_past_its_budget() {
    let (journal, ledger) = world(1);
    ledger.flags().unavailable.store(true, Ordering::SeqCst);
    let a = start_with(
        panicking(&journal, 1, 1),
        ledger.clone(),
        "a",
        channels(1),
        policy(),
    )
    .await;
    a.payouts.submit(request(1)).await.unwrap();
    // One panic: restarted from the journal, the cancel goes through the second time.
    assert!(a.payouts.cancel(&id(1), "x".into()).await.is_err());
    let r = a.payouts.cancel(&id(1), "x".into()).await.unwrap();
    assert_eq!(r.state, PayoutState::Cancelled);
    // Past the restart budget (3): parked with the reason.
    a.payouts.submit(request(2)).await.unwrap();
    let b = start_with(
        panicking(&journal, 2, 10),
        ledger.clone(),
        "b",
        vec![],
        policy(),
    )
    .await;
    for _ in 0..4 {
        let _ = b.payouts.cancel(&id(2), "x".into()).await;
    }
    let parked = wait_state(&journal, 2, PayoutState::Parked).await;
    assert!(parked.reason.unwrap().contains("planted bug"));
}

#[tokio::test]
async fn a_pause_stops_new_envelopes_at_once_while_live_ones_settle() {
    let (journal, ledger) = world(2);
    let ledger = Arc::new(Arc::into_inner(ledger).unwrap().manual());
    // Submissions go unanswered: the first payout's envelope stays live.
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let a = start(&journal, &ledger, 2).await;
    // A second instance on the same journal and keys (it holds no lease yet).
    let b = start_with(journal.clone(), ledger.clone(), "b", channels(2), policy()).await;
    a.payouts.submit(request(1)).await.unwrap();
    wait_state(&journal, 1, PayoutState::Submitted).await;
    let pause = b.payouts.pause("ops:alice", "incident 42").await.unwrap();
    assert_eq!(
        (pause.by.as_str(), pause.reason.as_str()),
        ("ops:alice", "incident 42")
    );
    // The journal refuses new envelopes from the moment the pause committed, on every
    // instance: payouts accepted now wait, on either instance.
    let built = journal.envelopes().len();
    a.payouts.submit(request(2)).await.unwrap();
    b.payouts.submit(request(3)).await.unwrap();
    // The live envelope still settles.
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    eventually("the live envelope settles while paused", || async {
        ledger.close_ledger();
        journal.load(&id(1)).await.unwrap().unwrap().state == PayoutState::Confirmed
    })
    .await;
    eventually("the other instance reads the pause", || async {
        a.payouts.pause_state().is_some()
    })
    .await;
    for _ in 0..20 {
        ledger.close_ledger();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(journal.envelopes().len(), built, "nothing new while paused");
    for n in [2, 3] {
        let r = journal.load(&id(n)).await.unwrap().unwrap();
        assert_eq!(r.state, PayoutState::Accepted, "p-{n} waits");
    }
    // Resumed (by anyone): both are paid, once.
    let lifted = a.payouts.unpause("ops:bob", "fixed").await.unwrap();
    assert_eq!(lifted.map(|p| p.by), Some("ops:alice".to_owned()));
    for n in [2, 3] {
        eventually(&format!("p-{n} paid after the resume"), || async {
            ledger.close_ledger();
            journal.load(&id(n)).await.unwrap().unwrap().state == PayoutState::Confirmed
        })
        .await;
    }
    assert_paid_once(&ledger, [1, 2, 3]);
    let audit = journal.audit();
    assert_eq!(
        audit,
        [
            (
                "ops:alice".to_owned(),
                "pause".to_owned(),
                "incident 42".to_owned()
            ),
            (
                "ops:bob".to_owned(),
                "resume".to_owned(),
                "fixed".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn the_breaker_pauses_on_a_spike_of_channel_rejections() {
    let (journal, ledger) = world(3);
    for _ in 0..3 {
        ledger.script(Scripted::Reject("tx_bad_auth".into()));
    }
    let mut p = policy();
    p.payments_per_tx_max = 1;
    p.breaker = payoutd_actors::safety::BreakerConfig {
        window_ms: 60_000,
        channel_rejections_max: 2,
        underfunded_max: 0,
        failure_percent_max: 0,
        failure_samples_min: 0,
    };
    let a = start_with(journal.clone(), ledger.clone(), "a", channels(3), p).await;
    for n in 1..=3 {
        a.payouts.submit(request(n)).await.unwrap();
    }
    eventually("the breaker paused paying", || async {
        journal.pause_state().await.unwrap().is_some()
    })
    .await;
    let pause = journal.pause_state().await.unwrap().unwrap();
    assert_eq!(pause.by, payoutd_actors::safety::BREAKER);
    assert!(pause.reason.contains("2 rejections"), "{}", pause.reason);
    assert_eq!(
        a.payouts
            .context()
            .metrics
            .breaker_trips
            .load(Ordering::Relaxed),
        1
    );
}
