//! NATS JetStream ingress: a durable pull consumer that hands each payout request to the
//! payout core and acknowledges it only once the payout is durable in Postgres (or the
//! message is dead-lettered in Postgres), plus the connection plumbing the outbox publisher
//! (`crate::outbox`) shares.
//!
//! Per message, by what [`crate::ingress::ingest`] answers:
//! - `Created` / `Duplicate` → `+ACK` (the payout is in Postgres by then; a redelivery is
//!   a duplicate, answered by the core without a write).
//! - `Rejected` → a `dead_letters` row, then a JSON copy (payload redacted of secret seeds)
//!   on `dead_letter_subject`, then `+TERM`. If the row cannot be written: `-NAK` with
//!   `retry_delay_ms`, so the message comes back.
//! - `Retry` → `-NAK` with `retry_delay_ms`.
//!
//! Nothing the broker acknowledged to a publisher is ever held only in memory here:
//! - By default (`max_deliver = -1`) the server redelivers a message until payoutd
//!   acknowledges it, however long the database is down.
//! - With a finite `max_deliver`, a message that cannot be made durable as a payout on its
//!   last delivery is written as a row of the Postgres inbox (`payout_inbox`, which the
//!   inbox worker turns into a payout like any other row) and acknowledged only once that
//!   row is committed. If even that fails, it is left unacknowledged in the stream (durable
//!   on the broker, no longer delivered) and an error names its stream sequence.
//! - The requests stream payoutd creates keeps a request until it is acknowledged (work
//!   queue retention, no age limit): nothing expires unconsumed.
//!
//! Lag: every `lag_poll_interval_ms` the consumer reads how many requests wait (undelivered
//! plus unacknowledged) and how old the oldest is, for the metrics.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use payoutd_actors::domain::PayoutId;
use payoutd_actors::{ErrorCode, Payouts};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, warn};

use crate::ingress::{self, IngestOutcome, MESSAGE_BYTES_MAX};
use crate::outbox::OutboxSettings;

/// The `source` of dead letters written by this ingress.
pub const DEAD_LETTER_SOURCE: &str = "nats";
/// Largest batch one pull request may ask for (a sanity bound on `fetch_batch_max`).
pub const FETCH_BATCH_MAX_LIMIT: usize = 10_000;
/// Largest number of messages processed at once (a sanity bound on `in_flight_max`).
pub const IN_FLIGHT_MAX_LIMIT: usize = 100_000;

/// The `[nats]` section: the broker ingress and, in `[nats.outbox]`, the event publisher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Off by default: payoutd then neither consumes requests nor publishes events.
    pub enabled: bool,
    /// Server URL, or several separated by commas. May carry credentials
    /// (`nats://user:password@host:4222`), so it is masked in `Debug` and never logged.
    pub url: SecretString,
    /// Time allowed to open the connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for one JetStream API request or publish acknowledgement, in milliseconds.
    pub request_timeout_ms: u64,
    /// First wait before reconnecting after a broker error, in milliseconds; doubled on each
    /// consecutive failure up to `reconnect_delay_max_ms`.
    pub reconnect_delay_min_ms: u64,
    pub reconnect_delay_max_ms: u64,
    /// The stream payout requests are published to; created with `subjects` when missing,
    /// left as it is when it exists.
    pub stream: String,
    pub subjects: Vec<String>,
    /// How long the stream keeps a request when created by payoutd, in milliseconds;
    /// 0 (the default): until it is consumed, never expired unconsumed.
    pub stream_max_age_ms: u64,
    /// The durable pull consumer's name: every payoutd instance shares it (one group).
    pub durable: String,
    /// Time the server waits for an acknowledgement before redelivering, in milliseconds.
    pub ack_wait_ms: u64,
    /// Deliveries of one message the server makes at most: -1 (the default) for no limit,
    /// else at least 2 (see the module doc for the last delivery).
    pub max_deliver: i64,
    /// How often the consumer's lag is read for the metrics, in milliseconds.
    pub lag_poll_interval_ms: u64,
    /// Messages asked for per pull request, at most.
    pub fetch_batch_max: usize,
    /// How long one pull request waits for messages, in milliseconds.
    pub fetch_wait_ms: u64,
    /// Messages processed at once, at most.
    pub in_flight_max: usize,
    /// Delay before a message that could not be made durable is delivered again, in
    /// milliseconds.
    pub retry_delay_ms: u64,
    /// Where rejected messages are echoed (core NATS, JSON), after their dead letter row is
    /// durable. Must not be one of `subjects` (the consumer would read its own dead letters).
    pub dead_letter_subject: String,
    /// The transactional outbox publisher.
    pub outbox: OutboxSettings,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            url: SecretString::from("nats://127.0.0.1:4222"),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            reconnect_delay_min_ms: 100,
            reconnect_delay_max_ms: 10_000,
            stream: "PAYOUTS".into(),
            subjects: vec!["payouts.requests.>".into()],
            stream_max_age_ms: 0,
            durable: "payoutd".into(),
            ack_wait_ms: 30_000,
            max_deliver: -1,
            lag_poll_interval_ms: 5_000,
            fetch_batch_max: 256,
            fetch_wait_ms: 5_000,
            in_flight_max: 256,
            retry_delay_ms: 1_000,
            dead_letter_subject: "payouts.dead_letter".into(),
            outbox: OutboxSettings::default(),
        }
    }
}

