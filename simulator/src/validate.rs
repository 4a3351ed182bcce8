//! Transaction validity: envelope decoding, signature checks and the checks core makes
//! before a transaction may enter (and again when it is applied to) a ledger.
//!
//! The order of the checks follows stellar-core, so a transaction with several problems gets
//! the code the real network would give: operations present, time and ledger bounds, fee,
//! source account, sequence number, min seq age/gap, signatures, fee balance, operation
//! validity, unused signatures.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};
use stellar_xdr::{
    ClaimClaimableBalanceResult, ClaimPredicate, ClaimableBalanceId, Claimant, CreateAccountResult,
    CreateClaimableBalanceResult, DecoratedSignature, Hash, LedgerBounds, Limits, OperationBody,
    OperationResult, PaymentResult, Preconditions, ReadXdr, SignerKey, TimeBounds, Transaction,
    TransactionEnvelope, TransactionExt, TransactionResultResult, WriteXdr,
};

use crate::codes;
use crate::keys::{self, AccountKey, AssetId};
use crate::state::Account;

/// The largest envelope accepted, in XDR bytes (core's limit on classic transactions is 100 KiB).
pub const MAX_ENVELOPE_XDR_BYTES: usize = 100 * 1024;
/// Nesting depth allowed while decoding.
const MAX_XDR_DEPTH: u32 = 200;

/// A decoded submission.
#[derive(Debug)]
pub struct Decoded {
    pub hash: [u8; 32],
    /// The envelope re-encoded (XDR is canonical, so equal to what was sent).
    pub envelope_xdr: String,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// A V1 envelope, the only kind this simulator applies.
    V1 {
        tx: Box<Transaction>,
        signatures: Vec<DecoratedSignature>,
        auth: Auth,
    },
    /// A V0 or fee-bump envelope: answered `tx_malformed`.
    Unsupported,
}

/// Outcome of the signature checks; needs no ledger state, because every account's only
/// signer is its master key (weight 1, thresholds 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Ok,
    /// A required signer has no valid signature.
    Missing,
    /// Some signature was not needed by any signer.
    Extra,
}

/// Decodes a base64 `TransactionEnvelope`, computes its hash and checks its signatures.
pub fn decode(b64: &str, network_id: [u8; 32]) -> Result<Decoded, String> {
    // Base64 takes 4 characters per 3 bytes; refuse oversized input before decoding it.
    if b64.len() > MAX_ENVELOPE_XDR_BYTES / 3 * 4 + 4 {
        return Err("the envelope is larger than 100 KiB".to_owned());
    }
    let limits = Limits {
        depth: MAX_XDR_DEPTH,
        len: MAX_ENVELOPE_XDR_BYTES,
    };
    let env = TransactionEnvelope::from_xdr_base64(b64.trim(), limits.clone())
        .map_err(|e| format!("the envelope is not a base64 TransactionEnvelope: {e}"))?;
    let envelope_xdr = env.to_xdr_base64(limits).map_err(|e| e.to_string())?;
    let hash = env.hash(network_id).map_err(|e| e.to_string())?;
    let body = match env {
        TransactionEnvelope::Tx(v1) => {
            let signatures = v1.signatures.to_vec();
            let auth = check_signatures(&v1.tx, &signatures, &hash);
            Body::V1 {
                tx: Box::new(v1.tx),
                signatures,
                auth,
            }
        }
        TransactionEnvelope::TxV0(_) | TransactionEnvelope::TxFeeBump(_) => Body::Unsupported,
    };
    Ok(Decoded {
        hash,
        envelope_xdr,
        body,
    })
}

