//! The simulator: ledger state behind one mutex, the pending set, ledger closing and faults.
//!
//! Submissions are decoded and their signatures verified outside the lock; everything that
//! reads or changes the ledger happens under it. A closed ledger is written to the state file
//! before any waiting submission is answered, so an answer never gets ahead of durable state.
//!
//! Horizon (and Stellar RPC) is modelled as two nodes over one ledger: the head node, up to
//! date, and a lagging node ([`Faults::lookup_lag_ledgers`] behind). Both show only the ledgers they hold
//! ([`NodeView`]); nothing is copied, a node's view is a window onto the one ledger history.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use stellar_xdr::{Memo, MuxedAccount, Preconditions, Transaction, TransactionResultResult};
use tokio::sync::{oneshot, watch};

use crate::apply::{self, Applied, Books};
use crate::codes;
use crate::config::{CloseMode, FaultCounts, Faults, SimConfig};
use crate::entries;
pub use crate::error::SimError;
use crate::format::now_unix_s;
use crate::history::{self, OpInfo};
use crate::keys::{AccountKey, AssetId};
use crate::persist::{self, Journal};
pub use crate::state::GENESIS_LEDGER;
use crate::state::{
    self as st, Account, AppliedPayment, ClaimableBalance, Delta, LedgerHeader, LedgerState,
    PaymentKind, Snapshot, Trustline, TxRecord,
};
use crate::validate::{self, Auth, Body, Ctx, Invalid};
use crate::versions::AccountVersions;

/// Which payments [`Simulator::payments`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFilter {
    /// `id:123` | `text:abc` | `hash:<hex>` | `return:<hex>`.
    pub memo: Option<String>,
    /// A `G…` matches payments to that account, muxed or not; an `M…` matches exactly. A
    /// claimable balance matches any of its claimants.
    pub destination: Option<String>,
}

/// How a submission ended up.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// In a closed ledger (successful or not).
    Included(Arc<TxRecord>),
    /// Left the pending set without being included (failed a check at apply time).
    Dropped(Arc<Rejection>),
}

/// A transaction rejected before inclusion: nothing was consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub hash: String,
    pub envelope_xdr: String,
    /// e.g. `tx_bad_seq`.
    pub code: String,
    /// Operation codes, when `code` is `tx_failed` (an operation was invalid on its own).
    pub op_codes: Vec<String>,
    /// Base64 `TransactionResult`.
    pub result_xdr: String,
}

/// Which submission endpoint is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitKind {
    /// `POST /transactions`: an envelope already in a ledger gets its original result.
    Sync,
    /// `POST /transactions_async`: answered as core answers, from the current state.
    Async,
}

/// Which Horizon node answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// Has ingested the latest closed ledger.
    Head,
    /// [`Faults::lookup_lag_ledgers`] behind the head (never before the genesis ledger).
    Lagging,
}

/// The ledgers a Horizon node holds: `elder..=latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// The last ledger the node has ingested: its `Latest-Ledger` header.
    pub latest: u32,
    /// The oldest ledger it still holds: `history_elder_ledger`.
    pub elder: u32,
}

impl NodeView {
    pub fn holds(&self, ledger: u32) -> bool {
        self.elder <= ledger && ledger <= self.latest
    }
}

/// What `node` holds while the head is at ledger `head` under `faults`.
fn node_view(head: u32, faults: &Faults, node: Node) -> NodeView {
    let latest = match node {
        Node::Head => head,
        Node::Lagging => head
            .saturating_sub(faults.lookup_lag_ledgers)
            .max(GENESIS_LEDGER),
    };
    let elder = match faults.history_retention_ledgers {
        0 => GENESIS_LEDGER,
        // The last n ledgers are latest - n + 1 ..= latest; n >= 1 in this arm.
        n => latest.saturating_sub(n - 1).max(GENESIS_LEDGER),
    };
    NodeView { latest, elder }
}

/// What a node answers to a lookup by hash.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub node: Node,
    /// The last ledger the answering node has ingested.
    pub latest_ledger: u32,
    /// The transaction, if it is in a ledger that node holds.
    pub record: Option<Arc<TxRecord>>,
}

/// Which history listing of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// `/accounts/{id}/transactions`: transactions it takes part in.
    Transactions,
    /// `/accounts/{id}/operations`: operations it takes part in.
    Operations,
    /// `/accounts/{id}/payments`: its operations that are payments or create-account.
    Payments,
}

/// Where a page starts (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// From the oldest record (ascending) or the newest (descending).
    Start,
    /// Horizon's `now`: after the newest record (ascending pages are empty).
    Now,
    /// A paging token (TOID).
    At(u64),
}

/// A page request, as Horizon's query parameters give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageQuery {
    pub cursor: Cursor,
    pub descending: bool,
    /// Records per page (the HTTP layer keeps it in 1..=200).
    pub limit: usize,
    /// Horizon's `include_failed`: also records of failed transactions.
    pub include_failed: bool,
}

/// One record of a page: a transaction, or one of its operations.
#[derive(Clone, Debug)]
pub struct PageRecord {
    /// The paging token: the transaction's TOID, or the operation's.
    pub toid: u64,
    pub tx: Arc<TxRecord>,
    pub op: Option<OpInfo>,
}

/// A page of an account's history, and the node that served it.
#[derive(Clone, Debug)]
pub struct Page {
    pub node: Node,
    pub view: NodeView,
    pub records: Vec<PageRecord>,
}

/// A page the node cannot serve: a descending cursor at or before its elder ledger asks
/// for history it no longer holds (Horizon's 410 `before_history`).
#[derive(Clone, Copy, Debug)]
pub struct BeforeHistory {
    pub node: Node,
    pub view: NodeView,
}

/// The ledgers a Stellar RPC node answers from, and the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcRange {
    pub node: Node,
    /// Its `latestLedger`: what the node has ingested.
    pub latest: u32,
    /// Unix seconds.
    pub latest_close_time: u64,
    /// Its `oldestLedger`: the later of its retention window's start and its elder ledger.
    pub oldest: u32,
    /// Unix seconds.
    pub oldest_close_time: u64,
    /// Its `ledgerRetentionWindow`: the configured window, or the pruning fault's if smaller.
    pub window: u32,
}

impl RpcRange {
    pub fn holds(&self, ledger: u32) -> bool {
        self.oldest <= ledger && ledger <= self.latest
    }
}

/// Where an RPC `getTransactions` page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcStart {
    /// `startLedger`: its first transaction on.
    Ledger(u32),
    /// `pagination.cursor`: the transaction after this TOID on.
    Cursor(u64),
}

/// Why RPC refuses a `getTransactions` page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcPageError {
    /// `startLedger` outside `oldestLedger..=latestLedger` (RPC's invalid-request error).
    OutOfRange { start: u32, range: RpcRange },
    /// A cursor in a ledger the node no longer holds (RPC's invalid-params error).
    Pruned { ledger: u32 },
}

/// A ledger entry as RPC returns it: its data and last-modified ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcEntry {
    pub data: stellar_xdr::LedgerEntryData,
    pub last_modified_ledger: u32,
}

/// A submission's answer and the node that gives it.
#[derive(Debug)]
pub struct Submitted {
    pub node: Node,
    pub submission: Submission,
}

/// The answer to a submission, before the HTTP layer renders it.
#[derive(Debug)]
pub enum Submission {
    /// Not a decodable envelope.
    Malformed(String),
    /// An injected 500 or 503; the transaction was not accepted.
    ServerError(u16),
    Rejected(Arc<Rejection>),
    /// The source account already has a different transaction in the open ledger.
    TryAgainLater {
        hash: String,
    },
    /// Accepted now (`fresh`) or earlier (pending or already in a ledger).
    Accepted {
        hash: String,
        envelope_xdr: String,
        fresh: bool,
        waiter: Waiter,
        lose_answer: bool,
    },
}

/// Where the outcome of an accepted submission comes from.
#[derive(Debug)]
pub enum Waiter {
    Ready(Outcome),
    Wait(oneshot::Receiver<Outcome>),
}