/// A setting that cannot work, named by its key under `nats`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting nats.{key}: {detail}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub detail: String,
}

fn invalid(key: &'static str, detail: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        key,
        detail: detail.into(),
    }
}

impl NatsSettings {
    /// Checks every bound and name. Call it at start when `enabled`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.url.expose_secret().trim().is_empty() {
            return Err(invalid(
                "url",
                "empty (set it, or set nats.enabled = false)",
            ));
        }
        for (key, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("reconnect_delay_min_ms", self.reconnect_delay_min_ms),
            ("ack_wait_ms", self.ack_wait_ms),
            ("lag_poll_interval_ms", self.lag_poll_interval_ms),
            ("fetch_wait_ms", self.fetch_wait_ms),
            ("retry_delay_ms", self.retry_delay_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.reconnect_delay_max_ms < self.reconnect_delay_min_ms {
            return Err(invalid(
                "reconnect_delay_max_ms",
                "must be at least reconnect_delay_min_ms",
            ));
        }
        if self.max_deliver != -1 && self.max_deliver < 2 {
            return Err(invalid(
                "max_deliver",
                "must be -1 (no limit) or at least 2",
            ));
        }
        if !(1..=FETCH_BATCH_MAX_LIMIT).contains(&self.fetch_batch_max) {
            return Err(invalid(
                "fetch_batch_max",
                format!("must be 1..={FETCH_BATCH_MAX_LIMIT}"),
            ));
        }
        if !(1..=IN_FLIGHT_MAX_LIMIT).contains(&self.in_flight_max) {
            return Err(invalid(
                "in_flight_max",
                format!("must be 1..={IN_FLIGHT_MAX_LIMIT}"),
            ));
        }
        check_name("stream", &self.stream)?;
        check_name("durable", &self.durable)?;
        if self.subjects.is_empty() {
            return Err(invalid("subjects", "at least one subject is needed"));
        }
        for s in &self.subjects {
            if !is_valid_subject(s, true) {
                return Err(invalid("subjects", format!("{s:?} is not a valid subject")));
            }
        }
        if !is_valid_subject(&self.dead_letter_subject, false) {
            return Err(invalid(
                "dead_letter_subject",
                "not a valid subject (no wildcards)",
            ));
        }
        if self
            .subjects
            .iter()
            .any(|f| subject_matches(f, &self.dead_letter_subject))
        {
            return Err(invalid(
                "dead_letter_subject",
                "is one of the request subjects: the consumer would read its own dead letters",
            ));
        }
        self.outbox.validate(&self.stream, &self.subjects)
    }
}

