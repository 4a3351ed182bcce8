//! Reading a payout that does not exist costs a database lookup and nothing else: 5,000
//! GETs of random unknown ids are all 404, and no payout actor is spawned for any of them
//! (`payoutd_live_actors` stays 0, `payoutd_actors_spawned_total` does not move). A core
//! that routed reads through the payout's actor would hold one actor per id ever asked
//! about, an easy way to exhaust `live_actors_max` from outside.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::world::{World, WorldOptions};

const GETS: usize = 5_000;
const CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_spawn_no_actor() {
    let world = World::start(WorldOptions {
        name: "unknown",
        seed: 0x404,
        close_interval_ms: 1_000,
        submit_wait_ms: 1_000,
        channels: 1,
        destinations: 1,
    })
    .await;
    let w = &world;
    let mut payoutd = w.instance("solo", &w.accounts.channels, &[]);
    payoutd.start(&w.http).await;
    let payoutd = &payoutd;
    let live = "payoutd_live_actors";
    let spawned = "payoutd_actors_spawned_total";
    let (live_before, spawned_before) = (
        payoutd.metric(&w.http, live).await,
        payoutd.metric(&w.http, spawned).await,
    );
    // Valid ids (1-64 characters of the allowed alphabet), none of them ever sent.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
    let mut rng = StdRng::seed_from_u64(0x404);
    let ids: Vec<String> = (0..GETS)
        .map(|_| {
            let len = rng.random_range(1..=64);
            (0..len)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        })
        .collect();
    let mut most_live = live_before;
    for chunk in ids.chunks(GETS / 10) {
        use futures_util::StreamExt;
        let statuses: Vec<(u16, &String)> = futures_util::stream::iter(chunk)
            .map(|id| async move { (w.get(&payoutd.url(), id).await.0, id) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let wrong: Vec<_> = statuses.iter().filter(|(s, _)| *s != 404).collect();
        assert!(
            wrong.is_empty(),
            "GETs of unknown ids not answered 404: {wrong:?}"
        );
        // Sampled while the reads come in, not only after: an actor per read would
        // live until passivation and show here.
        most_live = most_live.max(payoutd.metric(&w.http, live).await);
    }
    let spawned_after = payoutd.metric(&w.http, spawned).await;
    println!(
        "unknown ids: {GETS} GETs, all 404; {live} {live_before} before, at most {most_live} during; {spawned} {spawned_before} -> {spawned_after}"
    );
    assert!(
        most_live <= live_before && live_before == 0.0,
        "{live} was {live_before} before and reached {most_live} during {GETS} GETs of unknown ids"
    );
    assert_eq!(
        spawned_after, spawned_before,
        "{spawned} moved during {GETS} GETs of unknown ids"
    );
}
