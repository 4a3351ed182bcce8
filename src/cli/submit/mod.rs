//! `payoutd submit FILE.csv`: sends every row of a CSV file to a running payoutd over its
//! HTTP API, with bounded concurrency and bounded retries, and reports what became of each
//! row. Re-running the same file is safe: rows already known come back as duplicates and
//! nothing is paid twice (the service deduplicates by `payout_id` and content).
//!
//! The file: a header line naming the columns `payout_id,destination,asset,amount` and
//! optionally `memo_type,memo_value` (any order), then one payout per line. Quoting follows
//! RFC 4180 (`"a ""quoted"" field, with a comma"`). Every row is checked here first with
//! the same rules as the service, so a bad row is reported with its field without being
//! sent; a row is never dropped without a line in the report.

mod records;
mod report;
mod send;

pub use records::{CsvRow, read_rows};
pub use report::{Counts, Outcome, Report, RowReport};
pub use send::submit_rows;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use payoutd_actors::ErrorCode;
use payoutd_actors::domain::{RawMemo, RawPayoutRequest};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

use crate::ingress::redact_secrets;

/// The environment variable holding the bearer token (never a command-line argument, so
/// it stays out of shell history and process listings).
pub const TOKEN_ENV: &str = "PAYOUTD_API_TOKEN";
/// Largest file read, in bytes.
pub const FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most data rows in one file.
pub const ROWS_MAX: usize = 1_000_000;
/// Most requests in flight at once.
pub const CONCURRENCY_MAX: usize = 256;
/// Most retries of one row.
pub const RETRIES_MAX: u32 = 20;
/// First pause before a retry, in milliseconds; it doubles with every retry.
pub const BACKOFF_BASE_MS: u64 = 200;
/// Longest pause before a retry, in milliseconds.
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// Largest part of a response body read (error bodies are small), in bytes.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Most rows sent in one `POST /v1/payouts/batch` (the service's default
/// `batch_items_max` is 1,000; 500 rows stay well inside its body limit too).
pub const BATCH_ROWS_MAX: usize = 500;
/// Largest batch answer read, in bytes (one item per row, each with the payout's view).
pub const BATCH_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How often the progress line is redrawn on a terminal, in milliseconds.
pub const PROGRESS_TTY_INTERVAL_MS: u64 = 200;
/// How often a progress line is printed when stderr is not a terminal, in milliseconds.
pub const PROGRESS_PLAIN_INTERVAL_MS: u64 = 5_000;
/// Longest payout id shown in the report (a bad id may be any length), in characters.
const ID_SHOWN_CHARS_MAX: usize = 64;

/// The command line of `payoutd submit`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The file starts with a header line:
  payout_id,destination,asset,amount[,memo_type,memo_value]
and has one payout per line; fields with commas, quotes or line breaks are quoted as in
RFC 4180. Every row is checked locally first; bad rows are reported, never sent.

The bearer token, if the service needs one, is read from the PAYOUTD_API_TOKEN
environment variable; it is never printed.

Outcomes: created (new payout), duplicate (already known: a re-run pays nothing twice),
conflict (that payout_id exists with other content), invalid (bad row), failed (did not
reach the service after every retry; re-running the same file is safe).

Exit status: 0 every row created or duplicate; 2 some row invalid or in conflict (or the
file or the arguments are unusable; nothing was sent then); 1 some row failed to reach the
service (1 wins over 2).

Examples:
  payoutd submit payouts.csv
  PAYOUTD_API_TOKEN=... payoutd submit --url https://payoutd.internal:8080 payouts.csv
  payoutd submit --concurrency 32 --retries 8 --timeout-ms 20000 november.csv

Example file:
  payout_id,destination,asset,amount,memo_type,memo_value
  reward-2026-11-0042,GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2,native,12.5,id,42
  reward-2026-11-0043,GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2,native,3,,")]
pub struct SubmitArgs {
    /// The CSV file to submit.
    pub file: PathBuf,
    /// Base URL of the running payoutd HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Requests in flight at once (1 to 256).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Retries of a row after a 5xx answer, a timeout or a connection error (0 to 20).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
    /// Time allowed for one request, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
}

