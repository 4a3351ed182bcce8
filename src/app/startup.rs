//! What the service needs before anything else, and how it fails: the database (a URL, or
//! the private cluster started first), migrated; the errors of every start-up step.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tracing::info;

use crate::config::Settings;
use crate::local_postgres::LocalPostgres;
use crate::storage::migrate;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Postgres(#[from] crate::local_postgres::PgError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Text, not the error itself: the driver's message may quote the URL, so it is
    /// scrubbed of credentials first.
    #[error("cannot connect to the database: {0}")]
    Database(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("ledger: {0}")]
    Ledger(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid signing key in {what}: {detail}")]
    Key { what: &'static str, detail: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the supervisor: {0}")]
    Supervisor(String),
}

/// Connects to the configured database, or starts the private cluster first.
pub async fn database(
    settings: &Settings,
) -> Result<(PgPool, Option<LocalPostgres>), StartupError> {
    let (url, local) = if settings.wants_local_postgres() {
        let dir = settings.database.local_data_dir.clone();
        let pg = tokio::task::spawn_blocking(move || LocalPostgres::start(&dir, true))
            .await
            .map_err(|e| StartupError::Database(e.to_string()))??;
        info!(port = pg.port(), data_dir = %settings.database.local_data_dir.display(), "private PostgreSQL started");
        (pg.url(crate::local_postgres::DATABASE), Some(pg))
    } else {
        (settings.database.url.expose_secret().to_owned(), None)
    };
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| StartupError::Database(scrub(&e.to_string())))?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.database.connections_max)
        .acquire_timeout(Duration::from_millis(settings.database.connect_timeout_ms))
        .connect_with(options)
        .await
        .map_err(|e| StartupError::Database(scrub(&e.to_string())))?;
    migrate(&pool)
        .await
        .map_err(|e| StartupError::Migrate(e.to_string()))?;
    Ok((pool, local))
}

/// Database errors may quote the URL; drop anything that looks like credentials.
fn scrub(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| {
            if w.contains("://") && w.contains('@') {
                "[url redacted]"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
