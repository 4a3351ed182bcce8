//! A small Stellar RPC client: JSON-RPC 2.0 over HTTP POST, the documented methods and
//! fields payoutd needs, nothing more.
//!
//! `getNetwork` (the passphrase), `getHealth` (the history the server keeps),
//! `getLatestLedger` (the head), `getLedgerEntries` (an account's sequence number),
//! `sendTransaction` and `getTransaction`. Every ledger fact it returns says as of which
//! ledger it holds, from the answer's own `latestLedger`/`oldestLedger`: behind a provider's
//! load balancer, each answer may come from another node.
//!
//! The rule that matters most is the negative one, as for Horizon: a timeout, an HTTP 429 or
//! 5xx, a JSON-RPC error, a dropped connection or a body we cannot read leaves the fate of a
//! submission unknown, never failed. Submission is asynchronous: `PENDING` and `DUPLICATE`
//! say the server holds the transaction for inclusion, not that it was included; only
//! `getTransaction` answering `SUCCESS` or `FAILED` settles it.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use payoutd_actors::domain::AccountId;
use payoutd_actors::ports::{
    Coverage, Inclusion, LedgerHead, Lookup, SequenceRead, SubmitOutcome, TxHash,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use stellar_xdr::{
    LedgerEntryData, LedgerKey, LedgerKeyAccount, Limits, ReadXdr, TransactionResult,
    TransactionResultResult, WriteXdr,
};

use crate::horizon::{error_chain, redact_url, result_codes, snippet};

/// Largest response body read, in bytes. The answers payoutd asks for are a few KiB.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Deepest nesting accepted when decoding XDR from an RPC answer, in levels.
const XDR_DEPTH_MAX: u32 = 200;

/// The bounds of every RPC request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcTimeouts {
    /// Whole request, connect to last body byte, in milliseconds. `sendTransaction`
    /// answers at once (it never waits for inclusion), so this can be short.
    pub rpc_timeout_ms: u64,
    /// TCP (and TLS) connection establishment, in milliseconds.
    pub rpc_connect_timeout_ms: u64,
    /// Longest pause taken from a `Retry-After` header, in milliseconds: a provider's hint
    /// is honoured up to this, so a wrong header cannot silence payoutd for hours.
    pub rpc_retry_after_max_ms: u64,
}

impl Default for RpcTimeouts {
    fn default() -> Self {
        Self {
            rpc_timeout_ms: 10_000,
            rpc_connect_timeout_ms: 3_000,
            rpc_retry_after_max_ms: 60_000,
        }
    }
}

/// A failed exchange with the RPC server. Never carries more of a body than a short
/// snippet, and never the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("invalid RPC URL: {0}")]
    InvalidUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("the RPC server did not answer within rpc_timeout_ms")]
    Timeout,
    #[error("cannot reach the RPC server: {0}")]
    Transport(String),
    #[error("the RPC server answered HTTP {status}: {snippet}")]
    Status { status: u16, snippet: String },
    /// HTTP 429 (or a 503 with `Retry-After`): no request is sent before the hint passes.
    #[error("the RPC server asked to slow down (HTTP {status}); next request in {delay_ms} ms")]
    RateLimited { status: u16, delay_ms: u64 },
    /// A request not sent, because the server's `Retry-After` has not passed yet.
    #[error("not sent: the RPC server asked to wait another {remaining_ms} ms")]
    Backoff { remaining_ms: u64 },
    #[error("the RPC server answered {method} with JSON-RPC error {code}: {message}")]
    JsonRpc {
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("cannot read the RPC server's answer to {method}: {detail}")]
    Decode {
        method: &'static str,
        detail: String,
    },
}

/// What `getHealth` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    pub latest_ledger: u32,
    pub oldest_ledger: u32,
    /// How many ledgers of history the server keeps (transactions older than its
    /// `oldestLedger` are `NOT_FOUND` whether or not they were included).
    pub ledger_retention_window: u32,
}