/// How to submit: where, with what token, and the bounds.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Sent as `Authorization: Bearer …`; never printed (its `Debug` is masked).
    pub token: Option<SecretString>,
    /// Requests in flight at once, 1..=`CONCURRENCY_MAX`.
    pub concurrency: usize,
    /// Retries per row, 0..=`RETRIES_MAX`.
    pub retries: u32,
    /// Time allowed for one request, in milliseconds.
    pub request_timeout_ms: u64,
    /// First pause before a retry, in milliseconds (doubles, up to `BACKOFF_MAX_MS`).
    pub backoff_base_ms: u64,
    /// Show progress on stderr (a redrawn line on a terminal, periodic lines otherwise).
    pub progress: bool,
}

impl SubmitOptions {
    /// The defaults of the command line for this URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            concurrency: 8,
            retries: 5,
            request_timeout_ms: 10_000,
            backoff_base_ms: BACKOFF_BASE_MS,
            progress: false,
        }
    }
}

/// Problems that stop the run before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {FILE_BYTES_MAX} bytes; split it")]
    TooLarge { path: String },
    #[error("the file is not valid UTF-8 (line {line})")]
    NotUtf8 { line: usize },
    #[error("the file has more than {ROWS_MAX} rows; split it")]
    TooManyRows,
    #[error("bad header line: {0}")]
    Header(String),
    #[error("bad --url: {0}")]
    Url(String),
    #[error("bad {TOKEN_ENV}: {0}")]
    Token(&'static str),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Reads the file, then `submit_rows`.
pub async fn submit_file(path: &Path, options: &SubmitOptions) -> Result<Report, SubmitError> {
    let shown = path.display().to_string();
    let read_error = |source| SubmitError::Read {
        path: shown.clone(),
        source,
    };
    let size = tokio::fs::metadata(path).await.map_err(read_error)?.len();
    if size > FILE_BYTES_MAX {
        return Err(SubmitError::TooLarge { path: shown });
    }
    let bytes = tokio::fs::read(path).await.map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        SubmitError::NotUtf8 {
            line: 1 + valid.iter().filter(|b| **b == b'\n').count(),
        }
    })?;
    submit_rows(read_rows(&text)?, options).await
}

