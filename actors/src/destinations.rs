//! Destinations that are not ready for a payment, and what payoutd pays them with instead.
//!
//! A payout is paid by one operation of its envelope. Its kind is journaled on the payout
//! (`OpKind`) and starts as a `Payment`. When a transaction fails and a member's own
//! operation says why, [`reroute`] decides whether another kind can pay it:
//!
//! - `op_no_trust` (the destination has no trustline for a credit asset), with
//!   `no_trust = "claimable_balance"`: a `CreateClaimableBalance` of the same asset and
//!   amount, claimable by the destination without condition. The payout is confirmed when
//!   the balance exists; its id ([`claimable_balance_id`]) is recorded.
//! - `op_no_destination` (the account does not exist), paid in XLM, with
//!   `no_account = "create_account"`, when the amount covers the minimum balance of a new
//!   account (two base reserves): a `CreateAccount` with the amount as starting balance.
//! - A `CreateAccount` that finds the account created meanwhile (`op_already_exists`): back
//!   to a `Payment`.
//!
//! Muxed destinations (`M…`) are never rerouted: a claimable balance or a new account can
//! only name the underlying `G…` account, which would drop the id the caller relies on.
//! A rerouted payout leaves its failed envelope like any other member (nothing was paid,
//! the transaction applied atomically) and joins a new batch: exactly once holds for every
//! kind by the same protocol. docs/protocol.md, "Operation kinds".

use sha2::{Digest, Sha256};

use crate::domain::{AccountId, Asset, Destination, PayoutRequest};

/// The operation that pays a payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OpKind {
    #[default]
    Payment,
    /// `CreateClaimableBalance` with the destination as the only, unconditional claimant.
    ClaimableBalance,
    /// `CreateAccount` (XLM only): the amount is the new account's starting balance.
    CreateAccount,
}

impl OpKind {
    pub const ALL: [OpKind; 3] = [Self::Payment, Self::ClaimableBalance, Self::CreateAccount];

    /// The name in the journal, the API and the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::ClaimableBalance => "claimable_balance",
            Self::CreateAccount => "create_account",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when the destination does not trust the asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoTrust {
    /// The payout fails with `op_no_trust`.
    #[default]
    Fail,
    /// Pay with a claimable balance the destination can claim once it trusts the asset.
    ClaimableBalance,
}

/// What to do when the destination account does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoAccount {
    /// The payout fails with `op_no_destination`.
    #[default]
    Fail,
    /// Create the account when the payout is in XLM and covers the minimum balance.
    CreateAccount,
}

/// The configuration of [`reroute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub no_trust: NoTrust,
    pub no_account: NoAccount,
    /// The network's base reserve in stroops (5,000,000 = 0.5 XLM on the public network and
    /// testnet). A new account needs two.
    pub base_reserve_stroops: i64,
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        Self {
            no_trust: NoTrust::Fail,
            no_account: NoAccount::Fail,
            base_reserve_stroops: 5_000_000,
        }
    }
}

impl DestinationPolicy {
    /// The smallest starting balance of a new account, in stroops.
    pub fn account_min_stroops(&self) -> i64 {
        self.base_reserve_stroops.saturating_mul(2)
    }
}

/// What a member's failed operation leads to, beyond the code tables of `policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reroute {
    /// Another kind can pay it: it joins a new batch with this kind.
    To(OpKind),
    /// The code is terminal and no other kind applies; the text says why (for the reason).
    No(Option<String>),
}

/// Decides whether a payout whose own operation of kind `kind` failed with `code` is paid
/// again with another kind of operation.
pub fn reroute(
    policy: &DestinationPolicy,
    request: &PayoutRequest,
    kind: OpKind,
    code: &str,
) -> Reroute {
    let muxed = matches!(request.destination(), Destination::Muxed { .. });
    match (kind, code) {
        (OpKind::Payment, "op_no_trust") => match policy.no_trust {
            NoTrust::Fail => Reroute::No(None),
            NoTrust::ClaimableBalance if muxed => Reroute::No(Some(
                "no claimable balance for a muxed destination (it would drop the muxed id)".into(),
            )),
            NoTrust::ClaimableBalance => Reroute::To(OpKind::ClaimableBalance),
        },
        (OpKind::Payment, "op_no_destination") => match policy.no_account {
            NoAccount::Fail => Reroute::No(None),
            NoAccount::CreateAccount if muxed => Reroute::No(Some(
                "no account creation for a muxed destination (it would drop the muxed id)".into(),
            )),
            NoAccount::CreateAccount if *request.asset() != Asset::Native => {
                Reroute::No(Some("an account can only be created with XLM".into()))
            }
            NoAccount::CreateAccount
                if request.amount().stroops() < policy.account_min_stroops() =>
            {
                Reroute::No(Some(format!(
                    "the amount is below the {} stroops a new account needs (two base reserves), so it is not created",
                    policy.account_min_stroops()
                )))
            }
            NoAccount::CreateAccount => Reroute::To(OpKind::CreateAccount),
        },
        (OpKind::CreateAccount, "op_already_exists") => Reroute::To(OpKind::Payment),
        _ => Reroute::No(None),
    }
}

