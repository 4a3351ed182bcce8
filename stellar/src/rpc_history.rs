//! The ledger's history over Stellar RPC, for reconciliation: [`LedgerHistory`] from
//! `getNetwork`, `getHealth`, `getLatestLedger`, `getLedgers` and `getTransactions`.
//!
//! RPC has no per-account listing: `getTransactions` pages through every transaction of a
//! ledger range. This reader decodes each envelope and result and keeps what an account
//! takes part in, with Horizon's rules: a transaction whose source (or fee source), an
//! operation's source, or an account an operation names (a payment's or path payment's
//! destination, a new account, a claimant, a merge's destination) is the account; an
//! operation of a successful transaction that it is the source of or names. Records carry
//! Horizon-style TOIDs as paging tokens (ledger << 32 | application order << 12 | operation
//! number), so a scan resumes where it stopped. Reading a range costs every transaction in
//! it, whatever the account: within RPC's retention window (a week by default) that is
//! what the network did in the range.

use async_trait::async_trait;
use payoutd_actors::domain::{AccountId, Destination};
use payoutd_actors::strkey;
use stellar_xdr::{
    Asset, Claimant, Limits, MuxedAccount, Operation, OperationBody, PublicKey, ReadXdr,
    TransactionEnvelope, TransactionResult,
};

use crate::history::{
    HistoryError, HistoryWindow, LedgerHistory, LedgerOp, LedgerTx, OpKind, PAGE_RECORDS_MAX, Page,
};
use crate::rpc::{RpcClient, RpcError, RpcTransaction};

/// `getTransactions` page size this reader asks for, in transactions (RPC's maximum).
pub const RPC_TRANSACTIONS_PAGE_MAX: u32 = 200;

/// The history over one Stellar RPC server.
pub struct RpcHistory {
    client: RpcClient,
}

impl RpcHistory {
    pub fn new(client: RpcClient) -> Self {
        Self { client }
    }
}

fn rpc(e: RpcError) -> HistoryError {
    HistoryError::Unusable(format!("Stellar RPC: {e}"))
}

/// A transaction's TOID with operation number `op_number` (0 for the transaction itself).
fn toid(ledger: u32, order: u32, op_number: u32) -> u64 {
    (u64::from(ledger) << 32) | (u64::from(order) << 12) | u64::from(op_number)
}

/// Where a record's scan resumes: `(ledger, application order, operation number)`.
fn parse_token(token: &str) -> Option<(u32, u32, u32)> {
    let t: u64 = token.parse().ok()?;
    Some((
        u32::try_from(t >> 32).ok()?,
        u32::try_from((t >> 12) & 0xF_FFFF).ok()?,
        u32::try_from(t & 0xFFF).ok()?,
    ))
}

fn g(key: &[u8; 32]) -> String {
    strkey::encode(strkey::VERSION_ACCOUNT_ID, key)
}

fn muxed_g(m: &MuxedAccount) -> String {
    match m {
        MuxedAccount::Ed25519(k) => g(&k.0),
        MuxedAccount::MuxedEd25519(m) => g(&m.ed25519.0),
    }
}

/// As given in the operation: `G…`, or `M…` for a muxed destination.
fn muxed_as_given(m: &MuxedAccount) -> String {
    match m {
        MuxedAccount::Ed25519(k) => g(&k.0),
        MuxedAccount::MuxedEd25519(m) => Destination::Muxed {
            account: AccountId::from_bytes(m.ed25519.0),
            id: m.id,
        }
        .to_strkey(),
    }
}

fn account_g(a: &stellar_xdr::AccountId) -> String {
    let PublicKey::PublicKeyTypeEd25519(k) = &a.0;
    g(&k.0)
}

fn asset_name(asset: &Asset) -> String {
    let code = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim_end_matches('\0')
            .to_owned()
    };
    match asset {
        Asset::Native => "native".to_owned(),
        Asset::CreditAlphanum4(a) => format!("{}:{}", code(&a.asset_code.0), account_g(&a.issuer)),
        Asset::CreditAlphanum12(a) => {
            format!("{}:{}", code(&a.asset_code.0), account_g(&a.issuer))
        }
    }
}

/// `ChangeTrust` → `change_trust`: Horizon's type name of an operation.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A decoded transaction: its source, sequence, fee source and operations.
struct Decoded {
    source: String,
    fee_source: Option<String>,
    sequence: i64,
    operations: Vec<Operation>,
}

fn decode(envelope_xdr: &str) -> Result<Decoded, HistoryError> {
    let env = TransactionEnvelope::from_xdr_base64(envelope_xdr, Limits::none())
        .map_err(|e| HistoryError::Unusable(format!("an envelope does not decode: {e}")))?;
    Ok(match env {
        TransactionEnvelope::TxV0(e) => Decoded {
            source: g(&e.tx.source_account_ed25519.0),
            fee_source: None,
            sequence: e.tx.seq_num.0,
            operations: e.tx.operations.to_vec(),
        },
        TransactionEnvelope::Tx(e) => Decoded {
            source: muxed_g(&e.tx.source_account),
            fee_source: None,
            sequence: e.tx.seq_num.0,
            operations: e.tx.operations.to_vec(),
        },
        TransactionEnvelope::TxFeeBump(e) => {
            let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
            Decoded {
                source: muxed_g(&inner.tx.source_account),
                fee_source: Some(muxed_g(&e.tx.fee_source)),
                sequence: inner.tx.seq_num.0,
                operations: inner.tx.operations.to_vec(),
            }
        }
    })
}

