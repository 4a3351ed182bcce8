//! Applying a valid transaction at ledger close: fee, sequence number, then the operations.
//!
//! The fee is charged and the sequence number consumed whatever the operations do. The
//! operations run against a scratch copy of the accounts and claimable balances they touch;
//! if any fails, the copy is thrown away (no operation has an effect) and the transaction is
//! `tx_failed`.
//!
//! The operations follow core's rules and the order of its checks: payments, create-account
//! (destination must not exist, starting balance of at least a new account's minimum balance
//! of 2 base reserves, source must have it above its own reserve), create-claimable-balance
//! (the amount leaves the source, which then locks one base reserve per claimant as the
//! balance's sponsor) and claim-claimable-balance (a claimant takes it; the sponsor's
//! reserves are released).

use std::collections::{BTreeMap, HashMap};

use stellar_xdr::{
    ClaimClaimableBalanceOp, ClaimClaimableBalanceResult, ClaimableBalanceId, CreateAccountOp,
    CreateAccountResult, CreateClaimableBalanceOp, CreateClaimableBalanceResult, Hash,
    MuxedAccount, Operation, OperationBody, OperationResult, PaymentOp, PaymentResult, Transaction,
    TransactionResultResult,
};

use crate::codes;
use crate::keys::{self, AccountKey, AssetId};
use crate::state::{Account, ClaimableBalance, PaymentKind};
use crate::validate::{Ctx, Valid};

/// What applying one transaction did.
#[derive(Debug)]
pub struct Applied {
    pub successful: bool,
    pub result: TransactionResultResult,
    /// Accounts whose entries changed (for the state file).
    pub touched: Vec<AccountKey>,
    /// Claimable balances created or claimed, by id (for the state file).
    pub touched_balances: Vec<String>,
    /// The value-moving operations made, if successful.
    pub payments: Vec<PaymentDone>,
}

/// One applied payment, create-account or create-claimable-balance operation.
#[derive(Debug)]
pub struct PaymentDone {
    pub kind: PaymentKind,
    pub op_index: u32,
    pub source: String,
    /// The payment's destination, the new account, or the first claimant.
    pub destination: String,
    pub asset: String,
    pub amount: i64,
    /// Horizon's hex id, for a claimable balance.
    pub balance_id: Option<String>,
    /// `G…` of every claimant, for a claimable balance.
    pub claimants: Vec<String>,
}

/// The ledger entries a transaction applies to.
pub struct Books<'a> {
    pub accounts: &'a mut HashMap<AccountKey, Account>,
    pub balances: &'a mut BTreeMap<String, ClaimableBalance>,
    /// If set, every account's entry as it was before its first change in this ledger
    /// (`None`: it did not exist), for the lagging node's view of account history.
    pub prior: Option<&'a mut HashMap<AccountKey, Option<Account>>>,
}

