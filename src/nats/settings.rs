//! `[nats]` and `[nats.outbox]`: the broker ingress's and the event publisher's settings,
//! and their checks.

use super::*;

/// The `[nats]` section: the broker ingress and, in `[nats.outbox]`, the event publisher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The built-in defaults (`config/default.toml`, the one place they are written).
    fn default() -> Self {
        crate::config::base::built_in(&["nats"])
    }
}

/// A setting under `nats` that cannot work (`key` is relative to `nats`).
pub(super) fn invalid(key: &str, detail: impl Into<String>) -> InvalidSetting {
    InvalidSetting::new(format!("nats.{key}"), detail)
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

/// Largest batch one round may claim (a sanity bound on `batch_max`).
pub const BATCH_MAX_LIMIT: u32 = 10_000;

/// The `[nats.outbox]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Publish state changes (when `nats.enabled`).
    pub enabled: bool,
    /// The events stream; created when missing (its subjects: `<subject_prefix>.>`), left
    /// as it is when it exists.
    pub events_stream: String,
    /// Events go to `<subject_prefix>.<payout id token>`.
    pub subject_prefix: String,
    /// How long the events stream keeps an event when created by payoutd, in milliseconds.
    pub events_max_age_ms: u64,
    /// JetStream's deduplication window on `Nats-Msg-Id` when payoutd creates the stream,
    /// in milliseconds.
    pub duplicate_window_ms: u64,
    /// Wait between rounds when the last one found less than a full batch, in milliseconds.
    pub poll_interval_ms: u64,
    /// Rows claimed and published per round, at most.
    pub batch_max: u32,
    /// Published rows are deleted this long after publication, in milliseconds (the event
    /// log keeps every event for good; the outbox is only the delivery queue).
    pub outbox_retention_ms: u64,
}

impl Default for OutboxSettings {
    /// The built-in defaults (`config/default.toml`, the one place they are written).
    fn default() -> Self {
        crate::config::base::built_in(&["nats", "outbox"])
    }
}

impl OutboxSettings {
    /// Checks bounds and names; the events stream must not overlap the request stream.
    pub fn validate(
        &self,
        request_stream: &str,
        request_subjects: &[String],
    ) -> Result<(), InvalidSetting> {
        let bad = |key, detail: &str| Err(invalid(key, detail));
        check_name("outbox.events_stream", &self.events_stream)?;
        if self.events_stream == request_stream {
            return bad("outbox.events_stream", "must differ from nats.stream");
        }
        if !is_valid_subject(&self.subject_prefix, false) {
            return bad(
                "outbox.subject_prefix",
                "not a valid subject (no wildcards)",
            );
        }
        let events = self.events_filter();
        if request_subjects.iter().any(|r| filters_overlap(r, &events)) {
            return bad(
                "outbox.subject_prefix",
                "overlaps nats.subjects: the consumer would read the events",
            );
        }
        if self.poll_interval_ms == 0 {
            return bad("outbox.poll_interval_ms", "must be greater than 0");
        }
        if self.duplicate_window_ms == 0 || self.duplicate_window_ms > self.events_max_age_ms {
            return bad(
                "outbox.duplicate_window_ms",
                "must be 1..=events_max_age_ms",
            );
        }
        if !(1..=BATCH_MAX_LIMIT).contains(&self.batch_max) {
            return bad("outbox.batch_max", "out of range 1..=10000");
        }
        Ok(())
    }

    /// `<subject_prefix>.>`: every payout's events.
    pub fn events_filter(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The events stream as payoutd creates it when missing.
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.events_stream.clone(),
            description: Some("payoutd: payout state changes".into()),
            subjects: vec![self.events_filter()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            max_age: Duration::from_millis(self.events_max_age_ms),
            duplicate_window: Duration::from_millis(self.duplicate_window_ms),
            ..Default::default()
        }
    }
}
