//! The Stellar adapter: the `Ledger` port of `payoutd-actors` over Horizon.
//!
//! Layout:
//! - [`keys`]: signing keys parsed from `S…` seeds; nothing ever prints a seed.
//! - [`tx`]: one payment transaction built with stellar-xdr, hashed for the network and
//!   signed by the source (and by the payer, in the channel-account pattern).
//! - [`horizon`]: the HTTP client for the documented Horizon subset, and the classification
//!   of submission answers (timeouts and 5xx are `Unknown`, never failures).
//! - [`history`]: the ledger's history for reconciliation (an account's transactions and
//!   operations, paged in ledger order) behind the `LedgerHistory` trait, over Horizon.
//! - [`rpc`]: the JSON-RPC client for the documented Stellar RPC subset, with the same rule
//!   (a provider's error, a 429 or a `TRY_AGAIN_LATER` is `Unknown`, never a failure).
//! - [`StellarLedger`] (over Horizon) and [`RpcLedger`] (over Stellar RPC): signing plus one
//!   of the two clients, each refusing to start against a server that serves another
//!   network than the one configured.
#![forbid(unsafe_code)]

pub mod history;
pub mod horizon;
pub mod keys;
pub mod rpc;
pub mod rpc_history;
pub mod tx;

use async_trait::async_trait;
use payoutd_actors::domain::AccountId;
use payoutd_actors::ports::{
    Envelope, Ledger, LedgerError, LedgerHead, Lookup, SequenceRead, SubmitOutcome, TxHash, TxSpec,
};
use sha2::{Digest, Sha256};

pub use crate::horizon::{HorizonClient, HorizonError, HorizonTimeouts};
pub use crate::keys::{KeyError, Keypair, Keyring, KeyringError};
pub use crate::rpc::{Health, RpcClient, RpcError, RpcTimeouts, SendCounts};

/// The network id that every transaction hash commits to: sha256 of the passphrase.
pub fn network_id(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

/// Why the adapter did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("cannot check the network of Horizon at {url}: {source}")]
    Horizon {
        url: String,
        #[source]
        source: HorizonError,
    },
    /// Signing for another network than Horizon serves would at best waste every
    /// transaction (`tx_bad_auth`); the service refuses to start instead.
    #[error(
        "Horizon at {url} serves the network {horizon:?}, but payoutd is configured for {configured:?}; \
         refusing to sign for another network"
    )]
    PassphraseMismatch {
        url: String,
        configured: String,
        horizon: String,
    },
    #[error("cannot check the network of the Stellar RPC server at {url}: {source}")]
    Rpc {
        url: String,
        #[source]
        source: RpcError,
    },
    /// The same refusal over RPC (`getNetwork`).
    #[error(
        "the Stellar RPC server at {url} serves the network {served:?}, but payoutd is configured for {configured:?}; \
         refusing to sign for another network"
    )]
    RpcPassphraseMismatch {
        url: String,
        configured: String,
        served: String,
    },
}

/// The Stellar network as the payout core sees it: pure signing plus a client of one
/// server, Horizon ([`StellarLedger`]) or Stellar RPC ([`RpcLedger`]). Both answer the
/// `Ledger` port alike; only the client differs.
#[derive(Debug)]
pub struct NetworkLedger<C> {
    client: C,
    /// sha256 of the passphrase checked against the server at `connect`.
    network_id: [u8; 32],
    keyring: Keyring,
}

/// The network over Horizon.
pub type StellarLedger = NetworkLedger<HorizonClient>;
/// The network over Stellar RPC.
pub type RpcLedger = NetworkLedger<RpcClient>;

/// What the `Ledger` port needs of a server's client (Horizon's or Stellar RPC's); their
/// errors become `Unavailable` (the client has already classified every answer that
/// means anything else).
#[async_trait]
pub trait LedgerClient: std::fmt::Debug + Send + Sync + 'static {
    /// How the submission log names the server.
    const SERVER: &'static str;
    async fn submit(&self, envelope_xdr: &str, hash: &TxHash) -> SubmitOutcome;
    async fn transaction(&self, hash: &TxHash) -> Result<Lookup, LedgerError>;
    async fn account_sequence(&self, account: &AccountId) -> Result<SequenceRead, LedgerError>;
    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError>;
}

fn unavailable(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(error.to_string())
}

