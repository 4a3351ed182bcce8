//! The exactly-once protocol end to end: real Postgres journal, the real Stellar adapter
//! (stellar-xdr envelopes, ed25519, the Horizon or the RPC client) talking HTTP to the
//! ledger simulator, whose ledger the tests close by hand. Every test asserts "paid exactly
//! once" on the simulated ledger, and runs twice: over Horizon and over Stellar RPC (the
//! simulator serves both; see `over_both!` at the end). RPC-only cases are in rpc.rs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use payoutd_actors::domain::{
    AccountId, Amount, Asset, Destination, Memo, PayoutId, PayoutRequest,
};
use payoutd_actors::ports::{
    Envelope, Ledger, LedgerError, LedgerHead, Lookup, PayoutStore, SequenceRead, SubmitOutcome,
    TxHash, TxSpec,
};
use payoutd_actors::state::{PayoutRecord, PayoutState};
use payoutd_actors::{PayoutPolicy, Payouts};
use payoutd_simulator::{
    CloseMode, Faults, PaymentFilter, RejectNext, SimConfig, SimHandle, Simulator,
};
use payoutd_stellar::{HorizonTimeouts, Keypair, Keyring, RpcLedger, RpcTimeouts, StellarLedger};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::helpers::{pg_journal, start_core};

pub(crate) const PASSPHRASE: &str = "Test SDF Network ; September 2015";
pub(crate) const XLM: i64 = 10_000_000;

pub(crate) fn keypair(label: &str) -> Keypair {
    let seed: [u8; 32] = Sha256::digest(format!("payoutd test key {label}").as_bytes()).into();
    Keypair::from_seed(&payoutd_actors::strkey::encode(
        payoutd_actors::strkey::VERSION_SEED,
        &seed,
    ))
    .unwrap()
}

/// Which of the simulator's two interfaces the ledger adapter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Horizon,
    Rpc,
}

pub(crate) struct Stack {
    pub sim: SimHandle,
    pub journal: Arc<payoutd::storage::PgJournal>,
    pub payouts: Payouts,
    pub metrics: Arc<payoutd_actors::metrics::Metrics>,
    pub distribution: AccountId,
    pub channels: Vec<AccountId>,
    pub destination: AccountId,
    pub policy: PayoutPolicy,
}

pub(crate) struct StackOptions {
    pub api: Api,
    pub channels: usize,
    pub tx_validity_s: u64,
    pub payments_per_tx_max: usize,
    pub batch_linger_ms: u64,
    /// The simulator's RPC history window, in ledgers.
    pub rpc_retention_ledgers: u32,
    pub destinations: payoutd_actors::destinations::DestinationPolicy,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            api: Api::Horizon,
            channels: 2,
            tx_validity_s: 60,
            payments_per_tx_max: 100,
            batch_linger_ms: 5,
            rpc_retention_ledgers: payoutd_simulator::config::DEFAULT_RPC_RETENTION_LEDGERS,
            destinations: Default::default(),
        }
    }
}

impl StackOptions {
    pub(crate) fn over(api: Api) -> Self {
        Self {
            api,
            ..Self::default()
        }
    }
}

fn rpc_timeouts() -> RpcTimeouts {
    RpcTimeouts {
        rpc_timeout_ms: 5_000,
        rpc_connect_timeout_ms: 1_000,
        rpc_retry_after_max_ms: 5_000,
    }
}

/// The simulator's JSON-RPC endpoint.
pub(crate) fn rpc_url(sim: &SimHandle) -> String {
    format!("{}/rpc", sim.base_url)
}

/// A new RPC adapter on the simulator (tests that read its answer counts keep it).
pub(crate) async fn rpc_ledger(sim: &SimHandle, ring: Keyring) -> Arc<RpcLedger> {
    Arc::new(
        RpcLedger::connect(&rpc_url(sim), PASSPHRASE, ring, rpc_timeouts())
            .await
            .unwrap(),
    )
}

/// A new ledger adapter on the simulator, over `api`.
pub(crate) async fn connect_ledger(api: Api, sim: &SimHandle, ring: Keyring) -> Arc<dyn Ledger> {
    match api {
        Api::Horizon => Arc::new(
            StellarLedger::connect(&sim.base_url, PASSPHRASE, ring, timeouts())
                .await
                .unwrap(),
        ),
        Api::Rpc => rpc_ledger(sim, ring).await,
    }
}

