//! What the benchmarks share: a private PostgreSQL with fsync on, the commit rate plain
//! PostgreSQL reaches beside us, database counters (commits, rows written), latency
//! percentiles from the journal, RSS, CPU time, and the report table.

use std::path::PathBuf;
use std::time::Instant;

use payoutd::local_postgres::LocalPostgres;
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, PayoutId, PayoutRequest};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Connections of the journal's pool in the benchmarks.
pub const POOL_CONNECTIONS: u32 = 16;

pub type BenchResult<T> = Result<T, String>;

pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The benchmark cluster's `shared_buffers`, in MiB. PostgreSQL's default (128 MiB) is a
/// setting for a small machine sharing its memory; the usual advice for a database server
/// is about a quarter of its memory. With the default, the tables of a 150,000-payout run
/// no longer fit, and the run measures page evictions (docs/performance.md). The plain
/// commits of the same run use the same server.
pub const SHARED_BUFFERS_MB: u32 = 1024;

/// A private PostgreSQL cluster (fsync on) in a fresh temp folder, removed on drop.
pub struct Database {
    pub pg: Option<LocalPostgres>,
    pub dir: PathBuf,
    pub url: String,
}

impl Database {
    pub async fn start(tag: &str) -> BenchResult<Self> {
        let dir = std::env::temp_dir().join(format!(
            "payoutd-bench-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let pg = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                // PAYOUTD_BENCH_PG_OPTIONS: more server options, for a closer look at a
                // run (e.g. `-c log_lock_waits=on`); the server log stays in the data folder.
                let extra = std::env::var("PAYOUTD_BENCH_PG_OPTIONS").unwrap_or_default();
                LocalPostgres::start_with(
                    &dir,
                    true,
                    &format!(
                        "-c shared_buffers={SHARED_BUFFERS_MB}MB -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all {extra}"
                    ),
                )
            }
        })
        .await
        .map_err(err)?
        .map_err(err)?;
        let url = pg.url(payoutd::local_postgres::DATABASE);
        Ok(Self {
            pg: Some(pg),
            dir,
            url,
        })
    }

    pub async fn pool(&self, connections: u32) -> BenchResult<PgPool> {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(&self.url)
            .await
            .map_err(err)?;
        payoutd::storage::migrate(&pool).await.map_err(err)?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .map_err(err)?;
        Ok(pool)
    }
}

/// Forgets the statement statistics (before the measured part of a run).
pub async fn reset_statements(pool: &PgPool) -> BenchResult<()> {
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(pool)
        .await
        .map_err(err)?;
    Ok(())
}

