//! The outbox publisher: copies the journal's `outbox` rows (each names a payout event,
//! written in the same statement as the state change) to JetStream, at least once, marks
//! them published, and prunes published rows after `outbox_retention_ms`.
//!
//! One publisher at a time in the whole cluster: it holds a PostgreSQL advisory lock on a
//! connection of its own (released if that connection or its instance dies, then another
//! instance takes over). One round: read up to `batch_max` unpublished rows in id order,
//! publish each event (payload built from the event row) to `<subject_prefix>.<payout id>`
//! with the header `Nats-Msg-Id: <event_id>`, await the stream's acknowledgements, and set
//! `published_at` on the acknowledged rows. A crash between the publish and the mark
//! republishes the same event id: the stream drops it within `duplicate_window_ms`, and
//! consumers deduplicate on `event_id` (or `payout_id` + `version`) beyond that.
//!
//! Order: a payout's events are written one after the other (each step waits for the
//! previous one's commit), so their outbox ids grow with their version; one publisher
//! sending in id order therefore publishes every payout's events in version order, across
//! instances. A retry after a failed publish sends the rest again in the same order.
//!
//! Subjects: a payout id (`[A-Za-z0-9._:-]`, 1–64 characters) becomes one subject token.
//! `:`, `-` and `_` are legal inside a NATS token and stay; `.` separates tokens, and ids
//! like `a..b`, `.a` or `a.` would make empty tokens (a subject nobody can subscribe to),
//! so every `.` is written `%2E` (`%` never occurs in a payout id, so the mapping is
//! one-to-one and reversible): payout `reward.2026:7` → `payouts.events.reward%2E2026:7`.
//! `payouts.events.>` and `payouts.events.*` both see every payout's events; the exact
//! subject of one payout sees only that payout's.

use std::time::Duration;

use async_nats::jetstream;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::nats::{
    NatsError, NatsSettings, OutboxSettings, connect_until_stopped, ensure_stream,
    jetstream as jetstream_context, redacted_url,
};
use crate::storage::leader;
use crate::storage::outbox::{self as store, OutboxEvent};
use crate::worker::{Backoff, is_stopped, sleep_or_stop};

/// The subject of a payout's events (see the module doc for the mapping).
pub fn event_subject(subject_prefix: &str, payout_id: &str) -> String {
    format!("{subject_prefix}.{}", payout_id.replace('.', "%2E"))
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publishing event {event_id}: {detail}")]
    Publish { event_id: String, detail: String },
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Ensures the events stream (created from `settings` when missing, never reconfigured).
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    settings: &OutboxSettings,
) -> Result<(), NatsError> {
    ensure_stream(js, settings.stream_config())
        .await
        .map(|_| ())
}

/// How often published rows older than the retention are deleted, in milliseconds.
const PRUNE_INTERVAL_MS: u64 = 60_000;

/// One round on the publisher's connection: publishes and marks up to `batch_max` rows.
/// Returns how many were published. On a publish failure the rows acknowledged before it
/// are still marked, the rest stay for the next round, and the error is returned.
pub async fn publish_batch(
    js: &jetstream::Context,
    conn: &mut sqlx::PgConnection,
    settings: &OutboxSettings,
) -> Result<usize, OutboxError> {
    let rows = store::unpublished(conn, settings.batch_max).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    // Send every publish first, then await the acks: one round trip per batch, not per row.
    let mut sent = Vec::with_capacity(rows.len());
    for OutboxEvent {
        id,
        event_id,
        payout_id,
        payload,
    } in rows
    {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.as_str());
        let subject = event_subject(&settings.subject_prefix, &payout_id);
        let ack = js
            .publish_with_headers(subject, headers, payload.into())
            .await;
        sent.push((id, event_id, ack));
    }
    let mut published = Vec::with_capacity(sent.len());
    let mut failure = None;
    for (id, event_id, ack) in sent {
        // After a failure, later events of the same payout must not be marked ahead of it:
        // stop marking at the first failure (they are sent again, in order, next round).
        if failure.is_some() {
            break;
        }
        let result = match ack {
            Ok(pending) => pending.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(ack) => {
                debug!(event_id = %event_id, stream_seq = ack.sequence, duplicate = ack.duplicate, "event published");
                published.push(id);
            }
            Err(detail) => {
                failure = Some(OutboxError::Publish { event_id, detail });
            }
        }
    }
    if !published.is_empty() {
        store::mark_published(conn, &published).await?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(published.len()),
    }
}

