//! The payout core over the real Postgres journal, and the journal's own guarantees:
//! fencing by version, batches prepared all or nothing and fenced by the channel lease,
//! at most one envelope per channel sequence that is not dead, idempotent settlements,
//! adoption of orphans, and the migration of rows written before batches existed. The
//! ledger here is the in-memory fake; `stellar.rs` runs the flows against the simulator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use payoutd::storage::PgJournal;
use payoutd_actors::domain::{AccountId, PayoutId};
use payoutd_actors::memory::{MemLedger, Scripted};
use payoutd_actors::ports::{
    Batch, BatchStore, ChannelLease, ClusterStore, Envelope, EnvelopeStatus, JournalError, Member,
    PayoutStore, PrepareError, Ready, Settlement, TxHash,
};
use payoutd_actors::state::{PayoutState, Step};
use payoutd_actors::{PayoutError, SubmitAnswer};

use crate::helpers::{
    channels, eventually, fresh_empty_db, pg_journal, policy, request, start_core, wait_state,
};

fn ledger() -> Arc<MemLedger> {
    Arc::new(MemLedger::new(&channels()))
}

#[tokio::test]
async fn fifty_identical_requests_one_payout_one_accepted_event() {
    let journal = pg_journal().await;
    let ledger = ledger();
    let (payouts, _) = start_core(journal.clone(), ledger.clone(), "a", channels(), policy()).await;
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
async fn a_burst_is_accepted_in_few_statements_and_paid_in_batches() {
    let journal = pg_journal().await;
    let ledger = ledger();
    ledger.flags().submit_outage.store(true, Ordering::SeqCst);
    let (payouts, _) = start_core(journal.clone(), ledger.clone(), "a", channels(), policy()).await;
    let calls: Vec<_> = (0..500)
        .map(|i| {
            let p = payouts.clone();
            tokio::spawn(async move { p.submit(request(&format!("b-{i}"), "1")).await })
        })
        .collect();
    for c in calls {
        assert!(matches!(
            c.await.unwrap().unwrap(),
            SubmitAnswer::Created(_)
        ));
    }
    ledger.flags().submit_outage.store(false, Ordering::SeqCst);
    for i in 0..500 {
        wait_state(journal.as_ref(), &format!("b-{i}"), PayoutState::Confirmed).await;
    }
    let envelopes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM envelopes WHERE status = 'applied'")
            .fetch_one(journal.pool())
            .await
            .unwrap();
    assert!(envelopes <= 12, "500 payouts in {envelopes} transactions");
}

#[tokio::test]
async fn conflicting_content_is_refused_and_stored_payout_untouched() {
    let journal = pg_journal().await;
    let (payouts, _) = start_core(journal.clone(), ledger(), "a", channels(), policy()).await;
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
async fn a_worker_panic_restarts_it_and_the_journaled_envelope_is_reused() {
    let journal = pg_journal().await;
    let ledger = ledger();
    ledger.script(Scripted::Panic);
    let (payouts, metrics) =
        start_core(journal.clone(), ledger.clone(), "a", channels(), policy()).await;
    let req = request("p-panic", "3");
    payouts.submit(req.clone()).await.unwrap();
    let rec = wait_state(journal.as_ref(), "p-panic", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1, "the journaled envelope was reused");
    assert_eq!(metrics.worker_restarts.load(Ordering::Relaxed), 1);
    assert_eq!(ledger.payments_for(&req), 1);
}

#[tokio::test]
async fn a_restart_resumes_unfinished_payouts() {
    let journal = pg_journal().await;
    let ledger = ledger();
    ledger.flags().unavailable.store(true, Ordering::SeqCst);
    let (first, _) = start_core(journal.clone(), ledger.clone(), "a", channels(), policy()).await;
    for i in 0..3 {
        first
            .submit(request(&format!("p-resume-{i}"), &format!("1.{i}")))
            .await
            .unwrap();
    }
    first.shutdown(1_000).await;
    ledger.flags().unavailable.store(false, Ordering::SeqCst);
    let (second, _) = start_core(journal.clone(), ledger.clone(), "a", channels(), policy()).await;
    assert_eq!(second.recovered(), 3);
    for i in 0..3 {
        let id = format!("p-resume-{i}");
        wait_state(journal.as_ref(), &id, PayoutState::Confirmed).await;
        assert_eq!(ledger.payments_for(&request(&id, &format!("1.{i}"))), 1);
    }
}

#[tokio::test]
async fn a_passivated_actor_respawns_from_the_journal() {
    let journal = pg_journal().await;
    let mut p = policy();
    p.idle_passivate_ms = 30;
    let (payouts, metrics) = start_core(journal.clone(), ledger(), "a", channels(), p).await;
    payouts.submit(request("p-passive", "1")).await.unwrap();
    wait_state(journal.as_ref(), "p-passive", PayoutState::Confirmed).await;
    eventually(5_000, "the actor passivates", || {
        let m = metrics.clone();
        async move { m.live_actors.load(Ordering::Relaxed) == 0 }
    })
    .await;
    let spawned = metrics.actors_spawned.load(Ordering::Relaxed);
    let answer = payouts.submit(request("p-passive", "1")).await.unwrap();
    assert!(matches!(answer, SubmitAnswer::Duplicate(r) if r.state == PayoutState::Confirmed));
    assert_eq!(metrics.actors_spawned.load(Ordering::Relaxed), spawned + 1);
}

#[tokio::test]
async fn a_stale_version_is_refused() {
    let journal = pg_journal().await;
    let req = request("p-stale", "1");
    journal.accept(&req, "a").await.unwrap();
    let v1 = journal.load(req.payout_id()).await.unwrap().unwrap();
    let v2 = journal
        .apply(
            &v1,
            &Step::Noted {
                note: "first writer".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let err = journal
        .apply(
            &v1,
            &Step::Cancelled {
                reason: "stale writer".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Stale(_)));
    let now = journal.load(req.payout_id()).await.unwrap().unwrap();
    assert_eq!((now.state, now.version), (PayoutState::Accepted, 2));
}

/// A batch of the given payouts on `channel` at `sequence`, built by hand (no ledger).
fn batch(channel: AccountId, sequence: i64, members: Vec<Ready>, tag: u8) -> Batch {
    let mut hash = [tag; 32];
    hash[..8].copy_from_slice(&sequence.to_be_bytes());
    Batch {
        envelope: Envelope {
            xdr: format!("test-envelope-{tag}"),
            hash: TxHash(hash),
            source: channel,
            sequence,
            fee_stroops: 100 * members.len() as u32,
            max_time: 1_000,
            ledger_bounds: None,
        },
        built_ledger: 10,
        members: members
            .into_iter()
            .enumerate()
            .map(|(i, ready)| Member {
                ready,
                op_index: i as u32,
            })
            .collect(),
    }
}

async fn accepted(journal: &PgJournal, ids: &[&str]) -> Vec<Ready> {
    let mut out = Vec::new();
    for id in ids {
        journal.accept(&request(id, "1"), "a").await.unwrap();
        out.push(Ready::of(
            &journal
                .load(&PayoutId::parse(id).unwrap())
                .await
                .unwrap()
                .unwrap(),
        ));
    }
    out
}

/// The settlement of an applied envelope whose one member, `id`, is paid in `ledger` (fee
/// 100 stroops).
fn paid_alone(id: &PayoutId, ledger: u32, note: &str) -> Settlement {
    let inclusion = payoutd_actors::ports::Inclusion {
        ledger,
        fee_charged: 100,
    };
    Settlement {
        status: EnvelopeStatus::Applied,
        inclusion: Some(inclusion),
        note: note.into(),
        members: vec![(
            id.clone(),
            Step::Confirmed {
                inclusion,
                balance_id: None,
            },
        )],
    }
}

/// A fresh journal with the first test channel registered and leased (able to sign) to
/// instance "a", which is alive.
async fn leased_journal() -> (Arc<PgJournal>, AccountId, ChannelLease) {
    leased(pg_journal().await).await
}

/// `journal` with the first test channel registered and leased to instance "a", alive.
async fn leased(journal: Arc<PgJournal>) -> (Arc<PgJournal>, AccountId, ChannelLease) {
    let channel = channels()[0];
    journal.register_channels(&[channel]).await.unwrap();
    journal.heartbeat("a", 60_000).await.unwrap();
    let lease = journal
        .claim_channel("a", &channel, true)
        .await
        .unwrap()
        .unwrap();
    (journal, channel, lease)
}

#[tokio::test]
async fn a_batch_is_prepared_all_or_nothing_and_fenced_by_the_lease() {
    let (journal, channel, lease) = leased_journal().await;
    let mut members = accepted(&journal, &["m-1", "m-2", "m-3"]).await;
    // One member moved on (cancelled) after it was read: nothing of the batch is written.
    let m2 = journal.load(members[1].id()).await.unwrap().unwrap();
    journal
        .apply(
            &m2,
            &Step::Cancelled {
                reason: "caller".into(),
            },
        )
        .await
        .unwrap();
    let err = journal
        .prepare(&lease, &batch(channel, 11, members.clone(), 1))
        .await
        .unwrap_err();
    assert_eq!(err, PrepareError::Stale(vec![members[1].id().clone()]));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM envelopes")
        .fetch_one(journal.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    for id in ["m-1", "m-3"] {
        let r = journal
            .load(&PayoutId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.state, r.version), (PayoutState::Accepted, 1));
    }
    members.remove(1);
    // Another instance cannot take a live owner's lease; once it is dead it can, and the
    // old holder's prepare is refused.
    assert_eq!(
        journal.claim_channel("b", &channel, true).await.unwrap(),
        None
    );
    journal.heartbeat("a", 0).await.unwrap();
    let newer = journal
        .claim_channel("b", &channel, true)
        .await
        .unwrap()
        .unwrap();
    assert!(newer.epoch > lease.epoch);
    let err = journal
        .prepare(&lease, &batch(channel, 11, members.clone(), 2))
        .await
        .unwrap_err();
    assert_eq!(err, PrepareError::LeaseLost);
    journal
        .prepare(&newer, &batch(channel, 11, members.clone(), 3))
        .await
        .unwrap();
    for id in ["m-1", "m-3"] {
        let r = journal
            .load(&PayoutId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.state, r.version, r.attempt),
            (PayoutState::Prepared, 2, 1)
        );
    }
    let open = journal.open_batches(&channel).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].members.len(), 2);
    assert_eq!(open[0].members[1].op_index, 1);
}

#[tokio::test]
async fn one_envelope_per_channel_sequence_unless_dead() {
    let (journal, channel, lease) = leased_journal().await;
    let first = accepted(&journal, &["s-1"]).await;
    let second = accepted(&journal, &["s-2"]).await;
    let b1 = batch(channel, 21, first, 1);
    journal.prepare(&lease, &b1).await.unwrap();
    let b2 = batch(channel, 21, second.clone(), 2);
    assert_eq!(
        journal.prepare(&lease, &b2).await.unwrap_err(),
        PrepareError::SequenceTaken
    );
    // Proven dead: its sequence number is free again, and its payout back to accepted.
    let dead = Settlement {
        status: EnvelopeStatus::Dead,
        inclusion: None,
        note: "test".into(),
        members: vec![(
            PayoutId::parse("s-1").unwrap(),
            Step::Requeued {
                reason: "dead".into(),
                park: None,
            },
        )],
    };
    let changed = journal.settle(&b1.envelope.hash, &dead, "a").await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state, PayoutState::Accepted);
    let s1 = journal
        .load(&PayoutId::parse("s-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(s1.envelope.is_none());
    // Settling again changes nothing.
    assert!(
        journal
            .settle(&b1.envelope.hash, &dead, "a")
            .await
            .unwrap()
            .is_empty()
    );
    journal.prepare(&lease, &b2).await.unwrap();
}

#[tokio::test]
async fn a_parked_member_stays_parked_without_its_dead_envelope_and_is_paid_if_applied() {
    let (journal, channel, lease) = leased_journal().await;
    let members = accepted(&journal, &["k-1", "k-2"]).await;
    let b = batch(channel, 31, members, 1);
    journal.prepare(&lease, &b).await.unwrap();
    for id in ["k-1", "k-2"] {
        let r = journal
            .load(&PayoutId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        journal
            .apply(
                &r,
                &Step::Parked {
                    reason: "operator".into(),
                },
            )
            .await
            .unwrap();
    }
    let applied = Settlement {
        status: EnvelopeStatus::Applied,
        inclusion: Some(payoutd_actors::ports::Inclusion {
            ledger: 12,
            fee_charged: 200,
        }),
        note: "test".into(),
        members: vec![
            (
                PayoutId::parse("k-1").unwrap(),
                Step::Confirmed {
                    inclusion: payoutd_actors::ports::Inclusion {
                        ledger: 12,
                        fee_charged: 200,
                    },
                    balance_id: None,
                },
            ),
            (
                PayoutId::parse("k-2").unwrap(),
                Step::Requeued {
                    reason: "x".into(),
                    park: None,
                },
            ),
        ],
    };
    let changed = journal
        .settle(&b.envelope.hash, &applied, "a")
        .await
        .unwrap();
    assert_eq!(changed.len(), 2);
    let load = |id: &'static str| {
        let j = journal.clone();
        async move {
            j.load(&PayoutId::parse(id).unwrap())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let k1 = load("k-1").await;
    assert_eq!(
        k1.state,
        PayoutState::Confirmed,
        "a parked payout that was paid is confirmed"
    );
    assert_eq!(k1.inclusion.unwrap().ledger, 12);
    let k2 = load("k-2").await;
    assert_eq!(k2.state, PayoutState::Parked);
    assert_eq!(
        k2.reason.as_deref(),
        Some("operator"),
        "the operator's reason stays"
    );
    assert!(k2.envelope.is_none());
}

#[tokio::test]
async fn orphans_are_adopted_with_an_event() {
    let journal = pg_journal().await;
    let signing = AccountId::from_bytes([31; 32]);
    let settling = AccountId::from_bytes([32; 32]);
    journal
        .register_channels(&[signing, settling])
        .await
        .unwrap();
    journal.heartbeat("dead", 0).await.unwrap();
    journal.heartbeat("alive", 60_000).await.unwrap();
    journal.heartbeat("keyless", 60_000).await.unwrap();
    journal.heartbeat("settler", 60_000).await.unwrap();
    // A live instance keeps its payouts only while it holds a lease it can sign with.
    journal
        .claim_channel("alive", &signing, true)
        .await
        .unwrap()
        .unwrap();
    journal
        .claim_channel("settler", &settling, false)
        .await
        .unwrap()
        .unwrap();
    journal.accept(&request("o-1", "1"), "dead").await.unwrap();
    journal
        .accept(&request("o-2", "1"), "never-heartbeated")
        .await
        .unwrap();
    journal.accept(&request("o-3", "1"), "alive").await.unwrap();
    journal
        .accept(&request("o-4", "1"), "keyless")
        .await
        .unwrap();
    journal
        .accept(&request("o-5", "1"), "settler")
        .await
        .unwrap();
    let adopted = journal.adopt_orphans("me", 100).await.unwrap();
    let mut ids: Vec<String> = adopted.iter().map(|r| r.id().to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["o-1", "o-2", "o-4", "o-5"]);
    let r = journal
        .load(&PayoutId::parse("o-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.owner.as_deref(), r.version), (Some("me"), 2));
    let kinds: Vec<String> = journal
        .events(r.id())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["accepted", "adopted"]);
    assert!(journal.adopt_orphans("me", 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn rows_written_before_batches_are_carried_over() {
    let (pool, _) = fresh_empty_db().await;
    for sql in [
        include_str!("../../migrations/0001_journal.sql"),
        include_str!("../../migrations/0002_ingress_outbox.sql"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    // A payout submitted under the old schema, with its envelope and its channel lease.
    let req = request("old-1", "2");
    let raw = serde_json::to_value(req.raw()).unwrap();
    let channel = channels()[0].to_strkey();
    let hash = "ab".repeat(32);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO payouts (payout_id, fingerprint, request, state, version, attempt, channel,
                              envelope_xdr, tx_hash, tx_source, tx_sequence, tx_fee, max_time)
         VALUES ('old-1', decode('{fp}', 'hex'), '{raw}', 'submitted', 3, 1, '{channel}',
                 'AAAA', '{hash}', '{channel}', 42, 100, 999);
         INSERT INTO envelopes (tx_hash, payout_id, attempt, source, sequence, max_time, envelope_xdr)
         VALUES ('{hash}', 'old-1', 1, '{channel}', 42, 999, 'AAAA');
         INSERT INTO channel_accounts (account, leased_to) VALUES ('{channel}', 'old-1');
         INSERT INTO outbox (event_id, payout_id, kind, payload)
         VALUES ('old-1:3', 'old-1', 'submitted', '{{}}');",
        fp = req.fingerprint().to_hex(),
    )))
    .execute(&pool)
    .await
    .unwrap();
    for sql in [
        include_str!("../../migrations/0003_batches_and_cluster.sql"),
        include_str!("../../migrations/0004_reconcile.sql"),
        include_str!("../../migrations/0005_controls.sql"),
        include_str!("../../migrations/0006_limits.sql"),
        include_str!("../../migrations/0007_operation_kinds.sql"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let journal = PgJournal::new(pool).await;
    let r = journal.load(req.payout_id()).await.unwrap().unwrap();
    assert_eq!(r.state, PayoutState::Submitted);
    assert_eq!(r.envelope.unwrap().hash.to_hex(), hash);
    assert_eq!(r.envelope.unwrap().op_index, 0);
    assert_eq!(r.op_kind, payoutd_actors::destinations::OpKind::Payment);
    let open = journal.open_batches(&channels()[0]).await.unwrap();
    assert_eq!(open.len(), 1, "an old envelope is a batch of one");
    assert_eq!(open[0].envelope.sequence, 42);
    assert_eq!(open[0].built_ledger, 0);
    assert_eq!(open[0].members[0].ready.id(), req.payout_id());
    let version: i64 = sqlx::query_scalar("SELECT version FROM outbox WHERE event_id = 'old-1:3'")
        .fetch_one(journal.pool())
        .await
        .unwrap();
    assert_eq!(version, 3);
    // Settled under the schema of today, its envelope's step is logged once for the batch,
    // and its history and envelopes find it (migrations/0012 listed the live envelope).
    for sql in [
        include_str!("../../migrations/0008_webhooks.sql"),
        include_str!("../../migrations/0009_spends_per_envelope.sql"),
        include_str!("../../migrations/0010_unsettled_by_state.sql"),
        include_str!("../../migrations/0011_hot_payout_updates.sql"),
        include_str!("../../migrations/0012_envelope_events.sql"),
        include_str!("../../migrations/0013_accept_in_payout_row.sql"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(journal.pool())
            .await
            .unwrap();
    }
    journal
        .settle(
            &TxHash([0xab; 32]),
            &paid_alone(req.payout_id(), 50, "carried over"),
            "a",
        )
        .await
        .unwrap();
    let events = journal.events(req.payout_id()).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.version, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(4, "confirmed")]
    );
    let envs = payoutd::storage::console::envelopes(journal.pool(), "old-1")
        .await
        .unwrap();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].tx_hash, hash);
}

/// Every payout leaves one spend row; those past every window (a day) are deleted by the
/// sweep, at most once per `SPENDS_PRUNE_INTERVAL_MS`, and the window's own stay.
#[tokio::test]
async fn spends_past_every_window_are_pruned() {
    let journal = pg_journal().await;
    let pool = journal.pool();
    let channel = channels()[0].to_strkey();
    sqlx::query(
        "INSERT INTO envelopes (tx_hash, source, sequence, fee, max_time, built_ledger,
                                envelope_xdr, member_ids, status)
         VALUES ($1, $2, 1, 100, 999, 0, 'AAAA', ARRAY['old-1','new-1'], 'applied')",
    )
    .bind("cd".repeat(32))
    .bind(&channel)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO limit_spends (tx_hash, asset, amount, payouts, at) VALUES
           ($1, 'native', 10, 1, now() - interval '26 hours'),
           ($1, 'USD:new', 10, 1, now() - interval '23 hours')",
    )
    .bind("cd".repeat(32))
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(journal.prune_spends().await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT asset FROM limit_spends")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["USD:new"], "the day's window keeps its spends");
    // Within the interval nothing more is asked of the database.
    assert_eq!(journal.prune_spends().await.unwrap(), 0);
}

/// The ids `sql` returns, in order.
async fn ids(journal: &PgJournal, sql: &'static str, bind: &str) -> Vec<String> {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_all(journal.pool())
        .await
        .unwrap()
}

/// No index on `payouts` names `state` (so that a payout's steps are HOT updates): each
/// state is listed through another path, and `payouts_waiting` follows `accepted` through
/// every step into and out of it. Every state's listing is held against a plain scan.
#[tokio::test]
async fn every_state_is_listed_and_the_waiting_list_follows_accepted() {
    use payoutd_actors::limits::Hold;
    use payoutd_actors::ports::{Inclusion, ListFilter, PayoutReads};

    let (journal, channel, lease) = leased_journal().await;
    let all = accepted(
        &journal,
        &[
            "s-1", "s-2", "s-3", "s-4", "s-5", "s-6", "s-7", "s-8", "s-9", "s-10",
        ],
    )
    .await;
    let id = |s: &str| PayoutId::parse(s).unwrap();
    let load = |s: &'static str| {
        let j = journal.clone();
        async move { j.load(&PayoutId::parse(s).unwrap()).await.unwrap().unwrap() }
    };
    // s-1 stays accepted. s-4 is cancelled, s-5 held until a moment ago, s-10 held for an
    // operator.
    let s4 = load("s-4").await;
    let cancel = Step::Cancelled {
        reason: "caller".into(),
    };
    journal.apply(&s4, &cancel).await.unwrap();
    let hold = |r: &Ready, until_unix_ms| {
        (
            r.clone(),
            Hold {
                id: r.id().clone(),
                reason: "held: test".into(),
                until_unix_ms,
            },
        )
    };
    let held = journal
        .hold(&[hold(&all[4], Some(1)), hold(&all[9], None)])
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    // s-2, s-3 in one envelope (s-3's marked submitted below, with s-2 parked first);
    // s-6 to s-9 in another, settled: s-6 confirmed, s-7 failed, s-8 requeued (accepted
    // again), s-9 parked by the settlement.
    let b1 = batch(channel, 41, vec![all[1].clone(), all[2].clone()], 1);
    journal.prepare(&lease, &b1).await.unwrap();
    let s2 = load("s-2").await;
    let park = Step::Parked {
        reason: "operator".into(),
    };
    journal.apply(&s2, &park).await.unwrap();
    journal
        .mark_submitted(&b1.envelope.hash, "sent")
        .await
        .unwrap();
    let b2 = batch(channel, 42, all[5..9].to_vec(), 2);
    journal.prepare(&lease, &b2).await.unwrap();
    let inclusion = Inclusion {
        ledger: 12,
        fee_charged: 400,
    };
    let failed = Settlement {
        status: EnvelopeStatus::Applied,
        inclusion: Some(inclusion),
        note: "test".into(),
        members: vec![
            (
                id("s-6"),
                Step::Confirmed {
                    inclusion,
                    balance_id: None,
                },
            ),
            (
                id("s-7"),
                Step::Failed {
                    reason: "op_no_destination".into(),
                    inclusion: Some(inclusion),
                },
            ),
            (
                id("s-8"),
                Step::Requeued {
                    reason: "another operation failed".into(),
                    park: None,
                },
            ),
            (
                id("s-9"),
                Step::Requeued {
                    reason: "attempts".into(),
                    park: Some("attempts exhausted".into()),
                },
            ),
        ],
    };
    journal
        .settle(&b2.envelope.hash, &failed, "a")
        .await
        .unwrap();

    let expected = [
        (PayoutState::Accepted, vec!["s-1", "s-8"]),
        (PayoutState::Prepared, vec![]),
        (PayoutState::Submitted, vec!["s-3"]),
        (PayoutState::Confirmed, vec!["s-6"]),
        (PayoutState::Failed, vec!["s-7"]),
        (PayoutState::Parked, vec!["s-2", "s-9"]),
        (PayoutState::Cancelled, vec!["s-4"]),
        (PayoutState::Held, vec!["s-10", "s-5"]),
    ];
    for (state, want) in &expected {
        let scan = ids(
            &journal,
            "SELECT payout_id FROM payouts WHERE state = $1 ORDER BY payout_id",
            state.as_str(),
        )
        .await;
        assert_eq!(&scan, want, "the rows in {state:?}");
        let filter = ListFilter {
            state: Some(*state),
            ..ListFilter::default()
        };
        let listed: Vec<String> = journal
            .list(&filter, None, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id().to_string())
            .collect();
        assert_eq!(&listed, want, "the listing of {state:?}");
    }
    let waiting = ids(
        &journal,
        "SELECT payout_id FROM payouts_waiting WHERE owner = $1 ORDER BY payout_id",
        "a",
    )
    .await;
    assert_eq!(waiting, ["s-1", "s-8"]);
    let ready: Vec<String> = journal
        .ready_of("a", None, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id().to_string())
        .collect();
    assert_eq!(ready, ["s-1", "s-8"]);

    // The hold that ran out is released (waiting again), the other stays; a cancelled
    // hold leaves nothing for the release to find.
    let s10 = load("s-10").await;
    journal.apply(&s10, &cancel).await.unwrap();
    let released = journal.release_held("a", 100).await.unwrap();
    let released: Vec<String> = released.iter().map(|r| r.id().to_string()).collect();
    assert_eq!(released, ["s-5"]);
    let waiting = ids(
        &journal,
        "SELECT payout_id FROM payouts_waiting WHERE owner = $1 ORDER BY payout_id",
        "a",
    )
    .await;
    assert_eq!(waiting, ["s-1", "s-5", "s-8"]);
    let holds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payouts WHERE held_until IS NOT NULL")
            .fetch_one(journal.pool())
            .await
            .unwrap();
    assert_eq!(holds, 0, "no payout outside `held` keeps a held_until");

    // Adoption moves the waiting entries to their new owner, and only those.
    journal.heartbeat("a", 0).await.unwrap();
    let adopted = journal.adopt_orphans("b", 100).await.unwrap();
    let adopted: Vec<String> = adopted.iter().map(|r| r.id().to_string()).collect();
    assert_eq!(adopted, ["s-1", "s-5", "s-8"]);
    let waiting = ids(
        &journal,
        "SELECT payout_id FROM payouts_waiting WHERE owner = $1 ORDER BY payout_id",
        "b",
    )
    .await;
    assert_eq!(waiting, ["s-1", "s-5", "s-8"]);

    // The console's oldest unfinished payout is the first one accepted that is not done.
    let progress = payoutd::storage::console::progress(journal.pool(), &ListFilter::default())
        .await
        .unwrap();
    assert_eq!(progress["oldest_unfinished"]["payout_id"], "s-1");

    // No index on `payouts` names, in its key or its predicate, a column that the steps
    // accepted → prepared → submitted → confirmed change: those updates can be HOT. (The
    // benchmark counts how many were: `payoutd-bench inprocess`.)
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'payouts'::regclass",
    )
    .fetch_all(journal.pool())
    .await
    .unwrap();
    let changed = [
        "state",
        "version",
        "attempt",
        "reason",
        "tx_hash",
        "op_index",
        "ledger",
        "fee_charged",
        "balance_id",
        "updated_at",
    ];
    for def in &defs {
        let words: Vec<&str> = def
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        for column in changed {
            assert!(!words.contains(&column), "{def} names {column}");
        }
    }
    assert_eq!(defs.len(), 3, "{defs:?}");
}

/// Prepares, submits and settles one batch of three on a fresh journal, one member failing
/// with a code and one requeued; returns the journal and the members' histories as
/// `(version, kind, state, detail)`.
async fn one_batch_lived(
    outbox: bool,
) -> (Arc<PgJournal>, Vec<Vec<(i64, String, String, String)>>) {
    let (journal, channel, lease) = leased(Arc::new(PgJournal::with_options(
        crate::helpers::fresh_db().await,
        outbox,
        payoutd::storage::AcceptBatching::default(),
    )))
    .await;
    let members = accepted(&journal, &["e-1", "e-2", "e-3"]).await;
    let b = batch(channel, 41, members, 7);
    journal.prepare(&lease, &b).await.unwrap();
    let submitted = journal
        .mark_submitted(&b.envelope.hash, "timeout")
        .await
        .unwrap();
    assert_eq!(submitted.len(), 3);
    // Each with its new version: accepted (1), prepared (2), submitted (3).
    assert!(submitted.iter().all(|(_, v)| *v == 3), "{submitted:?}");
    let inclusion = payoutd_actors::ports::Inclusion {
        ledger: 12,
        fee_charged: 300,
    };
    let id = |s: &str| PayoutId::parse(s).unwrap();
    let settlement = Settlement {
        status: EnvelopeStatus::Applied,
        inclusion: Some(inclusion),
        note: "test".into(),
        members: vec![
            (
                id("e-1"),
                Step::Confirmed {
                    inclusion,
                    balance_id: None,
                },
            ),
            (
                id("e-2"),
                Step::Failed {
                    reason: "op_no_trust".into(),
                    inclusion: Some(inclusion),
                },
            ),
            (
                id("e-3"),
                Step::Requeued {
                    reason: "op_underfunded elsewhere".into(),
                    park: None,
                },
            ),
        ],
    };
    journal
        .settle(&b.envelope.hash, &settlement, "a")
        .await
        .unwrap();
    let mut histories = Vec::new();
    for m in ["e-1", "e-2", "e-3"] {
        let events = journal.events(&id(m)).await.unwrap();
        histories.push(
            events
                .into_iter()
                .map(|e| {
                    (
                        e.version,
                        e.kind,
                        format!("{:?}", e.state),
                        e.detail.to_string(),
                    )
                })
                .collect(),
        );
    }
    (journal, histories)
}

async fn count(journal: &PgJournal, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(journal.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_step_is_one_event_row_and_every_member_reads_its_whole_history() {
    // Without an outbox: one row per step for the whole batch (prepare, submission,
    // settlement), the accepts in the payout rows, and a member's own row only for the step
    // that takes it out of the envelope (the requeue, which names the envelope).
    let (journal, without) = one_batch_lived(false).await;
    assert_eq!(
        count(&journal, "SELECT count(*) FROM envelope_events").await,
        3
    );
    assert_eq!(
        count(&journal, "SELECT count(*) FROM payout_events").await,
        1,
        "only the requeue is logged per payout"
    );
    assert_eq!(
        count(
            &journal,
            "SELECT count(*) FROM payouts WHERE accepted_owner IS NOT NULL"
        )
        .await,
        3,
        "the accepts are in the payout rows"
    );
    assert_eq!(
        count(
            &journal,
            "SELECT count(*) FROM payout_events WHERE kind = 'requeued' AND detail ? 'tx_hash'"
        )
        .await,
        1
    );
    // With the outbox on, every member's event is its own row (the publisher and the
    // webhooks read them by payout and version), and no batch rows are written.
    let (journal_on, with) = one_batch_lived(true).await;
    assert_eq!(
        count(&journal_on, "SELECT count(*) FROM envelope_events").await,
        0
    );
    assert_eq!(
        count(&journal_on, "SELECT count(*) FROM payout_events").await,
        12
    );
    assert_eq!(count(&journal_on, "SELECT count(*) FROM outbox").await, 12);
    assert_eq!(
        count(
            &journal_on,
            "SELECT count(*) FROM payouts WHERE accepted_owner IS NOT NULL"
        )
        .await,
        0,
        "with the outbox on, the accepts are event rows"
    );
    // A member's history reads the same either way: accepted, prepared, submitted, and
    // its own settlement, version after version.
    assert_eq!(without.len(), 3);
    for (i, (a, b)) in without.iter().zip(&with).enumerate() {
        let kinds: Vec<&str> = a.iter().map(|e| e.1.as_str()).collect();
        let versions: Vec<i64> = a.iter().map(|e| e.0).collect();
        assert_eq!(versions, vec![1, 2, 3, 4], "member {i}: {a:?}");
        assert_eq!(&kinds[..3], ["accepted", "prepared", "submitted"]);
        // The accept's detail names the owner and fingerprint alike; the rest match whole.
        assert_eq!(a[1..], b[1..], "member {i}");
        assert_eq!((&a[0].0, &a[0].1, &a[0].2), (&b[0].0, &b[0].1, &b[0].2));
    }
    assert_eq!(without[0][3].1, "confirmed");
    assert_eq!(without[1][3].1, "failed");
    assert!(
        without[1][3].3.contains("op_no_trust"),
        "{:?}",
        without[1][3]
    );
    assert_eq!(
        without[2][3].2, "Accepted",
        "the requeued member waits again"
    );
    assert!(
        without[0][1].3.contains("\"op_index\":0"),
        "{:?}",
        without[0][1]
    );
    assert!(
        without[2][1].3.contains("\"op_index\":2"),
        "{:?}",
        without[2][1]
    );
    // The console lists the envelope for each member, with its operation.
    let envs = payoutd::storage::console::envelopes(journal.pool(), "e-3")
        .await
        .unwrap();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].op_index, Some(2));
    assert_eq!(envs[0].operations, 3);

    // The requeued member is paid by a second envelope: its history holds both envelopes'
    // steps, and the console lists both.
    let channel = channels()[0];
    let lease = journal
        .claim_channel("a", &channel, true)
        .await
        .unwrap()
        .unwrap();
    let again = Ready::of(
        &journal
            .load(&PayoutId::parse("e-3").unwrap())
            .await
            .unwrap()
            .unwrap(),
    );
    let b2 = batch(channel, 42, vec![again], 8);
    journal.prepare(&lease, &b2).await.unwrap();
    let paid = paid_alone(&PayoutId::parse("e-3").unwrap(), 13, "second");
    journal.settle(&b2.envelope.hash, &paid, "a").await.unwrap();
    let history = journal
        .events(&PayoutId::parse("e-3").unwrap())
        .await
        .unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| (e.version, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "accepted"),
            (2, "prepared"),
            (3, "submitted"),
            (4, "requeued"),
            (5, "prepared"),
            (6, "confirmed"),
        ]
    );
    // A batch of one logs its member's events as its own rows (cheaper than a batch row).
    assert_eq!(
        count(&journal, "SELECT count(*) FROM envelope_events").await,
        3
    );
    assert_eq!(
        count(&journal, "SELECT count(*) FROM payout_events").await,
        3,
        "the requeue and the second envelope's prepare and settlement (the accepts are in the rows)"
    );
    let envs = payoutd::storage::console::envelopes(journal.pool(), "e-3")
        .await
        .unwrap();
    assert_eq!(envs.len(), 2);
    assert_eq!(envs[1].op_index, Some(0));
}
