//! The ledger's history, as reconciliation reads it: which ledgers a server still keeps,
//! when a ledger closed, and an account's transactions and operations in ledger order.
//!
//! [`LedgerHistory`] is the port; [`HorizonHistory`] implements it over Horizon's
//! documented endpoints only:
//!
//! - `GET /`: `history_elder_ledger`, `history_latest_ledger` (and its close time), the
//!   network passphrase;
//! - `GET /ledgers/{sequence}`: `closed_at` (to turn a time range into ledgers);
//! - `GET /accounts/{id}/transactions?cursor=…&order=asc&limit=…&include_failed=true`;
//! - `GET /accounts/{id}/operations?cursor=…&order=asc&limit=…` (successful transactions'
//!   operations: the ones that moved something).
//!
//! Pages are requested with a cursor built from the last record's `paging_token` (never by
//! following `_links.next`, whose href would drop a key the base URL carries in its path).
//! A ledger `L` starts at the cursor `L << 32` (Horizon's TOID of ledger `L`, transaction
//! 0, operation 0): every record of `L` and later sorts after it.
//!
//! A Stellar RPC implementation (`getTransactions` from a start ledger, operations decoded
//! from each envelope and result) can implement the same trait; [`scan_transactions`] and
//! [`scan_operations`] work over any implementation.

use std::time::Duration;

use async_trait::async_trait;
use payoutd_actors::domain::{AccountId, Amount};
use serde::Deserialize;

use crate::horizon::{
    HorizonClient, HorizonError, i64_from_string_or_number, parse_rfc3339, snippet,
};

/// Horizon's largest page, in records.
pub const PAGE_RECORDS_MAX: u32 = 200;
/// Largest history page read, in bytes: a transaction record carries its envelope and
/// result XDR (a 100-payment envelope is about 16 KiB of base64), so 200 of them need more
/// than the 1 MiB other answers are held to.
pub const LISTING_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How often a page that ends before the ledger asked for (served by a node that had not
/// ingested it yet) is asked again before the scan gives up, in tries.
pub const LAGGING_RETRIES_MAX: u32 = 40;
/// Pause between two tries of such a page, in milliseconds.
pub const LAGGING_RETRY_MS: u64 = 250;

/// Which ledgers the server holds, and on which network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryWindow {
    pub network_passphrase: String,
    /// The oldest ledger it still holds (Horizon's `history_elder_ledger`).
    pub elder: u32,
    /// The last ledger it has ingested.
    pub latest: u32,
    /// When `latest` closed, unix seconds.
    pub latest_close_time: u64,
}

/// A transaction an account takes part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTx {
    /// Lowercase hex.
    pub hash: String,
    pub ledger: u32,
    /// Its ledger's close time, unix seconds.
    pub close_time: u64,
    /// Applied (`true`), or included and failed: fee and sequence consumed, nothing else.
    pub successful: bool,
    /// The transaction's source account (`G…`).
    pub source: String,
    /// The source's sequence number it consumed.
    pub sequence: i64,
    /// The whole transaction's fee, in stroops.
    pub fee_charged: i64,
    pub operation_count: u32,
    /// Where the next page starts.
    pub paging_token: String,
}

/// The kinds of operation reconciliation tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Payment,
    CreateAccount,
    CreateClaimableBalance,
    /// `path_payment_strict_receive` or `path_payment_strict_send`: payoutd never builds
    /// them, but they move value.
    PathPayment,
    /// Sends the whole balance: payoutd never builds it.
    AccountMerge,
    /// Anything else, with Horizon's type name (trustlines, options, offers…).
    Other(String),
}

impl OpKind {
    pub fn name(&self) -> &str {
        match self {
            Self::Payment => "payment",
            Self::CreateAccount => "create_account",
            Self::CreateClaimableBalance => "create_claimable_balance",
            Self::PathPayment => "path_payment",
            Self::AccountMerge => "account_merge",
            Self::Other(name) => name,
        }
    }

