//! The ledger's state: header, accounts with trustlines, claimable balances, applied
//! transactions and payments, and the close time of every ledger.
//!
//! Every type here is what the state file stores, so all of it is serde-serializable. Fields
//! added after the first state files were written carry `#[serde(default)]`, so older files
//! still load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stellar_xdr::Transaction;

use crate::history::{self, OpInfo};
use crate::keys::AccountKey;

/// The first ledger of every simulated network; no node's history starts before it.
pub const GENESIS_LEDGER: u32 = 1;

/// The header of a closed ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHeader {
    pub sequence: u32,
    /// Unix seconds.
    pub close_time: u64,
}

/// An account entry. Every account has its master key as its only signer (weight 1,
/// thresholds 0), which is what a freshly created Stellar account has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// XLM balance in stroops.
    pub balance: i64,
    pub seq: i64,
    /// Ledger and close time at which `seq` last changed (for min_seq_age / min_seq_ledger_gap).
    pub seq_ledger: u32,
    pub seq_time: u64,
    pub last_modified_ledger: u32,
    /// Trustlines keyed by `CODE:ISSUER`.
    pub trustlines: BTreeMap<String, Trustline>,
    /// Base reserves this account locks for entries it sponsors: one per claimant of every
    /// open claimable balance it created (core's `numSponsoring`).
    #[serde(default)]
    pub num_sponsoring: u32,
}

impl Account {
    /// The XLM this account must keep: `(2 + subentries + sponsoring) * base_reserve`.
    pub fn min_balance(&self, base_reserve: i64) -> i64 {
        let subentries = i64::try_from(self.trustlines.len()).unwrap_or(i64::MAX);
        subentries
            .saturating_add(2)
            .saturating_add(i64::from(self.num_sponsoring))
            .saturating_mul(base_reserve)
    }

    /// XLM that fees and payments may spend.
    pub fn available(&self, base_reserve: i64) -> i64 {
        self.balance.saturating_sub(self.min_balance(base_reserve))
    }
}

/// A trustline to a credit asset, amounts in stroops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trustline {
    pub balance: i64,
    pub limit: i64,
    pub last_modified_ledger: u32,
}

/// A transaction that is in a closed ledger, successful or not, with what Horizon shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Lowercase hex.
    pub hash: String,
    pub ledger: u32,
    /// 1-based position within its ledger.
    pub application_order: u32,
    /// Close time of its ledger (unix seconds): Horizon's `created_at`.
    pub close_time: u64,
    pub successful: bool,
    pub envelope_xdr: String,
    pub result_xdr: String,
    pub fee_charged: i64,
    pub max_fee: u32,
    /// `G…` of the source account.
    pub source_account: String,
    /// `M…` if the source was given as a muxed account.
    pub source_account_muxed: Option<String>,
    pub source_account_sequence: i64,
    pub operation_count: u32,
    /// `none` | `text` | `id` | `hash` | `return`.
    pub memo_type: String,
    /// Horizon's form: text as is, id in decimal, hash/return in base64.
    pub memo: Option<String>,
    /// Base64 of a text memo's raw bytes.
    pub memo_bytes: Option<String>,
    /// The memo in the filter form of [`crate::PaymentFilter`]: `id:1`, `text:x`, `hash:<hex>`.
    pub memo_filter: Option<String>,
    /// Base64 signatures, in envelope order.
    pub signatures: Vec<String>,
    /// Time bounds (min, max); max 0 = none.
    pub time_bounds: Option<(u64, u64)>,
    /// Ledger bounds (min, max); max 0 = none.
    pub ledger_bounds: Option<(u32, u32)>,
    pub result_code: String,
    pub operation_codes: Vec<String>,
}

/// What kind of operation moved the value of an [`AppliedPayment`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// A payment operation (also what records written before kinds existed are).
    #[default]
    Payment,
    /// A create-account operation: `destination` is the new account, the amount its
    /// starting balance, always native.
    CreateAccount,
    /// A create-claimable-balance operation: `destination` is the first claimant, every
    /// claimant is in `claimants`, and the balance is `balance_id` until claimed.
    CreateClaimableBalance,
}