/// `payoutd submit`: runs, prints the report on stdout, and returns the exit status.
pub async fn run_cli(args: &SubmitArgs) -> std::process::ExitCode {
    let token = match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.is_empty() => Some(SecretString::from(t)),
        Ok(_) | Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!(
                "payoutd submit: {}",
                SubmitError::Token("is not valid UTF-8")
            );
            return std::process::ExitCode::from(2);
        }
    };
    let options = SubmitOptions {
        url: args.url.clone(),
        token,
        concurrency: args.concurrency as usize,
        retries: args.retries,
        request_timeout_ms: args.timeout_ms,
        backoff_base_ms: BACKOFF_BASE_MS,
        progress: true,
    };
    match submit_file(&args.file, &options).await {
        Ok(report) => {
            print!("{report}");
            std::process::ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("payoutd submit: {e}; nothing was sent");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::records::*;
    use super::send::*;
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        split_records(text).into_iter().map(|r| r.fields).collect()
    }

    #[test]
    fn rfc4180_quoting() {
        assert_eq!(
            fields("a,\"b,c\",\"d \"\"e\"\"\"\r\n\"x\ny\",,z\n"),
            vec![
                vec!["a".to_owned(), "b,c".into(), "d \"e\"".into()],
                vec!["x\ny".to_owned(), String::new(), "z".into()],
            ]
        );
        let recs = split_records("h\n\n\"x\ny\"\nlast,\n");
        let lines: Vec<usize> = recs.iter().map(|r| r.line).collect();
        assert_eq!(
            lines,
            [1, 3, 5],
            "blank lines skipped, quoted line breaks counted"
        );
        assert_eq!(recs[2].fields, ["last", ""]);
    }

    #[test]
    fn quoting_errors_are_per_record() {
        let recs = split_records("\"a\"b,c\nok,1\n");
        assert_eq!(
            recs[0].error.as_ref().map(|e| e.0),
            Some(ErrorCode::CsvQuote)
        );
        assert_eq!(recs[1].fields, ["ok", "1"]);
        assert!(recs[1].error.is_none());
        let recs = split_records("a\"b\n");
        assert_eq!(
            recs[0].error.as_ref().map(|e| e.0),
            Some(ErrorCode::CsvQuote)
        );
        let recs = split_records("x\n\"never closed\n");
        assert_eq!(
            recs[1].error.as_ref().map(|e| e.0),
            Some(ErrorCode::CsvUnterminatedQuote)
        );
    }

    #[test]
    fn header_rules() {
        assert!(read_rows("payout_id,destination,asset,amount\n").is_ok());
        assert!(
            read_rows("\u{feff}amount,asset,destination,payout_id,memo_value,memo_type\n").is_ok()
        );
        assert!(matches!(read_rows(""), Err(SubmitError::Header(_))));
        assert!(matches!(
            read_rows("payout_id,destination,asset\n"),
            Err(SubmitError::Header(_))
        ));
        assert!(matches!(
            read_rows("payout_id,destination,asset,amount,memo_type\n"),
            Err(SubmitError::Header(_))
        ));
        assert!(matches!(
            read_rows("payout_id,destination,asset,amount,extra\n"),
            Err(SubmitError::Header(_))
        ));
    }

    #[test]
    fn rows_are_checked_locally() {
        let dest = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
        let text = format!(
            "payout_id,destination,asset,amount,memo_type,memo_value\n\
             ok-1,{dest},native,1.5,id,42\n\
             ok-2,{dest},native,2,,\n\
             bad-amount,{dest},native,1e5,,\n\
             short,{dest},native\n\
             no-type,{dest},native,1,,7\n"
        );
        let rows = read_rows(&text).unwrap();
        assert_eq!(rows.len(), 5);
        let memo = rows[0].request.as_ref().unwrap().memo.clone().unwrap();
        assert_eq!(
            (memo.kind.as_str(), memo.value.as_deref()),
            ("id", Some("42"))
        );
        assert!(rows[1].request.as_ref().unwrap().memo.is_none());
        let code = |i: usize| match &rows[i].request {
            Err(Outcome::Invalid { code, field, .. }) => (code.clone(), field.clone()),
            other => panic!("row {i}: {:?}", other.as_ref().map(|_| ())),
        };
        assert_eq!(code(2), ("amount_format".into(), Some("amount".into())));
        assert_eq!(code(3), ("csv_column_count".into(), None));
        assert_eq!(
            code(4),
            ("memo_type_missing".into(), Some("memo_type".into()))
        );
        assert_eq!(rows[3].line, 5);
    }

    #[test]
    fn exit_codes() {
        let row = |outcome| RowReport {
            line: 2,
            payout_id: "p".into(),
            outcome,
        };
        let ok = Report {
            rows: vec![row(Outcome::Created), row(Outcome::Duplicate)],
        };
        assert_eq!(ok.exit_code(), 0);
        let bad = Report {
            rows: vec![
                row(Outcome::Created),
                row(invalid(ErrorCode::AmountFormat, None, "y")),
            ],
        };
        assert_eq!(bad.exit_code(), 2);
        let mut failed = bad.clone();
        failed.rows.push(row(Outcome::Failed {
            reason: "down".into(),
        }));
        assert_eq!(failed.exit_code(), 1);
    }

    #[test]
    fn backoff_is_bounded() {
        assert!(backoff(200, 1, 7) >= Duration::from_millis(200));
        assert!(backoff(200, 30, 7) <= Duration::from_millis(BACKOFF_MAX_MS * 3 / 2));
    }

    #[test]
    fn report_redacts_seeds_in_ids() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        let report = Report {
            rows: vec![RowReport {
                line: 3,
                payout_id: seed.into(),
                outcome: invalid(ErrorCode::PayoutIdLength, Some("payout_id"), "too long"),
            }],
        };
        let text = report.to_string();
        assert!(!text.contains(seed));
        assert!(text.contains("payout_id_length payout_id: too long"));
    }
}
