//! A small Horizon client: the documented endpoints and fields listed in docs/protocol.md, nothing more.
//!
//! `GET /`, `GET /accounts/{id}`, `POST /transactions` (form field `tx`) and
//! `GET /transactions/{hash}`. Submission answers are classified as docs/result-codes.md says, and the
//! rule that matters most is the negative one: a timeout, a 5xx, a 429, a dropped
//! connection or a body we cannot read is `Unknown`, never a failure, because the
//! transaction may still be (or already be) in a ledger.

use std::fmt;
use std::time::Duration;

use payoutd_actors::domain::AccountId;
use payoutd_actors::ports::{
    Coverage, Inclusion, LedgerHead, Lookup, SequenceRead, SubmitOutcome, TxHash,
};
use serde::{Deserialize, Deserializer};
use stellar_xdr::{
    CreateAccountResult, CreateClaimableBalanceResult, InnerTransactionResultResult, Limits,
    OperationResult, OperationResultTr, PaymentResult, ReadXdr, TransactionResult,
    TransactionResultResult,
};

/// Longest piece of a response body quoted in an error, in characters: enough to see what
/// went wrong, too short to flood a log with a whole page.
pub const BODY_SNIPPET_CHARS_MAX: usize = 120;
/// Largest response body read, in bytes. Horizon's resources are a few KiB.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// Deepest nesting accepted when decoding XDR from Horizon, in levels (a result is ~10 deep).
const XDR_DEPTH_MAX: u32 = 200;

/// The problem type Horizon uses for a transaction that core refused or that failed.
const PROBLEM_TRANSACTION_FAILED: &str = "transaction_failed";

/// Timeouts of every Horizon request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HorizonTimeouts {
    /// Whole request, connect to last body byte. Longer than Horizon's own submission
    /// timeout (30 s, after which it answers 504) so that its answer arrives first.
    pub request_timeout_ms: u64,
    /// TCP (and TLS) connection establishment.
    pub connect_timeout_ms: u64,
}

impl Default for HorizonTimeouts {
    fn default() -> Self {
        Self {
            request_timeout_ms: 35_000,
            connect_timeout_ms: 5_000,
        }
    }
}

/// A failed exchange with Horizon. Never carries more of a body than a short snippet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HorizonError {
    #[error("invalid Horizon URL: {0}")]
    InvalidUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("Horizon did not answer within the request timeout")]
    Timeout,
    #[error("cannot reach Horizon: {0}")]
    Transport(String),
    #[error("Horizon answered HTTP {status}: {snippet}")]
    Status { status: u16, snippet: String },
    #[error("cannot parse Horizon's answer (HTTP {status}): {detail}")]
    Decode { status: u16, detail: String },
}

/// What `GET /` says about the network and its last ingested ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootInfo {
    pub network_passphrase: String,
    pub history_latest_ledger: u32,
    /// The oldest ledger the answering node still holds (`None` if it did not say).
    pub history_elder_ledger: Option<u32>,
    /// `history_latest_ledger_closed_at` in unix seconds (0 if Horizon has no history yet).
    pub history_latest_ledger_closed_at: u64,
}

/// An HTTP client bound to one Horizon.
#[derive(Clone)]
pub struct HorizonClient {
    http: reqwest::Client,
    /// Without a trailing slash; paths are appended to it. May carry credentials (a
    /// provider's key in the userinfo, the path or the query): never shown.
    base_url: String,
    /// What may be shown of the URL: scheme, host and port only.
    display_url: String,
    /// The highest `history_elder_ledger` any answer of `GET /` reported: behind a load
    /// balancer, a lookup may come from any node, so a "not found" is taken to cover only
    /// the history the least-provisioned node seen keeps (and never more than a `GET /`
    /// read after the lookup says: see `transaction`).
    elder_floor: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl fmt::Debug for HorizonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HorizonClient")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

/// A response read whole (up to `RESPONSE_BYTES_MAX`, or the limit the caller gave).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// The `Latest-Ledger` header: the last ledger the answering node had ingested.
    pub(crate) latest_ledger: Option<u32>,
}

/// Scheme, host and port of a URL: what logs, errors and `Debug` may show of it. Userinfo,
/// path and query are dropped (API keys live there).
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let hidden = !url.username().is_empty()
        || url.password().is_some()
        || !url.path().trim_matches('/').is_empty()
        || url.query().is_some();
    if hidden {
        out.push_str("/…");
    }
    out
}

impl Reply {
    pub(crate) fn snippet(&self) -> String {
        snippet(&String::from_utf8_lossy(&self.body))
    }