/// Where the database spent its time since the last reset: the top statements by total
/// execution time, as (share of the total, calls, mean ms, rows per call, statement head).
pub async fn top_statements(pool: &PgPool, n: i64) -> BenchResult<Vec<String>> {
    let rows: Vec<(f64, i64, f64, f64, String)> = sqlx::query_as(
        "SELECT (100 * total_exec_time / sum(total_exec_time) OVER ())::float8,
                calls, mean_exec_time::float8, (rows::float8 / greatest(calls, 1)),
                regexp_replace(left(query, 90), '\\s+', ' ', 'g')
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(n)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    Ok(rows
        .into_iter()
        .map(|(share, calls, mean, rows, q)| {
            format!("{share:5.1}%  {calls:>8} calls  {mean:7.2} ms  {rows:7.1} rows/call  {q}")
        })
        .collect())
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(mut pg) = self.pg.take() {
            pg.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Single-row commits per second of plain PostgreSQL: `count` INSERTs, each its own
/// transaction, from `connections` concurrent connections.
pub async fn plain_commit_rate(pool: &PgPool, count: u64, connections: u64) -> BenchResult<f64> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_plain (id bigserial PRIMARY KEY, payload text NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(err)?;
    let started = Instant::now();
    let per = count / connections;
    run_tasks(connections, |_| {
        let pool = pool.clone();
        async move {
            for _ in 0..per {
                sqlx::query("INSERT INTO bench_plain (payload) VALUES ('x')")
                    .execute(&pool)
                    .await
                    .map_err(err)?;
            }
            Ok(())
        }
    })
    .await?;
    Ok((per * connections) as f64 / started.elapsed().as_secs_f64())
}

/// CPU time used so far, in ms: the whole PostgreSQL cluster of `db` (the postmaster,
/// its live children, and the children it has reaped) and this process. Read from
/// `/proc` (Linux); a figure that cannot be read is 0. Per payout, it compares two runs
/// on a machine whose speed moves from run to run better than payouts/s does.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMs {
    pub postgres: f64,
    pub bench: f64,
}

/// CPU per item (a payout, a plain commit) in µs, PostgreSQL's and this process's.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUs {
    pub postgres: f64,
    pub bench: f64,
}

impl CpuMs {
    /// The CPU used between `since` and `self`, per item, in µs.
    pub fn us_each(self, since: CpuMs, items: u64) -> CpuUs {
        let each = |now: f64, then: f64| (now - then) * 1000.0 / items as f64;
        CpuUs {
            postgres: each(self.postgres, since.postgres),
            bench: each(self.bench, since.bench),
        }
    }
}

pub fn cpu_ms(db: &Database) -> CpuMs {
    let tick_ms = 1000.0 / clock_ticks_per_s();
    let mut postgres = 0u64;
    if let Some(pm) = db.pg.as_ref().and_then(LocalPostgres::postmaster_pid) {
        if let Some(f) = proc_stat(format!("/proc/{pm}/stat")) {
            // utime, stime, cutime, cstime: the postmaster and the children it reaped.
            postgres += f[11] + f[12] + f[13] + f[14];
        }
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Some(f) = proc_stat(entry.path().join("stat"))
                && f[1] == u64::from(pm)
            {
                postgres += f[11] + f[12];
            }
        }
    }
    let bench = proc_stat("/proc/self/stat").map_or(0, |f| f[11] + f[12]);
    CpuMs {
        postgres: postgres as f64 * tick_ms,
        bench: bench as f64 * tick_ms,
    }
}

/// The numeric fields of a `/proc/<pid>/stat` after the command name: [0] is the state's
/// slot (0), [1] the parent pid, [11] utime, [12] stime, [13] cutime, [14] cstime.
fn proc_stat(path: impl AsRef<std::path::Path>) -> Option<Vec<u64>> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// The command name is in parentheses and may hold spaces and parentheses: the fields
/// start after the last `)`.
fn parse_stat(s: &str) -> Option<Vec<u64>> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.len() > 14).then_some(f)
}

/// The unit of `/proc`'s CPU times (asked of `getconf` once; 100 where it cannot answer).
fn clock_ticks_per_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Commits and rows written so far in the database (for per-payout figures).
#[derive(Debug, Clone, Copy, Default)]
pub struct DbCounters {
    pub commits: i64,
    pub rows: i64,
    /// WAL written by the whole cluster, in bytes, and the full-page images in it.
    pub wal_bytes: i64,
    pub wal_fpi: i64,
    /// Updates of `payouts` rows, and how many of them were HOT (no new index entries).
    pub payout_updates: i64,
    pub payout_hot_updates: i64,
}

pub async fn counters(pool: &PgPool) -> BenchResult<DbCounters> {
    // Statistics reach the shared counters when backends flush them (at most every second
    // when busy): give them the time.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .map_err(err)?;
    let rows: Option<i64> = sqlx::query_scalar(
        "SELECT (sum(n_tup_ins) + sum(n_tup_upd) + sum(n_tup_del))::bigint FROM pg_stat_user_tables
         WHERE relname <> 'bench_plain'",
    )
    .fetch_one(pool)
    .await
    .map_err(err)?;
    let (wal_bytes, wal_fpi): (i64, i64) =
        sqlx::query_as("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal")
            .fetch_one(pool)
            .await
            .map_err(err)?;
    let (payout_updates, payout_hot_updates): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'payouts'",
    )
    .fetch_one(pool)
    .await
    .map_err(err)?;
    Ok(DbCounters {
        commits,
        rows: rows.unwrap_or(0),
        wal_bytes,
        wal_fpi,
        payout_updates,
        payout_hot_updates,
    })
}

