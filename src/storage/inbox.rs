//! The `payout_inbox` table: rows other systems insert inside their own transactions, and
//! the statements the inbox worker runs on them. A trigger (migration 0002) notifies
//! [`CHANNEL`] on every insert.

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, Row};

/// The notification channel the `payout_inbox_notify` trigger signals.
pub const CHANNEL: &str = "payout_inbox";

/// One claimed row.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: i64,
    pub payload: String,
}

/// Adds one request to the inbox (as another system would); returns the row's id. The
/// payload column is text: a payload that is not UTF-8 is stored lossily (and then
/// dead-lettered by the inbox worker like any other bad row).
pub async fn insert(pool: &PgPool, payload: &[u8]) -> Result<i64, sqlx::Error> {
    let text = String::from_utf8_lossy(payload);
    sqlx::query_scalar("INSERT INTO payout_inbox (payload) VALUES ($1) RETURNING id")
        .bind(text.as_ref())
        .fetch_one(pool)
        .await
}

/// Locks up to `batch_max` rows in id order for the caller's transaction, skipping rows
/// another round holds (so instances share the table and never claim one row twice).
pub async fn claim(conn: &mut PgConnection, batch_max: u32) -> Result<Vec<InboxRow>, sqlx::Error> {
    sqlx::query("SELECT id, payload FROM payout_inbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
        .bind(i64::from(batch_max))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(InboxRow {
                id: r.try_get("id")?,
                payload: r.try_get("payload")?,
            })
        })
        .collect()
}

/// Deletes the rows `ids` (answered, or dead-lettered) in the caller's transaction.
pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM payout_inbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A connection listening on [`CHANNEL`].
pub async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
