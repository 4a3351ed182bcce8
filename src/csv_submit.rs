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

const REQUIRED_COLUMNS: [&str; 4] = ["payout_id", "destination", "asset", "amount"];
const MEMO_COLUMNS: [&str; 2] = ["memo_type", "memo_value"];

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

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 202: a new payout.
    Created,
    /// 200: already known with the same content (possibly from an earlier attempt of this
    /// run whose answer was lost): nothing new is paid.
    Duplicate,
    /// 409: that payout id exists with other content; the stored payout is untouched.
    Conflict { code: String, message: String },
    /// The row is malformed or fails a field rule (found here or by the service).
    Invalid {
        code: String,
        field: Option<String>,
        message: String,
    },
    /// Did not reach the service (after every retry), or was not sent.
    Failed { reason: String },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict { .. } => "conflict",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// One row's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// Line of the file where the row starts (the header is line 1).
    pub line: usize,
    /// The row's payout id as written (shown redacted and shortened).
    pub payout_id: String,
    pub outcome: Outcome,
}

/// Rows per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub duplicate: usize,
    pub conflict: usize,
    pub invalid: usize,
    pub failed: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.created + self.duplicate + self.conflict + self.invalid + self.failed
    }
}

/// The result of a run: one entry per data row, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub rows: Vec<RowReport>,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.rows {
            match r.outcome {
                Outcome::Created => c.created += 1,
                Outcome::Duplicate => c.duplicate += 1,
                Outcome::Conflict { .. } => c.conflict += 1,
                Outcome::Invalid { .. } => c.invalid += 1,
                Outcome::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    /// 0: every row created or duplicate. 1: some row failed to reach the service (re-run
    /// later). 2: some row invalid or in conflict (fix the data).
    pub fn exit_code(&self) -> u8 {
        let c = self.counts();
        if c.failed > 0 {
            1
        } else if c.invalid + c.conflict > 0 {
            2
        } else {
            0
        }
    }
}

fn shown_id(id: &str) -> String {
    let id = redact_secrets(id);
    if id.chars().count() > ID_SHOWN_CHARS_MAX {
        let mut s: String = id.chars().take(ID_SHOWN_CHARS_MAX - 1).collect();
        s.push('…');
        s
    } else if id.is_empty() {
        "-".to_owned()
    } else {
        id
    }
}

