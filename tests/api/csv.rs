//! `payoutd submit FILE.csv` against the real HTTP API on a real port (router over a payout
//! core with the Postgres journal and the in-memory ledger): outcomes per row, re-runs pay
//! nothing twice, exit codes, retries, and the bearer token sent but never shown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use payoutd::cli::submit::{self as csv_submit, Outcome, Report, SubmitOptions};
use payoutd::http::{ApiShared, ApiState, router};
use payoutd::storage::PgJournal;
use payoutd_actors::Payouts;
use payoutd_actors::domain::{AccountId, PayoutRequest, RawMemo, RawPayoutRequest};
use payoutd_actors::memory::MemLedger;
use payoutd_actors::state::PayoutState;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::helpers::{pg_journal, start_core, wait_state};

const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
const TOKEN: &str = "csv-test-token-0c9f7e1d2b";

fn channels() -> Vec<AccountId> {
    (1..=8).map(|n| AccountId::from_bytes([n; 32])).collect()
}

struct Api {
    url: String,
    journal: Arc<PgJournal>,
    ledger: Arc<MemLedger>,
    payouts: Payouts,
}

/// The real API on 127.0.0.1:0, requiring `tokens` if any.
async fn serve_api(tokens: &[&str]) -> Api {
    let journal = pg_journal().await;
    let ledger = Arc::new(MemLedger::new(&channels()));
    let (payouts, _) = start_core(
        journal.clone(),
        ledger.clone(),
        "csv",
        channels(),
        crate::helpers::policy(),
    )
    .await;
    let state = ApiState::new(ApiShared {
        payouts: payouts.clone(),
        reads: journal.clone(),
        db: journal.pool().clone(),
        tokens: Arc::new(
            tokens
                .iter()
                .map(|t| SecretString::from((*t).to_owned()))
                .collect(),
        ),
        admin_tokens: Arc::new(Vec::new()),
        request_timeout_ms: 10_000,
        batch_items_max: 1_000,
        batch_body_bytes_max: 2 << 20,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Api {
        url,
        journal,
        ledger,
        payouts,
    }
}

fn request(id: &str, amount: &str, memo: Option<(&str, &str)>) -> PayoutRequest {
    RawPayoutRequest {
        payout_id: id.into(),
        destination: DEST.into(),
        asset: "native".into(),
        amount: amount.into(),
        memo: memo.map(|(kind, value)| RawMemo {
            kind: kind.into(),
            value: Some(value.into()),
        }),
    }
    .parse()
    .unwrap()
}

/// A CSV file in a fresh temp folder, removed when dropped.
struct TempCsv(PathBuf);

impl TempCsv {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn as_arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempCsv {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_csv(name: &str, text: &str) -> TempCsv {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "payoutd-csv-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    TempCsv(path)
}

/// Good rows, a duplicate within the file, invalid rows, conflicts (within the file and
/// with a payout stored earlier), and RFC 4180 quoting. Lines are numbered as in the file.
fn mixed_csv() -> String {
    [
        "payout_id,destination,asset,amount,memo_type,memo_value".to_owned(), // 1
        format!("csv-1,{DEST},native,1.5,,"),                                 // 2 created
        format!("csv-2,{DEST},native,2,id,42"),                               // 3 created
        format!("csv-1,{DEST},native,1.5,,"),                                 // 4 duplicate
        format!("csv-bad-amount,{DEST},native,1e5,,"),                        // 5 invalid
        format!("csv-seed,{SEED},native,1,,"),                                // 6 invalid
        format!("csv-short,{DEST},native"),                                   // 7 invalid
        format!("csv-2,{DEST},native,3,id,42"),                               // 8 conflict
        format!("csv-pre,{DEST},native,9,,"),                                 // 9 conflict
        format!("\"csv-3\",{DEST},\"native\",0.0000001,text,\"hi, \"\"you\"\"\""), // 10 created
    ]
    .join("\r\n")
        + "\r\n"
}

/// A line of the summary table.
fn summary(label: &str, rows: usize) -> String {
    format!("{label:<10} {rows:>8}")
}

fn outcome_at(report: &Report, line: usize) -> &Outcome {
    &report
        .rows
        .iter()
        .find(|r| r.line == line)
        .unwrap_or_else(|| panic!("no row for line {line}"))
        .outcome
}

fn options(url: &str) -> SubmitOptions {
    let mut o = SubmitOptions::new(url);
    o.backoff_base_ms = 10;
    o
}

async fn run_binary(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"));
    cmd.arg("submit").args(args).env_remove("PAYOUTD_API_TOKEN");
    if let Some(t) = token {
        cmd.env("PAYOUTD_API_TOKEN", t);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("payoutd submit finishes")
        .unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_mixed_file_reports_every_row_and_a_rerun_pays_nothing_twice() {
    let api = serve_api(&[]).await;
    // Stored before the file runs, with another amount.
    api.payouts
        .submit(request("csv-pre", "8", None))
        .await
        .unwrap();
    let csv = temp_csv("mixed.csv", &mixed_csv());

    let report = csv_submit::submit_file(csv.path(), &options(&api.url))
        .await
        .unwrap();
    let c = report.counts();
    assert_eq!(
        (c.created, c.duplicate, c.conflict, c.invalid, c.failed),
        (3, 1, 2, 3, 0),
        "{report}"
    );
    assert_eq!(report.rows.len(), 9, "one entry per data row");
    assert_eq!(report.exit_code(), 2);
    assert_eq!(outcome_at(&report, 2), &Outcome::Created);
    assert_eq!(outcome_at(&report, 4), &Outcome::Duplicate);
    let invalid = |line| match outcome_at(&report, line) {
        Outcome::Invalid { code, field, .. } => (code.clone(), field.clone()),
        other => panic!("line {line}: {other:?}"),
    };
    assert_eq!(invalid(5), ("amount_format".into(), Some("amount".into())));
    assert_eq!(
        invalid(6),
        ("destination_is_secret".into(), Some("destination".into()))
    );
    assert_eq!(invalid(7), ("csv_column_count".into(), None));
    assert!(
        matches!(outcome_at(&report, 8), Outcome::Conflict { code, .. } if code == "payout_conflict")
    );
    assert!(matches!(outcome_at(&report, 9), Outcome::Conflict { .. }));
    assert_eq!(outcome_at(&report, 10), &Outcome::Created);

    let text = report.to_string();
    assert!(text.contains(&summary("created", 3)), "{text}");
    assert!(text.contains("amount_format amount:"), "{text}");
    assert!(!text.contains(SEED), "a seed is never shown");
    for line in ["5:", "6:", "7:", "8:", "9:"] {
        assert!(text.contains(line), "line {line} listed: {text}");
    }

    let paid = [
        ("csv-1", request("csv-1", "1.5", None)),
        ("csv-2", request("csv-2", "2", Some(("id", "42")))),
        (
            "csv-3",
            request("csv-3", "0.0000001", Some(("text", "hi, \"you\""))),
        ),
        ("csv-pre", request("csv-pre", "8", None)),
    ];
    for (id, req) in &paid {
        wait_state(api.journal.as_ref(), id, PayoutState::Confirmed).await;
        assert_eq!(api.ledger.payments_for(req), 1, "{id}");
    }

    // The same file again: the good rows are all duplicates; nothing is paid twice.
    let again = csv_submit::submit_file(csv.path(), &options(&api.url))
        .await
        .unwrap();
    let c = again.counts();
    assert_eq!(
        (c.created, c.duplicate, c.conflict, c.invalid, c.failed),
        (0, 4, 2, 3, 0),
        "{again}"
    );
    assert_eq!(again.exit_code(), 2);
    for (id, req) in &paid {
        assert_eq!(api.ledger.payments_for(req), 1, "{id} after the re-run");
    }

    // The binary says the same with its exit status.
    let (code, stdout, stderr) = run_binary(&["--url", &api.url, csv.as_arg()], None).await;
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stdout.contains(&summary("duplicate", 4)), "{stdout}");
    assert!(stderr.contains("payoutd submit: 9 rows"), "{stderr}");
    assert!(!stdout.contains(SEED) && !stderr.contains(SEED));
}

#[tokio::test]
async fn the_binary_exits_0_for_a_clean_file_twice_and_1_when_the_service_is_unreachable() {
    let api = serve_api(&[]).await;
    let rows: Vec<String> = (0..40)
        .map(|i| format!("csv-clean-{i},{DEST},native,{}.25", i + 1))
        .collect();
    let text = format!(
        "payout_id,destination,asset,amount\n{}\n{}\n",
        rows.join("\n"),
        rows[0]
    );
    let csv = temp_csv("clean.csv", &text);
    let file = csv.as_arg();

    let (code, stdout, stderr) =
        run_binary(&["--url", &api.url, "--concurrency", "4", file], None).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(&summary("created", 40)), "{stdout}");
    assert!(stdout.contains(&summary("duplicate", 1)), "{stdout}");

    let (code, stdout, _) = run_binary(&["--url", &api.url, file], None).await;
    assert_eq!(code, 0);
    assert!(stdout.contains(&summary("created", 0)), "{stdout}");
    assert!(stdout.contains(&summary("duplicate", 41)), "{stdout}");
    for i in 0..40 {
        let id = format!("csv-clean-{i}");
        wait_state(api.journal.as_ref(), &id, PayoutState::Confirmed).await;
        let req = request(&id, &format!("{}.25", i + 1), None);
        assert_eq!(api.ledger.payments_for(&req), 1, "{id}");
    }

    // Nothing listens on this port any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (code, stdout, stderr) =
        run_binary(&["--url", &closed, "--retries", "1", file], None).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains(&summary("failed", 41)), "{stdout}");
    assert!(stdout.contains("cannot connect"), "{stdout}");
}

#[tokio::test]
async fn the_token_is_sent_and_never_shown() {
    let api = serve_api(&[TOKEN]).await;
    let text = format!(
        "payout_id,destination,asset,amount\ncsv-auth-1,{DEST},native,1\ncsv-auth-2,{DEST},native,2\n"
    );
    let csv = temp_csv("auth.csv", &text);

    let mut with_token = options(&api.url);
    with_token.token = Some(SecretString::from(TOKEN.to_owned()));
    assert!(!format!("{with_token:?}").contains(TOKEN));
    let report = csv_submit::submit_file(csv.path(), &with_token)
        .await
        .unwrap();
    assert_eq!(report.counts().created, 2, "{report}");
    assert!(!report.to_string().contains(TOKEN));

    // Without the token (or with a wrong one) the service refuses: reported, not shown.
    let report = csv_submit::submit_file(csv.path(), &options(&api.url))
        .await
        .unwrap();
    assert_eq!(report.counts().failed, 2, "{report}");
    assert_eq!(report.exit_code(), 1);
    let wrong = "wrong-token-5e3a";
    let (code, stdout, stderr) = run_binary(&["--url", &api.url, csv.as_arg()], Some(wrong)).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("unauthenticated"), "{stdout}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));

    let (code, stdout, stderr) = run_binary(&["--url", &api.url, csv.as_arg()], Some(TOKEN)).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(&summary("duplicate", 2)), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
}

/// A stand-in service that answers 503, 503, then too slowly, then 202.
async fn flaky_service(calls: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/v1/payouts",
        post(move || {
            let calls = calls.clone();
            async move {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => (StatusCode::SERVICE_UNAVAILABLE, "{}"),
                    2 => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        (StatusCode::ACCEPTED, "{}")
                    }
                    _ => (StatusCode::ACCEPTED, "{}"),
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn unavailable_and_timeouts_are_retried_a_bounded_number_of_times() {
    let csv = temp_csv(
        "one.csv",
        &format!("payout_id,destination,asset,amount\ncsv-retry,{DEST},native,1\n"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let url = flaky_service(calls.clone()).await;
    let mut o = options(&url);
    o.request_timeout_ms = 300;
    let report = csv_submit::submit_file(csv.path(), &o).await.unwrap();
    assert_eq!(report.rows[0].outcome, Outcome::Created, "{report}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    let calls = Arc::new(AtomicUsize::new(0));
    let url = flaky_service(calls.clone()).await;
    let mut o = options(&url);
    o.retries = 1;
    let report = csv_submit::submit_file(csv.path(), &o).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one try and one retry");
    match &report.rows[0].outcome {
        Outcome::Failed { reason } => {
            assert!(
                reason.contains("503") && reason.contains("2 attempts"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.exit_code(), 1);
}

/// A stand-in service with a batch endpoint: the first batch fails (503), the second
/// answers every row but says one is `unavailable`, the third takes that one. Single
/// requests are refused, so a row that went one by one would fail.
async fn batch_service(batches: Arc<AtomicUsize>, rows: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new()
        .route(
            "/v1/payouts/batch",
            post(move |body: axum::Json<serde_json::Value>| {
                let (batches, rows) = (batches.clone(), rows.clone());
                async move {
                    let items = body["payouts"].as_array().cloned().unwrap_or_default();
                    rows.fetch_add(items.len(), Ordering::SeqCst);
                    let n = batches.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        return (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned());
                    }
                    let results: Vec<serde_json::Value> = items
                        .iter()
                        .enumerate()
                        .map(|(index, item)| {
                            let status = match (n, item["payout_id"].as_str()) {
                                (1, Some("csv-b-1")) => "unavailable",
                                (_, Some("csv-b-2")) => "duplicate",
                                _ => "created",
                            };
                            serde_json::json!({ "index": index, "status": status })
                        })
                        .collect();
                    (
                        StatusCode::OK,
                        serde_json::json!({ "results": results }).to_string(),
                    )
                }
            }),
        )
        .route(
            "/v1/payouts",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "{}") }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn rows_go_in_batches_and_only_unanswered_rows_are_sent_again() {
    let mut text = String::from("payout_id,destination,asset,amount\n");
    for n in 0..5 {
        text.push_str(&format!("csv-b-{n},{DEST},native,1\n"));
    }
    let csv = temp_csv("batch.csv", &text);
    let (batches, rows) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = batch_service(batches.clone(), rows.clone()).await;
    let mut o = options(&url);
    o.concurrency = 1;
    let report = csv_submit::submit_file(csv.path(), &o).await.unwrap();
    let outcomes: Vec<&Outcome> = report.rows.iter().map(|r| &r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            &Outcome::Created,
            &Outcome::Created,
            &Outcome::Duplicate,
            &Outcome::Created,
            &Outcome::Created
        ],
        "{report}"
    );
    assert_eq!(
        batches.load(Ordering::SeqCst),
        3,
        "503, then all, then the one left"
    );
    assert_eq!(rows.load(Ordering::SeqCst), 5 + 5 + 1);
    assert_eq!(report.exit_code(), 0);
}
