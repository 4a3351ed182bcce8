//! Every statement of the webhooks on the `outbox` and `webhook_deliveries` tables.

use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

/// A delivery's time columns as RFC 3339 (UTC, database clock).
macro_rules! rfc3339 {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// The columns of a delivery as the API shows it.
macro_rules! delivery_columns {
    () => {
        concat!(
            "id, endpoint, event_id, payout_id, version, kind, state, attempts, last_status, last_error, ",
            rfc3339!("created_at"),
            " AS created_at, ",
            rfc3339!("next_attempt_at"),
            " AS next_attempt_at, ",
            rfc3339!("delivered_at"),
            " AS delivered_at, ",
            rfc3339!("dead_at"),
            " AS dead_at"
        )
    };
}

/// One delivery of one event to one endpoint, as the API and the console show it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: String,
    pub event_id: String,
    pub payout_id: String,
    pub version: i64,
    pub kind: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i32,
    /// The HTTP status of the last attempt (none when it got no answer).
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: String,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub dead_at: Option<String>,
}

fn delivery(row: &sqlx::postgres::PgRow) -> Result<Delivery, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        endpoint: row.try_get("endpoint")?,
        event_id: row.try_get("event_id")?,
        payout_id: row.try_get("payout_id")?,
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        attempts: row.try_get("attempts")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        next_attempt_at: if state == "pending" {
            row.try_get("next_attempt_at")?
        } else {
            None
        },
        delivered_at: row.try_get("delivered_at")?,
        dead_at: row.try_get("dead_at")?,
        state,
    })
}

/// Turns up to `batch_max` outbox rows, in id order, into one delivery per endpoint that
/// wants the event's kind (`endpoints`: name and kinds, `*` or comma-separated), in one
/// statement. The rows are then marked, or deleted when no NATS publisher needs them
/// (`keep_for_nats` false). Returns how many rows it took.
pub async fn fan_out(
    conn: &mut PgConnection,
    endpoints: &[(String, String)],
    keep_for_nats: bool,
    batch_max: u32,
) -> Result<u64, sqlx::Error> {
    let (names, kinds): (Vec<&str>, Vec<&str>) = endpoints
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_str()))
        .unzip();
    let taken: i64 = sqlx::query_scalar(
        "WITH claimed AS (
             SELECT o.id, o.event_id, o.payout_id, o.version, e.kind
             FROM outbox o
             JOIN payout_events e ON e.payout_id = o.payout_id AND e.version = o.version
             WHERE o.fanned_out_at IS NULL ORDER BY o.id LIMIT $3
         ), endpoints AS (
             SELECT * FROM unnest($1::text[], $2::text[]) AS t(name, kinds)
         ), inserted AS (
             INSERT INTO webhook_deliveries (endpoint, event_id, payout_id, version, kind)
             SELECT ep.name, c.event_id, c.payout_id, c.version, c.kind
             FROM claimed c
             JOIN endpoints ep ON ep.kinds = '*' OR c.kind = ANY (string_to_array(ep.kinds, ','))
             ORDER BY c.id
             ON CONFLICT (endpoint, event_id) DO NOTHING
         ), marked AS (
             UPDATE outbox SET fanned_out_at = now()
             WHERE $4 AND id IN (SELECT id FROM claimed)
         ), removed AS (
             DELETE FROM outbox WHERE NOT $4 AND id IN (SELECT id FROM claimed)
         )
         SELECT count(*) FROM claimed",
    )
    .bind(&names)
    .bind(&kinds)
    .bind(i64::from(batch_max))
    .bind(keep_for_nats)
    .fetch_one(&mut *conn)
    .await?;
    Ok(taken as u64)
}

/// A delivery that is due, with the event it carries.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub event_id: String,
    /// The JSON body (the same document the NATS events carry).
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// How long ago its retry window opened, in milliseconds.
    pub window_age_ms: i64,
}

/// Claims up to `limit` due deliveries of `endpoint`, oldest first, at most one per
/// payout: the lowest pending version (a payout's later events wait until the earlier one
/// is delivered or dead). A claim moves the row's next attempt `lease_ms` ahead, so no
/// other dispatcher (one that took over the lock while this one still sends) sends it, nor
/// the payout's next event, until this attempt is recorded or its lease has passed.
pub async fn due(
    pool: &PgPool,
    endpoint: &str,
    limit: u32,
    lease_ms: u64,
) -> Result<Vec<Due>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "WITH picked AS (
             SELECT d.id FROM webhook_deliveries d
             WHERE d.endpoint = $1 AND d.state = 'pending' AND d.next_attempt_at <= now()
               AND NOT EXISTS (
                   SELECT 1 FROM webhook_deliveries p
                   WHERE p.endpoint = d.endpoint AND p.payout_id = d.payout_id
                     AND p.state = 'pending' AND p.version < d.version)
             ORDER BY d.id LIMIT $2
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE webhook_deliveries d
             SET next_attempt_at = now() + $3 * interval '1 millisecond'
             FROM picked WHERE d.id = picked.id
             RETURNING d.id, d.event_id, d.payout_id, d.version, d.attempts, d.window_from
         )
         SELECT d.id, d.event_id, d.payout_id, d.attempts,
                (extract(epoch FROM now() - d.window_from) * 1000)::bigint AS window_age_ms, ",
        crate::event_columns!(),
        " FROM claimed d
         JOIN payout_events e ON e.payout_id = d.payout_id AND e.version = d.version
         ORDER BY d.id"
    ))
    .bind(endpoint)
    .bind(i64::from(limit))
    .bind(lease_ms as f64)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let event = super::outbox::event_payload(row)?;
            Ok(Due {
                id: event.id,
                event_id: event.event_id,
                body: event.payload,
                attempts: row.try_get("attempts")?,
                window_age_ms: row.try_get("window_age_ms")?,
            })
        })
        .collect()
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: i64,
    pub state: &'static str,
    pub status: Option<i32>,
    pub error: Option<String>,
    /// Until the next attempt (retries only), in milliseconds.
    pub delay_ms: i64,
}

