//! A lookup that misses a transaction the moment it falls out of a pruned history must
//! prove nothing.
//!
//! The Horizon adapter once covered a 404 from the highest `history_elder_ledger` it had
//! read on `GET /`, and that read came *before* the lookup (the channel worker reads the
//! head, the source sequence, then looks the hash up). With a short history window and
//! ledgers closing while those requests are on their way, the answering node's elder had
//! moved on by the time of the lookup: a transaction in the ledger that was the elder at
//! `GET /` was gone at the lookup, and the 404 was taken to cover it. The envelope was
//! declared dead although it applied, and its payouts were paid again (before the fix, this
//! test: 12 of 60 payouts paid twice or more, 8 envelopes declared dead that were on the
//! ledger). The same holds whenever the node that answers the lookup keeps less history
//! than the elder last read says: a node with a shorter window behind the same load
//! balancer, or a window shortened while payoutd runs.
//!
//! The adapter now reads `GET /` again after every 404 and covers the miss from that elder
//! (never below the highest one seen), and only if that read had ingested at least as far
//! as the lookup's node (stellar/src/horizon.rs, `HorizonClient::miss_coverage`;
//! docs/protocol.md, "The reach of a \"not found\"").
//!
//! Here: one ledger of history, 40 ms on every answer (so a ledger closes between the
//! `GET /` and the lookup), half the answers lost after apply (so the lookup right after
//! inclusion is what decides). Every payout must be confirmed, paid exactly once.

use std::time::Instant;

use payoutd_simulator::Faults;

use crate::audit::{self, Audit};
use crate::lagging::phase;
use crate::world::{World, WorldOptions, post_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_at_the_edge_of_pruned_history_proves_nothing() {
    let started = Instant::now();
    let world = World::start(WorldOptions {
        name: "edge",
        seed: 0xed9e,
        close_interval_ms: 100,
        submit_wait_ms: 1_000,
        channels: 4,
        destinations: 6,
    })
    .await;
    println!("pruning edge, run folder {}", world.dir.display());
    let w = &world;
    w.sim
        .set_faults(&Faults {
            history_retention_ledgers: 1,
            latency_ms: 40,
            p_lose_answer_after_apply: 0.5,
            ..Faults::default()
        })
        .await;
    let mut payoutd = w.instance(
        "solo",
        &w.accounts.channels,
        &[("PAYOUTD__PAYOUTS__PAYMENTS_PER_TX_MAX", "2")],
    );
    payoutd.start(&w.http).await;
    let bodies = w.payouts("edge", 60);
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| b["payout_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let ids = &ids;
    let statuses = post_all(w, &bodies, &[payoutd.url()], 4).await;
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every payout is accepted once: {statuses:?}"
    );
    let distribution = w.accounts.distribution.id();
    let distribution = distribution.as_str();
    let mut notes = Vec::new();
    // Under the faults a payout whose answer was lost is found only by a lookup in the
    // ledger that holds it (one ledger of history); the others stay unsettled until the
    // heal, and no miss may prove their envelopes dead.
    phase(
        &mut notes,
        "every payout on the ledger under the faults",
        30,
        || async move {
            let paid = audit::paid_ids(&w.pool, &w.sim, distribution).await;
            ids.iter().all(|id| paid.contains(id))
        },
    )
    .await;
    // Give the proof of death something to be wrong about: every live envelope looked up
    // (and missed) three more times.
    let live = w.live_envelopes().await;
    let pruned = w.sim.fault_counts().await.transactions_hidden_by_pruning;
    phase(
        &mut notes,
        "every live envelope looked up three more times in pruned history",
        15,
        || async move {
            w.sim.fault_counts().await.transactions_hidden_by_pruning >= pruned + 3 * live
        },
    )
    .await;
    let dead = w.dead_envelopes().await;
    println!(
        "  under the faults: {:?}, {live} envelopes live, {dead} dead",
        w.states(ids).await
    );
    if dead > 0 {
        notes.push(format!(
            "{dead} envelopes declared dead while one ledger of history answered lookups"
        ));
    }
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
        "  {audit}\n  faults: {} answers lost after apply, {} transactions hidden by pruning\n  settled {settle:.1?} after the heal; {:.1?} in all",
        counts.answers_lost_after_apply,
        counts.transactions_hidden_by_pruning,
        started.elapsed()
    );
    audit.violations.extend(notes);
    payoutd.service.kill();
    audit.assert_clean(&format!(
        "lookups at the edge of a pruned history (logs in {})",
        world.dir.display()
    ));
}
