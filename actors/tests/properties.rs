//! Property tests of the exactly-once protocol (BRIEF §2) over the real `Payouts`,
//! supervisor and payout actors, with the in-memory journal and ledger behind fault-injecting
//! wrappers.
//!
//! Each case is a random scenario: duplicate and conflicting submissions (some concurrent),
//! scripted ledger answers (lost answers, 5xx, rejections before inclusion, inclusion as
//! failed), panics inside `submit`, journal and ledger outages, ledger time advancing, a
//! channel's sequence consumed by someone else, cancellations, process crashes (every I/O of
//! the old process freezes forever, like `kill -9`), graceful restarts, and second instances
//! started beside a running one (both drive the payouts they know). Then everything heals,
//! the ledger closes on a cadence, and the case waits (by condition, bounded) until every
//! payout is settled. The checks:
//!
//! - (a) at most one payment per payout on the ledger; exactly one for a confirmed payout,
//!   none for a failed or cancelled one;
//! - (b) never two envelopes of one payout that could both still apply: checked online, at
//!   the moment each new envelope is journaled (every earlier one must be included-failed or
//!   provably dead — its sequence consumed or its `max_time` passed by ledger time, not
//!   applied), and again at the end;
//! - (c) nothing is abandoned: with a healthy journal and ledger every payout ends confirmed,
//!   failed, cancelled, or parked with a reason;
//! - and the answers callers got are consistent with what the journal stored.
//!
//! Case generation is seeded (`DEFAULT_SEED`, or `PROPTEST_RNG_SEED`); execution is
//! concurrent, so a failure prints its scenario to replay. `PROPTEST_CASES` sets the number
//! of cases (default `DEFAULT_CASES`, sized for a 2-core CI).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use payoutd_actors::domain::{
    AccountId, Amount, Asset, Destination, Fingerprint, Memo, PayoutId, PayoutRequest,
};
use payoutd_actors::memory::{MemJournal, MemLedger, Scripted};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{
    Accepted, Change, Envelope, Journal, JournalError, Ledger, LedgerError, LedgerHead, Lookup,
    PayoutEvent, PayoutRecord, PayoutState, SubmitOutcome, TxHash, TxSpec,
};
use payoutd_actors::{Context, PayoutError, PayoutPolicy, Payouts, SubmitAnswer, SupervisorConfig};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
const PAYER: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";

/// Cases per run unless `PROPTEST_CASES` says otherwise: about 8 s on 2 cores.
const DEFAULT_CASES: u32 = 128;
/// Seed of case generation unless `PROPTEST_RNG_SEED` says otherwise ("payoutd" in ASCII).
const DEFAULT_SEED: u64 = 0x0070_6179_6f75_7464;
/// Longest a shrinking run may take after a failure, in milliseconds.
const SHRINK_TIME_MAX_MS: u32 = 120_000;

/// How long a caller waits for an actor's answer, in milliseconds.
const CALL_TIMEOUT_MS: u64 = 2_000;
/// How long a stopping supervisor may take, in milliseconds.
const SHUTDOWN_TIMEOUT_MS: u64 = 1_000;
/// Pause between two recovery attempts while the journal is down, in milliseconds.
const RECOVERY_RETRY_MS: u64 = 5;
/// After healing, how long every payout has to settle, in milliseconds. Generous: a case
/// normally settles in well under a second; this bound only turns a hang into a failure.
const SETTLE_TIMEOUT_MS: u64 = 20_000;
/// A payout whose journal version does not move for this long while settling is stalled,
/// in milliseconds (an expiring envelope moves within `TX_VALIDITY_S / LEDGER_CLOSE_S`
/// ticks of `LEDGER_TICK_MS`, about 120 ms).
const STALL_MS: u64 = 1_500;
/// Once settled, the processes are quiet when no journal or ledger call came for this
/// long, in milliseconds (a second instance's actor may take a step or two to learn the
/// payout is finished)…
const QUIET_MS: u64 = 30;
/// …which must happen within this long, in milliseconds.
const QUIET_WAIT_MS: u64 = 1_000;
/// Poll period of the settle condition, in milliseconds.
const SETTLE_POLL_MS: u64 = 5;
/// While settling, the ledger closes a ledger this often, in milliseconds of wall time…
const LEDGER_TICK_MS: u64 = 10;
/// …each this many seconds of ledger time after the last (Stellar: 5–7 s).
const LEDGER_CLOSE_S: u64 = 5;
/// Envelope validity: `max_time` = last close time + this, in seconds.
const TX_VALIDITY_S: u64 = 60;

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// Which content a submission carries for its payout id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Variant {
    Original,
    /// Same id, one stroop more: a conflict once the other variant is stored.
    Conflicting,
}

