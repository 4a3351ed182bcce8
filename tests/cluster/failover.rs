//! Several payoutd processes on one database, each with the distribution seed and channel
//! keys of its own; one dies for good (SIGKILL) while it holds accepted payouts and live
//! envelopes on its channels. The survivors must finish its work: settle its envelopes
//! from the journaled bytes although none of them has those channels' keys, adopt its
//! accepted payouts and pay them from their own channels; every payout confirmed, none
//! parked, nothing paid twice, within the instance TTL + one sweep + the time to settle.
//!
//! While the victim works, every submission and lookup is served by a Horizon node far
//! behind (no answer ever says "applied"), so its envelopes stay live until it is killed;
//! the lag heals at the kill. Payouts are sent round-robin over the instances; each one's
//! duplicate and GET go to another instance than the one that accepted it.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use payoutd_simulator::Faults;
use sqlx::Row;

use crate::audit::Audit;
use crate::world::{Instance, SWEEP_MS, TTL_MS, World, WorldOptions, wait_for};

const CHANNELS_PER_INSTANCE: usize = 3;
const PAYOUTS_PER_INSTANCE: usize = 16;
/// After the takeover: the survivors' envelopes of the adopted payouts need a few ledgers.
const SETTLE_MS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_for_good() {
    run(2, 0x2f0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_for_good() {
    run(3, 0x3f0).await;
}

async fn run(n: usize, seed: u64) {
    let started = Instant::now();
    let world = World::start(WorldOptions {
        name: if n == 2 { "failover2" } else { "failover3" },
        seed,
        close_interval_ms: 200,
        submit_wait_ms: 1_000,
        channels: n * CHANNELS_PER_INSTANCE,
        destinations: 6,
    })
    .await;
    let w = &world;
    println!("{n} instances, run folder {}", w.dir.display());
    let mut instances: Vec<Instance> = (0..n)
        .map(|i| {
            let keys =
                &w.accounts.channels[i * CHANNELS_PER_INSTANCE..(i + 1) * CHANNELS_PER_INSTANCE];
            w.instance(
                &format!("node-{i}"),
                keys,
                // A backlog forms: two payouts per envelope, one envelope per channel at a time.
                &[("PAYOUTD__PAYOUTS__PAYMENTS_PER_TX_MAX", "2")],
            )
        })
        .collect();
    for instance in &mut instances {
        instance.start(&w.http).await;
    }
    // No submission is ever answered, no lookup finds anything: envelopes stay live.
    w.sim
        .set_faults(&Faults {
            lookup_lag_ledgers: 100,
            p_lookup_lagging: 1.0,
            ..Faults::default()
        })
        .await;

    let urls: Vec<String> = instances.iter().map(Instance::url).collect();
    let bodies = w.payouts(&format!("fo{n}"), n * PAYOUTS_PER_INSTANCE);
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| b["payout_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let first_sent = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let (home, other) = (i % n, (i + 1) % n);
        let (status, answer) = w.post(&urls[home], body).await;
        assert_eq!(
            status, 202,
            "{} to {}: {answer}",
            ids[i], instances[home].id
        );
        let (status, answer) = w.post(&urls[other], body).await;
        assert_eq!(
            status, 200,
            "the duplicate of {} sent to {} (accepted by {}): {answer}",
            ids[i], instances[other].id, instances[home].id
        );
        let reader = (i + n - 1) % n;
        let reader = if reader == home { other } else { reader };
        let (status, answer) = w.get(&urls[reader], &ids[i]).await;
        assert!(
            status == 200 && answer["payout_id"] == ids[i].as_str(),
            "GET {} from {}: {status} {answer}",
            ids[i],
            instances[reader].id
        );
    }

    let victim = 0;
    let victim_id = instances[victim].id.clone();
    let victim_channels = instances[victim].channels.clone();
    // Killed once one of its channels holds two live envelopes (one that can no longer
    // apply, unresolved, and the next) while it still has accepted payouts.
    let busy = wait_for(Duration::from_secs(20), || {
        let (id, channels) = (&victim_id, &victim_channels);
        async move {
            let load = victim_load(w, id, channels).await;
            load.live > load.busy_channels && load.accepted > 0
        }
    })
    .await;
    assert!(
        busy,
        "{victim_id} never held an unresolved envelope and accepted payouts at once: {:?}",
        victim_load(w, &victim_id, &victim_channels).await
    );

    // What the victim held is read after its death, but the survivors may act on it
    // before that read ends (they take over `TTL_MS` after its last heartbeat, and the
    // reads wait for its connections to close first: on a loaded machine that can take
    // longer). So the baselines that must predate any takeover are taken now, while it
    // lives and nobody may take its work: its leases, and the database's clock (an
    // adoption after it is an adoption of the victim's payouts, the only dead instance's).
    let epochs_at_kill = lease_epochs(w, &victim_channels).await;
    let alive_at: String = sqlx::query_scalar("SELECT now()::text")
        .fetch_one(&w.pool)
        .await
        .expect("read the database clock");
    instances[victim].service.kill();
    let killed = Instant::now();
    // Every transaction of the victim began before this (it is reaped): an envelope row
    // written after it was written by a survivor (`now()` is a transaction's start).
    let dead_since: String = sqlx::query_scalar("SELECT now()::text")
        .fetch_one(&w.pool)
        .await
        .expect("read the database clock");
    // Its connections' last statements are over once the server has closed them.
    let gone = wait_for(Duration::from_secs(10), || {
        let id = &victim_id;
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(id)
            .fetch_one(&w.pool)
            .await
            .expect("read pg_stat_activity");
            n == 0
        }
    })
    .await;
    assert!(
        gone,
        "the database still serves {victim_id} after its SIGKILL"
    );
    // Accepted and the victim's at its death: still so, or adopted since.
    let orphaned: Vec<String> = sqlx::query_scalar(
        "SELECT payout_id FROM payouts WHERE (state = 'accepted' AND owner = $1)
            OR payout_id IN (SELECT payout_id FROM payout_events
                             WHERE kind = 'adopted' AND at > $2::timestamptz)
         ORDER BY payout_id",
    )
    .bind(&victim_id)
    .bind(&alive_at)
    .fetch_all(&w.pool)
    .await
    .expect("read the victim's payouts");
    // Live on its channels at its death: still live, or settled since by a survivor.
    let live_at_kill: Vec<(String, String, Vec<String>)> = sqlx::query(
        "SELECT tx_hash, source, member_ids FROM envelopes WHERE source = ANY($1)
            AND (status = 'live' OR updated_at > $2::timestamptz)
         ORDER BY source, sequence",
    )
    .bind(&victim_channels)
    .bind(&dead_since)
    .fetch_all(&w.pool)
    .await
    .expect("read the victim's envelopes")
    .into_iter()
    .map(|r| (r.get("tx_hash"), r.get("source"), r.get("member_ids")))
    .collect();
    println!(
        "  killed {victim_id} {:.1?} after the first payout, holding {} accepted payouts and {} live envelopes ({} payouts) on {} of its channels",
        first_sent.elapsed(),
        orphaned.len(),
        live_at_kill.len(),
        live_at_kill.iter().map(|e| e.2.len()).sum::<usize>(),
        live_at_kill
            .iter()
            .map(|e| &e.1)
            .collect::<HashSet<_>>()
            .len()
    );
    w.sim.set_faults(&Faults::default()).await;

    // The survivors answer for the victim's payouts at once.
    let survivors: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    for (k, id) in orphaned.iter().enumerate() {
        let to = survivors[k % survivors.len()];
        let body = &bodies[ids.iter().position(|x| x == id).unwrap_or_default()];
        let (status, answer) = w.post(&urls[to], body).await;
        assert_eq!(
            status, 200,
            "duplicate of {id} to {}: {answer}",
            instances[to].id
        );
        let (status, answer) = w.get(&urls[to], id).await;
        assert_eq!(status, 200, "GET {id} from {}: {answer}", instances[to].id);
    }

    let bound = Duration::from_millis(TTL_MS + SWEEP_MS + SETTLE_MS);
    let ids_ref = &ids;
    let done = wait_for(bound, || async move { w.all_terminal(ids_ref).await }).await;
    let took = killed.elapsed();

    let mut audit = Audit::run(&w.pool, &w.sim, &w.accounts.distribution.id(), &ids).await;
    if !done {
        audit.violations.insert(
            0,
            format!(
                "not every payout terminal within {bound:?} of the kill: {:?}",
                w.states(&ids).await
            ),
        );
    }
    // The victim's envelopes were settled after its death, by an instance without their
    // channels' keys: each such channel was claimed again (its lease epoch moved on) by a
    // holder that could not sign (only the victim had the keys), and the envelope is no
    // longer live.
    let epochs = lease_epochs(w, &victim_channels).await;
    let survivor_ids: Vec<&str> = survivors
        .iter()
        .map(|i| instances[*i].id.as_str())
        .collect();
    for (hash, source, members) in &live_at_kill {
        let status: String = sqlx::query_scalar("SELECT status FROM envelopes WHERE tx_hash = $1")
            .bind(hash)
            .fetch_one(&w.pool)
            .await
            .expect("read an envelope");
        if status == "live" {
            audit.violations.push(format!(
                "{victim_id}'s envelope {hash} of {members:?} is still live"
            ));
        }
        let (before, after) = (&epochs_at_kill[source], &epochs[source]);
        let taken_over = after.epoch > before.epoch
            && !after.can_sign
            && after
                .owner
                .as_deref()
                .is_none_or(|o| survivor_ids.contains(&o));
        if !taken_over {
            audit.violations.push(format!(
                "channel {source} of {victim_id} was not taken over by a survivor without its key: at the kill {before:?}, now {after:?}"
            ));
        }
    }
    // Its accepted payouts were adopted by a survivor.
    let adopted: Vec<(String, String)> = sqlx::query_as(
        "SELECT payout_id, detail->>'owner' FROM payout_events WHERE kind = 'adopted' AND payout_id = ANY($1)",
    )
    .bind(&orphaned)
    .fetch_all(&w.pool)
    .await
    .expect("read adoption events");
    for id in &orphaned {
        if !adopted
            .iter()
            .any(|(p, owner)| p == id && survivor_ids.contains(&owner.as_str()))
        {
            audit.violations.push(format!(
                "{id}, accepted by {victim_id} at its death, has no 'adopted' event naming a survivor"
            ));
        }
    }
    // And the survivors say so over HTTP.
    for (k, id) in orphaned.iter().enumerate() {
        let to = survivors[k % survivors.len()];
        let (status, answer) = w.get(&urls[to], id).await;
        if status != 200 || answer["state"] != "confirmed" {
            audit.violations.push(format!(
                "GET {id} from {}: {status} {}",
                instances[to].id, answer["state"]
            ));
        }
    }
    let keyless_logs = survivors
        .iter()
        .map(|i| {
            instances[*i]
                .log()
                .matches("settling the envelopes of an orphaned channel")
                .count()
        })
        .sum::<usize>();
    println!(
        "  {audit}\n  takeover: {} payouts adopted, {} envelopes settled without the key ({keyless_logs} keyless claims logged); every payout terminal {took:.1?} after the kill (bound {bound:?}); {:.1?} in all",
        adopted.len(),
        live_at_kill.len(),
        started.elapsed()
    );
    for instance in &mut instances {
        instance.service.kill();
    }
    audit.assert_clean(&format!("{n} instances, {victim_id} killed"));
}

/// What an instance holds: live envelopes on its channels, how many of its channels
/// they are on, and its accepted payouts.
#[derive(Debug)]
struct Load {
    live: i64,
    busy_channels: i64,
    accepted: i64,
}

async fn victim_load(w: &World, id: &str, channels: &[String]) -> Load {
    let (live, busy_channels): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT source) FROM envelopes WHERE status = 'live' AND source = ANY($1)",
    )
    .bind(channels)
    .fetch_one(&w.pool)
    .await
    .expect("count envelopes");
    let accepted =
        sqlx::query_scalar("SELECT count(*) FROM payouts WHERE state = 'accepted' AND owner = $1")
            .bind(id)
            .fetch_one(&w.pool)
            .await
            .expect("count payouts");
    Load {
        live,
        busy_channels,
        accepted,
    }
}

#[derive(Debug)]
struct Lease {
    owner: Option<String>,
    epoch: i64,
    can_sign: bool,
}

async fn lease_epochs(w: &World, channels: &[String]) -> BTreeMap<String, Lease> {
    sqlx::query(
        "SELECT account, owner, lease_epoch, owner_can_sign FROM channel_accounts WHERE account = ANY($1)",
    )
    .bind(channels)
    .fetch_all(&w.pool)
    .await
    .expect("read channel leases")
    .into_iter()
    .map(|r| {
        (
            r.get("account"),
            Lease {
                owner: r.get("owner"),
                epoch: r.get("lease_epoch"),
                can_sign: r.get("owner_can_sign"),
            },
        )
    })
    .collect()
}
