//! A Stellar ledger simulator that answers the Horizon HTTP subset payoutd uses, and Stellar
//! RPC's JSON-RPC methods, over one ledger with real rules.
//!
//! It is the test peer for payoutd's Horizon and RPC clients and the network of the
//! out-of-the-box demo. It checks what the real network checks (signatures against the
//! network passphrase, sequence numbers, time and ledger bounds against its own ledger close
//! time, fees, balances, reserves, trustlines, result codes, the duplicate rule, one
//! transaction per source account per ledger) and can inject faults from a seeded RNG.
//!
//! Run it on its own: `cargo run -p payoutd-simulator -- --listen 127.0.0.1:8000
//! --close-interval-ms 5000 --state-file sim.jsonl --fund G…=100000000000` (`--help` lists the
//! rest; `--close-interval-ms 0` closes ledgers only on `POST /sim/close_ledger`, `--instant`
//! at every accepted submission, `--ops-per-ledger-max` sets the ledger capacity,
//! `--rpc-retention-ledgers` RPC's history window). Faults have no flags: set them with
//! `PUT /sim/faults` (a JSON [`Faults`]; a field left out is off, `p_lookup_lagging` 1.0) and
//! read their counts with `GET /sim/faults`; `GET /sim/status` shows the ledger, its
//! capacity, what is pending, both nodes and the faults. In tests, start it with
//! [`Simulator::new`] and either [`router`] (no port, `tower::ServiceExt::oneshot`) or
//! [`spawn`] (a real loopback port).
//!
//! Choices worth knowing:
//! - Reserves are kept: an account must hold `(2 + trustlines + sponsoring) * 0.5 XLM`
//!   ([`SimConfig::base_reserve_stroops`], 0 turns it off), where sponsoring counts one per
//!   claimant of each open claimable balance it created; fees, native payments, new
//!   accounts' starting balances and claimable balances may not spend it
//!   (`tx_insufficient_balance`, `op_underfunded`, `op_low_reserve`).
//! - Every account's only signer is its master key (weight 1, thresholds 0).
//! - Only V1 envelopes are applied, with four operation kinds: payment, create-account,
//!   create-claimable-balance and claim-claimable-balance. V0 and fee-bump envelopes are
//!   `tx_malformed`, other operations `op_not_supported` (both rejected before inclusion).
//! - Create-account checks as core does: `op_malformed` (negative starting balance, or the
//!   source itself), then `op_already_exists`, `op_low_reserve` (below 2 base reserves),
//!   `op_underfunded`. The new account's sequence number is `ledger << 32`.
//! - Create-claimable-balance takes the amount from the source (native above its reserve,
//!   or a credit asset from its trustline; `op_no_trust`, `op_underfunded`), then locks one
//!   base reserve per claimant on it as the balance's sponsor (`op_low_reserve`). Its id is
//!   core's: the sha256 of the XDR `HashIdPreimage::OpId` of the transaction's source
//!   account, sequence number and the operation's index, shown as Horizon does (the hex of
//!   the `ClaimableBalanceId` XDR, `00000000…`) and returned in the operation result. Only
//!   unconditional claimants are modelled: any other predicate is `op_not_supported`
//!   before inclusion. Claim-claimable-balance credits a claimant (`op_cannot_claim` for
//!   others, `op_no_trust`/`op_line_full` for a credit asset it cannot hold) and returns
//!   the reserves to the sponsor. Open balances are in the state file and in
//!   `GET /sim/claimable_balances[?claimant=G…]` and `GET /sim/claimable_balances/{id}`.
//! - A transaction of many operations (up to 100) needs `operations * base fee`. If any
//!   operation fails, the transaction is in the ledger as `tx_failed`: fee charged, sequence
//!   number used, nothing else changed (no balance moved, account created or claimable
//!   balance created or claimed), no payment recorded, and its result holds one result per
//!   operation in order (those that would have succeeded say `op_success`, as in core).
//! - `GET /sim/payments` lists payments, create-account and create-claimable-balance
//!   operations, each with a `kind` (`payment`, `create_account`,
//!   `create_claimable_balance`); a claimable balance also has its `balance_id` and
//!   `claimants`, and a `destination` filter matches any of its claimants.
//! - A missing signature of an operation source is `tx_bad_auth` (core says `tx_failed` with
//!   `op_bad_auth`); a sequence number above the next one is `tx_bad_seq` at once.
//! - `POST /transactions_async` answers from the current state as core does: an envelope
//!   already in a ledger gets `ERROR` with `tx_bad_seq`, a pending one `DUPLICATE`.
//! - [`Faults::p_try_again_later`] makes core refuse a valid submission with
//!   TRY_AGAIN_LATER (its queue is full) without accepting it, on every submission path;
//!   checks core makes first (invalid, already pending, one per source) still answer as
//!   such. It draws from a third seeded stream, one draw per decodable submission, so it
//!   never shifts which submissions the other faults hit.
//! - Horizon is two nodes over one ledger, as behind a load balancer. Every Horizon answer
//!   (errors too) carries `Latest-Ledger: N`, the last ledger the answering node ingested.
//!   The head node has the latest closed ledger; `GET /` and `GET /accounts/{id}` always come
//!   from it. With [`Faults::lookup_lag_ledgers`] = K > 0, a lookup by hash, a history
//!   listing page or a submission is served by a lagging node with probability
//!   [`Faults::p_lookup_lagging`] (default 1.0), which holds ledgers up to
//!   `max(1, head - K)`: a transaction in a later ledger is a 404 there (and missing from
//!   its listings), and a re-post of it goes to core as if new, which answers as core does
//!   for a used sequence number (`tx_bad_seq`; an earlier check such as expired time bounds
//!   wins, as in core). A fresh sync submission it serves is answered once it has ingested
//!   the transaction's ledger (else the usual 504 after the submit wait).
//! - Which node serves is drawn from a second RNG seeded from [`SimConfig::seed`], one draw
//!   per lookup by hash of a well-formed hash, per listing page and per decodable submission
//!   whatever the faults; the submission faults keep their own stream of three draws per
//!   submission, so how often a client polls never changes which submissions fail.
//! - [`Faults::history_retention_ledgers`] = N > 0 makes each node keep its last N ledgers:
//!   `history_elder_ledger` (in `GET /`) is `max(1, latest - N + 1)`, and lookups and
//!   re-posts treat older transactions like ones not ingested. History is only hidden: the
//!   state file, [`Simulator::transaction`] and `/sim/payments` keep all of it.
//! - History listings, for reconciliation: `GET /accounts/{id}/transactions`, `/operations`
//!   and `/payments` (Horizon's HAL pages: `cursor`, `order=asc|desc`, `limit` 1..=200
//!   default 10, `include_failed`; `paging_token` is the TOID, with the operation number for
//!   operations). An account takes part in a transaction as its source, an operation's
//!   source, or an account an operation names (payment destination, new account, claimant);
//!   in an operation as its source or an account it names. `/payments` lists payment and
//!   create-account operations; claimable balance operations are under `/operations`. A page
//!   holds only what its node holds: ascending with a cursor before the elder ledger it
//!   starts at the oldest record held (compare with `history_elder_ledger` to see the gap);
//!   descending with a cursor at or before the elder ledger it is 410 `before_history`.
//! - `GET /ledgers/{sequence}`: a closed ledger's `closed_at` (and a few other fields of
//!   Horizon's ledger resource), from the head node: 410 `before_history` before its elder
//!   ledger, 404 if it has not closed.
//! - A ledger holds at most [`SimConfig::ops_per_ledger_max`] operations (default 1000,
//!   `--ops-per-ledger-max`). At each close the pending transactions are taken by fee bid
//!   per operation, highest first (compared by cross-multiplication, no rounding), equal
//!   rates in arrival order, and applied in that order; one that does not fit waits for a
//!   later ledger, keeping its source's slot (others from that source get TRY_AGAIN_LATER)
//!   and its waiting submissions (a sync one answers 504 after the submit wait). A waiting
//!   one that is too late for the ledger being closed (max time before its close time, or
//!   max ledger reached) is dropped with `tx_too_late`, as core drops expired transactions.
//! - Surge pricing: when some transaction had to wait, every included one is charged the
//!   lowest included bid per operation (rounded down) times its operation count, as core
//!   does; otherwise the base fee times its operation count. A surge fee above the source's
//!   balance takes the balance (core's rule; the checks only cover the base fee).
//! - A transaction with more operations than a ledger holds could never be included: it is
//!   refused at submission with `tx_malformed`, a permanent rejection (nothing consumed)
//!   rather than a TRY_AGAIN_LATER that would invite retries for ever.
//!
//! Stellar RPC (`POST /rpc`, and `POST /` since Horizon's root is GET only), JSON-RPC 2.0
//! with named parameters, on the same ledger, nodes and faults:
//! - Methods: `getHealth` (`status`, `latestLedger`, `oldestLedger`,
//!   `ledgerRetentionWindow`), `getNetwork` (`passphrase`, `protocolVersion`, and
//!   `friendbotUrl`, this simulator's `/friendbot` at the request's `Host`),
//!   `getLatestLedger` (`id`, `sequence`, `protocolVersion`, and `closeTime` as newer RPC
//!   versions send it, a string of unix seconds; `id` is a stand-in hash of the network,
//!   sequence and close time, as there are no real ledger headers), `getLedgerEntries`
//!   (account, trustline and claimable balance keys as `LedgerEntryData` XDR with
//!   `lastModifiedLedgerSeq`; missing entries and other kinds are absent; at most 200
//!   keys), `sendTransaction` (core's answer from the current state, as
//!   `POST /transactions_async`: `PENDING`, `DUPLICATE` for a pending one, `TRY_AGAIN_LATER`,
//!   `ERROR` with `errorResultXdr`, e.g. `tx_bad_seq` for one already in a ledger),
//!   `getTransaction` (`SUCCESS`/`FAILED` with `ledger`, `createdAt`, `applicationOrder`,
//!   `envelopeXdr`, `resultXdr`, `feeBump` false, and a minimal valid `resultMetaXdr`: a V3
//!   `TransactionMeta` with one empty operation meta per operation, no entry changes;
//!   `NOT_FOUND` otherwise) and `getTransactions` (from `startLedger` or
//!   `pagination.cursor`, `limit` default 50, at most 200, in ledger and application order;
//!   the cursor is RPC's TOID with operation number 1).
//! - Errors as RPC gives them: -32700 for a body that is not JSON, -32600 for a request
//!   that is not a JSON-RPC 2.0 object (batches too), and for `getTransactions` outside the
//!   ledger range or with both `startLedger` and a cursor, -32601 for an unknown method,
//!   -32602 for bad parameters (positional ones too, an undecodable envelope is
//!   `invalid_xdr`), all as HTTP 200.
//! - Retention: [`SimConfig::rpc_retention_ledgers`] (default 120960, RPC's stock window)
//!   ledgers, or [`Faults::history_retention_ledgers`] if smaller: `oldestLedger` is
//!   `max(genesis, latest - window + 1, elder)`; a transaction before it is `NOT_FOUND` (it
//!   stays in Horizon's history unless the pruning fault hides it there too), a
//!   `startLedger` before it is -32600, a cursor before it -32602. Close times of every
//!   ledger are kept (and in the state file) for `oldestLedgerCloseTime`.
//! - Faults: `latency_ms` on every answer; `p_5xx_before_apply` turns a `sendTransaction`
//!   into HTTP 503/500 with a plain-text body and no JSON-RPC answer (what the proxy in
//!   front of a provider's RPC answers), nothing accepted; `p_lose_answer_after_apply` into
//!   HTTP 504 after accepting it; `reject_next` and `p_try_again_later` come back as `ERROR`
//!   and `TRY_AGAIN_LATER`. Every method that reads the ledger is served by a drawn node (one
//!   draw per request): the lagging node reports its own `latestLedger`, does not find
//!   transactions of later ledgers, and shows accounts (and their trustlines) as they were
//!   at the end of its latest ledger, from a per-account history of versions kept while a
//!   lag is set (at most 64 per account; a lag set at runtime only sees changes made after
//!   it was set). Claimable balances are always read as they are now. RPC has no
//!   `Latest-Ledger` header: the `latestLedger` fields are what counts.
//! - Fee-bump envelopes are refused at submission (`tx_malformed`), so `feeBump` is always
//!   false.
//!
//! Layout:
//! - [`config`]: [`SimConfig`], [`CloseMode`], [`Faults`] and the fault counters.
//! - `error`: [`SimError`], the errors of the Rust API and the admin endpoints.
//! - `keys`: strkey account keys, asset identities and claimable balance ids.
//! - `codes`: result code names and `TransactionResult` XDR.
//! - `format`: 7-decimal amounts and RFC 3339 timestamps (integers only, no floats).
//! - [`state`]: accounts, trustlines, claimable balances, applied transactions; what the
//!   state file holds.
//! - `persist`: the state file (a snapshot plus one appended delta per change).
//! - `validate`: envelope decoding, signature checks and the validity rules.
//! - `apply`: applying the operations at ledger close.
//! - [`sim`]: [`Simulator`], the shared state behind a mutex, ledger closing, faults.
//! - `history`: operations and participants of applied transactions, TOIDs.
//! - `versions`: past account entries for the lagging node's reads.
//! - `entries`: ledger entries as XDR for RPC.
//! - `hal`: Horizon's response shapes (HAL and problem documents, `Latest-Ledger`, the
//!   transaction resource) that every Horizon route shares.
//! - `horizon` / `listings` / `ledgers` / `rpc` / `admin`: the HTTP routes (Horizon subset with its
//!   `Latest-Ledger` header, account history listings, Stellar RPC, `/sim/*` admin
//!   including `GET /sim/status`, friendbot).
//! - [`server`]: [`router`], [`serve`], [`spawn`] and the interval closer.
//! - [`standalone`]: the command line of the `payoutd-simulator` binary.
#![forbid(unsafe_code)]

mod admin;
mod apply;
mod codes;
pub mod config;
mod entries;
mod error;
mod format;
mod hal;
mod history;
mod horizon;
mod keys;
mod ledgers;
mod listings;
mod persist;
mod rpc;
pub mod server;
pub mod sim;
pub mod standalone;
pub mod state;
mod validate;
mod versions;

pub use config::{CloseMode, FaultCounts, Faults, RejectNext, SimConfig};
pub use format::{format_stroops, rfc3339};
pub use server::{SimHandle, router, serve, spawn, spawn_closer};
pub use sim::{GENESIS_LEDGER, Node, NodeView, PaymentFilter, SimError, Simulator};
pub use standalone::{StandaloneArgs, run_standalone};
pub use state::{AppliedPayment, ClaimableBalance, LedgerHeader, PaymentKind, TxRecord};

/// The passphrase of Stellar's test network.
pub const TESTNET_PASSPHRASE: &str = "Test SDF Network ; September 2015";
/// The passphrase of Stellar's public network.
pub const PUBLIC_PASSPHRASE: &str = "Public Global Stellar Network ; September 2015";
/// One lumen in stroops.
pub const STROOPS_PER_XLM: i64 = 10_000_000;