/// Bytes of the XDR `HashIdPreimage::OpId` this function hashes (4 + 4 + 32 + 8 + 4).
const OP_ID_PREIMAGE_BYTES: usize = 52;
/// `EnvelopeType::OpId` in the XDR.
const ENVELOPE_TYPE_OP_ID: u32 = 6;

/// The id of the claimable balance that operation `op_index` of the transaction with
/// `source` and `sequence` creates, as Horizon shows it: the hex of the XDR
/// `ClaimableBalanceId` (type 0, then the sha256 of the `HashIdPreimage::OpId` of the
/// transaction's source account, sequence number and operation index).
///
/// Written out here rather than through the XDR crate because the core has no XDR; the
/// ledger adapter's tests check it against the XDR encoding and a public vector.
pub fn claimable_balance_id(source: &AccountId, sequence: i64, op_index: u32) -> String {
    let mut preimage = Vec::with_capacity(OP_ID_PREIMAGE_BYTES);
    preimage.extend_from_slice(&ENVELOPE_TYPE_OP_ID.to_be_bytes());
    preimage.extend_from_slice(&0u32.to_be_bytes()); // PublicKeyType::Ed25519
    preimage.extend_from_slice(source.as_bytes());
    preimage.extend_from_slice(&sequence.to_be_bytes());
    preimage.extend_from_slice(&op_index.to_be_bytes());
    let hash = Sha256::digest(&preimage);
    let mut out = String::with_capacity(8 + 64);
    out.push_str("00000000"); // ClaimableBalanceIdType::V0
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RawPayoutRequest;

    fn request(destination: &str, asset: &str, amount: &str) -> PayoutRequest {
        RawPayoutRequest {
            payout_id: "p-1".into(),
            destination: destination.into(),
            asset: asset.into(),
            amount: amount.into(),
            memo: None,
        }
        .parse()
        .unwrap()
    }

    const G: &str = "GA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVSGZ";
    const USDC: &str = "USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN";

    #[test]
    fn names_round_trip() {
        for k in OpKind::ALL {
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(OpKind::parse("path_payment"), None);
    }

    #[test]
    fn reroutes_only_what_is_configured() {
        let off = DestinationPolicy::default();
        let on = DestinationPolicy {
            no_trust: NoTrust::ClaimableBalance,
            no_account: NoAccount::CreateAccount,
            ..off
        };
        let usdc = request(G, USDC, "5");
        let xlm = request(G, "native", "5");
        assert_eq!(
            reroute(&off, &usdc, OpKind::Payment, "op_no_trust"),
            Reroute::No(None)
        );
        assert_eq!(
            reroute(&on, &usdc, OpKind::Payment, "op_no_trust"),
            Reroute::To(OpKind::ClaimableBalance)
        );
        assert_eq!(
            reroute(&off, &xlm, OpKind::Payment, "op_no_destination"),
            Reroute::No(None)
        );
        assert_eq!(
            reroute(&on, &xlm, OpKind::Payment, "op_no_destination"),
            Reroute::To(OpKind::CreateAccount)
        );
        assert!(matches!(
            reroute(&on, &usdc, OpKind::Payment, "op_no_destination"),
            Reroute::No(Some(_))
        ));
        let small = request(G, "native", "0.9999999");
        assert!(matches!(
            reroute(&on, &small, OpKind::Payment, "op_no_destination"),
            Reroute::No(Some(why)) if why.contains("10000000 stroops")
        ));
        assert_eq!(
            reroute(
                &on,
                &request(G, "native", "1"),
                OpKind::Payment,
                "op_no_destination"
            ),
            Reroute::To(OpKind::CreateAccount)
        );
        assert_eq!(
            reroute(&on, &xlm, OpKind::CreateAccount, "op_already_exists"),
            Reroute::To(OpKind::Payment)
        );
        assert_eq!(
            reroute(&on, &usdc, OpKind::ClaimableBalance, "op_no_trust"),
            Reroute::No(None)
        );
        assert_eq!(
            reroute(&on, &xlm, OpKind::Payment, "op_underfunded"),
            Reroute::No(None)
        );
    }

    #[test]
    fn muxed_destinations_keep_their_id() {
        let on = DestinationPolicy {
            no_trust: NoTrust::ClaimableBalance,
            no_account: NoAccount::CreateAccount,
            ..DestinationPolicy::default()
        };
        let account = AccountId::parse(G).unwrap();
        let m = Destination::Muxed { account, id: 7 }.to_strkey();
        for (asset, code) in [(USDC, "op_no_trust"), ("native", "op_no_destination")] {
            assert!(matches!(
                reroute(&on, &request(&m, asset, "5"), OpKind::Payment, code),
                Reroute::No(Some(why)) if why.contains("muxed")
            ));
        }
    }

    #[test]
    fn balance_id_is_the_hex_of_a_v0_id() {
        let id = claimable_balance_id(&AccountId::from_bytes([7; 32]), 42, 3);
        assert_eq!(id.len(), 72);
        assert!(id.starts_with("00000000"));
        assert_ne!(
            id,
            claimable_balance_id(&AccountId::from_bytes([7; 32]), 42, 4)
        );
        assert_ne!(
            id,
            claimable_balance_id(&AccountId::from_bytes([7; 32]), 43, 3)
        );
    }
}
