//! The API contract: schemathesis, run against a running payoutd (the binary, with its
//! built-in defaults, on a fresh database of the test cluster and with an API token), with
//! every phase and every check, must report no failure and no warning. `tests/contract/`
//! holds its settings (`schemathesis.toml`) and hooks (`hooks.py`); docs/api-contract.md
//! explains the run.
//!
//! The seed is fixed (`CONTRACT_SEED`), so the run is the same every time and in CI. To
//! explore, set `PAYOUTD_CONTRACT_SEED` to a number, or to `random` for a fresh one (the
//! seed used is printed, so a finding can be replayed).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::fresh_empty_db;

const CONTRACT_SEED: u64 = 14;
/// Cases per operation and phase: enough for every pattern and bound to be tried; the
/// whole run takes under a minute on two cores.
const MAX_EXAMPLES: u32 = 100;
const TOKEN: &str = "contract-test-token";
/// The admin token (`name:token`; the name goes into the audit trail).
const ADMIN: (&str, &str) = ("contract", "contract-admin-token-0001");

fn seed() -> u64 {
    match std::env::var("PAYOUTD_CONTRACT_SEED").as_deref() {
        Err(_) => CONTRACT_SEED,
        Ok("random") => u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        ),
        Ok(n) => n
            .parse()
            .expect("PAYOUTD_CONTRACT_SEED is a number or \"random\""),
    }
}

/// A folder removed when the test ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The payoutd binary, serving on a port of its own with a fresh database of the test
/// cluster, an API token and otherwise its built-in defaults (and `extra` settings).
struct Service {
    base: String,
    child: tokio::process::Child,
    log: tokio::task::JoinHandle<String>,
    dir: TempDir,
}