    /// Whether it moves value out of its source.
    pub fn moves_value(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

/// One operation of a successful transaction an account takes part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOp {
    pub tx_hash: String,
    pub ledger: u32,
    /// 0-based index within its transaction.
    pub op_index: u32,
    pub close_time: u64,
    /// The operation's source (`G…`): its own, else the transaction's.
    pub source: String,
    pub kind: OpKind,
    /// Who receives: a payment's destination as given (`G…` or `M…`), a new account, an
    /// account merged into. `None` for claimable balances (see `claimants`) and others.
    pub destination: Option<String>,
    /// A claimable balance's claimants (`G…`).
    pub claimants: Vec<String>,
    /// `native` or `CODE:ISSUER`, for value-moving kinds (a merge moves native).
    pub asset: Option<String>,
    /// In stroops; `None` for a merge (its amount is the whole balance, not in the record).
    pub amount_stroops: Option<i64>,
    pub paging_token: String,
}

/// One page of records, and the last ledger the answering node had ingested (`None`: it
/// did not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub records: Vec<T>,
    pub latest_ledger: Option<u32>,
}

/// Why the history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("{0}")]
    Horizon(#[from] HorizonError),
    #[error(
        "ledger {requested} is before the history the server keeps (its history_elder_ledger is {elder}); \
         ask for ledgers from {elder} on, or use a server with more history"
    )]
    BeforeHistory { requested: u32, elder: u32 },
    /// Horizon's 410 `before_history`.
    #[error("the server no longer keeps ledger {requested} (before its recorded history)")]
    Pruned { requested: u32 },
    #[error("ledger {requested} has not closed yet (the server's latest ledger is {latest})")]
    NotClosed { requested: u32, latest: u32 },
    #[error(
        "the server kept answering from a node that had not ingested ledger {needed} (it had {latest}) \
         after {LAGGING_RETRIES_MAX} tries"
    )]
    Lagging { needed: u32, latest: u32 },
    #[error("the server's answer is unusable: {0}")]
    Unusable(String),
}

