//! Transactions of many payment operations, as payoutd batches them: a channel account as
//! the transaction's source, the distribution account as every operation's source.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use payoutd_simulator::{PaymentFilter, Simulator};
use stellar_xdr::{
    Operation, OperationResult, OperationResultTr, PaymentResult, TransactionResultResult,
};
use support::*;

const USDC: i64 = XLM;

struct Setup {
    sim: Arc<Simulator>,
    app: axum::Router,
    issuer: Key,
    dist: Key,
    channel: Key,
    dests: Vec<Key>,
}

/// Distribution holds 100 USDC; five destinations trust USDC up to 1000, the first only up
/// to 1.
fn setup() -> Setup {
    let (sim, app) = manual_sim();
    let (issuer, dist, channel) = (
        Key::new("issuer"),
        Key::new("distribution"),
        Key::new("channel"),
    );
    fund(&sim, &[&issuer, &dist, &channel], 100);
    let dests: Vec<Key> = (0..5).map(|i| Key::new(&format!("dest-{i}"))).collect();
    for (i, d) in dests.iter().enumerate() {
        fund(&sim, &[d], 10);
        let limit = if i == 0 { USDC } else { 1_000 * USDC };
        sim.add_trustline(&d.g(), "USDC", &issuer.g(), limit)
            .expect("trustline");
    }
    sim.add_trustline(&dist.g(), "USDC", &issuer.g(), 10_000 * USDC)
        .expect("trustline");
    sim.credit(&dist.g(), "USDC", &issuer.g(), 100 * USDC)
        .expect("mint");
    Setup {
        sim,
        app,
        issuer,
        dist,
        channel,
        dests,
    }
}

impl Setup {
    fn pay(&self, to: &Key, amount: i64) -> Operation {
        payment(Some(&self.dist), to.muxed(), usdc(&self.issuer), amount)
    }

    fn usdc(&self, k: &Key) -> Option<i64> {
        self.sim
            .balance(&k.g(), Some(("USDC", self.issuer.g().as_str())))
    }

    fn tx(&self, ops: Vec<Operation>) -> Tx {
        Tx::new(&self.channel, seq(&self.sim, &self.channel) + 1, ops)
    }

    fn sign(&self, tx: &Tx) -> String {
        tx.sign(&[&self.channel, &self.dist])
    }
}