/// Records the outcomes of one round in one statement (only on rows still pending).
pub async fn record(pool: &PgPool, outcomes: &[Outcome]) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
    let states: Vec<&str> = outcomes.iter().map(|o| o.state).collect();
    let statuses: Vec<Option<i32>> = outcomes.iter().map(|o| o.status).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
    let delays: Vec<i64> = outcomes.iter().map(|o| o.delay_ms).collect();
    sqlx::query(
        "UPDATE webhook_deliveries d SET
             state = o.state, attempts = d.attempts + 1,
             last_status = o.status, last_error = o.error,
             next_attempt_at = now() + o.delay_ms * interval '1 millisecond',
             delivered_at = CASE WHEN o.state = 'delivered' THEN now() END,
             dead_at = CASE WHEN o.state = 'dead' THEN now() END
         FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bigint[])
              AS o(id, state, status, error, delay_ms)
         WHERE d.id = o.id AND d.state = 'pending'",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&statuses)
    .bind(&errors)
    .bind(&delays)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes delivered rows older than `retention_ms`. Returns how many.
pub async fn prune_delivered(pool: &PgPool, retention_ms: u64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE state = 'delivered'
           AND delivered_at < now() - $1 * interval '1 millisecond'",
    )
    .bind(retention_ms as f64)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A page of deliveries, newest first: in `state` if given, of `payout_id` if given, with
/// ids below `before` if given. One statement per combination of filters, so each can use
/// its index (a state's partial index, or the payout's).
pub async fn list(
    pool: &PgPool,
    state: Option<&str>,
    payout_id: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut conditions = vec!["($2::bigint IS NULL OR id < $2)".to_owned()];
    let mut next = 3;
    for (present, column) in [
        (state.is_some(), "state"),
        (payout_id.is_some(), "payout_id"),
    ] {
        if present {
            conditions.push(format!("{column} = ${next}"));
            next += 1;
        }
    }
    let sql = format!(
        "SELECT {} FROM webhook_deliveries WHERE {} ORDER BY id DESC LIMIT $1",
        delivery_columns!(),
        conditions.join(" AND ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(limit))
        .bind(before);
    for value in [state, payout_id].into_iter().flatten() {
        query = query.bind(value);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(delivery).collect()
}

/// With the NATS publisher off, outbox rows fanned out while it was on (and kept for it)
/// are no longer anyone's: deletes them. Returns how many.
pub async fn drop_fanned_out(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM outbox WHERE fanned_out_at IS NOT NULL")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// How many deliveries are pending and dead (for the metrics and the console), each from
/// its partial index.
pub async fn counts(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending') AS pending,
                (SELECT count(*) FROM webhook_deliveries WHERE state = 'dead') AS dead",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("pending")?, row.try_get("dead")?))
}

/// Why a replay was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no webhook delivery {0}")]
    NotFound(i64),
    #[error("webhook delivery {0} is pending: it is attempted already")]
    Pending(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Sends a dead (or delivered) delivery again: pending, due now, attempts from zero, a new
/// retry window; audited in the same transaction.
pub async fn replay(
    pool: &PgPool,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<Delivery, ReplayError> {
    let mut tx = pool.begin().await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match state.as_deref() {
        None => return Err(ReplayError::NotFound(id)),
        Some("pending") => return Err(ReplayError::Pending(id)),
        Some(_) => {}
    }
    let row = sqlx::query(concat!(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0,
             next_attempt_at = now(), window_from = now(), delivered_at = NULL, dead_at = NULL
         WHERE id = $1 RETURNING ",
        delivery_columns!()
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let replayed = delivery(&row)?;
    sqlx::query(
        "INSERT INTO admin_audit (actor, action, reason, detail) VALUES ($1, 'webhook_replay', $2, $3)",
    )
    .bind(actor)
    .bind(reason)
    .bind(serde_json::json!({
        "delivery_id": id,
        "endpoint": replayed.endpoint,
        "event_id": replayed.event_id,
    }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(replayed)
}
