//! The shared throwaway PostgreSQL cluster of a test run, and a fresh database in it per
//! test: `PAYOUTD_TEST_PG` (a server URL without a database) if given, else a cluster in
//! `PAYOUTD_TEST_PG_DIR` (scripts/test sets it; default: a folder under the temp dir)
//! started here on first use and left running for the next tests and test binaries (the
//! test command stops it at the end).

use std::path::PathBuf;

use payoutd::local_postgres::LocalPostgres;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Base URL of the test cluster (no database).
pub async fn cluster_base() -> String {
    if let Ok(url) = std::env::var("PAYOUTD_TEST_PG") {
        return url;
    }
    tokio::task::spawn_blocking(|| {
        let dir = std::env::var_os("PAYOUTD_TEST_PG_DIR").map(PathBuf::from).unwrap_or_else(default_cluster_dir);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        // One starter at a time across test processes.
        let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
        lock.lock().unwrap();
        let pg = LocalPostgres::start(&dir, false).unwrap_or_else(|e| {
            panic!("cannot start the test PostgreSQL: {e}\nThe test command (scripts/test) installs it: apt-get install -y postgresql")
        });
        let port = pg.detach();
        format!("postgres://{}@127.0.0.1:{port}", payoutd::local_postgres::SUPERUSER)
    })
    .await
    .unwrap()
}

/// Under the temp dir (reachable by the `postgres` user when tests run as root), one per
/// checkout.
fn default_cluster_dir() -> PathBuf {
    use sha2::{Digest, Sha256};
    let tag = hex::encode(&Sha256::digest(env!("CARGO_MANIFEST_DIR").as_bytes())[..6]);
    std::env::temp_dir().join(format!("payoutd-test-pg-{tag}"))
}

/// A fresh database without any migration applied, and its URL (for child processes).
pub async fn fresh_empty_db() -> (PgPool, String) {
    let base = cluster_base().await;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base}/postgres"))
        .await
        .expect("connect to the test cluster");
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("t_{}_{n}_{nanos}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = format!("{base}/{name}");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    (pool, url)
}