/// A client's inherent calls as the trait's, their errors made `Unavailable`.
macro_rules! ledger_client {
    ($client:ty, $server:literal) => {
        #[async_trait]
        impl LedgerClient for $client {
            const SERVER: &'static str = $server;
            async fn submit(&self, envelope_xdr: &str, hash: &TxHash) -> SubmitOutcome {
                <$client>::submit(self, envelope_xdr, hash).await
            }
            async fn transaction(&self, hash: &TxHash) -> Result<Lookup, LedgerError> {
                <$client>::transaction(self, hash)
                    .await
                    .map_err(unavailable)
            }
            async fn account_sequence(
                &self,
                account: &AccountId,
            ) -> Result<SequenceRead, LedgerError> {
                <$client>::account_sequence(self, account)
                    .await
                    .map_err(unavailable)
            }
            async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError> {
                <$client>::latest_ledger(self).await.map_err(unavailable)
            }
        }
    };
}

ledger_client!(HorizonClient, "Horizon");
ledger_client!(RpcClient, "Stellar RPC");

impl StellarLedger {
    /// Connects to Horizon and checks that it serves `expected_passphrase` (`GET /`).
    pub async fn connect(
        horizon_url: &str,
        expected_passphrase: &str,
        keyring: Keyring,
        timeouts: HorizonTimeouts,
    ) -> Result<Self, StartupError> {
        // Never the URL as given: it may carry a provider's key.
        let shown = reqwest::Url::parse(horizon_url)
            .map(|u| horizon::redact_url(&u))
            .unwrap_or_else(|_| "(an unparsable URL)".to_owned());
        let startup = |source| StartupError::Horizon {
            url: shown.clone(),
            source,
        };
        let client = HorizonClient::new(horizon_url, timeouts).map_err(startup)?;
        let root = client.root().await.map_err(startup)?;
        if root.network_passphrase != expected_passphrase {
            return Err(StartupError::PassphraseMismatch {
                url: client.display_url().to_owned(),
                configured: expected_passphrase.to_owned(),
                horizon: root.network_passphrase,
            });
        }
        tracing::info!(
            horizon = client.display_url(),
            passphrase = expected_passphrase,
            latest_ledger = root.history_latest_ledger,
            keys = ?keyring,
            "connected to Horizon"
        );
        Ok(Self {
            client,
            network_id: network_id(expected_passphrase),
            keyring,
        })
    }
}

impl RpcLedger {
    /// Connects to the RPC server, checks that it serves `expected_passphrase`
    /// (`getNetwork`), and logs the history it keeps (`getHealth`).
    pub async fn connect(
        rpc_url: &str,
        expected_passphrase: &str,
        keyring: Keyring,
        timeouts: RpcTimeouts,
    ) -> Result<Self, StartupError> {
        let shown = reqwest::Url::parse(rpc_url)
            .map(|u| horizon::redact_url(&u))
            .unwrap_or_else(|_| "(an unparsable URL)".to_owned());
        let startup = |source| StartupError::Rpc {
            url: shown.clone(),
            source,
        };
        let client = RpcClient::new(rpc_url, timeouts).map_err(startup)?;
        let served = client.network_passphrase().await.map_err(startup)?;
        if served != expected_passphrase {
            return Err(StartupError::RpcPassphraseMismatch {
                url: client.display_url().to_owned(),
                configured: expected_passphrase.to_owned(),
                served,
            });
        }
        let health = client.health().await.map_err(startup)?;
        if health.status != "healthy" {
            tracing::warn!(rpc = client.display_url(), status = %health.status, "the Stellar RPC server does not report itself healthy");
        }
        tracing::info!(
            rpc = client.display_url(),
            passphrase = expected_passphrase,
            latest_ledger = health.latest_ledger,
            oldest_ledger = health.oldest_ledger,
            retention_window_ledgers = health.ledger_retention_window,
            keys = ?keyring,
            "connected to Stellar RPC (an envelope whose first possible ledger leaves the retention window can no longer be proven dead from it)"
        );
        Ok(Self {
            client,
            network_id: network_id(expected_passphrase),
            keyring,
        })
    }
}

impl<C> NetworkLedger<C> {
    pub fn client(&self) -> &C {
        &self.client
    }

    pub fn network_id(&self) -> [u8; 32] {
        self.network_id
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

#[async_trait]
impl<C: LedgerClient> Ledger for NetworkLedger<C> {
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError> {
        tx::build_and_sign(spec, &self.network_id, &self.keyring)
    }

    fn can_sign(&self, account: &AccountId) -> bool {
        self.keyring.get(account).is_some()
    }

    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome {
        let outcome = self.client.submit(&envelope.xdr, &envelope.hash).await;
        tracing::debug!(hash = %envelope.hash, ?outcome, server = C::SERVER, "submitted");
        outcome
    }

    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError> {
        self.client.transaction(hash).await
    }

    async fn account_sequence(&self, account: &AccountId) -> Result<SequenceRead, LedgerError> {
        self.client.account_sequence(account).await
    }

    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError> {
        self.client.latest_ledger().await
    }
}