impl Service {
    async fn start(name: &str, extra: &[(&str, &str)]) -> Self {
        let (_pool, db_url) = fresh_empty_db().await;
        let dir = TempDir::new(name);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_payoutd"))
            .arg("serve")
            .current_dir(&dir.0)
            .env("PAYOUTD__DATABASE__URL", &db_url)
            .env("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("PAYOUTD__SERVER__API_TOKENS", TOKEN)
            .env(
                "PAYOUTD__SERVER__ADMIN_TOKENS",
                format!("{}:{}", ADMIN.0, ADMIN.1),
            )
            .env(
                "PAYOUTD__LEDGER__SIMULATOR__STATE_FILE",
                dir.0.join("simulator.json"),
            )
            .env("PAYOUTD__TELEMETRY__LOG_FORMAT", "json")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start payoutd");
        // Keep the end of its log (for a failure report) without letting the pipe fill up.
        let stderr = child.stderr.take().unwrap();
        let log = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tail = std::collections::VecDeque::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if tail.len() == 200 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail.into_iter().collect::<Vec<_>>().join("\n")
        });
        let mut service = Self {
            base,
            child,
            log,
            dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!(
                    "payoutd exited ({status}) before it was ready:\n{}",
                    service.stop().await
                );
            }
            let ready = client.get(format!("{}/readyz", service.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return service;
            }
            assert!(Instant::now() < deadline, "payoutd not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it; the end of its log.
    async fn stop(&mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        (&mut self.log).await.unwrap_or_default()
    }
}

#[tokio::test]
async fn openapi_contract_holds() {
    let schemathesis = tool(
        "PAYOUTD_SCHEMATHESIS",
        "schemathesis",
        "--version",
        "python3 -m pip install 'schemathesis>=4.32,<4.33'",
    );
    let mut service = Service::start("payoutd-contract", &[]).await;
    let base = service.base.clone();

    let seed = seed();
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    eprintln!("contract: schemathesis seed {seed} (PAYOUTD_CONTRACT_SEED={seed} replays it)");
    let started = Instant::now();
    let out = Command::new(&schemathesis)
        // In the test's folder: schemathesis keeps a cache of past findings in its working
        // directory, and a run must not depend on earlier ones.
        .current_dir(&service.dir.0)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &contract)
        .env("NO_COLOR", "1")
        .env("PAYOUTD_CONTRACT_TOKEN", TOKEN)
        .env("PAYOUTD_CONTRACT_ADMIN_TOKEN", ADMIN.1)
        .arg("--config-file")
        .arg(contract.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{base}{}", payoutd::openapi::PATH))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", &seed.to_string()])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--generation-database", "none"])
        // One worker: Python's `ast` is not thread-safe, and hypothesis parses lambdas
        // with it while it builds strategies (a second worker fails the run at random).
        .args(["--workers", "1", "--request-timeout", "10", "--no-color"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("contract: schemathesis ran {:.0?}", elapsed);
    let log = service.stop().await;
    if !out.status.success() {
        panic!(
            "schemathesis found contract violations (seed {seed}; exit {}):\n{stdout}\n{stderr}\n\
             --- payoutd log (last lines) ---\n{}",
            out.status, log
        );
    }
    // A run that tested nothing, or not every operation, is not a pass. Schemathesis leaves
    // out the operation that served it the document (GET /v1/openapi.json); it tests the
    // same handler at /openapi.json.
    let operations = payoutd::http::operations().len() - 1;
    assert!(
        stdout.contains(&format!("Selected: {operations}/{operations}\n"))
            && stdout.contains(&format!("Tested: {operations}\n")),
        "schemathesis did not test all {operations} operations:\n{stdout}\n{stderr}"
    );
}

/// A command of the test tools: the variable `var` if set, else `default` on the PATH; it
/// must answer `version_arg`, or the test fails saying how to install it.
fn tool(var: &str, default: &str, version_arg: &str, install: &str) -> String {
    let bin = std::env::var(var).unwrap_or_else(|_| default.into());
    let found = std::process::Command::new(&bin)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{bin} is not installed ({bin} {version_arg} failed). The test command (scripts/test) \
         installs it; by hand: {install}"
    );
    bin
}

/// A client generated from the served document by openapi-generator (Python, as platform
/// teams generate theirs) compiles, and creates, re-sends (duplicate), conflicts, gets,
/// lists and cancels a payout against the running service (`tests/contract/client.py`).
#[tokio::test]
async fn generated_client_works() {
    let python = std::env::var("PAYOUTD_PYTHON").unwrap_or_else(|_| "python3".into());
    let generator = tool(
        "PAYOUTD_OPENAPI_GENERATOR",
        "openapi-generator-cli",
        "version",
        "python3 -m pip install openapi-generator-cli (it needs Java: apt-get install -y default-jre-headless)",
    );
    let deps = std::process::Command::new(&python)
        .args([
            "-c",
            "import pydantic, dateutil, urllib3, typing_extensions",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        deps,
        "the generated client needs pydantic 2, python-dateutil, urllib3 and typing-extensions; \
         scripts/test installs them, by hand: {python} -m pip install pydantic python-dateutil urllib3 typing-extensions"
    );
    // Batches wait long enough for the new payout to be still cancellable.
    let mut service = Service::start(
        "payoutd-client",
        &[("PAYOUTD__PAYOUTS__BATCH_LINGER_MS", "600000")],
    )
    .await;
    let dir = service.dir.0.clone();
    let document = reqwest::get(format!("{}{}", service.base, payoutd::openapi::PATH))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.join("openapi.json"), document).unwrap();

    let run = |mut cmd: Command, what: &'static str| async move {
        let out = cmd.kill_on_drop(true).output().await.expect(what);
        (
            out.status.success(),
            format!(
                "{what}: {}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let mut generate = Command::new(&generator);
    generate
        .arg("generate")
        .arg("-i")
        .arg(dir.join("openapi.json"))
        .args(["-g", "python", "--package-name", "payoutd_client"])
        .arg("-o")
        .arg(dir.join("client"));
    let (ok, report) = run(generate, "openapi-generator generate").await;
    assert!(ok, "{report}");
    let mut compile = Command::new(&python);
    compile
        .args(["-m", "compileall", "-q"])
        .arg(dir.join("client/payoutd_client"));
    let (ok, report) = run(compile, "compile the generated client").await;
    assert!(ok, "{report}");
    let mut drive = Command::new(&python);
    drive
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/client.py"))
        .args([&service.base, TOKEN])
        .env("PYTHONPATH", dir.join("client"));
    let (ok, report) = run(drive, "drive payoutd through the generated client").await;
    let log = service.stop().await;
    assert!(ok, "{report}\n--- payoutd log (last lines) ---\n{log}");
}