#[tokio::test]
async fn a_hundred_payments_need_a_hundred_base_fees_and_each_is_recorded() {
    let s = setup();
    let ops: Vec<Operation> = (0..100)
        .map(|i| s.pay(&s.dests[1 + i % 4], USDC / 2))
        .collect();
    let (channel_seq, dist_seq) = (seq(&s.sim, &s.channel), seq(&s.sim, &s.dist));

    let short = s.tx(ops.clone()).fee(9_999);
    let a = post_tx(&s.app, "/transactions", &s.sign(&short)).await;
    assert_eq!(result_codes(&a), ("tx_insufficient_fee".to_owned(), None));
    let r = decode_result(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
    assert_eq!(r.fee_charged, 10_000, "the result names the minimum fee");
    let a = post_tx(
        &s.app,
        "/transactions",
        &s.tx(ops.clone()).sign(&[&s.channel]),
    )
    .await;
    assert_eq!(
        result_codes(&a).0,
        "tx_bad_auth",
        "the operations' source signs too"
    );

    let tx = s.tx(ops).fee(15_000);
    let a = submit_and_close(&s.sim, &s.app, &s.sign(&tx)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["operation_count"], 100);
    assert_eq!(
        a.json["fee_charged"], "10000",
        "base fee times operations, not the bid"
    );
    assert_eq!(a.json["max_fee"], "15000");
    assert_eq!(
        s.sim.balance(&s.channel.g(), None),
        Some(100 * XLM - 10_000)
    );
    assert_eq!(seq(&s.sim, &s.channel), channel_seq + 1);
    assert_eq!(
        seq(&s.sim, &s.dist),
        dist_seq,
        "an operation source's sequence is untouched"
    );
    assert_eq!(s.usdc(&s.dist), Some(50 * USDC));
    for d in &s.dests[1..] {
        assert_eq!(s.usdc(d), Some(25 * USDC / 2));
    }
    let payments = s.sim.payments(&PaymentFilter::default());
    assert_eq!(payments.len(), 100);
    for (i, p) in payments.iter().enumerate() {
        assert_eq!(p.op_index, u32::try_from(i).expect("small"));
        assert_eq!(p.tx_hash, tx.hash());
        assert_eq!(p.source, s.dist.g());
        assert_eq!(p.destination, s.dests[1 + i % 4].g());
    }

    // The minimum follows the base fee.
    s.sim.set_base_fee(200);
    let ops: Vec<Operation> = (0..100).map(|_| s.pay(&s.dests[1], 1)).collect();
    let a = post_tx(
        &s.app,
        "/transactions",
        &s.sign(&s.tx(ops.clone()).fee(19_999)),
    )
    .await;
    assert_eq!(result_codes(&a).0, "tx_insufficient_fee");
    let a = submit_and_close(&s.sim, &s.app, &s.sign(&s.tx(ops).fee(20_000))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["fee_charged"], "20000");
}

#[tokio::test]
async fn a_failing_operation_fails_the_whole_transaction() {
    let s = setup();
    let ghost = Key::new("ghost");
    let stranger = Key::new("stranger");
    fund(&s.sim, &[&stranger], 10);
    let d = &s.dests;
    // Each case: five operations, the k-th fails; the others would have succeeded.
    let cases: Vec<(usize, &str, Vec<Operation>)> = vec![
        (
            0,
            "op_line_full",
            vec![
                s.pay(&d[0], 2 * USDC),
                s.pay(&d[1], USDC),
                s.pay(&d[2], USDC),
                s.pay(&d[3], USDC),
                s.pay(&d[4], USDC),
            ],
        ),
        (
            1,
            "op_no_destination",
            vec![
                s.pay(&d[1], USDC),
                s.pay(&ghost, USDC),
                s.pay(&d[2], USDC),
                s.pay(&d[3], USDC),
                s.pay(&d[4], USDC),
            ],
        ),
        (
            2,
            "op_no_trust",
            vec![
                s.pay(&d[1], USDC),
                s.pay(&d[2], USDC),
                s.pay(&stranger, USDC),
                s.pay(&d[3], USDC),
                s.pay(&d[4], USDC),
            ],
        ),
        (
            // 90 paid by the first three, so 30 more is more than the 10 left; the last
            // operation's 5 would still have fit.
            3,
            "op_underfunded",
            vec![
                s.pay(&d[1], 30 * USDC),
                s.pay(&d[2], 30 * USDC),
                s.pay(&d[3], 30 * USDC),
                s.pay(&d[4], 30 * USDC),
                s.pay(&d[1], 5 * USDC),
            ],
        ),
    ];
    let balances = |s: &Setup| -> Vec<Option<i64>> {
        let mut v: Vec<_> = s.dests.iter().map(|k| s.usdc(k)).collect();
        v.push(s.usdc(&s.dist));
        v.push(s.sim.balance(&s.dist.g(), None));
        v
    };
    let before = balances(&s);
    for (n, (k, code, ops)) in cases.into_iter().enumerate() {
        let channel_before = s.sim.balance(&s.channel.g(), None).expect("channel");
        let channel_seq = seq(&s.sim, &s.channel);
        let tx = s.tx(ops);
        let a = submit_and_close(&s.sim, &s.app, &s.sign(&tx)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{code}: {}", a.body);
        let mut expected = vec!["op_success".to_owned(); 5];
        expected[k] = code.to_owned();
        assert_eq!(
            result_codes(&a),
            ("tx_failed".to_owned(), Some(expected)),
            "{code}"
        );

        let r = decode_result(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
        assert_eq!(r.fee_charged, 500, "{code}");
        let TransactionResultResult::TxFailed(results) = &r.result else {
            panic!("{code}: {:?}", r.result)
        };
        assert_eq!(results.len(), 5, "{code}: one result per operation");
        for (i, op) in results.iter().enumerate() {
            let OperationResult::OpInner(OperationResultTr::Payment(p)) = op else {
                panic!("{code}: {op:?}")
            };
            assert_eq!(
                *p == PaymentResult::Success,
                i != k,
                "{code}: operation {i}"
            );
        }

        assert_eq!(
            seq(&s.sim, &s.channel),
            channel_seq + 1,
            "{code}: sequence consumed"
        );
        assert_eq!(
            s.sim.balance(&s.channel.g(), None),
            Some(channel_before - 500),
            "{code}: fee charged"
        );
        assert_eq!(balances(&s), before, "{code}: no payment moved anything");
        let by_hash = get(&s.app, &format!("/transactions/{}", tx.hash())).await;
        assert_eq!(by_hash.json["successful"], false);
        assert_eq!(by_hash.json["operation_count"], 5);
        assert_eq!(s.sim.transactions_count(), n + 1, "{code}: in the ledger");
    }
    assert!(s.sim.payments(&PaymentFilter::default()).is_empty());
}
