//! Ledger capacity: surge pricing by fee per operation, transactions waiting for a later
//! ledger, expiry while waiting, and transactions too large for any ledger.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use payoutd_simulator::{SimConfig, SimError, Simulator, router};
use stellar_xdr::{Asset, Operation};
use support::*;

/// Payments per transaction in these tests, payoutd's batch size.
const OPS: usize = 100;

fn sim_with(cfg: SimConfig) -> (Arc<Simulator>, axum::Router) {
    let sim = Simulator::new(cfg).expect("starts");
    let app = router(Arc::clone(&sim));
    (sim, app)
}

/// `n` payments of 1 XLM from `dist` (the operations' source) to `dest`.
fn batch(dist: &Key, dest: &Key, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|_| payment(Some(dist), dest.muxed(), Asset::Native, XLM))
        .collect()
}

fn one_payment(to: &Key) -> Vec<Operation> {
    vec![payment(None, to.muxed(), Asset::Native, XLM)]
}

#[tokio::test]
async fn capacity_orders_by_fee_per_operation_and_the_rest_waits() {
    let (sim, app) = sim_with(manual_config());
    let (dist, dest) = (Key::new("distribution"), Key::new("dest"));
    fund(&sim, &[&dist, &dest], 2_000);
    let channels: Vec<Key> = (0..12).map(|i| Key::new(&format!("channel-{i}"))).collect();
    for c in &channels {
        fund(&sim, &[c], 100);
    }
    // Eleven arrive bidding 120 stroops per operation, then a late one bidding 300.
    let txs: Vec<Tx> = channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let per_op = if i == 11 { 300 } else { 120 };
            Tx::new(c, seq(&sim, c) + 1, batch(&dist, &dest, OPS)).fee(per_op * OPS as u32)
        })
        .collect();
    for (tx, c) in txs.iter().zip(&channels) {
        let a = post_tx(&app, "/transactions_async", &tx.sign(&[c, &dist])).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    assert_eq!(sim.pending_operations(), 1_200);
    let status = get(&app, "/sim/status").await;
    assert_eq!(status.json["ops_per_ledger_max"], 1_000);
    assert_eq!(status.json["pending_operations"], 1_200);

    let first = sim.close_ledger();
    let ledger_of = |tx: &Tx| sim.transaction(&tx.hash()).map(|r| r.ledger);
    let late = sim
        .transaction(&txs[11].hash())
        .expect("the high bid is in");
    assert_eq!(late.ledger, first.sequence);
    assert_eq!(late.application_order, 1, "applied first");
    for (i, tx) in txs.iter().enumerate().take(9) {
        assert_eq!(ledger_of(tx), Some(first.sequence), "arrival {i}");
    }
    assert_eq!((ledger_of(&txs[9]), ledger_of(&txs[10])), (None, None));
    assert_eq!(sim.transactions_count(), 10);
    assert_eq!(sim.pending_count(), 2);
    assert_eq!(sim.pending_operations(), 200);
    // Surge pricing: some had to wait, so each pays the lowest included bid per operation.
    for tx in txs.iter().take(9).chain([&txs[11]]) {
        let rec = sim.transaction(&tx.hash()).expect("included");
        assert_eq!(rec.fee_charged, 120 * OPS as i64);
    }
    assert_eq!(
        sim.balance(&channels[11].g(), None),
        Some(100 * XLM - 12_000)
    );

    // A waiting transaction still holds its source's slot.
    let c9 = &channels[9];
    let other = Tx::new(c9, seq(&sim, c9) + 1, one_payment(&dest));
    let a = post_tx(&app, "/transactions", &other.sign(&[c9])).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.json["extras"]["tx_status"], "TRY_AGAIN_LATER");

    // The next ledger takes the rest; nothing waits, so the base fee is charged.
    let second = sim.close_ledger();
    assert_eq!(second.sequence, first.sequence + 1);
    assert_eq!(
        second.close_time,
        first.close_time + 5,
        "manual close times step as usual"
    );
    for tx in &txs[9..11] {
        let rec = sim.transaction(&tx.hash()).expect("included");
        assert_eq!(rec.ledger, second.sequence);
        assert_eq!(rec.fee_charged, 100 * OPS as i64);
    }
    assert_eq!(sim.pending_count(), 0);
    assert_eq!(
        sim.balance(&dest.g(), None),
        Some(2_000 * XLM + 1_200 * XLM)
    );
}

