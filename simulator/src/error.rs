//! The errors of the simulator's Rust API and admin endpoints.

/// Errors of the simulator's Rust API and admin endpoints.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid account id {0:?} (a G… strkey with a valid checksum is expected)")]
    InvalidAccount(String),
    #[error("invalid asset {0:?} (CODE:ISSUER with a 1–12 character alphanumeric code)")]
    InvalidAsset(String),
    #[error("invalid amount {0} (must be positive stroops)")]
    InvalidAmount(i64),
    #[error("account {0} does not exist")]
    NoAccount(String),
    #[error("account {account} has no trustline to {asset}")]
    NoTrustline { account: String, asset: String },
    #[error("the trustline of {account} to {asset} would exceed its limit or overflow")]
    LineFull { account: String, asset: String },
    #[error("an issuer cannot hold a trustline to its own asset")]
    SelfTrust,
    #[error("unknown transaction result code {0:?} for reject_next")]
    UnknownCode(String),
    #[error("state file: {0}")]
    StateFile(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