/// A value-moving operation (payment, create-account, create-claimable-balance) that a
/// successful transaction applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPayment {
    /// Which operation; `payment` in records written before kinds existed.
    #[serde(default)]
    pub kind: PaymentKind,
    pub tx_hash: String,
    pub ledger: u32,
    /// Index of the operation within its transaction.
    pub op_index: u32,
    /// The paying account (the operation's source, else the transaction's), `G…` or `M…` as given.
    pub source: String,
    /// `G…` or `M…` as given in the operation.
    pub destination: String,
    /// `native` or `CODE:ISSUER`.
    pub asset: String,
    pub amount_stroops: i64,
    /// `id:123` | `text:abc` | `hash:<hex>` | `return:<hex>`, or none.
    pub memo: Option<String>,
    /// Close time of the ledger (unix seconds).
    pub close_time: u64,
    /// The claimable balance's id (Horizon's hex form), for `create_claimable_balance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_id: Option<String>,
    /// Every claimant (`G…`), for `create_claimable_balance`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimants: Vec<String>,
}

/// An open claimable balance. Every claimant's predicate is unconditional (the only one
/// the simulator accepts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimableBalance {
    /// Horizon's form of the `ClaimableBalanceId`: the hex of its XDR (`00000000` + the
    /// sha256 of the operation id).
    pub id: String,
    /// `native` or `CODE:ISSUER`.
    pub asset: String,
    pub amount_stroops: i64,
    /// Who may claim it, in the operation's order.
    pub claimants: Vec<AccountKey>,
    /// The account that created it and locks one base reserve per claimant for it.
    pub sponsor: AccountKey,
    /// The ledger it was created in.
    pub last_modified_ledger: u32,
    /// The creating transaction and operation index.
    pub tx_hash: String,
    pub op_index: u32,
}

/// The whole state as the state file's first line stores it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub network_passphrase: String,
    pub header: LedgerHeader,
    pub base_fee_stroops: i64,
    pub accounts: BTreeMap<AccountKey, Account>,
    pub transactions: Vec<TxRecord>,
    pub payments: Vec<AppliedPayment>,
    /// Open claimable balances by id.
    #[serde(default)]
    pub claimable_balances: BTreeMap<String, ClaimableBalance>,
    /// Close time (unix seconds) of ledger `GENESIS_LEDGER + i` at index `i` (what RPC's
    /// `oldestLedgerCloseTime` needs). 8 bytes of memory per ledger.
    #[serde(default)]
    pub ledger_close_times: Vec<u64>,
}

/// What one change (a ledger close or an admin call) added or replaced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    pub header: Option<LedgerHeader>,
    pub base_fee_stroops: Option<i64>,
    pub accounts: Vec<(AccountKey, Account)>,
    pub transactions: Vec<TxRecord>,
    pub payments: Vec<AppliedPayment>,
    /// Claimable balances created or changed.
    #[serde(default)]
    pub claimable_balances: Vec<ClaimableBalance>,
    /// Ids of claimable balances claimed (applied after `claimable_balances`).
    #[serde(default)]
    pub claimable_balances_removed: Vec<String>,
}

/// Records `header`'s close time in `times` (close time of ledger `GENESIS_LEDGER + i` at
/// `i`). A gap, which only a state file from before close times were kept leaves, is
/// filled with the first known close time after it, no earlier than the real ones.
pub fn record_close_time(times: &mut Vec<u64>, header: LedgerHeader) {
    let Some(index) = header
        .sequence
        .checked_sub(GENESIS_LEDGER)
        .and_then(|i| usize::try_from(i).ok())
    else {
        return;
    };
    times.truncate(index);
    times.resize(index, header.close_time);
    times.push(header.close_time);
}

impl Snapshot {
    /// Folds a delta into this snapshot.
    pub fn apply(&mut self, d: Delta) {
        if let Some(h) = d.header {
            self.header = h;
            record_close_time(&mut self.ledger_close_times, h);
        }
        if let Some(f) = d.base_fee_stroops {
            self.base_fee_stroops = f;
        }
        self.accounts.extend(d.accounts);
        self.transactions.extend(d.transactions);
        self.payments.extend(d.payments);
        for cb in d.claimable_balances {
            self.claimable_balances.insert(cb.id.clone(), cb);
        }
        for id in d.claimable_balances_removed {
            self.claimable_balances.remove(&id);
        }
    }
}