/// Every required signer (the source account, each distinct operation source, each ed25519
/// extra signer) needs a signature whose hint is the key's last 4 bytes and that verifies
/// over the hash; every signature must be used by some signer.
fn check_signatures(tx: &Transaction, sigs: &[DecoratedSignature], hash: &[u8; 32]) -> Auth {
    let mut required = vec![AccountKey::from_muxed(&tx.source_account).0];
    for op in tx.operations.iter() {
        if let Some(src) = &op.source_account {
            let k = AccountKey::from_muxed(src).0;
            if !required.contains(&k) {
                required.push(k);
            }
        }
    }
    if let Preconditions::V2(p) = &tx.cond {
        for signer in p.extra_signers.iter() {
            match signer {
                SignerKey::Ed25519(k) if !required.contains(&k.0) => required.push(k.0),
                SignerKey::Ed25519(_) => {}
                // Pre-auth, hash-x and signed-payload signers are not simulated.
                SignerKey::PreAuthTx(_)
                | SignerKey::HashX(_)
                | SignerKey::Ed25519SignedPayload(_) => {
                    return Auth::Missing;
                }
            }
        }
    }
    let mut used = vec![false; sigs.len()];
    for key in required {
        let hint = AccountKey(key).hint();
        let Ok(vk) = VerifyingKey::from_bytes(&key) else {
            return Auth::Missing;
        };
        let found = sigs.iter().enumerate().find(|(i, s)| {
            !used[*i]
                && s.hint.0 == hint
                && Signature::from_slice(s.signature.0.as_slice())
                    .is_ok_and(|sig| vk.verify_strict(hash, &sig).is_ok())
        });
        match found {
            Some((i, _)) => used[i] = true,
            None => return Auth::Missing,
        }
    }
    if used.iter().all(|u| *u) {
        Auth::Ok
    } else {
        Auth::Extra
    }
}

/// The ledger a validity check is made against: the one that would include the transaction.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub ledger_seq: u32,
    pub close_time: u64,
    pub base_fee: i64,
    pub base_reserve: i64,
}

/// A transaction that passed the checks.
#[derive(Clone, Copy, Debug)]
pub struct Valid {
    pub source: AccountKey,
    /// The fee to charge: base fee times operation count (never more than the bid).
    pub fee: i64,
}

/// Why a transaction may not enter the ledger, with the fee its result reports.
#[derive(Clone, Debug)]
pub struct Invalid {
    pub result: TransactionResultResult,
    pub fee: i64,
}

/// The minimum fee of a transaction: base fee times operation count (at least one).
pub fn min_fee(tx: &Transaction, base_fee: i64) -> i64 {
    let ops = i64::try_from(tx.operations.len().max(1)).unwrap_or(i64::MAX);
    base_fee.saturating_mul(ops)
}

/// Checks a transaction against the ledger state `accounts` and the ledger described by `ctx`.
pub fn check_valid(
    accounts: &HashMap<AccountKey, Account>,
    tx: &Transaction,
    auth: Auth,
    ctx: &Ctx,
) -> Result<Valid, Invalid> {
    let fee = min_fee(tx, ctx.base_fee);
    let fail = |result| Err(Invalid { result, fee });

    if matches!(tx.ext, TransactionExt::V1(_)) {
        return fail(TransactionResultResult::TxMalformed);
    }
    if tx.operations.is_empty() {
        return fail(TransactionResultResult::TxMissingOperation);
    }
    if let Some(code) = check_bounds(&tx.cond, ctx) {
        return fail(code);
    }
    if i64::from(tx.fee) < fee {
        return fail(TransactionResultResult::TxInsufficientFee);
    }
    let source = AccountKey::from_muxed(&tx.source_account);
    let Some(account) = accounts.get(&source) else {
        return fail(TransactionResultResult::TxNoAccount);
    };
    if !seq_ok(tx, account) {
        return fail(TransactionResultResult::TxBadSeq);
    }
    if let Preconditions::V2(p) = &tx.cond {
        let age = ctx.close_time.saturating_sub(account.seq_time);
        let gap = ctx.ledger_seq.saturating_sub(account.seq_ledger);
        if age < p.min_seq_age.0 || gap < p.min_seq_ledger_gap {
            return fail(TransactionResultResult::TxBadMinSeqAgeOrGap);
        }
    }
    if auth == Auth::Missing {
        return fail(TransactionResultResult::TxBadAuth);
    }
    if account.available(ctx.base_reserve) < fee {
        return fail(TransactionResultResult::TxInsufficientBalance);
    }
    let results: Vec<OperationResult> = tx
        .operations
        .iter()
        .map(|op| {
            let op_source = op.source_account.as_ref().map(AccountKey::from_muxed);
            if op_source.is_some_and(|k| !accounts.contains_key(&k)) {
                return OperationResult::OpNoAccount;
            }
            let source = op_source.unwrap_or_else(|| AccountKey::from_muxed(&tx.source_account));
            check_op(&op.body, source)
        })
        .collect();
    if !results.iter().all(codes::op_succeeded) {
        return fail(codes::ops_result(results, false));
    }
    if auth == Auth::Extra {
        return fail(TransactionResultResult::TxBadAuthExtra);
    }
    Ok(Valid { source, fee })
}

