//! Network-bound: payouts against the simulator at the public network's pace (a ledger
//! every 5 s, 1,000 operations per ledger) with 8 channel accounts, through the whole
//! application (the Stellar adapter over HTTP to the simulator). How many ledgers does it
//! take to pay them all, how full are the ledgers while payouts wait?

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use payoutd_actors::metrics::Metrics;

use crate::common::{BenchResult, Database, build_app, err, request, run_tasks};
use crate::http::tempdir::TempDir;

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub payouts: u64,
    pub payments_per_tx_max: usize,
    pub ledgers: u32,
    pub seconds: f64,
    /// Operations per ledger, over the ledgers that closed while payouts waited.
    pub ops_per_ledger_mean: f64,
    pub ops_per_ledger_max: u32,
    /// Operations one ledger could take from 8 channels (8 × payments per transaction,
    /// at most the ledger's capacity).
    pub offered_capacity: u32,
}

pub struct Options {
    pub payouts: u64,
    pub payments_per_tx_max: usize,
    pub close_interval_ms: u64,
}

// Long because: one measured run against the simulator: the service, the submitted load,
// the wait for every confirmation and the per-ledger figures read from the same simulator
pub async fn run(o: &Options) -> BenchResult<Figures> {
    let db = Database::start("network").await?;
    let dir = TempDir::new("network")?;
    let app = build_app(vec![
        ("PAYOUTD__DATABASE__URL", db.url.clone()),
        ("PAYOUTD__SERVER__LISTEN", "127.0.0.1:0".into()),
        (
            "PAYOUTD__LEDGER__SIMULATOR__CLOSE_INTERVAL_MS",
            o.close_interval_ms.to_string(),
        ),
        ("PAYOUTD__LEDGER__SIMULATOR__CHANNELS", "8".into()),
        (
            "PAYOUTD__LEDGER__SIMULATOR__OPS_PER_LEDGER_MAX",
            "1000".into(),
        ),
        (
            "PAYOUTD__LEDGER__SIMULATOR__STATE_FILE",
            dir.0.join("simulator.json").display().to_string(),
        ),
        (
            "PAYOUTD__PAYOUTS__PAYMENTS_PER_TX_MAX",
            o.payments_per_tx_max.to_string(),
        ),
        ("PAYOUTD__PAYOUTS__LIVE_ACTORS_MAX", "1000000".into()),
        // Horizon's submission answer waits for the ledger (5 s here); keep checking fast.
        ("PAYOUTD__LEDGER__REQUEST_TIMEOUT_MS", "30000".into()),
    ])
    .await?;
    let sim = app
        .simulator
        .as_ref()
        .map(|s| s.sim.clone())
        .ok_or("the network bench needs the built-in simulator")?;
    let payouts = app.payouts.clone();
    let metrics = payouts.context().metrics.clone();
    // Stopped before its database goes (else its sweeps warn for the rest of the bench).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let start_ledger = sim.latest_ledger().sequence;
    let started = Instant::now();
    run_tasks(16, |t| {
        let payouts = payouts.clone();
        let n = o.payouts;
        async move {
            for i in (t..n).step_by(16) {
                payouts
                    .submit(request(&format!("net-{i}")))
                    .await
                    .map_err(err)?;
            }
            Ok(())
        }
    })
    .await?;
    while Metrics::get(&metrics.confirmed) < o.payouts {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    running.await.map_err(err)?.map_err(err)?;
    // Operations per ledger, from the ledger itself.
    let mut per_ledger: BTreeMap<u32, u32> = BTreeMap::new();
    for p in sim.payments(&Default::default()) {
        if p.ledger > start_ledger {
            *per_ledger.entry(p.ledger).or_insert(0) += 1;
        }
    }
    let last = per_ledger
        .keys()
        .next_back()
        .copied()
        .unwrap_or(start_ledger);
    let ledgers = last - start_ledger;
    // Every ledger but the last one closed with payouts still waiting (a ledger with no
    // payment in that span counts as empty).
    let busy: Vec<u32> = (start_ledger + 1..last)
        .map(|l| per_ledger.get(&l).copied().unwrap_or(0))
        .collect();
    let mean = if busy.is_empty() {
        per_ledger.values().copied().map(f64::from).sum::<f64>()
    } else {
        busy.iter().copied().map(f64::from).sum::<f64>() / busy.len() as f64
    };
    Ok(Figures {
        payouts: o.payouts,
        payments_per_tx_max: o.payments_per_tx_max,
        ledgers,
        seconds,
        ops_per_ledger_mean: mean,
        ops_per_ledger_max: per_ledger.values().copied().max().unwrap_or(0),
        offered_capacity: (8 * o.payments_per_tx_max as u32).min(1_000),
    })
}
