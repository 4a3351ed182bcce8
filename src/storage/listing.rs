//! Reads for callers and operators: the payout listing (the core's
//! [`PayoutReads`] port, for `GET /v1/payouts` and the console) with the filter every
//! listing and count shares, and the admin audit trail.

use async_trait::async_trait;
use payoutd_actors::domain::PayoutId;
use payoutd_actors::ports::{JournalError, PayoutReads};
use payoutd_actors::state::{PayoutRecord, PayoutState};
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

pub use payoutd_actors::ports::ListFilter;

use super::journal::{COLUMNS, PgJournal, follow_the_indexes, parse_row, unavailable};

#[async_trait]
impl PayoutReads for PgJournal {
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutRecord>, JournalError> {
        // One statement per way of finding the state's payouts (`Found`).
        static SQL: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
            [
                Found::Scan,
                Found::Waiting,
                Found::InLiveEnvelope,
                Found::OffPath,
            ]
            .map(|by| {
                format!(
                    "SELECT {COLUMNS} FROM payouts WHERE ($1::text IS NULL OR state = $1) AND {}
                       AND payout_id > $2 AND {} ORDER BY payout_id LIMIT $3",
                    by.sql(),
                    list_filter_sql(4)
                )
            })
        });
        let sql = &SQL[Found::of(filter.state) as usize];
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(filter.state.map(|s| s.as_str()))
            .bind(after.map(PayoutId::as_str).unwrap_or(""))
            .bind(i64::from(limit));
        // Each of these statements has an index that gives its rows in order; the one of
        // `accepted` would otherwise scan the whole table while `payouts_waiting`'s
        // statistics lag behind.
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        follow_the_indexes(&mut tx).await?;
        let rows = bind_list_filter(query, filter)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        rows.iter().map(parse_row).collect()
    }
}

/// How the payouts in one state are found. No index on `payouts` names `state`, so that
/// the steps of a payout's happy path can be HOT updates (migrations/0011): each state is
/// found through what does name it.
#[derive(Clone, Copy)]
enum Found {
    /// The primary key's order: every payout, or the confirmed ones (most of the table).
    Scan = 0,
    /// `accepted`: the payouts waiting for an envelope.
    Waiting = 1,
    /// `prepared`, `submitted`: the members of the live envelopes.
    InLiveEnvelope = 2,
    /// `held`, `parked`, `failed`, `cancelled`: the index on `off_path_state`.
    OffPath = 3,
}

impl Found {
    fn of(state: Option<PayoutState>) -> Found {
        match state {
            None | Some(PayoutState::Confirmed) => Found::Scan,
            Some(PayoutState::Accepted) => Found::Waiting,
            Some(PayoutState::Prepared | PayoutState::Submitted) => Found::InLiveEnvelope,
            Some(
                PayoutState::Held
                | PayoutState::Parked
                | PayoutState::Failed
                | PayoutState::Cancelled,
            ) => Found::OffPath,
        }
    }

    /// The condition on `payouts` (the state bound as `$1`).
    fn sql(self) -> &'static str {
        match self {
            Found::Scan => "TRUE",
            // As arrays, so that the rows are read by primary key from the ids, not the
            // whole table filtered by state (a semi-join lets the planner choose that).
            Found::Waiting => {
                "payout_id = ANY(ARRAY(SELECT payout_id FROM payouts_waiting WHERE payout_id > $2))"
            }
            Found::InLiveEnvelope => {
                "payout_id = ANY(ARRAY(SELECT unnest(member_ids) FROM envelopes WHERE status = 'live'))"
            }
            Found::OffPath => "off_path_state IS NOT NULL AND off_path_state = $1",
        }
    }
}

/// The filter's conditions on `payouts` (prefix, since, until; not the state), with the
/// prefix, since and until bound as `$first`, `$first + 1`, `$first + 2`.
pub(crate) fn list_filter_sql(first: usize) -> String {
    let (p, s, u) = (first, first + 1, first + 2);
    format!(
        "(${p}::text IS NULL OR starts_with(payout_id, ${p}))
         AND (${s}::bigint IS NULL OR created_at >= timestamptz 'epoch' + ${s} * interval '1 millisecond')
         AND (${u}::bigint IS NULL OR created_at < timestamptz 'epoch' + ${u} * interval '1 millisecond')"
    )
}

/// Binds the filter's prefix, since and until (the next three parameters of a statement
/// built with [`list_filter_sql`]).
pub(crate) fn bind_list_filter<'q>(
    query: Query<'q, Postgres, PgArguments>,
    filter: &'q ListFilter,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(filter.id_prefix.as_deref())
        .bind(filter.since_unix_ms)
        .bind(filter.until_unix_ms)
}

/// One admin action as the audit trail holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339, database clock.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub reason: String,
    pub detail: serde_json::Value,
}

/// The newest admin actions first, at most `limit`.
pub async fn audit_trail(pool: &PgPool, limit: u32) -> Result<Vec<AuditEntry>, JournalError> {
    let rows = sqlx::query(
        "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at,
                actor, action, reason, detail
         FROM admin_audit ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id").map_err(unavailable)?,
                at: r.try_get("at").map_err(unavailable)?,
                actor: r.try_get("actor").map_err(unavailable)?,
                action: r.try_get("action").map_err(unavailable)?,
                reason: r.try_get("reason").map_err(unavailable)?,
                detail: r.try_get("detail").map_err(unavailable)?,
            })
        })
        .collect()
}
