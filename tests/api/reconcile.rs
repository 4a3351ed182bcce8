//! `payoutd reconcile` end to end: payouts paid by the real core (Postgres journal, the
//! Stellar adapter over HTTP to the simulator, whose ledger the tests close by hand), then
//! the command itself run as a child process against the same database and simulator. A
//! clean range reports nothing; each planted discrepancy is found and named; every run is
//! stored in `reconcile_runs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use payoutd::reconcile::{Accounts, Reconciler};
use payoutd_actors::Payouts;
use payoutd_actors::domain::{
    AccountId, Amount, Asset, Destination, Memo, PayoutId, PayoutRequest,
};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Ledger, OpSpec, PayoutStore, SubmitOutcome, TxSpec};
use payoutd_actors::state::{PayoutRecord, PayoutState};
use payoutd_simulator::{CloseMode, Faults, SimConfig, SimHandle, Simulator};
use payoutd_stellar::{HorizonTimeouts, Keypair, Keyring, StellarLedger};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::helpers::{pg_journal, start_core};

const PASSPHRASE: &str = "Test SDF Network ; September 2015";
const XLM: i64 = 10_000_000;
const GENESIS_CLOSE_TIME: u64 = 1_700_000_000;

fn keypair(label: &str) -> Keypair {
    let seed: [u8; 32] =
        Sha256::digest(format!("payoutd reconcile test key {label}").as_bytes()).into();
    Keypair::from_seed(&payoutd_actors::strkey::encode(
        payoutd_actors::strkey::VERSION_SEED,
        &seed,
    ))
    .unwrap()
}

fn timeouts() -> HorizonTimeouts {
    HorizonTimeouts {
        request_timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
    }
}

struct Rig {
    sim: SimHandle,
    journal: Arc<payoutd::storage::PgJournal>,
    db_url: String,
    payouts: Payouts,
    metrics: Arc<Metrics>,
    distribution: AccountId,
    channels: Vec<AccountId>,
    destination: AccountId,
    other: AccountId,
    history_over_rpc: bool,
}

async fn rig() -> Rig {
    rig_over(false).await
}

/// `history_over_rpc`: `payoutd reconcile` reads the ledger over Stellar RPC
/// (`getTransactions`) instead of Horizon; payoutd pays over Horizon either way.
async fn rig_over(history_over_rpc: bool) -> Rig {
    let sim = Simulator::new(SimConfig {
        network_passphrase: PASSPHRASE.into(),
        close_mode: CloseMode::Manual,
        submit_wait_ms: 1_000,
        seed: 12,
        genesis_close_time: Some(GENESIS_CLOSE_TIME),
        close_time_step_s: 5,
        ..SimConfig::default()
    })
    .unwrap();
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let mut ring = Keyring::new();
    let dist = keypair("distribution");
    let distribution = dist.account();
    ring.insert(dist);
    let mut channels = Vec::new();
    for i in 0..2 {
        let c = keypair(&format!("channel {i}"));
        channels.push(c.account());
        ring.insert(c);
    }
    sim.create_account(&distribution.to_strkey(), 1_000_000 * XLM)
        .unwrap();
    for c in &channels {
        sim.create_account(&c.to_strkey(), 100 * XLM).unwrap();
    }
    let destination = keypair("destination").account();
    let other = keypair("someone else").account();
    for a in [destination, other] {
        sim.create_account(&a.to_strkey(), 10 * XLM).unwrap();
    }
    let ledger = StellarLedger::connect(&handle.base_url, PASSPHRASE, ring, timeouts())
        .await
        .unwrap();
    let journal = pg_journal().await;
    let db_url = database_url(journal.pool()).await;
    let mut policy = payoutd_actors::PayoutPolicy::new(distribution);
    policy.poll_interval_ms = 20;
    policy.io_retry_ms = 20;
    policy.batch_linger_ms = 5;
    let (payouts, metrics) = start_core(
        journal.clone(),
        Arc::new(ledger),
        "reconcile-test",
        channels.clone(),
        policy,
    )
    .await;
    Rig {
        sim: handle,
        journal,
        db_url,
        payouts,
        metrics,
        distribution,
        channels,
        destination,
        other,
        history_over_rpc,
    }
}