/// Applies `tx`, which [`crate::validate::check_valid`] accepted against `books` and `ctx`.
/// `tx_hash` is its lowercase hex hash.
// Long because: a transaction as core applies it: fee and sequence first, every operation
// on an overlay, then all of it or nothing
pub fn apply_tx(
    books: &mut Books<'_>,
    tx: &Transaction,
    valid: &Valid,
    ctx: &Ctx,
    tx_hash: &str,
) -> Applied {
    let mut touched = vec![valid.source];
    if let Some(prior) = books.prior.as_deref_mut() {
        prior
            .entry(valid.source)
            .or_insert_with(|| books.accounts.get(&valid.source).cloned());
    }
    if let Some(src) = books.accounts.get_mut(&valid.source) {
        src.balance -= valid.fee;
        src.seq = tx.seq_num.0;
        src.seq_ledger = ctx.ledger_seq;
        src.seq_time = ctx.close_time;
        src.last_modified_ledger = ctx.ledger_seq;
    }

    let mut scratch = Overlay {
        base: books.accounts,
        changed: HashMap::new(),
        balances: books.balances,
        balances_changed: BTreeMap::new(),
    };
    let mut results = Vec::with_capacity(tx.operations.len());
    let mut payments = Vec::new();
    for (i, op) in tx.operations.iter().enumerate() {
        // At most 100 operations per transaction.
        let op_index = u32::try_from(i).unwrap_or(u32::MAX);
        let source_muxed = op.source_account.as_ref().unwrap_or(&tx.source_account);
        let source = AccountKey::from_muxed(source_muxed);
        if scratch.get(&source).is_none() {
            results.push(OperationResult::OpNoAccount);
            continue;
        }
        let (result, paid) = apply_op(
            &mut scratch,
            op,
            source,
            source_muxed,
            op_index,
            tx,
            ctx,
            tx_hash,
        );
        payments.extend(paid);
        results.push(result);
    }

    let successful = results.iter().all(codes::op_succeeded);
    let Overlay {
        changed,
        balances_changed,
        ..
    } = scratch;
    let mut touched_balances = Vec::new();
    if successful {
        for (key, mut account) in changed {
            account.last_modified_ledger = ctx.ledger_seq;
            if !touched.contains(&key) {
                touched.push(key);
            }
            let old = books.accounts.insert(key, account);
            if let Some(prior) = books.prior.as_deref_mut() {
                prior.entry(key).or_insert(old);
            }
        }
        for (id, balance) in balances_changed {
            match balance {
                Some(b) => books.balances.insert(id.clone(), b),
                None => books.balances.remove(&id),
            };
            touched_balances.push(id);
        }
    } else {
        payments.clear();
    }
    Applied {
        successful,
        result: codes::ops_result(results, successful),
        touched,
        touched_balances,
        payments,
    }
}

/// Applies one operation to the overlay: its result, and what it paid when it succeeded.
/// `op_index` is the operation's place in the transaction (a claimable balance's id is
/// derived from it, the transaction's source and sequence).
// Long because: one match over the operation kinds the simulator models, each arm recording
// what it paid
#[allow(clippy::too_many_arguments)]
fn apply_op(
    scratch: &mut Overlay<'_>,
    op: &Operation,
    source: AccountKey,
    source_muxed: &MuxedAccount,
    op_index: u32,
    tx: &Transaction,
    ctx: &Ctx,
    tx_hash: &str,
) -> (OperationResult, Option<PaymentDone>) {
    let tx_source = AccountKey::from_muxed(&tx.source_account);
    let mut paid = None;
    let result = match &op.body {
        OperationBody::Payment(p) => {
            let r = apply_payment(scratch, source, p, ctx.base_reserve);
            if r == PaymentResult::Success {
                paid = Some(PaymentDone {
                    kind: PaymentKind::Payment,
                    op_index,
                    source: source_muxed.to_string(),
                    destination: p.destination.to_string(),
                    // A successful payment has a valid asset (else it is op_malformed).
                    asset: AssetId::from_xdr(&p.asset)
                        .map(|a| a.key())
                        .unwrap_or_default(),
                    amount: p.amount,
                    balance_id: None,
                    claimants: Vec::new(),
                });
            }
            codes::payment_result(r)
        }
        OperationBody::CreateAccount(c) => {
            let r = apply_create_account(scratch, source, c, ctx);
            if r == CreateAccountResult::Success {
                paid = Some(PaymentDone {
                    kind: PaymentKind::CreateAccount,
                    op_index,
                    source: source_muxed.to_string(),
                    destination: AccountKey::from_account_id(&c.destination).to_string(),
                    asset: AssetId::Native.key(),
                    amount: c.starting_balance,
                    balance_id: None,
                    claimants: Vec::new(),
                });
            }
            codes::create_account_result(r)
        }
        OperationBody::CreateClaimableBalance(c) => {
            let hash = keys::balance_id(tx_source, tx.seq_num.0, op_index);
            let id = keys::balance_id_hex(&hash);
            let origin = (tx_hash, op_index, ctx.ledger_seq);
            let r = apply_create_balance(scratch, source, c, &id, origin, ctx.base_reserve);
            if r.is_ok() {
                let claimants: Vec<String> = keys::claimant_keys(&c.claimants)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                paid = Some(PaymentDone {
                    kind: PaymentKind::CreateClaimableBalance,
                    op_index,
                    source: source_muxed.to_string(),
                    destination: claimants.first().cloned().unwrap_or_default(),
                    asset: AssetId::from_xdr(&c.asset)
                        .map(|a| a.key())
                        .unwrap_or_default(),
                    amount: c.amount,
                    balance_id: Some(id),
                    claimants,
                });
            }
            codes::create_claimable_balance_result(match r {
                Ok(()) => CreateClaimableBalanceResult::Success(
                    ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(hash)),
                ),
                Err(code) => code,
            })
        }
        OperationBody::ClaimClaimableBalance(c) => {
            codes::claim_claimable_balance_result(apply_claim(scratch, source, c))
        }
        _ => OperationResult::OpNotSupported,
    };
    (result, paid)
}

