//! The Postgres inbox against real Postgres: rows other systems commit become payouts, rows
//! they roll back are never seen, duplicates pay once, bad rows are dead-lettered with
//! their reason, NOTIFY wakes the worker, polling covers lost notifications, and two
//! workers never take the same row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use payoutd::inbox::{self, Drained, InboxSettings};
use payoutd::storage::PgJournal;
use payoutd_actors::Payouts;
use payoutd_actors::domain::{AccountId, PayoutRequest, RawPayoutRequest};
use payoutd_actors::memory::MemLedger;
use payoutd_actors::state::PayoutState;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{eventually, pg_journal, start_core, wait_state};

const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";

fn channels() -> Vec<AccountId> {
    (1..=16).map(|n| AccountId::from_bytes([n; 32])).collect()
}

struct Core {
    journal: Arc<PgJournal>,
    ledger: Arc<MemLedger>,
    payouts: Payouts,
}

impl Core {
    fn pool(&self) -> PgPool {
        self.journal.pool().clone()
    }
}

async fn start_payouts(journal: Arc<PgJournal>, ledger: Arc<MemLedger>) -> Payouts {
    start_core(
        journal,
        ledger,
        "inbox",
        channels(),
        crate::helpers::policy(),
    )
    .await
    .0
}

async fn core() -> Core {
    let journal = pg_journal().await;
    let ledger = Arc::new(MemLedger::new(&channels()));
    let payouts = start_payouts(journal.clone(), ledger.clone()).await;
    Core {
        journal,
        ledger,
        payouts,
    }
}