/// p50, p99 and max of accept → confirmed, in milliseconds, by the journal's own times.
pub async fn latencies(pool: &PgPool) -> BenchResult<(f64, f64, f64)> {
    let row: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::float8,
                max(ms)::float8
         FROM (SELECT extract(epoch FROM updated_at - created_at) * 1000 AS ms
               FROM payouts WHERE state = 'confirmed') t",
    )
    .fetch_one(pool)
    .await
    .map_err(err)?;
    Ok((
        row.0.unwrap_or(0.0),
        row.1.unwrap_or(0.0),
        row.2.unwrap_or(0.0),
    ))
}

/// Resident set size of this process in KiB (Linux `VmRSS`), if known.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The destination every benchmark pays (it exists on the simulators the benches start).
pub const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";

pub fn request(id: &str) -> PayoutRequest {
    // Constants that are valid by construction.
    PayoutRequest::new(
        PayoutId::parse(id).expect("bench ids are valid"),
        Destination::parse(DEST).expect("constant destination is valid"),
        Asset::Native,
        Amount::from_stroops(10_000_000).expect("positive"),
        None,
    )
}

/// `n` channel accounts of the in-memory ledger.
pub fn channels(n: u32) -> Vec<AccountId> {
    (0..n)
        .map(|i| {
            let mut key = [7u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            AccountId::from_bytes(key)
        })
        .collect()
}

/// One line of the report: what, the figure, the bound it is held to, and the verdict.
pub struct Row {
    pub what: String,
    pub figure: String,
    pub bound: String,
    pub verdict: Option<bool>,
}

impl Row {
    pub fn new(what: impl Into<String>, figure: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            figure: figure.into(),
            bound: String::new(),
            verdict: None,
        }
    }

    pub fn bound(mut self, bound: impl Into<String>, met: bool) -> Self {
        self.bound = bound.into();
        self.verdict = Some(met);
        self
    }
}

pub fn print_table(title: &str, rows: &[Row]) {
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0).max(8);
    let w1 = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let w2 = rows.iter().map(|r| r.bound.len()).max().unwrap_or(0).max(5);
    println!("\n{title}");
    println!(
        "  {:<w0$}  {:>w1$}  {:<w2$}  verdict",
        "measure", "figure", "bound"
    );
    for r in rows {
        let verdict = match r.verdict {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!(
            "  {:<w0$}  {:>w1$}  {:<w2$}  {verdict}",
            r.what, r.figure, r.bound
        );
    }
}

/// Thousands separators for a figure.
pub fn n(v: f64) -> String {
    let whole = v.round() as i64;
    let s = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 { format!("-{out}") } else { out }
}

/// The service built from its built-in defaults under `env` (`PAYOUTD__…` keys), with the
/// inbox off and quiet logs, as every whole-application bench runs it.
pub async fn build_app(env: Vec<(&str, String)>) -> BenchResult<payoutd::app::Application> {
    let env: Vec<(String, String)> = env
        .into_iter()
        .chain([
            ("PAYOUTD__INBOX__ENABLED", "false".into()),
            ("PAYOUTD__TELEMETRY__LOG_LEVEL", "warn".into()),
        ])
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let settings = payoutd::config::Settings::load(None, env).map_err(err)?;
    payoutd::app::Application::build(settings)
        .await
        .map_err(err)
}

/// Runs `task(0..tasks)` concurrently, each on its own tokio task, and waits for all; the
/// first error is returned.
pub async fn run_tasks<F, Fut>(tasks: u64, task: F) -> BenchResult<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = BenchResult<()>> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks).map(|t| tokio::spawn(task(t))).collect();
    for h in handles {
        h.await.map_err(err)??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (postgres: a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 31 7 2 20 0 1 0 5 1000 10";
        let f = parse_stat(line).unwrap();
        assert_eq!(f[1], 17, "parent pid");
        assert_eq!((f[11], f[12], f[13], f[14]), (250, 31, 7, 2));
        assert!(parse_stat("12 (short) S 1").is_none());
    }

    #[test]
    fn this_process_has_a_parent_and_cpu_time() {
        let f = proc_stat("/proc/self/stat").expect("/proc/self/stat (Linux)");
        assert!(f[1] > 0);
    }
}
