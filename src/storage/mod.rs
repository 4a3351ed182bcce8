//! Storage: every SQL statement the service runs, and nothing else. The rest of the crate
//! calls these functions and types and never writes SQL itself; the payout core reaches
//! the database only through its ports (`payoutd_actors::ports`), which [`journal`]
//! implements.
//!
//! - [`journal`] — the core's ports over PostgreSQL: accepts (group-committed), batch
//!   prepare and settle, pause and audit, the cluster's instances and channel leases.
//! - [`listing`] — the payout listing (the core's `PayoutReads` port) and its filter.
//! - [`inbox`] — the `payout_inbox` table: insert, claim a round, delete, and its wake-ups.
//! - [`outbox`] — the `outbox` rows the NATS publisher sends, and the event payload that
//!   NATS and the webhooks share.
//! - [`dead_letters`] — the `dead_letters` table every ingress files refusals in.
//! - [`webhooks`] — the fan-out of the outbox into `webhook_deliveries`, claims, outcomes,
//!   listing and replay.
//! - [`console`] — the console's reads (progress, rates, envelopes).
//! - [`reconcile`] — reconciliation's snapshot of the journal and its runs.
//! - [`leader`] — the session advisory locks that make one instance the leader of a task.
//!
//! Migrations are embedded ([`MIGRATOR`], `migrations/`).

pub mod console;
pub mod dead_letters;
pub mod inbox;
pub mod journal;
pub mod leader;
pub mod listing;
pub mod outbox;
pub mod reconcile;
pub mod webhooks;

use sqlx::Executor;
use sqlx::postgres::PgPool;

pub use journal::{AcceptBatching, PgJournal};
pub use listing::AuditEntry;

/// Embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Checks the database answers (for readiness).
pub async fn ping(pool: &PgPool) -> bool {
    pool.execute("SELECT 1").await.is_ok()
}