/// One page of `getTransactions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionsPage {
    pub transactions: Vec<RpcTransaction>,
    /// The last ledger the answering server had ingested.
    #[serde(deserialize_with = "u32_lenient")]
    pub latest_ledger: u32,
}

/// One transaction of a `getTransactions` page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcTransaction {
    /// `SUCCESS` or `FAILED`.
    pub status: String,
    #[serde(deserialize_with = "u32_lenient")]
    pub application_order: u32,
    pub envelope_xdr: String,
    pub result_xdr: String,
    #[serde(deserialize_with = "u32_lenient")]
    pub ledger: u32,
    /// Its ledger's close time, unix seconds.
    #[serde(deserialize_with = "u64_lenient")]
    pub created_at: u64,
    pub tx_hash: String,
}

/// The raw status of a `sendTransaction` answer, counted for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendCounts {
    pub pending: u64,
    pub duplicate: u64,
    pub try_again_later: u64,
    pub error: u64,
}

/// A JSON-RPC client bound to one Stellar RPC endpoint.
pub struct RpcClient {
    http: reqwest::Client,
    /// Exactly as configured: may carry credentials (userinfo, path, query). Never shown.
    url: reqwest::Url,
    /// What may be shown of the URL: scheme, host and port only.
    display_url: String,
    next_id: AtomicU64,
    /// No request is sent before this instant (the server's last `Retry-After`).
    not_before: Mutex<Option<Instant>>,
    retry_after_max_ms: u64,
    sent: Mutex<SendCounts>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

/// How a `sendTransaction` answer is classified before any follow-up lookup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendClassified {
    Done(SubmitOutcome),
    /// `ERROR` with `tx_failed`: the transaction failed in core's checks; whether it is also
    /// in a ledger only `getTransaction` can say (as for Horizon's `tx_failed`).
    CheckIncluded {
        tx_code: String,
        op_codes: Vec<String>,
    },
}