/// Starts the publisher on its own task (see [`run_publisher`]).
/// `webhooks`: the webhook fan-out reads the outbox too (rows are pruned only once it has).
pub fn spawn_publisher(
    settings: NatsSettings,
    pool: PgPool,
    webhooks: bool,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_publisher(settings, pool, webhooks, shutdown))
}

/// Publishes the outbox until `shutdown` turns `true` (the round under way finishes first).
/// Broker and database errors are logged and retried with backoff; it never panics.
pub async fn run_publisher(
    settings: NatsSettings,
    pool: PgPool,
    webhooks: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        settings.reconnect_delay_min_ms,
        settings.reconnect_delay_max_ms,
    );
    info!(server = %redacted_url(settings.url.expose_secret()), stream = %settings.outbox.events_stream, "outbox publisher starting");
    // One client for the publisher's life: it reconnects by itself.
    let Some(client) = connect_until_stopped(&settings, &mut shutdown, &mut backoff).await else {
        info!("outbox publisher stopped before it connected");
        return;
    };
    let js = jetstream_context(client, &settings);
    while !is_stopped(&shutdown) {
        let round = publish_until_stopped(
            &js,
            &settings.outbox,
            &pool,
            webhooks,
            &mut shutdown,
            &mut backoff,
        );
        match round.await {
            Ok(()) => break,
            Err(e) => {
                let delay_ms = backoff.next_ms();
                warn!(error = %e, retry_in_ms = delay_ms, "outbox publisher: error; starting over");
                if sleep_or_stop(delay_ms, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    info!("outbox publisher stopped");
}

/// Ensures the events stream, then publishes round after round until shutdown (Ok) or an
/// error (Err; the caller backs off and calls again).
async fn publish_until_stopped(
    js: &jetstream::Context,
    outbox: &OutboxSettings,
    pool: &PgPool,
    webhooks: bool,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), OutboxError> {
    ensure_events_stream(js, outbox).await?;
    // A connection of its own, never returned to the pool (the lock lives as long as it).
    let mut conn = pool.acquire().await?.detach();
    loop {
        if leader::try_lock(&mut conn, leader::OUTBOX_PUBLISHER).await? {
            break;
        }
        // Another instance publishes; take over when it is gone.
        if sleep_or_stop(outbox.poll_interval_ms, shutdown).await {
            return Ok(());
        }
    }
    info!(stream = %outbox.events_stream, "outbox publisher ready (this instance publishes)");
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        // A round is not interrupted: it is bounded by the publish-ack timeout.
        let n = publish_batch(js, &mut conn, outbox).await?;
        backoff.reset();
        if pruned_at.is_none_or(|t| t.elapsed() >= Duration::from_millis(PRUNE_INTERVAL_MS)) {
            pruned_at = Some(std::time::Instant::now());
            let gone = store::prune(&mut conn, outbox.outbox_retention_ms, webhooks).await?;
            if gone > 0 {
                debug!(rows = gone, "published outbox rows pruned");
            }
        }
        if is_stopped(shutdown) {
            return Ok(());
        }
        // A full batch: there may be more right away.
        if n < outbox.batch_max as usize && sleep_or_stop(outbox.poll_interval_ms, shutdown).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payout_ids_become_one_token() {
        assert_eq!(
            event_subject("payouts.events", "reward-2026-11-0042"),
            "payouts.events.reward-2026-11-0042"
        );
        assert_eq!(
            event_subject("payouts.events", "reward.2026:7"),
            "payouts.events.reward%2E2026:7"
        );
        assert_eq!(event_subject("p", "a..b"), "p.a%2E%2Eb");
        assert_eq!(event_subject("p", ".a."), "p.%2Ea%2E");
    }

    #[test]
    fn events_must_not_overlap_requests() {
        let o = OutboxSettings {
            subject_prefix: "payouts.requests.events".into(),
            ..Default::default()
        };
        assert_eq!(
            o.validate("PAYOUTS", &["payouts.requests.>".into()])
                .unwrap_err()
                .key,
            "nats.outbox.subject_prefix"
        );
        let o = OutboxSettings {
            events_stream: "PAYOUTS".into(),
            ..Default::default()
        };
        assert_eq!(
            o.validate("PAYOUTS", &["payouts.requests.>".into()])
                .unwrap_err()
                .key,
            "nats.outbox.events_stream"
        );
        OutboxSettings::default()
            .validate("PAYOUTS", &["payouts.requests.>".into()])
            .unwrap();
    }
}