/// The ledger's history, read-only.
#[async_trait]
pub trait LedgerHistory: Send + Sync + 'static {
    /// What may be shown of the server (no credentials), e.g. `Horizon at https://host`.
    fn describe(&self) -> String;
    async fn window(&self) -> Result<HistoryWindow, HistoryError>;
    /// When `ledger` closed (unix seconds); `None` if it has not closed.
    async fn ledger_close_time(&self, ledger: u32) -> Result<Option<u64>, HistoryError>;
    /// Transactions `account` takes part in (successful and failed), in ledger order,
    /// after `after` (a `paging_token`), or from the start of the range's first ledger if
    /// `None`. The range's last ledger is where the caller stops: a reader may stop
    /// there too (Horizon's listings ignore it; RPC's scan needs it).
    async fn transactions(
        &self,
        account: &AccountId,
        range: (u32, u32),
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<LedgerTx>, HistoryError>;
    /// Operations of successful transactions that `account` takes part in, in order.
    async fn operations(
        &self,
        account: &AccountId,
        range: (u32, u32),
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<LedgerOp>, HistoryError>;
}

/// A record of a listing: where it is and where the next page starts.
pub trait Record {
    fn ledger(&self) -> u32;
    fn paging_token(&self) -> &str;
}

impl Record for LedgerTx {
    fn ledger(&self) -> u32 {
        self.ledger
    }
    fn paging_token(&self) -> &str {
        &self.paging_token
    }
}

impl Record for LedgerOp {
    fn ledger(&self) -> u32 {
        self.ledger
    }
    fn paging_token(&self) -> &str {
        &self.paging_token
    }
}

/// Every transaction `account` takes part in, in ledgers `from..=to`. `progress` is told
/// the last ledger covered after each page.
pub async fn scan_transactions(
    history: &dyn LedgerHistory,
    account: &AccountId,
    (from, to): (u32, u32),
    limit: u32,
    progress: &mut (dyn FnMut(u32) + Send),
) -> Result<Vec<LedgerTx>, HistoryError> {
    scan(from, to, limit, progress, |after| {
        let after = after.map(str::to_owned);
        async move {
            history
                .transactions(account, (from, to), after.as_deref(), limit)
                .await
        }
    })
    .await
}

/// Every operation of a successful transaction `account` takes part in, in ledgers
/// `from..=to`.
pub async fn scan_operations(
    history: &dyn LedgerHistory,
    account: &AccountId,
    (from, to): (u32, u32),
    limit: u32,
    progress: &mut (dyn FnMut(u32) + Send),
) -> Result<Vec<LedgerOp>, HistoryError> {
    scan(from, to, limit, progress, |after| {
        let after = after.map(str::to_owned);
        async move {
            history
                .operations(account, (from, to), after.as_deref(), limit)
                .await
        }
    })
    .await
}

/// Pages through a listing until a record past `to` or the end. A page that ends the
/// listing must come from a node that had ingested `to`: one behind it may simply not have
/// the last records yet, so that page is asked again (a load balancer may send the next
/// try to another node).
async fn scan<T, F, Fut>(
    from: u32,
    to: u32,
    limit: u32,
    progress: &mut (dyn FnMut(u32) + Send),
    mut page: F,
) -> Result<Vec<T>, HistoryError>
where
    T: Record,
    F: FnMut(Option<&str>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, HistoryError>>,
{
    let limit = limit.clamp(1, PAGE_RECORDS_MAX);
    let mut out: Vec<T> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut lagging_tries = 0;
    loop {
        let got = page(cursor.as_deref()).await?;
        let full = got.records.len() >= limit as usize;
        let mut past_end = false;
        for record in got.records {
            if record.ledger() < from {
                // A server that keeps less than asked starts at what it has; the caller
                // checked the range against the elder ledger, so this is only defensive.
                continue;
            }
            if record.ledger() > to {
                past_end = true;
                break;
            }
            cursor = Some(record.paging_token().to_owned());
            out.push(record);
        }
        if past_end {
            progress(to);
            return Ok(out);
        }
        if full {
            if let Some(last) = out.last() {
                progress(last.ledger());
            }
            continue;
        }
        // The end of the listing as the answering node sees it.
        match got.latest_ledger {
            Some(latest) if latest < to => {
                lagging_tries += 1;
                if lagging_tries >= LAGGING_RETRIES_MAX {
                    return Err(HistoryError::Lagging { needed: to, latest });
                }
                tokio::time::sleep(Duration::from_millis(LAGGING_RETRY_MS)).await;
            }
            _ => {
                progress(to);
                return Ok(out);
            }
        }
    }
}

/// Horizon's cursor for the start of `ledger`: its TOID with transaction and operation 0.
pub fn ledger_cursor(ledger: u32) -> String {
    (u64::from(ledger) << 32).to_string()
}

/// The ledger and 0-based operation index of an operation's paging token (its TOID).
pub fn operation_position(paging_token: &str) -> Option<(u32, u32)> {
    let toid: u64 = paging_token.parse().ok()?;
    let ledger = u32::try_from(toid >> 32).ok()?;
    let op_number = u32::try_from(toid & 0xFFF).ok()?;
    Some((ledger, op_number.checked_sub(1)?))
}

/// The history over one Horizon.
#[derive(Debug, Clone)]
pub struct HorizonHistory {
    client: HorizonClient,
}

impl HorizonHistory {
    pub fn new(client: HorizonClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &HorizonClient {
        &self.client
    }

    async fn listing<R: for<'de> Deserialize<'de>>(
        &self,
        account: &AccountId,
        what: &str,
        from_ledger: u32,
        after: Option<&str>,
        limit: u32,
        failed_too: bool,
    ) -> Result<(Vec<R>, Option<u32>), HistoryError> {
        let cursor = after
            .map(str::to_owned)
            .unwrap_or_else(|| ledger_cursor(from_ledger));
        // Only digits go into the path: a cursor from a record is checked first.
        if cursor.is_empty() || !cursor.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HistoryError::Unusable(format!(
                "paging token {:?} is not a number",
                snippet(&cursor)
            )));
        }
        let path = format!(
            "/accounts/{}/{what}?cursor={cursor}&order=asc&limit={}{}",
            account.to_strkey(),
            limit.clamp(1, PAGE_RECORDS_MAX),
            if failed_too {
                "&include_failed=true"
            } else {
                ""
            }
        );
        let reply = self.client.get_limited(&path, LISTING_BYTES_MAX).await?;
        match reply.status {
            200 => {
                let page: HalPage<R> = reply.json()?;
                Ok((page.embedded.records, reply.latest_ledger))
            }
            // An account without history (Horizon answers 404 for one it never saw).
            404 => Ok((Vec::new(), reply.latest_ledger)),
            410 => Err(HistoryError::Pruned {
                requested: from_ledger,
            }),
            status => Err(HorizonError::Status {
                status,
                snippet: reply.snippet(),
            }
            .into()),
        }
    }
}

#[derive(Deserialize)]
struct HalPage<R> {
    #[serde(rename = "_embedded")]
    embedded: Embedded<R>,
}

#[derive(Deserialize)]
struct Embedded<R> {
    records: Vec<R>,
}

#[derive(Deserialize)]
struct TxRecord {
    hash: String,
    ledger: u32,
    created_at: String,
    successful: bool,
    source_account: String,
    #[serde(deserialize_with = "i64_from_string_or_number")]
    source_account_sequence: i64,
    #[serde(deserialize_with = "i64_from_string_or_number")]
    fee_charged: i64,
    #[serde(default)]
    operation_count: u32,
    paging_token: String,
}

#[derive(Deserialize)]
struct Claimant {
    destination: String,
}

/// The fields of Horizon's operation resources that reconciliation reads; which are set
/// depends on `type`.
#[derive(Deserialize)]
struct OpRecord {
    paging_token: String,
    transaction_hash: String,
    #[serde(rename = "type")]
    kind: String,
    source_account: String,
    created_at: String,
    // payment, path payments
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    to_muxed: Option<String>,
    #[serde(default)]
    asset_type: Option<String>,
    #[serde(default)]
    asset_code: Option<String>,
    #[serde(default)]
    asset_issuer: Option<String>,
    // payment, path payments, claimable balances
    #[serde(default)]
    amount: Option<String>,
    // create_account
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    starting_balance: Option<String>,
    // create_claimable_balance: `native` or `CODE:ISSUER`
    #[serde(default)]
    asset: Option<String>,
    #[serde(default)]
    claimants: Vec<Claimant>,
    // account_merge
    #[serde(default)]
    into: Option<String>,
    #[serde(default)]
    into_muxed: Option<String>,
}

fn close_time(created_at: &str) -> Result<u64, HistoryError> {
    parse_rfc3339(created_at)
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| {
            HistoryError::Unusable(format!(
                "created_at {:?} is not an RFC 3339 time",
                snippet(created_at)
            ))
        })
}

