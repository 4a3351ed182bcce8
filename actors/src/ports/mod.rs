//! The ports the payout core needs from the outside world, as traits: a journal
//! (persistence, [`journal`], with the read-only listing `PayoutReads` beside it) and a
//! ledger (the Stellar network, [`ledger`]). The service
//! crate supplies PostgreSQL and Horizon/RPC; the tests supply in-memory fakes.

pub mod journal;
pub mod ledger;

pub use journal::{
    Accepted, Batch, BatchStore, ChannelInfo, ChannelLease, ClusterStore, ControlStore,
    EnvelopeStatus, Journal, JournalError, ListFilter, Member, PayoutReads, PayoutStore,
    PrepareError, Ready, Settled, Settlement,
};
pub use ledger::{
    Coverage, Envelope, Inclusion, Ledger, LedgerError, LedgerHead, Lookup, OpSpec, SequenceRead,
    SubmitOutcome, TxHash, TxSpec,
};