/// The summary table, then every row that is invalid, in conflict or failed.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.counts();
        writeln!(f, "{:<10} {:>8}", "outcome", "rows")?;
        for (label, n) in [
            ("created", c.created),
            ("duplicate", c.duplicate),
            ("conflict", c.conflict),
            ("invalid", c.invalid),
            ("failed", c.failed),
            ("total", c.total()),
        ] {
            writeln!(f, "{label:<10} {n:>8}")?;
        }
        let problems: Vec<&RowReport> = self
            .rows
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Created | Outcome::Duplicate))
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = problems.iter().map(|r| shown_id(&r.payout_id)).collect();
        let id_width = ids
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            .max(9);
        writeln!(f)?;
        writeln!(
            f,
            "rows not created (line: payout_id outcome code field: reason):"
        )?;
        for (r, id) in problems.iter().zip(&ids) {
            let detail = match &r.outcome {
                Outcome::Conflict { code, message } => format!("{code}: {message}"),
                Outcome::Invalid {
                    code,
                    field: Some(field),
                    message,
                } => format!("{code} {field}: {message}"),
                Outcome::Invalid {
                    code,
                    field: None,
                    message,
                } => format!("{code}: {message}"),
                Outcome::Failed { reason } => reason.clone(),
                Outcome::Created | Outcome::Duplicate => String::new(),
            };
            writeln!(
                f,
                "{:>7}: {id:<id_width$} {:<9} {}",
                r.line,
                r.outcome.label(),
                redact_secrets(&detail)
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// CSV reading

/// One record of the file as split by the CSV rules.
struct Record {
    line: usize,
    fields: Vec<String>,
    /// A quoting error in this record: (code, message).
    error: Option<(ErrorCode, String)>,
}

/// Splits text into records per RFC 4180 (comma separator, `"` quoting with `""` inside,
/// CRLF or LF line ends, line breaks allowed inside quotes). Empty lines are skipped.
fn split_records(text: &str) -> Vec<Record> {
    let b = text.as_bytes();
    let mut records = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        if b[i] == b'\n' {
            i += 1;
            line += 1;
            continue;
        }
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 2;
            line += 1;
            continue;
        }
        let start_line = line;
        let mut fields = Vec::new();
        let mut error = None;
        // Splitting only at ASCII bytes keeps every slice on a UTF-8 character boundary.
        loop {
            if b.get(i) == Some(&b'"') {
                i += 1;
                let mut value = String::new();
                let mut seg = i;
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'"' if b.get(i + 1) == Some(&b'"') => {
                            value.push_str(&text[seg..=i]);
                            i += 2;
                            seg = i;
                        }
                        b'"' => {
                            value.push_str(&text[seg..i]);
                            i += 1;
                            closed = true;
                            break;
                        }
                        b'\n' => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
                if !closed {
                    value.push_str(&text[seg..]);
                    fields.push(value);
                    error = Some((
                        ErrorCode::CsvUnterminatedQuote,
                        format!("the quoted field opened on line {start_line} is never closed"),
                    ));
                    break;
                }
                fields.push(value);
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'\n') => {
                        i += 1;
                        line += 1;
                        break;
                    }
                    Some(b'\r') if b.get(i + 1) == Some(&b'\n') => {
                        i += 2;
                        line += 1;
                        break;
                    }
                    None => break,
                    Some(_) => {
                        error = Some((
                            ErrorCode::CsvQuote,
                            "text after a closing quote (write a quote inside a quoted field as \"\")"
                                .to_owned(),
                        ));
                        while i < b.len() && b[i] != b'\n' {
                            i += 1;
                        }
                        if i < b.len() {
                            i += 1;
                            line += 1;
                        }
                        break;
                    }
                }
            } else {
                let start = i;
                while i < b.len() && b[i] != b',' && b[i] != b'\n' {
                    i += 1;
                }
                let mut field = &text[start..i];
                if b.get(i) != Some(&b',') {
                    field = field.strip_suffix('\r').unwrap_or(field);
                }
                if field.contains('"') && error.is_none() {
                    error = Some((
                        ErrorCode::CsvQuote,
                        "a quote inside an unquoted field (quote the whole field and double the quote)"
                            .to_owned(),
                    ));
                }
                fields.push(field.to_owned());
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(_) => {
                        i += 1;
                        line += 1;
                        break;
                    }
                    None => break,
                }
            }
        }
        records.push(Record {
            line: start_line,
            fields,
            error,
        });
    }
    records
}

/// A data row: where it is, its payout id as written, and the checked request or why not.
pub struct CsvRow {
    pub line: usize,
    pub payout_id: String,
    pub request: Result<RawPayoutRequest, Outcome>,
}

/// Where each known column is in the file.
struct Columns {
    count: usize,
    payout_id: usize,
    destination: usize,
    asset: usize,
    amount: usize,
    memo: Option<(usize, usize)>,
}

fn columns(header: &Record) -> Result<Columns, SubmitError> {
    if let Some((_, message)) = &header.error {
        return Err(SubmitError::Header(message.clone()));
    }
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, name) in header.fields.iter().enumerate() {
        let name = name.trim();
        if !REQUIRED_COLUMNS.contains(&name) && !MEMO_COLUMNS.contains(&name) {
            return Err(SubmitError::Header(format!(
                "unknown column {:?}; the columns are {} and optionally {}",
                redact_secrets(name),
                REQUIRED_COLUMNS.join(","),
                MEMO_COLUMNS.join(",")
            )));
        }
        if at.insert(name, i).is_some() {
            return Err(SubmitError::Header(format!("column {name} appears twice")));
        }
    }
    let need = |name: &str| {
        at.get(name)
            .copied()
            .ok_or_else(|| SubmitError::Header(format!("missing column {name}")))
    };
    let memo = match (at.get("memo_type"), at.get("memo_value")) {
        (Some(&t), Some(&v)) => Some((t, v)),
        (None, None) => None,
        _ => {
            return Err(SubmitError::Header(
                "memo_type and memo_value go together".into(),
            ));
        }
    };
    Ok(Columns {
        count: header.fields.len(),
        payout_id: need("payout_id")?,
        destination: need("destination")?,
        asset: need("asset")?,
        amount: need("amount")?,
        memo,
    })
}

