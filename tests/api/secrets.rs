//! Secrets (signing seeds, API tokens, the database password) never appear in logs, error
//! bodies or the database. The real binary runs as a child process at debug log level in
//! Horizon mode, with its seeds and tokens in its environment, against the simulator.

use std::process::Stdio;
use std::time::Duration;

use payoutd_simulator::{CloseMode, SimConfig, Simulator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::helpers::fresh_db_with_url;

const PASSPHRASE: &str = "Test SDF Network ; September 2015";
const TOKEN: &str = "tok-secret-7f3a9c1e5b";

fn seed(label: &str) -> String {
    let raw: [u8; 32] = Sha256::digest(format!("secrets test {label}").as_bytes()).into();
    payoutd_actors::strkey::encode(payoutd_actors::strkey::VERSION_SEED, &raw)
}

fn account(seed: &str) -> String {
    payoutd_stellar::Keypair::from_seed(seed)
        .unwrap()
        .account()
        .to_strkey()
}

#[tokio::test]
async fn seeds_and_tokens_never_leak_into_logs_errors_or_the_database() {
    let sim = Simulator::new(SimConfig {
        network_passphrase: PASSPHRASE.into(),
        close_mode: CloseMode::Interval {
            close_interval_ms: 50,
        },
        ..SimConfig::default()
    })
    .unwrap();
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let dist_seed = seed("distribution");
    let chan_seeds = [seed("channel 0"), seed("channel 1")];
    sim.create_account(&account(&dist_seed), 1_000_000 * 10_000_000)
        .unwrap();
    for c in &chan_seeds {
        sim.create_account(&account(c), 100 * 10_000_000).unwrap();
    }
    let dest = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
    sim.create_account(dest, 10 * 10_000_000).unwrap();
    let (pool, db_url) = fresh_db_with_url().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"))
        .arg("serve")
        .env("RUST_LOG", "debug")
        .env("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYOUTD__DATABASE__URL", &db_url)
        .env("PAYOUTD__LEDGER__MODE", "horizon")
        .env("PAYOUTD__LEDGER__HORIZON_URL", &handle.base_url)
        .env("PAYOUTD__LEDGER__NETWORK_PASSPHRASE", PASSPHRASE)
        .env("PAYOUTD__LEDGER__DISTRIBUTION_SEED", &dist_seed)
        .env("PAYOUTD__LEDGER__CHANNEL_SEEDS", chan_seeds.join(","))
        .env("PAYOUTD__SERVER__API_TOKENS", TOKEN)
        .env("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..500 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "payoutd did not start");
    let mut bodies = Vec::new();
    // A good payout, which gets signed and confirmed.
    let r = client
        .post(format!("{base}/v1/payouts"))
        .bearer_auth(TOKEN)
        .json(&json!({"payout_id": "s-1", "destination": dest, "asset": "native", "amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    bodies.push(r.text().await.unwrap());
    // A seed pasted as destination, an unknown field holding a seed, a wrong token.
    for body in [
        json!({"payout_id": "s-2", "destination": dist_seed, "asset": "native", "amount": "1"}),
        json!({"payout_id": "s-3", "destination": dest, "asset": "native", "amount": "1", dist_seed.clone(): 1}),
    ] {
        let r = client
            .post(format!("{base}/v1/payouts"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error());
        bodies.push(r.text().await.unwrap());
    }
    let r = client
        .post(format!("{base}/v1/payouts"))
        .bearer_auth(format!("{TOKEN}x"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    bodies.push(r.text().await.unwrap());
    // Wait for the confirmation (signing happened).
    let mut confirmed = false;
    for _ in 0..500 {
        let v: Value = client
            .get(format!("{base}/v1/payouts/s-1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "confirmed" {
            bodies.push(v.to_string());
            confirmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(confirmed);
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("envelope applied"),
        "debug logs were captured: {}",
        &logs[..logs.len().min(2_000)]
    );

    // The whole database as text.
    let db = database_as_text(
        &pool,
        &["outbox", "dead_letters", "payout_inbox", "instances"],
    )
    .await;
    assert!(db.contains(&account(&dist_seed)) || db.contains("s-1"));
    let secrets: Vec<&str> = [
        dist_seed.as_str(),
        chan_seeds[0].as_str(),
        chan_seeds[1].as_str(),
        TOKEN,
    ]
    .to_vec();
    for secret in secrets {
        // Any 20-character window of a secret counts as a leak.
        let probe = &secret[..20];
        assert!(!logs.contains(probe), "secret fragment in logs");
        assert!(!db.contains(probe), "secret fragment in the database");
        for b in &bodies {
            assert!(!b.contains(probe), "secret fragment in an HTTP body: {b}");
        }
    }
}

// Credentials in URLs: a provider's key in the Horizon URL (userinfo, path, query), a
// password in the database URL, a user and password in the NATS URL. None may appear in
// logs (debug level), in error output, in HTTP bodies or in the database.
const HZ_USER_PASS: &str = "hz-pass-9f2c71";
const HZ_PATH_KEY: &str = "hz-key-31d7a8";
const HZ_QUERY_KEY: &str = "hz-query-5e1b04";
const DB_PASS: &str = "db-pass-4c8a66";
const NATS_PASS: &str = "nats-pass-77be13";

/// A provider in front of the simulator: serves it under `/{HZ_PATH_KEY}/…`, the way
/// Horizon providers put a key in the path (credentials in the userinfo and the query are
/// ignored here, as a provider checks them).
async fn provider(target: String) -> String {
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    let forward = |State(target): State<String>, req: Request| async move {
        let (parts, body) = req.into_parts();
        let prefix = format!("/{HZ_PATH_KEY}");
        let Some(path) = parts.uri.path().strip_prefix(&prefix) else {
            return (axum::http::StatusCode::FORBIDDEN, "no key").into_response();
        };
        let path = if path.is_empty() { "/" } else { path };
        let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let mut upstream = reqwest::Client::new()
            .request(parts.method.clone(), format!("{target}{path}"))
            .body(body);
        if let Some(ct) = parts.headers.get("content-type") {
            upstream = upstream.header("content-type", ct.clone());
        }
        let answer = upstream.send().await.unwrap();
        let mut out = Response::builder().status(answer.status());
        for (k, v) in answer.headers() {
            out = out.header(k, v);
        }
        out.body(axum::body::Body::from(answer.bytes().await.unwrap()))
            .unwrap()
    };
    let app = axum::Router::new().fallback(forward).with_state(target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://apiuser:{HZ_USER_PASS}@{addr}/{HZ_PATH_KEY}/?apikey={HZ_QUERY_KEY}")
}

fn with_password(url: &str, password: &str) -> String {
    // postgres://payoutd@host:port/db → postgres://payoutd:<password>@host:port/db (the
    // test cluster trusts local connections, so the password is accepted and unused).
    url.replacen("@", &format!(":{password}@"), 1)
}

fn assert_clean(what: &str, text: &str) {
    for secret in [HZ_USER_PASS, HZ_PATH_KEY, HZ_QUERY_KEY, DB_PASS, NATS_PASS] {
        assert!(
            !text.contains(secret),
            "{secret} appears in {what}:\n{text}"
        );
    }
}

async fn run_to_exit(envs: &[(&str, String)]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"))
        .arg("serve")
        .env("RUST_LOG", "debug")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "payoutd should refuse to start");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn credentials_in_urls_never_show() {
    let sim = Simulator::new(SimConfig {
        network_passphrase: PASSPHRASE.into(),
        close_mode: CloseMode::Interval {
            close_interval_ms: 50,
        },
        ..SimConfig::default()
    })
    .unwrap();
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let dist_seed = seed("url distribution");
    let chan_seed = seed("url channel");
    sim.create_account(&account(&dist_seed), 1_000_000 * 10_000_000)
        .unwrap();
    sim.create_account(&account(&chan_seed), 100 * 10_000_000)
        .unwrap();
    let dest = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
    sim.create_account(dest, 10 * 10_000_000).unwrap();
    let horizon = provider(handle.base_url.clone()).await;
    let (pool, db_url) = fresh_db_with_url().await;
    let nats = crate::nats::NatsServer::start().await;
    let nats_url = nats
        .url
        .replacen("nats://", &format!("nats://payoutd:{NATS_PASS}@"), 1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base_env = |horizon: &str, db: &str| -> Vec<(&'static str, String)> {
        vec![
            ("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("PAYOUTD__DATABASE__URL", db.to_owned()),
            ("PAYOUTD__DATABASE__CONNECT_TIMEOUT_MS", "1000".into()),
            ("PAYOUTD__LEDGER__MODE", "horizon".into()),
            ("PAYOUTD__LEDGER__HORIZON_URL", horizon.to_owned()),
            ("PAYOUTD__LEDGER__NETWORK_PASSPHRASE", PASSPHRASE.into()),
            ("PAYOUTD__LEDGER__REQUEST_TIMEOUT_MS", "2000".into()),
            ("PAYOUTD__LEDGER__CONNECT_TIMEOUT_MS", "500".into()),
            ("PAYOUTD__LEDGER__DISTRIBUTION_SEED", dist_seed.clone()),
            ("PAYOUTD__LEDGER__CHANNEL_SEEDS", chan_seed.clone()),
            ("PAYOUTD__NATS__ENABLED", "true".into()),
            ("PAYOUTD__NATS__URL", nats_url.clone()),
            ("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "20".into()),
        ]
    };
    // Errors at start: an unreachable Horizon behind credentials, an unreachable database
    // with a password.
    let closed = with_password(&horizon, "x").replace(&handle.base_url[7..], "127.0.0.1:1");
    let unreachable_horizon = horizon.replacen(
        horizon
            .split('@')
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap(),
        "127.0.0.1:1",
        1,
    );
    let _ = closed;
    let out = run_to_exit(&base_env(
        &unreachable_horizon,
        &with_password(&db_url, DB_PASS),
    ))
    .await;
    assert!(
        out.contains("127.0.0.1:1"),
        "the error names the server: {out}"
    );
    assert_clean("the output of a start against an unreachable Horizon", &out);
    let dead_db = with_password(&db_url, DB_PASS).replacen(
        db_url.split('@').nth(1).unwrap().split('/').next().unwrap(),
        "127.0.0.1:1",
        1,
    );
    let out = run_to_exit(&base_env(&horizon, &dead_db)).await;
    assert!(out.to_lowercase().contains("database"), "{out}");
    assert_clean(
        "the output of a start against an unreachable database",
        &out,
    );

    // Running: a payout paid through the provider, events published over NATS.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"))
        .arg("serve")
        .env("RUST_LOG", "debug")
        .envs(base_env(&horizon, &with_password(&db_url, DB_PASS)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..500 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "payoutd did not start");
    let r = client
        .post(format!("{base}/v1/payouts"))
        .json(&json!({"payout_id": "url-1", "destination": dest, "asset": "native", "amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut bodies = vec![r.text().await.unwrap()];
    let mut confirmed = false;
    for _ in 0..500 {
        let v: Value = client
            .get(format!("{base}/v1/payouts/url-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "confirmed" {
            bodies.push(v.to_string());
            confirmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(confirmed, "paid through the provider");
    for path in ["/readyz", "/metrics"] {
        bodies.push(
            client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("connected to Horizon"),
        "logs captured: {}",
        &logs[..logs.len().min(500)]
    );
    assert_clean("the logs", &logs);
    for b in &bodies {
        assert_clean("an HTTP body", b);
    }
    let db = database_as_text(&pool, &["outbox", "dead_letters", "instances"]).await;
    assert_clean("the database", &db);
    drop(nats);
}

/// `ledger.mode = "rpc"`: the real binary pays over Stellar RPC through a provider whose
/// key is in the RPC URL (userinfo, path and query), with seeds and a token in its
/// environment. None of them shows in a failed start, the logs (debug level), HTTP bodies
/// or the database.
#[tokio::test]
async fn rpc_mode_pays_through_a_keyed_provider_url_and_never_shows_a_secret() {
    let sim = Simulator::new(SimConfig {
        network_passphrase: PASSPHRASE.into(),
        close_mode: CloseMode::Interval {
            close_interval_ms: 50,
        },
        ..SimConfig::default()
    })
    .unwrap();
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let dist_seed = seed("rpc distribution");
    let chan_seed = seed("rpc channel");
    sim.create_account(&account(&dist_seed), 1_000_000 * 10_000_000)
        .unwrap();
    sim.create_account(&account(&chan_seed), 100 * 10_000_000)
        .unwrap();
    let dest = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
    sim.create_account(dest, 10 * 10_000_000).unwrap();
    // The provider forwards /{key}/rpc to the simulator's JSON-RPC endpoint.
    let rpc_url = provider(handle.base_url.clone())
        .await
        .replacen("/?apikey=", "/rpc?apikey=", 1);
    let (pool, db_url) = fresh_db_with_url().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base_env = |rpc: &str| -> Vec<(&'static str, String)> {
        vec![
            ("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("PAYOUTD__SERVER__API_TOKENS", TOKEN.into()),
            ("PAYOUTD__DATABASE__URL", with_password(&db_url, DB_PASS)),
            ("PAYOUTD__LEDGER__MODE", "rpc".into()),
            ("PAYOUTD__LEDGER__RPC_URL", rpc.to_owned()),
            ("PAYOUTD__LEDGER__NETWORK_PASSPHRASE", PASSPHRASE.into()),
            ("PAYOUTD__LEDGER__RPC_TIMEOUT_MS", "2000".into()),
            ("PAYOUTD__LEDGER__RPC_CONNECT_TIMEOUT_MS", "500".into()),
            ("PAYOUTD__LEDGER__DISTRIBUTION_SEED", dist_seed.clone()),
            ("PAYOUTD__LEDGER__CHANNEL_SEEDS", chan_seed.clone()),
            ("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "20".into()),
        ]
    };
    let secrets = [
        HZ_USER_PASS,
        HZ_PATH_KEY,
        HZ_QUERY_KEY,
        DB_PASS,
        TOKEN,
        dist_seed.as_str(),
        chan_seed.as_str(),
    ];
    let check = |what: &str, text: &str| {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "a secret appears in {what}:\n{text}"
            );
        }
    };
    // A start against an unreachable RPC behind the same credentials.
    let host = rpc_url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let out = run_to_exit(&base_env(&rpc_url.replacen(host, "127.0.0.1:1", 1))).await;
    assert!(
        out.contains("127.0.0.1:1"),
        "the error names the server: {out}"
    );
    check("the output of a start against an unreachable RPC", &out);
    // A start against the wrong network is refused, and says so without the key.
    let mut wrong = base_env(&rpc_url);
    wrong.retain(|(k, _)| *k != "PAYOUTD__LEDGER__NETWORK_PASSPHRASE");
    wrong.push((
        "PAYOUTD__LEDGER__NETWORK_PASSPHRASE",
        "Public Global Stellar Network ; September 2015".into(),
    ));
    let out = run_to_exit(&wrong).await;
    assert!(out.contains("Public Global Stellar Network"), "{out}");
    check("the output of a start against another network", &out);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"))
        .arg("serve")
        .env("RUST_LOG", "debug")
        .envs(base_env(&rpc_url))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..500 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "payoutd did not start");
    let r = client
        .post(format!("{base}/v1/payouts"))
        .bearer_auth(TOKEN)
        .json(&json!({"payout_id": "rpc-url-1", "destination": dest, "asset": "native", "amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut bodies = vec![r.text().await.unwrap()];
    let mut confirmed = false;
    for _ in 0..500 {
        let v: Value = client
            .get(format!("{base}/v1/payouts/rpc-url-1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "confirmed" {
            bodies.push(v.to_string());
            confirmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(confirmed, "paid over RPC through the provider");
    for path in ["/readyz", "/metrics"] {
        bodies.push(
            client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("connected to Stellar RPC"),
        "logs captured: {}",
        &logs[..logs.len().min(500)]
    );
    check("the logs", &logs);
    for b in &bodies {
        check("an HTTP body", b);
    }
    let db = database_as_text(&pool, &[]).await;
    check("the database", &db);
}

/// The journal's tables, which every secrets test reads: a table added to the journal is
/// added here once.
const JOURNAL_TABLES: [&str; 5] = [
    "payouts",
    "payout_events",
    "envelope_events",
    "envelopes",
    "channel_accounts",
];

/// Every row of the journal's tables and of `more` as text, one after the other: what a
/// leaked secret would be found in.
async fn database_as_text(pool: &sqlx::PgPool, more: &[&str]) -> String {
    let mut db = String::new();
    for table in JOURNAL_TABLES.iter().chain(more) {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        db.push_str(&rows.join("\n"));
    }
    db
}
