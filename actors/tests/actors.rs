//! Fast unit tests of the supervisor and the payout actor over the in-memory journal and
//! ledger. The same behaviours are tested against Postgres and the simulator in `tests/`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use payoutd_actors::domain::{
    AccountId, Amount, Asset, Destination, Memo, PayoutId, PayoutRequest,
};
use payoutd_actors::memory::{MemJournal, MemLedger, Scripted};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Journal, PayoutRecord, PayoutState, SubmitOutcome};
use payoutd_actors::{Context, PayoutError, PayoutPolicy, Payouts, SubmitAnswer, SupervisorConfig};

const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
const PAYER: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";

struct World {
    journal: Arc<MemJournal>,
    ledger: Arc<MemLedger>,
    payouts: Payouts,
    metrics: Arc<Metrics>,
}

fn channel(n: u8) -> AccountId {
    AccountId::from_bytes([n; 32])
}

fn policy() -> PayoutPolicy {
    let mut p = PayoutPolicy::new(AccountId::parse(PAYER).unwrap());
    p.poll_interval_ms = 5;
    p.io_retry_ms = 5;
    p.channel_wait_ms = 5;
    p.underfunded_retry_ms = 5;
    p
}

async fn world_with(
    journal: Arc<MemJournal>,
    ledger: Arc<MemLedger>,
    policy: PayoutPolicy,
    config: SupervisorConfig,
) -> World {
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        journal: journal.clone(),
        ledger: ledger.clone(),
        policy,
        metrics: metrics.clone(),
    });
    let (payouts, _) = Payouts::start(ctx, config, 5_000).await.unwrap();
    World {
        journal,
        ledger,
        payouts,
        metrics,
    }
}

async fn world() -> World {
    let channels = [channel(1), channel(2)];
    world_with(
        Arc::new(MemJournal::with_channels(&channels)),
        Arc::new(MemLedger::new(&channels)),
        policy(),
        SupervisorConfig::default(),
    )
    .await
}

fn request(id: &str, amount: &str) -> PayoutRequest {
    PayoutRequest::new(
        PayoutId::parse(id).unwrap(),
        Destination::parse(DEST).unwrap(),
        Asset::Native,
        Amount::parse(amount).unwrap(),
        Memo::None,
    )
}

/// Polls the journal until the payout reaches `state` (a condition, not a fixed sleep).
async fn wait_state(journal: &MemJournal, id: &str, state: PayoutState) -> PayoutRecord {
    let id = PayoutId::parse(id).unwrap();
    for _ in 0..2_000 {
        if let Some(r) = journal.load(&id).await.unwrap()
            && r.state == state
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "payout {id} never reached {state}: {:?}",
        journal.load(&id).await.unwrap().map(|r| r.state)
    );
}