#[tokio::test]
async fn a_waiting_sync_submission_answers_504_and_lands_later() {
    let (sim, app) = sim_with(SimConfig {
        ops_per_ledger_max: 1,
        submit_wait_ms: 200,
        ..manual_config()
    });
    let (alice, bob, carol) = (Key::new("alice"), Key::new("bob"), Key::new("carol"));
    fund(&sim, &[&alice, &bob, &carol], 100);
    let rich = Tx::new(&alice, seq(&sim, &alice) + 1, one_payment(&carol)).fee(200);
    let cheap = Tx::new(&bob, seq(&sim, &bob) + 1, one_payment(&carol));
    let a = post_tx(&app, "/transactions_async", &rich.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let task = post_in_task(&app, &cheap.sign(&[&bob]));
    until_pending(&sim, 2).await;
    sim.close_ledger();
    assert!(sim.transaction(&rich.hash()).is_some());
    let a = task.await.expect("post task");
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.body);
    assert_eq!(a.json["extras"]["hash"], cheap.hash());
    assert_eq!(sim.pending_count(), 1, "still waiting for room");

    let next = sim.close_ledger();
    let a = post_tx(&app, "/transactions", &cheap.sign(&[&bob])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["ledger"], next.sequence);
}

#[tokio::test]
async fn a_waiting_transaction_that_expires_is_dropped_with_tx_too_late() {
    let (sim, app) = sim_with(SimConfig {
        ops_per_ledger_max: 1,
        ..manual_config()
    });
    let (alice, bob, carol, dave) = (
        Key::new("alice"),
        Key::new("bob"),
        Key::new("carol"),
        Key::new("dave"),
    );
    fund(&sim, &[&alice, &bob, &carol, &dave], 100);
    let bob_seq = seq(&sim, &bob);
    // Ledger 2 closes at GENESIS + 5, ledger 3 at GENESIS + 10.
    let expiring = Tx::new(&bob, bob_seq + 1, one_payment(&dave)).time_bounds(0, GENESIS + 7);
    let first = Tx::new(&alice, seq(&sim, &alice) + 1, one_payment(&dave)).fee(300);
    let a = post_tx(&app, "/transactions_async", &first.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let task = post_in_task(&app, &expiring.sign(&[&bob]));
    until_pending(&sim, 2).await;
    sim.close_ledger();
    assert_eq!(
        sim.pending_count(),
        1,
        "valid until GENESIS + 7, but no room in ledger 2"
    );

    // In ledger 3 another high bid takes the room, and the waiting one is too late anyway.
    let second = Tx::new(&carol, seq(&sim, &carol) + 1, one_payment(&dave)).fee(300);
    let a = post_tx(&app, "/transactions_async", &second.sign(&[&carol])).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let closed = sim.close_ledger();
    assert_eq!(closed.close_time, GENESIS + 10);
    let a = task.await.expect("post task");
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(result_codes(&a), ("tx_too_late".to_owned(), None));
    assert_eq!(sim.pending_count(), 0);
    assert_eq!(seq(&sim, &bob), bob_seq, "nothing consumed");
    assert_eq!(sim.balance(&bob.g(), None), Some(100 * XLM));
    assert!(sim.transaction(&expiring.hash()).is_none());
    assert_eq!(sim.transaction(&second.hash()).map(|r| r.ledger), Some(3));
}

#[tokio::test]
async fn a_transaction_larger_than_a_ledger_is_refused() {
    let (sim, app) = sim_with(SimConfig {
        ops_per_ledger_max: 50,
        ..manual_config()
    });
    let (dist, dest, channel) = (
        Key::new("distribution"),
        Key::new("dest"),
        Key::new("channel"),
    );
    fund(&sim, &[&dist, &dest, &channel], 1_000);
    let s = seq(&sim, &channel);
    let too_big = Tx::new(&channel, s + 1, batch(&dist, &dest, 51));
    let a = post_tx(&app, "/transactions", &too_big.sign(&[&channel, &dist])).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(result_codes(&a), ("tx_malformed".to_owned(), None));
    let a = post_tx(
        &app,
        "/transactions_async",
        &too_big.sign(&[&channel, &dist]),
    )
    .await;
    assert_eq!(a.json["tx_status"], "ERROR");
    assert_eq!(sim.pending_count(), 0);
    assert_eq!(seq(&sim, &channel), s);

    let fits = Tx::new(&channel, s + 1, batch(&dist, &dest, 50));
    let a = submit_and_close(&sim, &app, &fits.sign(&[&channel, &dist])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let none = Simulator::new(SimConfig {
        ops_per_ledger_max: 0,
        ..manual_config()
    });
    assert!(matches!(none, Err(SimError::InvalidConfig(_))));
}