/// The value-moving facts of one operation, as the reconciliation reads them.
fn op_record(tx: &RpcTransaction, decoded: &Decoded, index: usize, op: &Operation) -> LedgerOp {
    let source = op
        .source_account
        .as_ref()
        .map(muxed_g)
        .unwrap_or_else(|| decoded.source.clone());
    let (kind, destination, claimants, asset, amount) = match &op.body {
        OperationBody::Payment(p) => (
            OpKind::Payment,
            Some(muxed_as_given(&p.destination)),
            Vec::new(),
            Some(asset_name(&p.asset)),
            Some(p.amount),
        ),
        OperationBody::CreateAccount(c) => (
            OpKind::CreateAccount,
            Some(account_g(&c.destination)),
            Vec::new(),
            Some("native".to_owned()),
            Some(c.starting_balance),
        ),
        OperationBody::CreateClaimableBalance(c) => (
            OpKind::CreateClaimableBalance,
            None,
            c.claimants
                .iter()
                .map(|Claimant::ClaimantTypeV0(v)| account_g(&v.destination))
                .collect(),
            Some(asset_name(&c.asset)),
            Some(c.amount),
        ),
        OperationBody::PathPaymentStrictReceive(p) => (
            OpKind::PathPayment,
            Some(muxed_as_given(&p.destination)),
            Vec::new(),
            Some(asset_name(&p.dest_asset)),
            Some(p.dest_amount),
        ),
        OperationBody::PathPaymentStrictSend(p) => (
            OpKind::PathPayment,
            Some(muxed_as_given(&p.destination)),
            Vec::new(),
            Some(asset_name(&p.dest_asset)),
            None,
        ),
        OperationBody::AccountMerge(d) => (
            OpKind::AccountMerge,
            Some(muxed_as_given(d)),
            Vec::new(),
            Some("native".to_owned()),
            None,
        ),
        other => (
            OpKind::Other(snake(other.name())),
            None,
            Vec::new(),
            None,
            None,
        ),
    };
    let index = index as u32;
    LedgerOp {
        tx_hash: tx.tx_hash.to_ascii_lowercase(),
        ledger: tx.ledger,
        op_index: index,
        close_time: tx.created_at,
        source,
        kind,
        destination,
        claimants,
        asset,
        amount_stroops: amount,
        paging_token: toid(tx.ledger, tx.application_order, index + 1).to_string(),
    }
}

/// Whether `account` (`G…`) is the operation's source or an account it names.
fn op_involves(op: &LedgerOp, account: &str) -> bool {
    if op.source == account || op.claimants.iter().any(|c| c == account) {
        return true;
    }
    match &op.destination {
        Some(d) if d == account => true,
        Some(d) if d.starts_with('M') => Destination::parse(d)
            .map(|m| m.account().to_strkey() == account)
            .unwrap_or(false),
        _ => false,
    }
}

fn fee_charged(result_xdr: &str) -> Result<i64, HistoryError> {
    let r = TransactionResult::from_xdr_base64(result_xdr, Limits::none())
        .map_err(|e| HistoryError::Unusable(format!("a result does not decode: {e}")))?;
    // The outer fee for a fee bump too; success is read from `status`.
    Ok(r.fee_charged)
}

/// What one page of the account's listing needs: each transaction it takes part in, with
/// its operations, in order.
struct Involved {
    tx: LedgerTx,
    ops: Vec<LedgerOp>,
}

/// Where a listing resumes: the position of its last record, and whether that record was
/// the whole transaction (a transaction listing) or one of its operations.
#[derive(Debug, Clone, Copy)]
struct Resume {
    ledger: u32,
    order: u32,
    /// 0: the whole transaction is done; n: its operations up to number n are.
    op_number: u32,
}