/// Horizon's 7-decimal amount (`"12.5000000"`) in stroops, integers only.
fn stroops(text: &str) -> Result<i64, HistoryError> {
    Amount::parse(text)
        .map(|a| a.stroops())
        .map_err(|e| HistoryError::Unusable(format!("amount {:?}: {}", snippet(text), e.message)))
}

impl TxRecord {
    fn into_tx(self) -> Result<LedgerTx, HistoryError> {
        Ok(LedgerTx {
            close_time: close_time(&self.created_at)?,
            hash: self.hash.to_ascii_lowercase(),
            ledger: self.ledger,
            successful: self.successful,
            source: self.source_account,
            sequence: self.source_account_sequence,
            fee_charged: self.fee_charged,
            operation_count: self.operation_count,
            paging_token: self.paging_token,
        })
    }
}

impl OpRecord {
    fn asset_of_fields(&self) -> Option<String> {
        match self.asset_type.as_deref()? {
            "native" => Some("native".to_owned()),
            _ => Some(format!(
                "{}:{}",
                self.asset_code.as_deref()?,
                self.asset_issuer.as_deref()?
            )),
        }
    }

    // Long because: one match over Horizon's operation types, an arm per kind of payment
    // the reconciliation knows
    fn into_op(self) -> Result<LedgerOp, HistoryError> {
        let unusable = |what: &str| {
            HistoryError::Unusable(format!(
                "operation {} ({}) has no {what}",
                snippet(&self.paging_token),
                snippet(&self.kind)
            ))
        };
        let (ledger, op_index) = operation_position(&self.paging_token).ok_or_else(|| {
            HistoryError::Unusable(format!(
                "operation paging token {:?} is not a TOID",
                snippet(&self.paging_token)
            ))
        })?;
        let amount = |text: &Option<String>| -> Result<Option<i64>, HistoryError> {
            match text {
                Some(t) => Ok(Some(stroops(t)?)),
                None => Err(unusable("amount")),
            }
        };
        let (kind, destination, claimants, asset, amount_stroops) = match self.kind.as_str() {
            "payment" | "path_payment_strict_receive" | "path_payment_strict_send" => (
                if self.kind == "payment" {
                    OpKind::Payment
                } else {
                    OpKind::PathPayment
                },
                Some(
                    self.to_muxed
                        .clone()
                        .or_else(|| self.to.clone())
                        .ok_or_else(|| unusable("destination"))?,
                ),
                Vec::new(),
                Some(self.asset_of_fields().ok_or_else(|| unusable("asset"))?),
                amount(&self.amount)?,
            ),
            "create_account" => (
                OpKind::CreateAccount,
                Some(self.account.clone().ok_or_else(|| unusable("account"))?),
                Vec::new(),
                Some("native".to_owned()),
                amount(&self.starting_balance)?,
            ),
            "create_claimable_balance" => (
                OpKind::CreateClaimableBalance,
                None,
                self.claimants
                    .iter()
                    .map(|c| c.destination.clone())
                    .collect(),
                Some(self.asset.clone().ok_or_else(|| unusable("asset"))?),
                amount(&self.amount)?,
            ),
            "account_merge" => (
                OpKind::AccountMerge,
                Some(
                    self.into_muxed
                        .clone()
                        .or_else(|| self.into.clone())
                        .ok_or_else(|| unusable("destination"))?,
                ),
                Vec::new(),
                Some("native".to_owned()),
                None,
            ),
            other => (
                OpKind::Other(other.to_owned()),
                None,
                Vec::new(),
                None,
                None,
            ),
        };
        Ok(LedgerOp {
            close_time: close_time(&self.created_at)?,
            tx_hash: self.transaction_hash.to_ascii_lowercase(),
            ledger,
            op_index,
            source: self.source_account,
            kind,
            destination,
            claimants,
            asset,
            amount_stroops,
            paging_token: self.paging_token,
        })
    }
}