pub(crate) fn timeouts() -> HorizonTimeouts {
    HorizonTimeouts {
        request_timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
    }
}

pub(crate) fn keyring(n_channels: usize) -> (Keyring, AccountId, Vec<AccountId>) {
    let mut ring = Keyring::new();
    let dist = keypair("distribution");
    let distribution = dist.account();
    ring.insert(dist);
    let mut channels = Vec::new();
    for i in 0..n_channels {
        let c = keypair(&format!("channel {i}"));
        channels.push(c.account());
        ring.insert(c);
    }
    (ring, distribution, channels)
}

pub(crate) async fn stack(opts: StackOptions) -> Stack {
    let sim = Simulator::new(SimConfig {
        network_passphrase: PASSPHRASE.into(),
        close_mode: CloseMode::Manual,
        submit_wait_ms: 1_000,
        seed: 7,
        genesis_close_time: Some(1_700_000_000),
        close_time_step_s: 5,
        rpc_retention_ledgers: opts.rpc_retention_ledgers,
        ..SimConfig::default()
    })
    .unwrap();
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let (ring, distribution, channels) = keyring(opts.channels);
    sim.create_account(&distribution.to_strkey(), 1_000_000 * XLM)
        .unwrap();
    for c in &channels {
        sim.create_account(&c.to_strkey(), 100 * XLM).unwrap();
    }
    let destination = keypair("destination").account();
    sim.create_account(&destination.to_strkey(), 10 * XLM)
        .unwrap();
    let ledger = connect_ledger(opts.api, &handle, ring).await;
    let journal = pg_journal().await;
    let mut policy = PayoutPolicy::new(distribution);
    policy.poll_interval_ms = 20;
    policy.io_retry_ms = 20;
    policy.batch_linger_ms = opts.batch_linger_ms;
    policy.tx_validity_s = opts.tx_validity_s;
    policy.payments_per_tx_max = opts.payments_per_tx_max;
    policy.destinations = opts.destinations;
    let (payouts, metrics) = start_core(
        journal.clone(),
        ledger,
        "stellar-test",
        channels.clone(),
        policy.clone(),
    )
    .await;
    Stack {
        sim: handle,
        journal,
        payouts,
        metrics,
        distribution,
        channels,
        destination,
        policy,
    }
}

pub(crate) async fn start_payouts(
    journal: Arc<payoutd::storage::PgJournal>,
    ledger: Arc<dyn Ledger>,
    policy: PayoutPolicy,
    channels: Vec<AccountId>,
) -> Payouts {
    start_core(journal, ledger, "stellar-test", channels, policy)
        .await
        .0
}

/// What the journal's envelope log says of one envelope.
pub(crate) struct EnvelopeRow {
    pub source: String,
    pub sequence: i64,
    pub max_time: u64,
    pub fee: i64,
}

impl Stack {
    pub(crate) fn sim(&self) -> &Arc<Simulator> {
        &self.sim.sim
    }

    pub(crate) fn request(&self, id: &str, amount: &str) -> PayoutRequest {
        PayoutRequest::new(
            PayoutId::parse(id).unwrap(),
            Destination::Account(self.destination),
            Asset::Native,
            Amount::parse(amount).unwrap(),
            None,
        )
    }

    /// Successful payments on the simulated ledger with this payout's destination, asset
    /// and amount (every test gives its payouts distinct amounts).
    pub(crate) fn payments(&self, req: &PayoutRequest) -> usize {
        self.sim()
            .payments(&PaymentFilter {
                memo: None,
                destination: Some(req.destination().to_strkey()),
            })
            .iter()
            .filter(|p| {
                p.amount_stroops == req.amount().stroops()
                    && p.destination == req.destination().to_strkey()
                    && (p.asset == req.asset().to_string()
                        || (p.asset == "native" && *req.asset() == Asset::Native))
            })
            .count()
    }

    pub(crate) async fn envelope(&self, hash: &TxHash) -> EnvelopeRow {
        let row =
            sqlx::query("SELECT source, sequence, max_time, fee FROM envelopes WHERE tx_hash = $1")
                .bind(hash.to_hex())
                .fetch_one(self.journal.pool())
                .await
                .unwrap();
        EnvelopeRow {
            source: row.get("source"),
            sequence: row.get("sequence"),
            max_time: row.get::<i64, _>("max_time") as u64,
            fee: i64::from(row.get::<i32, _>("fee")),
        }
    }