impl RpcClient {
    /// A client for the RPC endpoint at `url` (`http://` or `https://`, any path and query,
    /// POSTed to as given).
    pub fn new(url: &str, timeouts: RpcTimeouts) -> Result<Self, RpcError> {
        // Never quote the URL in the error: it may carry a key.
        let url = reqwest::Url::parse(url).map_err(|e| RpcError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RpcError::InvalidUrl(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if url.fragment().is_some() {
            return Err(RpcError::InvalidUrl("must not have a fragment".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeouts.rpc_timeout_ms))
            .connect_timeout(Duration::from_millis(timeouts.rpc_connect_timeout_ms))
            .user_agent(concat!("payoutd-stellar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RpcError::Client(error_chain(e)))?;
        Ok(Self {
            http,
            display_url: redact_url(&url),
            url,
            next_id: AtomicU64::new(1),
            not_before: Mutex::new(None),
            retry_after_max_ms: timeouts.rpc_retry_after_max_ms,
            sent: Mutex::new(SendCounts::default()),
        })
    }

    /// The URL as it may be shown (no credentials).
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// How many `sendTransaction` answers of each status this client has seen.
    pub fn send_counts(&self) -> SendCounts {
        *self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `getNetwork`: the network passphrase the server serves.
    pub async fn network_passphrase(&self) -> Result<String, RpcError> {
        #[derive(Deserialize)]
        struct Network {
            passphrase: String,
        }
        Ok(self.call::<Network>("getNetwork", None).await?.passphrase)
    }

    /// `getHealth`: the server's status and the history it keeps.
    pub async fn health(&self) -> Result<Health, RpcError> {
        self.call("getHealth", None).await
    }

    /// `getLatestLedger`: the last ledger the answering server knows, and its close time.
    pub async fn latest_ledger(&self) -> Result<LedgerHead, RpcError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Latest {
            #[serde(deserialize_with = "u32_lenient")]
            sequence: u32,
            /// Unix seconds, as a string (a number is accepted too).
            #[serde(deserialize_with = "u64_lenient")]
            close_time: u64,
        }
        let latest: Latest = self.call("getLatestLedger", None).await?;
        Ok(LedgerHead {
            sequence: latest.sequence,
            close_time: latest.close_time,
        })
    }

    /// `getLedgerEntries` for the account's entry: its sequence number (`None` if the
    /// account does not exist) as of the answer's `latestLedger`.
    pub async fn account_sequence(&self, account: &AccountId) -> Result<SequenceRead, RpcError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entries {
            #[serde(default)]
            entries: Option<Vec<Entry>>,
            #[serde(deserialize_with = "u32_lenient")]
            latest_ledger: u32,
        }
        #[derive(Deserialize)]
        struct Entry {
            key: String,
            xdr: String,
        }
        const METHOD: &str = "getLedgerEntries";
        let key = LedgerKey::Account(LedgerKeyAccount {
            account_id: crate::tx::xdr_account_id(account),
        })
        .to_xdr_base64(Limits::none())
        .map_err(|e| decode(METHOD, format!("cannot encode the account key: {e}")))?;
        let answer: Entries = self.call(METHOD, Some(json!({ "keys": [key] }))).await?;
        let mut sequence = None;
        for entry in answer.entries.unwrap_or_default() {
            if entry.key != key {
                return Err(decode(METHOD, "an entry for another key".into()));
            }
            let data = LedgerEntryData::from_xdr_base64(&entry.xdr, xdr_limits())
                .map_err(|e| decode(METHOD, format!("entry XDR: {e}")))?;
            let LedgerEntryData::Account(account_entry) = data else {
                return Err(decode(METHOD, "the entry is not an account".into()));
            };
            sequence = Some(account_entry.seq_num.0);
        }
        Ok(SequenceRead {
            sequence,
            as_of_ledger: Some(answer.latest_ledger),
        })
    }

    /// `getTransaction`: included and successful, included and failed (with the codes from
    /// `resultXdr`), or not found in the ledgers `[oldestLedger, latestLedger]` of this
    /// answer — and nothing more: a transaction older than `oldestLedger` is not found
    /// either.
    pub async fn transaction(&self, hash: &TxHash) -> Result<Lookup, RpcError> {
        let answer: TransactionAnswer = self
            .call("getTransaction", Some(json!({ "hash": hash.to_hex() })))
            .await?;
        answer.into_lookup(hash)
    }

    /// One page of `getTransactions`: from the start of `start_ledger`, or after `cursor`
    /// (a TOID), at most `limit` transactions in ledger and application order.
    pub async fn transactions_page(
        &self,
        start_ledger: u32,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TransactionsPage, RpcError> {
        let params = match cursor {
            Some(c) => json!({ "pagination": { "cursor": c, "limit": limit } }),
            None => json!({ "startLedger": start_ledger, "pagination": { "limit": limit } }),
        };
        self.call("getTransactions", Some(params)).await
    }

    /// `getLedgers` from `ledger`, one ledger: its close time (unix seconds), `None` when
    /// the answer starts past it (not closed yet on the answering node).
    pub async fn ledger_close_time(&self, ledger: u32) -> Result<Option<u64>, RpcError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Ledgers {
            ledgers: Vec<LedgerInfo>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct LedgerInfo {
            #[serde(deserialize_with = "u32_lenient")]
            sequence: u32,
            #[serde(deserialize_with = "u64_lenient")]
            ledger_close_time: u64,
        }
        let page: Ledgers = self
            .call(
                "getLedgers",
                Some(json!({ "startLedger": ledger, "pagination": { "limit": 1 } })),
            )
            .await?;
        Ok(page
            .ledgers
            .into_iter()
            .find(|l| l.sequence == ledger)
            .map(|l| l.ledger_close_time))
    }

    /// `sendTransaction` with exactly `envelope_xdr`.
    pub async fn submit(&self, envelope_xdr: &str, hash: &TxHash) -> SubmitOutcome {
        let answer: SendAnswer = match self
            .call(
                "sendTransaction",
                Some(json!({ "transaction": envelope_xdr })),
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) => return unknown(hash, format!("sendTransaction: {e}")),
        };
        self.count(&answer.status);
        match classify_send(&answer, hash) {
            SendClassified::Done(outcome) => outcome,
            SendClassified::CheckIncluded { tx_code, op_codes } => {
                match self.transaction(hash).await {
                    Ok(Lookup::Failed {
                        inclusion,
                        tx_code,
                        op_codes,
                    }) => SubmitOutcome::Failed {
                        inclusion,
                        tx_code,
                        op_codes,
                    },
                    Ok(Lookup::Applied(inclusion)) => SubmitOutcome::Applied(inclusion),
                    Ok(Lookup::NotFound(_)) => unknown(
                        hash,
                        format!(
                            "sendTransaction answered ERROR {tx_code} {op_codes:?}; the transaction is not in a ledger (yet)"
                        ),
                    ),
                    Err(e) => unknown(
                        hash,
                        format!(
                            "sendTransaction answered ERROR {tx_code}; looking it up failed: {e}"
                        ),
                    ),
                }
            }
        }
    }

    fn count(&self, status: &str) {
        let mut c = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        match status {
            "PENDING" => c.pending += 1,
            "DUPLICATE" => c.duplicate += 1,
            "TRY_AGAIN_LATER" => c.try_again_later += 1,
            "ERROR" => c.error += 1,
            _ => {}
        }
    }

    /// One JSON-RPC call: the answer's `result`, or why there is none.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Option<Value>,
    ) -> Result<T, RpcError> {
        self.check_backoff()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = Map::new();
        request.insert("jsonrpc".into(), json!("2.0"));
        request.insert("id".into(), json!(id));
        request.insert("method".into(), json!(method));
        if let Some(params) = params {
            request.insert("params".into(), params);
        }
        let response = self
            .http
            .post(self.url.clone())
            // Every read takes part in a proof; none may come from a cache on the way.
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .json(&Value::Object(request))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(response, method).await?;
        if status == 429 || (status == 503 && retry_after.is_some()) {
            let delay_ms = self.back_off(retry_after.as_deref());
            return Err(RpcError::RateLimited { status, delay_ms });
        }
        if status != 200 {
            return Err(RpcError::Status {
                status,
                snippet: snippet(&String::from_utf8_lossy(&body)),
            });
        }
        parse_answer(&body, method, id)
    }

    fn check_backoff(&self) -> Result<(), RpcError> {
        let mut gate = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        match *gate {
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    let remaining_ms = u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX);
                    Err(RpcError::Backoff {
                        remaining_ms: remaining_ms.max(1),
                    })
                } else {
                    *gate = None;
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Holds every request back for the server's `Retry-After` (delta seconds; a date or
    /// nothing counts as one second), at most `rpc_retry_after_max_ms`. Returns the delay.
    fn back_off(&self, retry_after: Option<&str>) -> u64 {
        let delay_ms = retry_after_ms(retry_after).min(self.retry_after_max_ms);
        let until = Instant::now() + Duration::from_millis(delay_ms);
        let mut gate = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        *gate = Some(gate.map_or(until, |g| g.max(until)));
        tracing::warn!(
            rpc = %self.display_url,
            delay_ms,
            "the RPC server asked to slow down; no request is sent until the delay has passed"
        );
        delay_ms
    }
}

/// `Retry-After` in milliseconds: delta seconds, or one second for a date or no value.
fn retry_after_ms(value: Option<&str>) -> u64 {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(1_000, |s| s.saturating_mul(1_000))
}

fn xdr_limits() -> Limits {
    Limits {
        depth: XDR_DEPTH_MAX,
        len: RESPONSE_BYTES_MAX,
    }
}

fn decode(method: &'static str, detail: String) -> RpcError {
    RpcError::Decode {
        method,
        detail: snippet(&detail),
    }
}

fn unknown(hash: &TxHash, detail: String) -> SubmitOutcome {
    tracing::debug!(%hash, %detail, "submission outcome unknown");
    SubmitOutcome::Unknown { detail }
}

fn transport_error(error: reqwest::Error) -> RpcError {
    if error.is_timeout() {
        RpcError::Timeout
    } else {
        // Without the URL: it may carry credentials.
        RpcError::Transport(error_chain(error.without_url()))
    }
}

async fn read_body(
    mut response: reqwest::Response,
    method: &'static str,
) -> Result<Vec<u8>, RpcError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(decode(
                method,
                format!("body is larger than {RESPONSE_BYTES_MAX} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON-RPC 2.0 response to request `id`: its `result` decoded, or its `error`.
pub(crate) fn parse_answer<T: DeserializeOwned>(
    body: &[u8],
    method: &'static str,
    id: u64,
) -> Result<T, RpcError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| decode(method, format!("not JSON: {e}")))?;
    let Value::Object(mut answer) = value else {
        return Err(decode(method, "the answer is not a JSON object".into()));
    };
    if answer.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(decode(method, "not a JSON-RPC 2.0 answer".into()));
    }
    if let Some(error) = answer.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        return Err(RpcError::JsonRpc {
            method,
            code,
            message: snippet(message),
        });
    }
    if answer.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(decode(
            method,
            "the answer is for another request id".into(),
        ));
    }
    let Some(result) = answer.remove("result") else {
        return Err(decode(method, "neither result nor error".into()));
    };
    if !result.is_object() {
        return Err(decode(method, "the result is not a JSON object".into()));
    }
    serde_json::from_value(result).map_err(|e| decode(method, e.to_string()))
}

/// The fields of a `sendTransaction` answer that payoutd reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SendAnswer {
    pub status: String,
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub error_result_xdr: Option<String>,
}

pub(crate) fn classify_send(answer: &SendAnswer, hash: &TxHash) -> SendClassified {
    let unknown_answer = |why: String| SendClassified::Done(unknown(hash, why));
    if let Some(h) = &answer.hash
        && !h.eq_ignore_ascii_case(&hash.to_hex())
    {
        return unknown_answer(format!(
            "sendTransaction answered {} for another hash {}",
            snippet(&answer.status),
            snippet(h)
        ));
    }
    match answer.status.as_str() {
        // Held for inclusion (now, or already before): not in a ledger yet.
        "PENDING" | "DUPLICATE" => SendClassified::Done(SubmitOutcome::Pending),
        // Core's queue is full: not taken, the same bytes go again later.
        "TRY_AGAIN_LATER" => unknown_answer("sendTransaction answered TRY_AGAIN_LATER".into()),
        "ERROR" => {
            let Some(xdr) = answer.error_result_xdr.as_deref() else {
                return unknown_answer(
                    "sendTransaction answered ERROR without errorResultXdr".into(),
                );
            };
            let Ok(result) = TransactionResult::from_xdr_base64(xdr, xdr_limits()) else {
                return unknown_answer(
                    "sendTransaction answered ERROR with an unreadable errorResultXdr".into(),
                );
            };
            let (tx_code, op_codes) = result_codes(&result.result);
            match result.result {
                TransactionResultResult::TxFailed(_)
                | TransactionResultResult::TxFeeBumpInnerFailed(_) => {
                    SendClassified::CheckIncluded { tx_code, op_codes }
                }
                // An ERROR that names success is no answer we can use.
                TransactionResultResult::TxSuccess(_)
                | TransactionResultResult::TxFeeBumpInnerSuccess(_) => unknown_answer(format!(
                    "sendTransaction answered ERROR with the result {tx_code}"
                )),
                // Refused before inclusion: classified as Horizon's rejections are.
                _ => SendClassified::Done(SubmitOutcome::Rejected { code: tx_code }),
            }
        }
        other => unknown_answer(format!(
            "sendTransaction answered the unknown status {}",
            snippet(other)
        )),
    }
}

/// The fields of a `getTransaction` answer that payoutd reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransactionAnswer {
    pub status: String,
    #[serde(default, deserialize_with = "opt_u32_lenient")]
    pub latest_ledger: Option<u32>,
    #[serde(default, deserialize_with = "opt_u32_lenient")]
    pub oldest_ledger: Option<u32>,
    #[serde(default, deserialize_with = "opt_u32_lenient")]
    pub ledger: Option<u32>,
    #[serde(default)]
    pub result_xdr: Option<String>,
    #[serde(default)]
    pub tx_hash: Option<String>,
}