/// A stream or consumer name: no whitespace, `.`, `*`, `>`, path separators.
pub(crate) fn check_name(key: &'static str, name: &str) -> Result<(), InvalidSetting> {
    let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\');
    if name.is_empty() || name.len() > 255 || name.chars().any(bad) {
        return Err(invalid(
            key,
            format!("{name:?} is not a valid JetStream name"),
        ));
    }
    Ok(())
}

/// A subject made of non-empty tokens; `*` and a final `>` only when `wildcards`.
pub(crate) fn is_valid_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(char::is_whitespace)
            && match *t {
                "*" => wildcards,
                ">" => wildcards && i == tokens.len() - 1,
                t => !t.contains(['*', '>']),
            }
    })
}

/// Whether `filter` (with `*` / `>` wildcards) matches the literal `subject`.
pub(crate) fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether two filters can match a common subject (used to keep the streams disjoint).
pub(crate) fn filters_overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(p), Some(q)) if p == q || p == "*" || q == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What can go wrong talking to the broker. Never carries the URL's credentials.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {server}: {detail}")]
    Connect { server: String, detail: String },
    #[error("JetStream stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    #[error("JetStream consumer {durable}: {detail}")]
    Consumer { durable: String, detail: String },
    #[error("pulling messages: {0}")]
    Fetch(String),
}

/// The URL(s) without user info (credentials, tokens), fit for logs.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if scheme.is_empty() {
                host.to_owned()
            } else {
                format!("{scheme}://{host}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes whatever user info the URL carries from a message (errors may quote it).
fn scrub(message: &str, url: &str) -> String {
    let mut out = message.to_owned();
    for one in url.split(',') {
        let rest = one.trim().split_once("://").map_or(one.trim(), |(_, r)| r);
        if let Some((userinfo, _)) = rest.rsplit_once('@')
            && !userinfo.is_empty()
        {
            out = out.replace(userinfo, "[redacted]");
        }
    }
    out
}

/// The credentials a server URL carries in its user info (`user:password@` or `token@`),
/// percent-decoded, and the URL without them.
fn split_credentials(one: &str) -> (String, Option<(String, Option<String>)>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
    match rest.rsplit_once('@') {
        Some((userinfo, host)) if !userinfo.is_empty() => {
            let bare = if scheme.is_empty() {
                host.to_owned()
            } else {
                format!("{scheme}://{host}")
            };
            let creds = match userinfo.split_once(':') {
                Some((user, pass)) => (decode(user), Some(decode(pass))),
                None => (decode(userinfo), None),
            };
            (bare, Some(creds))
        }
        _ => (one.to_owned(), None),
    }
}

/// Opens a connection. The client reconnects by itself afterwards (and buffers meanwhile);
/// only the first connection is this function's to retry.
///
/// Credentials in the URL are taken out of it and given to the client as options: the
/// client logs the addresses it connects to (at debug level), and those must carry no
/// secret. One set of credentials serves every server of the list (the first one given).
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, NatsError> {
    let url = settings.url.expose_secret();
    let server = redacted_url(url);
    let mut credentials = None;
    let servers: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|one| {
            let (bare, creds) = split_credentials(one);
            if credentials.is_none() {
                credentials = creds;
            }
            bare
        })
        .collect();
    let options = async_nats::ConnectOptions::new();
    let options = match credentials {
        Some((user, Some(pass))) => options.user_and_password(user, pass),
        Some((token, None)) => options.token(token),
        None => options,
    };
    let options = options
        .name("payoutd")
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(settings.request_timeout_ms)))
        // The client's own reconnection uses the same bounds as ours.
        .reconnect_delay_callback({
            let (min_ms, max_ms) = (
                settings.reconnect_delay_min_ms,
                settings.reconnect_delay_max_ms,
            );
            move |attempts| {
                let factor = 1u64
                    .checked_shl(attempts.min(32) as u32)
                    .unwrap_or(u64::MAX);
                Duration::from_millis(min_ms.saturating_mul(factor).min(max_ms))
            }
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("NATS connection (re)established"),
                async_nats::Event::Disconnected => warn!("NATS connection lost; reconnecting"),
                other => warn!(event = %other, "NATS connection event"),
            }
        });
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    options
        .connect(servers.as_slice())
        .await
        .map_err(|e| NatsError::Connect {
            detail: scrub(&e.to_string(), url),
            server,
        })
}

