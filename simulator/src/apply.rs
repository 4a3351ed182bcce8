//! Applying a valid transaction at ledger close: fee, sequence number, then the operations.
//!
//! The fee is charged and the sequence number consumed whatever the operations do. The
//! operations run against a scratch copy of the accounts they touch; if any fails, the copy
//! is thrown away (no operation has an effect) and the transaction is `tx_failed`.

use std::collections::HashMap;

use stellar_xdr::{
    OperationBody, OperationResult, PaymentOp, PaymentResult, Transaction, TransactionResultResult,
};

use crate::codes;
use crate::keys::{AccountKey, AssetId};
use crate::state::Account;
use crate::validate::{Ctx, Valid};

/// What applying one transaction did.
#[derive(Debug)]
pub struct Applied {
    pub successful: bool,
    pub result: TransactionResultResult,
    /// Accounts whose entries changed (for the state file).
    pub touched: Vec<AccountKey>,
    /// The payments made, if successful.
    pub payments: Vec<PaymentDone>,
}

/// One applied payment operation.
#[derive(Debug)]
pub struct PaymentDone {
    pub op_index: u32,
    pub source: String,
    pub destination: String,
    pub asset: String,
    pub amount: i64,
}

/// Applies `tx`, which [`crate::validate::check_valid`] accepted against `accounts` and `ctx`.
pub fn apply_tx(
    accounts: &mut HashMap<AccountKey, Account>,
    tx: &Transaction,
    valid: &Valid,
    ctx: &Ctx,
) -> Applied {
    let mut touched = vec![valid.source];
    if let Some(src) = accounts.get_mut(&valid.source) {
        src.balance -= valid.fee;
        src.seq = tx.seq_num.0;
        src.seq_ledger = ctx.ledger_seq;
        src.seq_time = ctx.close_time;
        src.last_modified_ledger = ctx.ledger_seq;
    }

    let mut scratch = Overlay {
        base: accounts,
        changed: HashMap::new(),
    };
    let mut results = Vec::with_capacity(tx.operations.len());
    let mut payments = Vec::new();
    for (i, op) in tx.operations.iter().enumerate() {
        let source_muxed = op.source_account.as_ref().unwrap_or(&tx.source_account);
        let source = AccountKey::from_muxed(source_muxed);
        if scratch.get(&source).is_none() {
            results.push(OperationResult::OpNoAccount);
            continue;
        }
        let OperationBody::Payment(p) = &op.body else {
            results.push(OperationResult::OpNotSupported);
            continue;
        };
        let r = apply_payment(&mut scratch, source, p, ctx.base_reserve);
        if r == PaymentResult::Success {
            payments.push(PaymentDone {
                op_index: u32::try_from(i).unwrap_or(u32::MAX),
                source: source_muxed.to_string(),
                destination: p.destination.to_string(),
                // A successful payment has a valid asset (else it is op_malformed).
                asset: AssetId::from_xdr(&p.asset)
                    .map(|a| a.key())
                    .unwrap_or_default(),
                amount: p.amount,
            });
        }
        results.push(codes::payment_result(r));
    }

    let successful = results.iter().all(codes::op_succeeded);
    let changed = scratch.changed;
    if successful {
        for (key, mut account) in changed {
            account.last_modified_ledger = ctx.ledger_seq;
            if !touched.contains(&key) {
                touched.push(key);
            }
            accounts.insert(key, account);
        }
    } else {
        payments.clear();
    }
    Applied {
        successful,
        result: codes::ops_result(results, successful),
        touched,
        payments,
    }
}

/// Accounts as the operations so far have left them, over the ledger's accounts.
struct Overlay<'a> {
    base: &'a HashMap<AccountKey, Account>,
    changed: HashMap<AccountKey, Account>,
}

impl Overlay<'_> {
    fn get(&self, k: &AccountKey) -> Option<&Account> {
        self.changed.get(k).or_else(|| self.base.get(k))
    }

    fn get_mut(&mut self, k: &AccountKey) -> Option<&mut Account> {
        if !self.changed.contains_key(k) {
            let a = self.base.get(k)?.clone();
            self.changed.insert(*k, a);
        }
        self.changed.get_mut(k)
    }
}

/// A payment: the destination must exist and be able to receive, then the source must be
/// able to pay. An asset's issuer sends without a trustline (minting) and receives without
/// one (burning). Native payments may not spend the source's reserve.
fn apply_payment(
    ov: &mut Overlay<'_>,
    src: AccountKey,
    p: &PaymentOp,
    base_reserve: i64,
) -> PaymentResult {
    let Some(asset) = AssetId::from_xdr(&p.asset) else {
        return PaymentResult::Malformed;
    };
    let dest = AccountKey::from_muxed(&p.destination);
    let amount = p.amount;
    let Some(dest_account) = ov.get(&dest) else {
        return PaymentResult::NoDestination;
    };
    let key = asset.key();

    if src == dest {
        // Paying oneself moves nothing; a credit asset still needs a trustline (or issuing).
        return match &asset {
            AssetId::Credit { issuer, .. }
                if *issuer != src && !dest_account.trustlines.contains_key(&key) =>
            {
                PaymentResult::SrcNoTrust
            }
            _ => PaymentResult::Success,
        };
    }

    // Can the destination receive it?
    match &asset {
        AssetId::Native => {
            if dest_account.balance.checked_add(amount).is_none() {
                return PaymentResult::LineFull;
            }
        }
        AssetId::Credit { issuer, .. } if *issuer == dest => {}
        AssetId::Credit { .. } => {
            let Some(line) = dest_account.trustlines.get(&key) else {
                return PaymentResult::NoTrust;
            };
            if line
                .balance
                .checked_add(amount)
                .is_none_or(|b| b > line.limit)
            {
                return PaymentResult::LineFull;
            }
        }
    }

    // Can the source pay it? (The source exists: the caller checked.)
    let Some(src_account) = ov.get(&src) else {
        return PaymentResult::Underfunded;
    };
    match &asset {
        AssetId::Native => {
            if src_account.available(base_reserve) < amount {
                return PaymentResult::Underfunded;
            }
        }
        AssetId::Credit { issuer, .. } if *issuer == src => {}
        AssetId::Credit { .. } => {
            let Some(line) = src_account.trustlines.get(&key) else {
                return PaymentResult::SrcNoTrust;
            };
            if line.balance < amount {
                return PaymentResult::Underfunded;
            }
        }
    }

    // Both checks passed: the additions below cannot overflow and the subtractions cannot
    // go below the checked balances.
    if let Some(d) = ov.get_mut(&dest) {
        match &asset {
            AssetId::Native => d.balance += amount,
            AssetId::Credit { issuer, .. } if *issuer == dest => {}
            AssetId::Credit { .. } => {
                if let Some(line) = d.trustlines.get_mut(&key) {
                    line.balance += amount;
                }
            }
        }
    }
    if let Some(s) = ov.get_mut(&src) {
        match &asset {
            AssetId::Native => s.balance -= amount,
            AssetId::Credit { issuer, .. } if *issuer == src => {}
            AssetId::Credit { .. } => {
                if let Some(line) = s.trustlines.get_mut(&key) {
                    line.balance -= amount;
                }
            }
        }
    }
    PaymentResult::Success
}