/// The Stellar ledger simulator. Share it as `Arc<Simulator>`; all rules live here.
pub struct Simulator {
    network_passphrase: String,
    network_id: [u8; 32],
    close_mode: CloseMode,
    submit_wait: Duration,
    close_time_step_s: u64,
    base_reserve: i64,
    ops_per_ledger_max: u32,
    rpc_retention_ledgers: u32,
    /// The last ledger the lagging node has ingested, for sync submissions it serves, which
    /// wait until it has ingested their ledger. Updated under the state lock; read without it.
    lagging_latest: watch::Sender<u32>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("network_passphrase", &self.network_passphrase)
            .field("close_mode", &self.close_mode)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: LedgerState,
    /// The open ledger's transactions by hash, and their arrival order.
    pending: HashMap<[u8; 32], Pending>,
    order: Vec<[u8; 32]>,
    /// One transaction per source account per ledger.
    pending_by_source: HashMap<AccountKey, [u8; 32]>,
    faults: Faults,
    counts: FaultCounts,
    /// Submission faults: three draws per decodable submission.
    rng: StdRng,
    /// Which node serves a request: one draw per lookup by hash and per decodable
    /// submission. A stream of its own, so lookups (whose number depends on how often a
    /// client polls) never shift the submission faults a seed replays.
    node_rng: StdRng,
    /// The `p_try_again_later` fault: one draw per decodable submission, a stream of its own
    /// so the faults of the other streams replay as they did before it existed.
    busy_rng: StdRng,
    /// Past account entries, for the lagging node's ledger-entry reads.
    versions: AccountVersions,
    journal: Option<Journal>,
}

impl Inner {
    /// Draws which node serves this request; one draw whatever the faults, so a seed replays.
    fn pick_node(&mut self) -> Node {
        let roll: f64 = self.node_rng.random();
        if self.faults.lookup_lag_ledgers > 0 && roll < self.faults.p_lookup_lagging {
            self.counts.answers_from_lagging_node += 1;
            Node::Lagging
        } else {
            Node::Head
        }
    }

    fn view(&self, node: Node) -> NodeView {
        node_view(self.state.header.sequence, &self.faults, node)
    }

    /// What `node` answers RPC requests from, with a retention window of `retention`
    /// ledgers.
    fn rpc_range(&self, node: Node, retention: u32) -> RpcRange {
        let view = self.view(node);
        // The last `retention` ledgers are latest - retention + 1 ..= latest; retention >= 1.
        let window_start = view
            .latest
            .saturating_sub(retention.saturating_sub(1))
            .max(GENESIS_LEDGER);
        let oldest = window_start.max(view.elder);
        let close_time = |l: u32| {
            self.state
                .close_time_of(l)
                .unwrap_or(self.state.header.close_time)
        };
        let window = match self.faults.history_retention_ledgers {
            0 => retention,
            n => retention.min(n),
        };
        RpcRange {
            node,
            latest: view.latest,
            latest_close_time: close_time(view.latest),
            oldest,
            oldest_close_time: close_time(oldest),
            window,
        }
    }

    /// Counts a transaction of ledger `ledger` that a node with `view` does not show.
    fn count_hidden(&mut self, ledger: u32, view: NodeView) {
        if ledger > view.latest {
            self.counts.transactions_hidden_by_lag += 1;
        } else if ledger < view.elder {
            self.counts.transactions_hidden_by_pruning += 1;
        }
    }
}

/// Salt between the seed and the node RNG's seed, so the two streams differ.
const NODE_RNG_SALT: u64 = 0x6c61_6767_696e_6721;
/// Salt between the seed and the `p_try_again_later` RNG's seed.
const BUSY_RNG_SALT: u64 = 0x7472_7961_6761_696e;

struct Pending {
    hash: [u8; 32],
    tx: Box<Transaction>,
    auth: Auth,
    envelope_xdr: String,
    signatures: Vec<String>,
    source: AccountKey,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

type Notifications = Vec<(Vec<oneshot::Sender<Outcome>>, Outcome)>;

/// The submission faults drawn for one submission.
#[derive(Clone, Copy, Debug)]
struct Rolls {
    fail_5xx: bool,
    lose_answer: bool,
    pick_503: bool,
    /// Core answers TRY_AGAIN_LATER (`p_try_again_later`).
    busy: bool,
}

/// A transaction's operation count (at least 1, as fees count it).
fn op_count(tx: &Transaction) -> u64 {
    u64::try_from(tx.operations.len().max(1)).unwrap_or(u64::MAX)
}

impl Simulator {
    /// Starts a simulator: from the state file if `cfg.state_file` names an existing one,
    /// else from a genesis ledger 1 with no accounts.
    pub fn new(cfg: SimConfig) -> Result<Arc<Self>, SimError> {
        if cfg.ops_per_ledger_max == 0 {
            return Err(SimError::InvalidConfig(
                "ops_per_ledger_max must be at least 1".to_owned(),
            ));
        }
        if cfg.rpc_retention_ledgers == 0 {
            return Err(SimError::InvalidConfig(
                "rpc_retention_ledgers must be at least 1".to_owned(),
            ));
        }
        let network_id: [u8; 32] = Sha256::digest(cfg.network_passphrase.as_bytes()).into();
        let genesis = LedgerHeader {
            sequence: GENESIS_LEDGER,
            close_time: cfg.genesis_close_time.unwrap_or_else(now_unix_s),
        };
        let loaded = match &cfg.state_file {
            Some(path) => persist::load(path)?,
            None => None,
        };
        let mut snapshot = match loaded {
            Some(s) if s.network_passphrase != cfg.network_passphrase => {
                return Err(SimError::StateFile(format!(
                    "it holds a ledger of network {:?}, not {:?}",
                    s.network_passphrase, cfg.network_passphrase
                )));
            }
            Some(s) => s,
            None => Snapshot {
                network_passphrase: cfg.network_passphrase.clone(),
                header: genesis,
                base_fee_stroops: cfg.base_fee_stroops,
                accounts: Default::default(),
                transactions: Vec::new(),
                payments: Vec::new(),
                claimable_balances: Default::default(),
                ledger_close_times: vec![genesis.close_time],
            },
        };
        // The configured base fee wins over the one saved, like any other start option.
        snapshot.base_fee_stroops = cfg.base_fee_stroops;
        let journal = match &cfg.state_file {
            Some(path) => Some(persist::create(path, &snapshot)?),
            None => None,
        };
        let state = LedgerState::from_snapshot(snapshot).map_err(SimError::StateFile)?;
        let lagging_latest =
            watch::Sender::new(node_view(state.header.sequence, &cfg.faults, Node::Lagging).latest);
        Ok(Arc::new(Self {
            network_passphrase: cfg.network_passphrase,
            network_id,
            close_mode: cfg.close_mode,
            submit_wait: Duration::from_millis(cfg.submit_wait_ms),
            close_time_step_s: cfg.close_time_step_s,
            base_reserve: cfg.base_reserve_stroops,
            ops_per_ledger_max: cfg.ops_per_ledger_max,
            rpc_retention_ledgers: cfg.rpc_retention_ledgers,
            lagging_latest,
            inner: Mutex::new(Inner {
                state,
                pending: HashMap::new(),
                order: Vec::new(),
                pending_by_source: HashMap::new(),
                faults: cfg.faults,
                counts: FaultCounts::default(),
                rng: StdRng::seed_from_u64(cfg.seed),
                node_rng: StdRng::seed_from_u64(cfg.seed ^ NODE_RNG_SALT),
                busy_rng: StdRng::seed_from_u64(cfg.seed ^ BUSY_RNG_SALT),
                versions: AccountVersions::default(),
                journal,
            }),
        }))
    }

    /// The state lock. A panic while holding it can only come from a bug in this crate;
    /// the state it leaves is still served rather than failing every later call.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn network_passphrase(&self) -> &str {
        &self.network_passphrase
    }

    pub fn network_id(&self) -> [u8; 32] {
        self.network_id
    }

    pub fn close_mode(&self) -> CloseMode {
        self.close_mode
    }

    /// How long `POST /transactions` waits for inclusion.
    pub fn submit_wait(&self) -> Duration {
        self.submit_wait
    }