/// A scripted answer for the next submission that reaches the ledger (any payout's).
#[derive(Debug, Clone)]
enum Answer {
    /// 5xx or timeout before anything was applied.
    Unknown,
    /// Applied, then the answer was lost.
    ApplyThenLose,
    /// The ledger adapter panics (the actor restarts from the journal).
    Panic,
    /// Refused before inclusion with this code.
    Rejected(&'static str),
    /// Included in a ledger as failed with this operation code (sequence and fee consumed).
    IncludeFailed(&'static str),
}

#[derive(Debug, Clone)]
enum Op {
    /// `copies` concurrent submissions of payout `payout`.
    Submit {
        payout: usize,
        variant: Variant,
        copies: usize,
    },
    Script(Answer),
    /// Close an empty ledger `seconds` after the last one.
    Advance {
        seconds: u64,
    },
    /// Someone else used channel `channel`, consuming `count` sequence numbers.
    BumpSequence {
        channel: usize,
        count: i64,
    },
    JournalDown,
    JournalUp,
    /// Every ledger call fails (reads `Unavailable`, submissions `Unknown`).
    LedgerDown,
    LedgerUp,
    Cancel {
        payout: usize,
    },
    /// `kill -9`: every I/O of the current process blocks forever from now on (a call in
    /// progress completes on the other side, its answer is never seen); a new process
    /// starts and recovers.
    Crash,
    /// A graceful restart: the supervisor and its actors stop, a new process recovers.
    Restart,
    /// A second instance starts and recovers beside the current one, which goes on driving
    /// the payouts it knows (two instances on one database, BRIEF §2.6); new requests go to
    /// the second one.
    SecondInstance,
    /// Let everything run for a while, in milliseconds.
    Run {
        ms: u64,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    /// Payout ids `p-0` … `p-{payouts-1}`.
    payouts: usize,
    /// As many channel accounts as payouts: a parked payout keeps its lease, so with fewer
    /// channels the others could wait forever for one (reported separately, not tested here).
    channels: usize,
    attempts_max: u32,
    idle_passivate_ms: u64,
    live_actors_max: usize,
    restart_intensity: usize,
    /// Time each submission spends on the network, in milliseconds: with 0 a payout is
    /// settled before the next operation; with more, crashes and outages land mid-flight.
    ledger_latency_ms: u64,
    ops: Vec<Op>,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => Just(Answer::Unknown),
        3 => Just(Answer::ApplyThenLose),
        2 => Just(Answer::Panic),
        4 => prop::sample::select(vec![
            "tx_bad_seq",
            "tx_insufficient_fee",
            "tx_too_late",
            "tx_too_early",
        ])
        .prop_map(Answer::Rejected),
        1 => Just(Answer::Rejected("tx_bad_auth")),
        3 => prop::sample::select(vec![
            "op_no_destination",
            "op_no_trust",
            "op_underfunded",
            "op_line_full",
        ])
        .prop_map(Answer::IncludeFailed),
    ]
}

fn op(payouts: usize) -> impl Strategy<Value = Op> {
    let variant = prop_oneof![4 => Just(Variant::Original), 1 => Just(Variant::Conflicting)];
    prop_oneof![
        10 => (0..payouts, variant, 1usize..=3)
            .prop_map(|(payout, variant, copies)| Op::Submit { payout, variant, copies }),
        6 => answer().prop_map(Op::Script),
        3 => prop::sample::select(vec![1u64, 5, 30, 59, 61, 120, 1_000])
            .prop_map(|seconds| Op::Advance { seconds }),
        1 => (0..payouts, 1i64..=2).prop_map(|(channel, count)| Op::BumpSequence { channel, count }),
        1 => Just(Op::JournalDown),
        1 => Just(Op::JournalUp),
        1 => Just(Op::LedgerDown),
        1 => Just(Op::LedgerUp),
        1 => (0..payouts).prop_map(|payout| Op::Cancel { payout }),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
        1 => Just(Op::SecondInstance),
        4 => (0u64..15).prop_map(|ms| Op::Run { ms }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let limits = prop_oneof![
        // (live_actors_max, idle_passivate_ms): no passivation; eager passivation; a tight
        // bound on live actors (drives wait for room, which passivation makes).
        Just((1_000usize, 60_000u64)),
        Just((1_000, 15)),
        Just((2, 15)),
    ];
    let latency = prop::sample::select(vec![0u64, 1, 3]);
    (1usize..=4, 2u32..=6, limits, 1usize..=3, latency).prop_flat_map(
        |(
            payouts,
            attempts_max,
            (live_actors_max, idle_passivate_ms),
            restart_intensity,
            ledger_latency_ms,
        )| {
            prop::collection::vec(op(payouts), 4..32).prop_map(move |ops| Scenario {
                payouts,
                channels: payouts,
                attempts_max,
                idle_passivate_ms,
                live_actors_max,
                restart_intensity,
                ledger_latency_ms,
                ops,
            })
        },
    )
}

fn payout_id(payout: usize) -> PayoutId {
    PayoutId::parse(&format!("p-{payout}")).expect("p-N is a valid payout id")
}

fn request(payout: usize, variant: Variant) -> PayoutRequest {
    let extra = match variant {
        Variant::Original => 0,
        Variant::Conflicting => 1,
    };
    let stroops = (payout as i64 + 1) * 10_000_000 + extra;
    PayoutRequest::new(
        payout_id(payout),
        Destination::parse(DEST).expect("valid destination"),
        Asset::Native,
        Amount::from_stroops(stroops).expect("positive"),
        Memo::None,
    )
}

fn channel(n: usize) -> AccountId {
    AccountId::from_bytes([n as u8 + 1; 32])
}

// ---------------------------------------------------------------------------------------
// The world: shared journal and ledger, seen by each process through its own wrappers
// ---------------------------------------------------------------------------------------

/// What the ledger says about one envelope right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Applied,
    IncludedFailed,
    /// Not in a ledger and never can be: its sequence number is consumed, or a ledger
    /// closed too late for its `max_time`.
    Dead,
    /// Not in a ledger yet, and could still be.
    Live,
}

async fn fate(ledger: &MemLedger, envelope: &Envelope) -> Fate {
    match ledger.lookup(&envelope.hash).await {
        Ok(Lookup::Applied(_)) => return Fate::Applied,
        Ok(Lookup::Failed { .. }) => return Fate::IncludedFailed,
        Ok(Lookup::NotFound) | Err(_) => {}
    }
    // MemLedger never fails these reads.
    let head = ledger.latest_ledger().await.expect("MemLedger has a head");
    let sequence = ledger
        .account_sequence(&envelope.source)
        .await
        .expect("MemLedger reads never fail");
    // MemLedger closes the next ledger at `close_time + 1` and refuses an envelope whose
    // `max_time` is before it; sequence numbers and close times only grow.
    let expired = head.close_time + 1 > envelope.max_time;
    let consumed = sequence.is_none_or(|s| s >= envelope.sequence);
    if expired || consumed {
        Fate::Dead
    } else {
        Fate::Live
    }
}

#[derive(Default)]
struct Audit {
    /// Every envelope journaled (`Prepared` committed), per payout, in order.
    envelopes: HashMap<PayoutId, Vec<Envelope>>,
    /// Broken invariants seen while the case ran.
    violations: Vec<String>,
}

struct Shared {
    journal: Arc<MemJournal>,
    ledger: Arc<MemLedger>,
    ledger_down: AtomicBool,
    audit: Mutex<Audit>,
    /// Serialises journal writes with their audit (and makes `park` a single step, as the
    /// one SQL statement of the Postgres journal is).
    write_lock: tokio::sync::Mutex<()>,
    /// Calls into the journal and the ledger, by method, from every process.
    calls: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn count(&self, method: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method)
            .or_default() += 1;
    }

    fn calls(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn audit(&self) -> std::sync::MutexGuard<'_, Audit> {
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new envelope was journaled: every earlier one of the payout must be unable to
    /// apply, or the two could both pay (BRIEF §2.4, ARCHITECTURE invariant 4).
    async fn audit_prepared(&self, id: &PayoutId, envelope: &Envelope) {
        let earlier = self.audit().envelopes.get(id).cloned().unwrap_or_default();
        for old in &earlier {
            let fate = fate(&self.ledger, old).await;
            if matches!(fate, Fate::Applied | Fate::Live) {
                self.audit().violations.push(format!(
                    "payout {id}: envelope {} journaled while the earlier envelope {} (seq {}, max_time {}) is {fate:?}",
                    envelope.hash, old.hash, old.sequence, old.max_time
                ));
            }
        }
        self.audit()
            .envelopes
            .entry(id.clone())
            .or_default()
            .push(envelope.clone());
    }
}

/// Blocks forever once the process is frozen (crashed): nothing after this point happens.
async fn gate(frozen: &AtomicBool) {
    if frozen.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}

/// One process's view of the journal.
struct ProcJournal {
    shared: Arc<Shared>,
    frozen: Arc<AtomicBool>,
}

#[async_trait]
impl Journal for ProcJournal {
    async fn accept(
        &self,
        request: &PayoutRequest,
        fingerprint: Fingerprint,
    ) -> Result<Accepted, JournalError> {
        gate(&self.frozen).await;
        self.shared.count("accept");
        let result = {
            let _write = self.shared.write_lock.lock().await;
            self.shared.journal.accept(request, fingerprint).await
        };
        gate(&self.frozen).await;
        result
    }

    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError> {
        gate(&self.frozen).await;
        self.shared.count("load");
        let result = self.shared.journal.load(id).await;
        gate(&self.frozen).await;
        result
    }

    async fn apply(
        &self,
        current: &PayoutRecord,
        change: &Change,
    ) -> Result<PayoutRecord, JournalError> {
        gate(&self.frozen).await;
        self.shared.count("apply");
        let result = {
            let _write = self.shared.write_lock.lock().await;
            let result = self.shared.journal.apply(current, change).await;
            if let (Ok(record), Change::Prepared { envelope, .. }) = (&result, change) {
                self.shared.audit_prepared(record.id(), envelope).await;
            }
            result
        };
        gate(&self.frozen).await;
        result
    }

    /// Like the Postgres journal: a terminal payout is never parked (MemJournal would).
    async fn park(&self, id: &PayoutId, reason: &str) -> Result<(), JournalError> {
        gate(&self.frozen).await;
        self.shared.count("park");
        let result = {
            let _write = self.shared.write_lock.lock().await;
            match self.shared.journal.load(id).await {
                Ok(Some(r)) if r.state.is_terminal() => Ok(()),
                Ok(_) => self.shared.journal.park(id, reason).await,
                Err(e) => Err(e),
            }
        };
        gate(&self.frozen).await;
        result
    }

    async fn lease_channel(&self, id: &PayoutId) -> Result<Option<AccountId>, JournalError> {
        gate(&self.frozen).await;
        self.shared.count("lease_channel");
        let result = {
            let _write = self.shared.write_lock.lock().await;
            self.shared.journal.lease_channel(id).await
        };
        gate(&self.frozen).await;
        result
    }

    async fn active_ids(
        &self,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutId>, JournalError> {
        gate(&self.frozen).await;
        self.shared.count("active_ids");
        let result = self.shared.journal.active_ids(after, limit).await;
        gate(&self.frozen).await;
        result
    }

    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError> {
        gate(&self.frozen).await;
        self.shared.count("events");
        let result = self.shared.journal.events(id).await;
        gate(&self.frozen).await;
        result
    }
}

/// One process's view of the ledger, with a switchable outage.
struct ProcLedger {
    shared: Arc<Shared>,
    frozen: Arc<AtomicBool>,
    latency_ms: u64,
}

impl ProcLedger {
    fn down(&self) -> bool {
        self.shared.ledger_down.load(Ordering::SeqCst)
    }
}

fn outage() -> LedgerError {
    LedgerError::Unavailable("simulated outage".into())
}

#[async_trait]
impl Ledger for ProcLedger {
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError> {
        self.shared.ledger.build_and_sign(spec)
    }

    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome {
        gate(&self.frozen).await;
        self.shared.count("submit");
        if self.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.latency_ms)).await;
        }
        let outcome = if self.down() {
            SubmitOutcome::Unknown {
                detail: "HTTP 503".into(),
            }
        } else {
            self.shared.ledger.submit(envelope).await
        };
        gate(&self.frozen).await;
        outcome
    }

    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError> {
        gate(&self.frozen).await;
        self.shared.count("lookup");
        let result = if self.down() {
            Err(outage())
        } else {
            self.shared.ledger.lookup(hash).await
        };
        gate(&self.frozen).await;
        result
    }

    async fn account_sequence(&self, account: &AccountId) -> Result<Option<i64>, LedgerError> {
        gate(&self.frozen).await;
        self.shared.count("account_sequence");
        let result = if self.down() {
            Err(outage())
        } else {
            self.shared.ledger.account_sequence(account).await
        };
        gate(&self.frozen).await;
        result
    }

    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError> {
        gate(&self.frozen).await;
        self.shared.count("latest_ledger");
        let result = if self.down() {
            Err(outage())
        } else {
            self.shared.ledger.latest_ledger().await
        };
        gate(&self.frozen).await;
        result
    }
}

/// One running instance of the service.
struct Process {
    payouts: Payouts,
    frozen: Arc<AtomicBool>,
    /// Recovery retries until the journal answers, as a starting service would.
    recovery: tokio::task::JoinHandle<()>,
}

async fn start_process(shared: &Arc<Shared>, scenario: &Scenario) -> Process {
    let frozen = Arc::new(AtomicBool::new(false));
    let mut policy = PayoutPolicy::new(AccountId::parse(PAYER).expect("valid payer"));
    policy.attempts_max = scenario.attempts_max;
    policy.tx_validity_s = TX_VALIDITY_S;
    policy.poll_interval_ms = 2;
    policy.io_retry_ms = 2;
    policy.channel_wait_ms = 2;
    policy.underfunded_retry_ms = 2;
    policy.idle_passivate_ms = scenario.idle_passivate_ms;
    let ctx = Arc::new(Context {
        journal: Arc::new(ProcJournal {
            shared: shared.clone(),
            frozen: frozen.clone(),
        }),
        ledger: Arc::new(ProcLedger {
            shared: shared.clone(),
            frozen: frozen.clone(),
            latency_ms: scenario.ledger_latency_ms,
        }),
        policy,
        metrics: Arc::new(Metrics::default()),
    });
    let config = SupervisorConfig {
        live_actors_max: scenario.live_actors_max,
        restart_intensity: scenario.restart_intensity,
        restart_period_ms: 60_000,
    };
    let (payouts, _) = Payouts::start(ctx, config, CALL_TIMEOUT_MS)
        .await
        .expect("the supervisor starts");
    let recovering = payouts.clone();
    let recovery = tokio::spawn(async move {
        while recovering.recover().await.is_err() {
            tokio::time::sleep(Duration::from_millis(RECOVERY_RETRY_MS)).await;
        }
    });
    Process {
        payouts,
        frozen,
        recovery,
    }
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

/// What callers were told, checked against the journal at the end.
#[derive(Default)]
struct Answers {
    submits: Vec<(usize, Variant, Result<SubmitAnswer, PayoutError>)>,
    cancels: Vec<(usize, Result<PayoutRecord, PayoutError>)>,
}

fn scripted(answer: &Answer) -> Scripted {
    match answer {
        Answer::Unknown => Scripted::Answer(SubmitOutcome::Unknown {
            detail: "HTTP 504".into(),
        }),
        Answer::ApplyThenLose => Scripted::ApplyThenLose,
        Answer::Panic => Scripted::Panic,
        Answer::Rejected(code) => Scripted::Answer(SubmitOutcome::Rejected {
            code: (*code).to_owned(),
        }),
        Answer::IncludeFailed(op) => Scripted::IncludeFailed {
            op_codes: vec![(*op).to_owned()],
        },
    }
}

async fn run_op(
    op: &Op,
    shared: &Arc<Shared>,
    scenario: &Scenario,
    processes: &mut Vec<Process>,
    answers: &mut Answers,
) {
    let current = processes.last().expect("one process runs");
    match op {
        Op::Submit {
            payout,
            variant,
            copies,
        } => {
            let calls: Vec<_> = (0..*copies)
                .map(|_| {
                    let payouts = current.payouts.clone();
                    let request = request(*payout, *variant);
                    tokio::spawn(async move { payouts.submit(request).await })
                })
                .collect();
            for call in calls {
                let answer = call.await.expect("a submit task does not panic");
                answers.submits.push((*payout, *variant, answer));
            }
        }
        Op::Script(answer) => shared.ledger.script(scripted(answer)),
        Op::Advance { seconds } => shared.ledger.advance(*seconds),
        Op::BumpSequence { channel: c, count } => shared.ledger.bump_sequence(&channel(*c), *count),
        Op::JournalDown => shared.journal.unavailable.store(true, Ordering::SeqCst),
        Op::JournalUp => shared.journal.unavailable.store(false, Ordering::SeqCst),
        Op::LedgerDown => shared.ledger_down.store(true, Ordering::SeqCst),
        Op::LedgerUp => shared.ledger_down.store(false, Ordering::SeqCst),
        Op::Cancel { payout } => {
            let answer = current
                .payouts
                .cancel(&payout_id(*payout), "cancelled by the test".into())
                .await;
            answers.cancels.push((*payout, answer));
        }
        Op::Crash => {
            // Nothing of it runs any more: no need (and no way) to stop it.
            current.frozen.store(true, Ordering::SeqCst);
            let next = start_process(shared, scenario).await;
            processes.push(next);
        }
        Op::Restart => {
            current.payouts.shutdown(SHUTDOWN_TIMEOUT_MS).await;
            let next = start_process(shared, scenario).await;
            processes.push(next);
        }
        Op::SecondInstance => {
            let next = start_process(shared, scenario).await;
            processes.push(next);
        }
        Op::Run { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
    }
}

/// Loads a record straight from the shared journal (healed by then).
async fn load(shared: &Shared, payout: usize) -> Option<PayoutRecord> {
    shared
        .journal
        .load(&payout_id(payout))
        .await
        .expect("the journal is up while checking")
}

fn settled(record: &PayoutRecord) -> bool {
    record.state.is_terminal() || (record.state == PayoutState::Parked && record.reason.is_some())
}

/// Whether a process that keeps working once every payout is settled fails the case (the
/// default). `PAYOUTD_PROPS_STRICT=0` only prints it on stderr, to look past such a bug for
/// others while it is open.
fn strict() -> bool {
    std::env::var_os("PAYOUTD_PROPS_STRICT").is_none_or(|v| v != "0")
}

/// Waits, by condition and within `SETTLE_TIMEOUT_MS`, until every stored payout is
/// settled, with the ledger closing on a cadence meanwhile. A payout whose journal version
/// has not moved for `STALL_MS` while the ledger ticks is not being driven by anyone: that
/// breaks (c). Returns what is still open, and the stalls seen.
async fn settle(shared: &Arc<Shared>, scenario: &Scenario) -> (Vec<PayoutRecord>, Vec<String>) {
    let ticking = shared.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(LEDGER_TICK_MS)).await;
            ticking.ledger.advance(LEDGER_CLOSE_S);
        }
    });
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    let mut seen: HashMap<PayoutId, (i64, Instant)> = HashMap::new();
    let mut stalls = Vec::new();
    let open = loop {
        let mut open = Vec::new();
        for payout in 0..scenario.payouts {
            if let Some(record) = load(shared, payout).await
                && !settled(&record)
            {
                open.push(record);
            }
        }
        let now = Instant::now();
        for record in &open {
            let (version, since) = seen
                .entry(record.id().clone())
                .or_insert((record.version, now));
            if *version != record.version {
                (*version, *since) = (record.version, now);
            } else if now.duration_since(*since) >= Duration::from_millis(STALL_MS) {
                stalls.push(format!(
                    "(c) payout {} is {} (attempt {}) and nobody drives it: no step for {STALL_MS} ms",
                    record.id(),
                    record.state,
                    record.attempt
                ));
            }
        }
        if open.is_empty() || now >= deadline || !stalls.is_empty() {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    };
    ticker.abort();
    (open, stalls)
}