/// A JetStream context whose API requests and publish acks are bounded by
/// `request_timeout_ms`.
pub fn jetstream(client: async_nats::Client, settings: &NatsSettings) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(settings.request_timeout_ms))
        .build(client)
}

/// Returns the stream, creating it from `config` when it does not exist. An existing
/// stream's configuration is never changed (operators may have tuned it); a warning says
/// when it does not capture the subjects `config` asks for.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: StreamConfig,
) -> Result<jetstream::stream::Stream, NatsError> {
    let name = config.name.clone();
    let wanted = config.subjects.clone();
    let stream = match js.get_or_create_stream(config).await {
        Ok(s) => s,
        // Another instance may have created it between our look-up and our create.
        Err(first) => js.get_stream(&name).await.map_err(|_| NatsError::Stream {
            stream: name.clone(),
            detail: first.to_string(),
        })?,
    };
    let have = &stream.cached_info().config.subjects;
    for subject in &wanted {
        if !have
            .iter()
            .any(|f| f == subject || subject_matches(f, subject))
        {
            warn!(stream = %name, subject = %subject, existing = ?have, "the existing stream does not capture this subject; its configuration is left as it is");
        }
    }
    Ok(stream)
}

/// The request stream as payoutd creates it when missing.
pub fn request_stream_config(settings: &NatsSettings) -> StreamConfig {
    StreamConfig {
        name: settings.stream.clone(),
        description: Some("payoutd: payout requests".into()),
        subjects: settings.subjects.clone(),
        // Work queue: a request stays until it is acknowledged (or terminated after its
        // dead letter is durable), and only then goes; payoutd's journal is the record.
        // No age limit unless configured: a request is never expired unconsumed.
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        max_age: Duration::from_millis(settings.stream_max_age_ms),
        ..Default::default()
    }
}

/// Ensures the request stream and the durable pull consumer. The consumer is created, or
/// updated to the configured ack wait / max deliver when it exists (if the server refuses
/// the update, the existing consumer is used as it is, with a warning).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<PullConsumer, NatsError> {
    let stream = ensure_stream(js, request_stream_config(settings)).await?;
    let config = PullConfig {
        durable_name: Some(settings.durable.clone()),
        description: Some("payoutd: payout requests ingress".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_millis(settings.ack_wait_ms),
        max_deliver: settings.max_deliver,
        ..Default::default()
    };
    let consumer_error = |e: &dyn std::fmt::Display| NatsError::Consumer {
        durable: settings.durable.clone(),
        detail: e.to_string(),
    };
    match stream.create_consumer(config).await {
        Ok(c) => Ok(c),
        Err(update) => {
            let existing = stream
                .get_consumer(&settings.durable)
                .await
                .map_err(|_| consumer_error(&update))?;
            warn!(durable = %settings.durable, error = %update, "cannot update the existing consumer; using it as it is");
            Ok(existing)
        }
    }
}

/// Waits until shutdown is asked for (`true`), or its sender is gone.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can ask any more, so stop.
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        warn!("the shutdown sender was dropped; stopping (keep the watch::Sender alive)");
    }
}

pub(crate) fn is_stopped(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps `ms` milliseconds; true if shutdown came first.
pub(crate) async fn sleep_or_stop(ms: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => is_stopped(shutdown),
        () = stopped(shutdown) => true,
    }
}

/// Exponential backoff between reconnection attempts.
pub(crate) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    next_ms: u64,
}

impl Backoff {
    pub(crate) fn new(min_ms: u64, max_ms: u64) -> Self {
        Self {
            min_ms,
            max_ms,
            next_ms: min_ms,
        }
    }

    pub(crate) fn next_ms(&mut self) -> u64 {
        let now = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}

/// Starts the consumer on its own task (see [`run_consumer`]).
pub fn spawn_consumer(
    settings: NatsSettings,
    payouts: Payouts,
    pool: PgPool,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_consumer(settings, payouts, pool, shutdown))
}