    /// Ledger capacity in operations.
    pub fn ops_per_ledger_max(&self) -> u32 {
        self.ops_per_ledger_max
    }

    /// Ledgers of history the RPC interface keeps.
    pub fn rpc_retention_ledgers(&self) -> u32 {
        self.rpc_retention_ledgers
    }

    /// What `node` holds now.
    pub fn node_view(&self, node: Node) -> NodeView {
        self.lock().view(node)
    }

    /// Waits until the lagging node has ingested `ledger`, at most until `deadline`;
    /// whether it did.
    pub async fn wait_lagging_ingested(&self, ledger: u32, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.lagging_latest.subscribe();
        // The sender lives in `self`, so `wait_for` can only end by the predicate holding.
        matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(|latest| *latest >= ledger)).await,
            Ok(Ok(_))
        )
    }

    /// Publishes what the lagging node has ingested; call under the state lock after the
    /// head or the faults changed.
    fn publish_lagging(&self, inner: &Inner) {
        self.lagging_latest
            .send_replace(inner.view(Node::Lagging).latest);
    }

    /// Closes a ledger now: includes pending transactions by fee per operation, up to the
    /// ledger's capacity (see [`SimConfig::ops_per_ledger_max`]).
    pub fn close_ledger(&self) -> LedgerHeader {
        let (header, notes) = {
            let mut inner = self.lock();
            self.close_locked(&mut inner)
        };
        notify(notes);
        header
    }

    pub fn latest_ledger(&self) -> LedgerHeader {
        self.lock().state.header
    }

    /// The header of closed ledger `sequence` (its close time), if it has closed.
    pub fn ledger_header(&self, sequence: u32) -> Option<LedgerHeader> {
        let inner = self.lock();
        if sequence > inner.state.header.sequence {
            return None;
        }
        inner
            .state
            .close_time_of(sequence)
            .map(|close_time| LedgerHeader {
                sequence,
                close_time,
            })
    }

    /// Creates an account with `xlm_stroops` (sequence number = latest ledger << 32) or adds
    /// `xlm_stroops` to an existing one.
    pub fn create_account(&self, account: &str, xlm_stroops: i64) -> Result<(), SimError> {
        let key = AccountKey::parse(account)?;
        if xlm_stroops < 0 {
            return Err(SimError::InvalidAmount(xlm_stroops));
        }
        let mut inner = self.lock();
        let old = inner.state.accounts.get(&key).cloned();
        let header = inner.state.header;
        match inner.state.accounts.get_mut(&key) {
            Some(a) => {
                a.balance = a
                    .balance
                    .checked_add(xlm_stroops)
                    .ok_or(SimError::InvalidAmount(xlm_stroops))?;
                a.last_modified_ledger = header.sequence;
            }
            None => {
                let seq = i64::from(header.sequence) << 32;
                inner.state.accounts.insert(
                    key,
                    Account {
                        balance: xlm_stroops,
                        seq,
                        seq_ledger: header.sequence,
                        seq_time: header.close_time,
                        last_modified_ledger: header.sequence,
                        trustlines: Default::default(),
                        num_sponsoring: 0,
                    },
                );
            }
        }
        accounts_changed(&mut inner, vec![(key, old)])
    }

    /// Sets an account's sequence number (a test and demo helper, like a bump-sequence).
    pub fn set_account_sequence(&self, account: &str, seq: i64) -> Result<(), SimError> {
        self.edit_account(account, |a, _| {
            a.seq = seq;
            Ok(())
        })
    }

    /// Changes one existing account as an operator would (outside any transaction): `edit`
    /// gets the account and the latest ledger's sequence; the change is kept (and written
    /// to the state file) only when it returns `Ok`.
    fn edit_account(
        &self,
        account: &str,
        edit: impl FnOnce(&mut Account, u32) -> Result<(), SimError>,
    ) -> Result<(), SimError> {
        let key = AccountKey::parse(account)?;
        let mut inner = self.lock();
        let ledger = inner.state.header.sequence;
        let old = inner
            .state
            .accounts
            .get(&key)
            .cloned()
            .ok_or_else(|| SimError::NoAccount(account.to_owned()))?;
        let mut edited = old.clone();
        edit(&mut edited, ledger)?;
        inner.state.accounts.insert(key, edited);
        accounts_changed(&mut inner, vec![(key, Some(old))])
    }

    /// Adds a trustline (or changes its limit, which may not go below its balance).
    pub fn add_trustline(
        &self,
        account: &str,
        asset_code: &str,
        issuer: &str,
        limit_stroops: i64,
    ) -> Result<(), SimError> {
        let key = AccountKey::parse(account)?;
        let asset = AssetId::credit(asset_code, issuer)?;
        if matches!(&asset, AssetId::Credit { issuer, .. } if *issuer == key) {
            return Err(SimError::SelfTrust);
        }
        if limit_stroops <= 0 {
            return Err(SimError::InvalidAmount(limit_stroops));
        }
        self.edit_account(account, |a, ledger| {
            let line = a.trustlines.entry(asset.key()).or_insert(Trustline {
                balance: 0,
                limit: 0,
                last_modified_ledger: ledger,
            });
            if line.balance > limit_stroops {
                return Err(SimError::LineFull {
                    account: account.to_owned(),
                    asset: asset.key(),
                });
            }
            line.limit = limit_stroops;
            line.last_modified_ledger = ledger;
            a.last_modified_ledger = ledger;
            Ok(())
        })
    }

    /// The issuer mints `amount_stroops` of `asset_code` to `account`'s trustline.
    pub fn credit(
        &self,
        account: &str,
        asset_code: &str,
        issuer: &str,
        amount_stroops: i64,
    ) -> Result<(), SimError> {
        // The account first: its error comes before the asset's.
        AccountKey::parse(account)?;
        let asset = AssetId::credit(asset_code, issuer)?;
        if amount_stroops <= 0 {
            return Err(SimError::InvalidAmount(amount_stroops));
        }
        self.edit_account(account, |a, ledger| {
            let line = a
                .trustlines
                .get_mut(&asset.key())
                .ok_or_else(|| SimError::NoTrustline {
                    account: account.to_owned(),
                    asset: asset.key(),
                })?;
            line.balance = line
                .balance
                .checked_add(amount_stroops)
                .filter(|b| *b <= line.limit)
                .ok_or_else(|| SimError::LineFull {
                    account: account.to_owned(),
                    asset: asset.key(),
                })?;
            line.last_modified_ledger = ledger;
            a.last_modified_ledger = ledger;
            Ok(())
        })
    }

    /// XLM balance (`asset` = `None`) or a trustline balance (`Some((code, issuer))`).
    pub fn balance(&self, account: &str, asset: Option<(&str, &str)>) -> Option<i64> {
        let key = AccountKey::parse(account).ok()?;
        let inner = self.lock();
        let a = inner.state.accounts.get(&key)?;
        match asset {
            None => Some(a.balance),
            Some((code, issuer)) => {
                let asset = AssetId::credit(code, issuer).ok()?;
                a.trustlines.get(&asset.key()).map(|l| l.balance)
            }
        }
    }

    pub fn account_sequence(&self, account: &str) -> Option<i64> {
        let key = AccountKey::parse(account).ok()?;
        self.lock().state.accounts.get(&key).map(|a| a.seq)
    }

    /// A copy of an account entry.
    pub fn account(&self, account: &str) -> Option<Account> {
        let key = AccountKey::parse(account).ok()?;
        self.lock().state.accounts.get(&key).cloned()
    }

    /// Replaces the faults. An unknown `reject_next` code is answered as `tx_internal_error`
    /// in the result XDR; use [`Simulator::try_set_faults`] to refuse it instead.
    pub fn set_faults(&self, f: Faults) {
        let mut inner = self.lock();
        inner.faults = f;
        if inner.faults.lookup_lag_ledgers == 0 {
            // Without a lag every read is the head's: no version is needed any more.
            inner.versions.clear();
        }
        self.publish_lagging(&inner);
    }

    /// Replaces the faults after checking that a `reject_next` code is a known result code.
    pub fn try_set_faults(&self, f: Faults) -> Result<(), SimError> {
        if let Some(rn) = f
            .reject_next
            .as_ref()
            .filter(|rn| codes::tx_code_from_name(&rn.code).is_none())
        {
            return Err(SimError::UnknownCode(rn.code.clone()));
        }
        self.set_faults(f);
        Ok(())
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Changes the minimum fee per operation.
    pub fn set_base_fee(&self, stroops: i64) {
        let mut inner = self.lock();
        inner.state.base_fee = stroops;
        let delta = Delta {
            base_fee_stroops: Some(stroops),
            ..Delta::default()
        };
        if let Err(e) = append(&mut inner, delta) {
            tracing::error!(error = %e, "could not write the base fee to the state file");
        }
    }

    pub fn base_fee(&self) -> i64 {
        self.lock().state.base_fee
    }

    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Successful payment operations, in application order.
    pub fn payments(&self, filter: &PaymentFilter) -> Vec<AppliedPayment> {
        let inner = self.lock();
        let st = &inner.state;
        let dest_matches = |p: &AppliedPayment| match &filter.destination {
            None => true,
            Some(d) if *d == p.destination => true,
            Some(d) if p.kind == PaymentKind::CreateClaimableBalance => p.claimants.contains(d),
            Some(d) if d.starts_with('G') && p.destination.starts_with('M') => {
                MuxedAccount::from_str(&p.destination)
                    .is_ok_and(|m| AccountKey::from_muxed(&m).to_string() == *d)
            }
            Some(_) => false,
        };
        match &filter.memo {
            Some(m) => st
                .memo_index
                .get(m)
                .into_iter()
                .flatten()
                .filter_map(|i| st.payments.get(*i))
                .filter(|p| dest_matches(p))
                .cloned()
                .collect(),
            None => st
                .payments
                .iter()
                .filter(|p| dest_matches(p))
                .cloned()
                .collect(),
        }
    }

    /// The open claimable balances, by id; with `claimant`, those it may claim.
    pub fn claimable_balances(
        &self,
        claimant: Option<&str>,
    ) -> Result<Vec<ClaimableBalance>, SimError> {
        let claimant = claimant.map(AccountKey::parse).transpose()?;
        let inner = self.lock();
        Ok(inner
            .state
            .claimable_balances
            .values()
            .filter(|cb| claimant.is_none_or(|k| cb.claimants.contains(&k)))
            .cloned()
            .collect())
    }

    /// An open claimable balance by id (Horizon's hex form, any case).
    pub fn claimable_balance(&self, id: &str) -> Option<ClaimableBalance> {
        let inner = self.lock();
        inner
            .state
            .claimable_balances
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// How many transactions (successful or failed) are in closed ledgers.
    pub fn transactions_count(&self) -> usize {
        self.lock().state.tx_order.len()
    }

    /// How many transactions wait in the open ledger.
    pub fn pending_count(&self) -> usize {
        self.lock().order.len()
    }

    /// How many operations the pending transactions have together.
    pub fn pending_operations(&self) -> u64 {
        let inner = self.lock();
        inner.pending.values().map(|p| op_count(&p.tx)).sum()
    }

    /// A transaction in a closed ledger, by lowercase or uppercase hex hash, whatever the
    /// faults (the ground truth; Horizon lookups go through [`Simulator::lookup_transaction`]).
    pub fn transaction(&self, hash_hex: &str) -> Option<Arc<TxRecord>> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hash_hex, &mut hash).ok()?;
        self.lock().state.txs.get(&hash).cloned()
    }

    /// `GET /transactions/{hash}`: draws the node that serves it, and answers what that
    /// node holds (nothing for a transaction after its latest or before its elder ledger).
    pub fn lookup_transaction(&self, hash_hex: &str) -> Lookup {
        let mut inner = self.lock();
        let node = inner.pick_node();
        let view = inner.view(node);
        let mut hash = [0u8; 32];
        let found = match hex::decode_to_slice(hash_hex, &mut hash) {
            Ok(()) => inner.state.txs.get(&hash).cloned(),
            Err(_) => None,
        };
        let record = match found {
            Some(rec) if view.holds(rec.ledger) => Some(rec),
            Some(rec) => {
                inner.count_hidden(rec.ledger, view);
                None
            }
            None => None,
        };
        Lookup {
            node,
            latest_ledger: view.latest,
            record,
        }
    }

    /// A page of `account`'s history (see [`Listing`]), from the node drawn to serve it (one
    /// draw per page, as for a lookup by hash): only records in ledgers that node holds, in
    /// TOID order. Ascending pages with a cursor before the node's elder ledger start at
    /// what it holds, as Horizon's do; descending ones are [`BeforeHistory`].
    pub fn account_page(
        &self,
        account: &str,
        listing: Listing,
        q: &PageQuery,
    ) -> Result<Result<Page, BeforeHistory>, SimError> {
        let key = AccountKey::parse(account)?;
        let mut inner = self.lock();
        let node = inner.pick_node();
        let view = inner.view(node);
        let elder_toid = history::toid(view.elder, 0, 0);
        if let (true, Cursor::At(c)) = (q.descending, q.cursor)
            && c <= elder_toid
        {
            return Ok(Err(BeforeHistory { node, view }));
        }
        let st = &inner.state;
        // Only what the node holds: TOIDs from its elder ledger to its latest one.
        let held = (
            elder_toid,
            history::toid(view.latest.saturating_add(1), 0, 0),
        );
        let records = match listing {
            Listing::Transactions => {
                let entries = st.tx_by_account.get(&key).map_or(&[][..], Vec::as_slice);
                page_of(st, entries, |p| (p, None), held, listing, q)
            }
            Listing::Operations | Listing::Payments => {
                let entries = st.ops_by_account.get(&key).map_or(&[][..], Vec::as_slice);
                page_of(st, entries, |(p, i)| (p, Some(i)), held, listing, q)
            }
        };
        Ok(Ok(Page {
            node,
            view,
            records,
        }))
    }

    /// The ledger range of RPC node `node`, or (`None`) of the node drawn to serve a
    /// request (one draw, as for a lookup by hash).
    pub fn rpc_range(&self, node: Option<Node>) -> RpcRange {
        let mut inner = self.lock();
        let node = node.unwrap_or_else(|| inner.pick_node());
        inner.rpc_range(node, self.rpc_retention_ledgers)
    }

    /// RPC `getTransaction`: the transaction if it is in a ledger the drawn node holds
    /// within its retention window.
    pub fn rpc_transaction(&self, hash: &[u8; 32]) -> (RpcRange, Option<Arc<TxRecord>>) {
        let mut inner = self.lock();
        let node = inner.pick_node();
        let range = inner.rpc_range(node, self.rpc_retention_ledgers);
        let record = match inner.state.txs.get(hash).cloned() {
            Some(rec) if range.holds(rec.ledger) => Some(rec),
            Some(rec) => {
                if rec.ledger > range.latest {
                    inner.counts.transactions_hidden_by_lag += 1;
                } else {
                    inner.counts.transactions_hidden_by_pruning += 1;
                }
                None
            }
            None => None,
        };
        (range, record)
    }

    /// RPC `getLedgerEntries`: each key's entry as the drawn node sees it, `None` if absent.
    /// Accounts (and their trustlines) are as of the node's latest ledger; claimable
    /// balances as they are now. Other entry kinds are not modelled, so always absent.
    // Long because: one match over the ledger-entry key kinds RPC can ask for, each arm
    // building that entry's XDR
    pub fn rpc_ledger_entries(
        &self,
        keys: &[stellar_xdr::LedgerKey],
    ) -> (RpcRange, Vec<Option<RpcEntry>>) {
        use stellar_xdr::{LedgerKey, TrustLineAsset};
        let mut inner = self.lock();
        let node = inner.pick_node();
        let mut range = inner.rpc_range(node, self.rpc_retention_ledgers);
        let head = inner.state.header.sequence;
        // A lagging node shows each account as it was at its latest ledger, which the
        // simulator knows only for changes made while a lag was set. If it cannot tell an
        // account's entry at that ledger (it changed later, before any version was kept),
        // the head node answers instead: an answer never claims a ledger its entries are
        // not from (an entry newer than its `latestLedger` would prove a sequence number
        // used too early, and so a live envelope dead).
        if range.latest < head {
            let known = |k: &AccountKey| match inner.versions.known_at(k, range.latest) {
                Some(known) => known,
                None => inner
                    .state
                    .accounts
                    .get(k)
                    .is_none_or(|a| a.last_modified_ledger.max(a.seq_ledger) <= range.latest),
            };
            let all_known = keys.iter().all(|key| match key {
                LedgerKey::Account(k) => known(&AccountKey::from_account_id(&k.account_id)),
                LedgerKey::Trustline(t) => known(&AccountKey::from_account_id(&t.account_id)),
                _ => true,
            });
            if !all_known {
                inner.counts.answers_from_lagging_node -= 1;
                range = inner.rpc_range(Node::Head, self.rpc_retention_ledgers);
            }
        }
        let account_at = |k: &AccountKey| -> Option<&Account> {
            match inner.versions.at(k, range.latest) {
                Some(version) if range.latest < head => version,
                _ => inner.state.accounts.get(k),
            }
        };
        let entries = keys
            .iter()
            .map(|key| match key {
                LedgerKey::Account(k) => {
                    let id = AccountKey::from_account_id(&k.account_id);
                    account_at(&id).map(|a| RpcEntry {
                        data: entries::account_entry(id, a),
                        last_modified_ledger: a.last_modified_ledger,
                    })
                }
                LedgerKey::Trustline(t) => {
                    let id = AccountKey::from_account_id(&t.account_id);
                    let asset = match &t.asset {
                        TrustLineAsset::CreditAlphanum4(a) => {
                            AssetId::from_xdr(&stellar_xdr::Asset::CreditAlphanum4(a.clone()))
                        }
                        TrustLineAsset::CreditAlphanum12(a) => {
                            AssetId::from_xdr(&stellar_xdr::Asset::CreditAlphanum12(a.clone()))
                        }
                        TrustLineAsset::Native | TrustLineAsset::PoolShare(_) => None,
                    }?;
                    let line = account_at(&id)?.trustlines.get(&asset.key())?;
                    Some(RpcEntry {
                        data: entries::trustline_entry(id, &t.asset, line),
                        last_modified_ledger: line.last_modified_ledger,
                    })
                }
                LedgerKey::ClaimableBalance(cb) => {
                    let stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(h) =
                        &cb.balance_id;
                    let balance = inner
                        .state
                        .claimable_balances
                        .get(&crate::keys::balance_id_hex(&h.0))?;
                    Some(RpcEntry {
                        data: entries::balance_entry(balance)?,
                        last_modified_ledger: balance.last_modified_ledger,
                    })
                }
                _ => None,
            })
            .collect();
        (range, entries)
    }

    /// RPC `getTransactions`: up to `limit` transactions from `start` on, in ledger and
    /// application order, within the drawn node's range; and the cursor RPC returns (the
    /// TOID, with operation number 1, of the last transaction listed, or once the page ends
    /// before `limit`, of the latest ledger's last transaction, order 0 if none was after
    /// the start there).
    pub fn rpc_transactions(
        &self,
        start: RpcStart,
        limit: usize,
    ) -> Result<(RpcRange, Vec<Arc<TxRecord>>, u64), RpcPageError> {
        let mut inner = self.lock();
        let node = inner.pick_node();
        let range = inner.rpc_range(node, self.rpc_retention_ledgers);
        // The first (ledger, application order) listed.
        let from = match start {
            RpcStart::Ledger(l) if !range.holds(l) => {
                return Err(RpcPageError::OutOfRange { start: l, range });
            }
            RpcStart::Ledger(l) => (l, 1),
            RpcStart::Cursor(c) => {
                let (l, order, _) = history::parse_toid(c);
                if l > range.latest {
                    return Ok((range, Vec::new(), 0));
                }
                if l < range.oldest {
                    return Err(RpcPageError::Pruned { ledger: l });
                }
                (l, order.saturating_add(1))
            }
        };
        let st = &inner.state;
        let first = st
            .tx_order
            .partition_point(|r| (r.ledger, r.application_order) < from);
        let txs: Vec<Arc<TxRecord>> = st.tx_order[first..]
            .iter()
            .take_while(|r| r.ledger <= range.latest)
            .take(limit)
            .cloned()
            .collect();
        let cursor = match txs.last() {
            Some(last) if txs.len() == limit => {
                history::toid(last.ledger, last.application_order, 1)
            }
            _ => {
                let in_latest = st.tx_order[first..]
                    .iter()
                    .filter(|r| r.ledger == range.latest)
                    .count();
                let last_order = st
                    .tx_order
                    .iter()
                    .rev()
                    .take_while(|r| r.ledger >= range.latest)
                    .find(|r| r.ledger == range.latest)
                    .map_or(0, |r| r.application_order);
                let order = if in_latest > 0 { last_order } else { 0 };
                history::toid(range.latest, order, 1)
            }
        };
        Ok((range, txs, cursor))
    }

    /// Sleeps for the configured latency fault, counting it.
    pub async fn inject_latency(&self) {
        let ms = {
            let mut inner = self.lock();
            let ms = inner.faults.latency_ms;
            if ms > 0 {
                inner.counts.latency += 1;
            }
            ms
        };
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Counts an answer lost after apply (the HTTP layer decides, it knows the final outcome).
    pub fn count_lost_answer(&self) {
        self.lock().counts.answers_lost_after_apply += 1;
    }

    /// Submits a base64 envelope. See [`Submission`] for the answers and [`Submitted`] for
    /// the node that gives them.
    pub fn submit(&self, tx_b64: &str, kind: SubmitKind) -> Submitted {
        let decoded = match validate::decode(tx_b64, self.network_id) {
            Ok(d) => d,
            // Horizon refuses it before asking core or its database: no node is involved.
            Err(why) => {
                return Submitted {
                    node: Node::Head,
                    submission: Submission::Malformed(why),
                };
            }
        };
        let (submitted, notes) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            // Three draws per submission whatever happens, so a seed replays the same faults;
            // the node draw comes from its own stream (see `Inner::node_rng`).
            let roll_5xx: f64 = inner.rng.random();
            let roll_lose: f64 = inner.rng.random();
            let pick_503: bool = inner.rng.random();
            let node = inner.pick_node();
            let roll_busy: f64 = inner.busy_rng.random();
            let rolls = Rolls {
                fail_5xx: roll_5xx < inner.faults.p_5xx_before_apply,
                lose_answer: roll_lose < inner.faults.p_lose_answer_after_apply,
                pick_503,
                busy: roll_busy < inner.faults.p_try_again_later,
            };
            let (submission, notes) = self.submit_locked(inner, decoded, kind, node, rolls);
            (Submitted { node, submission }, notes)
        };
        notify(notes);
        submitted
    }

    /// The body of [`Simulator::submit`], under the lock, after the draws.
    fn submit_locked(
        &self,
        inner: &mut Inner,
        decoded: validate::Decoded,
        kind: SubmitKind,
        node: Node,
        rolls: Rolls,
    ) -> (Submission, Notifications) {
        let hash = hex::encode(decoded.hash);
        let min_fee = match &decoded.body {
            Body::V1 { tx, .. } => validate::min_fee(tx, inner.state.base_fee),
            Body::Unsupported => inner.state.base_fee,
        };
        if let Some(refused) = injected_refusal(inner, &decoded, rolls, min_fee, &hash) {
            return (refused, Vec::new());
        }
        let in_ledger = inner.state.txs.get(&decoded.hash).cloned();
        let lose_answer = rolls.lose_answer;
        if let Some(known) = known_answer(
            inner,
            &decoded,
            kind,
            node,
            lose_answer,
            in_ledger.as_ref(),
            &hash,
        ) {
            return (known, Vec::new());
        }
        match self.admit(inner, decoded, min_fee, in_ledger.is_some(), rolls.busy) {
            Err(refused) => (refused.answer(hash), Vec::new()),
            Ok((waiter_rx, envelope_xdr)) => {
                let notes = if self.close_mode == CloseMode::Instant {
                    self.close_locked(inner).1
                } else {
                    Vec::new()
                };
                let submission = Submission::Accepted {
                    hash,
                    envelope_xdr,
                    fresh: true,
                    waiter: Waiter::Wait(waiter_rx),
                    lose_answer,
                };
                (submission, notes)
            }
        }
    }

    /// A new envelope core checks and queues: valid on its own and against the state,
    /// not already in a ledger, its source without a transaction pending, and core not
    /// busy. Returns its waiter and envelope, or why it was refused.
    fn admit(
        &self,
        inner: &mut Inner,
        decoded: validate::Decoded,
        min_fee: i64,
        in_ledger: bool,
        busy: bool,
    ) -> Result<(oneshot::Receiver<Outcome>, String), Refused> {
        let envelope_xdr = decoded.envelope_xdr;
        let invalid = |result| {
            Refused::Invalid(
                envelope_xdr.clone(),
                Invalid {
                    result,
                    fee: min_fee,
                },
            )
        };
        let Body::V1 {
            tx,
            signatures,
            auth,
        } = decoded.body
        else {
            return Err(invalid(TransactionResultResult::TxMalformed));
        };
        // A transaction with more operations than a ledger holds could never be included;
        // waiting for it would only end in a 504. Refused like an envelope that is invalid
        // on its own, before anything is consumed.
        if op_count(&tx) > u64::from(self.ops_per_ledger_max) {
            return Err(invalid(TransactionResultResult::TxMalformed));
        }
        let ctx = self.next_ctx(&inner.state);
        let valid = match validate::check_valid(&inner.state.accounts, &tx, auth, &ctx) {
            Err(e) => return Err(Refused::Invalid(envelope_xdr.clone(), e)),
            // Core answers an envelope already in a ledger from the state: its sequence
            // number is used (the check above says so unless `set_account_sequence` rewound
            // the account, and even then applying one hash twice is not possible).
            Ok(_) if in_ledger => return Err(invalid(TransactionResultResult::TxBadSeq)),
            Ok(v) => v,
        };
        if inner.pending_by_source.contains_key(&valid.source) {
            return Err(Refused::TryAgainLater);
        }
        // Core's queue refusing a valid transaction, after the checks above.
        if busy {
            inner.counts.try_again_later_injected += 1;
            return Err(Refused::TryAgainLater);
        }
        let (waiter_tx, waiter_rx) = oneshot::channel();
        inner.pending_by_source.insert(valid.source, decoded.hash);
        inner.order.push(decoded.hash);
        inner.pending.insert(
            decoded.hash,
            Pending {
                hash: decoded.hash,
                tx,
                auth,
                envelope_xdr: envelope_xdr.clone(),
                signatures: signatures
                    .iter()
                    .map(|s| BASE64.encode(s.signature.0.as_slice()))
                    .collect(),
                source: valid.source,
                waiters: vec![waiter_tx],
            },
        );
        Ok((waiter_rx, envelope_xdr))
    }

    /// The close time the next ledger gets after one that closed at `prev`.
    fn next_close_time(&self, prev: u64) -> u64 {
        match self.close_mode {
            CloseMode::Manual => prev.saturating_add(self.close_time_step_s),
            CloseMode::Interval { .. } => prev.saturating_add(1).max(now_unix_s()),
            CloseMode::Instant => prev.max(now_unix_s()),
        }
    }

    /// The ledger a submission now would be checked against: the next one.
    fn next_ctx(&self, st: &LedgerState) -> Ctx {
        Ctx {
            ledger_seq: st.header.sequence.saturating_add(1),
            close_time: self.next_close_time(st.header.close_time),
            base_fee: st.base_fee,
            base_reserve: self.base_reserve,
        }
    }

    /// Closes the next ledger. The open ledger's transactions are taken by fee per operation
    /// (their fee bid over their operation count), highest first, equal rates in arrival
    /// order; each is included if its operations still fit the capacity, else it waits for a
    /// later ledger. One that is too late for this ledger (max time before its close time,
    /// or max ledger reached) is dropped with `tx_too_late`, fitting or not. The included
    /// ones are applied in that order; if any had to wait, every included transaction pays
    /// the lowest included fee per operation (surge pricing), else the base fee.
    /// Closes one ledger: picks what fits ([`Self::select`]), applies it in order
    /// ([`Closing::apply`]), records the ledger and writes its delta to the state file.
    fn close_locked(&self, inner: &mut Inner) -> (LedgerHeader, Notifications) {
        let ctx = self.next_ctx(&inner.state);
        let header = LedgerHeader {
            sequence: ctx.ledger_seq,
            close_time: ctx.close_time,
        };
        let mut notes: Notifications = Vec::with_capacity(inner.order.len());
        let (selected, some_waited) = self.select(inner, &ctx, &mut notes);
        let surge_fee_per_op = surge_fee_per_op(&selected, some_waited);
        let mut closing = Closing::new(inner, header);
        for (p, fee_bid, ops) in selected {
            notes.push(closing.apply(inner, p, fee_bid, ops, surge_fee_per_op, &ctx));
        }
        inner.state.header = header;
        st::record_close_time(&mut inner.state.ledger_close_times, header);
        self.publish_lagging(inner);
        closing.finish(inner);
        (header, notes)
    }

    /// Which pending transactions go into the ledger `ctx` closes, best fee per operation
    /// first, within `ops_per_ledger_max`; with whether some valid one had to wait. Those
    /// invalid already are dropped (their waiters told in `notes`) and take no capacity;
    /// those waiting stay pending, in arrival order.
    ///
    /// The order: `sort_by` is stable, so equal rates keep their arrival order. Rates
    /// compare by cross-multiplication: bids fit in u32 and counts in 0..=100, so the
    /// products fit in u64 and no rounding is involved.
    fn select(
        &self,
        inner: &mut Inner,
        ctx: &Ctx,
        notes: &mut Notifications,
    ) -> (Vec<(Pending, u64, u64)>, bool) {
        let arrival = std::mem::take(&mut inner.order);
        let mut queue: Vec<([u8; 32], u64, u64)> = arrival
            .iter()
            .filter_map(|h| {
                let p = inner.pending.get(h)?;
                Some((*h, u64::from(p.tx.fee), op_count(&p.tx)))
            })
            .collect();
        queue.sort_by(|(_, fee_a, ops_a), (_, fee_b, ops_b)| (fee_b * ops_a).cmp(&(fee_a * ops_b)));
        let capacity = u64::from(self.ops_per_ledger_max);
        let mut used = 0u64;
        let mut some_waited = false;
        let mut selected: Vec<(Pending, u64, u64)> = Vec::with_capacity(queue.len());
        for (hash, fee, ops) in queue {
            let Some(p) = inner.pending.get(&hash) else {
                continue;
            };
            let fits = used.saturating_add(ops) <= capacity;
            let verdict = if fits {
                validate::check_valid(&inner.state.accounts, &p.tx, p.auth, ctx).err()
            } else if validate::too_late(&p.tx.cond, ctx) {
                // It could only be included in a later ledger, where it is invalid too.
                Some(Invalid {
                    result: TransactionResultResult::TxTooLate,
                    fee: validate::min_fee(&p.tx, ctx.base_fee),
                })
            } else {
                some_waited = true;
                continue;
            };
            let Some(p) = inner.pending.remove(&hash) else {
                continue;
            };
            inner.pending_by_source.remove(&p.source);
            match verdict {
                Some(invalid) => notes.push(dropped(p, invalid, "close")),
                None => {
                    used += ops;
                    selected.push((p, fee, ops));
                }
            }
        }
        inner.order = arrival
            .into_iter()
            .filter(|h| inner.pending.contains_key(h))
            .collect();
        (selected, some_waited)
    }
}

