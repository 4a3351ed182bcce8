//! The dispatcher: fans the outbox out into deliveries and POSTs them, signed, with
//! retries (docs/webhooks.md).
//!
//! One dispatcher in the whole cluster, like the NATS publisher: it holds an advisory lock
//! on a connection of its own; if that connection or its instance dies, another instance
//! takes over. Under the lock:
//! - the fan-out loop turns outbox rows, in id order, into `webhook_deliveries` rows (one
//!   per endpoint that wants the event's kind) and marks or deletes the rows, in one
//!   statement per round, then nudges the endpoint loops;
//! - one loop per endpoint, so a slow or dead receiver delays only its own deliveries:
//!   each round takes the due deliveries (at most one per payout, its lowest pending
//!   version), POSTs them with at most `concurrency_max` in flight and `timeout_ms` each,
//!   and records every outcome in one statement. A 2xx is delivered. Anything else is
//!   retried after a backoff (doubling from `retry_delay_min_ms` to `retry_delay_max_ms`,
//!   each wait drawn between half and all of it) until `attempts_max` attempts or
//!   `retry_window_ms`, then the delivery is dead: kept, listed, replayable, never dropped.
//!
//! At least once: an outcome is recorded after its POST, so a crash in between sends the
//! same event again (same event id, same body) after the restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::settings::{EndpointSettings, WebhookSettings};
use super::signature::{ATTEMPT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, header_value};
use crate::storage::leader;
use crate::storage::webhooks::{self as store, Due, Outcome};
use crate::worker::{Backoff, is_stopped, sleep_or_stop};

/// How often delivered rows past their retention are deleted and the gauges refreshed, ms.
const HOUSEKEEPING_INTERVAL_MS: u64 = 5_000;
/// How much longer than `timeout_ms` a claimed delivery stays claimed, in milliseconds
/// (time to record the outcome; past it, a crashed dispatcher's claims are due again).
const CLAIM_MARGIN_MS: u64 = 5_000;
/// Longest pause of an endpoint loop after database errors, in milliseconds (it doubles
/// from `poll_interval_ms` with every error in a row).
const ERROR_BACKOFF_MAX_MS: u64 = 10_000;

/// This process's webhook counters and gauges (rendered on `/metrics` when webhooks are on).
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub enabled: AtomicBool,
    /// This instance holds the dispatcher lock (only then are the gauges its counts).
    pub leader: AtomicBool,
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead: AtomicU64,
    pub pending: AtomicI64,
    pub dead_waiting: AtomicI64,
}

pub static METRICS: WebhookMetrics = WebhookMetrics {
    enabled: AtomicBool::new(false),
    leader: AtomicBool::new(false),
    delivered: AtomicU64::new(0),
    failed_attempts: AtomicU64::new(0),
    dead: AtomicU64::new(0),
    pending: AtomicI64::new(0),
    dead_waiting: AtomicI64::new(0),
};