fn body(id: &str, amount: &str) -> String {
    format!(r#"{{"payout_id":"{id}","destination":"{DEST}","asset":"native","amount":"{amount}"}}"#)
}

fn request(id: &str, amount: &str) -> PayoutRequest {
    serde_json::from_str::<RawPayoutRequest>(&body(id, amount))
        .unwrap()
        .parse()
        .unwrap()
}

fn settings(poll_interval_ms: u64) -> InboxSettings {
    InboxSettings {
        enabled: true,
        batch_max: 50,
        poll_interval_ms,
        retry_delay_ms: 50,
    }
}

/// "Another system": inserts payloads in one transaction of its own and commits.
async fn insert(pool: &PgPool, payloads: &[String]) {
    let mut tx = pool.begin().await.unwrap();
    for p in payloads {
        sqlx::query("INSERT INTO payout_inbox (payload) VALUES ($1)")
            .bind(p)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Every accept's event, as the histories read them: an event row, or the payout row's
/// (when no outbox is on).
macro_rules! accepts {
    () => {
        concat!(
            "(SELECT payout_id FROM payout_events WHERE kind = 'accepted' UNION ALL SELECT payout_id FROM (",
            payoutd::accept_event!(),
            ") a) accepts"
        )
    };
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn inbox_rows(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM payout_inbox").await
}

struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<Drained>,
}

impl Worker {
    fn start(pool: PgPool, payouts: Payouts, settings: InboxSettings) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(inbox::run(pool, payouts, settings, stopped));
        Self { stop, task }
    }

    async fn stop(self) -> Drained {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the worker stops after its current round")
            .unwrap()
    }
}

/// Backend pids currently listening for inbox notifications (by their last statement:
/// `LISTEN "payout_inbox"`, or with a `;` after sqlx re-listened on a new connection).
async fn listener_pids(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN \"payout_inbox\"%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn wait_listening(pool: &PgPool) {
    eventually(10_000, "the inbox listener is listening", || async {
        !listener_pids(pool).await.is_empty()
    })
    .await;
}

async fn wait_inbox_empty(pool: &PgPool, timeout_ms: u64) {
    eventually(timeout_ms, "the inbox is empty", || async {
        inbox_rows(pool).await == 0
    })
    .await;
}

#[tokio::test]
async fn committed_rows_become_confirmed_payouts_and_rolled_back_rows_are_never_seen() {
    let core = core().await;
    let pool = core.pool();
    let worker = Worker::start(pool.clone(), core.payouts.clone(), settings(100));

    // A transaction that is still open: its row is invisible until it ends.
    let mut open = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO payout_inbox (payload) VALUES ($1)")
        .bind(body("inbox-rolled-back", "5"))
        .execute(&mut *open)
        .await
        .unwrap();

    insert(&pool, &[body("inbox-a", "1"), body("inbox-b", "2.5")]).await;
    for (id, amount) in [("inbox-a", "1"), ("inbox-b", "2.5")] {
        wait_state(core.journal.as_ref(), id, PayoutState::Confirmed).await;
        assert_eq!(core.ledger.payments_for(&request(id, amount)), 1);
    }
    // The committed rows are gone; the open transaction's row is not ours to see.
    assert_eq!(inbox_rows(&pool).await, 0);
    open.rollback().await.unwrap();
    // Give the worker rounds in which it could (wrongly) find it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let totals = worker.stop().await;
    assert_eq!(totals.created, 2);
    assert_eq!(totals.removed(), 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM payouts").await, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(inbox_rows(&pool).await, 0);
}

#[tokio::test]
async fn the_same_request_three_times_is_one_payout_and_every_row_goes() {
    let core = core().await;
    let pool = core.pool();
    // The third copy is formatted differently: same request, same fingerprint.
    let spaced = format!(
        r#"{{ "amount": "7", "asset": "native", "destination": "{DEST}", "payout_id": "inbox-dup" }}"#
    );
    insert(
        &pool,
        &[body("inbox-dup", "7"), body("inbox-dup", "7"), spaced],
    )
    .await;
    let round = inbox::drain_once(&pool, &core.payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!(
        round,
        Drained {
            claimed: 3,
            created: 1,
            duplicate: 2,
            dead_lettered: 0,
            deferred: 0
        }
    );
    assert_eq!(inbox_rows(&pool).await, 0);
    wait_state(core.journal.as_ref(), "inbox-dup", PayoutState::Confirmed).await;
    assert_eq!(core.ledger.payments_for(&request("inbox-dup", "7")), 1);
    let accepted = count(&pool, concat!("SELECT count(*) FROM ", accepts!())).await;
    assert_eq!(accepted, 1);
}

#[tokio::test]
async fn invalid_rows_are_dead_lettered_with_code_and_reason_and_removed() {
    let core = core().await;
    let pool = core.pool();
    let bad = [
        body("inbox-bad-amount", "1e5"),
        format!(
            r#"{{"payout_id":"inbox-extra","destination":"{DEST}","asset":"native","amount":"1","priority":"high"}}"#
        ),
        format!(
            r#"{{"payout_id":"inbox-seed","destination":"{SEED}","asset":"native","amount":"1"}}"#
        ),
        "{not json".to_owned(),
    ];
    insert(&pool, &bad).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM payout_inbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let round = inbox::drain_once(&pool, &core.payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!((round.claimed, round.dead_lettered), (4, 4));
    assert_eq!(inbox_rows(&pool).await, 0, "dead-lettered rows are removed");
    assert_eq!(count(&pool, "SELECT count(*) FROM payouts").await, 0);

    let letters: Vec<(String, Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT source, source_ref, payload, code, reason FROM dead_letters ORDER BY source_ref::bigint",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let codes: Vec<&str> = letters.iter().map(|l| l.3.as_str()).collect();
    assert_eq!(
        codes,
        [
            "amount_format",
            "invalid_body",
            "destination_is_secret",
            "invalid_body"
        ]
    );
    for (letter, id) in letters.iter().zip(&ids) {
        assert_eq!(letter.0, "inbox");
        assert_eq!(letter.1.as_deref(), Some(id.to_string().as_str()));
        assert!(!letter.4.is_empty(), "a reason is kept");
        assert!(!letter.2.contains(SEED) && !letter.4.contains(SEED));
    }
    assert!(letters[0].4.starts_with("amount:"), "{}", letters[0].4);
    assert!(letters[1].4.contains("priority"), "{}", letters[1].4);
    assert!(letters[2].2.contains("[redacted secret seed]"));
    assert!(
        letters[2].4.contains("never send a secret"),
        "{}",
        letters[2].4
    );
}

#[tokio::test]
async fn a_conflicting_row_is_dead_lettered_and_the_stored_payout_untouched() {
    let core = core().await;
    let pool = core.pool();
    // Both in one batch: the earlier row wins, as it would one at a time.
    insert(&pool, &[body("inbox-c", "1"), body("inbox-c", "2")]).await;
    let round = inbox::drain_once(&pool, &core.payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!((round.created, round.dead_lettered), (1, 1));
    let rec = wait_state(core.journal.as_ref(), "inbox-c", PayoutState::Confirmed).await;
    assert_eq!(rec.request.amount().stroops(), 10_000_000);
    let code: String = sqlx::query_scalar("SELECT code FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(code, "payout_conflict");
}

#[tokio::test]
async fn rows_stay_when_the_core_cannot_take_them() {
    let core = core().await;
    let pool = core.pool();
    core.payouts.shutdown(1_000).await;
    insert(
        &pool,
        &[
            body("inbox-later-1", "1"),
            body("inbox-later-2", "1"),
            "{".into(),
        ],
    )
    .await;
    let round = inbox::drain_once(&pool, &core.payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!(
        (round.claimed, round.deferred, round.dead_lettered),
        (3, 2, 1)
    );
    assert_eq!(
        inbox_rows(&pool).await,
        2,
        "deferred rows stay for a later round"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM payouts").await, 0);

    // A new core (the process restarted) takes them.
    let payouts = start_payouts(core.journal.clone(), core.ledger.clone()).await;
    let round = inbox::drain_once(&pool, &payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!((round.created, round.deferred), (2, 0));
    assert_eq!(inbox_rows(&pool).await, 0);
}

#[tokio::test]
async fn notify_wakes_the_worker_promptly() {
    let core = core().await;
    let pool = core.pool();
    // Polling alone would take a minute.
    let worker = Worker::start(pool.clone(), core.payouts.clone(), settings(60_000));
    wait_listening(&pool).await;
    // Let the rounds run at start (and after the listener came up) finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    insert(&pool, &[body("inbox-notified", "1")]).await;
    wait_inbox_empty(&pool, 5_000).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_state(
        core.journal.as_ref(),
        "inbox-notified",
        PayoutState::Confirmed,
    )
    .await;
    assert_eq!(worker.stop().await.created, 1);
}

#[tokio::test]
async fn polling_finds_rows_when_notifications_are_missed() {
    let core = core().await;
    let pool = core.pool();
    // Rows committed while no worker ran: the first round finds them.
    insert(&pool, &[body("inbox-early", "1")]).await;
    let worker = Worker::start(pool.clone(), core.payouts.clone(), settings(100));
    wait_inbox_empty(&pool, 5_000).await;
    wait_listening(&pool).await;

    // No notification at all: only polling can find this row.
    sqlx::query("ALTER TABLE payout_inbox DISABLE TRIGGER payout_inbox_notify")
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    insert(&pool, &[body("inbox-silent", "1")]).await;
    wait_inbox_empty(&pool, 5_000).await;

    let totals = worker.stop().await;
    assert_eq!(totals.created, 2);
    for id in ["inbox-early", "inbox-silent"] {
        wait_state(core.journal.as_ref(), id, PayoutState::Confirmed).await;
    }
}

#[tokio::test]
async fn a_lost_listener_connection_strands_nothing() {
    let core = core().await;
    let pool = core.pool();
    // Polling alone would take a minute: the rows below must be found because the listener
    // reconnects and the worker looks again after it does.
    let worker = Worker::start(pool.clone(), core.payouts.clone(), settings(60_000));
    wait_listening(&pool).await;
    let old = listener_pids(&pool).await;
    let _: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
            .bind(&old)
            .fetch_all(&pool)
            .await
            .unwrap();
    // Committed while the listener may be down: its notification can be lost.
    insert(&pool, &[body("inbox-reconnect", "1")]).await;
    wait_inbox_empty(&pool, 10_000).await;
    eventually(10_000, "a new listener connection", || async {
        let now = listener_pids(&pool).await;
        !now.is_empty() && now.iter().all(|p| !old.contains(p))
    })
    .await;
    // And it listens again: a new row is found without polling.
    insert(&pool, &[body("inbox-after-reconnect", "1")]).await;
    wait_inbox_empty(&pool, 5_000).await;
    assert_eq!(worker.stop().await.created, 2);
}

#[tokio::test]
async fn skip_locked_rows_held_by_another_worker_are_left_alone() {
    let core = core().await;
    let pool = core.pool();
    let payloads: Vec<String> = (0..10)
        .map(|i| body(&format!("inbox-lock-{i}"), "1"))
        .collect();
    insert(&pool, &payloads).await;
    // "Another worker" holds the first four rows in its open transaction.
    let mut other = pool.begin().await.unwrap();
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM payout_inbox ORDER BY id LIMIT 4 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *other)
    .await
    .unwrap();
    assert_eq!(held.len(), 4);
    let round = inbox::drain_once(&pool, &core.payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!((round.claimed, round.created), (6, 6));
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM payout_inbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, held);
    other.rollback().await.unwrap();
    let round = inbox::drain_once(&pool, &core.payouts, &settings(1_000))
        .await
        .unwrap();
    assert_eq!((round.claimed, round.created), (4, 4));
}

#[tokio::test]
async fn two_workers_on_one_table_never_process_a_row_twice() {
    const ROWS: usize = 300;
    let core = core().await;
    let pool = core.pool();
    // A second instance: its own pool and its own payout core over the same database.
    let pool_b = PgPoolOptions::new()
        .max_connections(8)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let journal_b = Arc::new(PgJournal::new(pool_b.clone()).await);
    let payouts_b = start_payouts(journal_b, core.ledger.clone()).await;

    let payloads: Vec<String> = (0..ROWS)
        .map(|i| body(&format!("inbox-two-{i}"), "1"))
        .collect();
    insert(&pool, &payloads).await;
    let small = InboxSettings {
        batch_max: 10,
        ..settings(100)
    };
    let a = Worker::start(pool.clone(), core.payouts.clone(), small.clone());
    let b = Worker::start(pool_b, payouts_b, small);
    wait_inbox_empty(&pool, 30_000).await;
    let (a, b) = (a.stop().await, b.stop().await);

    // A row processed twice would show as a duplicate (the second time) or as two
    // accepted events for one payout.
    assert_eq!(a.created + b.created, ROWS, "{a:?} {b:?}");
    assert_eq!(a.duplicate + b.duplicate, 0, "{a:?} {b:?}");
    assert_eq!(a.claimed + b.claimed, ROWS, "{a:?} {b:?}");
    assert!(
        a.claimed > 0 && b.claimed > 0,
        "both workers took rows: {a:?} {b:?}"
    );
    let accepted = count(&pool, concat!("SELECT count(*) FROM ", accepts!())).await;
    assert_eq!(accepted, ROWS as i64);
    let per_payout = count(
        &pool,
        concat!(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM ",
            accepts!(),
            " GROUP BY payout_id) t"
        ),
    )
    .await;
    assert_eq!(per_payout, 1);
}

#[test]
fn settings_bounds_are_checked() {
    assert!(InboxSettings::default().validate().is_ok());
    let zero = InboxSettings {
        batch_max: 0,
        ..InboxSettings::default()
    };
    assert_eq!(zero.validate().unwrap_err().key, "inbox.batch_max");
    let fast = InboxSettings {
        poll_interval_ms: 1,
        ..InboxSettings::default()
    };
    assert_eq!(fast.validate().unwrap_err().key, "inbox.poll_interval_ms");
    let parsed = payoutd::config::Settings::load(
        None,
        [("PAYOUTD__INBOX__BATCH_MAX".to_owned(), "5".to_owned())],
    )
    .unwrap()
    .inbox;
    assert_eq!(parsed.batch_max, 5);
    assert_eq!(
        parsed.poll_interval_ms,
        InboxSettings::default().poll_interval_ms
    );
    assert!(toml::from_str::<InboxSettings>("batch_size = 5").is_err());
}
