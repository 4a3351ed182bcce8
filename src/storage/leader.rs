//! Leadership by PostgreSQL session advisory lock: the instance whose connection holds the
//! lock leads the task (publishing the outbox, dispatching webhooks). The lock lives as
//! long as that connection, so a dead instance's lock is released when its session ends,
//! and the next instance to try takes over.

use sqlx::PgConnection;

/// The lock of the NATS outbox publisher (an arbitrary constant: "pyd-out").
pub const OUTBOX_PUBLISHER: i64 = 0x0070_7964_2d6f_7574;
/// The lock of the webhook dispatcher (an arbitrary constant: "pyd-hook").
pub const WEBHOOK_DISPATCHER: i64 = 0x7079_642d_686f_6f6b;

/// Tries the lock `key` on `conn` once: `true` when this session holds it now.
pub async fn try_lock(conn: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}