/// Why core did not queue a new envelope.
enum Refused {
    /// Invalid (the envelope and the result core answers).
    Invalid(String, Invalid),
    /// Its source has a transaction pending, or core is busy.
    TryAgainLater,
}

impl Refused {
    fn answer(self, hash: String) -> Submission {
        match self {
            Refused::Invalid(envelope_xdr, invalid) => {
                Submission::Rejected(Arc::new(rejection(hash, envelope_xdr, invalid)))
            }
            Refused::TryAgainLater => Submission::TryAgainLater { hash },
        }
    }
}

/// The faults drawn for a submission that answer it before core looks at it: a 5xx, or
/// the rejection `reject_next` asks for.
fn injected_refusal(
    inner: &mut Inner,
    decoded: &validate::Decoded,
    rolls: Rolls,
    min_fee: i64,
    hash: &str,
) -> Option<Submission> {
    if rolls.fail_5xx {
        inner.counts.server_errors_before_apply += 1;
        let status = if rolls.pick_503 { 503 } else { 500 };
        return Some(Submission::ServerError(status));
    }
    let rn = inner
        .faults
        .reject_next
        .as_mut()
        .filter(|rn| rn.count > 0)?;
    rn.count -= 1;
    let code = rn.code.clone();
    if rn.count == 0 {
        inner.faults.reject_next = None;
    }
    inner.counts.rejected_by_code += 1;
    let result =
        codes::tx_code_from_name(&code).unwrap_or(TransactionResultResult::TxInternalError);
    Some(Submission::Rejected(Arc::new(Rejection {
        hash: hash.to_owned(),
        envelope_xdr: decoded.envelope_xdr.clone(),
        code,
        op_codes: Vec::new(),
        result_xdr: codes::result_xdr(min_fee, result),
    })))
}