fn invalid(code: ErrorCode, field: Option<&str>, message: impl Into<String>) -> Outcome {
    Outcome::Invalid {
        code: code.to_string(),
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

fn row_request(cols: &Columns, record: &Record) -> Result<RawPayoutRequest, Outcome> {
    if let Some((code, message)) = &record.error {
        return Err(invalid(*code, None, message.clone()));
    }
    let f = &record.fields;
    if f.len() != cols.count {
        return Err(invalid(
            ErrorCode::CsvColumnCount,
            None,
            format!("expected {} columns, found {}", cols.count, f.len()),
        ));
    }
    let memo = match cols.memo {
        None => None,
        Some((t, v)) => match (f[t].as_str(), f[v].as_str()) {
            ("", "") => None,
            ("", _) => {
                return Err(invalid(
                    ErrorCode::MemoTypeMissing,
                    Some("memo_type"),
                    "memo_value is set but memo_type is empty (none, text, id or hash)",
                ));
            }
            (kind, value) => Some(RawMemo {
                kind: kind.to_owned(),
                value: (!value.is_empty()).then(|| value.to_owned()),
            }),
        },
    };
    let raw = RawPayoutRequest {
        payout_id: f[cols.payout_id].clone(),
        destination: f[cols.destination].clone(),
        asset: f[cols.asset].clone(),
        amount: f[cols.amount].clone(),
        memo,
    };
    match raw.parse() {
        Ok(_) => Ok(raw),
        Err(e) => Err(invalid(e.code, Some(e.field), e.message)),
    }
}

/// Reads and checks every row of a CSV text (header first). Errors are about the file as a
/// whole; a bad row is an `Err` in its own `CsvRow`.
pub fn read_rows(text: &str) -> Result<Vec<CsvRow>, SubmitError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = split_records(text).into_iter();
    let header = records
        .next()
        .ok_or_else(|| SubmitError::Header("the file is empty".into()))?;
    let cols = columns(&header)?;
    let mut rows = Vec::new();
    for record in records {
        if rows.len() == ROWS_MAX {
            return Err(SubmitError::TooManyRows);
        }
        rows.push(CsvRow {
            line: record.line,
            payout_id: record
                .fields
                .get(cols.payout_id)
                .cloned()
                .unwrap_or_default(),
            request: row_request(&cols, &record),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// Sending

/// Counters shared with the progress line.
#[derive(Default)]
struct Tally {
    done: AtomicUsize,
    created: AtomicUsize,
    duplicate: AtomicUsize,
    conflict: AtomicUsize,
    invalid: AtomicUsize,
    failed: AtomicUsize,
    retries: AtomicUsize,
}

impl Tally {
    fn record(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Created => &self.created,
            Outcome::Duplicate => &self.duplicate,
            Outcome::Conflict { .. } => &self.conflict,
            Outcome::Invalid { .. } => &self.invalid,
            Outcome::Failed { .. } => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self, total: usize) -> String {
        let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        format!(
            "{}/{total} rows: {} created, {} duplicate, {} conflict, {} invalid, {} failed, {} retries",
            n(&self.done),
            n(&self.created),
            n(&self.duplicate),
            n(&self.conflict),
            n(&self.invalid),
            n(&self.failed),
            n(&self.retries),
        )
    }
}

/// A valid row waiting to be sent.
struct Pending {
    line: usize,
    payout_id: String,
    request: RawPayoutRequest,
}

/// What the workers share.
struct Shared {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    /// `POST /v1/payouts/batch`; cleared when the service does not take batches (an older
    /// version, or a smaller `batch_items_max`): rows then go one request each.
    batch_endpoint: reqwest::Url,
    batch_ok: AtomicBool,
    auth: Option<HeaderValue>,
    retries: u32,
    backoff_base_ms: u64,
    /// Rows of one payout id, in file order; a worker takes one group at a time, so rows
    /// for one payout are sent one after the other and the earlier line wins a conflict.
    queue: Mutex<VecDeque<Vec<Pending>>>,
    /// Set when the service refused the token: the remaining rows are not sent.
    auth_refused: AtomicBool,
    tally: Tally,
}

/// One request's result.
enum Attempt {
    Done(Outcome),
    /// Worth another try (5xx, 408, 429, timeout, connection error).
    Retry(String),
    /// The token was refused: stop sending.
    Unauthorized(String),
}

/// Sends every valid row and collects the report (invalid rows are reported as they are).
pub async fn submit_rows(
    rows: Vec<CsvRow>,
    options: &SubmitOptions,
) -> Result<Report, SubmitError> {
    let base = options.url.trim_end_matches('/');
    let endpoint = reqwest::Url::parse(&format!("{base}/v1/payouts"))
        .map_err(|e| SubmitError::Url(e.to_string()))?;
    let batch_endpoint = reqwest::Url::parse(&format!("{base}/v1/payouts/batch"))
        .map_err(|e| SubmitError::Url(e.to_string()))?;
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(SubmitError::Url("use an http:// or https:// URL".into()));
    }
    let auth = match &options.token {
        None => None,
        Some(token) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| {
                    SubmitError::Token("holds characters not allowed in an HTTP header")
                })?;
            // Keeps it out of any `Debug` output of the request.
            value.set_sensitive(true);
            Some(value)
        }
    };
    let timeout = Duration::from_millis(options.request_timeout_ms.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| SubmitError::Client(e.without_url().to_string()))?;

    let total = rows.len();
    let mut results: HashMap<usize, RowReport> = HashMap::with_capacity(total);
    let mut lines = Vec::with_capacity(total);
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let tally = Tally::default();
    for row in rows {
        lines.push(row.line);
        match row.request {
            Err(outcome) => {
                tally.record(&outcome);
                results.insert(
                    row.line,
                    RowReport {
                        line: row.line,
                        payout_id: row.payout_id,
                        outcome,
                    },
                );
            }
            Ok(request) => {
                let slot = *group_of
                    .entry(request.payout_id.clone())
                    .or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                groups[slot].push(Pending {
                    line: row.line,
                    payout_id: row.payout_id,
                    request,
                });
            }
        }
    }
    let shared = Arc::new(Shared {
        client,
        endpoint,
        batch_endpoint,
        batch_ok: AtomicBool::new(true),
        auth,
        retries: options.retries.min(RETRIES_MAX),
        backoff_base_ms: options.backoff_base_ms,
        queue: Mutex::new(groups.into()),
        auth_refused: AtomicBool::new(false),
        tally,
    });

    let (stop_progress, stopped) = watch::channel(false);
    let progress = options.progress.then(|| {
        let shared = shared.clone();
        let tty = std::io::stderr().is_terminal();
        eprintln!(
            "payoutd submit: {total} rows ({} invalid here), sending to {} with {} at a time",
            shared.tally.invalid.load(Ordering::Relaxed),
            shown_url(&shared.endpoint),
            options.concurrency.clamp(1, CONCURRENCY_MAX)
        );
        tokio::spawn(show_progress(shared, total, tty, stopped))
    });

    let mut workers = JoinSet::new();
    for _ in 0..options.concurrency.clamp(1, CONCURRENCY_MAX) {
        workers.spawn(worker(shared.clone()));
    }
    while let Some(joined) = workers.join_next().await {
        // A worker that panicked loses its answers; those rows are reported as failed below.
        if let Ok(reports) = joined {
            for r in reports {
                results.insert(r.line, r);
            }
        }
    }
    let _ = stop_progress.send(true);
    if let Some(task) = progress {
        let _ = task.await;
    }

    let rows = lines
        .into_iter()
        .map(|line| {
            results.remove(&line).unwrap_or_else(|| RowReport {
                line,
                payout_id: String::new(),
                outcome: Outcome::Failed {
                    reason: "internal error: no answer was recorded; re-run the file".into(),
                },
            })
        })
        .collect();
    Ok(Report { rows })
}

/// The URL without credentials, for display.
fn shown_url(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

async fn show_progress(
    shared: Arc<Shared>,
    total: usize,
    tty: bool,
    mut stop: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(if tty {
        PROGRESS_TTY_INTERVAL_MS
    } else {
        PROGRESS_PLAIN_INTERVAL_MS
    });
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let line = shared.tally.line(total);
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("payoutd submit: {line}");
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
}

async fn worker(shared: Arc<Shared>) -> Vec<RowReport> {
    let mut reports = Vec::new();
    loop {
        let groups: Vec<Vec<Pending>> = {
            let mut queue = shared.queue.lock().await;
            let n = queue.len().min(BATCH_ROWS_MAX);
            queue.drain(..n).collect()
        };
        if groups.is_empty() {
            return reports;
        }
        if groups.len() > 1 && shared.batch_ok.load(Ordering::Relaxed) {
            send_groups_batched(&shared, groups, &mut reports).await;
        } else {
            for group in groups {
                send_group(&shared, group, &mut reports).await;
            }
        }
    }
}

/// Why a row is not sent, if it is not: the token was refused, or an earlier row of the
/// same payout id did not reach the service (sending a later one could let it win over an
/// earlier one that may yet land).
fn not_sent(shared: &Shared, blocked_by: Option<usize>) -> Option<Outcome> {
    if shared.auth_refused.load(Ordering::Relaxed) {
        Some(Outcome::Failed {
            reason: "not sent: the service refused the API token".into(),
        })
    } else {
        blocked_by.map(|line| Outcome::Failed {
            reason: format!(
                "not sent: line {line} has the same payout_id and did not reach the service"
            ),
        })
    }
}

/// The rows of one payout id, one request each, in file order.
async fn send_group(shared: &Shared, group: Vec<Pending>, reports: &mut Vec<RowReport>) {
    let mut blocked_by: Option<usize> = None;
    for p in group {
        let outcome = match not_sent(shared, blocked_by) {
            Some(o) => o,
            None => send_with_retries(shared, &p).await,
        };
        finish(shared, p, outcome, &mut blocked_by, reports);
    }
}

fn finish(
    shared: &Shared,
    p: Pending,
    outcome: Outcome,
    blocked_by: &mut Option<usize>,
    reports: &mut Vec<RowReport>,
) {
    if matches!(outcome, Outcome::Failed { .. }) && blocked_by.is_none() {
        *blocked_by = Some(p.line);
    }
    shared.tally.record(&outcome);
    reports.push(RowReport {
        line: p.line,
        payout_id: p.payout_id,
        outcome,
    });
}

/// Many payout ids at once: each round sends the next row of every group in one batch
/// request (distinct ids, so order within a request does not matter), until every group
/// is done. Rows of one id still go one after the other, in file order.
async fn send_groups_batched(
    shared: &Shared,
    groups: Vec<Vec<Pending>>,
    reports: &mut Vec<RowReport>,
) {
    let mut groups: Vec<VecDeque<Pending>> = groups.into_iter().map(VecDeque::from).collect();
    let mut blocked_by: Vec<Option<usize>> = vec![None; groups.len()];
    loop {
        let mut round: Vec<(usize, Pending)> = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            let Some(p) = group.pop_front() else { continue };
            match not_sent(shared, blocked_by[g]) {
                Some(o) => finish(shared, p, o, &mut blocked_by[g], reports),
                None => round.push((g, p)),
            }
        }
        if round.is_empty() {
            return;
        }
        let outcomes = send_batch_with_retries(shared, &round).await;
        for ((g, p), outcome) in round.into_iter().zip(outcomes) {
            finish(shared, p, outcome, &mut blocked_by[g], reports);
        }
    }
}

/// One batch request's answer, as the retry loop sees it.
enum BatchAttempt {
    /// One answer per row sent, in order.
    Items(Vec<Attempt>),
    /// The whole request is worth another try.
    Retry(String),
    Unauthorized(String),
    /// The service does not take this batch: send the rows one by one.
    Unsupported,
}

/// The outcome of every row of `round`, retrying rows whose answer was not final (the
/// whole request, or single items answered `unavailable`) within the retry budget.
async fn send_batch_with_retries(shared: &Shared, round: &[(usize, Pending)]) -> Vec<Outcome> {
    let attempts = shared.retries + 1;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; round.len()];
    let mut last: Vec<String> = vec![String::new(); round.len()];
    for attempt in 1..=attempts {
        let open: Vec<usize> = (0..round.len())
            .filter(|k| outcomes[*k].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let requests: Vec<&RawPayoutRequest> = open.iter().map(|k| &round[*k].1.request).collect();
        match send_batch_once(shared, &requests).await {
            BatchAttempt::Items(answers) => {
                for (k, answer) in open.iter().zip(answers) {
                    match answer {
                        Attempt::Done(o) => outcomes[*k] = Some(o),
                        Attempt::Retry(reason) => last[*k] = reason,
                        Attempt::Unauthorized(reason) => {
                            shared.auth_refused.store(true, Ordering::Relaxed);
                            outcomes[*k] = Some(Outcome::Failed { reason });
                        }
                    }
                }
            }
            BatchAttempt::Retry(reason) => {
                for k in &open {
                    last[*k] = reason.clone();
                }
            }
            BatchAttempt::Unauthorized(reason) => {
                shared.auth_refused.store(true, Ordering::Relaxed);
                for k in &open {
                    outcomes[*k] = Some(Outcome::Failed {
                        reason: reason.clone(),
                    });
                }
            }
            BatchAttempt::Unsupported => {
                shared.batch_ok.store(false, Ordering::Relaxed);
                for k in &open {
                    outcomes[*k] = Some(send_with_retries(shared, &round[*k].1).await);
                }
            }
        }
        let still = outcomes.iter().filter(|o| o.is_none()).count();
        if still > 0 && attempt < attempts {
            shared.tally.retries.fetch_add(still, Ordering::Relaxed);
            tokio::time::sleep(backoff(shared.backoff_base_ms, attempt, round[0].1.line)).await;
        }
    }
    outcomes
        .into_iter()
        .zip(last)
        .map(|(o, last)| {
            o.unwrap_or_else(|| Outcome::Failed {
                reason: format!(
                    "{last} (gave up after {attempts} attempt{})",
                    if attempts == 1 { "" } else { "s" }
                ),
            })
        })
        .collect()
}

async fn send_batch_once(shared: &Shared, requests: &[&RawPayoutRequest]) -> BatchAttempt {
    let body = serde_json::json!({ "payouts": requests });
    let mut call = shared
        .client
        .post(shared.batch_endpoint.clone())
        .json(&body);
    if let Some(auth) = &shared.auth {
        call = call.header(AUTHORIZATION, auth.clone());
    }
    let response = match call.send().await {
        Ok(r) => r,
        Err(e) => return BatchAttempt::Retry(transport_failure(e)),
    };
    let status = response.status();
    let body = read_body_max(response, BATCH_RESPONSE_BYTES_MAX).await;
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let (code, _, message) = error_parts(status, &body);
            return BatchAttempt::Unauthorized(format!("HTTP {status}: {code}: {message}"));
        }
        s if s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS =>
        {
            let (code, _, message) = error_parts(status, &body);
            return BatchAttempt::Retry(format!("HTTP {status}: {code}: {message}"));
        }
        // No batch endpoint, a batch too large for this service, …: one by one.
        _ => return BatchAttempt::Unsupported,
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let Some(items) = parsed
        .as_ref()
        .and_then(|v| v.get("results"))
        .and_then(|r| r.as_array())
        .filter(|r| r.len() == requests.len())
    else {
        // An answer we cannot read: sending again is safe (a resent row is a duplicate).
        return BatchAttempt::Retry("unreadable batch answer".into());
    };
    let mut answers: Vec<Option<Attempt>> = (0..requests.len()).map(|_| None).collect();
    for item in items {
        let text = |key: &str| item.get(key).and_then(|v| v.as_str()).map(redact_secrets);
        let Some(index) = item
            .get("index")
            .and_then(|i| i.as_u64())
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < requests.len())
        else {
            return BatchAttempt::Retry("batch answer without a valid index".into());
        };
        let code = text("code").unwrap_or_default();
        let message = text("message").unwrap_or_default();
        answers[index] = Some(match item.get("status").and_then(|s| s.as_str()) {
            Some("created") => Attempt::Done(Outcome::Created),
            Some("duplicate") => Attempt::Done(Outcome::Duplicate),
            Some("conflict") => Attempt::Done(Outcome::Conflict { code, message }),
            Some("invalid") => Attempt::Done(Outcome::Invalid {
                code,
                field: text("field"),
                message,
            }),
            Some("unavailable") => Attempt::Retry(format!("unavailable: {code}: {message}")),
            other => Attempt::Done(Outcome::Failed {
                reason: format!("unexpected batch item status {other:?}"),
            }),
        });
    }
    match answers.into_iter().collect::<Option<Vec<Attempt>>>() {
        Some(all) => BatchAttempt::Items(all),
        None => BatchAttempt::Retry("batch answer misses some rows".into()),
    }
}

