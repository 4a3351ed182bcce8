//! Signing keys: one `Keypair` per account we sign for, gathered in a `Keyring`.
//!
//! Seeds come in as `S…` StrKeys and are turned into ed25519 signing keys at once; the
//! text is never stored, and no error, `Debug` output or log line ever shows a seed (the
//! tests at the bottom check it). `ed25519_dalek::SigningKey` wipes its secret on drop,
//! and the temporary seed bytes are wiped here.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use payoutd_actors::domain::AccountId;
use payoutd_actors::strkey::{self, StrKeyError};
use zeroize::Zeroize;

/// Why a seed was refused. Deliberately carries no part of the input: it may be a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not a valid `S…` seed (wrong kind, length, alphabet or checksum).
    #[error("signing seed is not a valid S… secret key: it {0}")]
    InvalidSeed(StrKeyError),
}

/// An ed25519 key pair for one Stellar account.
pub struct Keypair {
    /// Wiped on drop by `ed25519_dalek` (its `zeroize` feature is on by default).
    signing: SigningKey,
    /// Derived from `signing` once, so lookups and hints need no curve arithmetic.
    account: AccountId,
}

impl Keypair {
    /// Parses an `S…` seed. The error never repeats the input.
    pub fn from_seed(seed: &str) -> Result<Self, KeyError> {
        let mut bytes = strkey::decode_seed(seed).map_err(KeyError::InvalidSeed)?;
        let signing = SigningKey::from_bytes(&bytes);
        bytes.zeroize();
        let account = AccountId::from_bytes(signing.verifying_key().to_bytes());
        Ok(Self { signing, account })
    }

    /// The public account (`G…`) this key signs for.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The signature hint Stellar expects: the last 4 bytes of the public key.
    pub fn hint(&self) -> [u8; 4] {
        let key = self.account.as_bytes();
        [key[28], key[29], key[30], key[31]]
    }

    /// Ed25519 signature over `message` (for Stellar: the 32-byte transaction hash).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The keys the service may sign with, by account.
#[derive(Default)]
pub struct Keyring {
    /// Ordered so that `Debug` output and `accounts()` are stable.
    keys: BTreeMap<AccountId, Keypair>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses every seed; the error names the position of the bad one, never its text.
    pub fn from_seeds<'a>(seeds: impl IntoIterator<Item = &'a str>) -> Result<Self, KeyringError> {
        let mut ring = Self::new();
        for (index, seed) in seeds.into_iter().enumerate() {
            let pair = Keypair::from_seed(seed).map_err(|source| KeyringError { index, source })?;
            ring.insert(pair);
        }
        Ok(ring)
    }

    /// Adds a key; a second key for the same account replaces the first (it is the same key).
    pub fn insert(&mut self, pair: Keypair) {
        self.keys.insert(pair.account(), pair);
    }

    pub fn get(&self, account: &AccountId) -> Option<&Keypair> {
        self.keys.get(account)
    }

    pub fn contains(&self, account: &AccountId) -> bool {
        self.keys.contains_key(account)
    }

    /// The public accounts in the ring, in order.
    pub fn accounts(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.keys.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for Keyring {
    /// Public keys only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("accounts", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A seed in a list that did not parse: which one (0-based) and why, without its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing seed #{index} is invalid")]
pub struct KeyringError {
    pub index: usize,
    #[source]
    pub source: KeyError,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
    const ACCOUNT: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
    /// A seed with a broken checksum (a public test vector).
    const BAD_SEED: &str = "SBGWKM3CD4IL47QN6X54N6Y33T3JDNVI6AIJ6CD5IM47HG3IG4O36XCX";

    /// Every way a value could leak into text: Display of errors, Debug of everything.
    fn assert_no_secret(text: &str) {
        for secret in [SEED, BAD_SEED] {
            assert!(!text.contains(secret), "secret leaked into {text:?}");
            // Also no long fragment of it (e.g. a truncated echo).
            assert!(
                !text.contains(&secret[..12]),
                "secret fragment leaked into {text:?}"
            );
        }
    }

    #[test]
    fn seed_gives_the_brief_account() {
        let pair = Keypair::from_seed(SEED).unwrap();
        assert_eq!(pair.account().to_strkey(), ACCOUNT);
        assert_eq!(pair.hint(), [0xf2, 0x87, 0x9d, 0x09]);
    }

    #[test]
    fn debug_shows_public_keys_only() {
        let pair = Keypair::from_seed(SEED).unwrap();
        let text = format!("{pair:?}");
        assert!(text.contains(ACCOUNT));
        assert_no_secret(&text);
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let text = format!("{ring:?} {ring:#?}");
        assert!(text.contains(ACCOUNT));
        assert_no_secret(&text);
    }

    #[test]
    fn errors_never_echo_the_seed() {
        for bad in [
            BAD_SEED,
            ACCOUNT,
            "",
            "S",
            &SEED.to_lowercase(),
            &SEED[..55],
        ] {
            let err = Keypair::from_seed(bad).unwrap_err();
            assert_no_secret(&err.to_string());
            assert_no_secret(&format!("{err:?}"));
        }
        let err = Keyring::from_seeds([SEED, BAD_SEED]).unwrap_err();
        assert_eq!(err.index, 1);
        assert_no_secret(&err.to_string());
        assert_no_secret(&format!("{err:?}"));
    }

    #[test]
    fn an_account_id_is_not_a_seed() {
        assert_eq!(
            Keypair::from_seed(ACCOUNT).unwrap_err(),
            KeyError::InvalidSeed(StrKeyError::Version)
        );
    }

    #[test]
    fn keyring_lookup() {
        let ring = Keyring::from_seeds([SEED, SEED]).unwrap();
        assert_eq!(ring.len(), 1);
        let account = AccountId::parse(ACCOUNT).unwrap();
        assert!(ring.contains(&account));
        assert_eq!(ring.get(&account).map(Keypair::account), Some(account));
        assert_eq!(ring.accounts().collect::<Vec<_>>(), vec![account]);
    }

    #[test]
    fn signature_verifies() {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let pair = Keypair::from_seed(SEED).unwrap();
        let sig = Signature::from_bytes(&pair.sign(b"hello"));
        let key = VerifyingKey::from_bytes(pair.account().as_bytes()).unwrap();
        assert!(key.verify(b"hello", &sig).is_ok());
    }
}