/// Accounts and claimable balances as the operations so far have left them, over the
/// ledger's.
struct Overlay<'a> {
    base: &'a HashMap<AccountKey, Account>,
    changed: HashMap<AccountKey, Account>,
    balances: &'a BTreeMap<String, ClaimableBalance>,
    /// `None`: claimed by an earlier operation.
    balances_changed: BTreeMap<String, Option<ClaimableBalance>>,
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

    fn balance(&self, id: &str) -> Option<&ClaimableBalance> {
        match self.balances_changed.get(id) {
            Some(b) => b.as_ref(),
            None => self.balances.get(id),
        }
    }
}

/// Create-account: the destination must not exist, the starting balance must cover a new
/// account's minimum balance (2 base reserves), and the source must have it above its own
/// reserve. The new account's sequence number is the ledger's sequence << 32, as core sets
/// it; it has not sent a transaction, so its sequence ledger and time are 0.
fn apply_create_account(
    ov: &mut Overlay<'_>,
    src: AccountKey,
    op: &CreateAccountOp,
    ctx: &Ctx,
) -> CreateAccountResult {
    let dest = AccountKey::from_account_id(&op.destination);
    if ov.get(&dest).is_some() {
        return CreateAccountResult::AlreadyExist;
    }
    if op.starting_balance < ctx.base_reserve.saturating_mul(2) {
        return CreateAccountResult::LowReserve;
    }
    let Some(s) = ov.get_mut(&src) else {
        return CreateAccountResult::Underfunded;
    };
    if s.available(ctx.base_reserve) < op.starting_balance {
        return CreateAccountResult::Underfunded;
    }
    // The check above keeps this subtraction at or above the source's reserve.
    s.balance -= op.starting_balance;
    ov.changed.insert(
        dest,
        Account {
            balance: op.starting_balance,
            seq: i64::from(ctx.ledger_seq) << 32,
            seq_ledger: 0,
            seq_time: 0,
            last_modified_ledger: ctx.ledger_seq,
            trustlines: BTreeMap::new(),
            num_sponsoring: 0,
        },
    );
    CreateAccountResult::Success
}

/// Create-claimable-balance: the amount leaves the source (native above its reserve, or a
/// credit asset from its trustline; an issuer creates its own asset), then the source must
/// still have one base reserve per claimant available, which it locks as the balance's
/// sponsor. `origin` is (creating transaction hash, operation index, ledger).
fn apply_create_balance(
    ov: &mut Overlay<'_>,
    src: AccountKey,
    op: &CreateClaimableBalanceOp,
    id: &str,
    origin: (&str, u32, u32),
    base_reserve: i64,
) -> Result<(), CreateClaimableBalanceResult> {
    use CreateClaimableBalanceResult as R;
    let Some(asset) = AssetId::from_xdr(&op.asset) else {
        return Err(R::Malformed);
    };
    let claimants = keys::claimant_keys(&op.claimants);
    // At most 10 claimants (the XDR bound).
    let count = u32::try_from(claimants.len()).unwrap_or(u32::MAX);
    let reserve = i64::from(count).saturating_mul(base_reserve);
    let amount = op.amount;
    let key = asset.key();
    let Some(s) = ov.get_mut(&src) else {
        return Err(R::Underfunded);
    };
    let native_out = match &asset {
        AssetId::Native if s.available(base_reserve) < amount => return Err(R::Underfunded),
        AssetId::Native => amount,
        AssetId::Credit { issuer, .. } if *issuer == src => 0,
        AssetId::Credit { .. } => match s.trustlines.get(&key) {
            None => return Err(R::NoTrust),
            Some(line) if line.balance < amount => return Err(R::Underfunded),
            Some(_) => 0,
        },
    };
    if s.available(base_reserve).saturating_sub(native_out) < reserve {
        return Err(R::LowReserve);
    }
    // Both checks passed: the subtractions stay at or above the checked balances.
    add_balance(s, src, &asset, &key, -amount);
    s.num_sponsoring = s.num_sponsoring.saturating_add(count);
    let (tx_hash, op_index, ledger) = origin;
    ov.balances_changed.insert(
        id.to_owned(),
        Some(ClaimableBalance {
            id: id.to_owned(),
            asset: key,
            amount_stroops: amount,
            claimants,
            sponsor: src,
            last_modified_ledger: ledger,
            tx_hash: tx_hash.to_owned(),
            op_index,
        }),
    );
    Ok(())
}

