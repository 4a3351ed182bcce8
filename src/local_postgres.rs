//! A private PostgreSQL cluster for the out-of-the-box run and the tests: `initdb` and
//! `pg_ctl` into a data folder of its own, on a free loopback port, stopped on drop.
//!
//! PostgreSQL refuses to run as root; when we are root the server runs as the `postgres`
//! system user (created by Debian's `postgresql` package) through `runuser`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to get the server binaries when they are missing.
pub const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. \
Install them, e.g. `sudo apt-get install -y postgresql` (Debian/Ubuntu) or `brew install postgresql` (macOS), \
or point payoutd at an existing server with PAYOUTD__DATABASE__URL=postgres://user:pass@host/db";

/// Database created inside the private cluster.
pub const DATABASE: &str = "payoutd";
/// Superuser created by initdb (trust auth, loopback only).
pub const SUPERUSER: &str = "payoutd";

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{INSTALL_HINT}")]
    NotInstalled,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`.
pub fn find_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var("PAYOUTD_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    // Debian keeps the server binaries off PATH, one folder per major version: newest first.
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                Some((
                    e.file_name().to_str()?.parse::<u32>().ok()?,
                    e.path().join("bin"),
                ))
            })
            .filter(|(_, bin)| has_tools(bin))
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Some(bin);
        }
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).find(|p| has_tools(p)))
}

fn is_root() -> bool {
    // `id -u` avoids unsafe code for geteuid.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A running private cluster.
pub struct LocalPostgres {
    bindir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    /// Stop the server on drop (false when we attached to one another process started).
    owned: bool,
}

impl LocalPostgres {
    /// Starts (initialising if needed) the cluster in `data_dir`, or attaches to the one
    /// already running there. `fsync` off is for throwaway test clusters only.
    pub fn start(data_dir: &Path, fsync: bool) -> Result<Self, PgError> {
        Self::start_with(data_dir, fsync, "")
    }

    /// As `start`, with more server options (`-c name=value …`; the benchmarks load
    /// `pg_stat_statements` this way to show where the database spends its time).
    pub fn start_with(data_dir: &Path, fsync: bool, options: &str) -> Result<Self, PgError> {
        let bindir = find_bindir().ok_or(PgError::NotInstalled)?;
        let as_postgres_user = is_root();
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let data_dir = data_dir.canonicalize().map_err(io(data_dir))?;
        let mut pg = Self {
            bindir,
            data_dir,
            port: 0,
            as_postgres_user,
            owned: true,
        };
        // Already running (left by a payoutd that was killed, or the shared test cluster
        // another test process started): attach. The folder is ours, so is the server
        // (stopped on drop unless `detach`ed). No chown then: the server owns its files
        // and creates and removes some while it runs.
        if pg.data_dir.join("postmaster.pid").exists()
            && let Some(port) = pg.running_port()
        {
            pg.port = port;
            return Ok(pg);
        }
        if as_postgres_user {
            pg.chown_to_postgres(&pg.data_dir.clone())?;
            pg.check_reachable()?;
        }
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        if let Some(port) = pg.running_port() {
            pg.port = port;
            return Ok(pg);
        }
        pg.port = free_port().map_err(io(&pg.data_dir))?;
        let log = pg.data_dir.join("server.log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync={} -c max_connections=200 {options}",
            pg.port,
            pg.data_dir.display(),
            if fsync { "on" } else { "off" }
        );
        let data = pg.data_dir.display().to_string();
        let logs = log.display().to_string();
        pg.run(
            "pg_ctl start",
            "pg_ctl",
            &[
                "-D", &data, "-l", &logs, "-o", &opts, "-w", "-t", "60", "start",
            ],
        )?;
        pg.createdb()?;
        Ok(pg)
    }

    /// Leaves the server running after this value is dropped (shared test clusters).
    pub fn detach(mut self) -> u16 {
        self.owned = false;
        self.port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of a database in this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: running transactions are rolled back, committed
    /// data is durable).
    pub fn stop(&mut self) {
        if self.owned {
            let data = self.data_dir.display().to_string();
            let _ = self.run(
                "pg_ctl stop",
                "pg_ctl",
                &["-D", &data, "-m", "fast", "-w", "stop"],
            );
            self.owned = false;
        }
    }

    /// Stops the server (fast shutdown) and starts it again on the same port and data
    /// folder, with the options it was first started with (`pg_ctl restart` reads them back
    /// from `postmaster.opts`). Clients lose their connections; committed data stays. The
    /// crash harness uses it to check that payoutd rides through a database restart.
    pub fn restart(&mut self) -> Result<(), PgError> {
        let data = self.data_dir.display().to_string();
        let logs = self.data_dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl restart",
            "pg_ctl",
            &[
                "-D", &data, "-l", &logs, "-m", "fast", "-w", "-t", "60", "restart",
            ],
        )?;
        Ok(())
    }

    fn chown_to_postgres(&self, path: &Path) -> Result<(), PgError> {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .stderr(Stdio::piped())
            .output();
        match status {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(PgError::Command {
                what: "chown to the postgres user".into(),
                detail: format!(
                    "{} (running as root, the server must run as the `postgres` user that the postgresql package creates)",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            }),
            Err(e) => Err(PgError::Command {
                what: "chown".into(),
                detail: e.to_string(),
            }),
        }
    }

    /// Every parent folder must be traversable by the `postgres` user.
    fn check_reachable(&self) -> Result<(), PgError> {
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&self.data_dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(PgError::Command {
                what: "preparing the private PostgreSQL data folder".into(),
                detail: format!(
                    "running as root, the server runs as the `postgres` user, which cannot reach {}; \
                     choose a folder it can reach with PAYOUTD__DATABASE__LOCAL_DATA_DIR (e.g. /var/lib/payoutd/postgres) \
                     or run payoutd as a normal user",
                    self.data_dir.display()
                ),
            })
        }
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bindir.join(tool);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, what: &str, tool: &str, args: &[&str]) -> Result<String, PgError> {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PgError::Command {
                what: what.into(),
                detail: e.to_string(),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if let Ok(log) = fs::read_to_string(self.data_dir.join("server.log")) {
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                detail.push_str(&format!(
                    " | server.log: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
            Err(PgError::Command {
                what: what.into(),
                detail,
            })
        }
    }

    fn initdb(&self) -> Result<(), PgError> {
        let data = self.data_dir.display().to_string();
        self.run(
            "initdb",
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )?;
        Ok(())
    }

    fn createdb(&self) -> Result<(), PgError> {
        let port = self.port.to_string();
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-tAc",
            ])
            .arg(format!(
                "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
            ))
            .output()
            .map_err(|e| PgError::Command {
                what: "psql".into(),
                detail: e.to_string(),
            })?;
        if String::from_utf8_lossy(&out.stdout).trim() != "1" {
            self.run(
                "createdb",
                "createdb",
                &["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, DATABASE],
            )?;
        }
        Ok(())
    }

    /// The port of a server already running on this data folder, if any.
    fn running_port(&self) -> Option<u16> {
        let data = self.data_dir.display().to_string();
        let status = self
            .command("pg_ctl")
            .args(["-D", &data, "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        // postmaster.pid: line 4 is the port.
        self.pid_file_line(3)?.parse().ok()
    }

    /// The process id of the server running on this data folder (line 1 of
    /// postmaster.pid), if it is running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.pid_file_line(0)?.parse().ok()
    }

    /// Line `n` (from 0) of the data folder's postmaster.pid, trimmed.
    fn pid_file_line(&self, n: usize) -> Option<String> {
        let pid = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        Some(pid.lines().nth(n)?.trim().to_string())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
