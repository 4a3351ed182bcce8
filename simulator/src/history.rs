//! What the history listings need of each applied transaction: its operations in a form
//! Horizon renders, who takes part in each (Horizon's participant rule), and TOIDs.
//!
//! Horizon's participants of an operation are its source (the operation's, else the
//! transaction's) and the accounts the operation names: a payment's destination, a new
//! account, a claimable balance's claimants. A transaction's participants are its source and
//! the participants of all its operations. (Horizon also adds accounts whose entries the
//! transaction's meta changed, such as a sponsor getting its reserve back; that is not
//! modelled.)

use stellar_xdr::{
    ClaimableBalanceId, Limits, MuxedAccount, OperationBody, ReadXdr, Transaction,
    TransactionEnvelope,
};

use crate::keys::{AccountKey, AssetId, balance_id_hex, claimant_keys};

/// Horizon's total order id: ledger, application order within it, operation index + 1.
pub fn toid(ledger: u32, application_order: u32, op_number: u32) -> u64 {
    // A TOID keeps 20 bits for the application order and 12 for the operation number; a
    // ledger holds far fewer transactions, and a transaction at most 100 operations.
    (u64::from(ledger) << 32)
        | (u64::from(application_order & 0xF_FFFF) << 12)
        | u64::from(op_number & 0xFFF)
}

/// The (ledger, application order, operation number) of a TOID.
pub fn parse_toid(id: u64) -> (u32, u32, u32) {
    // Each part is masked to its width, so the conversions cannot lose anything.
    let ledger = u32::try_from(id >> 32).unwrap_or(u32::MAX);
    let order = u32::try_from((id >> 12) & 0xF_FFFF).unwrap_or(0);
    let op = u32::try_from(id & 0xFFF).unwrap_or(0);
    (ledger, order, op)
}

/// One operation of an applied transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// 0-based index within the transaction.
    pub index: u32,
    /// The operation's source as given (`G…` or `M…`), else the transaction's.
    pub source: MuxedAccount,
    pub body: OpBody,
    /// Horizon's participants of this operation, without repeats.
    pub participants: Vec<AccountKey>,
}

/// The operation kinds the simulator applies, with what Horizon shows of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpBody {
    Payment {
        to: MuxedAccount,
        asset: Option<AssetId>,
        amount: i64,
    },
    CreateAccount {
        account: AccountKey,
        starting_balance: i64,
    },
    CreateClaimableBalance {
        asset: Option<AssetId>,
        amount: i64,
        claimants: Vec<AccountKey>,
    },
    ClaimClaimableBalance {
        /// Horizon's hex form.
        balance_id: String,
    },
    /// Never in a ledger (rejected before inclusion); kept so indexes stay aligned.
    Other,
}

impl OpBody {
    /// Horizon's `type` and `type_i`.
    pub fn type_name(&self) -> (&'static str, u32) {
        match self {
            Self::CreateAccount { .. } => ("create_account", 0),
            Self::Payment { .. } => ("payment", 1),
            Self::CreateClaimableBalance { .. } => ("create_claimable_balance", 14),
            Self::ClaimClaimableBalance { .. } => ("claim_claimable_balance", 15),
            Self::Other => ("unknown", 999),
        }
    }

    /// Whether Horizon lists it under `/payments`.
    pub fn is_payment(&self) -> bool {
        matches!(self, Self::Payment { .. } | Self::CreateAccount { .. })
    }
}

fn push_unique(v: &mut Vec<AccountKey>, k: AccountKey) {
    if !v.contains(&k) {
        v.push(k);
    }
}

/// The operations of `tx` with their participants.
pub fn operations(tx: &Transaction) -> Vec<OpInfo> {
    tx.operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let source = op
                .source_account
                .clone()
                .unwrap_or_else(|| tx.source_account.clone());
            let mut participants = vec![AccountKey::from_muxed(&source)];
            let body = match &op.body {
                OperationBody::Payment(p) => {
                    push_unique(&mut participants, AccountKey::from_muxed(&p.destination));
                    OpBody::Payment {
                        to: p.destination.clone(),
                        asset: AssetId::from_xdr(&p.asset),
                        amount: p.amount,
                    }
                }
                OperationBody::CreateAccount(c) => {
                    let account = AccountKey::from_account_id(&c.destination);
                    push_unique(&mut participants, account);
                    OpBody::CreateAccount {
                        account,
                        starting_balance: c.starting_balance,
                    }
                }
                OperationBody::CreateClaimableBalance(c) => {
                    let claimants = claimant_keys(&c.claimants);
                    for k in &claimants {
                        push_unique(&mut participants, *k);
                    }
                    OpBody::CreateClaimableBalance {
                        asset: AssetId::from_xdr(&c.asset),
                        amount: c.amount,
                        claimants,
                    }
                }
                OperationBody::ClaimClaimableBalance(c) => OpBody::ClaimClaimableBalance {
                    balance_id: match &c.balance_id {
                        ClaimableBalanceId::ClaimableBalanceIdTypeV0(h) => balance_id_hex(&h.0),
                    },
                },
                _ => OpBody::Other,
            };
            OpInfo {
                // At most 100 operations per transaction.
                index: u32::try_from(i).unwrap_or(u32::MAX),
                source,
                body,
                participants,
            }
        })
        .collect()
}

/// The transaction's participants: its source, then its operations' participants.
pub fn tx_participants(tx: &Transaction, ops: &[OpInfo]) -> Vec<AccountKey> {
    let mut all = vec![AccountKey::from_muxed(&tx.source_account)];
    for op in ops {
        for k in &op.participants {
            push_unique(&mut all, *k);
        }
    }
    all
}

/// The transaction of a stored V1 envelope (the only kind that enters a ledger).
pub fn decode_tx(envelope_xdr: &str) -> Result<Transaction, String> {
    match TransactionEnvelope::from_xdr_base64(envelope_xdr, Limits::none()) {
        Ok(TransactionEnvelope::Tx(v1)) => Ok(v1.tx),
        Ok(_) => Err("a stored envelope is not a V1 envelope".to_owned()),
        Err(e) => Err(format!("a stored envelope does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::WriteXdr;

    fn balance_id_xdr(hash: [u8; 32]) -> String {
        let id = ClaimableBalanceId::ClaimableBalanceIdTypeV0(stellar_xdr::Hash(hash));
        hex::encode(id.to_xdr(Limits::none()).expect("encodes"))
    }

    #[test]
    fn toids_round_trip_and_order() {
        let id = toid(7, 3, 2);
        assert_eq!(id, (7u64 << 32) | (3 << 12) | 2);
        assert_eq!(parse_toid(id), (7, 3, 2));
        assert!(toid(7, 3, 0) < toid(7, 3, 1));
        assert!(toid(7, 3, 100) < toid(7, 4, 0));
        assert!(toid(7, 999, 100) < toid(8, 1, 0));
    }

    #[test]
    fn balance_id_hex_is_the_xdr_of_the_id() {
        let h = [0xab; 32];
        assert_eq!(balance_id_hex(&h), balance_id_xdr(h));
        assert!(balance_id_hex(&h).starts_with("00000000abab"));
    }
}
