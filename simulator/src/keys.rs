//! Account keys and asset identities: strkey (`G…`, `M…`) strings to and from XDR.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use stellar_xdr::{
    AccountId, AlphaNum4, AlphaNum12, Asset, AssetCode4, AssetCode12, Claimant, HashIdPreimage,
    HashIdPreimageOperationId, Limits, MuxedAccount, PublicKey, SequenceNumber, Uint256, WriteXdr,
};

use crate::error::SimError;

/// An ed25519 account public key; shown and stored as its `G…` strkey.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey(pub [u8; 32]);

impl AccountKey {
    /// Parses a `G…` account id (checksum verified).
    pub fn parse(s: &str) -> Result<Self, SimError> {
        match PublicKey::from_str(s) {
            Ok(PublicKey::PublicKeyTypeEd25519(Uint256(k))) => Ok(Self(k)),
            Err(_) => Err(SimError::InvalidAccount(s.to_owned())),
        }
    }

    /// The underlying account of a (possibly muxed) account.
    pub fn from_muxed(m: &MuxedAccount) -> Self {
        match m {
            MuxedAccount::Ed25519(Uint256(k)) => Self(*k),
            MuxedAccount::MuxedEd25519(med) => Self(med.ed25519.0),
        }
    }

    pub fn from_account_id(a: &AccountId) -> Self {
        let AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(k))) = a;
        Self(*k)
    }

    pub fn to_account_id(self) -> AccountId {
        AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(self.0)))
    }

    /// The signature hint of this key: its last 4 bytes.
    pub fn hint(&self) -> [u8; 4] {
        [self.0[28], self.0[29], self.0[30], self.0[31]]
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        PublicKey::PublicKeyTypeEd25519(Uint256(self.0)).fmt(f)
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for AccountKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccountKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An asset: native XLM or a credit asset `CODE:ISSUER`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum AssetId {
    Native,
    Credit { code: String, issuer: AccountKey },
}

impl AssetId {
    /// Reads an XDR asset; `None` if its code is malformed (what core calls an invalid asset).
    pub fn from_xdr(asset: &Asset) -> Option<Self> {
        match asset {
            Asset::Native => Some(Self::Native),
            Asset::CreditAlphanum4(a) => Some(Self::Credit {
                code: code_from_bytes(&a.asset_code.0, 1)?,
                issuer: AccountKey::from_account_id(&a.issuer),
            }),
            Asset::CreditAlphanum12(a) => Some(Self::Credit {
                code: code_from_bytes(&a.asset_code.0, 5)?,
                issuer: AccountKey::from_account_id(&a.issuer),
            }),
        }
    }

    /// A credit asset from its code (1–12 ASCII alphanumerics) and `G…` issuer.
    pub fn credit(code: &str, issuer: &str) -> Result<Self, SimError> {
        let valid =
            (1..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid {
            return Err(SimError::InvalidAsset(format!("{code}:{issuer}")));
        }
        Ok(Self::Credit {
            code: code.to_owned(),
            issuer: AccountKey::parse(issuer)?,
        })
    }

    /// `native` or `CODE:ISSUER`; also the key of a trustline in [`crate::state::Account`].
    pub fn key(&self) -> String {
        match self {
            Self::Native => "native".to_owned(),
            Self::Credit { code, issuer } => format!("{code}:{issuer}"),
        }
    }

    /// The inverse of [`AssetId::key`].
    pub fn from_key(key: &str) -> Result<Self, SimError> {
        match key.split_once(':') {
            None if key == "native" => Ok(Self::Native),
            None => Err(SimError::InvalidAsset(key.to_owned())),
            Some((code, issuer)) => Self::credit(code, issuer),
        }
    }

    /// The XDR asset: 1–4 character codes are alphanum4, longer ones alphanum12.
    pub fn to_xdr(&self) -> Asset {
        match self {
            Self::Native => Asset::Native,
            Self::Credit { code, issuer } if code.len() <= 4 => {
                let mut bytes = [0u8; 4];
                bytes[..code.len()].copy_from_slice(code.as_bytes());
                Asset::CreditAlphanum4(AlphaNum4 {
                    asset_code: AssetCode4(bytes),
                    issuer: issuer.to_account_id(),
                })
            }
            Self::Credit { code, issuer } => {
                let mut bytes = [0u8; 12];
                // A credit code is at most 12 bytes (checked where an AssetId is built).
                let len = code.len().min(12);
                bytes[..len].copy_from_slice(&code.as_bytes()[..len]);
                Asset::CreditAlphanum12(AlphaNum12 {
                    asset_code: AssetCode12(bytes),
                    issuer: issuer.to_account_id(),
                })
            }
        }
    }
}

/// The id of the claimable balance that operation `op_index` (0-based) of a transaction
/// with source `tx_source` and sequence number `seq` creates: the sha256 of the XDR of
/// `HashIdPreimage::OpId`, as core computes it (the transaction's source, not the
/// operation's).
pub fn balance_id(tx_source: AccountKey, seq: i64, op_index: u32) -> [u8; 32] {
    let preimage = HashIdPreimage::OpId(HashIdPreimageOperationId {
        source_account: tx_source.to_account_id(),
        seq_num: SequenceNumber(seq),
        op_num: op_index,
    });
    // Writing a fixed-size value to a growable buffer without limits cannot fail.
    let xdr = preimage.to_xdr(Limits::none()).unwrap_or_default();
    Sha256::digest(&xdr).into()
}

/// The claimant accounts of a create-claimable-balance operation, in order.
pub fn claimant_keys(claimants: &[Claimant]) -> Vec<AccountKey> {
    claimants
        .iter()
        .map(|c| match c {
            Claimant::ClaimantTypeV0(v0) => AccountKey::from_account_id(&v0.destination),
        })
        .collect()
}

/// Horizon's form of a claimable balance id: the hex of the `ClaimableBalanceId` XDR, i.e.
/// the 4-byte type (0, V0) then the hash.
pub fn balance_id_hex(hash: &[u8; 32]) -> String {
    format!("00000000{}", hex::encode(hash))
}

/// Horizon's `asset_type` for a credit asset code.
pub fn credit_asset_type(code: &str) -> &'static str {
    if code.len() <= 4 {
        "credit_alphanum4"
    } else {
        "credit_alphanum12"
    }
}

/// An asset code from its zero-padded XDR bytes: alphanumerics, then only zero padding,
/// at least `min_len` characters.
fn code_from_bytes(bytes: &[u8], min_len: usize) -> Option<String> {
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let (code, padding) = bytes.split_at(len);
    let valid = code.len() >= min_len
        && code.iter().all(u8::is_ascii_alphanumeric)
        && padding.iter().all(|b| *b == 0);
    // All bytes are ASCII here, so the conversion cannot fail.
    valid.then(|| String::from_utf8_lossy(code).into_owned())
}

/// The hash of a Horizon-form claimable balance id (`00000000` + 64 hex), if it is one.
pub fn parse_balance_id(id: &str) -> Option<[u8; 32]> {
    let hash_hex = id.strip_prefix("00000000")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hash_hex, &mut hash).ok()?;
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_round_trip_and_reject_bad_checksums() {
        let g = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
        let k = AccountKey::parse(g).expect("valid key");
        assert_eq!(k.to_string(), g);
        assert!(
            AccountKey::parse("GBPXXOA5N4JYPESHAADMQKBPWZWQDQ64ZV6ZL2S3LAGW4SY7NTCMWIVT").is_err()
        );
        assert!(
            AccountKey::parse("SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH").is_err()
        );
    }

    #[test]
    fn balance_ids_are_shown_in_horizon_form() {
        let id = balance_id_hex(&[0xab; 32]);
        assert_eq!(id, format!("00000000{}", "ab".repeat(32)));
        assert_eq!(parse_balance_id(&id), Some([0xab; 32]));
        assert_eq!(parse_balance_id(&"ab".repeat(36)), None);
    }

    #[test]
    fn assets_round_trip_through_xdr() {
        let issuer = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
        for key in [
            "native".to_owned(),
            format!("USDC:{issuer}"),
            format!("LONGCODE1:{issuer}"),
        ] {
            let a = AssetId::from_key(&key).expect("valid");
            assert_eq!(AssetId::from_xdr(&a.to_xdr()), Some(a.clone()));
            assert_eq!(a.key(), key);
        }
    }

    #[test]
    fn asset_codes_follow_core_rules() {
        assert_eq!(code_from_bytes(b"USDC", 1).as_deref(), Some("USDC"));
        assert_eq!(code_from_bytes(b"AB\0\0", 1).as_deref(), Some("AB"));
        assert_eq!(code_from_bytes(b"\0\0\0\0", 1), None);
        assert_eq!(code_from_bytes(b"A\0B\0", 1), None);
        assert_eq!(code_from_bytes(b"ABCD\0\0\0\0\0\0\0\0", 5), None);
        assert_eq!(
            code_from_bytes(b"ABCDE\0\0\0\0\0\0\0", 5).as_deref(),
            Some("ABCDE")
        );
        assert_eq!(code_from_bytes(b"AB-D", 1), None);
    }
}