    pub(crate) async fn record(&self, id: &str) -> PayoutRecord {
        self.journal
            .load(&PayoutId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// Closes a ledger whenever a transaction is pending until the payout reaches `state`.
    pub(crate) async fn run_until(&self, id: &str, state: PayoutState) -> PayoutRecord {
        for _ in 0..1_500 {
            let r = self.record(id).await;
            if r.state == state {
                return r;
            }
            if self.sim().pending_count() > 0 {
                self.sim().close_ledger();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "payout {id} never reached {state}: {:?}",
            self.record(id).await
        );
    }

    /// Closes ledgers until one closes past `max_time`.
    pub(crate) fn close_past(&self, max_time: u64) {
        while self.sim().latest_ledger().close_time <= max_time {
            self.sim().close_ledger();
        }
    }
}

pub(crate) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn pays_once_with_a_channel_account_and_journals_the_real_hash(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    let req = s.request("sim-happy", "12.5");
    s.payouts.submit(req.clone()).await.unwrap();
    let rec = s.run_until("sim-happy", PayoutState::Confirmed).await;
    assert_eq!(s.payments(&req), 1);
    let env = rec.envelope.unwrap();
    assert!(
        s.sim().transaction(&env.hash.to_hex()).is_some(),
        "the journaled hash is the ledger's hash"
    );
    let row = s.envelope(&env.hash).await;
    assert!(
        s.channels.iter().any(|c| c.to_strkey() == row.source),
        "sourced from a channel account"
    );
    assert_eq!(
        s.sim().balance(&s.destination.to_strkey(), None),
        Some(10 * XLM + 125_000_000)
    );
    assert_eq!(rec.inclusion.unwrap().fee_charged, 100);
    // A duplicate after confirmation pays nothing.
    s.payouts.submit(req.clone()).await.unwrap();
    s.sim().close_ledger();
    assert_eq!(s.payments(&req), 1);
}

async fn credit_asset_to_a_muxed_destination_with_a_memo(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    let issuer = keypair("issuer").account();
    s.sim()
        .create_account(&issuer.to_strkey(), 10 * XLM)
        .unwrap();
    for acct in [s.distribution, s.destination] {
        s.sim()
            .add_trustline(
                &acct.to_strkey(),
                "USDC",
                &issuer.to_strkey(),
                1_000_000 * XLM,
            )
            .unwrap();
    }
    s.sim()
        .credit(
            &s.distribution.to_strkey(),
            "USDC",
            &issuer.to_strkey(),
            1_000 * XLM,
        )
        .unwrap();
    let req = PayoutRequest::new(
        PayoutId::parse("sim-usdc").unwrap(),
        Destination::Muxed {
            account: s.destination,
            id: 42,
        },
        Asset::parse(&format!("USDC:{issuer}")).unwrap(),
        Amount::parse("12.5").unwrap(),
        Some(Memo::Text("invoice 7".into())),
    );
    s.payouts.submit(req.clone()).await.unwrap();
    s.run_until("sim-usdc", PayoutState::Confirmed).await;
    assert_eq!(s.payments(&req), 1);
    assert_eq!(
        s.sim().balance(
            &s.destination.to_strkey(),
            Some(("USDC", &issuer.to_strkey()))
        ),
        Some(125_000_000)
    );
}

async fn server_errors_before_apply_are_retried_and_pay_once(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    s.sim().set_faults(Faults {
        p_5xx_before_apply: 1.0,
        ..Faults::default()
    });
    let req = s.request("sim-5xx", "1");
    s.payouts.submit(req.clone()).await.unwrap();
    wait_for("three 5xx answers", || {
        s.sim().fault_counts().server_errors_before_apply >= 3
    })
    .await;
    assert_eq!(s.payments(&req), 0);
    s.sim().set_faults(Faults::default());
    let rec = s.run_until("sim-5xx", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1, "the same envelope was resubmitted");
    assert_eq!(s.payments(&req), 1);
}

async fn lost_answers_after_apply_never_pay_twice(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    s.sim().set_faults(Faults {
        p_lose_answer_after_apply: 1.0,
        latency_ms: 5,
        ..Faults::default()
    });
    let reqs: Vec<_> = (0..4)
        .map(|i| s.request(&format!("sim-lost-{i}"), &format!("2.{i}")))
        .collect();
    for r in &reqs {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    for r in &reqs {
        let rec = s
            .run_until(r.payout_id().as_str(), PayoutState::Confirmed)
            .await;
        assert_eq!(rec.attempt, 1);
        assert_eq!(s.payments(r), 1);
    }
    // Batched: one transaction (or a few) carried them, each answer lost.
    assert!(s.sim().fault_counts().answers_lost_after_apply >= 1);
}

/// A ledger port that submits for real and then never answers: the process "dies" after
/// the transaction reached the network and before the answer was journaled.
pub(crate) struct DiesAfterSubmit(pub Arc<dyn Ledger>);

#[async_trait]
impl Ledger for DiesAfterSubmit {
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError> {
        self.0.build_and_sign(spec)
    }
    fn can_sign(&self, account: &AccountId) -> bool {
        self.0.can_sign(account)
    }
    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome {
        let _ = self.0.submit(envelope).await;
        std::future::pending().await
    }
    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError> {
        self.0.lookup(hash).await
    }
    async fn account_sequence(&self, account: &AccountId) -> Result<SequenceRead, LedgerError> {
        self.0.account_sequence(account).await
    }
    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError> {
        self.0.latest_ledger().await
    }
}

async fn answer_lost_then_killed_and_restarted_recovers_without_a_second_payment(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    let (ring, _, _) = keyring(2);
    let real = connect_ledger(api, &s.sim, ring).await;
    // The first "process" applies the payment and dies before recording the answer.
    // The stack's own instance stops first: this test runs its two "processes" itself.
    s.payouts.shutdown(1_000).await;
    let doomed = start_payouts(
        s.journal.clone(),
        Arc::new(DiesAfterSubmit(real.clone())),
        s.policy.clone(),
        s.channels.clone(),
    )
    .await;
    s.sim().set_faults(Faults {
        p_lose_answer_after_apply: 1.0,
        ..Faults::default()
    });
    let req = s.request("sim-crash", "3");
    doomed.submit(req.clone()).await.unwrap();
    wait_for("the transaction to be pending", || {
        s.sim().pending_count() > 0
    })
    .await;
    s.sim().close_ledger();
    wait_for("the payment to be applied", || s.payments(&req) == 1).await;
    doomed.shutdown(1_000).await;
    let rec = s.record("sim-crash").await;
    assert!(
        rec.holds_envelope(),
        "the journal does not know the answer: {:?}",
        rec.state
    );
    // The second "process" recovers: same envelope, found applied, paid once.
    s.sim().set_faults(Faults::default());
    let _second = start_payouts(
        s.journal.clone(),
        real,
        s.policy.clone(),
        s.channels.clone(),
    )
    .await;
    let rec = s.run_until("sim-crash", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1);
    assert_eq!(s.payments(&req), 1);
}

async fn bad_seq_too_high_waits_until_dead_then_rebuilds_once(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        tx_validity_s: 20,
        ..StackOptions::default()
    })
    .await;
    let channel = s.channels[0].to_strkey();
    let req = s.request("sim-badseq", "1");
    s.payouts.submit(req.clone()).await.unwrap();
    wait_for("the transaction to be pending", || {
        s.sim().pending_count() > 0
    })
    .await;
    // The channel's sequence drops below the envelope's: the envelope's number is now too
    // high. It may become valid again, so it must not be replaced before it is dead.
    let seq = s.sim().account_sequence(&channel).unwrap();
    s.sim().set_account_sequence(&channel, seq - 3).unwrap();
    s.sim().close_ledger();
    let first = s.record("sim-badseq").await;
    let env = first.envelope.unwrap();
    let rec = loop {
        let r = s.record("sim-badseq").await;
        if r.state == PayoutState::Submitted {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        rec.envelope.as_ref().map(|e| e.hash),
        Some(env.hash),
        "not rebuilt while it could still apply"
    );
    assert_eq!(rec.attempt, 1);
    s.close_past(s.envelope(&env.hash).await.max_time);
    let rec = s.run_until("sim-badseq", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 2, "rebuilt once, after it was dead");
    assert_eq!(s.payments(&req), 1);
}

async fn expiry_new_envelope_only_after_a_ledger_past_max_time(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        tx_validity_s: 30,
        ..StackOptions::default()
    })
    .await;
    s.sim().set_faults(Faults {
        p_5xx_before_apply: 1.0,
        ..Faults::default()
    });
    let req = s.request("sim-expiry", "1");
    s.payouts.submit(req.clone()).await.unwrap();
    wait_for("a 5xx", || {
        s.sim().fault_counts().server_errors_before_apply >= 1
    })
    .await;
    let env = s.record("sim-expiry").await.envelope.unwrap();
    let max_time = s.envelope(&env.hash).await.max_time;
    // Close ledgers up to max_time, never past it: still the same envelope.
    while s.sim().latest_ledger().close_time + 5 <= max_time {
        s.sim().close_ledger();
    }
    let before = s.sim().fault_counts().server_errors_before_apply;
    wait_for("more resubmissions", || {
        s.sim().fault_counts().server_errors_before_apply >= before + 3
    })
    .await;
    let rec = s.record("sim-expiry").await;
    assert_eq!(
        (rec.attempt, rec.envelope.map(|e| e.hash)),
        (1, Some(env.hash))
    );
    // One ledger past max_time: now, and only now, a second envelope.
    s.sim().close_ledger();
    assert!(s.sim().latest_ledger().close_time > max_time);
    s.sim().set_faults(Faults::default());
    let rec = s.run_until("sim-expiry", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 2);
    assert_ne!(rec.envelope.unwrap().hash, env.hash);
    assert_eq!(s.payments(&req), 1);
}

async fn op_no_destination_fails_for_good_with_the_reason(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    let nowhere = keypair("nobody").account();
    let req = PayoutRequest::new(
        PayoutId::parse("sim-nodest").unwrap(),
        Destination::Account(nowhere),
        Asset::Native,
        Amount::parse("1").unwrap(),
        None,
    );
    s.payouts.submit(req.clone()).await.unwrap();
    let rec = s.run_until("sim-nodest", PayoutState::Failed).await;
    assert!(
        rec.reason.as_deref().unwrap().contains("op_no_destination"),
        "{:?}",
        rec.reason
    );
    assert!(rec.inclusion.is_some(), "the fee was consumed in a ledger");
    assert_eq!(s.payments(&req), 0);
}

async fn insufficient_fee_keeps_the_envelope_until_dead_then_doubles_the_fee(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        tx_validity_s: 20,
        ..StackOptions::default()
    })
    .await;
    s.sim().set_base_fee(200);
    let req = s.request("sim-fee", "1");
    s.payouts.submit(req.clone()).await.unwrap();
    let rec = loop {
        let r = s.record("sim-fee").await;
        if r.state == PayoutState::Submitted {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let env = s.envelope(&rec.envelope.unwrap().hash).await;
    assert_eq!(env.fee, 100);
    s.close_past(env.max_time);
    let rec = s.run_until("sim-fee", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 2);
    assert_eq!(s.envelope(&rec.envelope.unwrap().hash).await.fee, 200);
    assert_eq!(s.payments(&req), 1);
}

async fn chosen_rejections_are_retried_with_the_same_bytes(api: Api) {
    let s = stack(StackOptions::over(api)).await;
    s.sim().set_faults(Faults {
        reject_next: Some(RejectNext {
            code: "tx_too_early".into(),
            count: 2,
        }),
        ..Faults::default()
    });
    let req = s.request("sim-reject", "1");
    s.payouts.submit(req.clone()).await.unwrap();
    let rec = s.run_until("sim-reject", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1);
    assert_eq!(s.sim().fault_counts().rejected_by_code, 2);
    assert_eq!(s.payments(&req), 1);
}

async fn two_payouts_at_once_share_one_transaction(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        ..StackOptions::default()
    })
    .await;
    let a = s.request("sim-race-a", "1");
    let b = s.request("sim-race-b", "2");
    let (ra, rb) = tokio::join!(s.payouts.submit(a.clone()), s.payouts.submit(b.clone()));
    ra.unwrap();
    rb.unwrap();
    let rec_a = s.run_until("sim-race-a", PayoutState::Confirmed).await;
    let rec_b = s.run_until("sim-race-b", PayoutState::Confirmed).await;
    assert_eq!((s.payments(&a), s.payments(&b)), (1, 1));
    let (ea, eb) = (rec_a.envelope.unwrap(), rec_b.envelope.unwrap());
    assert_eq!(ea.hash, eb.hash, "one transaction");
    assert_ne!(ea.op_index, eb.op_index, "one operation each");
    let tx = s.sim().transaction(&ea.hash.to_hex()).unwrap();
    assert_eq!(tx.operation_count, 2);
}

