//! The Postgres journal: the `Journal` port over sqlx. Each step is one statement (data-
//! modifying CTEs), so the state change, its event, the envelope log and the channel
//! release commit together or not at all, in one round trip.

use async_trait::async_trait;
use payoutd_actors::domain::{AccountId, Fingerprint, PayoutId, PayoutRequest, RawPayoutRequest};
use payoutd_actors::ports::{
    Accepted, Change, Envelope, Inclusion, Journal, JournalError, PayoutEvent, PayoutRecord,
    PayoutState, TxHash,
};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Executor, Row};

/// Embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct PgJournal {
    pool: PgPool,
    /// The channel accounts this instance may lease (public keys only). Several instances
    /// sharing one database split the channels by configuring disjoint lists.
    channels: Vec<String>,
}

fn unavailable(e: sqlx::Error) -> JournalError {
    JournalError::Unavailable(e.to_string())
}

const COLUMNS: &str = "payout_id, fingerprint, request, state, version, attempt, reason, channel, envelope_xdr, tx_hash, tx_source, tx_sequence, tx_fee, max_time, min_ledger, max_ledger, ledger, fee_charged, next_fee";

impl PgJournal {
    /// Registers the channel accounts (idempotent) and returns the journal.
    pub async fn new(pool: PgPool, channels: &[AccountId]) -> Result<Self, JournalError> {
        let channels: Vec<String> = channels.iter().map(AccountId::to_strkey).collect();
        sqlx::query("INSERT INTO channel_accounts (account) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(&channels)
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        Ok(Self { pool, channels })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Payouts in id order after `after`, optionally in one state (for the list endpoint).
    pub async fn list(
        &self,
        state: Option<PayoutState>,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutRecord>, JournalError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {COLUMNS} FROM payouts WHERE ($1::text IS NULL OR state = $1) AND payout_id > $2 ORDER BY payout_id LIMIT $3"
            )
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(state.map(|s| s.as_str()))
            .bind(after.map(PayoutId::as_str).unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(Self::parse_row).collect()
    }

    fn parse_row(row: &PgRow) -> Result<PayoutRecord, JournalError> {
        let id: String = row.try_get("payout_id").map_err(unavailable)?;
        let corrupt = |detail: String| JournalError::Corrupt {
            id: id.clone(),
            detail,
        };
        let get = |e: sqlx::Error| corrupt(e.to_string());
        let request: serde_json::Value = row.try_get("request").map_err(get)?;
        let raw: RawPayoutRequest =
            serde_json::from_value(request).map_err(|e| corrupt(e.to_string()))?;
        let request = raw.parse().map_err(|e| corrupt(e.to_string()))?;
        let fp: Vec<u8> = row.try_get("fingerprint").map_err(get)?;
        let fingerprint = Fingerprint(
            fp.try_into()
                .map_err(|_| corrupt("fingerprint length".into()))?,
        );
        let state: String = row.try_get("state").map_err(get)?;
        let state =
            PayoutState::parse(&state).ok_or_else(|| corrupt(format!("unknown state {state}")))?;
        let account = |col: &str| -> Result<Option<AccountId>, JournalError> {
            let text: Option<String> = row.try_get(col).map_err(get)?;
            text.map(|t| AccountId::parse(&t).map_err(|e| corrupt(format!("{col}: {e}"))))
                .transpose()
        };
        let channel = account("channel")?;
        let xdr: Option<String> = row.try_get("envelope_xdr").map_err(get)?;
        let envelope = match xdr {
            None => None,
            Some(xdr) => {
                let hash: String = row.try_get("tx_hash").map_err(get)?;
                let min_ledger: Option<i32> = row.try_get("min_ledger").map_err(get)?;
                let max_ledger: Option<i32> = row.try_get("max_ledger").map_err(get)?;
                Some(Envelope {
                    xdr,
                    hash: TxHash::from_hex(&hash).ok_or_else(|| corrupt("tx_hash".into()))?,
                    source: account("tx_source")?
                        .ok_or_else(|| corrupt("tx_source missing".into()))?,
                    sequence: row.try_get("tx_sequence").map_err(get)?,
                    fee_stroops: u32::try_from(row.try_get::<i32, _>("tx_fee").map_err(get)?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    max_time: u64::try_from(row.try_get::<i64, _>("max_time").map_err(get)?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    ledger_bounds: match (min_ledger, max_ledger) {
                        (Some(a), Some(b)) => Some((a as u32, b as u32)),
                        _ => None,
                    },
                })
            }
        };
        let ledger: Option<i32> = row.try_get("ledger").map_err(get)?;
        let fee_charged: Option<i64> = row.try_get("fee_charged").map_err(get)?;
        let next_fee: Option<i32> = row.try_get("next_fee").map_err(get)?;
        Ok(PayoutRecord {
            request,
            fingerprint,
            state,
            version: row.try_get("version").map_err(get)?,
            attempt: row.try_get::<i32, _>("attempt").map_err(get)? as u32,
            reason: row.try_get("reason").map_err(get)?,
            channel,
            envelope,
            inclusion: match (ledger, fee_charged) {
                (Some(l), Some(f)) => Some(Inclusion {
                    ledger: l as u32,
                    fee_charged: f,
                }),
                _ => None,
            },
            next_fee_stroops: next_fee.map(|f| f as u32),
        })
    }
}

/// The JSON detail an event carries: what changed and why, never a secret.
fn event_detail(change: &Change) -> serde_json::Value {
    use serde_json::json;
    match change {
        Change::Prepared { channel, envelope } => json!({
            "channel": channel.to_strkey(), "tx_hash": envelope.hash.to_hex(),
            "sequence": envelope.sequence, "max_time": envelope.max_time, "fee": envelope.fee_stroops,
        }),
        Change::Submitted { note } | Change::Noted { note } => json!({ "note": note }),
        Change::Confirmed { inclusion } => {
            json!({ "ledger": inclusion.ledger, "fee_charged": inclusion.fee_charged })
        }
        Change::Failed { reason, inclusion } => json!({
            "reason": reason, "ledger": inclusion.map(|i| i.ledger), "fee_charged": inclusion.map(|i| i.fee_charged),
        }),
        Change::EnvelopeDead {
            reason,
            next_fee_stroops,
        } => json!({ "reason": reason, "next_fee": next_fee_stroops }),
        Change::Parked { reason } | Change::Cancelled { reason } => json!({ "reason": reason }),
    }
}

/// What happens to the previous envelope's log row with this change.
fn envelope_status(change: &Change) -> Option<&'static str> {
    match change {
        Change::EnvelopeDead { .. } => Some("dead"),
        Change::Confirmed { .. } => Some("applied"),
        Change::Failed {
            inclusion: Some(_), ..
        } => Some("failed"),
        _ => None,
    }
}

#[async_trait]
impl Journal for PgJournal {
    async fn accept(
        &self,
        request: &PayoutRequest,
        fingerprint: Fingerprint,
    ) -> Result<Accepted, JournalError> {
        let raw = serde_json::to_value(request.raw())
            .map_err(|e| JournalError::Unavailable(e.to_string()))?;
        let inserted = sqlx::query(
            "WITH ins AS (
                INSERT INTO payouts (payout_id, fingerprint, request, state, version)
                VALUES ($1, $2, $3, 'accepted', 1)
                ON CONFLICT (payout_id) DO NOTHING
                RETURNING payout_id
             ), ev AS (
                INSERT INTO payout_events (payout_id, version, kind, state, detail)
                SELECT payout_id, 1, 'accepted', 'accepted', $4 FROM ins
             ), ob AS (
                INSERT INTO outbox (event_id, payout_id, kind, payload)
                SELECT payout_id || ':1', payout_id, 'accepted', jsonb_build_object(
                    'event_id', payout_id || ':1', 'payout_id', payout_id, 'kind', 'accepted',
                    'state', 'accepted', 'version', 1, 'detail', $4::jsonb, 'at', now())
                FROM ins
             )
             SELECT count(*) AS n FROM ins",
        )
        .bind(request.payout_id().as_str())
        .bind(&fingerprint.0[..])
        .bind(&raw)
        .bind(serde_json::json!({ "fingerprint": fingerprint.to_hex() }))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let n: i64 = inserted.try_get("n").map_err(unavailable)?;
        let record = self
            .load(request.payout_id())
            .await?
            .ok_or_else(|| JournalError::NotFound(request.payout_id().to_string()))?;
        Ok(if n == 1 {
            Accepted::Created(record)
        } else {
            Accepted::Existing(record)
        })
    }

    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {COLUMNS} FROM payouts WHERE payout_id = $1")
        });
        let row = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(Self::parse_row).transpose()
    }

    async fn apply(
        &self,
        current: &PayoutRecord,
        change: &Change,
    ) -> Result<PayoutRecord, JournalError> {
        let mut next = current.clone();
        change.apply_to(&mut next);
        let env = next.envelope.as_ref();
        let new_envelope = matches!(change, Change::Prepared { .. });
        let old_hash = current.envelope.as_ref().map(|e| e.hash.to_hex());
        let status = envelope_status(change);
        let updated = sqlx::query(
            "WITH u AS (
                UPDATE payouts SET state = $3, version = $4, attempt = $5, reason = $6, channel = $7,
                    envelope_xdr = $8, tx_hash = $9, tx_source = $10, tx_sequence = $11, tx_fee = $12,
                    max_time = $13, min_ledger = $14, max_ledger = $15, ledger = $16, fee_charged = $17,
                    next_fee = $18, updated_at = now()
                WHERE payout_id = $1 AND version = $2
                RETURNING payout_id
             ), ev AS (
                INSERT INTO payout_events (payout_id, version, kind, state, detail)
                SELECT payout_id, $4, $19, $3, $20 FROM u
             ), ob AS (
                INSERT INTO outbox (event_id, payout_id, kind, payload)
                SELECT payout_id || ':' || $4::bigint, payout_id, $19, jsonb_build_object(
                    'event_id', payout_id || ':' || $4::bigint, 'payout_id', payout_id, 'kind', $19::text,
                    'state', $3::text, 'version', $4::bigint, 'detail', $20::jsonb, 'at', now())
                FROM u WHERE $19 <> 'noted'
             ), env AS (
                INSERT INTO envelopes (tx_hash, payout_id, attempt, source, sequence, max_time, envelope_xdr)
                SELECT $9, payout_id, $5, $10, $11, $13, $8 FROM u WHERE $21
             ), old AS (
                UPDATE envelopes SET status = $22
                WHERE tx_hash = $23 AND $22 IS NOT NULL AND EXISTS (SELECT 1 FROM u)
             ), rel AS (
                UPDATE channel_accounts SET leased_to = NULL, leased_at = NULL
                WHERE leased_to = $1 AND $24 AND EXISTS (SELECT 1 FROM u)
             )
             SELECT count(*) AS n FROM u",
        )
        .bind(current.id().as_str())
        .bind(current.version)
        .bind(next.state.as_str())
        .bind(next.version)
        .bind(next.attempt as i32)
        .bind(next.reason.as_deref())
        .bind(next.channel.map(|c| c.to_strkey()))
        .bind(env.map(|e| e.xdr.as_str()))
        .bind(env.map(|e| e.hash.to_hex()))
        .bind(env.map(|e| e.source.to_strkey()))
        .bind(env.map(|e| e.sequence))
        .bind(env.map(|e| e.fee_stroops as i32))
        .bind(env.map(|e| e.max_time as i64))
        .bind(env.and_then(|e| e.ledger_bounds).map(|b| b.0 as i32))
        .bind(env.and_then(|e| e.ledger_bounds).map(|b| b.1 as i32))
        .bind(next.inclusion.map(|i| i.ledger as i32))
        .bind(next.inclusion.map(|i| i.fee_charged))
        .bind(next.next_fee_stroops.map(|f| f as i32))
        .bind(change.event_kind())
        .bind(event_detail(change))
        .bind(new_envelope)
        .bind(status)
        .bind(old_hash)
        .bind(change.releases_channel())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let n: i64 = updated.try_get("n").map_err(unavailable)?;
        if n == 1 {
            Ok(next)
        } else {
            match self.load(current.id()).await? {
                Some(_) => Err(JournalError::Stale(current.id().to_string())),
                None => Err(JournalError::NotFound(current.id().to_string())),
            }
        }
    }

    async fn park(&self, id: &PayoutId, reason: &str) -> Result<(), JournalError> {
        sqlx::query(
            "WITH u AS (
                UPDATE payouts SET state = 'parked', version = version + 1, reason = $2, updated_at = now()
                WHERE payout_id = $1 AND state NOT IN ('confirmed', 'failed', 'cancelled')
                RETURNING payout_id, version
             ), ev AS (
                INSERT INTO payout_events (payout_id, version, kind, state, detail)
                SELECT payout_id, version, 'parked', 'parked', jsonb_build_object('reason', $2::text) FROM u
             )
             INSERT INTO outbox (event_id, payout_id, kind, payload)
             SELECT payout_id || ':' || version, payout_id, 'parked', jsonb_build_object(
                 'event_id', payout_id || ':' || version, 'payout_id', payout_id, 'kind', 'parked',
                 'state', 'parked', 'version', version, 'detail', jsonb_build_object('reason', $2::text), 'at', now())
             FROM u",
        )
        .bind(id.as_str())
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn lease_channel(&self, id: &PayoutId) -> Result<Option<AccountId>, JournalError> {
        // Two instances may race to lease for the same payout; the loser hits the unique
        // `leased_to` constraint and simply reads the winner's lease on the second pass.
        for _ in 0..2 {
            let result = sqlx::query(
                "WITH held AS (
                    SELECT account FROM channel_accounts WHERE leased_to = $1
                 ), pick AS (
                    SELECT account FROM channel_accounts
                    WHERE leased_to IS NULL AND account = ANY($2) AND NOT EXISTS (SELECT 1 FROM held)
                    ORDER BY lease_epoch, account LIMIT 1
                    FOR UPDATE SKIP LOCKED
                 ), upd AS (
                    UPDATE channel_accounts c SET leased_to = $1, lease_epoch = c.lease_epoch + 1, leased_at = now()
                    FROM pick WHERE c.account = pick.account
                    RETURNING c.account
                 )
                 SELECT account FROM held UNION ALL SELECT account FROM upd",
            )
            .bind(id.as_str())
            .bind(&self.channels)
            .fetch_optional(&self.pool)
            .await;
            match result {
                Ok(Some(row)) => {
                    let text: String = row.try_get("account").map_err(unavailable)?;
                    let account = AccountId::parse(&text).map_err(|e| JournalError::Corrupt {
                        id: id.to_string(),
                        detail: format!("channel {e}"),
                    })?;
                    return Ok(Some(account));
                }
                Ok(None) => return Ok(None),
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(JournalError::Unavailable("channel lease contention".into()))
    }

    async fn active_ids(
        &self,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutId>, JournalError> {
        let rows = sqlx::query(
            "SELECT payout_id FROM payouts
             WHERE state IN ('accepted','prepared','submitted') AND payout_id > $1
             ORDER BY payout_id LIMIT $2",
        )
        .bind(after.map(PayoutId::as_str).unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("payout_id").map_err(unavailable)?;
                PayoutId::parse(&text).map_err(|e| JournalError::Corrupt {
                    id: text.clone(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError> {
        let rows = sqlx::query(
            "SELECT version, kind, state, detail,
                    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
             FROM payout_events WHERE payout_id = $1 ORDER BY version, id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state").map_err(unavailable)?;
                Ok(PayoutEvent {
                    version: r.try_get("version").map_err(unavailable)?,
                    kind: r.try_get("kind").map_err(unavailable)?,
                    state: PayoutState::parse(&state).ok_or_else(|| JournalError::Corrupt {
                        id: id.to_string(),
                        detail: format!("state {state}"),
                    })?,
                    detail: r.try_get("detail").map_err(unavailable)?,
                    at: r.try_get("at").map_err(unavailable)?,
                })
            })
            .collect()
    }
}

/// Runs the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Checks the database answers (for readiness).
pub async fn ping(pool: &PgPool) -> bool {
    pool.execute("SELECT 1").await.is_ok()
}
