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
    let mut db = String::new();
    for table in [
        "payouts",
        "payout_events",
        "envelopes",
        "channel_accounts",
        "outbox",
        "dead_letters",
        "payout_inbox",
        "instances",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        db.push_str(&rows.join("\n"));
    }
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