/// Once every payout is settled, the processes must fall quiet: an actor that still calls
/// the journal or the ledger then works on a finished payout (for ever, as nothing will
/// change). Waits until no call came for `QUIET_MS`, at most `QUIET_WAIT_MS`; returns what
/// was still being called.
async fn quiet(shared: &Shared) -> Option<String> {
    let deadline = Instant::now() + Duration::from_millis(QUIET_WAIT_MS);
    let start = shared.calls();
    let mut last = start.clone();
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
        let now = shared.calls();
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        if last_change.elapsed() >= Duration::from_millis(QUIET_MS) {
            return None;
        }
        if Instant::now() >= deadline {
            let busy: Vec<String> = last
                .iter()
                .map(|(method, n)| (method, n - start.get(method).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .map(|(method, n)| format!("{method} ×{n}"))
                .collect();
            return Some(format!(
                "(c) every payout is settled, but calls go on for {QUIET_WAIT_MS} ms: {}",
                busy.join(", ")
            ));
        }
    }
}

/// Runs one scenario and returns every broken property (empty: the case passed).
async fn run_case(scenario: &Scenario) -> Vec<String> {
    let channels: Vec<AccountId> = (0..scenario.channels).map(channel).collect();
    let shared = Arc::new(Shared {
        journal: Arc::new(MemJournal::with_channels(&channels)),
        ledger: Arc::new(MemLedger::new(&channels)),
        ledger_down: AtomicBool::new(false),
        audit: Mutex::new(Audit::default()),
        write_lock: tokio::sync::Mutex::new(()),
        calls: Mutex::default(),
    });
    let mut processes = vec![start_process(&shared, scenario).await];
    let mut answers = Answers::default();
    for op in &scenario.ops {
        run_op(op, &shared, scenario, &mut processes, &mut answers).await;
    }

    // Heal: the journal and the ledger answer again; the last process finishes recovery.
    shared.journal.unavailable.store(false, Ordering::SeqCst);
    shared.ledger_down.store(false, Ordering::SeqCst);
    let mut violations = Vec::new();
    let current = processes.last_mut().expect("one process runs");
    let recovery = tokio::time::timeout(
        Duration::from_millis(SETTLE_TIMEOUT_MS),
        &mut current.recovery,
    )
    .await;
    if recovery.is_err() {
        violations.push("(c) recovery did not finish after the journal came back".into());
    }
    let (open, stalls) = settle(&shared, scenario).await;
    violations.extend(stalls);
    if open.is_empty()
        && let Some(busy) = quiet(&shared).await
    {
        if strict() {
            violations.push(busy);
        } else {
            eprintln!("tolerated (PAYOUTD_PROPS_STRICT=0): {busy}");
        }
    }
    for record in open {
        let events = shared.journal.events(record.id()).await.unwrap_or_default();
        let trail: Vec<String> = events
            .iter()
            .map(|e| format!("{}→{}", e.kind, e.state))
            .collect();
        violations.push(format!(
            "(c) payout {} never settled: {} (reason {:?}, attempt {}, envelope {:?}); trail {trail:?}",
            record.id(),
            record.state,
            record.reason,
            record.attempt,
            record.envelope
        ));
    }
    violations.extend(check(&shared, scenario, &answers).await);
    // `PAYOUTD_PROPS_TRACE=1`: one line per case, to see what the cases exercise.
    if std::env::var_os("PAYOUTD_PROPS_TRACE").is_some() {
        let mut states = Vec::new();
        for p in 0..scenario.payouts {
            states.push(load(&shared, p).await.map(|r| (r.state, r.attempt)));
        }
        eprintln!(
            "case: {} ops, {} processes, (state, attempt) per payout {states:?}",
            scenario.ops.len(),
            processes.len()
        );
    }
    // Frozen processes stay frozen; the runtime's end drops them with everything else.
    for process in processes
        .iter()
        .filter(|p| !p.frozen.load(Ordering::SeqCst))
    {
        process.payouts.shutdown(SHUTDOWN_TIMEOUT_MS).await;
    }
    violations
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

async fn check(shared: &Shared, scenario: &Scenario, answers: &Answers) -> Vec<String> {
    let mut violations = std::mem::take(&mut shared.audit().violations);
    let envelopes = shared.audit().envelopes.clone();
    for payout in 0..scenario.payouts {
        let id = payout_id(payout);
        let record = load(shared, payout).await;
        let stored = record.as_ref().map(|r| r.fingerprint);
        let variant_of = |fingerprint: Fingerprint| {
            [Variant::Original, Variant::Conflicting]
                .into_iter()
                .find(|v| request(payout, *v).fingerprint() == fingerprint)
        };

        // What callers were told.
        let mut created = 0;
        for (p, variant, answer) in answers.submits.iter().filter(|(p, ..)| *p == payout) {
            let sent = request(*p, *variant).fingerprint();
            match answer {
                Ok(a) => {
                    created += usize::from(matches!(a, SubmitAnswer::Created(_)));
                    if a.record().fingerprint != sent || stored != Some(sent) {
                        violations.push(format!(
                            "payout {id}: {variant:?} answered {} but the journal holds {:?}",
                            if matches!(a, SubmitAnswer::Created(_)) {
                                "created"
                            } else {
                                "duplicate"
                            },
                            stored.and_then(variant_of)
                        ));
                    }
                }
                Err(PayoutError::Conflict { .. }) if stored.is_some_and(|s| s != sent) => {}
                Err(e @ PayoutError::Conflict { .. }) => violations.push(format!(
                    "payout {id}: {variant:?} answered {e} but the journal holds {:?}",
                    stored.and_then(variant_of)
                )),
                Err(PayoutError::Unavailable(_) | PayoutError::Overloaded) => {}
                Err(e) => violations.push(format!("payout {id}: submit answered {e}")),
            }
        }
        if created > 1 {
            violations.push(format!("payout {id}: created {created} times"));
        }
        for (_, answer) in answers.cancels.iter().filter(|(p, _)| *p == payout) {
            if let Ok(r) = answer
                && r.state != PayoutState::Cancelled
            {
                violations.push(format!("payout {id}: cancel answered state {}", r.state));
            }
            if answer.is_ok() && record.as_ref().map(|r| r.state) != Some(PayoutState::Cancelled) {
                violations.push(format!(
                    "payout {id}: cancelled for the caller, but the journal says {:?}",
                    record.as_ref().map(|r| r.state)
                ));
            }
        }

        let Some(record) = record else {
            if envelopes.contains_key(&id) {
                violations.push(format!("payout {id}: envelopes without a payout"));
            }
            continue;
        };

        // (a) At most one payment, and the state says which.
        let paid = shared.ledger.payments_for(&record.request);
        let other = match variant_of(record.fingerprint) {
            Some(Variant::Original) => request(payout, Variant::Conflicting),
            _ => request(payout, Variant::Original),
        };
        let paid_other = shared.ledger.payments_for(&other);
        let expected = match record.state {
            PayoutState::Confirmed => paid == 1,
            PayoutState::Failed | PayoutState::Cancelled => paid == 0,
            _ => paid <= 1,
        };
        if !expected || paid_other != 0 {
            violations.push(format!(
                "(a) payout {id} is {} with {paid} payment(s) ({paid_other} of the conflicting content)",
                record.state
            ));
        }

        // (b) Every journaled envelope but the current one can never apply; the current
        // one, if confirmed, is the applied one.
        let journaled = envelopes.get(&id).cloned().unwrap_or_default();
        let current = record.envelope.as_ref().map(|e| e.hash);
        for envelope in &journaled {
            let fate = fate(&shared.ledger, envelope).await;
            let is_current = Some(envelope.hash) == current;
            let ok = match (is_current, record.state) {
                (true, PayoutState::Confirmed) => fate == Fate::Applied,
                (true, PayoutState::Failed) => fate == Fate::IncludedFailed,
                (true, _) => true,
                (false, _) => matches!(fate, Fate::IncludedFailed | Fate::Dead),
            };
            if !ok {
                violations.push(format!(
                    "(b) payout {id} is {}: envelope {} (current: {is_current}) is {fate:?}",
                    record.state, envelope.hash
                ));
            }
        }
        if let Some(hash) = current
            && !journaled.iter().any(|e| e.hash == hash)
        {
            violations.push(format!(
                "(b) payout {id}: current envelope {hash} was never journaled"
            ));
        }
        // A confirmed or failed payout gave its channel back. (Not checked for `Cancelled`:
        // `Change::apply_to` leaves `record.channel` set when cancelling after an
        // `EnvelopeDead`, although the lease itself is released — reported, not ours.)
        let released = matches!(record.state, PayoutState::Confirmed | PayoutState::Failed);
        if released && record.channel.is_some() {
            violations.push(format!(
                "payout {id} is {} but keeps its channel",
                record.state
            ));
        }
        if released && let Some(held) = shared.journal.lease_of(&id) {
            violations.push(format!(
                "payout {id} is {} but still leases {held:?}",
                record.state
            ));
        }

        // The trail: versions grow, and nothing follows a terminal state.
        let events = shared.journal.events(&id).await.unwrap_or_default();
        for pair in events.windows(2) {
            if pair[1].version <= pair[0].version || pair[0].state.is_terminal() {
                violations.push(format!(
                    "payout {id}: event {} (v{}, {}) follows {} (v{}, {})",
                    pair[1].kind,
                    pair[1].version,
                    pair[1].state,
                    pair[0].kind,
                    pair[0].version,
                    pair[0].state
                ));
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    // `default()` reads the PROPTEST_* variables; the case count and seed get our defaults
    // unless they are set.
    let defaults = ProptestConfig::default();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        defaults.rng_seed
    } else {
        RngSeed::Fixed(DEFAULT_SEED)
    };
    ProptestConfig {
        cases,
        rng_seed,
        failure_persistence: None,
        max_shrink_time: SHRINK_TIME_MAX_MS,
        ..defaults
    }
}

/// Scripted panics come by the hundred and are expected: keep them out of the output
/// (any other panic is reported as usual).
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("scripted panic"));
            if !scripted {
                report(info);
            }
        }));
    });
}

