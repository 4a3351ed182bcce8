//! Spending limits over the real Postgres journal and the simulator over HTTP: two
//! instances submitting at once never spend more than a window allows, the spends survive
//! a restart in the middle of the window, held payouts carry the reason and go on when the
//! window moves (or wait for an operator), and a payout above the per-payout limit is never
//! paid without one.

use std::sync::Arc;
use std::time::Duration;

use payoutd::storage::PgJournal;
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, PayoutId, PayoutRequest};
use payoutd_actors::limits::{AssetLimit, Limits, WhenReached};
use payoutd_actors::ports::PayoutStore;
use payoutd_actors::state::PayoutState;
use payoutd_actors::{PayoutPolicy, Payouts};
use payoutd_simulator::{CloseMode, PaymentFilter, SimConfig, SimHandle, Simulator};
use payoutd_stellar::{Keyring, StellarLedger};
use sqlx::PgPool;

use crate::helpers::{fresh_db, start_core};
use crate::stellar::{PASSPHRASE, XLM, keypair, timeouts};

/// A simulator over HTTP whose ledgers a background task closes whenever something is
/// pending, with a distribution account, four channels and a destination.
struct Net {
    sim: SimHandle,
    distribution: AccountId,
    channels: Vec<AccountId>,
    destination: AccountId,
    _closer: tokio::task::JoinHandle<()>,
}