/// Consumes payout requests until `shutdown` turns `true`, then finishes the messages in
/// flight and returns. Broker errors are logged and retried with backoff; it never panics
/// and never gives up.
pub async fn run_consumer(
    settings: NatsSettings,
    payouts: Payouts,
    pool: PgPool,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let mut backoff = Backoff::new(
        settings.reconnect_delay_min_ms,
        settings.reconnect_delay_max_ms,
    );
    info!(server = %redacted_url(settings.url.expose_secret()), stream = %settings.stream, durable = %settings.durable, "NATS consumer starting");
    // One client for the consumer's life: it reconnects by itself, and the acks of the last
    // messages are flushed through it before it is dropped.
    let Some(client) = connect_until_stopped(&settings, &mut shutdown, &mut backoff).await else {
        info!("NATS consumer stopped before it connected");
        return;
    };
    let js = jetstream(client.clone(), &settings);
    let handler = Arc::new(Handler {
        settings: settings.clone(),
        payouts,
        pool,
        client: client.clone(),
    });
    let consumer = Consume {
        handler,
        limiter: Arc::new(Semaphore::new(settings.in_flight_max)),
    };
    let mut tasks = JoinSet::new();
    while !is_stopped(&shutdown) {
        match consumer
            .run(&js, &mut tasks, &mut shutdown, &mut backoff)
            .await
        {
            Ok(()) => break,
            Err(e) => {
                let delay_ms = backoff.next_ms();
                warn!(error = %e, retry_in_ms = delay_ms, "NATS consumer: broker error; starting over");
                if sleep_or_stop(delay_ms, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    info!(
        in_flight = tasks.len(),
        "NATS consumer stopping; finishing messages in flight"
    );
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            error!(error = %e, "a NATS message task failed");
        }
    }
    // Acks are queued in the client; send them before the connection goes away.
    let flush = tokio::time::timeout(
        Duration::from_millis(settings.request_timeout_ms),
        client.flush(),
    );
    if !matches!(flush.await, Ok(Ok(()))) {
        warn!(
            "the last acknowledgements may not have reached the server; those messages come back as duplicates"
        );
    }
    info!("NATS consumer stopped");
}

/// Connects, retrying with backoff; None when shutdown came first.
pub(crate) async fn connect_until_stopped(
    settings: &NatsSettings,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Option<async_nats::Client> {
    while !is_stopped(shutdown) {
        let attempt = tokio::select! {
            c = connect(settings) => c,
            () = stopped(shutdown) => return None,
        };
        match attempt {
            Ok(client) => {
                backoff.reset();
                return Some(client);
            }
            Err(e) => {
                let delay_ms = backoff.next_ms();
                warn!(error = %e, retry_in_ms = delay_ms, "cannot connect to NATS; retrying");
                if sleep_or_stop(delay_ms, shutdown).await {
                    return None;
                }
            }
        }
    }
    None
}

/// The pulling side of the consumer.
struct Consume {
    handler: Arc<Handler>,
    /// One permit per message in flight (`in_flight_max`).
    limiter: Arc<Semaphore>,
}

impl Consume {
    /// Ensures stream and consumer, then pulls until shutdown (Ok) or a broker error (Err;
    /// the caller backs off and calls again).
    async fn run(
        &self,
        js: &jetstream::Context,
        tasks: &mut JoinSet<()>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), NatsError> {
        let settings = &self.handler.settings;
        let mut consumer = tokio::select! {
            c = ensure_consumer(js, settings) => c?,
            () = stopped(shutdown) => return Ok(()),
        };
        backoff.reset();
        let lag_every = Duration::from_millis(settings.lag_poll_interval_ms);
        let mut lag_read: Option<std::time::Instant> = None;
        info!(stream = %settings.stream, durable = %settings.durable, "NATS consumer ready");
        let fetch_wait = Duration::from_millis(settings.fetch_wait_ms);
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    error!(error = %e, "a NATS message task failed");
                }
            }
            // While the client reconnects, a pull request would wait in its buffer and reach
            // the server later for an inbox nobody reads any more (its messages would then
            // come back only after ack_wait): wait for the connection instead.
            if self.handler.client.connection_state() != async_nats::connection::State::Connected {
                if sleep_or_stop(settings.reconnect_delay_min_ms, shutdown).await {
                    return Ok(());
                }
                continue;
            }
            if lag_read.is_none_or(|t| t.elapsed() >= lag_every) {
                lag_read = Some(std::time::Instant::now());
                self.read_lag(js, &mut consumer).await;
            }
            // Ask for no more than can be processed now, so that fetched messages do not sit
            // here while their ack deadline runs.
            let free = self.limiter.available_permits().max(1);
            let want = settings.fetch_batch_max.min(free);
            let mut batch = tokio::select! {
                b = consumer.batch().max_messages(want).expires(fetch_wait).messages() => {
                    b.map_err(|e| NatsError::Fetch(e.to_string()))?
                }
                () = stopped(shutdown) => return Ok(()),
            };
            loop {
                let message = tokio::select! {
                    biased;
                    () = stopped(shutdown) => return Ok(()),
                    m = batch.next() => m,
                };
                let message = match message {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(NatsError::Fetch(e.to_string())),
                };
                let permit = tokio::select! {
                    biased;
                    () = stopped(shutdown) => {
                        // Not started: give it back for another instance right away.
                        if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                            debug!(error = %e, "nak on shutdown not sent; the server redelivers after ack_wait");
                        }
                        return Ok(());
                    }
                    p = self.limiter.clone().acquire_owned() => p,
                };
                // The semaphore is never closed; if it were, stop like on shutdown.
                let Ok(permit) = permit else { return Ok(()) };
                let handler = self.handler.clone();
                tasks.spawn(async move {
                    handler.handle(message).await;
                    drop(permit);
                });
            }
        }
    }
}