/// The answer to an envelope the network knows already. Sync: Horizon first looks the
/// hash up in its own database, and answers a transaction it holds with the original
/// result; one it does not hold (not ingested yet, or pruned) goes to core like any
/// other, and async always goes to core. Core answers an envelope it has pending by
/// adding a waiter to it.
fn known_answer(
    inner: &mut Inner,
    decoded: &validate::Decoded,
    kind: SubmitKind,
    node: Node,
    lose_answer: bool,
    in_ledger: Option<&Arc<TxRecord>>,
    hash: &str,
) -> Option<Submission> {
    if let (SubmitKind::Sync, Some(rec)) = (kind, in_ledger) {
        let view = inner.view(node);
        if view.holds(rec.ledger) {
            return Some(Submission::Accepted {
                hash: hash.to_owned(),
                envelope_xdr: decoded.envelope_xdr.clone(),
                fresh: false,
                waiter: Waiter::Ready(Outcome::Included(Arc::clone(rec))),
                lose_answer,
            });
        }
        inner.count_hidden(rec.ledger, view);
    }
    let p = inner.pending.get_mut(&decoded.hash)?;
    let (tx, rx) = oneshot::channel();
    p.waiters.push(tx);
    Some(Submission::Accepted {
        hash: hash.to_owned(),
        envelope_xdr: decoded.envelope_xdr.clone(),
        fresh: false,
        waiter: Waiter::Wait(rx),
        lose_answer,
    })
}

