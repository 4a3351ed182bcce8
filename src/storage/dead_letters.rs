//! The `dead_letters` table: what an ingress refused for good, with its code and reason.
//! Callers redact the payload before it gets here (`ingress::dead_letter`); this module
//! only stores it.

use sqlx::{Executor, PgPool, Postgres};

/// One dead letter as it is stored.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    pub source: &'a str,
    pub source_ref: Option<&'a str>,
    /// Redacted, without NUL (text columns cannot hold it).
    pub payload: &'a str,
    pub code: &'a str,
    pub reason: &'a str,
}

/// Inserts one dead letter (in the caller's transaction if `executor` is one).
pub async fn insert<'e>(
    executor: impl Executor<'e, Database = Postgres>,
    letter: DeadLetter<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (source, source_ref, payload, code, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(letter.source)
    .bind(letter.source_ref)
    .bind(letter.payload)
    .bind(letter.code)
    .bind(letter.reason)
    .execute(executor)
    .await?;
    Ok(())
}

/// Whether a dead letter with this source, reference and (stored) payload exists already.
pub async fn exists(
    pool: &PgPool,
    source: &str,
    source_ref: &str,
    payload: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE source = $1 AND source_ref = $2 AND payload = $3)",
    )
    .bind(source)
    .bind(source_ref)
    .bind(payload)
    .fetch_one(pool)
    .await
}
