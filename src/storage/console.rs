//! The console's reads: counts by state, the confirmation rate, the oldest unfinished
//! payout, the last reconciliation, and a payout's envelopes.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use crate::storage::listing::{ListFilter, bind_list_filter, list_filter_sql};
use payoutd_actors::state::PayoutState;

/// States that are not final (the payout may still be paid). No index names `state`
/// (migrations/0011): the unfinished payouts are found as those waiting for an envelope,
/// the members of live envelopes, and the parked and held ones (`off_path_state`).
const UNFINISHED: &str = "('accepted', 'prepared', 'submitted', 'parked', 'held')";

/// Counts by state of the payouts `filter` takes (its `state` is ignored), every state
/// present (zero when none), how many of them were confirmed in the last minute, and the
/// oldest one not finished.
pub async fn progress(pool: &PgPool, filter: &ListFilter) -> Result<Value, sqlx::Error> {
    let sql = format!(
        "SELECT state, count(*) AS n,
                count(*) FILTER (WHERE state = 'confirmed' AND updated_at > now() - interval '1 minute') AS recent
         FROM payouts WHERE {} GROUP BY state",
        list_filter_sql(1)
    );
    let rows = bind_list_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter)
        .fetch_all(pool)
        .await?;
    let mut counts = serde_json::Map::new();
    for s in PayoutState::ALL {
        counts.insert(s.as_str().to_owned(), json!(0));
    }
    let mut recent = 0i64;
    let mut total = 0i64;
    for row in &rows {
        let state: String = row.try_get("state")?;
        let n: i64 = row.try_get("n")?;
        total += n;
        recent += row.try_get::<i64, _>("recent")?;
        counts.insert(state, json!(n));
    }
    let n = |s: &str| counts.get(s).and_then(Value::as_i64).unwrap_or(0);
    let oldest_sql = format!(
        "SELECT payout_id, state, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at,
                (extract(epoch FROM now() - created_at) * 1000)::bigint AS age_ms
         FROM (SELECT payout_id, state, created_at FROM payouts
               WHERE payout_id IN (SELECT payout_id FROM payouts_waiting
                                   UNION ALL SELECT unnest(member_ids) FROM envelopes WHERE status = 'live')
                 AND state IN {UNFINISHED} AND {filter}
               UNION ALL
               SELECT payout_id, state, created_at FROM payouts
               WHERE off_path_state IS NOT NULL AND off_path_state IN ('parked', 'held') AND {filter}) t
         ORDER BY created_at LIMIT 1",
        filter = list_filter_sql(1)
    );
    let oldest = bind_list_filter(sqlx::query(sqlx::AssertSqlSafe(oldest_sql)), filter)
        .fetch_optional(pool)
        .await?
        .map(|r| -> Result<Value, sqlx::Error> {
            Ok(json!({
                "payout_id": r.try_get::<String, _>("payout_id")?,
                "state": r.try_get::<String, _>("state")?,
                "created_at": r.try_get::<String, _>("created_at")?,
                "age_ms": r.try_get::<i64, _>("age_ms")?,
            }))
        })
        .transpose()?;
    Ok(json!({
        "total": total,
        "done": n("confirmed"),
        "failed": n("failed") + n("cancelled"),
        "waiting_for_operator": n("parked") + n("held"),
        "pending": n("accepted") + n("prepared") + n("submitted"),
        "confirmed_last_minute": recent,
        "counts": counts,
        "oldest_unfinished": oldest,
    }))
}

/// Payouts confirmed per minute over the last `minutes` minutes, oldest first, every
/// minute present (from the envelopes applied: each confirmed all its members).
pub async fn confirmed_per_minute(pool: &PgPool, minutes: i32) -> Result<Value, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT to_char(m.minute AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"') AS minute,
                coalesce(sum(cardinality(e.member_ids)), 0)::bigint AS payouts
         FROM generate_series(date_trunc('minute', now()) - ($1 - 1) * interval '1 minute',
                              date_trunc('minute', now()), interval '1 minute') AS m(minute)
         LEFT JOIN envelopes e ON e.status = 'applied'
              AND e.updated_at >= m.minute AND e.updated_at < m.minute + interval '1 minute'
         GROUP BY m.minute ORDER BY m.minute",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "minute": r.try_get::<String, _>("minute")?,
                "payouts": r.try_get::<i64, _>("payouts")?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Value::Array)
}

/// The newest reconciliation run, if any.
pub async fn last_reconcile(pool: &PgPool) -> Result<Value, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, trigger, result, from_ledger, to_ledger, mismatches, error,
                to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS finished_at
         FROM reconcile_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(Value::Null) };
    Ok(json!({
        "id": r.try_get::<i64, _>("id")?,
        "finished_at": r.try_get::<String, _>("finished_at")?,
        "trigger": r.try_get::<String, _>("trigger")?,
        "result": r.try_get::<String, _>("result")?,
        "from_ledger": r.try_get::<Option<i32>, _>("from_ledger")?,
        "to_ledger": r.try_get::<Option<i32>, _>("to_ledger")?,
        "mismatches": r.try_get::<i32, _>("mismatches")?,
        "error": r.try_get::<Option<String>, _>("error")?,
    }))
}

/// One envelope a payout was in.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeView {
    pub tx_hash: String,
    /// `live`, `applied`, `failed` or `dead`.
    pub status: String,
    /// The channel account that sourced it, and its sequence number.
    pub source: String,
    pub sequence: i64,
    /// Fee offered for the whole transaction (per operation × operations), in stroops.
    pub fee_stroops: i32,
    /// This payout's operation in it (0-based) and the operations it holds.
    pub op_index: Option<i32>,
    pub operations: i32,
    pub ledger: Option<i32>,
    pub fee_charged_stroops: Option<i64>,
    /// How it ended: the proof of death, or the result codes.
    pub note: Option<String>,
    pub created_at: String,
}

/// The envelopes `payout_id` was in, oldest first ([`crate::envelopes_of_payout!`]).
pub async fn envelopes(pool: &PgPool, payout_id: &str) -> Result<Vec<EnvelopeView>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT e.tx_hash, e.status, e.source, e.sequence, e.fee, e.ledger, e.fee_charged, e.note,
                (array_position(e.member_ids, $1) - 1) AS op_index,
                cardinality(e.member_ids) AS operations,
                to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at
         FROM envelopes e
         WHERE e.tx_hash IN (",
        crate::envelopes_of_payout!(),
        ")
         ORDER BY e.created_at, e.tx_hash"
    ))
    .bind(payout_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EnvelopeView {
                tx_hash: r.try_get("tx_hash")?,
                status: r.try_get("status")?,
                source: r.try_get("source")?,
                sequence: r.try_get("sequence")?,
                fee_stroops: r.try_get("fee")?,
                op_index: r.try_get("op_index")?,
                operations: r.try_get("operations")?,
                ledger: r.try_get("ledger")?,
                fee_charged_stroops: r.try_get("fee_charged")?,
                note: r.try_get("note")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}