#[async_trait]
impl LedgerHistory for HorizonHistory {
    fn describe(&self) -> String {
        format!("Horizon at {}", self.client.display_url())
    }

    async fn window(&self) -> Result<HistoryWindow, HistoryError> {
        let root = self.client.root().await?;
        let elder = root.history_elder_ledger.ok_or_else(|| {
            HistoryError::Unusable(
                "GET / has no history_elder_ledger: cannot tell which ledgers it keeps".into(),
            )
        })?;
        Ok(HistoryWindow {
            network_passphrase: root.network_passphrase,
            elder,
            latest: root.history_latest_ledger,
            latest_close_time: root.history_latest_ledger_closed_at,
        })
    }

    async fn ledger_close_time(&self, ledger: u32) -> Result<Option<u64>, HistoryError> {
        #[derive(Deserialize)]
        struct LedgerRecord {
            sequence: u32,
            closed_at: String,
        }
        let reply = self
            .client
            .get_limited(&format!("/ledgers/{ledger}"), LISTING_BYTES_MAX)
            .await?;
        match reply.status {
            200 => {
                let record: LedgerRecord = reply.json()?;
                if record.sequence != ledger {
                    return Err(HistoryError::Unusable(format!(
                        "asked for ledger {ledger}, got ledger {}",
                        record.sequence
                    )));
                }
                Ok(Some(close_time(&record.closed_at)?))
            }
            404 => Ok(None),
            410 => Err(HistoryError::Pruned { requested: ledger }),
            status => Err(HorizonError::Status {
                status,
                snippet: reply.snippet(),
            }
            .into()),
        }
    }