impl RpcHistory {
    /// Transactions `account` takes part in, after `resume` or from `from_ledger`, until
    /// `enough` says so, a transaction past `to_ledger`, or the end of what the server
    /// holds. Returns them and the server's latest ledger.
    async fn collect(
        &self,
        account: &AccountId,
        (from_ledger, to_ledger): (u32, u32),
        resume: Option<Resume>,
        mut enough: impl FnMut(&[Involved]) -> bool,
    ) -> Result<(Vec<Involved>, Option<u32>), HistoryError> {
        let account = account.to_strkey();
        // RPC's cursor is exclusive: start after the transaction before the resumed one.
        let mut cursor = resume.map(|r| toid(r.ledger, r.order.saturating_sub(1), 1).to_string());
        let mut out: Vec<Involved> = Vec::new();
        loop {
            let page = self
                .client
                .transactions_page(from_ledger, cursor.as_deref(), RPC_TRANSACTIONS_PAGE_MAX)
                .await
                .map_err(rpc)?;
            let latest = Some(page.latest_ledger);
            let full = page.transactions.len() >= RPC_TRANSACTIONS_PAGE_MAX as usize;
            for tx in &page.transactions {
                cursor = Some(toid(tx.ledger, tx.application_order, 1).to_string());
                if tx.ledger > to_ledger {
                    return Ok((out, latest));
                }
                // Ops of the resumed transaction up to this number are already listed.
                let done_ops = match resume {
                    Some(r) if (tx.ledger, tx.application_order) < (r.ledger, r.order) => continue,
                    Some(r) if (tx.ledger, tx.application_order) == (r.ledger, r.order) => {
                        if r.op_number == 0 {
                            continue;
                        }
                        r.op_number
                    }
                    _ => 0,
                };
                let decoded = decode(&tx.envelope_xdr)?;
                let successful = tx.status == "SUCCESS";
                let ops: Vec<LedgerOp> = decoded
                    .operations
                    .iter()
                    .enumerate()
                    .map(|(i, op)| op_record(tx, &decoded, i, op))
                    .collect();
                let involved = decoded.source == account
                    || decoded.fee_source.as_deref() == Some(account.as_str())
                    || ops.iter().any(|o| op_involves(o, &account));
                if !involved {
                    continue;
                }
                let ops = ops
                    .into_iter()
                    .filter(|o| successful && op_involves(o, &account) && o.op_index + 1 > done_ops)
                    .collect();
                let tx = LedgerTx {
                    hash: tx.tx_hash.to_ascii_lowercase(),
                    ledger: tx.ledger,
                    close_time: tx.created_at,
                    successful,
                    source: decoded.source.clone(),
                    sequence: decoded.sequence,
                    fee_charged: fee_charged(&tx.result_xdr)?,
                    operation_count: decoded.operations.len() as u32,
                    paging_token: toid(tx.ledger, tx.application_order, 0).to_string(),
                };
                out.push(Involved { tx, ops });
                if enough(&out) {
                    return Ok((out, latest));
                }
            }
            if !full {
                return Ok((out, latest));
            }
        }
    }
}

fn resume_at(after: Option<&str>) -> Result<Option<Resume>, HistoryError> {
    after
        .map(|a| {
            parse_token(a)
                .map(|(ledger, order, op_number)| Resume {
                    ledger,
                    order,
                    op_number,
                })
                .ok_or_else(|| HistoryError::Unusable(format!("bad paging token {a:?}")))
        })
        .transpose()
}

#[async_trait]
impl LedgerHistory for RpcHistory {
    fn describe(&self) -> String {
        format!("Stellar RPC at {}", self.client.display_url())
    }

    async fn window(&self) -> Result<HistoryWindow, HistoryError> {
        let network_passphrase = self.client.network_passphrase().await.map_err(rpc)?;
        let health = self.client.health().await.map_err(rpc)?;
        let latest = self.client.latest_ledger().await.map_err(rpc)?;
        Ok(HistoryWindow {
            network_passphrase,
            elder: health.oldest_ledger,
            latest: latest.sequence,
            latest_close_time: latest.close_time,
        })
    }

    async fn ledger_close_time(&self, ledger: u32) -> Result<Option<u64>, HistoryError> {
        self.client.ledger_close_time(ledger).await.map_err(rpc)
    }

    async fn transactions(
        &self,
        account: &AccountId,
        (from_ledger, to_ledger): (u32, u32),
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<LedgerTx>, HistoryError> {
        let limit = limit.clamp(1, PAGE_RECORDS_MAX) as usize;
        let (found, latest) = self
            .collect(
                account,
                (from_ledger, to_ledger),
                resume_at(after)?,
                |out| out.len() >= limit,
            )
            .await?;
        Ok(Page {
            records: found.into_iter().map(|i| i.tx).collect(),
            latest_ledger: latest,
        })
    }

    async fn operations(
        &self,
        account: &AccountId,
        (from_ledger, to_ledger): (u32, u32),
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<LedgerOp>, HistoryError> {
        let limit = limit.clamp(1, PAGE_RECORDS_MAX) as usize;
        let (found, latest) = self
            .collect(
                account,
                (from_ledger, to_ledger),
                resume_at(after)?,
                |out| out.iter().map(|i| i.ops.len()).sum::<usize>() >= limit,
            )
            .await?;
        Ok(Page {
            records: found.into_iter().flat_map(|i| i.ops).collect(),
            latest_ledger: latest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_toids_and_resume_where_they_stopped() {
        assert_eq!(toid(5, 2, 3), (5u64 << 32) | (2 << 12) | 3);
        assert_eq!(parse_token(&toid(5, 2, 3).to_string()), Some((5, 2, 3)));
        assert_eq!(parse_token("x"), None);
        assert_eq!(
            crate::history::operation_position(&toid(7, 1, 4).to_string()),
            Some((7, 3))
        );
    }

    #[test]
    fn operation_type_names_are_horizons() {
        assert_eq!(snake("ChangeTrust"), "change_trust");
        assert_eq!(snake("SetOptions"), "set_options");
    }
}