/// Claim-claimable-balance: the balance must exist and the source be one of its claimants
/// (every predicate is unconditional); the claimant must be able to receive it (native
/// without overflow, a credit asset on a trustline within its limit, or its issuer, which
/// burns it). The sponsor gets its reserves back.
fn apply_claim(
    ov: &mut Overlay<'_>,
    src: AccountKey,
    op: &ClaimClaimableBalanceOp,
) -> ClaimClaimableBalanceResult {
    use ClaimClaimableBalanceResult as R;
    let ClaimableBalanceId::ClaimableBalanceIdTypeV0(hash) = &op.balance_id;
    let id = keys::balance_id_hex(&hash.0);
    let Some(cb) = ov.balance(&id).cloned() else {
        return R::DoesNotExist;
    };
    if !cb.claimants.contains(&src) {
        return R::CannotClaim;
    }
    // The simulator stored this asset key itself, so it parses.
    let Ok(asset) = AssetId::from_key(&cb.asset) else {
        return R::DoesNotExist;
    };
    let Some(claimant) = ov.get_mut(&src) else {
        return R::CannotClaim;
    };
    match &asset {
        AssetId::Native => match claimant.balance.checked_add(cb.amount_stroops) {
            Some(b) => claimant.balance = b,
            None => return R::LineFull,
        },
        AssetId::Credit { issuer, .. } if *issuer == src => {}
        AssetId::Credit { .. } => {
            let Some(line) = claimant.trustlines.get_mut(&cb.asset) else {
                return R::NoTrust;
            };
            match line
                .balance
                .checked_add(cb.amount_stroops)
                .filter(|b| *b <= line.limit)
            {
                Some(b) => line.balance = b,
                None => return R::LineFull,
            }
        }
    }
    let count = u32::try_from(cb.claimants.len()).unwrap_or(u32::MAX);
    if let Some(sponsor) = ov.get_mut(&cb.sponsor) {
        sponsor.num_sponsoring = sponsor.num_sponsoring.saturating_sub(count);
    }
    ov.balances_changed.insert(id, None);
    R::Success
}

/// A payment: the destination must exist and be able to receive, then the source must be
/// able to pay. An asset's issuer sends without a trustline (minting) and receives without
/// one (burning). Native payments may not spend the source's reserve.
// Long because: core's checks of a payment, in core's order (destination, trustline, limit,
// source balance, reserve), then the transfer
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
        add_balance(d, dest, &asset, &key, amount);
    }
    if let Some(s) = ov.get_mut(&src) {
        add_balance(s, src, &asset, &key, -amount);
    }
    PaymentResult::Success
}

/// Adds `amount` (negative: takes it) to `holder`'s balance of `asset` (`key` its trustline
/// key). An issuer's own asset has no balance: issuing creates it and paying it back
/// burns it. The caller has checked the result stays within the bounds.
fn add_balance(holder: &mut Account, who: AccountKey, asset: &AssetId, key: &str, amount: i64) {
    match asset {
        AssetId::Native => holder.balance += amount,
        AssetId::Credit { issuer, .. } if *issuer == who => {}
        AssetId::Credit { .. } => {
            if let Some(line) = holder.trustlines.get_mut(key) {
                line.balance += amount;
            }
        }
    }
}