async fn net() -> Net {
    let sim = Simulator::new(SimConfig {
        network_passphrase: PASSPHRASE.into(),
        close_mode: CloseMode::Manual,
        submit_wait_ms: 1_000,
        seed: 12,
        genesis_close_time: Some(1_700_000_000),
        close_time_step_s: 5,
        ..SimConfig::default()
    })
    .unwrap();
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let distribution = keypair("limits distribution").account();
    sim.create_account(&distribution.to_strkey(), 1_000_000 * XLM)
        .unwrap();
    let channels: Vec<AccountId> = (0..4)
        .map(|i| keypair(&format!("limits channel {i}")).account())
        .collect();
    for c in &channels {
        sim.create_account(&c.to_strkey(), 100 * XLM).unwrap();
    }
    let destination = keypair("limits destination").account();
    sim.create_account(&destination.to_strkey(), 10 * XLM)
        .unwrap();
    let closing = sim.clone();
    let closer = tokio::spawn(async move {
        loop {
            if closing.pending_count() > 0 {
                closing.close_ledger();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Net {
        sim: handle,
        distribution,
        channels,
        destination,
        _closer: closer,
    }
}

impl Net {
    /// One instance named `name` over `pool`, holding the keys of channels `keyed` only.
    async fn instance(
        &self,
        pool: &PgPool,
        limits: &Limits,
        name: &str,
        keyed: &[usize],
    ) -> (Payouts, Arc<PgJournal>) {
        let mut ring = Keyring::new();
        ring.insert(keypair("limits distribution"));
        for i in keyed {
            ring.insert(keypair(&format!("limits channel {i}")));
        }
        let ledger = StellarLedger::connect(&self.sim.base_url, PASSPHRASE, ring, timeouts())
            .await
            .unwrap();
        let journal = Arc::new(
            PgJournal::new(pool.clone())
                .await
                .with_limits(limits.clone()),
        );
        let mut policy = PayoutPolicy::new(self.distribution);
        policy.poll_interval_ms = 20;
        policy.io_retry_ms = 20;
        policy.batch_linger_ms = 5;
        policy.payments_per_tx_max = 4;
        let channels = keyed.iter().map(|i| self.channels[*i]).collect();
        let (payouts, _) =
            start_core(journal.clone(), Arc::new(ledger), name, channels, policy).await;
        (payouts, journal)
    }

    fn request(&self, id: &str, amount: &str) -> PayoutRequest {
        PayoutRequest::new(
            PayoutId::parse(id).unwrap(),
            Destination::Account(self.destination),
            Asset::Native,
            Amount::parse(amount).unwrap(),
            None,
        )
    }

    /// Stroops paid to the destination on the ledger, and how many payments.
    fn paid(&self) -> (i64, usize) {
        let payments = self.sim.sim.payments(&PaymentFilter {
            memo: None,
            destination: Some(self.destination.to_strkey()),
        });
        (
            payments.iter().map(|p| p.amount_stroops).sum(),
            payments.len(),
        )
    }
}

fn xlm_limits(when: WhenReached, daily: &str, per_payout: Option<&str>) -> Limits {
    Limits {
        when_reached: when,
        assets: vec![AssetLimit {
            asset: Asset::Native,
            per_payout_max: per_payout.map(|a| Amount::parse(a).unwrap()),
            hourly_amount_max: None,
            hourly_count_max: None,
            daily_amount_max: Some(Amount::parse(daily).unwrap()),
            daily_count_max: None,
        }],
    }
}

async fn states(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT state, count(*) FROM payouts GROUP BY state ORDER BY state")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Awaits: nothing left to build or settle (every payout confirmed or held).
async fn settle_down(pool: &PgPool, what: &str) -> Vec<(String, i64)> {
    for _ in 0..3_000 {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payouts WHERE state IN ('accepted', 'prepared', 'submitted')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if busy == 0 {
            return states(pool).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: payouts never settled: {:?}", states(pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_spend_more_than_the_day_allows_and_a_restart_keeps_the_window() {
    let net = net().await;
    let pool = fresh_db().await;
    let limits = xlm_limits(WhenReached::Wait, "100", None);
    let (a, _) = net.instance(&pool, &limits, "lim-a", &[0, 1]).await;
    let (b, _) = net.instance(&pool, &limits, "lim-b", &[2, 3]).await;
    // 60 payouts of 5 XLM, half through each instance, at once: 300 XLM asked, 100 allowed.
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let p = if i % 2 == 0 { a.clone() } else { b.clone() };
            let req = net.request(&format!("lim-{i:02}"), "5");
            tokio::spawn(async move { p.submit(req).await.unwrap() })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let end = settle_down(&pool, "first run").await;
    assert_eq!(
        end,
        [("confirmed".to_owned(), 20), ("held".to_owned(), 40)],
        "exactly 100 XLM of 5 XLM payouts go"
    );
    assert_eq!(net.paid(), (100 * XLM, 20), "the ledger agrees");
    let reasons: Vec<(String, bool)> = sqlx::query_as(
        "SELECT DISTINCT reason, held_until > now() + interval '23 hours' FROM payouts WHERE state = 'held'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        [(
            "held: daily limit for XLM reached (100 of 100)".to_owned(),
            true
        )],
        "each held payout says why, and waits about a day"
    );
    // Both instances stop; a new one over the same database counts what was spent today.
    a.shutdown(5_000).await;
    b.shutdown(5_000).await;
    let (c, journal) = net.instance(&pool, &limits, "lim-c", &[0, 1, 2, 3]).await;
    c.submit(net.request("lim-after-restart", "5"))
        .await
        .unwrap();
    let r =
        crate::helpers::wait_state(journal.as_ref(), "lim-after-restart", PayoutState::Held).await;
    assert_eq!(
        r.reason.as_deref(),
        Some("held: daily limit for XLM reached (100 of 100)")
    );
    assert_eq!(net.paid(), (100 * XLM, 20));
    // A day passes (the spends and the holds age by 25 hours): the held payouts go by
    // themselves, 100 XLM more, and the rest is held again.
    sqlx::query("UPDATE limit_spends SET at = at - interval '25 hours'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE payouts SET held_until = now() - interval '1 second' WHERE state = 'held'")
        .execute(&pool)
        .await
        .unwrap();
    for _ in 0..3_000 {
        let released: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payout_events WHERE kind = 'released'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if released >= 41 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = settle_down(&pool, "second day").await;
    assert_eq!(
        end,
        [("confirmed".to_owned(), 40), ("held".to_owned(), 21)],
        "a second day's 100 XLM"
    );
    assert_eq!(net.paid(), (200 * XLM, 40));
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT m FROM envelopes e, unnest(e.member_ids) m
          WHERE e.status = 'applied' GROUP BY m HAVING count(*) > 1) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no payout paid twice");
    c.shutdown(5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_payout_limit_or_in_hold_mode_a_payout_waits_for_an_operator() {
    let net = net().await;
    let pool = fresh_db().await;
    let limits = xlm_limits(WhenReached::Hold, "10", Some("4"));
    let (p, journal) = net.instance(&pool, &limits, "lim-hold", &[0, 1]).await;
    p.submit(net.request("small-1", "3")).await.unwrap();
    p.submit(net.request("big-1", "4.5")).await.unwrap();
    crate::helpers::wait_state(journal.as_ref(), "small-1", PayoutState::Confirmed).await;
    let big = crate::helpers::wait_state(journal.as_ref(), "big-1", PayoutState::Held).await;
    assert_eq!(
        big.reason.as_deref(),
        Some("held: the XLM limit per payout is 4 (this payout: 4.5)")
    );
    for (id, amount) in [("small-2", "3"), ("small-3", "3"), ("small-4", "3")] {
        p.submit(net.request(id, amount)).await.unwrap();
    }
    settle_down(&pool, "hold mode").await;
    // 3 + 3 + 3 = 9 of 10: the fourth waits, for an operator (hold mode: no end time).
    assert_eq!(net.paid(), (9 * XLM, 3));
    let waiting: Vec<(String, Option<String>, bool)> = sqlx::query_as(
        "SELECT payout_id, reason, held_until IS NULL FROM payouts WHERE state = 'held' ORDER BY payout_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert!(
        waiting.iter().all(|(_, _, forever)| *forever),
        "{waiting:?}"
    );
    assert_eq!(
        waiting[1].1.as_deref(),
        Some("held: daily limit for XLM reached (9 of 10)")
    );
    // Time moving on releases nothing in hold mode.
    sqlx::query("UPDATE limit_spends SET at = at - interval '25 hours'")
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(net.paid(), (9 * XLM, 3));
    // The operator resumes one: checked again, and the window now allows it.
    let id = PayoutId::parse(&waiting[1].0).unwrap();
    p.resume(&id, "reviewed".into()).await.unwrap();
    crate::helpers::wait_state(journal.as_ref(), id.as_str(), PayoutState::Confirmed).await;
    // The big one is resumed too, but is still above the per-payout limit: held again.
    // Then cancelled: it never pays.
    p.resume(&PayoutId::parse("big-1").unwrap(), "reviewed".into())
        .await
        .unwrap();
    let mut events = Vec::new();
    for _ in 0..1_000 {
        events = journal
            .events(&PayoutId::parse("big-1").unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        if events.iter().filter(|k| *k == "held").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(events, ["accepted", "held", "resumed", "held"]);
    let r = p
        .cancel(&PayoutId::parse("big-1").unwrap(), "too big".into())
        .await
        .unwrap();
    assert_eq!(r.state, PayoutState::Cancelled);
    assert_eq!(net.paid(), (12 * XLM, 4));
    p.shutdown(5_000).await;
}