    /// Horizon answers with JSON objects only; anything else (an array would satisfy serde's
    /// positional struct form) is not a Horizon answer.
    pub(crate) fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, HorizonError> {
        let decode = |detail: String| HorizonError::Decode {
            status: self.status,
            detail: snippet(&detail),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&self.body).map_err(|e| decode(e.to_string()))?;
        if !value.is_object() {
            return Err(decode("the answer is not a JSON object".into()));
        }
        serde_json::from_value(value).map_err(|e| decode(e.to_string()))
    }
}

impl HorizonClient {
    /// A client for the Horizon at `base_url` (`http://` or `https://`, any path prefix).
    pub fn new(base_url: &str, timeouts: HorizonTimeouts) -> Result<Self, HorizonError> {
        let url =
            reqwest::Url::parse(base_url).map_err(|e| HorizonError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HorizonError::InvalidUrl(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if url.fragment().is_some() {
            return Err(HorizonError::InvalidUrl("must not have a fragment".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeouts.request_timeout_ms))
            .connect_timeout(Duration::from_millis(timeouts.connect_timeout_ms))
            .user_agent(concat!("payoutd-stellar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HorizonError::Client(error_chain(e)))?;
        // A query (some providers put their key there) is kept and sent after every path.
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        let mut base = url.clone();
        base.set_query(None);
        Ok(Self {
            http,
            base_url: format!("{}{query}", base.as_str().trim_end_matches('/')),
            display_url: redact_url(&url),
            elder_floor: Default::default(),
        })
    }

    /// The URL as it may be shown (no credentials).
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    fn url(&self, path: &str) -> String {
        match self.base_url.split_once('?') {
            Some((base, query)) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{base}{path}{sep}{query}")
            }
            None => format!("{}{path}", self.base_url),
        }
    }

    /// `GET /`: the network passphrase and the last ingested ledger.
    pub async fn root(&self) -> Result<RootInfo, HorizonError> {
        #[derive(Deserialize)]
        struct Root {
            network_passphrase: String,
            history_latest_ledger: u32,
            history_latest_ledger_closed_at: String,
            #[serde(default)]
            history_elder_ledger: Option<u32>,
        }
        let reply = self.get("/").await?;
        if reply.status != 200 {
            return Err(HorizonError::Status {
                status: reply.status,
                snippet: reply.snippet(),
            });
        }
        let root: Root = reply.json()?;
        let closed_at = parse_rfc3339(&root.history_latest_ledger_closed_at).ok_or_else(|| {
            HorizonError::Decode {
                status: reply.status,
                detail: format!(
                    "history_latest_ledger_closed_at {:?} is not an RFC 3339 time",
                    snippet(&root.history_latest_ledger_closed_at)
                ),
            }
        })?;
        if let Some(elder) = root.history_elder_ledger {
            self.elder_floor
                .fetch_max(elder, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(RootInfo {
            network_passphrase: root.network_passphrase,
            history_latest_ledger: root.history_latest_ledger,
            history_elder_ledger: root.history_elder_ledger,
            // A Horizon without history reports Go's zero time (year 1). Clamping to 0 is
            // the safe side: an earlier close time never proves an envelope expired.
            history_latest_ledger_closed_at: u64::try_from(closed_at).unwrap_or(0),
        })
    }

    /// The last closed (ingested) ledger, from `GET /`.
    pub async fn latest_ledger(&self) -> Result<LedgerHead, HorizonError> {
        let root = self.root().await?;
        Ok(LedgerHead {
            sequence: root.history_latest_ledger,
            close_time: root.history_latest_ledger_closed_at,
        })
    }

    /// `GET /accounts/{id}`: the account's sequence number (`None` if it does not exist) as
    /// of the answering node's `Latest-Ledger`.
    pub async fn account_sequence(
        &self,
        account: &AccountId,
    ) -> Result<SequenceRead, HorizonError> {
        #[derive(Deserialize)]
        struct Account {
            #[serde(deserialize_with = "i64_from_string_or_number")]
            sequence: i64,
        }
        let reply = self
            .get(&format!("/accounts/{}", account.to_strkey()))
            .await?;
        let read = |sequence| SequenceRead {
            sequence,
            as_of_ledger: reply.latest_ledger,
        };
        match reply.status {
            200 => Ok(read(Some(reply.json::<Account>()?.sequence))),
            404 => Ok(read(None)),
            status => Err(HorizonError::Status {
                status,
                snippet: reply.snippet(),
            }),
        }
    }

    /// `GET /transactions/{hash}`: applied, failed (with its codes) or not found. A "not
    /// found" covers the ledgers from an elder read *after* it (see `miss_coverage`) to
    /// the answer's `Latest-Ledger`; without that header, or without that read, it covers
    /// nothing.
    pub async fn transaction(&self, hash: &TxHash) -> Result<Lookup, HorizonError> {
        let reply = self
            .get(&format!("/transactions/{}", hash.to_hex()))
            .await?;
        match reply.status {
            200 => {
                let resource: TransactionResource = reply.json()?;
                resource.check_hash(hash, reply.status)?;
                Ok(resource.into_lookup())
            }
            404 => Ok(Lookup::NotFound(
                self.miss_coverage(hash, reply.latest_ledger).await,
            )),
            status => Err(HorizonError::Status {
                status,
                snippet: reply.snippet(),
            }),
        }
    }

    /// What a 404 for `hash`, answered by a node that had ingested up to `latest`, covers
    /// (docs/protocol.md, "The reach of a \"not found\""). The elder that bounds it is the
    /// answering node's at the moment of the lookup; an elder read before the lookup does
    /// not bound it (history pruned in between takes a transaction out of the lookup's
    /// reach), so `GET /` is read again now. A node's elder only grows, so an elder read
    /// after the 404 from the same node is at least the one it answered from; a read from a
    /// node behind the one that answered (its latest ledger below `latest`) is another
    /// node's and bounds nothing. The coverage starts at the highest elder any `GET /` ever
    /// reported, this read included: behind a load balancer the two requests may reach
    /// different nodes, and that is the least history any node seen keeps.
    async fn miss_coverage(&self, hash: &TxHash, latest: Option<u32>) -> Option<Coverage> {
        let latest = latest?;
        let root = match self.root().await {
            Ok(root) => root,
            Err(e) => {
                tracing::debug!(%hash, error = %e, "no elder read after a miss: it proves nothing");
                return None;
            }
        };
        let elder = root.history_elder_ledger.filter(|&e| e > 0)?;
        if root.history_latest_ledger < latest {
            tracing::debug!(
                %hash,
                lookup_latest = latest,
                root_latest = root.history_latest_ledger,
                "the elder read after a miss came from a node behind the one that answered: the miss proves nothing"
            );
            return None;
        }
        // `root` raised `elder_floor` to at least `elder`.
        let oldest = self
            .elder_floor
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(elder);
        Some(Coverage { oldest, latest })
    }

    /// `POST /transactions` with exactly `envelope_xdr`, classified as docs/result-codes.md says.
    /// `hash` is the envelope's hash, used to look an included-but-failed one up.
    pub async fn submit(&self, envelope_xdr: &str, hash: &TxHash) -> SubmitOutcome {
        let reply = match self
            .post_form("/transactions", &[("tx", envelope_xdr)])
            .await
        {
            Ok(reply) => reply,
            Err(e) => return unknown(hash, format!("submission: {e}")),
        };
        match classify_submit_reply(&reply, hash) {
            Classified::Done(outcome) => outcome,
            Classified::IncludedFailed { tx_code, op_codes } => {
                // `tx_failed` means core applied the transaction in a ledger (fee and
                // sequence consumed); the ledger and the fee come from its resource.
                match self.transaction(hash).await {
                    Ok(Lookup::Failed { inclusion, .. }) => SubmitOutcome::Failed {
                        inclusion,
                        tx_code,
                        op_codes,
                    },
                    Ok(Lookup::Applied(inclusion)) => {
                        tracing::warn!(%hash, %tx_code, "Horizon reported a failure, the ledger shows success");
                        SubmitOutcome::Applied(inclusion)
                    }
                    Ok(Lookup::NotFound(_)) => unknown(
                        hash,
                        format!(
                            "Horizon answered {tx_code} but the transaction is not found (yet)"
                        ),
                    ),
                    Err(e) => unknown(
                        hash,
                        format!("Horizon answered {tx_code}; looking it up failed: {e}"),
                    ),
                }
            }
        }
    }

    /// Every read takes part in a proof (of death, of the head), so none may come from a
    /// cache between us and Horizon.
    async fn get(&self, path: &str) -> Result<Reply, HorizonError> {
        self.get_limited(path, RESPONSE_BYTES_MAX).await
    }

    /// `GET path` (after the base URL, its key path and query kept), the body read up to
    /// `bytes_max` bytes: the history listings (`crate::history`) read larger pages.
    pub(crate) async fn get_limited(
        &self,
        path: &str,
        bytes_max: usize,
    ) -> Result<Reply, HorizonError> {
        let response = self
            .http
            .get(self.url(path))
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .send()
            .await
            .map_err(transport_error)?;
        read_reply(response, bytes_max).await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Reply, HorizonError> {
        let url = self.url(path);
        let response = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .map_err(transport_error)?;
        read_reply(response, RESPONSE_BYTES_MAX).await
    }
}

fn unknown(hash: &TxHash, detail: String) -> SubmitOutcome {
    tracing::debug!(%hash, %detail, "submission outcome unknown");
    SubmitOutcome::Unknown { detail }
}

async fn read_reply(
    mut response: reqwest::Response,
    bytes_max: usize,
) -> Result<Reply, HorizonError> {
    let status = response.status().as_u16();
    let latest_ledger = response
        .headers()
        .get("latest-ledger")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > bytes_max {
            return Err(HorizonError::Decode {
                status,
                detail: format!("body is larger than {bytes_max} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        body,
        latest_ledger,
    })
}

fn transport_error(error: reqwest::Error) -> HorizonError {
    if error.is_timeout() {
        HorizonError::Timeout
    } else {
        // Without the URL: a base URL may carry credentials (user:pass@ or a key path).
        HorizonError::Transport(error_chain(error.without_url()))
    }
}

/// The error and its causes on one line, shortened.
pub(crate) fn error_chain(error: impl std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    snippet(&text)
}

/// At most `BODY_SNIPPET_CHARS_MAX` characters of `text`, on one line.
pub(crate) fn snippet(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(BODY_SNIPPET_CHARS_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(BODY_SNIPPET_CHARS_MAX).is_some() {
        out.push('…');
    }
    out
}

/// The part of Horizon's transaction resource that we read.
#[derive(Debug, Deserialize)]
struct TransactionResource {
    hash: String,
    ledger: u32,
    successful: bool,
    /// A string in current Horizon, a number in older versions: both are accepted.
    #[serde(deserialize_with = "i64_from_string_or_number")]
    fee_charged: i64,
    #[serde(default)]
    result_xdr: Option<String>,
}

impl TransactionResource {
    /// The resource must be the one asked for; anything else is an answer we cannot use.
    fn check_hash(&self, expected: &TxHash, status: u16) -> Result<(), HorizonError> {
        if self.hash.eq_ignore_ascii_case(&expected.to_hex()) {
            Ok(())
        } else {
            Err(HorizonError::Decode {
                status,
                detail: format!("resource is for hash {}", snippet(&self.hash)),
            })
        }
    }

    fn into_lookup(self) -> Lookup {
        let inclusion = Inclusion {
            ledger: self.ledger,
            fee_charged: self.fee_charged,
        };
        if self.successful {
            return Lookup::Applied(inclusion);
        }
        let codes = self.result_xdr.as_deref().and_then(|xdr| {
            let limits = Limits {
                depth: XDR_DEPTH_MAX,
                len: RESPONSE_BYTES_MAX,
            };
            TransactionResult::from_xdr_base64(xdr, limits)
                .ok()
                .map(|r| result_codes(&r.result))
        });
        let (tx_code, op_codes) = codes.unwrap_or_else(|| {
            // Included and failed is certain (`successful: false`); only the detail is lost.
            tracing::warn!(hash = %self.hash, "failed transaction without a readable result_xdr");
            (UNKNOWN_CODE.to_owned(), Vec::new())
        });
        Lookup::Failed {
            inclusion,
            tx_code,
            op_codes,
        }
    }
}

/// The code reported when a failed transaction's result cannot be decoded.
pub const UNKNOWN_CODE: &str = "unknown";

/// Horizon's `type` is a URL; its last segment names the problem.
#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    extras: Option<ProblemExtras>,
}

#[derive(Debug, Deserialize)]
struct ProblemExtras {
    #[serde(default)]
    result_codes: Option<ResultCodes>,
}

#[derive(Debug, Deserialize)]
struct ResultCodes {
    transaction: String,
    #[serde(default)]
    operations: Vec<String>,
    /// Fee-bump envelopes report the inner transaction's codes here.
    #[serde(default)]
    inner_transaction: Option<Box<ResultCodes>>,
}

/// What a `POST /transactions` reply says before any follow-up lookup.
#[derive(Debug, PartialEq, Eq)]
enum Classified {
    Done(SubmitOutcome),
    /// `tx_failed`: included in a ledger; the ledger and fee need a lookup.
    IncludedFailed {
        tx_code: String,
        op_codes: Vec<String>,
    },
}

fn classify_submit_reply(reply: &Reply, hash: &TxHash) -> Classified {
    let unknown_reply = |why: &str| {
        Classified::Done(SubmitOutcome::Unknown {
            detail: format!("HTTP {} {why}: {}", reply.status, reply.snippet()),
        })
    };
    match reply.status {
        200 => {
            let Ok(resource) = reply.json::<TransactionResource>() else {
                return unknown_reply("with an unreadable transaction resource");
            };
            if resource.check_hash(hash, reply.status).is_err() {
                return unknown_reply("for another transaction");
            }
            Classified::Done(match resource.into_lookup() {
                Lookup::Applied(inclusion) => SubmitOutcome::Applied(inclusion),
                Lookup::Failed {
                    inclusion,
                    tx_code,
                    op_codes,
                } => SubmitOutcome::Failed {
                    inclusion,
                    tx_code,
                    op_codes,
                },
                // `into_lookup` never answers NotFound for a resource; kept total anyway.
                Lookup::NotFound(_) => return unknown_reply("without the transaction"),
            })
        }
        400 => {
            let Ok(problem) = reply.json::<Problem>() else {
                return unknown_reply("with an unreadable problem");
            };
            let slug = problem
                .kind
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            if slug != PROBLEM_TRANSACTION_FAILED {
                // e.g. `transaction_malformed`: refused before reaching a ledger.
                return Classified::Done(SubmitOutcome::Rejected { code: slug });
            }
            let Some(codes) = problem.extras.and_then(|e| e.result_codes) else {
                return unknown_reply("transaction_failed without result codes");
            };
            match codes.transaction.as_str() {
                "tx_failed" | "tx_fee_bump_inner_failed" => {
                    let op_codes = match codes.inner_transaction {
                        Some(inner) if codes.operations.is_empty() => inner.operations,
                        _ => codes.operations,
                    };
                    Classified::IncludedFailed {
                        tx_code: codes.transaction,
                        op_codes,
                    }
                }
                _ => Classified::Done(SubmitOutcome::Rejected {
                    code: codes.transaction,
                }),
            }
        }
        // 504 (Horizon gave up waiting), 503 (try again later), other 5xx, 429, and any
        // status Horizon does not document for this endpoint: the fate is not known.
        _ => unknown_reply("(outcome not known)"),
    }
}

/// Horizon's snake_case names for a transaction result and its operations' results.
pub fn result_codes(result: &TransactionResultResult) -> (String, Vec<String>) {
    let ops =
        |ops: &[OperationResult]| ops.iter().map(|op| operation_code(op).to_owned()).collect();
    match result {
        TransactionResultResult::TxSuccess(o) => ("tx_success".into(), ops(o)),
        TransactionResultResult::TxFailed(o) => ("tx_failed".into(), ops(o)),
        TransactionResultResult::TxFeeBumpInnerSuccess(pair) => (
            "tx_fee_bump_inner_success".into(),
            inner_operation_codes(&pair.result.result),
        ),
        TransactionResultResult::TxFeeBumpInnerFailed(pair) => (
            "tx_fee_bump_inner_failed".into(),
            inner_operation_codes(&pair.result.result),
        ),
        TransactionResultResult::TxTooEarly => ("tx_too_early".into(), Vec::new()),
        TransactionResultResult::TxTooLate => ("tx_too_late".into(), Vec::new()),
        TransactionResultResult::TxMissingOperation => ("tx_missing_operation".into(), Vec::new()),
        TransactionResultResult::TxBadSeq => ("tx_bad_seq".into(), Vec::new()),
        TransactionResultResult::TxBadAuth => ("tx_bad_auth".into(), Vec::new()),
        TransactionResultResult::TxInsufficientBalance => {
            ("tx_insufficient_balance".into(), Vec::new())
        }
        TransactionResultResult::TxNoAccount => ("tx_no_source_account".into(), Vec::new()),
        TransactionResultResult::TxInsufficientFee => ("tx_insufficient_fee".into(), Vec::new()),
        TransactionResultResult::TxBadAuthExtra => ("tx_bad_auth_extra".into(), Vec::new()),
        TransactionResultResult::TxInternalError => ("tx_internal_error".into(), Vec::new()),
        TransactionResultResult::TxNotSupported => ("tx_not_supported".into(), Vec::new()),
        TransactionResultResult::TxBadSponsorship => ("tx_bad_sponsorship".into(), Vec::new()),
        TransactionResultResult::TxBadMinSeqAgeOrGap => {
            ("tx_bad_minseq_age_or_gap".into(), Vec::new())
        }
        TransactionResultResult::TxMalformed => ("tx_malformed".into(), Vec::new()),
        TransactionResultResult::TxSorobanInvalid => ("tx_soroban_invalid".into(), Vec::new()),
        TransactionResultResult::TxFrozenKeyAccessed => {
            ("tx_frozen_key_accessed".into(), Vec::new())
        }
    }
}

fn inner_operation_codes(result: &InnerTransactionResultResult) -> Vec<String> {
    match result {
        InnerTransactionResultResult::TxSuccess(ops)
        | InnerTransactionResultResult::TxFailed(ops) => {
            ops.iter().map(|op| operation_code(op).to_owned()).collect()
        }
        _ => Vec::new(),
    }
}

/// Horizon's name for one operation's result. The three kinds this crate builds (payment,
/// create-account, create-claimable-balance) get their specific codes; other operation
/// types report the generic `op_inner`.
pub fn operation_code(result: &OperationResult) -> &'static str {
    match result {
        OperationResult::OpInner(OperationResultTr::Payment(payment)) => match payment {
            PaymentResult::Success => "op_success",
            PaymentResult::Malformed => "op_malformed",
            PaymentResult::Underfunded => "op_underfunded",
            PaymentResult::SrcNoTrust => "op_src_no_trust",
            PaymentResult::SrcNotAuthorized => "op_src_not_authorized",
            PaymentResult::NoDestination => "op_no_destination",
            PaymentResult::NoTrust => "op_no_trust",
            PaymentResult::NotAuthorized => "op_not_authorized",
            PaymentResult::LineFull => "op_line_full",
            PaymentResult::NoIssuer => "op_no_issuer",
        },
        OperationResult::OpInner(OperationResultTr::CreateAccount(r)) => match r {
            CreateAccountResult::Success => "op_success",
            CreateAccountResult::Malformed => "op_malformed",
            CreateAccountResult::Underfunded => "op_underfunded",
            CreateAccountResult::LowReserve => "op_low_reserve",
            CreateAccountResult::AlreadyExist => "op_already_exists",
        },
        OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(r)) => match r {
            CreateClaimableBalanceResult::Success(_) => "op_success",
            CreateClaimableBalanceResult::Malformed => "op_malformed",
            CreateClaimableBalanceResult::LowReserve => "op_low_reserve",
            CreateClaimableBalanceResult::NoTrust => "op_no_trust",
            CreateClaimableBalanceResult::NotAuthorized => "op_not_authorized",
            CreateClaimableBalanceResult::Underfunded => "op_underfunded",
        },
        OperationResult::OpInner(_) => "op_inner",
        OperationResult::OpBadAuth => "op_bad_auth",
        OperationResult::OpNoAccount => "op_no_source_account",
        OperationResult::OpNotSupported => "op_not_supported",
        OperationResult::OpTooManySubentries => "op_too_many_subentries",
        OperationResult::OpExceededWorkLimit => "op_exceeded_work_limit",
        OperationResult::OpTooManySponsoring => "op_too_many_sponsoring",
    }
}

/// Accepts `"123"` or `123` (Horizon moved several int64 fields to strings over time).
pub(crate) fn i64_from_string_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrNumber {
        Number(i64),
        String(String),
    }
    match StringOrNumber::deserialize(deserializer)? {
        StringOrNumber::Number(n) => Ok(n),
        StringOrNumber::String(s) => {
            // Plain decimal digits with an optional minus: no "+", no spaces.
            let digits = s.strip_prefix('-').unwrap_or(&s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(serde::de::Error::custom("not a decimal integer"));
            }
            s.parse()
                .map_err(|_| serde::de::Error::custom("integer out of range"))
        }
    }
}

/// Parses an RFC 3339 time (`2024-05-01T12:34:56Z`, optional fraction, `Z` or `±hh:mm`)
/// into unix seconds; fractions are dropped. `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            Some(
                part.iter()
                    .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
            )
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60 is a leap second; counting it as 59 errs towards the past (never early expiry).
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let minutes = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    let days = days_since_epoch(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_seconds)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    // Count whole years, then whole months of the final year; small loops over at most
    // 9999 years, only ever run once per `GET /`.
    let mut days = 0i64;
    if year >= 1970 {
        for y in 1970..year {
            days += if is_leap_year(y) { 366 } else { 365 };
        }
    } else {
        for y in year..1970 {
            days -= if is_leap_year(y) { 366 } else { 365 };
        }
    }
    for m in 1..month {
        days += days_in_month(year, m);
    }
    days + day - 1
}

#[cfg(test)]
mod tests {
    use stellar_xdr::{
        InnerTransactionResult, InnerTransactionResultExt, InnerTransactionResultPair,
        TransactionResultExt, WriteXdr,
    };

    use super::*;

    const HASH: &str = "40a1855a9afaa19fbef064c833132096ba0cd5283138c0013f6151dd0b21aee9";

    fn hash() -> TxHash {
        TxHash::from_hex(HASH).unwrap()
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            latest_ledger: None,
        }
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        for (url, shown) in [
            ("https://horizon.stellar.org", "https://horizon.stellar.org"),
            (
                "https://user:hunter2@h.example.com",
                "https://h.example.com/…",
            ),
            (
                "https://h.example.com/key-abc123/",
                "https://h.example.com/…",
            ),
            (
                "https://h.example.com?apikey=s3cr3t",
                "https://h.example.com/…",
            ),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ] {
            let c = HorizonClient::new(url, HorizonTimeouts::default()).unwrap();
            assert_eq!(c.display_url(), shown, "{url}");
            let debug = format!("{c:?}");
            for secret in ["hunter2", "key-abc123", "s3cr3t"] {
                assert!(!debug.contains(secret), "{debug}");
            }
        }
        let c = HorizonClient::new(
            "https://h.example.com/k/?apikey=s",
            HorizonTimeouts::default(),
        )
        .unwrap();
        assert_eq!(
            c.url("/accounts/G"),
            "https://h.example.com/k/accounts/G?apikey=s"
        );
    }

    fn failed_result_xdr(op: PaymentResult) -> String {
        TransactionResult {
            fee_charged: 100,
            result: TransactionResultResult::TxFailed(
                vec![OperationResult::OpInner(OperationResultTr::Payment(op))]
                    .try_into()
                    .unwrap(),
            ),
            ext: TransactionResultExt::V0,
        }
        .to_xdr_base64(Limits::none())
        .unwrap()
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2015-09-30T16:46:54Z"), Some(1_443_631_614));
        assert_eq!(parse_rfc3339("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.999999Z"),
            Some(1_709_251_199)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T01:00:00+01:00"),
            Some(1_709_251_200)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:00:00-01:00"),
            Some(1_709_251_200)
        );
        assert_eq!(parse_rfc3339("2000-01-01t00:00:00z"), Some(946_684_800));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(-62_135_596_800));
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01 00:00:00 UTC",
            "2024-1-01T00:00:00Z",
            "+024-01-01T00:00:00Z",
            "1715000000",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn string_or_number() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "i64_from_string_or_number")]
            v: i64,
        }
        let parse = |json: &str| serde_json::from_str::<T>(json).map(|t| t.v).ok();
        assert_eq!(
            parse(r#"{"v":"103420918407103888"}"#),
            Some(103_420_918_407_103_888)
        );
        assert_eq!(parse(r#"{"v":100}"#), Some(100));
        assert_eq!(parse(r#"{"v":"-1"}"#), Some(-1));
        assert_eq!(parse(r#"{"v":"9223372036854775808"}"#), None);
        assert_eq!(parse(r#"{"v":"+1"}"#), None);
        assert_eq!(parse(r#"{"v":" 1"}"#), None);
        assert_eq!(parse(r#"{"v":"1.5"}"#), None);
        assert_eq!(parse(r#"{"v":1.5}"#), None);
    }

    #[test]
    fn result_xdr_codes() {
        for (op, name) in [
            (PaymentResult::NoDestination, "op_no_destination"),
            (PaymentResult::Underfunded, "op_underfunded"),
            (PaymentResult::NoTrust, "op_no_trust"),
            (PaymentResult::LineFull, "op_line_full"),
            (PaymentResult::SrcNoTrust, "op_src_no_trust"),
            (PaymentResult::NotAuthorized, "op_not_authorized"),
            (PaymentResult::SrcNotAuthorized, "op_src_not_authorized"),
            (PaymentResult::Malformed, "op_malformed"),
            (PaymentResult::NoIssuer, "op_no_issuer"),
        ] {
            let xdr = failed_result_xdr(op);
            let result = TransactionResult::from_xdr_base64(&xdr, Limits::none()).unwrap();
            assert_eq!(
                result_codes(&result.result),
                ("tx_failed".to_owned(), vec![name.to_owned()])
            );
        }
        assert_eq!(
            result_codes(&TransactionResultResult::TxNoAccount).0,
            "tx_no_source_account"
        );
        assert_eq!(
            result_codes(&TransactionResultResult::TxBadSeq).0,
            "tx_bad_seq"
        );
        assert_eq!(
            operation_code(&OperationResult::OpNoAccount),
            "op_no_source_account"
        );
        let inner = TransactionResultResult::TxFeeBumpInnerFailed(InnerTransactionResultPair {
            transaction_hash: stellar_xdr::Hash([0; 32]),
            result: InnerTransactionResult {
                fee_charged: 100,
                result: InnerTransactionResultResult::TxFailed(
                    vec![OperationResult::OpInner(OperationResultTr::Payment(
                        PaymentResult::LineFull,
                    ))]
                    .try_into()
                    .unwrap(),
                ),
                ext: InnerTransactionResultExt::V0,
            },
        });
        assert_eq!(
            result_codes(&inner),
            (
                "tx_fee_bump_inner_failed".to_owned(),
                vec!["op_line_full".to_owned()]
            )
        );
    }

    #[test]
    fn classify_200() {
        let body = format!(
            r#"{{"hash":"{HASH}","ledger":7,"successful":true,"fee_charged":"100","result_xdr":"AAAA"}}"#
        );
        assert_eq!(
            classify_submit_reply(&reply(200, &body), &hash()),
            Classified::Done(SubmitOutcome::Applied(Inclusion {
                ledger: 7,
                fee_charged: 100
            }))
        );
        // Older Horizon: fee_charged as a number.
        let body = format!(r#"{{"hash":"{HASH}","ledger":7,"successful":true,"fee_charged":200}}"#);
        assert_eq!(
            classify_submit_reply(&reply(200, &body), &hash()),
            Classified::Done(SubmitOutcome::Applied(Inclusion {
                ledger: 7,
                fee_charged: 200
            }))
        );
        // 200 for another hash, or garbage: unknown, never applied.
        let other = format!(
            r#"{{"hash":"{}","ledger":7,"successful":true,"fee_charged":"100"}}"#,
            "00".repeat(32)
        );
        assert!(matches!(
            classify_submit_reply(&reply(200, &other), &hash()),
            Classified::Done(SubmitOutcome::Unknown { .. })
        ));
        assert!(matches!(
            classify_submit_reply(&reply(200, "<html>"), &hash()),
            Classified::Done(SubmitOutcome::Unknown { .. })
        ));
        // 200 with successful false: failed, codes from result_xdr.
        let body = format!(
            r#"{{"hash":"{HASH}","ledger":9,"successful":false,"fee_charged":"100","result_xdr":"{}"}}"#,
            failed_result_xdr(PaymentResult::NoDestination)
        );
        assert_eq!(
            classify_submit_reply(&reply(200, &body), &hash()),
            Classified::Done(SubmitOutcome::Failed {
                inclusion: Inclusion {
                    ledger: 9,
                    fee_charged: 100
                },
                tx_code: "tx_failed".into(),
                op_codes: vec!["op_no_destination".into()],
            })
        );
    }

    #[test]
    fn classify_400() {
        let problem = |tx: &str, ops: &str| {
            format!(
                r#"{{"type":"https://stellar.org/horizon-errors/transaction_failed","title":"Transaction Failed","status":400,"extras":{{"envelope_xdr":"AAAA","result_codes":{{"transaction":"{tx}","operations":{ops}}},"result_xdr":"AAAA"}}}}"#
            )
        };
        assert_eq!(
            classify_submit_reply(
                &reply(400, &problem("tx_failed", r#"["op_underfunded"]"#)),
                &hash()
            ),
            Classified::IncludedFailed {
                tx_code: "tx_failed".into(),
                op_codes: vec!["op_underfunded".into()]
            }
        );
        let bad_seq = problem("tx_bad_seq", "[]").replace(r#","operations":[]"#, "");
        assert_eq!(
            classify_submit_reply(&reply(400, &bad_seq), &hash()),
            Classified::Done(SubmitOutcome::Rejected {
                code: "tx_bad_seq".into()
            })
        );
        let malformed =
            r#"{"type":"https://stellar.org/horizon-errors/transaction_malformed","status":400}"#;
        assert_eq!(
            classify_submit_reply(&reply(400, malformed), &hash()),
            Classified::Done(SubmitOutcome::Rejected {
                code: "transaction_malformed".into()
            })
        );
        let no_codes =
            r#"{"type":"https://stellar.org/horizon-errors/transaction_failed","status":400}"#;
        assert!(matches!(
            classify_submit_reply(&reply(400, no_codes), &hash()),
            Classified::Done(SubmitOutcome::Unknown { .. })
        ));
        assert!(matches!(
            classify_submit_reply(&reply(400, "nope"), &hash()),
            Classified::Done(SubmitOutcome::Unknown { .. })
        ));
    }

    #[test]
    fn classify_everything_else_is_unknown() {
        for status in [201, 404, 409, 413, 429, 500, 502, 503, 504] {
            let out = classify_submit_reply(&reply(status, r#"{"type":"x"}"#), &hash());
            assert!(
                matches!(out, Classified::Done(SubmitOutcome::Unknown { .. })),
                "{status}: {out:?}"
            );
        }
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(10_000);
        let Classified::Done(SubmitOutcome::Unknown { detail }) =
            classify_submit_reply(&reply(502, &long), &hash())
        else {
            panic!("expected unknown");
        };
        assert!(detail.len() < BODY_SNIPPET_CHARS_MAX + 64, "{detail}");
    }
}
