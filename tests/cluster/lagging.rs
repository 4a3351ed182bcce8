//! A lagging Horizon node never causes a double payment.
//!
//! Behind a load balancer, the node that answers a lookup may be far behind the one that
//! answered the account read: "not found" from it says nothing about ledgers it has not
//! ingested, and a re-post it serves goes to core as new (`tx_bad_seq`, the sequence number
//! is used). An implementation that trusts that 404 declares an applied envelope dead and
//! pays its payouts again (the bug the batch core's proof of death fixed).
//!
//! Here every lookup and submission is served by a node 150 ledgers behind (ledgers close
//! every 100 ms, so 15 s behind), 30% of the answers are lost after apply, and envelopes
//! expire after 12 ledger-seconds: every envelope applies, nobody learns it, its source
//! sequence is consumed, it expires, and the only "evidence" of its fate is 404s from the
//! lagging node. Then the lag heals and every payout must be confirmed, paid exactly once.
//!
//! The pruned variant keeps only 5 ledgers of history on every node from the start, and
//! heals the lag before the history: lookups then come from the head node, whose history
//! no longer reaches back to the envelopes; those 404s prove nothing either, and no
//! envelope may be declared dead by them. (The history is short from the start because a
//! history that shrinks while payoutd runs is a case of its own: see pruning_edge.rs.)

use std::time::{Duration, Instant};

use payoutd_simulator::Faults;

use crate::audit::{self, Audit};
use crate::world::{World, WorldOptions, post_all, wait_for};

