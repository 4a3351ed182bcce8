//! Ledger entries as XDR, for RPC's `getLedgerEntries`: accounts, trustlines and claimable
//! balances built from the simulator's state.
//!
//! An account entry has what a fresh Stellar account has (master key weight 1, no other
//! signers, thresholds 0, no flags, home domain or inflation destination) plus its balance,
//! sequence number and subentry count. Its extension is left out (V0) while there is nothing
//! to say; once the account sent a transaction or sponsors reserves it carries the V1 → V2
//! → V3 chain, with zero liabilities, `numSponsoring`, and the sequence ledger and time.
//! Trustlines are authorized; claimable balances have unconditional claimants only.

use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountEntryExtensionV1, AccountEntryExtensionV1Ext,
    AccountEntryExtensionV2, AccountEntryExtensionV2Ext, AccountEntryExtensionV3, ClaimPredicate,
    ClaimableBalanceEntry, ClaimableBalanceEntryExt, ClaimableBalanceId, Claimant, ClaimantV0,
    ExtensionPoint, Hash, LedgerEntryData, Liabilities, SequenceNumber, String32, Thresholds,
    TimePoint, TrustLineAsset, TrustLineEntry, TrustLineEntryExt, VecM,
};

use crate::keys::{AccountKey, AssetId, parse_balance_id};
use crate::state::{Account, ClaimableBalance, Trustline};

/// Core's `AUTHORIZED_FLAG` on a trustline.
const TRUSTLINE_AUTHORIZED_FLAG: u32 = 1;
/// Thresholds: master key weight 1, low/medium/high thresholds 0.
const FRESH_THRESHOLDS: [u8; 4] = [1, 0, 0, 0];

pub fn account_entry(id: AccountKey, a: &Account) -> LedgerEntryData {
    let ext = if a.num_sponsoring == 0 && a.seq_ledger == 0 && a.seq_time == 0 {
        AccountEntryExt::V0
    } else {
        AccountEntryExt::V1(AccountEntryExtensionV1 {
            liabilities: Liabilities {
                buying: 0,
                selling: 0,
            },
            ext: AccountEntryExtensionV1Ext::V2(AccountEntryExtensionV2 {
                num_sponsored: 0,
                num_sponsoring: a.num_sponsoring,
                signer_sponsoring_i_ds: VecM::default(),
                ext: AccountEntryExtensionV2Ext::V3(AccountEntryExtensionV3 {
                    ext: ExtensionPoint::V0,
                    seq_ledger: a.seq_ledger,
                    seq_time: TimePoint(a.seq_time),
                }),
            }),
        })
    };
    LedgerEntryData::Account(AccountEntry {
        account_id: id.to_account_id(),
        balance: a.balance,
        seq_num: SequenceNumber(a.seq),
        // Trustlines are the only subentries simulated.
        num_sub_entries: u32::try_from(a.trustlines.len()).unwrap_or(u32::MAX),
        inflation_dest: None,
        flags: 0,
        home_domain: String32::default(),
        thresholds: Thresholds(FRESH_THRESHOLDS),
        signers: VecM::default(),
        ext,
    })
}

pub fn trustline_entry(
    id: AccountKey,
    asset: &TrustLineAsset,
    line: &Trustline,
) -> LedgerEntryData {
    LedgerEntryData::Trustline(TrustLineEntry {
        account_id: id.to_account_id(),
        asset: asset.clone(),
        balance: line.balance,
        limit: line.limit,
        flags: TRUSTLINE_AUTHORIZED_FLAG,
        ext: TrustLineEntryExt::V0,
    })
}

/// `None` only if the stored balance is not one the simulator wrote (bad id or asset).
pub fn balance_entry(cb: &ClaimableBalance) -> Option<LedgerEntryData> {
    let hash = parse_balance_id(&cb.id)?;
    let asset = AssetId::from_key(&cb.asset).ok()?;
    let claimants: Vec<Claimant> = cb
        .claimants
        .iter()
        .map(|k| {
            Claimant::ClaimantTypeV0(ClaimantV0 {
                destination: k.to_account_id(),
                predicate: ClaimPredicate::Unconditional,
            })
        })
        .collect();
    Some(LedgerEntryData::ClaimableBalance(ClaimableBalanceEntry {
        balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(hash)),
        // At most 10 claimants: the operation that created it had at most 10.
        claimants: claimants.try_into().ok()?,
        asset: asset.to_xdr(),
        amount: cb.amount_stroops,
        ext: ClaimableBalanceEntryExt::V0,
    }))
}