/// The checks an operation passes on its own (core's `doCheckValid`), as the result it
/// would have if it applied: `op_malformed`, `op_not_supported` for what the simulator does
/// not model, else a success. `source` is the operation's effective source account.
fn check_op(body: &OperationBody, source: AccountKey) -> OperationResult {
    match body {
        OperationBody::Payment(p) if p.amount <= 0 || AssetId::from_xdr(&p.asset).is_none() => {
            codes::payment_result(PaymentResult::Malformed)
        }
        OperationBody::Payment(_) => codes::payment_result(PaymentResult::Success),
        // A starting balance of 0 is well-formed since protocol 14 (a sponsored account);
        // without a sponsor it fails at apply with op_low_reserve.
        OperationBody::CreateAccount(c)
            if c.starting_balance < 0 || AccountKey::from_account_id(&c.destination) == source =>
        {
            codes::create_account_result(CreateAccountResult::Malformed)
        }
        OperationBody::CreateAccount(_) => {
            codes::create_account_result(CreateAccountResult::Success)
        }
        OperationBody::CreateClaimableBalance(c) => {
            let claimants = keys::claimant_keys(&c.claimants);
            let distinct = claimants
                .iter()
                .enumerate()
                .all(|(i, k)| !claimants[..i].contains(k));
            if c.amount <= 0
                || AssetId::from_xdr(&c.asset).is_none()
                || claimants.is_empty()
                || !distinct
            {
                return codes::create_claimable_balance_result(
                    CreateClaimableBalanceResult::Malformed,
                );
            }
            // Only unconditional claimants are modelled; other predicates are refused
            // before inclusion rather than evaluated wrongly.
            let unconditional = c.claimants.iter().all(|cl| {
                matches!(cl, Claimant::ClaimantTypeV0(v0) if v0.predicate == ClaimPredicate::Unconditional)
            });
            if !unconditional {
                return OperationResult::OpNotSupported;
            }
            // The id is only known at apply; any placeholder marks "would succeed".
            codes::create_claimable_balance_result(CreateClaimableBalanceResult::Success(
                ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash([0; 32])),
            ))
        }
        OperationBody::ClaimClaimableBalance(_) => {
            codes::claim_claimable_balance_result(ClaimClaimableBalanceResult::Success)
        }
        _ => OperationResult::OpNotSupported,
    }
}

/// The sequence number must be the account's + 1, or, with `min_seq_num`, anything above the
/// account's as long as the account's is at least `min_seq_num`.
fn seq_ok(tx: &Transaction, account: &Account) -> bool {
    let seq = tx.seq_num.0;
    match &tx.cond {
        Preconditions::V2(p) if p.min_seq_num.is_some() => {
            let min = p.min_seq_num.as_ref().map_or(0, |m| m.0);
            account.seq >= min && account.seq < seq
        }
        _ => account.seq.checked_add(1) == Some(seq),
    }
}

/// Whether a transaction's time or ledger bounds end before the ledger `ctx` describes:
/// it can never be included in that ledger or a later one.
pub fn too_late(cond: &Preconditions, ctx: &Ctx) -> bool {
    check_bounds(cond, ctx) == Some(TransactionResultResult::TxTooLate)
}

/// Time bounds against the close time, ledger bounds against the ledger sequence.
fn check_bounds(cond: &Preconditions, ctx: &Ctx) -> Option<TransactionResultResult> {
    let (time, ledgers): (Option<&TimeBounds>, Option<&LedgerBounds>) = match cond {
        Preconditions::None => (None, None),
        Preconditions::Time(tb) => (Some(tb), None),
        Preconditions::V2(p) => (p.time_bounds.as_ref(), p.ledger_bounds.as_ref()),
    };
    if let Some(tb) = time {
        if ctx.close_time < tb.min_time.0 {
            return Some(TransactionResultResult::TxTooEarly);
        }
        if tb.max_time.0 != 0 && ctx.close_time > tb.max_time.0 {
            return Some(TransactionResultResult::TxTooLate);
        }
    }
    if let Some(lb) = ledgers {
        if ctx.ledger_seq < lb.min_ledger {
            return Some(TransactionResultResult::TxTooEarly);
        }
        // max_ledger is exclusive.
        if lb.max_ledger != 0 && ctx.ledger_seq >= lb.max_ledger {
            return Some(TransactionResultResult::TxTooLate);
        }
    }
    None
}
