//! The `outbox` table as the NATS publisher reads it, and the JSON of one event, which the
//! publisher and the webhooks send alike. Outbox rows are written by the journal in the
//! same statement as their event; they point at the event, whose row holds the payload.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

/// The event columns [`event_payload`] reads, from `payout_events e` (the NATS publisher
/// and the webhooks select them beside their own `id`, `event_id` and `payout_id`).
#[macro_export]
macro_rules! event_columns {
    () => {
        "e.version, e.kind, e.state, e.detail,
         to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at"
    };
}

/// One event as consumers receive it: the outbox row's id, the event id (the publish's
/// deduplication id), the payout id and the JSON text.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_id: String,
    pub payout_id: String,
    pub payload: String,
}

/// The JSON of one event from a row with `id`, `event_id`, `payout_id` and
/// [`event_columns!`].
pub(crate) fn event_payload(row: &PgRow) -> Result<OutboxEvent, sqlx::Error> {
    let event_id: String = row.try_get("event_id")?;
    let payout_id: String = row.try_get("payout_id")?;
    let detail: serde_json::Value = row.try_get("detail")?;
    let payload = serde_json::json!({
        "event_id": event_id,
        "payout_id": payout_id,
        "kind": row.try_get::<String, _>("kind")?,
        "state": row.try_get::<String, _>("state")?,
        "version": row.try_get::<i64, _>("version")?,
        "detail": detail,
        "at": row.try_get::<String, _>("at")?,
    });
    Ok(OutboxEvent {
        id: row.try_get("id")?,
        event_id,
        payout_id,
        payload: payload.to_string(),
    })
}

/// Up to `batch_max` events not yet published, in outbox order.
pub async fn unpublished(
    conn: &mut PgConnection,
    batch_max: u32,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT o.id, o.event_id, o.payout_id, ",
        crate::event_columns!(),
        " FROM outbox o JOIN payout_events e ON e.payout_id = o.payout_id AND e.version = o.version
         WHERE o.published_at IS NULL ORDER BY o.id LIMIT $1"
    ))
    .bind(i64::from(batch_max))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(event_payload)
    .collect()
}

/// Marks the rows `ids` published.
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes published rows older than the retention, once the webhook fan-out (when
/// `webhooks` are on) has taken them too. Returns how many.
pub async fn prune(
    conn: &mut PgConnection,
    retention_ms: u64,
    webhooks: bool,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE published_at IS NOT NULL
           AND published_at < now() - $1 * interval '1 millisecond'
           AND (NOT $2 OR fanned_out_at IS NOT NULL)",
    )
    .bind(retention_ms as f64)
    .bind(webhooks)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