fn run(scenario: &Scenario) -> Vec<String> {
    quiet_scripted_panics();
    // A runtime per case: dropping it ends every task of the case, frozen ones included.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let violations = runtime.block_on(run_case(scenario));
    runtime.shutdown_timeout(Duration::from_millis(SHUTDOWN_TIMEOUT_MS));
    violations
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn exactly_once_under_faults_crashes_and_duplicates(scenario in scenario()) {
        let violations = run(&scenario);
        prop_assert!(violations.is_empty(), "{}", violations.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------
// The fake ledger's scripted inclusion as failed, which the properties rely on
// ---------------------------------------------------------------------------------------

fn spec(source: AccountId, sequence: i64, max_time: u64) -> TxSpec {
    let request = request(0, Variant::Original);
    TxSpec {
        source,
        sequence,
        fee_stroops: 100,
        max_time,
        ledger_bounds: None,
        payer: AccountId::parse(PAYER).expect("valid payer"),
        destination: *request.destination(),
        asset: Asset::Native,
        amount: request.amount(),
        memo: Memo::Id(7),
    }
}

#[tokio::test]
async fn included_failure_consumes_the_sequence_and_is_found_again() {
    let source = channel(0);
    let ledger = MemLedger::new(&[source]);
    let start = ledger.account_sequence(&source).await.unwrap().unwrap();
    let envelope = ledger
        .build_and_sign(&spec(source, start + 1, 2_000))
        .unwrap();
    ledger.script(Scripted::IncludeFailed {
        op_codes: vec!["op_no_trust".into()],
    });
    let first = ledger.submit(&envelope).await;
    assert!(
        matches!(&first, SubmitOutcome::Failed { op_codes, .. } if op_codes == &["op_no_trust"]),
        "{first:?}"
    );
    assert_eq!(
        ledger.account_sequence(&source).await.unwrap(),
        Some(start + 1)
    );
    // The duplicate rule: the same envelope answers the same failure; a lookup finds it.
    assert_eq!(ledger.submit(&envelope).await, first);
    assert!(matches!(
        ledger.lookup(&envelope.hash).await.unwrap(),
        Lookup::Failed { .. }
    ));
    assert_eq!(fate(&ledger, &envelope).await, Fate::IncludedFailed);
}

#[tokio::test]
async fn scripted_failure_of_an_invalid_envelope_is_a_rejection() {
    let source = channel(0);
    let ledger = MemLedger::new(&[source]);
    let start = ledger.account_sequence(&source).await.unwrap().unwrap();
    let too_high = ledger
        .build_and_sign(&spec(source, start + 2, 2_000))
        .unwrap();
    ledger.script(Scripted::IncludeFailed {
        op_codes: vec!["op_underfunded".into()],
    });
    assert_eq!(
        ledger.submit(&too_high).await,
        SubmitOutcome::Rejected {
            code: "tx_bad_seq".into()
        }
    );
    assert_eq!(ledger.account_sequence(&source).await.unwrap(), Some(start));
    assert_eq!(
        fate(&ledger, &too_high).await,
        Fate::Live,
        "bad_seq too high may still apply"
    );
    ledger.bump_sequence(&source, 1);
    assert_eq!(
        fate(&ledger, &too_high).await,
        Fate::Live,
        "now it is the next one"
    );
    ledger.bump_sequence(&source, 1);
    assert_eq!(
        fate(&ledger, &too_high).await,
        Fate::Dead,
        "its sequence is consumed"
    );
    let expiring = ledger
        .build_and_sign(&spec(source, start + 3, 1_001))
        .unwrap();
    assert_eq!(fate(&ledger, &expiring).await, Fate::Live);
    ledger.advance(1);
    assert_eq!(
        fate(&ledger, &expiring).await,
        Fate::Dead,
        "a ledger closed at max_time"
    );
}

// ---------------------------------------------------------------------------------------
// A bug found by the property above (now fixed): a payout created (or driven) while its actor is
// draining for passivation is never driven again. The actor's idle check asks to passivate;
// a `Submit` routed before the supervisor starts the drain is still handled, creates the
// payout and schedules its next step on the actor's own mailbox, which the drain has
// closed: the step is dropped, the actor stops, and the payout stays `accepted` or
// `prepared` until the next process start recovers it. Fixed: an actor that stops with an
// unfinished payout hands it back to the supervisor (`post_stop`).
// ---------------------------------------------------------------------------------------

/// Payouts in this reproducer (one channel each: a stuck `prepared` payout keeps its lease,
/// and with fewer channels every later payout would wait for one); a few of them hit the
/// race on a 2-core machine.
const RACE_PAYOUTS: u32 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_racing_passivation_is_still_driven() {
    let channels: Vec<AccountId> = (0..RACE_PAYOUTS as usize).map(channel).collect();
    let journal = Arc::new(MemJournal::with_channels(&channels));
    let ledger = Arc::new(MemLedger::new(&channels));
    let mut policy = PayoutPolicy::new(AccountId::parse(PAYER).expect("valid payer"));
    policy.idle_passivate_ms = 5;
    policy.poll_interval_ms = 2;
    policy.io_retry_ms = 2;
    policy.channel_wait_ms = 2;
    let ctx = Arc::new(Context {
        journal: journal.clone(),
        ledger: ledger.clone(),
        policy,
        metrics: Arc::new(Metrics::default()),
    });
    let (payouts, _) = Payouts::start(ctx, SupervisorConfig::default(), CALL_TIMEOUT_MS)
        .await
        .expect("the supervisor starts");
    let mut ids = Vec::new();
    for i in 0..RACE_PAYOUTS {
        let id = PayoutId::parse(&format!("race-{i}")).expect("valid id");
        // An actor that knows there is no such payout: idle, so it will passivate…
        assert_eq!(payouts.get(&id).await.expect("answers"), None);
        // …at about `idle_passivate_ms`; the submit lands just before, at, or after it.
        let delay_us = 4_000 + u64::from(i % 40) * 50;
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        let request = PayoutRequest::new(
            id.clone(),
            Destination::parse(DEST).expect("valid destination"),
            Asset::Native,
            Amount::from_stroops(1 + i64::from(i)).expect("positive"),
            Memo::None,
        );
        let answer = payouts.submit(request).await;
        assert!(matches!(answer, Ok(SubmitAnswer::Created(_))), "{answer:?}");
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    let stuck = loop {
        let mut stuck = Vec::new();
        for id in &ids {
            let record = journal.load(id).await.expect("up").expect("stored");
            if record.state != PayoutState::Confirmed {
                stuck.push((id.to_string(), record.state));
            }
        }
        if stuck.is_empty() || Instant::now() >= deadline {
            break stuck;
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    };
    assert!(
        stuck.is_empty(),
        "{} of {RACE_PAYOUTS} payouts never driven again: {stuck:?}",
        stuck.len()
    );
}

// ---------------------------------------------------------------------------------------
// A bug found by the property above (now fixed): with two instances, an actor holding a stale
// `accepted` record asks for a channel lease after the other instance confirmed the payout
// (which released its channel). `lease_channel` does not look at the payout's state, so the
// channel is leased again — to a confirmed payout, for good: the actor's next write is
// fenced out (stale), it reloads, sees `confirmed` and stops, and nothing releases the
// lease. Each such race took one channel out of the pool. Fixed: a lease is only granted to
// an `accepted` payout, and a channel held by a finished payout counts as free (both
// journals).
// ---------------------------------------------------------------------------------------

/// Two instances on one journal and one ledger. The slow one cannot reach the ledger: it
/// reads the payout `accepted`, leases the channel and retries. The fast one pays it
/// (confirming releases the channel). Then the slow one reaches the ledger again, with its
/// stale record. Returns the slow instance's ports, the journal and the payout id; the
/// processes live as long as the returned vector.
async fn stale_beside_finished() -> (Arc<Shared>, Arc<MemJournal>, PayoutId, Vec<Process>) {
    let scenario = Scenario {
        payouts: 1,
        channels: 1,
        attempts_max: 5,
        idle_passivate_ms: 60_000,
        live_actors_max: 1_000,
        restart_intensity: 3,
        ledger_latency_ms: 0,
        ops: Vec::new(),
    };
    let channels = [channel(0)];
    let (journal, ledger) = (
        Arc::new(MemJournal::with_channels(&channels)),
        Arc::new(MemLedger::new(&channels)),
    );
    let instance = |ledger_down: bool| {
        Arc::new(Shared {
            journal: journal.clone(),
            ledger: ledger.clone(),
            ledger_down: AtomicBool::new(ledger_down),
            audit: Mutex::new(Audit::default()),
            write_lock: tokio::sync::Mutex::new(()),
            calls: Mutex::default(),
        })
    };
    let (slow, fast) = (instance(true), instance(false));
    let request = request(0, Variant::Original);
    journal
        .accept(&request, request.fingerprint())
        .await
        .expect("stored");
    let id = payout_id(0);
    let mut processes = vec![start_process(&slow, &scenario).await];
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    while journal.lease_of(&id).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
    assert!(journal.lease_of(&id).is_some(), "the slow instance leased");
    processes.push(start_process(&fast, &scenario).await);
    let confirmed = loop {
        let record = journal.load(&id).await.expect("up").expect("stored");
        if record.state == PayoutState::Confirmed || Instant::now() >= deadline {
            break record.state == PayoutState::Confirmed;
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    };
    assert!(confirmed, "the fast instance confirmed");
    slow.ledger_down.store(false, Ordering::SeqCst);
    (slow, journal, id, processes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_instance_does_not_lease_for_a_finished_payout() {
    let (_slow, journal, id, _processes) = stale_beside_finished().await;
    // The lease must be free within a few of the slow instance's steps.
    let deadline = Instant::now() + Duration::from_millis(STALL_MS);
    while journal.lease_of(&id).is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
    assert_eq!(
        journal.lease_of(&id),
        None,
        "a confirmed payout holds no channel"
    );
}

// ---------------------------------------------------------------------------------------
// A bug found by the property above once the lease fix was in (now fixed): the slow instance's
// actor, holding its stale `accepted` record, is now refused a channel (the payout is not
// `accepted` any more) and takes that for "every channel is busy": it waits for one, asks
// again, for ever, without reloading the record — so it never learns the payout is
// finished, never passivates, and asks the journal for a lease every `channel_wait_ms` (or
// on every wake-up) until the process stops. Fixed: a refused lease re-reads the record.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_instance_learns_that_the_payout_is_finished() {
    let (slow, _journal, _id, _processes) = stale_beside_finished().await;
    assert_eq!(quiet(&slow).await, None);
}