async fn send_with_retries(shared: &Shared, p: &Pending) -> Outcome {
    let attempts = shared.retries + 1;
    let mut last = String::new();
    for attempt in 1..=attempts {
        match send_once(shared, &p.request).await {
            Attempt::Done(outcome) => return outcome,
            Attempt::Unauthorized(reason) => {
                shared.auth_refused.store(true, Ordering::Relaxed);
                return Outcome::Failed { reason };
            }
            Attempt::Retry(reason) => last = reason,
        }
        if attempt < attempts {
            shared.tally.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(shared.backoff_base_ms, attempt, p.line)).await;
        }
    }
    Outcome::Failed {
        reason: format!(
            "{last} (gave up after {attempts} attempt{})",
            if attempts == 1 { "" } else { "s" }
        ),
    }
}

/// Pause before retry number `attempt` (1-based): doubling from `base_ms`, at most
/// `BACKOFF_MAX_MS`, plus up to half of that again, spread by line so that rows that failed
/// together do not all come back at the same instant.
fn backoff(base_ms: u64, attempt: u32, line: usize) -> Duration {
    let step = base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_MS);
    let spread = (line as u64).wrapping_mul(2_654_435_761) % (step / 2 + 1);
    Duration::from_millis(step + spread)
}

async fn send_once(shared: &Shared, request: &RawPayoutRequest) -> Attempt {
    let mut call = shared.client.post(shared.endpoint.clone()).json(request);
    if let Some(auth) = &shared.auth {
        call = call.header(AUTHORIZATION, auth.clone());
    }
    let response = match call.send().await {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(transport_failure(e)),
    };
    let status = response.status();
    match status {
        StatusCode::ACCEPTED => return Attempt::Done(Outcome::Created),
        StatusCode::OK => return Attempt::Done(Outcome::Duplicate),
        _ => {}
    }
    let body = read_body(response).await;
    let (code, field, message) = error_parts(status, &body);
    match status {
        StatusCode::CONFLICT => Attempt::Done(Outcome::Conflict { code, message }),
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::PAYLOAD_TOO_LARGE => Attempt::Done(Outcome::Invalid {
            code,
            field,
            message,
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Attempt::Unauthorized(format!("HTTP {status}: {code}: {message}"))
        }
        s if s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS =>
        {
            Attempt::Retry(format!("HTTP {status}: {code}: {message}"))
        }
        _ => Attempt::Done(Outcome::Failed {
            reason: format!("unexpected HTTP {status}: {code}: {message}"),
        }),
    }
}

/// A request that got no answer, described for the report.
fn transport_failure(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error_chain(e))
}

/// The error and its causes, one after the other. `without_url`: the URL may carry
/// credentials.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

async fn read_body(response: reqwest::Response) -> Vec<u8> {
    read_body_max(response, RESPONSE_BYTES_MAX).await
}

async fn read_body_max(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Code, field and message of an API error body (`{"error": {"code", "message", "field"}}`),
/// or stand-ins when the body is something else.
fn error_parts(status: StatusCode, body: &[u8]) -> (String, Option<String>, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(|v| v.as_str())
            .map(redact_secrets)
    };
    let code = text("code").unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let message = text("message").unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(&body[..body.len().min(200)]);
        let raw = raw.trim();
        if raw.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned()
        } else {
            redact_secrets(raw)
        }
    });
    (code, text("field"), message)
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