/// Surge pricing: when some transaction waited, the ledger's fee per operation is the
/// lowest bid per operation it included (rounded down; every bid covers the base fee, so
/// this is never below it).
fn surge_fee_per_op(selected: &[(Pending, u64, u64)], some_waited: bool) -> Option<i64> {
    if !some_waited {
        return None;
    }
    selected
        .iter()
        .map(|(_, fee, ops)| fee / ops)
        .min()
        .map(|f| i64::try_from(f).unwrap_or(i64::MAX))
}

/// A transaction leaves the pending set without being included: its waiters learn why.
fn dropped(p: Pending, invalid: Invalid, at: &str) -> (Vec<oneshot::Sender<Outcome>>, Outcome) {
    let hash_hex = hex::encode(p.hash);
    tracing::debug!(hash = %hash_hex, at, "dropped from the pending set");
    let rej = rejection(hash_hex, p.envelope_xdr, invalid);
    (p.waiters, Outcome::Dropped(Arc::new(rej)))
}

/// What one ledger close gathers while it applies its transactions: the delta for the
/// state file (only collected when there is one) and, while a lookup lag is set, the
/// entries the ledger replaces (kept for the lagging node).
struct Closing {
    header: LedgerHeader,
    persisting: bool,
    touched: BTreeSet<AccountKey>,
    touched_balances: BTreeSet<String>,
    versioning: bool,
    prior: HashMap<AccountKey, Option<Account>>,
    delta: Delta,
    application_order: u32,
}