impl Consume {
    /// Requests waiting (not yet delivered, or delivered and not acknowledged) and the age
    /// of the oldest, into the metrics. A failed read leaves the last figures.
    async fn read_lag(&self, js: &jetstream::Context, consumer: &mut PullConsumer) {
        let metrics = &self.handler.payouts.context().metrics;
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(e) => {
                debug!(error = %e, "cannot read the consumer's lag");
                return;
            }
        };
        let waiting = info.num_pending + info.num_ack_pending as u64;
        metrics
            .broker_waiting
            .store(waiting as i64, std::sync::atomic::Ordering::Relaxed);
        let age_ms = if waiting == 0 {
            0
        } else {
            // The oldest unacknowledged request follows the acknowledgement floor.
            let seq = info.ack_floor.stream_sequence + 1;
            let stream = js.get_stream(&self.handler.settings.stream).await;
            match stream {
                Ok(stream) => match stream.get_raw_message(seq).await {
                    Ok(m) => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0);
                        let then = (m.time.unix_timestamp_nanos() / 1_000_000) as i64;
                        (now - then).max(0)
                    }
                    Err(e) => {
                        debug!(error = %e, seq, "cannot read the oldest waiting request");
                        return;
                    }
                },
                Err(e) => {
                    debug!(error = %e, "cannot read the request stream");
                    return;
                }
            }
        };
        metrics
            .broker_oldest_waiting_ms
            .store(age_ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What to tell the server about one message.
enum Verdict {
    Ack,
    Term,
    /// Not durable and not dead-lettered: it must come back.
    Again(String),
}

/// Everything a message task needs.
struct Handler {
    settings: Arc<NatsSettings>,
    payouts: Payouts,
    pool: PgPool,
    /// For echoing dead letters on `dead_letter_subject`.
    client: async_nats::Client,
}

/// The payout id of a message, when it has a valid one, for the span. Secret-looking ids
/// are left out (they are logged nowhere).
fn peek_payout_id(payload: &[u8]) -> Option<PayoutId> {
    #[derive(Deserialize)]
    struct Peek {
        payout_id: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(payload).ok()?;
    let id = PayoutId::parse(&peek.payout_id?).ok()?;
    (ingress::redact_secrets(id.as_str()) == id.as_str()).then_some(id)
}

impl Handler {
    async fn handle(&self, message: jetstream::Message) {
        let (stream_seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                // Not a JetStream delivery (cannot happen on a pull consumer's inbox).
                warn!(error = %e, "message without JetStream metadata ignored");
                return;
            }
        };
        let span = tracing::info_span!(
            "nats_message",
            stream_seq,
            delivered,
            payout_id = tracing::field::Empty
        );
        if let Some(id) = peek_payout_id(&message.payload) {
            span.record("payout_id", id.as_str());
        }
        async {
            let last_delivery =
                self.settings.max_deliver > 0 && delivered >= self.settings.max_deliver;
            let (kind, what) = match self.decide(&message, stream_seq, delivered).await {
                Verdict::Ack => (AckKind::Ack, "ack"),
                Verdict::Term => (AckKind::Term, "term"),
                Verdict::Again(reason) if !last_delivery => {
                    warn!(reason = %reason, retry_in_ms = self.settings.retry_delay_ms, "not durable yet; the message comes back");
                    let delay = Duration::from_millis(self.settings.retry_delay_ms);
                    (AckKind::Nak(Some(delay)), "nak")
                }
                Verdict::Again(reason) => {
                    // Last delivery: the server would not send it again. Store it where it
                    // is durable (the inbox), never in memory.
                    match crate::inbox::insert(&self.pool, &message.payload).await {
                        Ok(row) => {
                            warn!(reason = %reason, inbox_row = row, "not durable as a payout on its last delivery; stored in the inbox, which makes it one");
                            (AckKind::Ack, "ack")
                        }
                        Err(e) => {
                            error!(stream_seq, reason = %reason, error = %e, "a request on its last delivery could not be stored anywhere: it stays unacknowledged in the stream (durable on the broker, not delivered again); replay it, and set nats.max_deliver = -1");
                            return;
                        }
                    }
                }
            };
            // A lost ack is harmless: the redelivery is a duplicate (or an already
            // dead-lettered message), answered without a second payout.
            if let Err(e) = message.ack_with(kind).await {
                warn!(error = %e, what, "acknowledgement not sent; the server redelivers");
            }
        }
        .instrument(span)
        .await;
    }

    async fn decide(
        &self,
        message: &jetstream::Message,
        stream_seq: u64,
        delivered: i64,
    ) -> Verdict {
        match ingress::ingest(&self.payouts, &message.payload).await {
            IngestOutcome::Created(state) => {
                debug!(%state, "payout accepted");
                Verdict::Ack
            }
            IngestOutcome::Duplicate(state) => {
                debug!(%state, "duplicate payout request");
                Verdict::Ack
            }
            IngestOutcome::Rejected { code, reason } => {
                let reason = ingress::redact_secrets(&reason);
                match self
                    .dead_letter(message, stream_seq, delivered, code, &reason)
                    .await
                {
                    Ok(()) => {
                        warn!(code = %code, reason = %reason, "payout request rejected; dead-lettered");
                        Verdict::Term
                    }
                    Err(e) => Verdict::Again(format!(
                        "rejected ({code}) but the dead letter could not be written: {e}"
                    )),
                }
            }
            IngestOutcome::Retry(reason) => Verdict::Again(reason),
        }
    }

    /// The dead letter row first (durable), then its echo on the dead-letter subject.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        stream_seq: u64,
        delivered: i64,
        code: ErrorCode,
        reason: &str,
    ) -> Result<(), String> {
        let payload = &message.payload[..message.payload.len().min(MESSAGE_BYTES_MAX)];
        // As `ingress::dead_letter` stores it, so that a redelivery finds the row.
        let redacted =
            ingress::storable(&ingress::redact_secrets(&String::from_utf8_lossy(payload)));
        let source_ref = stream_seq.to_string();
        // A redelivery of a message whose dead letter was written but whose TERM was lost:
        // do not write a second row.
        let known = delivered > 1
            && sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE source = $1 AND source_ref = $2 AND payload = $3)",
            )
            .bind(DEAD_LETTER_SOURCE)
            .bind(&source_ref)
            .bind(&redacted)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        if !known {
            ingress::dead_letter(
                &self.pool,
                DEAD_LETTER_SOURCE,
                Some(&source_ref),
                &message.payload,
                code,
                reason,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        let echo = serde_json::json!({
            "source": DEAD_LETTER_SOURCE,
            "stream": self.settings.stream,
            "stream_seq": stream_seq,
            "subject": ingress::redact_secrets(message.subject.as_str()),
            "code": code,
            "reason": reason,
            "payload": redacted,
        });
        let mut headers = async_nats::HeaderMap::new();
        // Lets a stream that captures dead letters drop the echo of a redelivery.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dead-letter:{}:{stream_seq}", self.settings.stream).as_str(),
        );
        let publish = async {
            self.client
                .publish_with_headers(
                    self.settings.dead_letter_subject.clone(),
                    headers,
                    echo.to_string().into(),
                )
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(
            Duration::from_millis(self.settings.request_timeout_ms),
            publish,
        )
        .await
        .map_err(|_| "publishing the dead letter timed out".to_owned())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let s = NatsSettings::default();
        assert!(!s.enabled);
        s.validate().unwrap();
    }

    #[test]
    fn toml_section_parses_and_refuses_unknown_keys() {
        let s: NatsSettings = toml::from_str(
            "enabled = true\nurl = \"nats://u:p@h:4222\"\n[outbox]\nbatch_max = 7\n",
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.outbox.batch_max, 7);
        assert!(!format!("{s:?}").contains("u:p"));
        assert!(toml::from_str::<NatsSettings>("ack_wait = 5").is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = NatsSettings {
            in_flight_max: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().key, "in_flight_max");
        s.in_flight_max = 1;
        s.dead_letter_subject = "payouts.requests.dl".into();
        assert_eq!(s.validate().unwrap_err().key, "dead_letter_subject");
        s.dead_letter_subject = "payouts.dead_letter".into();
        s.stream = "A.B".into();
        assert_eq!(s.validate().unwrap_err().key, "stream");
    }

    #[test]
    fn subjects() {
        assert!(subject_matches(
            "payouts.requests.>",
            "payouts.requests.a.b"
        ));
        assert!(!subject_matches("payouts.requests.>", "payouts.requests"));
        assert!(subject_matches("payouts.*.x", "payouts.a.x"));
        assert!(!subject_matches("payouts.*", "payouts.a.x"));
        assert!(filters_overlap("payouts.>", "payouts.events.>"));
        assert!(!filters_overlap("payouts.requests.>", "payouts.events.>"));
        assert!(is_valid_subject("a.*.>", true));
        assert!(!is_valid_subject("a..b", false));
        assert!(!is_valid_subject("a.>.b", true));
    }

    #[test]
    fn credentials_leave_the_url_before_the_client_sees_it() {
        assert_eq!(
            split_credentials("nats://u:p%40ss@h:4222"),
            (
                "nats://h:4222".to_owned(),
                Some(("u".to_owned(), Some("p@ss".to_owned())))
            )
        );
        assert_eq!(
            split_credentials("tls://tok@h"),
            ("tls://h".to_owned(), Some(("tok".to_owned(), None)))
        );
        assert_eq!(
            split_credentials("nats://h:1"),
            ("nats://h:1".to_owned(), None)
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redacted_url("nats://user:pw@h:4222, tls://tok@g:1"),
            "nats://h:4222,tls://g:1"
        );
        assert_eq!(redacted_url("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(
            scrub("auth failed for user:pw@h", "nats://user:pw@h"),
            "auth failed for [redacted]@h"
        );
    }

    #[test]
    fn payout_ids_are_peeked_but_never_secrets() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        assert_eq!(
            peek_payout_id(br#"{"payout_id":"p-1","x":1}"#)
                .unwrap()
                .as_str(),
            "p-1"
        );
        assert!(peek_payout_id(format!(r#"{{"payout_id":"{seed}"}}"#).as_bytes()).is_none());
        assert!(peek_payout_id(b"\xff").is_none());
    }
}