async fn one_payment_per_transaction_uses_one_sequence_number_each(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        payments_per_tx_max: 1,
        ..StackOptions::default()
    })
    .await;
    let a = s.request("sim-one-a", "1");
    let b = s.request("sim-one-b", "2");
    let (ra, rb) = tokio::join!(s.payouts.submit(a.clone()), s.payouts.submit(b.clone()));
    ra.unwrap();
    rb.unwrap();
    let rec_a = s.run_until("sim-one-a", PayoutState::Confirmed).await;
    let rec_b = s.run_until("sim-one-b", PayoutState::Confirmed).await;
    assert_eq!((s.payments(&a), s.payments(&b)), (1, 1));
    let ea = s.envelope(&rec_a.envelope.unwrap().hash).await;
    let eb = s.envelope(&rec_b.envelope.unwrap().hash).await;
    assert_eq!(ea.source, eb.source);
    assert_ne!(ea.sequence, eb.sequence, "one after the other");
}

async fn a_batch_whose_third_operation_fails_settles_each_payout_by_its_own_code(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        // Long enough for the three payouts below to join one batch.
        batch_linger_ms: 500,
        ..StackOptions::default()
    })
    .await;
    let nowhere = keypair("nobody in a batch").account();
    let a = s.request("sim-batch-a", "1.1");
    let b = s.request("sim-batch-b", "1.2");
    let c = PayoutRequest::new(
        PayoutId::parse("sim-batch-c").unwrap(),
        Destination::Account(nowhere),
        Asset::Native,
        Amount::parse("1.3").unwrap(),
        None,
    );
    for r in [&a, &b, &c] {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    let failed = s.run_until("sim-batch-c", PayoutState::Failed).await;
    let first = failed
        .envelope
        .expect("the failed payout keeps its envelope");
    assert_eq!(first.op_index, 2, "the third operation of the transaction");
    let tx = s.sim().transaction(&first.hash.to_hex()).unwrap();
    assert_eq!(tx.operation_count, 3, "one transaction carried all three");
    assert!(!tx.successful);
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("op_no_destination"),
        "{:?}",
        failed.reason
    );
    for r in [&a, &b] {
        let rec = s
            .run_until(r.payout_id().as_str(), PayoutState::Confirmed)
            .await;
        assert_eq!(s.payments(r), 1, "{}", r.payout_id());
        assert_eq!(
            rec.attempt, 2,
            "its operation would have passed: one more envelope"
        );
        assert_ne!(rec.envelope.unwrap().hash, first.hash);
    }
}

/// Runs each protocol test over Horizon and over Stellar RPC.
macro_rules! over_both {
    ($($name:ident),* $(,)?) => {
        mod over_horizon {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Api::Horizon).await
            })*
        }
        mod over_rpc {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Api::Rpc).await
            })*
        }
    };
}

over_both!(
    pays_once_with_a_channel_account_and_journals_the_real_hash,
    credit_asset_to_a_muxed_destination_with_a_memo,
    server_errors_before_apply_are_retried_and_pay_once,
    lost_answers_after_apply_never_pay_twice,
    answer_lost_then_killed_and_restarted_recovers_without_a_second_payment,
    bad_seq_too_high_waits_until_dead_then_rebuilds_once,
    expiry_new_envelope_only_after_a_ledger_past_max_time,
    op_no_destination_fails_for_good_with_the_reason,
    insufficient_fee_keeps_the_envelope_until_dead_then_doubles_the_fee,
    chosen_rejections_are_retried_with_the_same_bytes,
    two_payouts_at_once_share_one_transaction,
    one_payment_per_transaction_uses_one_sequence_number_each,
    a_batch_whose_third_operation_fails_settles_each_payout_by_its_own_code,
);