impl Closing {
    fn new(inner: &Inner, header: LedgerHeader) -> Self {
        Self {
            header,
            persisting: inner.journal.is_some(),
            touched: BTreeSet::new(),
            touched_balances: BTreeSet::new(),
            versioning: inner.faults.lookup_lag_ledgers > 0,
            prior: HashMap::new(),
            delta: Delta {
                header: Some(header),
                ..Delta::default()
            },
            application_order: 0,
        }
    }

    /// Applies one selected transaction against the state the ones before it left (it
    /// is checked again: an earlier one may have made it invalid), charging the surge fee
    /// when there is one; returns its waiters with the outcome.
    fn apply(
        &mut self,
        inner: &mut Inner,
        p: Pending,
        fee_bid: u64,
        ops: u64,
        surge_fee_per_op: Option<i64>,
        ctx: &Ctx,
    ) -> (Vec<oneshot::Sender<Outcome>>, Outcome) {
        let mut valid = match validate::check_valid(&inner.state.accounts, &p.tx, p.auth, ctx) {
            Ok(v) => v,
            Err(invalid) => return dropped(p, invalid, "apply"),
        };
        if let Some(per_op) = surge_fee_per_op {
            let ops = i64::try_from(ops).unwrap_or(i64::MAX);
            let bid = i64::try_from(fee_bid).unwrap_or(i64::MAX);
            let surge = per_op.saturating_mul(ops).min(bid).max(valid.fee);
            // The checks made sure the account can pay the base fee above its reserve; a
            // surge fee beyond its balance takes the balance, as core charges it, so the
            // balance never goes below zero (it may go below the reserve).
            let balance = inner
                .state
                .accounts
                .get(&valid.source)
                .map_or(0, |a| a.balance);
            valid.fee = surge.min(balance).max(valid.fee);
        }
        let hash_hex = hex::encode(p.hash);
        let applied = {
            let mut books = Books {
                accounts: &mut inner.state.accounts,
                balances: &mut inner.state.claimable_balances,
                prior: self.versioning.then_some(&mut self.prior),
            };
            apply::apply_tx(&mut books, &p.tx, &valid, ctx, &hash_hex)
        };
        self.application_order += 1;
        if self.persisting {
            self.touched.extend(applied.touched.iter().copied());
            self.touched_balances
                .extend(applied.touched_balances.iter().cloned());
        }
        let header = self.header;
        let record = Arc::new(tx_record(
            &p,
            &hash_hex,
            &header,
            self.application_order,
            valid.fee,
            &applied,
        ));
        for pay in applied.payments {
            let payment = AppliedPayment {
                kind: pay.kind,
                tx_hash: hash_hex.clone(),
                ledger: header.sequence,
                op_index: pay.op_index,
                source: pay.source,
                destination: pay.destination,
                asset: pay.asset,
                amount_stroops: pay.amount,
                memo: record.memo_filter.clone(),
                close_time: header.close_time,
                balance_id: pay.balance_id,
                claimants: pay.claimants,
            };
            if self.persisting {
                self.delta.payments.push(payment.clone());
            }
            inner.state.add_payment(payment);
        }
        if self.persisting {
            self.delta.transactions.push(TxRecord::clone(&record));
        }
        inner.state.add_tx(p.hash, Arc::clone(&record), &p.tx);
        (p.waiters, Outcome::Included(record))
    }