    async fn transactions(
        &self,
        account: &AccountId,
        (from_ledger, _): (u32, u32),
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<LedgerTx>, HistoryError> {
        let (records, latest_ledger) = self
            .listing::<TxRecord>(account, "transactions", from_ledger, after, limit, true)
            .await?;
        Ok(Page {
            records: records
                .into_iter()
                .map(TxRecord::into_tx)
                .collect::<Result<_, _>>()?,
            latest_ledger,
        })
    }

    async fn operations(
        &self,
        account: &AccountId,
        (from_ledger, _): (u32, u32),
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<LedgerOp>, HistoryError> {
        let (records, latest_ledger) = self
            .listing::<OpRecord>(account, "operations", from_ledger, after, limit, false)
            .await?;
        Ok(Page {
            records: records
                .into_iter()
                .map(OpRecord::into_op)
                .collect::<Result<_, _>>()?,
            latest_ledger,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_positions() {
        assert_eq!(ledger_cursor(7), (7u64 << 32).to_string());
        let toid = (7u64 << 32) | (3 << 12) | 2;
        assert_eq!(operation_position(&toid.to_string()), Some((7, 1)));
        // Operation number 0 is the transaction itself, not an operation.
        assert_eq!(operation_position(&(7u64 << 32).to_string()), None);
        assert_eq!(operation_position("x"), None);
    }

    #[test]
    fn operation_records_decode() {
        let toid = ((9u64 << 32) | (1 << 12) | 3).to_string();
        let payment = serde_json::json!({
            "paging_token": toid, "transaction_hash": "AB", "type": "payment",
            "source_account": "GSRC", "created_at": "2026-11-30T00:00:05Z",
            "to": "GDST", "to_muxed": "MDST", "asset_type": "credit_alphanum4",
            "asset_code": "USDC", "asset_issuer": "GISS", "amount": "12.5000000"
        });
        let op = serde_json::from_value::<OpRecord>(payment)
            .unwrap()
            .into_op()
            .unwrap();
        assert_eq!((op.ledger, op.op_index), (9, 2));
        assert_eq!(op.kind, OpKind::Payment);
        assert_eq!(op.destination.as_deref(), Some("MDST"));
        assert_eq!(op.asset.as_deref(), Some("USDC:GISS"));
        assert_eq!(op.amount_stroops, Some(125_000_000));
        assert_eq!(op.tx_hash, "ab");
        let balance = serde_json::json!({
            "paging_token": toid, "transaction_hash": "ab", "type": "create_claimable_balance",
            "source_account": "GSRC", "created_at": "2026-11-30T00:00:05Z",
            "asset": "native", "amount": "1.0000000",
            "claimants": [{"destination": "GDST", "predicate": {"unconditional": true}}]
        });
        let op = serde_json::from_value::<OpRecord>(balance)
            .unwrap()
            .into_op()
            .unwrap();
        assert_eq!(op.claimants, vec!["GDST".to_owned()]);
        assert_eq!(op.amount_stroops, Some(10_000_000));
        let other = serde_json::json!({
            "paging_token": toid, "transaction_hash": "ab", "type": "change_trust",
            "source_account": "GSRC", "created_at": "2026-11-30T00:00:05Z"
        });
        let op = serde_json::from_value::<OpRecord>(other)
            .unwrap()
            .into_op()
            .unwrap();
        assert!(!op.kind.moves_value());
        assert_eq!(op.kind.name(), "change_trust");
        // A payment without an amount is not a record we can use.
        let broken = serde_json::json!({
            "paging_token": toid, "transaction_hash": "ab", "type": "payment",
            "source_account": "GSRC", "created_at": "2026-11-30T00:00:05Z",
            "to": "GDST", "asset_type": "native"
        });
        assert!(
            serde_json::from_value::<OpRecord>(broken)
                .unwrap()
                .into_op()
                .is_err()
        );
    }

    struct Scripted {
        pages: std::sync::Mutex<Vec<Page<LedgerTx>>>,
    }

    fn tx(ledger: u32, n: u32) -> LedgerTx {
        LedgerTx {
            hash: format!("{ledger}-{n}"),
            ledger,
            close_time: 0,
            successful: true,
            source: String::new(),
            sequence: 0,
            fee_charged: 100,
            operation_count: 1,
            paging_token: ((u64::from(ledger) << 32) | u64::from(n << 12)).to_string(),
        }
    }

    #[async_trait]
    impl LedgerHistory for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        async fn window(&self) -> Result<HistoryWindow, HistoryError> {
            unreachable!()
        }
        async fn ledger_close_time(&self, _: u32) -> Result<Option<u64>, HistoryError> {
            unreachable!()
        }
        async fn transactions(
            &self,
            _: &AccountId,
            _: (u32, u32),
            _: Option<&str>,
            _: u32,
        ) -> Result<Page<LedgerTx>, HistoryError> {
            Ok(self.pages.lock().unwrap().remove(0))
        }
        async fn operations(
            &self,
            _: &AccountId,
            _: (u32, u32),
            _: Option<&str>,
            _: u32,
        ) -> Result<Page<LedgerOp>, HistoryError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn a_short_page_from_a_lagging_node_is_asked_again() {
        let h = Scripted {
            pages: std::sync::Mutex::new(vec![
                Page {
                    records: vec![tx(5, 1), tx(6, 1)],
                    latest_ledger: Some(20),
                },
                // The end of the listing, but from a node at ledger 8: ask again.
                Page {
                    records: vec![tx(7, 1)],
                    latest_ledger: Some(8),
                },
                Page {
                    records: vec![tx(9, 1), tx(11, 1)],
                    latest_ledger: Some(20),
                },
            ]),
        };
        let mut seen = Vec::new();
        let got = scan_transactions(&h, &AccountId::from_bytes([1; 32]), (5, 10), 2, &mut |l| {
            seen.push(l)
        })
        .await
        .unwrap();
        let ledgers: Vec<u32> = got.iter().map(|t| t.ledger).collect();
        assert_eq!(ledgers, vec![5, 6, 7, 9], "7 once, 11 is past the end");
        assert_eq!(seen.last(), Some(&10));
    }
}