/// The live, indexed state the simulator works on.
#[derive(Debug)]
pub(crate) struct LedgerState {
    pub header: LedgerHeader,
    pub base_fee: i64,
    pub accounts: HashMap<AccountKey, Account>,
    /// Open claimable balances by id (Horizon's hex form).
    pub claimable_balances: BTreeMap<String, ClaimableBalance>,
    /// Applied transactions by hash, in application order in `tx_order`.
    pub txs: HashMap<[u8; 32], Arc<TxRecord>>,
    pub tx_order: Vec<Arc<TxRecord>>,
    /// The operations of `tx_order[i]` at `i`.
    pub tx_ops: Vec<Arc<[OpInfo]>>,
    /// Positions in `tx_order` of the transactions each account takes part in, ascending.
    pub tx_by_account: HashMap<AccountKey, Vec<u32>>,
    /// (position in `tx_order`, operation index) of the operations each account takes part
    /// in, ascending.
    pub ops_by_account: HashMap<AccountKey, Vec<(u32, u32)>>,
    pub payments: Vec<AppliedPayment>,
    /// Positions in `payments` by memo filter string.
    pub memo_index: HashMap<String, Vec<usize>>,
    /// Close time of ledger `GENESIS_LEDGER + i` at index `i`.
    pub ledger_close_times: Vec<u64>,
}

impl LedgerState {
    pub fn from_snapshot(s: Snapshot) -> Result<Self, String> {
        let mut st = Self {
            header: s.header,
            base_fee: s.base_fee_stroops,
            accounts: s.accounts.into_iter().collect(),
            claimable_balances: s.claimable_balances,
            txs: HashMap::new(),
            tx_order: Vec::new(),
            tx_ops: Vec::new(),
            tx_by_account: HashMap::new(),
            ops_by_account: HashMap::new(),
            payments: Vec::new(),
            memo_index: HashMap::new(),
            ledger_close_times: s.ledger_close_times,
        };
        // A state file from before close times were kept knows only the latest one.
        record_close_time(&mut st.ledger_close_times, st.header);
        for t in s.transactions {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&t.hash, &mut hash)
                .map_err(|e| format!("transaction hash {:?} in the state file: {e}", t.hash))?;
            let tx = history::decode_tx(&t.envelope_xdr)
                .map_err(|e| format!("transaction {}: {e}", t.hash))?;
            st.add_tx(hash, Arc::new(t), &tx);
        }
        for p in s.payments {
            st.add_payment(p);
        }
        Ok(st)
    }

    /// Adds an applied transaction (`tx` is its body) and indexes who takes part in it.
    pub fn add_tx(&mut self, hash: [u8; 32], rec: Arc<TxRecord>, tx: &Transaction) {
        // Positions fit in u32: a ledger history of 4 billion transactions is out of reach.
        let pos = u32::try_from(self.tx_order.len()).unwrap_or(u32::MAX);
        let ops = history::operations(tx);
        for k in history::tx_participants(tx, &ops) {
            self.tx_by_account.entry(k).or_default().push(pos);
        }
        for op in &ops {
            for k in &op.participants {
                self.ops_by_account
                    .entry(*k)
                    .or_default()
                    .push((pos, op.index));
            }
        }
        self.txs.insert(hash, Arc::clone(&rec));
        self.tx_order.push(rec);
        self.tx_ops.push(ops.into());
    }

    pub fn add_payment(&mut self, p: AppliedPayment) {
        if let Some(m) = &p.memo {
            self.memo_index
                .entry(m.clone())
                .or_default()
                .push(self.payments.len());
        }
        self.payments.push(p);
    }

    /// The close time of `ledger`, if it has closed.
    pub fn close_time_of(&self, ledger: u32) -> Option<u64> {
        let i = usize::try_from(ledger.checked_sub(GENESIS_LEDGER)?).ok()?;
        self.ledger_close_times.get(i).copied()
    }
}