/// Appends the webhook metrics to the Prometheus text (nothing when webhooks are off).
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write as _;
    let m = &METRICS;
    if !m.enabled.load(Ordering::Relaxed) {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP payoutd_webhook_attempts_total Webhook POSTs by outcome (delivered: a 2xx; failed: retried later; dead: the last one allowed failed).\n# TYPE payoutd_webhook_attempts_total counter"
    );
    for (result, n) in [
        ("delivered", &m.delivered),
        ("failed", &m.failed_attempts),
        ("dead", &m.dead),
    ] {
        let _ = writeln!(
            out,
            "payoutd_webhook_attempts_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let leader = m.leader.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP payoutd_webhook_dispatcher_leader 1 on the instance that delivers webhooks (its gauges below count the whole cluster's deliveries).\n# TYPE payoutd_webhook_dispatcher_leader gauge\npayoutd_webhook_dispatcher_leader {}",
        u8::from(leader)
    );
    if !leader {
        return;
    }
    for (name, help, v) in [
        (
            "payoutd_webhook_deliveries_pending",
            "Webhook deliveries waiting to be sent or retried (as the dispatcher last counted).",
            &m.pending,
        ),
        (
            "payoutd_webhook_deliveries_dead",
            "Dead-lettered webhook deliveries waiting for a replay (as the dispatcher last counted).",
            &m.dead_waiting,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

/// Starts the dispatcher on its own task. `nats_outbox`: the NATS publisher reads the
/// outbox too (fanned-out rows are then kept for it, not deleted).
pub fn spawn(
    settings: WebhookSettings,
    pool: PgPool,
    nats_outbox: bool,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    METRICS.enabled.store(true, Ordering::Relaxed);
    tokio::spawn(run(settings, pool, nats_outbox, shutdown))
}

/// Dispatches until `shutdown` turns true; database errors are logged and retried.
pub async fn run(
    settings: WebhookSettings,
    pool: PgPool,
    nats_outbox: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let names: Vec<&str> = settings.endpoints.iter().map(|e| e.name.as_str()).collect();
    info!(endpoints = ?names, "webhook dispatcher starting");
    let mut backoff = Backoff::new(100, 10_000);
    while !is_stopped(&shutdown) {
        match lead(&settings, &pool, nats_outbox, &mut shutdown).await {
            Ok(()) => break,
            Err(e) => {
                let delay_ms = backoff.next_ms();
                warn!(error = %e, retry_in_ms = delay_ms, "webhook dispatcher: database error; starting over");
                if sleep_or_stop(delay_ms, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    info!("webhook dispatcher stopped");
}

/// Takes the lock, runs the endpoint loops and the fan-out until shutdown (Ok) or a
/// database error on the lock's connection (Err).
async fn lead(
    settings: &WebhookSettings,
    pool: &PgPool,
    nats_outbox: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    // A connection of its own, never returned to the pool (the lock lives as long as it).
    let mut conn = pool.acquire().await?.detach();
    loop {
        if leader::try_lock(&mut conn, leader::WEBHOOK_DISPATCHER).await? {
            break;
        }
        if sleep_or_stop(settings.poll_interval_ms, shutdown).await {
            return Ok(());
        }
    }
    info!("webhook dispatcher ready (this instance delivers)");
    METRICS.leader.store(true, Ordering::Relaxed);
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let mut loops = JoinSet::new();
    for endpoint in &settings.endpoints {
        let ep = Arc::new(Endpoint::new(endpoint, settings));
        loops.spawn(endpoint_loop(
            ep,
            pool.clone(),
            wake.clone(),
            stopped.clone(),
        ));
    }
    let result = fan_out_loop(&mut conn, settings, pool, nats_outbox, &wake, shutdown).await;
    METRICS.leader.store(false, Ordering::Relaxed);
    let _ = stop.send(true);
    while loops.join_next().await.is_some() {}
    result
}

async fn fan_out_loop(
    conn: &mut sqlx::PgConnection,
    settings: &WebhookSettings,
    pool: &PgPool,
    nats_outbox: bool,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    let endpoints: Vec<(String, String)> = settings
        .endpoints
        .iter()
        .map(|e| (e.name.clone(), e.kinds_csv()))
        .collect();
    let mut housekept: Option<Instant> = None;
    loop {
        let taken = store::fan_out(conn, &endpoints, nats_outbox, settings.batch_max).await?;
        if taken > 0 {
            debug!(rows = taken, "outbox fanned out to webhook deliveries");
            wake.notify_waiters();
        }
        if housekept.is_none_or(|t| t.elapsed() >= Duration::from_millis(HOUSEKEEPING_INTERVAL_MS))
        {
            housekept = Some(Instant::now());
            let gone = store::prune_delivered(pool, settings.delivered_retention_ms).await?;
            if gone > 0 {
                debug!(rows = gone, "delivered webhook rows pruned");
            }
            if !nats_outbox {
                let gone = store::drop_fanned_out(pool).await?;
                if gone > 0 {
                    info!(
                        rows = gone,
                        "outbox rows kept for a NATS publisher that is off now: deleted"
                    );
                }
            }
            let (pending, dead) = store::counts(pool).await?;
            METRICS.pending.store(pending, Ordering::Relaxed);
            METRICS.dead_waiting.store(dead, Ordering::Relaxed);
        }
        if is_stopped(shutdown) {
            return Ok(());
        }
        if taken < u64::from(settings.batch_max)
            && sleep_or_stop(settings.poll_interval_ms, shutdown).await
        {
            return Ok(());
        }
    }
}

/// One endpoint as the loop uses it.
struct Endpoint {
    name: String,
    url: SecretString,
    secrets: Vec<SecretString>,
    client: reqwest::Client,
    timeout_ms: u64,
    concurrency_max: usize,
    batch_max: u32,
    poll_interval_ms: u64,
    attempts_max: u32,
    retry_window_ms: u64,
    retry_delay_min_ms: u64,
    retry_delay_max_ms: u64,
}

impl Endpoint {
    fn new(e: &EndpointSettings, s: &WebhookSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(s.timeout_ms))
            // A redirect is an answer, not a delivery: the receiver is configured by URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payoutd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with static settings builds");
        Self {
            name: e.name.clone(),
            url: e.url.clone(),
            secrets: e.secrets.clone(),
            client,
            timeout_ms: s.timeout_ms,
            concurrency_max: s.concurrency_max as usize,
            batch_max: s.batch_max,
            poll_interval_ms: s.poll_interval_ms,
            attempts_max: s.attempts_max,
            retry_window_ms: s.retry_window_ms,
            retry_delay_min_ms: s.retry_delay_min_ms,
            retry_delay_max_ms: s.retry_delay_max_ms,
        }
    }

    /// The wait before attempt `failed + 1`, after `failed` failures: doubling from the
    /// minimum, capped, drawn between half of it and all of it.
    fn retry_delay_ms(&self, failed: u32, rng: &mut StdRng) -> u64 {
        let doubled = self
            .retry_delay_min_ms
            .saturating_mul(1u64 << failed.saturating_sub(1).min(40))
            .min(self.retry_delay_max_ms);
        rng.random_range(doubled.div_ceil(2)..=doubled)
    }

    /// What became of an attempt that failed with `status`/`error`.
    fn failure(&self, due: &Due, status: Option<i32>, error: String, rng: &mut StdRng) -> Outcome {
        let failed = u32::try_from(due.attempts).unwrap_or(0) + 1;
        let delay_ms = self.retry_delay_ms(failed, rng);
        let window_left = (self.retry_window_ms as i64).saturating_sub(due.window_age_ms);
        let dead = failed >= self.attempts_max || delay_ms as i64 >= window_left;
        if dead {
            METRICS.dead.fetch_add(1, Ordering::Relaxed);
            warn!(endpoint = %self.name, delivery = due.id, event_id = %due.event_id, attempts = failed, error = %error,
                "webhook delivery dead-lettered (replay it with POST /v1/webhooks/deliveries/{}/replay)", due.id);
        } else {
            METRICS.failed_attempts.fetch_add(1, Ordering::Relaxed);
            warn!(endpoint = %self.name, delivery = due.id, event_id = %due.event_id, attempt = failed, retry_in_ms = delay_ms, error = %error,
                "webhook delivery failed; will retry");
        }
        Outcome {
            id: due.id,
            state: if dead { "dead" } else { "pending" },
            status,
            error: Some(error),
            delay_ms: if dead { 0 } else { delay_ms as i64 },
        }
    }

    /// One signed POST of `due`; its outcome.
    async fn attempt(&self, due: Due) -> Result<Option<i32>, (Option<i32>, String)> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signature = header_value(&self.secrets, timestamp, due.body.as_bytes());
        let sent = self
            .client
            .post(self.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, &due.event_id)
            .header(ATTEMPT_HEADER, (due.attempts + 1).to_string())
            .body(due.body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(Some(i32::from(r.status().as_u16()))),
            Ok(r) => {
                let status = r.status();
                Err((
                    Some(i32::from(status.as_u16())),
                    format!("the receiver answered HTTP {status}"),
                ))
            }
            Err(e) if e.is_timeout() => Err((
                None,
                format!(
                    "no answer within {} ms (webhooks.timeout_ms)",
                    self.timeout_ms
                ),
            )),
            Err(e) => Err((None, self.describe(e))),
        }
    }

    /// A transport error in words, without the URL (it may hold a token).
    fn describe(&self, e: reqwest::Error) -> String {
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text.replace(self.url.expose_secret(), "[endpoint url]")
    }
}

async fn endpoint_loop(
    ep: Arc<Endpoint>,
    pool: PgPool,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut errors = Backoff::new(ep.poll_interval_ms, ERROR_BACKOFF_MAX_MS);
    loop {
        if *stop.borrow() {
            return;
        }
        // On shutdown the POSTs under way are dropped, unrecorded: they are sent again after
        // the restart (at least once), and a slow receiver cannot hold up the stop.
        let taken = tokio::select! {
            r = round(&ep, &pool, &mut rng) => match r {
                Ok(n) => {
                    errors.reset();
                    n
                }
                Err(e) => {
                    // Back off: a failed record would otherwise resend the round at once.
                    let wait_ms = errors.next_ms();
                    warn!(endpoint = %ep.name, error = %e, retry_in_ms = wait_ms, "webhook deliveries: database error; retrying");
                    if sleep_or_stop(wait_ms, &mut stop).await {
                        return;
                    }
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        if taken >= ep.batch_max as usize {
            continue;
        }
        let notified = wake.notified();
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(Duration::from_millis(ep.poll_interval_ms)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One round of one endpoint: the due deliveries, POSTed concurrently, outcomes recorded.
async fn round(ep: &Arc<Endpoint>, pool: &PgPool, rng: &mut StdRng) -> Result<usize, sqlx::Error> {
    // The claim outlives every POST of the round (each ends by its timeout) and the record.
    let lease_ms = ep.timeout_ms + CLAIM_MARGIN_MS;
    let due = store::due(pool, &ep.name, ep.batch_max, lease_ms).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let taken = due.len();
    let slots = Arc::new(Semaphore::new(ep.concurrency_max));
    let mut in_flight = JoinSet::new();
    for d in due {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let ep = ep.clone();
        in_flight.spawn(async move {
            let result = ep.attempt(d.clone()).await;
            drop(permit);
            (d, result)
        });
    }
    let mut outcomes = Vec::with_capacity(taken);
    while let Some(joined) = in_flight.join_next().await {
        let Ok((d, result)) = joined else { continue };
        outcomes.push(match result {
            Ok(status) => {
                METRICS.delivered.fetch_add(1, Ordering::Relaxed);
                debug!(endpoint = %ep.name, delivery = d.id, event_id = %d.event_id, "webhook delivered");
                Outcome {
                    id: d.id,
                    state: "delivered",
                    status,
                    error: None,
                    delay_ms: 0,
                }
            }
            Err((status, error)) => ep.failure(&d, status, error, rng),
        });
    }
    store::record(pool, &outcomes).await?;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(min: u64, max: u64) -> Endpoint {
        let e = EndpointSettings {
            name: "t".into(),
            url: SecretString::from("http://127.0.0.1:9/hook".to_owned()),
            events: vec!["*".into()],
            secret_env: None,
            secret_file: None,
            secrets: vec![],
        };
        let s: WebhookSettings = toml::from_str(&format!(
            "attempts_max = 5\nretry_window_ms = 100000\nretry_delay_min_ms = {min}\n\
             retry_delay_max_ms = {max}\ntimeout_ms = 1000\nconcurrency_max = 2\n\
             batch_max = 10\npoll_interval_ms = 10\ndelivered_retention_ms = 1000\n"
        ))
        .unwrap();
        Endpoint::new(&e, &s)
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let ep = endpoint(1_000, 10_000);
        let mut rng = StdRng::seed_from_u64(7);
        for (failed, full) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (5, 10_000),
            (60, 10_000),
        ] {
            for _ in 0..50 {
                let d = ep.retry_delay_ms(failed, &mut rng);
                assert!(
                    (full / 2..=full).contains(&d),
                    "{failed}: {d} not in {full}/2..={full}"
                );
            }
        }
    }

    #[test]
    fn dead_after_the_last_attempt_or_past_the_window() {
        let ep = endpoint(1_000, 10_000);
        let mut rng = StdRng::seed_from_u64(7);
        let due = |attempts, window_age_ms| Due {
            id: 1,
            event_id: "p:1".into(),
            body: "{}".into(),
            attempts,
            window_age_ms,
        };
        assert_eq!(
            ep.failure(&due(0, 0), Some(500), "x".into(), &mut rng)
                .state,
            "pending"
        );
        assert_eq!(
            ep.failure(&due(3, 0), Some(500), "x".into(), &mut rng)
                .state,
            "pending"
        );
        // The fifth attempt was the last.
        assert_eq!(
            ep.failure(&due(4, 0), Some(500), "x".into(), &mut rng)
                .state,
            "dead"
        );
        // The next wait would end past the retry window.
        assert_eq!(
            ep.failure(&due(0, 99_900), None, "x".into(), &mut rng)
                .state,
            "dead"
        );
    }
}