    /// After the ledger is recorded: keeps the replaced entries for a lagging node and
    /// writes the delta (the touched accounts and balances as they are now).
    fn finish(mut self, inner: &mut Inner) {
        let sequence = self.header.sequence;
        if self.versioning {
            record_versions(inner, std::mem::take(&mut self.prior), sequence);
        }
        self.delta.accounts = self
            .touched
            .into_iter()
            .filter_map(|k| inner.state.accounts.get(&k).map(|a| (k, a.clone())))
            .collect();
        for id in self.touched_balances {
            match inner.state.claimable_balances.get(&id) {
                Some(cb) => self.delta.claimable_balances.push(cb.clone()),
                None => self.delta.claimable_balances_removed.push(id),
            }
        }
        if let Err(e) = append(inner, self.delta) {
            tracing::error!(error = %e, ledger = sequence, "could not write the closed ledger to the state file");
        }
    }
}

/// The records of one page from `entries` (an account's index, in TOID order; `entry`
/// gives the position in `tx_order` and the operation index of each), within the TOIDs
/// `held` (`[from, to)`) of the serving node.
fn page_of<T: Copy>(
    st: &LedgerState,
    entries: &[T],
    entry: impl Fn(T) -> (u32, Option<u32>),
    held: (u64, u64),
    listing: Listing,
    q: &PageQuery,
) -> Vec<PageRecord> {
    let record = |e: T| -> Option<(u64, &Arc<TxRecord>, Option<&OpInfo>)> {
        let (pos, op) = entry(e);
        let pos = usize::try_from(pos).ok()?;
        let rec = st.tx_order.get(pos)?;
        let op = match op {
            None => None,
            Some(i) => Some(st.tx_ops.get(pos)?.get(usize::try_from(i).ok()?)?),
        };
        let op_number = op.map_or(0, |o| o.index.saturating_add(1));
        Some((
            history::toid(rec.ledger, rec.application_order, op_number),
            rec,
            op,
        ))
    };
    let toid = |e: &T| record(*e).map_or(u64::MAX, |(t, _, _)| t);
    // Records are strictly after an ascending cursor and strictly before a descending one.
    let (from, to) = match (q.cursor, q.descending) {
        (Cursor::Start, _) => held,
        (Cursor::Now, false) => (held.1, held.1),
        (Cursor::Now, true) => held,
        (Cursor::At(c), false) => (c.saturating_add(1).max(held.0), held.1),
        (Cursor::At(c), true) => (held.0, c.min(held.1)),
    };
    let lo = entries.partition_point(|e| toid(e) < from);
    let hi = entries.partition_point(|e| toid(e) < to).max(lo);
    let keep = |e: &T| -> Option<PageRecord> {
        let (toid, rec, op) = record(*e)?;
        let kind_ok = listing != Listing::Payments || op.is_some_and(|o| o.body.is_payment());
        (kind_ok && (q.include_failed || rec.successful)).then(|| PageRecord {
            toid,
            tx: Arc::clone(rec),
            op: op.cloned(),
        })
    };
    let window = &entries[lo..hi];
    if q.descending {
        window.iter().rev().filter_map(keep).take(q.limit).collect()
    } else {
        window.iter().filter_map(keep).take(q.limit).collect()
    }
}

/// Wakes the submissions waiting on transactions that left the pending set.
fn notify(notes: Notifications) {
    for (waiters, outcome) in notes {
        for w in waiters {
            // A waiter that gave up (timed out, disconnected) has dropped its receiver.
            let _ = w.send(outcome.clone());
        }
    }
}

fn append(inner: &mut Inner, delta: Delta) -> std::io::Result<()> {
    match inner.journal.as_mut() {
        Some(j) => j.append(delta),
        None => Ok(()),
    }
}

/// After admin changes to accounts at the head ledger (`changes`: each account and its entry
/// before): keeps their old versions for the lagging node and writes them to the state file.
fn accounts_changed(
    inner: &mut Inner,
    changes: Vec<(AccountKey, Option<Account>)>,
) -> Result<(), SimError> {
    let ledger = inner.state.header.sequence;
    let keys: Vec<AccountKey> = changes.iter().map(|(k, _)| *k).collect();
    record_versions(inner, changes, ledger);
    if inner.journal.is_none() {
        return Ok(());
    }
    let accounts = keys
        .iter()
        .filter_map(|k| inner.state.accounts.get(k).map(|a| (*k, a.clone())))
        .collect();
    append(
        inner,
        Delta {
            accounts,
            ..Delta::default()
        },
    )?;
    Ok(())
}

/// Keeps the entries `changes` replaced in `ledger` (each account with its entry before)
/// for the lagging node's reads, while a lag is set; without one, forgets them.
fn record_versions(
    inner: &mut Inner,
    changes: impl IntoIterator<Item = (AccountKey, Option<Account>)>,
    ledger: u32,
) {
    if inner.faults.lookup_lag_ledgers == 0 {
        for (k, _) in changes {
            inner.versions.forget(&k);
        }
        return;
    }
    let keep_from = inner.view(Node::Lagging).latest;
    for (k, old) in changes {
        let new = inner.state.accounts.get(&k);
        inner.versions.record(k, old, new, ledger, keep_from);
    }
}

fn rejection(hash: String, envelope_xdr: String, invalid: Invalid) -> Rejection {
    let (code, op_codes) = codes::result_codes(&invalid.result);
    Rejection {
        hash,
        envelope_xdr,
        code,
        op_codes,
        result_xdr: codes::result_xdr(invalid.fee, invalid.result),
    }
}

/// What Horizon shows of an applied transaction.
fn tx_record(
    p: &Pending,
    hash: &str,
    header: &LedgerHeader,
    order: u32,
    fee: i64,
    applied: &Applied,
) -> TxRecord {
    let tx = &p.tx;
    let (memo_type, memo, memo_bytes, memo_filter) = memo_forms(&tx.memo);
    let (time_bounds, ledger_bounds) = match &tx.cond {
        Preconditions::None => (None, None),
        Preconditions::Time(tb) => (Some((tb.min_time.0, tb.max_time.0)), None),
        Preconditions::V2(v2) => (
            v2.time_bounds
                .as_ref()
                .map(|tb| (tb.min_time.0, tb.max_time.0)),
            v2.ledger_bounds
                .as_ref()
                .map(|lb| (lb.min_ledger, lb.max_ledger)),
        ),
    };
    let (result_code, operation_codes) = codes::result_codes(&applied.result);
    TxRecord {
        hash: hash.to_owned(),
        ledger: header.sequence,
        application_order: order,
        close_time: header.close_time,
        successful: applied.successful,
        envelope_xdr: p.envelope_xdr.clone(),
        result_xdr: codes::result_xdr(fee, applied.result.clone()),
        fee_charged: fee,
        max_fee: tx.fee,
        source_account: AccountKey::from_muxed(&tx.source_account).to_string(),
        source_account_muxed: match &tx.source_account {
            MuxedAccount::MuxedEd25519(_) => Some(tx.source_account.to_string()),
            MuxedAccount::Ed25519(_) => None,
        },
        source_account_sequence: tx.seq_num.0,
        operation_count: u32::try_from(tx.operations.len()).unwrap_or(u32::MAX),
        memo_type: memo_type.to_owned(),
        memo,
        memo_bytes,
        memo_filter,
        signatures: p.signatures.clone(),
        time_bounds,
        ledger_bounds,
        result_code,
        operation_codes,
    }
}

/// (Horizon memo_type, Horizon memo, memo_bytes, filter form).
fn memo_forms(memo: &Memo) -> (&'static str, Option<String>, Option<String>, Option<String>) {
    match memo {
        Memo::None => ("none", None, None, None),
        Memo::Text(t) => {
            let text = t.to_utf8_string_lossy();
            let filter = format!("text:{text}");
            (
                "text",
                Some(text),
                Some(BASE64.encode(t.as_slice())),
                Some(filter),
            )
        }
        Memo::Id(id) => ("id", Some(id.to_string()), None, Some(format!("id:{id}"))),
        Memo::Hash(h) => (
            "hash",
            Some(BASE64.encode(h.0)),
            None,
            Some(format!("hash:{}", hex::encode(h.0))),
        ),
        Memo::Return(h) => (
            "return",
            Some(BASE64.encode(h.0)),
            None,
            Some(format!("return:{}", hex::encode(h.0))),
        ),
    }
}