/// The URL of the pool's database, for the child process (the test cluster's superuser
/// has no password).
async fn database_url(pool: &sqlx::PgPool) -> String {
    let row = sqlx::query(
        "SELECT current_database() AS db, current_user AS usr, inet_server_port() AS port",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let db: String = row.get("db");
    let user: String = row.get("usr");
    let port: i32 = row.get("port");
    format!("postgres://{user}@127.0.0.1:{port}/{db}")
}

/// What one `payoutd reconcile` run printed and exited with.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn kinds(doc: &Value) -> Vec<String> {
    doc["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_owned())
        .collect()
}

impl Rig {
    fn sim(&self) -> &Arc<Simulator> {
        &self.sim.sim
    }

    fn request(&self, id: &str, amount: &str) -> PayoutRequest {
        PayoutRequest::new(
            PayoutId::parse(id).unwrap(),
            Destination::Account(self.destination),
            Asset::Native,
            Amount::parse(amount).unwrap(),
            None,
        )
    }

    async fn record(&self, id: &str) -> PayoutRecord {
        self.journal
            .load(&PayoutId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// Closes a ledger whenever a transaction is pending until the payout reaches `state`.
    async fn run_until(&self, id: &str, state: PayoutState) -> PayoutRecord {
        for _ in 0..1_500 {
            let r = self.record(id).await;
            if r.state == state {
                return r;
            }
            if self.sim().pending_count() > 0 {
                self.sim().close_ledger();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "payout {id} never reached {state}: {:?}",
            self.record(id).await
        );
    }

    /// Pays these payouts (id, amount) through payoutd and waits until all are confirmed.
    async fn pay(&self, payouts: &[(&str, &str)]) {
        for (id, amount) in payouts {
            self.payouts.submit(self.request(id, amount)).await.unwrap();
        }
        for (id, _) in payouts {
            self.run_until(id, PayoutState::Confirmed).await;
        }
    }

    /// A payment of `stroops` XLM to the destination, signed with the distribution key and
    /// submitted straight to the simulator over HTTP: payoutd never sees it.
    async fn pay_outside_payoutd(&self, stroops: i64) -> String {
        let mut ring = Keyring::new();
        ring.insert(keypair("distribution"));
        let ledger = StellarLedger::connect(&self.sim.base_url, PASSPHRASE, ring, timeouts())
            .await
            .unwrap();
        let sequence = ledger
            .account_sequence(&self.distribution)
            .await
            .unwrap()
            .sequence
            .unwrap();
        let head = ledger.latest_ledger().await.unwrap();
        let envelope = ledger
            .build_and_sign(&TxSpec {
                source: self.distribution,
                sequence: sequence + 1,
                fee_stroops: 100,
                max_time: head.close_time + 300,
                ledger_bounds: None,
                memo: Memo::None,
                operations: vec![OpSpec {
                    payer: self.distribution,
                    destination: Destination::Account(self.destination),
                    asset: Asset::Native,
                    amount: Amount::from_stroops(stroops).unwrap(),
                    kind: Default::default(),
                }],
            })
            .unwrap();
        let hash = envelope.hash.to_hex();
        let submit = tokio::spawn(async move { ledger.submit(&envelope).await });
        crate::helpers::eventually(5_000, "the outside payment is pending", || async {
            self.sim().pending_count() > 0
        })
        .await;
        self.sim().close_ledger();
        let outcome = submit.await.unwrap();
        assert!(
            matches!(outcome, SubmitOutcome::Applied(_)),
            "the outside payment applied: {outcome:?}"
        );
        hash
    }

    /// The ledger settings of `payoutd reconcile`: Horizon or Stellar RPC on the simulator.
    fn ledger_env(&self) -> Vec<(&'static str, String)> {
        if self.history_over_rpc {
            vec![
                ("PAYOUTD__LEDGER__MODE", "rpc".into()),
                (
                    "PAYOUTD__LEDGER__RPC_URL",
                    format!("{}/rpc", self.sim.base_url),
                ),
            ]
        } else {
            vec![
                ("PAYOUTD__LEDGER__MODE", "horizon".into()),
                ("PAYOUTD__LEDGER__HORIZON_URL", self.sim.base_url.clone()),
            ]
        }
    }

    /// Runs `payoutd reconcile ARGS` against this database and simulator.
    async fn reconcile(&self, args: &[&str]) -> Run {
        self.reconcile_with(args, &[]).await
    }

    async fn reconcile_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"))
            .arg("reconcile")
            .args(args)
            .env_remove("PAYOUTD_CONFIG")
            .env("PAYOUTD__DATABASE__URL", &self.db_url)
            .envs(self.ledger_env())
            .env("PAYOUTD__LEDGER__NETWORK_PASSPHRASE", PASSPHRASE)
            .env(
                "PAYOUTD__LEDGER__DISTRIBUTION_ACCOUNT",
                self.distribution.to_strkey(),
            )
            // Small pages: every listing is read over several cursors.
            .env("PAYOUTD__RECONCILE__PAGE_RECORDS", "2")
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn last_run_row(&self) -> (String, i32, Value, Option<i32>, Option<i32>) {
        let row = sqlx::query(
            "SELECT result, mismatches, findings, from_ledger, to_ledger
               FROM reconcile_runs ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(self.journal.pool())
        .await
        .unwrap();
        (
            row.get("result"),
            row.get("mismatches"),
            row.get("findings"),
            row.get("from_ledger"),
            row.get("to_ledger"),
        )
    }

    async fn runs(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM reconcile_runs")
            .fetch_one(self.journal.pool())
            .await
            .unwrap()
    }

    async fn exec(&self, sql: &str, hash: &str) -> u64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(hash)
            .execute(self.journal.pool())
            .await
            .unwrap()
            .rows_affected()
    }
}

async fn a_clean_run_reports_nothing_and_is_stored(rpc: bool) {
    let r = rig_over(rpc).await;
    // Two batches' worth of payouts, one after the other.
    r.pay(&[("clean-1", "1.5"), ("clean-2", "2.25"), ("clean-3", "3")])
        .await;
    r.pay(&[("clean-4", "0.0000001")]).await;
    let latest = r.sim().latest_ledger().sequence;

    let run = r.reconcile(&["--json"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["result"], "clean");
    assert_eq!(kinds(&doc), Vec::<String>::new());
    assert_eq!(doc["range"]["kind"], "since_last_run");
    let server = doc["ledger"]["server"].as_str().unwrap();
    let reader = if rpc {
        "Stellar RPC at "
    } else {
        "Horizon at "
    };
    assert!(server.starts_with(reader), "{server}");
    assert_eq!(doc["range"]["to_ledger"], latest);
    assert_eq!(doc["counts"]["payouts_confirmed"], 4);
    assert_eq!(doc["counts"]["payments_matched"], 4);
    assert_eq!(doc["counts"]["ledger_payments"], 4);
    assert_eq!(doc["counts"]["mismatches"], 0);
    assert_eq!(doc["totals"][0]["asset"], "native");
    assert_eq!(doc["totals"][0]["amount"], "6.7500001");
    assert_eq!(doc["in_flight"], serde_json::json!([]));
    assert_eq!(doc["resume_ledger"], latest + 1);
    // The channels came from the journal's registry, not only from the configuration.
    for c in &r.channels {
        assert!(
            doc["accounts"]["channels"]
                .as_array()
                .unwrap()
                .contains(&Value::String(c.to_strkey())),
            "{c} is scanned"
        );
    }
    let (result, mismatches, _, _, to) = r.last_run_row().await;
    assert_eq!(
        (result.as_str(), mismatches, to),
        ("clean", 0, Some(latest as i32))
    );

    // Nothing closed since: nothing to check, nothing stored, still exit 0.
    let again = r.reconcile(&["--json"]).await;
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.json()["result"], "nothing_new");
    assert_eq!(r.runs().await, 1);

    // The same range by time, in the human report.
    let since = payoutd::reconcile::report::rfc3339(GENESIS_CLOSE_TIME);
    let by_time = r.reconcile(&["--since", &since]).await;
    assert_eq!(by_time.code, 0, "{}\n{}", by_time.stdout, by_time.stderr);
    assert!(
        by_time
            .stdout
            .contains("CLEAN: the journal and the ledger agree"),
        "{}",
        by_time.stdout
    );
    assert!(
        by_time.stdout.contains(&format!("..={latest}")),
        "{}",
        by_time.stdout
    );
    assert!(by_time.stdout.contains("6.7500001 native in 4 payments"));
    assert_eq!(r.runs().await, 2);
}

async fn a_payment_with_the_distribution_key_outside_payoutd_is_unknown_outflow(rpc: bool) {
    let r = rig_over(rpc).await;
    r.pay(&[("out-1", "4")]).await;
    // The same payout paid a second time by hand: same destination, same amount.
    let hash = r.pay_outside_payoutd(4 * XLM).await;

    let run = r.reconcile(&["--json", "--from-ledger", "1"]).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["result"], "mismatches");
    assert_eq!(kinds(&doc), vec!["unknown_outflow"]);
    let m = &doc["mismatches"][0];
    assert_eq!(m["tx_hash"], hash);
    assert_eq!(m["ledger_says"]["amount"], "4");
    assert_eq!(m["ledger_says"]["destination"], r.destination.to_strkey());
    assert_eq!(doc["counts"]["payments_matched"], 1);
    assert_eq!(doc["counts"]["ledger_payments"], 2);
    let (result, mismatches, findings, from, _) = r.last_run_row().await;
    assert_eq!(
        (result.as_str(), mismatches, from),
        ("mismatches", 1, Some(1))
    );
    assert_eq!(findings[0]["kind"], "unknown_outflow");
    assert_eq!(findings[0]["tx_hash"], hash);

    // The human report names it too.
    let human = r.reconcile(&["--from-ledger", "1"]).await;
    assert_eq!(human.code, 3);
    assert!(human.stdout.contains("1 MISMATCH"), "{}", human.stdout);
    assert!(human.stdout.contains("unknown_outflow"), "{}", human.stdout);
    assert!(human.stdout.contains(&hash), "{}", human.stdout);
}

async fn a_confirmed_payout_whose_transaction_is_missing_is_found(rpc: bool) {
    let r = rig_over(rpc).await;
    r.pay(&[("ghost-source", "5")]).await;
    let latest = r.sim().latest_ledger().sequence as i32;
    // A confirmed payout and its applied envelope in a ledger of the range, under a hash
    // the ledger never saw.
    let ghost_hash = hex::encode([0xab; 32]);
    sqlx::query(
        "INSERT INTO payouts (payout_id, fingerprint, request, state, version, tx_hash,
                              op_index, ledger, fee_charged)
         SELECT 'ghost', fingerprint, jsonb_set(request, '{payout_id}', '\"ghost\"'),
                'confirmed', 1, $1, 0, ledger, fee_charged
           FROM payouts WHERE payout_id = 'ghost-source'",
    )
    .bind(&ghost_hash)
    .execute(r.journal.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO envelopes (tx_hash, source, sequence, max_time, envelope_xdr, status,
                                fee, built_ledger, member_ids, ledger, fee_charged)
         SELECT $1, source, sequence + 1000, max_time, envelope_xdr, 'applied', fee,
                built_ledger, ARRAY['ghost'], ledger, fee_charged
           FROM envelopes WHERE 'ghost-source' = ANY(member_ids)",
    )
    .bind(&ghost_hash)
    .execute(r.journal.pool())
    .await
    .unwrap();

    let run = r.reconcile(&["--json", "--from-ledger", "1"]).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(
        kinds(&doc),
        vec!["envelope_not_on_ledger", "payout_unpaid"],
        "{doc:#}"
    );
    for m in doc["mismatches"].as_array().unwrap() {
        assert_eq!(m["tx_hash"], ghost_hash);
    }
    assert_eq!(doc["mismatches"][1]["payout_id"], "ghost");
    assert_eq!(doc["range"]["to_ledger"], latest);
}

async fn an_amount_a_destination_or_an_asset_edited_in_the_database_is_found(rpc: bool) {
    let r = rig_over(rpc).await;
    r.pay(&[
        ("edit-amount", "6"),
        ("edit-dest", "7"),
        ("edit-asset", "8"),
        ("untouched", "9"),
    ])
    .await;
    let edit = |id: &'static str, field: &'static str, value: String| {
        let pool = r.journal.pool().clone();
        async move {
            let n = sqlx::query(
                "UPDATE payouts SET request = jsonb_set(request, $2::text[], to_jsonb($3::text))
                  WHERE payout_id = $1",
            )
            .bind(id)
            .bind(vec![field.to_owned()])
            .bind(value)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
            assert_eq!(n, 1);
        }
    };
    edit("edit-amount", "amount", "60".into()).await;
    edit("edit-dest", "destination", r.other.to_strkey()).await;
    let issuer = keypair("issuer").account();
    edit("edit-asset", "asset", format!("USDC:{issuer}")).await;

    let run = r.reconcile(&["--json", "--from-ledger", "1"]).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    let mut found: Vec<(String, String)> = doc["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["kind"], "payment_differs", "{m:#}");
            (
                m["payout_id"].as_str().unwrap().to_owned(),
                m["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["edit-amount", "edit-asset", "edit-dest"],
        "{doc:#}"
    );
    let by_id = |id: &str| {
        doc["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["payout_id"] == id)
            .unwrap()
            .clone()
    };
    let amount = by_id("edit-amount");
    assert_eq!(amount["journal_says"]["amount"], "60");
    assert_eq!(amount["ledger_says"]["amount"], "6");
    let dest = by_id("edit-dest");
    assert_eq!(dest["journal_says"]["destination"], r.other.to_strkey());
    assert_eq!(
        dest["ledger_says"]["destination"],
        r.destination.to_strkey()
    );
    let asset = by_id("edit-asset");
    assert_eq!(asset["journal_says"]["asset"], format!("USDC:{issuer}"));
    assert_eq!(asset["ledger_says"]["asset"], "native");
    for (id, detail) in &found {
        let field = match id.as_str() {
            "edit-amount" => "amount",
            "edit-dest" => "destination",
            _ => "asset",
        };
        assert!(detail.contains(field), "{id}: {detail}");
    }
    assert_eq!(doc["counts"]["payments_matched"], 1);
}

async fn an_envelope_marked_dead_whose_transaction_applied_is_found(rpc: bool) {
    let r = rig_over(rpc).await;
    let rec = r.pay_and_get("dead-but-paid", "10").await;
    let hash = rec.envelope.unwrap().hash.to_hex();
    assert_eq!(
        r.exec(
            "UPDATE envelopes SET status = 'dead' WHERE tx_hash = $1",
            &hash
        )
        .await,
        1
    );

    let run = r.reconcile(&["--json", "--from-ledger", "1"]).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    let k = kinds(&doc);
    assert!(k.contains(&"dead_envelope_on_ledger".to_owned()), "{doc:#}");
    let m = doc["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "dead_envelope_on_ledger")
        .unwrap();
    assert_eq!(m["tx_hash"], hash);
    assert_eq!(m["journal_says"]["status"], "dead");
    assert_eq!(m["ledger_says"]["successful"], "true");
}

impl Rig {
    async fn pay_and_get(&self, id: &str, amount: &str) -> PayoutRecord {
        self.pay(&[(id, amount)]).await;
        self.record(id).await
    }
}

async fn payouts_in_flight_are_reported_with_their_age_then_settle_clean(rpc: bool) {
    let r = rig_over(rpc).await;
    r.pay(&[("settled", "1")]).await;
    let first = r.reconcile(&["--json"]).await;
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);

    // Submitted, its envelope live and pending on the simulator: no ledger closes.
    r.payouts.submit(r.request("flying", "2")).await.unwrap();
    crate::helpers::eventually(10_000, "the envelope is pending on the ledger", || async {
        r.sim().pending_count() > 0
    })
    .await;
    let rec = r.record("flying").await;
    let hash = rec
        .envelope
        .expect("journaled before submission")
        .hash
        .to_hex();
    // In flight now, whatever range is asked for.
    let run = r.reconcile(&["--json", "--from-ledger", "1"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["result"], "clean");
    let flying = doc["in_flight"].as_array().unwrap();
    assert_eq!(flying.len(), 1, "{doc:#}");
    assert_eq!(flying[0]["tx_hash"], hash);
    assert_eq!(flying[0]["payouts"], 1);
    assert!(flying[0]["age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(doc["counts"]["envelopes_live"], 1);
    let human = r.reconcile(&["--from-ledger", "1"]).await;
    assert!(
        human.stdout.contains("in flight  1 envelope"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains(&hash), "{}", human.stdout);

    // It lands; the next run since the last one covers its ledger and agrees.
    r.run_until("flying", PayoutState::Confirmed).await;
    let after = r.reconcile(&["--json"]).await;
    assert_eq!(after.code, 0, "{}\n{}", after.stdout, after.stderr);
    let doc = after.json();
    assert_eq!(doc["in_flight"], serde_json::json!([]));
    assert_eq!(doc["counts"]["payments_matched"], 1, "{doc:#}");
}

#[tokio::test]
async fn a_range_the_server_no_longer_keeps_is_a_clear_error() {
    let r = rig().await;
    r.pay(&[("old-1", "1")]).await;
    for _ in 0..10 {
        r.sim().close_ledger();
    }
    r.sim().set_faults(Faults {
        history_retention_ledgers: 3,
        ..Faults::default()
    });
    let run = r.reconcile(&["--json", "--from-ledger", "1"]).await;
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["result"], "error");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("before the history the server keeps"),
        "{error}"
    );
    assert!(run.stderr.contains("could not check"), "{}", run.stderr);
    let (result, ..) = r.last_run_row().await;
    assert_eq!(result, "error");
    // A range that has not closed yet is refused too.
    let latest = r.sim().latest_ledger().sequence;
    let ahead = (latest + 5).to_string();
    let run = r.reconcile(&["--from-ledger", &ahead]).await;
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
}

#[tokio::test]
async fn the_scheduled_check_exports_its_gauges() {
    let r = rig().await;
    r.pay(&[("sched-1", "1")]).await;
    let reconciler = Arc::new(Reconciler {
        pool: r.journal.pool().clone(),
        history: payoutd::reconcile::history_for(&r.sim.base_url, timeouts()).unwrap(),
        accounts: Accounts {
            distribution: r.distribution,
            channels: r.channels.clone(),
        },
        network_passphrase: PASSPHRASE.into(),
        page_records: 200,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = payoutd::reconcile::schedule::spawn(
        reconciler,
        100,
        1_000,
        r.metrics.clone(),
        "reconcile-test".into(),
        stop_rx,
    );
    let gauges = &r.metrics.reconcile;
    // The gauges are read back from the runs journal after the run is counted: await them.
    crate::helpers::eventually(10_000, "a clean scheduled run in the gauges", || async {
        gauges.last_clean_unix_ms.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(gauges.runs_clean.load(Ordering::Relaxed) >= 1);
    assert!(gauges.checked_ledger.load(Ordering::Relaxed) > 0);
    let text = payoutd::metrics::render_prometheus(&r.metrics);
    assert!(text.contains("payoutd_reconcile_mismatches 0"), "{text}");
    assert!(
        !text.contains("payoutd_reconcile_last_clean_age_seconds +Inf"),
        "{text}"
    );

    // A payment outside payoutd: the next scheduled run finds it.
    r.pay_outside_payoutd(XLM).await;
    crate::helpers::eventually(10_000, "a scheduled run with mismatches", || async {
        gauges.mismatches.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(gauges.runs_mismatches.load(Ordering::Relaxed) >= 1);
    let text = payoutd::metrics::render_prometheus(&r.metrics);
    assert!(text.contains("payoutd_reconcile_mismatches 1"), "{text}");
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// The planted discrepancies and the clean runs, with the history read over Horizon and over
/// Stellar RPC.
macro_rules! over_both_histories {
    ($($name:ident),* $(,)?) => {
        mod history_over_horizon {
            $(#[tokio::test]
            async fn $name() {
                super::$name(false).await
            })*
        }
        mod history_over_rpc {
            $(#[tokio::test]
            async fn $name() {
                super::$name(true).await
            })*
        }
    };
}

over_both_histories!(
    a_clean_run_reports_nothing_and_is_stored,
    a_payment_with_the_distribution_key_outside_payoutd_is_unknown_outflow,
    a_confirmed_payout_whose_transaction_is_missing_is_found,
    an_amount_a_destination_or_an_asset_edited_in_the_database_is_found,
    an_envelope_marked_dead_whose_transaction_applied_is_found,
    payouts_in_flight_are_reported_with_their_age_then_settle_clean,
);