async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..2_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn pays_once_and_confirms() {
    let w = world().await;
    let req = request("p-1", "12.5");
    let answer = w.payouts.submit(req.clone()).await.unwrap();
    assert!(matches!(answer, SubmitAnswer::Created(_)));
    let rec = wait_state(&w.journal, "p-1", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1);
    assert!(rec.inclusion.is_some());
    assert!(rec.channel.is_none(), "channel released on confirmation");
    assert_eq!(w.ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn fifty_identical_requests_make_one_payout() {
    let w = world().await;
    let req = request("p-50", "1");
    let calls = (0..50).map(|_| {
        let (payouts, req) = (w.payouts.clone(), req.clone());
        async move { payouts.submit(req).await }
    });
    let answers = futures_join_all(calls).await;
    let created = answers
        .iter()
        .filter(|a| matches!(a, Ok(SubmitAnswer::Created(_))))
        .count();
    let dups = answers
        .iter()
        .filter(|a| matches!(a, Ok(SubmitAnswer::Duplicate(_))))
        .count();
    assert_eq!((created, dups), (1, 49));
    wait_state(&w.journal, "p-50", PayoutState::Confirmed).await;
    let events = w
        .journal
        .events(&PayoutId::parse("p-50").unwrap())
        .await
        .unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "accepted").count(), 1);
    assert_eq!(w.ledger.payments_for(&req), 1);
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn duplicates_of_a_live_payout_cost_no_write() {
    let w = world().await;
    let req = request("p-dup", "3");
    w.payouts.submit(req.clone()).await.unwrap();
    wait_state(&w.journal, "p-dup", PayoutState::Confirmed).await;
    let writes = w.journal.writes.load(Ordering::SeqCst);
    for _ in 0..1_000 {
        let a = w.payouts.submit(req.clone()).await.unwrap();
        assert!(matches!(a, SubmitAnswer::Duplicate(r) if r.state == PayoutState::Confirmed));
    }
    assert_eq!(w.journal.writes.load(Ordering::SeqCst), writes);
    assert_eq!(w.metrics.duplicates.load(Ordering::Relaxed), 1_000);
}

#[tokio::test]
async fn different_content_is_a_conflict_and_changes_nothing() {
    let w = world().await;
    w.payouts.submit(request("p-c", "1")).await.unwrap();
    let before = w
        .journal
        .load(&PayoutId::parse("p-c").unwrap())
        .await
        .unwrap()
        .unwrap();
    let err = w.payouts.submit(request("p-c", "2")).await.unwrap_err();
    assert!(matches!(err, PayoutError::Conflict { .. }), "{err:?}");
    let after = wait_state(&w.journal, "p-c", PayoutState::Confirmed).await;
    assert_eq!(after.request, before.request);
    assert_eq!(after.request.amount().stroops(), 10_000_000);
}

#[tokio::test]
async fn panic_mid_step_restarts_from_the_journal_and_pays_once() {
    let w = world().await;
    w.ledger.script(Scripted::Panic);
    let req = request("p-panic", "7");
    w.payouts.submit(req.clone()).await.unwrap();
    let rec = wait_state(&w.journal, "p-panic", PayoutState::Confirmed).await;
    assert_eq!(
        rec.attempt, 1,
        "the journaled envelope was reused, not rebuilt"
    );
    assert_eq!(w.metrics.actor_restarts.load(Ordering::Relaxed), 1);
    assert_eq!(w.ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn restart_budget_exhausted_parks_the_payout() {
    let w = world().await;
    for _ in 0..10 {
        w.ledger.script(Scripted::Panic);
    }
    w.payouts.submit(request("p-park", "1")).await.unwrap();
    let rec = wait_state(&w.journal, "p-park", PayoutState::Parked).await;
    assert!(
        rec.reason
            .as_deref()
            .unwrap_or("")
            .contains("restart period"),
        "{:?}",
        rec.reason
    );
    // Visible, not lost: a read answers with the parked state.
    let seen = w
        .payouts
        .get(&PayoutId::parse("p-park").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.state, PayoutState::Parked);
}

#[tokio::test]
async fn lost_answer_is_found_by_hash_and_not_paid_again() {
    let w = world().await;
    w.ledger.script(Scripted::ApplyThenLose);
    let req = request("p-lost", "2");
    w.payouts.submit(req.clone()).await.unwrap();
    let rec = wait_state(&w.journal, "p-lost", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1);
    assert_eq!(w.ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn new_envelope_only_after_expiry_by_ledger_time() {
    let w = world().await;
    for _ in 0..3 {
        w.ledger.script(Scripted::Answer(SubmitOutcome::Unknown {
            detail: "timeout".into(),
        }));
    }
    let req = request("p-exp", "2");
    w.payouts.submit(req.clone()).await.unwrap();
    let rec = wait_state(&w.journal, "p-exp", PayoutState::Submitted).await;
    let first = rec.envelope.clone().unwrap();
    // Not dead yet: still the same envelope.
    wait_until(
        || w.ledger.submissions.load(Ordering::SeqCst) >= 3,
        "three unknown answers",
    )
    .await;
    let rec = w
        .journal
        .load(&PayoutId::parse("p-exp").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.envelope.as_ref().map(|e| e.hash), Some(first.hash));
    assert_eq!(rec.attempt, 1);
    // A ledger closes past max_time: now a new envelope may be built, and it pays.
    w.ledger.advance(1_000);
    let rec = wait_state(&w.journal, "p-exp", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 2);
    assert_ne!(rec.envelope.unwrap().hash, first.hash);
    assert_eq!(w.ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn included_failure_is_terminal_with_reason() {
    let w = world().await;
    w.ledger.script(Scripted::Answer(SubmitOutcome::Failed {
        inclusion: payoutd_actors::ports::Inclusion {
            ledger: 9,
            fee_charged: 100,
        },
        tx_code: "tx_failed".into(),
        op_codes: vec!["op_no_destination".into()],
    }));
    w.payouts.submit(request("p-nodest", "2")).await.unwrap();
    let rec = wait_state(&w.journal, "p-nodest", PayoutState::Failed).await;
    assert!(rec.reason.unwrap().contains("op_no_destination"));
    assert!(rec.channel.is_none());
}

#[tokio::test]
async fn passivated_actor_respawns_from_the_journal() {
    let channels = [channel(1)];
    let mut p = policy();
    p.idle_passivate_ms = 20;
    let w = world_with(
        Arc::new(MemJournal::with_channels(&channels)),
        Arc::new(MemLedger::new(&channels)),
        p,
        SupervisorConfig::default(),
    )
    .await;
    w.payouts.submit(request("p-idle", "1")).await.unwrap();
    wait_state(&w.journal, "p-idle", PayoutState::Confirmed).await;
    wait_until(
        || w.metrics.live_actors.load(Ordering::Relaxed) == 0,
        "passivation",
    )
    .await;
    let spawned = w.metrics.actors_spawned.load(Ordering::Relaxed);
    let rec = w
        .payouts
        .get(&PayoutId::parse("p-idle").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, PayoutState::Confirmed);
    assert_eq!(
        w.metrics.actors_spawned.load(Ordering::Relaxed),
        spawned + 1
    );
}

#[tokio::test]
async fn recovery_drives_unfinished_payouts_after_a_restart() {
    let channels = [channel(1)];
    let journal = Arc::new(MemJournal::with_channels(&channels));
    let ledger = Arc::new(MemLedger::new(&channels));
    // First "process": it dies right after the accept was journaled (written directly here).
    let first = world_with(
        journal.clone(),
        ledger.clone(),
        policy(),
        SupervisorConfig::default(),
    )
    .await;
    let req = request("p-rec", "4");
    journal.accept(&req, req.fingerprint()).await.unwrap();
    first.payouts.shutdown(1_000).await;
    // Second "process": recovery re-drives it.
    let second = world_with(
        journal.clone(),
        ledger.clone(),
        policy(),
        SupervisorConfig::default(),
    )
    .await;
    assert_eq!(second.payouts.recover().await.unwrap(), 1);
    wait_state(&journal, "p-rec", PayoutState::Confirmed).await;
    assert_eq!(ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn live_actor_bound_refuses_new_work_and_defers_drives() {
    let channels = [channel(1)];
    let mut p = policy();
    p.channel_wait_ms = 10_000; // the second payout waits for the channel: stays live
    let config = SupervisorConfig {
        live_actors_max: 1,
        ..SupervisorConfig::default()
    };
    let w = world_with(
        Arc::new(MemJournal::with_channels(&[])),
        Arc::new(MemLedger::new(&channels)),
        p,
        config,
    )
    .await;
    // No channel at all: the first payout stays live, waiting.
    w.payouts.submit(request("p-a", "1")).await.unwrap();
    let err = w.payouts.submit(request("p-b", "1")).await.unwrap_err();
    assert_eq!(err, PayoutError::Overloaded);
}

#[tokio::test]
async fn journal_outage_is_an_error_not_a_loss() {
    let w = world().await;
    w.journal.unavailable.store(true, Ordering::SeqCst);
    let err = w.payouts.submit(request("p-down", "1")).await.unwrap_err();
    assert!(matches!(err, PayoutError::Unavailable(_)));
    w.journal.unavailable.store(false, Ordering::SeqCst);
    // The caller retries: accepted and paid.
    let a = w.payouts.submit(request("p-down", "1")).await.unwrap();
    assert!(matches!(a, SubmitAnswer::Created(_)));
    wait_state(&w.journal, "p-down", PayoutState::Confirmed).await;
}

#[tokio::test]
async fn a_parked_payout_resumes_with_its_envelope_and_pays_once() {
    let w = world().await;
    // Four failures: past the budget of three restarts, so the payout is parked.
    for _ in 0..4 {
        w.ledger.script(Scripted::Panic);
    }
    let req = request("p-resume", "1");
    w.payouts.submit(req.clone()).await.unwrap();
    let parked = wait_state(&w.journal, "p-resume", PayoutState::Parked).await;
    let envelope = parked.envelope.clone().expect("parked with its envelope");
    let id = PayoutId::parse("p-resume").unwrap();
    let resumed = w
        .payouts
        .resume(&id, "operator checked".into())
        .await
        .unwrap();
    assert_eq!(resumed.state, PayoutState::Submitted);
    let done = wait_state(&w.journal, "p-resume", PayoutState::Confirmed).await;
    assert_eq!(
        done.envelope.unwrap().hash,
        envelope.hash,
        "the same envelope, not a new one"
    );
    assert_eq!(w.ledger.payments_for(&req), 1);
    // Resuming a payout that is not parked is refused.
    let err = w.payouts.resume(&id, "again".into()).await.unwrap_err();
    assert!(matches!(err, PayoutError::NotResumable { .. }));
}