impl TransactionAnswer {
    pub(crate) fn into_lookup(self, hash: &TxHash) -> Result<Lookup, RpcError> {
        const METHOD: &str = "getTransaction";
        if let Some(h) = &self.tx_hash
            && !h.eq_ignore_ascii_case(&hash.to_hex())
        {
            return Err(decode(
                METHOD,
                format!("the answer is for hash {}", snippet(h)),
            ));
        }
        let successful = match self.status.as_str() {
            "NOT_FOUND" => {
                // It proves only "in none of the ledgers this server holds".
                let coverage = match (self.oldest_ledger, self.latest_ledger) {
                    (Some(oldest), Some(latest)) if oldest > 0 && oldest <= latest => {
                        Some(Coverage { oldest, latest })
                    }
                    _ => None,
                };
                return Ok(Lookup::NotFound(coverage));
            }
            "SUCCESS" => true,
            "FAILED" => false,
            other => {
                return Err(decode(METHOD, format!("unknown status {}", snippet(other))));
            }
        };
        let ledger = self
            .ledger
            .ok_or_else(|| decode(METHOD, format!("{} without a ledger", self.status)))?;
        // The fee and the per-operation codes are only in the result: without it, the
        // transaction is certainly included, but not settled here (looked up again later).
        let xdr = self
            .result_xdr
            .as_deref()
            .ok_or_else(|| decode(METHOD, format!("{} without resultXdr", self.status)))?;
        let result = TransactionResult::from_xdr_base64(xdr, xdr_limits())
            .map_err(|e| decode(METHOD, format!("resultXdr: {e}")))?;
        let inclusion = Inclusion {
            ledger,
            fee_charged: result.fee_charged,
        };
        let (tx_code, op_codes) = result_codes(&result.result);
        let result_successful = matches!(
            result.result,
            TransactionResultResult::TxSuccess(_)
                | TransactionResultResult::TxFeeBumpInnerSuccess(_)
        );
        if result_successful != successful {
            return Err(decode(
                METHOD,
                format!("status {} disagrees with the result {tx_code}", self.status),
            ));
        }
        Ok(if successful {
            Lookup::Applied(inclusion)
        } else {
            Lookup::Failed {
                inclusion,
                tx_code,
                op_codes,
            }
        })
    }
}

/// A number, or a string of decimal digits (RPC sends close times as strings).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

fn lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(n) => Ok(n),
        NumberOrString::String(s) => {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(serde::de::Error::custom("not a decimal integer"));
            }
            s.parse()
                .map_err(|_| serde::de::Error::custom("integer out of range"))
        }
    }
}

fn u64_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    lenient(deserializer)
}

fn u32_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    u32::try_from(lenient(deserializer)?)
        .map_err(|_| serde::de::Error::custom("ledger number out of range"))
}

fn opt_u32_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Opt {
        Null(()),
        Some(NumberOrString),
    }
    match Opt::deserialize(deserializer)? {
        Opt::Null(()) => Ok(None),
        Opt::Some(NumberOrString::Number(n)) => u32::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("ledger number out of range")),
        Opt::Some(NumberOrString::String(s)) => {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(serde::de::Error::custom("not a decimal integer"));
            }
            s.parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom("ledger number out of range"))
        }
    }
}
