//! The payout core over the real Postgres journal (issue: payout core). The ledger here is
//! the in-memory fake; the Stellar tests run the same flows against the simulator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use payoutd_actors::domain::{AccountId, PayoutId};
use payoutd_actors::memory::{MemLedger, Scripted};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Change, Journal, JournalError, PayoutState};
use payoutd_actors::{Context, PayoutError, PayoutPolicy, Payouts, SubmitAnswer, SupervisorConfig};

use crate::helpers::{channels, eventually, pg_journal, policy, request, wait_state};

async fn start(
    journal: Arc<dyn Journal>,
    ledger: Arc<MemLedger>,
    policy: PayoutPolicy,
) -> (Payouts, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        journal,
        ledger,
        policy,
        metrics: metrics.clone(),
    });
    let (payouts, _) = Payouts::start(ctx, SupervisorConfig::default(), 10_000)
        .await
        .unwrap();
    (payouts, metrics)
}

#[tokio::test]
async fn fifty_identical_requests_one_payout_one_accepted_event() {
    let journal = pg_journal(&channels()).await;
    let ledger = Arc::new(MemLedger::new(&channels()));
    let (payouts, _) = start(journal.clone(), ledger.clone(), policy()).await;
    let req = request("reward-2026-11-0042", "12.5");
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (p, r) = (payouts.clone(), req.clone());
            tokio::spawn(async move { p.submit(r).await })
        })
        .collect();
    let mut created = 0;
    for h in handles {
        if matches!(h.await.unwrap().unwrap(), SubmitAnswer::Created(_)) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    wait_state(
        journal.as_ref(),
        "reward-2026-11-0042",
        PayoutState::Confirmed,
    )
    .await;
    let events = journal.events(req.payout_id()).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "accepted").count(), 1);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["accepted", "prepared", "confirmed"]);
    assert_eq!(ledger.payments_for(&req), 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payouts")
        .fetch_one(journal.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn conflicting_content_is_refused_and_stored_payout_untouched() {
    let journal = pg_journal(&channels()).await;
    let (payouts, _) = start(
        journal.clone(),
        Arc::new(MemLedger::new(&channels())),
        policy(),
    )
    .await;
    payouts.submit(request("p-conflict", "1")).await.unwrap();
    let err = payouts
        .submit(request("p-conflict", "2"))
        .await
        .unwrap_err();
    assert!(matches!(err, PayoutError::Conflict { .. }));
    let rec = wait_state(journal.as_ref(), "p-conflict", PayoutState::Confirmed).await;
    assert_eq!(rec.request.amount().stroops(), 10_000_000);
}

#[tokio::test]
async fn panic_mid_step_restarts_and_reaches_the_right_state() {
    let journal = pg_journal(&channels()).await;
    let ledger = Arc::new(MemLedger::new(&channels()));
    ledger.script(Scripted::Panic);
    let (payouts, metrics) = start(journal.clone(), ledger.clone(), policy()).await;
    let req = request("p-panic", "3");
    payouts.submit(req.clone()).await.unwrap();
    let rec = wait_state(journal.as_ref(), "p-panic", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1, "the journaled envelope was reused");
    assert_eq!(metrics.actor_restarts.load(Ordering::Relaxed), 1);
    assert_eq!(ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn restart_budget_exhausted_parks_with_reason() {
    let journal = pg_journal(&channels()).await;
    let ledger = Arc::new(MemLedger::new(&channels()));
    for _ in 0..10 {
        ledger.script(Scripted::Panic);
    }
    let (payouts, _) = start(journal.clone(), ledger.clone(), policy()).await;
    payouts.submit(request("p-parked", "3")).await.unwrap();
    let rec = wait_state(journal.as_ref(), "p-parked", PayoutState::Parked).await;
    assert!(rec.reason.unwrap().contains("restart period"));
    let events = journal
        .events(&PayoutId::parse("p-parked").unwrap())
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().kind, "parked");
}

#[tokio::test]
async fn process_restart_resumes_unfinished_payouts() {
    let journal = pg_journal(&channels()).await;
    let ledger = Arc::new(MemLedger::new(&channels()));
    // "Process" one accepts three payouts and dies before driving them (the ledger answers
    // are lost and the journal goes away mid-flight is modelled by accepting directly).
    for i in 0..3 {
        let req = request(&format!("p-resume-{i}"), "1");
        journal.accept(&req, req.fingerprint()).await.unwrap();
    }
    // One of them already has a journaled envelope that was applied before the crash.
    let (first, _) = start(journal.clone(), ledger.clone(), policy()).await;
    first.shutdown(1_000).await;
    let (second, _) = start(journal.clone(), ledger.clone(), policy()).await;
    assert_eq!(second.recover().await.unwrap(), 3);
    for i in 0..3 {
        let id = format!("p-resume-{i}");
        wait_state(journal.as_ref(), &id, PayoutState::Confirmed).await;
        assert_eq!(ledger.payments_for(&request(&id, "1")), 1);
    }
}

#[tokio::test]
async fn passivated_actor_respawns_from_the_journal() {
    let journal = pg_journal(&channels()).await;
    let mut p = policy();
    p.idle_passivate_ms = 30;
    let (payouts, metrics) = start(journal.clone(), Arc::new(MemLedger::new(&channels())), p).await;
    payouts.submit(request("p-passive", "1")).await.unwrap();
    wait_state(journal.as_ref(), "p-passive", PayoutState::Confirmed).await;
    eventually(5_000, "the actor passivates", || {
        let m = metrics.clone();
        async move { m.live_actors.load(Ordering::Relaxed) == 0 }
    })
    .await;
    let spawned = metrics.actors_spawned.load(Ordering::Relaxed);
    // A duplicate re-spawns the actor, which answers from the journal.
    let answer = payouts.submit(request("p-passive", "1")).await.unwrap();
    assert!(matches!(answer, SubmitAnswer::Duplicate(r) if r.state == PayoutState::Confirmed));
    assert_eq!(metrics.actors_spawned.load(Ordering::Relaxed), spawned + 1);
}

#[tokio::test]
async fn stale_version_is_refused() {
    let journal = pg_journal(&channels()).await;
    let req = request("p-stale", "1");
    journal.accept(&req, req.fingerprint()).await.unwrap();
    let v1 = journal.load(req.payout_id()).await.unwrap().unwrap();
    let v2 = journal
        .apply(
            &v1,
            &Change::Noted {
                note: "first writer".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    // A second writer still holding version 1 is fenced out and changes nothing.
    let err = journal
        .apply(
            &v1,
            &Change::Cancelled {
                reason: "stale writer".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Stale(_)));
    let now = journal.load(req.payout_id()).await.unwrap().unwrap();
    assert_eq!((now.state, now.version), (PayoutState::Accepted, 2));
}

#[tokio::test]
async fn channel_leases_are_exclusive_and_sticky() {
    let channel = AccountId::from_bytes([9; 32]);
    let journal = pg_journal(&[channel]).await;
    for id in ["p-a", "p-b"] {
        let req = request(id, "1");
        journal.accept(&req, req.fingerprint()).await.unwrap();
    }
    let a = PayoutId::parse("p-a").unwrap();
    let b = PayoutId::parse("p-b").unwrap();
    assert_eq!(journal.lease_channel(&a).await.unwrap(), Some(channel));
    assert_eq!(
        journal.lease_channel(&a).await.unwrap(),
        Some(channel),
        "same payout gets its lease back"
    );
    assert_eq!(
        journal.lease_channel(&b).await.unwrap(),
        None,
        "one channel, one payout"
    );
}