const PAYOUTS: usize = 60;
const CHANNELS: usize = 4;
const CLOSE_INTERVAL_MS: u64 = 100;
const LAG_LEDGERS: u32 = 150;
const RETENTION_LEDGERS: u32 = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum History {
    Full,
    /// After the lag, only the last few ledgers of history.
    Pruned,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_horizon_node_never_causes_a_double_payment() {
    run(History::Full, 0x1a66).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_history_declares_no_envelope_dead() {
    run(History::Pruned, 0x9e7e).await;
}

/// Waits for one phase's condition; a phase that does not end in time is reported with
/// the audit (which says what went wrong) instead of failing before it.
pub async fn phase<F, Fut>(notes: &mut Vec<String>, what: &str, timeout_s: u64, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    if wait_for(Duration::from_secs(timeout_s), cond).await {
        println!("  {what}: after {:.1?}", started.elapsed());
    } else {
        println!("  {what}: NOT within {timeout_s} s");
        notes.push(format!("{what}: not within {timeout_s} s"));
    }
}

async fn run(history: History, seed: u64) {
    let started = Instant::now();
    let world = World::start(WorldOptions {
        name: if history == History::Full {
            "lagging"
        } else {
            "pruned"
        },
        seed,
        close_interval_ms: CLOSE_INTERVAL_MS,
        submit_wait_ms: 1_000,
        channels: CHANNELS,
        destinations: 6,
    })
    .await;
    println!(
        "lagging node ({history:?} history), run folder {}",
        world.dir.display()
    );
    let w = &world;
    let distribution = w.accounts.distribution.id();
    let distribution = distribution.as_str();
    let retention = match history {
        History::Full => 0,
        History::Pruned => RETENTION_LEDGERS,
    };
    let lagging = Faults {
        lookup_lag_ledgers: LAG_LEDGERS,
        p_lookup_lagging: 1.0,
        p_lose_answer_after_apply: 0.3,
        history_retention_ledgers: retention,
        ..Faults::default()
    };
    w.sim.set_faults(&lagging).await;
    let mut payoutd = w.instance(
        "solo",
        &w.accounts.channels,
        &[
            // Several envelopes per channel, each of several payouts.
            ("PAYOUTD__PAYOUTS__PAYMENTS_PER_TX_MAX", "4"),
            // 12 ledgers: every envelope expires long before the lagging node sees it.
            ("PAYOUTD__PAYOUTS__TX_VALIDITY_S", "12"),
        ],
    );
    payoutd.start(&w.http).await;
    let bodies = w.payouts("lag", PAYOUTS);
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| b["payout_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let ids = &ids;
    let statuses = post_all(w, &bodies, &[payoutd.url()], 8).await;
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every payout is accepted once: {statuses:?}"
    );

    let mut notes = Vec::new();
    // Phase 1: every payout is on the ledger, and every envelope has expired, while the
    // only node that answers lookups has seen none of it.
    phase(
        &mut notes,
        "every payout applied and every envelope expired, unseen by the lagging node",
        30,
        || async move {
            let paid = audit::paid_ids(&w.pool, &w.sim, distribution).await;
            if !ids.iter().all(|id| paid.contains(id)) {
                return false;
            }
            let max_time: Option<i64> =
                sqlx::query_scalar("SELECT max(max_time) FROM envelopes WHERE status = 'live'")
                    .fetch_one(&w.pool)
                    .await
                    .expect("read envelopes");
            let (_, close_time) = w.sim.head().await;
            max_time.is_some_and(|m| i64::try_from(close_time).unwrap_or(i64::MAX) > m)
        },
    )
    .await;
    // Give the proof of death something to be wrong about: every live envelope looked up
    // (and missed) twice more after its expiry.
    let live = w.live_envelopes().await;
    let hidden = w.sim.fault_counts().await.transactions_hidden_by_lag;
    phase(
        &mut notes,
        "every expired envelope looked up twice more on the lagging node",
        15,
        || async move {
            w.sim.fault_counts().await.transactions_hidden_by_lag >= hidden + 2 * live
        },
    )
    .await;
    println!(
        "  under lag: {:?}, {} envelopes live, {} dead",
        w.states(ids).await,
        w.live_envelopes().await,
        w.dead_envelopes().await
    );

    if history == History::Pruned {
        // Phase 2: the lag heals, but the history does not reach back to the envelopes:
        // the head node's 404s prove nothing either.
        w.sim
            .set_faults(&Faults {
                history_retention_ledgers: RETENTION_LEDGERS,
                ..Faults::default()
            })
            .await;
        let live = w.live_envelopes().await;
        let pruned = w.sim.fault_counts().await.transactions_hidden_by_pruning;
        phase(
            &mut notes,
            "every live envelope looked up three times in pruned history",
            15,
            || async move {
                w.sim.fault_counts().await.transactions_hidden_by_pruning >= pruned + 3 * live
            },
        )
        .await;
        let dead = w.dead_envelopes().await;
        println!(
            "  in pruned history: {:?}, {} envelopes live, {dead} dead",
            w.states(ids).await,
            w.live_envelopes().await,
        );
        if dead > 0 {
            notes.push(format!(
                "{dead} envelopes declared dead while only pruned history answered lookups"
            ));
        }
    }

    // Heal: every node holds every ledger again.
    w.sim.set_faults(&Faults::default()).await;
    let healed = Instant::now();
    phase(
        &mut notes,
        "every payout terminal after the heal",
        30,
        || async move { w.all_terminal(ids).await },
    )
    .await;
    let settle = healed.elapsed();

    let mut audit = Audit::run(&w.pool, &w.sim, distribution, ids).await;
    let counts = w.sim.fault_counts().await;
    println!(
        "  {audit}\n  faults: {} answers lost after apply, {} answers from the lagging node, {} transactions hidden by lag, {} by pruning\n  settled {settle:.1?} after the heal; {:.1?} in all",
        counts.answers_lost_after_apply,
        counts.answers_from_lagging_node,
        counts.transactions_hidden_by_lag,
        counts.transactions_hidden_by_pruning,
        started.elapsed()
    );
    audit.violations.extend(notes);
    payoutd.service.kill();
    audit.assert_clean(&format!(
        "lagging node, {history:?} history (logs in {})",
        world.dir.display()
    ));
}
