//! The simulator's rules seen through its Horizon HTTP interface.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use ed25519_dalek::{Signature, VerifyingKey};
use payoutd_simulator::{
    CloseMode, FaultCounts, Faults, PUBLIC_PASSPHRASE, PaymentFilter, RejectNext, SimConfig,
    Simulator, router,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use stellar_xdr::{
    Asset, Limits, Memo, OperationBody, OperationResult, OperationResultTr, PaymentResult,
    Preconditions, ReadXdr as _, TransactionEnvelope, TransactionResultResult,
};
use support::*;

const GOLDEN_ENVELOPE: &str = "AAAAAgAAAADL13HWIyocdKsZ7A7HM8Srqmv+uZWc+rI4xx3M8oedCQAAAMgAAAAAAAAAAQAAAAEAAAAAAAAwOQAAAAAAAN3VAAAAAgAAAAAAAABkAAAAAQAAAAAAAAABAAAAANKYxYFXEWWR6TIJ6Vx6W/8SGy4dP2GLaND8yO/l5eRwAAAAAAAAAAJUC+QAAAAAAAAAAAHyh50JAAAAQCXOQnmno3he687bKRtDc6+BXRUf8t+RnTuHy+sKf35UjfFiQbIge+txehmg0N61JsFWfwbL0JtgOjzyeZw5JAs=";
const GOLDEN_HASH: &str = "40a1855a9afaa19fbef064c833132096ba0cd5283138c0013f6151dd0b21aee9";
const GOLDEN_SECRET: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
const GOLDEN_SOURCE: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
const GOLDEN_DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";

#[tokio::test]
async fn golden_vector_decodes_verifies_hashes_and_applies() {
    let env =
        TransactionEnvelope::from_xdr_base64(GOLDEN_ENVELOPE, Limits::none()).expect("decodes");
    let TransactionEnvelope::Tx(v1) = &env else {
        panic!("a V1 envelope")
    };
    let network_id: [u8; 32] = Sha256::digest(PUBLIC_PASSPHRASE.as_bytes()).into();
    assert_eq!(
        hex::encode(network_id),
        "7ac33997544e3175d266bd022439b22cdb16508c01163f26e5cb2a3e1045a979"
    );
    let hash = env.hash(network_id).expect("hash");
    assert_eq!(hex::encode(hash), GOLDEN_HASH);

    let key = Key::from_secret(GOLDEN_SECRET);
    assert_eq!(key.g(), GOLDEN_SOURCE);
    assert_eq!(v1.tx.fee, 200);
    assert_eq!(v1.tx.seq_num.0, 1);
    assert_eq!(v1.tx.memo, Memo::Id(100));
    let Preconditions::Time(tb) = &v1.tx.cond else {
        panic!("time bounds")
    };
    assert_eq!((tb.min_time.0, tb.max_time.0), (12_345, 56_789));
    let OperationBody::Payment(p) = &v1.tx.operations[0].body else {
        panic!("a payment")
    };
    assert_eq!(
        (p.amount, p.asset.clone(), p.destination.to_string()),
        (10_000_000_000, Asset::Native, GOLDEN_DEST.to_owned())
    );

    let sig = &v1.signatures[0];
    assert_eq!(sig.hint.0, key.public()[28..32]);
    let vk = VerifyingKey::from_bytes(&key.public()).expect("key");
    let signature = Signature::from_slice(sig.signature.0.as_slice()).expect("64 bytes");
    vk.verify_strict(&hash, &signature)
        .expect("the golden signature verifies");

    // ed25519 is deterministic: signing the same transaction again gives the same envelope.
    let rebuilt = Tx {
        source: v1.tx.source_account.clone(),
        seq: 1,
        fee: 200,
        cond: v1.tx.cond.clone(),
        memo: Memo::Id(100),
        ops: v1.tx.operations.to_vec(),
    };
    assert_eq!(
        rebuilt.sign_for(PUBLIC_PASSPHRASE, &[&key]),
        GOLDEN_ENVELOPE
    );

    // The simulator on the public network accepts and applies it.
    let sim = Simulator::new(SimConfig {
        network_passphrase: PUBLIC_PASSPHRASE.to_owned(),
        genesis_close_time: Some(20_000),
        ..manual_config()
    })
    .expect("starts");
    let app = router(Arc::clone(&sim));
    sim.create_account(GOLDEN_SOURCE, 2_000 * XLM)
        .expect("fund");
    sim.create_account(GOLDEN_DEST, 10 * XLM).expect("fund");
    sim.set_account_sequence(GOLDEN_SOURCE, 0).expect("seq");
    let a = submit_and_close(&sim, &app, GOLDEN_ENVELOPE).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["hash"], GOLDEN_HASH);
    assert_eq!(a.json["memo_type"], "id");
    assert_eq!(a.json["memo"], "100");
    assert_eq!(a.json["fee_charged"], "100");
    assert_eq!(a.json["max_fee"], "200");
    assert_eq!(sim.balance(GOLDEN_DEST, None), Some(1_010 * XLM));
    assert_eq!(sim.balance(GOLDEN_SOURCE, None), Some(1_000 * XLM - 100));

    // Signed for the public network, the envelope does not verify on the test network.
    let testnet = Simulator::new(SimConfig {
        genesis_close_time: Some(20_000),
        ..manual_config()
    })
    .expect("starts");
    let app = router(Arc::clone(&testnet));
    testnet
        .create_account(GOLDEN_SOURCE, 2_000 * XLM)
        .expect("fund");
    testnet.create_account(GOLDEN_DEST, 10 * XLM).expect("fund");
    testnet.set_account_sequence(GOLDEN_SOURCE, 0).expect("seq");
    let a = post_tx(&app, "/transactions", GOLDEN_ENVELOPE).await;
    assert_eq!(result_codes(&a).0, "tx_bad_auth", "{}", a.body);
}

#[tokio::test]
async fn payment_moves_balances_and_horizon_shows_it() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let alice_seq = seq(&sim, &alice);
    assert_eq!(alice_seq, 1 << 32, "new accounts start at ledger << 32");

    let tx = Tx::new(
        &alice,
        alice_seq + 1,
        vec![payment(None, bob.muxed(), Asset::Native, 125_000_000)],
    )
    .memo(Memo::Text("payout-1".try_into().expect("short")))
    .time_bounds(0, GENESIS + 60);
    let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let j = &a.json;
    assert_eq!(j["hash"], tx.hash());
    assert_eq!(j["id"], tx.hash());
    assert_eq!(j["ledger"], 2);
    assert_eq!(j["successful"], true);
    assert_eq!(j["fee_charged"], "100");
    assert_eq!(j["max_fee"], "100");
    assert_eq!(j["source_account"], alice.g());
    assert_eq!(j["source_account_sequence"], (alice_seq + 1).to_string());
    assert_eq!(j["memo_type"], "text");
    assert_eq!(j["memo"], "payout-1");
    assert_eq!(j["operation_count"], 1);
    assert_eq!(j["created_at"], "2023-11-14T22:13:25Z");
    assert_eq!(j["envelope_xdr"], tx.sign(&[&alice]));
    let r = decode_result(j["result_xdr"].as_str().expect("string"));
    assert_eq!(r.fee_charged, 100);
    assert!(matches!(
        r.result,
        TransactionResultResult::TxSuccess(ref ops)
            if ops.len() == 1 && ops[0] == OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::Success))
    ));

    assert_eq!(sim.balance(&bob.g(), None), Some(1_125_000_000));
    assert_eq!(sim.balance(&alice.g(), None), Some(875_000_000 - 100));
    assert_eq!(seq(&sim, &alice), alice_seq + 1);

    let acct = get(&app, &format!("/accounts/{}", bob.g())).await;
    assert_eq!(acct.status, StatusCode::OK);
    assert_eq!(acct.json["id"], bob.g());
    assert_eq!(acct.json["account_id"], bob.g());
    assert_eq!(acct.json["sequence"], (1i64 << 32).to_string());
    assert_eq!(
        acct.json["balances"],
        json!([{
            "balance": "112.5000000", "buying_liabilities": "0.0000000",
            "selling_liabilities": "0.0000000", "asset_type": "native"
        }])
    );

    let by_hash = get(&app, &format!("/transactions/{}", tx.hash())).await;
    assert_eq!(by_hash.status, StatusCode::OK);
    assert_eq!(
        by_hash.body, a.body,
        "lookup shows the same resource as the submission"
    );

    let root = get(&app, "/").await;
    assert_eq!(
        root.json["network_passphrase"],
        "Test SDF Network ; September 2015"
    );
    assert_eq!(root.json["history_latest_ledger"], 2);
    assert_eq!(root.json["core_latest_ledger"], 2);
    assert_eq!(
        root.json["history_latest_ledger_closed_at"],
        "2023-11-14T22:13:25Z"
    );

    let missing = get(&app, &format!("/accounts/{}", Key::new("nobody").g())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json["type"],
        "https://stellar.org/horizon-errors/not_found"
    );
    assert_eq!(missing.json["title"], "Resource Missing");
    assert_eq!(missing.json["status"], 404);
    let unknown_tx = get(&app, &format!("/transactions/{}", "ab".repeat(32))).await;
    assert_eq!(unknown_tx.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_signatures_are_rejected_before_inclusion() {
    let (sim, app) = manual_sim();
    let (alice, bob, mallory) = (Key::new("alice"), Key::new("bob"), Key::new("mallory"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);
    let tx = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );

    for (envelope, code) in [
        (tx.sign(&[&mallory]), "tx_bad_auth"),
        (tx.sign(&[]), "tx_bad_auth"),
        (tx.sign_for(PUBLIC_PASSPHRASE, &[&alice]), "tx_bad_auth"),
        (tx.sign(&[&alice, &mallory]), "tx_bad_auth_extra"),
    ] {
        let a = post_tx(&app, "/transactions", &envelope).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert_eq!(
            a.json["type"],
            "https://stellar.org/horizon-errors/transaction_failed"
        );
        assert_eq!(a.json["title"], "Transaction Failed");
        assert_eq!(result_codes(&a), (code.to_owned(), None));
        let r = decode_result(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
        assert_eq!(r.fee_charged, 100);
        assert_eq!(a.json["extras"]["envelope_xdr"], envelope);
    }
    assert_eq!(sim.pending_count(), 0);
    assert_eq!(seq(&sim, &alice), s, "nothing consumed");
    assert_eq!(sim.balance(&alice.g(), None), Some(100 * XLM));
}

#[tokio::test]
async fn wrong_sequence_numbers_are_tx_bad_seq() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);
    for bad in [s, s - 5, s + 2] {
        let tx = Tx::new(
            &alice,
            bad,
            vec![payment(None, bob.muxed(), Asset::Native, XLM)],
        );
        let a = post_tx(&app, "/transactions", &tx.sign(&[&alice])).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(result_codes(&a).0, "tx_bad_seq");
    }
    assert_eq!(seq(&sim, &alice), s);

    // After one transaction applied, re-using its sequence number is tx_bad_seq too.
    let ok = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    assert_eq!(
        submit_and_close(&sim, &app, &ok.sign(&[&alice]))
            .await
            .status,
        StatusCode::OK
    );
    let again = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, 2 * XLM)],
    );
    let a = post_tx(&app, "/transactions", &again.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).0, "tx_bad_seq");

    let nobody = Key::new("nobody");
    let tx = Tx::new(
        &nobody,
        1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    let a = post_tx(&app, "/transactions", &tx.sign(&[&nobody])).await;
    assert_eq!(result_codes(&a).0, "tx_no_source_account");
}

#[tokio::test]
async fn time_bounds_follow_the_ledger_clock() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);
    let pay = || vec![payment(None, bob.muxed(), Asset::Native, XLM)];

    // Valid now: the next ledger closes at GENESIS + 5.
    let tx = Tx::new(&alice, s + 1, pay()).time_bounds(0, GENESIS + 12);
    // Three closes later the ledger clock is at GENESIS + 15: too late.
    for _ in 0..3 {
        sim.close_ledger();
    }
    assert_eq!(sim.latest_ledger().close_time, GENESIS + 15);
    let a = post_tx(&app, "/transactions", &tx.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).0, "tx_too_late");

    let early = Tx::new(&alice, s + 1, pay()).time_bounds(GENESIS + 100, 0);
    let a = post_tx(&app, "/transactions", &early.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).0, "tx_too_early");

    // The boundary: max_time equal to the next close time is still valid.
    let edge = Tx::new(&alice, s + 1, pay()).time_bounds(0, GENESIS + 20);
    let a = submit_and_close(&sim, &app, &edge.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(seq(&sim, &alice), s + 1);
}

#[tokio::test]
async fn fees_below_the_base_fee_are_rejected_and_a_raise_drops_pending_ones() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);
    let pay = || vec![payment(None, bob.muxed(), Asset::Native, XLM)];

    let cheap = Tx::new(&alice, s + 1, pay()).fee(99);
    let a = post_tx(&app, "/transactions", &cheap.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).0, "tx_insufficient_fee");

    sim.set_base_fee(500);
    let a = post_tx(
        &app,
        "/transactions",
        &Tx::new(&alice, s + 1, pay()).fee(200).sign(&[&alice]),
    )
    .await;
    assert_eq!(result_codes(&a).0, "tx_insufficient_fee");
    let rich = Tx::new(&alice, s + 1, pay()).fee(1_000);
    let a = submit_and_close(&sim, &app, &rich.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json["fee_charged"], "500",
        "the base fee is charged, not the bid"
    );
    assert_eq!(a.json["max_fee"], "1000");

    // A fee raise between submission and close drops the pending transaction: the waiting
    // POST gets the rejection and nothing is consumed.
    sim.set_base_fee(100);
    let tx = Tx::new(&alice, s + 2, pay()).fee(100);
    let task = tokio::spawn({
        let app = app.clone();
        let env = tx.sign(&[&alice]);
        async move { post_tx(&app, "/transactions", &env).await }
    });
    while sim.pending_count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    sim.set_base_fee(200);
    sim.close_ledger();
    let a = task.await.expect("task");
    assert_eq!(result_codes(&a).0, "tx_insufficient_fee");
    assert_eq!(seq(&sim, &alice), s + 1);
    assert_eq!(
        get(&app, &format!("/transactions/{}", tx.hash()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn op_no_destination_is_in_the_ledger_with_fee_and_sequence_consumed() {
    let (sim, app) = manual_sim();
    let (alice, ghost) = (Key::new("alice"), Key::new("ghost"));
    fund(&sim, &[&alice], 100);
    let s = seq(&sim, &alice);
    let tx = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, ghost.muxed(), Asset::Native, XLM)],
    )
    .memo(Memo::Id(7));
    let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(
        a.json["type"],
        "https://stellar.org/horizon-errors/transaction_failed"
    );
    assert_eq!(
        result_codes(&a),
        (
            "tx_failed".to_owned(),
            Some(vec!["op_no_destination".to_owned()])
        )
    );
    let r = decode_result(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
    assert_eq!(r.fee_charged, 100);
    assert!(matches!(r.result, TransactionResultResult::TxFailed(_)));

    assert_eq!(seq(&sim, &alice), s + 1, "sequence consumed");
    assert_eq!(
        sim.balance(&alice.g(), None),
        Some(100 * XLM - 100),
        "fee charged"
    );
    assert_eq!(sim.transactions_count(), 1);
    let by_hash = get(&app, &format!("/transactions/{}", tx.hash())).await;
    assert_eq!(by_hash.status, StatusCode::OK);
    assert_eq!(by_hash.json["successful"], false);
    assert_eq!(by_hash.json["fee_charged"], "100");
    assert!(sim.payments(&PaymentFilter::default()).is_empty());
}

#[tokio::test]
async fn credit_assets_need_trustlines() {
    let (sim, app) = manual_sim();
    let (issuer, dist, carol) = (
        Key::new("issuer"),
        Key::new("distribution"),
        Key::new("carol"),
    );
    fund(&sim, &[&issuer, &dist, &carol], 100);
    let code_issuer = ("USDC", issuer.g());
    sim.add_trustline(&dist.g(), "USDC", &issuer.g(), 1_000 * XLM)
        .expect("trustline");
    sim.credit(&dist.g(), "USDC", &issuer.g(), 500 * XLM)
        .expect("mint");
    let usdc_bal = |k: &Key| sim.balance(&k.g(), Some((code_issuer.0, code_issuer.1.as_str())));

    let mut dist_seq = seq(&sim, &dist);
    let mut pay = |amount: i64, to: &Key| {
        dist_seq += 1;
        Tx::new(
            &dist,
            dist_seq,
            vec![payment(None, to.muxed(), usdc(&issuer), amount)],
        )
        .sign(&[&dist])
    };

    let a = submit_and_close(&sim, &app, &pay(10 * XLM, &carol)).await;
    assert_eq!(
        result_codes(&a),
        ("tx_failed".to_owned(), Some(vec!["op_no_trust".to_owned()]))
    );

    sim.add_trustline(&carol.g(), "USDC", &issuer.g(), 20 * XLM)
        .expect("trustline");
    let a = submit_and_close(&sim, &app, &pay(125_000_000, &carol)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(usdc_bal(&carol), Some(125_000_000));
    assert_eq!(usdc_bal(&dist), Some(500 * XLM - 125_000_000));

    let a = submit_and_close(&sim, &app, &pay(10 * XLM, &carol)).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_line_full".to_owned()]));
    let a = submit_and_close(&sim, &app, &pay(600 * XLM, &issuer)).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_underfunded".to_owned()]));

    // Paying the issuer burns, without a trustline.
    let a = submit_and_close(&sim, &app, &pay(XLM, &issuer)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // A sender without a trustline.
    let bob = Key::new("bob");
    fund(&sim, &[&bob], 10);
    let tx = Tx::new(
        &bob,
        seq(&sim, &bob) + 1,
        vec![payment(None, carol.muxed(), usdc(&issuer), 1)],
    );
    let a = submit_and_close(&sim, &app, &tx.sign(&[&bob])).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_src_no_trust".to_owned()]));

    // The trustline shows in Horizon's balances, native last.
    let acct = get(&app, &format!("/accounts/{}", carol.g())).await;
    let balances = acct.json["balances"].as_array().expect("balances");
    assert_eq!(balances.len(), 2);
    assert_eq!(balances[0]["asset_type"], "credit_alphanum4");
    assert_eq!(balances[0]["asset_code"], "USDC");
    assert_eq!(balances[0]["asset_issuer"], issuer.g());
    assert_eq!(balances[0]["balance"], "12.5000000");
    assert_eq!(balances[0]["limit"], "20.0000000");
    assert_eq!(balances[1]["asset_type"], "native");
}

#[tokio::test]
async fn native_payments_keep_the_base_reserve() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 10);
    // 10 XLM minus the 1 XLM reserve minus the fee leaves 9 XLM - 100 stroops to spend.
    let s = seq(&sim, &alice);
    let too_much = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, 9 * XLM)],
    );
    let a = submit_and_close(&sim, &app, &too_much.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_underfunded".to_owned()]));
    let exact = Tx::new(
        &alice,
        s + 2,
        vec![payment(None, bob.muxed(), Asset::Native, 9 * XLM - 200)],
    );
    let a = submit_and_close(&sim, &app, &exact.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(sim.balance(&alice.g(), None), Some(XLM));
}

#[tokio::test]
async fn reposting_returns_the_original_result() {
    let (sim, app) = manual_sim();
    let (alice, bob, ghost) = (Key::new("alice"), Key::new("bob"), Key::new("ghost"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);

    let ok = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    )
    .sign(&[&alice]);
    let first = submit_and_close(&sim, &app, &ok).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = post_tx(&app, "/transactions", &ok).await;
    assert_eq!(
        (again.status, again.body.clone()),
        (first.status, first.body.clone())
    );

    let failed = Tx::new(
        &alice,
        s + 2,
        vec![payment(None, ghost.muxed(), Asset::Native, XLM)],
    )
    .sign(&[&alice]);
    let first = submit_and_close(&sim, &app, &failed).await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST);
    let again = post_tx(&app, "/transactions", &failed).await;
    assert_eq!(
        (again.status, again.body.clone()),
        (first.status, first.body)
    );
    assert_eq!(sim.balance(&bob.g(), None), Some(101 * XLM), "paid once");
    assert_eq!(sim.transactions_count(), 2);

    // Two posts of one pending envelope wait for the same inclusion.
    let tx = Tx::new(
        &alice,
        s + 3,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    )
    .sign(&[&alice]);
    let posts: Vec<_> = (0..2)
        .map(|_| {
            let (app, tx) = (app.clone(), tx.clone());
            tokio::spawn(async move { post_tx(&app, "/transactions", &tx).await })
        })
        .collect();
    while sim.pending_count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sim.close_ledger();
    let mut bodies = Vec::new();
    for p in posts {
        let a = p.await.expect("task");
        assert_eq!(a.status, StatusCode::OK);
        bodies.push(a.body);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(sim.balance(&bob.g(), None), Some(102 * XLM));
    assert_eq!(sim.transactions_count(), 3);
}

#[tokio::test]
async fn channel_account_pays_for_the_distribution_account() {
    let (sim, app) = manual_sim();
    let (channel, dist, dest) = (
        Key::new("channel-0"),
        Key::new("distribution"),
        Key::new("dest"),
    );
    fund(&sim, &[&channel, &dist, &dest], 100);
    let (cs, ds) = (seq(&sim, &channel), seq(&sim, &dist));
    let tx = Tx::new(
        &channel,
        cs + 1,
        vec![payment(Some(&dist), dest.muxed(), Asset::Native, 5 * XLM)],
    );

    let a = post_tx(&app, "/transactions", &tx.sign(&[&channel])).await;
    assert_eq!(
        result_codes(&a).0,
        "tx_bad_auth",
        "the operation source must sign too"
    );

    let a = submit_and_close(&sim, &app, &tx.sign(&[&channel, &dist])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["source_account"], channel.g());
    assert_eq!(
        sim.balance(&channel.g(), None),
        Some(100 * XLM - 100),
        "the channel pays the fee"
    );
    assert_eq!(
        sim.balance(&dist.g(), None),
        Some(95 * XLM),
        "the distribution account pays"
    );
    assert_eq!(sim.balance(&dest.g(), None), Some(105 * XLM));
    assert_eq!((seq(&sim, &channel), seq(&sim, &dist)), (cs + 1, ds));
    let p = sim.payments(&PaymentFilter::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].source, dist.g());

    // Two channels paying from one distribution account land in the same ledger.
    let ch1 = Key::new("channel-1");
    fund(&sim, &[&ch1], 10);
    let t0 = Tx::new(
        &channel,
        cs + 2,
        vec![payment(Some(&dist), dest.muxed(), Asset::Native, XLM)],
    );
    let t1 = Tx::new(
        &ch1,
        seq(&sim, &ch1) + 1,
        vec![payment(Some(&dist), dest.muxed(), Asset::Native, XLM)],
    );
    let posts: Vec<_> = [t0.sign(&[&channel, &dist]), t1.sign(&[&ch1, &dist])]
        .into_iter()
        .map(|env| {
            let app = app.clone();
            tokio::spawn(async move { post_tx(&app, "/transactions", &env).await })
        })
        .collect();
    while sim.pending_count() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let header = sim.close_ledger();
    for p in posts {
        let a = p.await.expect("task");
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.json["ledger"], header.sequence);
    }
    assert_eq!(sim.balance(&dest.g(), None), Some(107 * XLM));
}

#[tokio::test]
async fn one_transaction_per_source_per_ledger_and_async_statuses() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);
    let first = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    let other = Tx::new(
        &alice,
        s + 1,
        vec![payment(None, bob.muxed(), Asset::Native, 2 * XLM)],
    );

    let a = post_tx(&app, "/transactions_async", &first.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.json["tx_status"], "PENDING");
    assert_eq!(a.json["hash"], first.hash());

    let a = post_tx(&app, "/transactions_async", &first.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.json["tx_status"], "DUPLICATE");

    let a = post_tx(&app, "/transactions_async", &other.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json["tx_status"], "TRY_AGAIN_LATER");
    let a = post_tx(&app, "/transactions", &other.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json["status"], 503);

    assert_eq!(
        get(&app, &format!("/transactions/{}", first.hash()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    sim.close_ledger();
    let found = get(&app, &format!("/transactions/{}", first.hash())).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.json["successful"], true);

    // Core answers a re-sent, already applied envelope from the current state: a bad sequence.
    let a = post_tx(&app, "/transactions_async", &first.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["tx_status"], "ERROR");
    let r = decode_result(a.json["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(r.result, TransactionResultResult::TxBadSeq);
}

#[tokio::test]
async fn malformed_submissions_are_transaction_malformed() {
    let (_sim, app) = manual_sim();
    for body in ["AAAA", "not base64 at all!", ""] {
        let a = post_tx(&app, "/transactions", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            a.json["type"],
            "https://stellar.org/horizon-errors/transaction_malformed"
        );
        assert_eq!(a.json["title"], "Transaction Malformed");
    }
    let a = post_json(&app, "/transactions", json!({"tx": "AAAA"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json["type"],
        "https://stellar.org/horizon-errors/transaction_malformed"
    );
}

#[tokio::test]
async fn submit_times_out_with_504_and_the_transaction_lands_later() {
    let sim = Simulator::new(SimConfig {
        submit_wait_ms: 30,
        ..manual_config()
    })
    .expect("starts");
    let app = router(Arc::clone(&sim));
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let tx = Tx::new(
        &alice,
        seq(&sim, &alice) + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    let a = post_tx(&app, "/transactions", &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.json["type"], "https://stellar.org/horizon-errors/timeout");
    assert_eq!(a.json["title"], "Timeout");
    assert_eq!(a.json["status"], 504);
    sim.close_ledger();
    assert_eq!(
        get(&app, &format!("/transactions/{}", tx.hash()))
            .await
            .json["successful"],
        true
    );
    assert_eq!(
        post_tx(&app, "/transactions", &tx.sign(&[&alice]))
            .await
            .status,
        StatusCode::OK
    );
}

/// Submits 30 payments in instant mode with faults on; returns each answer's status.
async fn faulty_run(seed: u64) -> (Vec<u16>, payoutd_simulator::FaultCounts, i64) {
    let faults = Faults {
        p_5xx_before_apply: 0.3,
        p_lose_answer_after_apply: 0.3,
        ..Faults::default()
    };
    let sim = Simulator::new(SimConfig {
        close_mode: CloseMode::Instant,
        seed,
        faults,
        ..manual_config()
    })
    .expect("starts");
    let app = router(Arc::clone(&sim));
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 1_000);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let tx = Tx::new(
            &alice,
            seq(&sim, &alice) + 1,
            vec![payment(None, bob.muxed(), Asset::Native, XLM)],
        );
        statuses.push(
            post_tx(&app, "/transactions", &tx.sign(&[&alice]))
                .await
                .status
                .as_u16(),
        );
    }
    (
        statuses,
        sim.fault_counts(),
        sim.balance(&bob.g(), None).unwrap_or_default(),
    )
}

#[tokio::test]
async fn fault_injection_is_deterministic_for_a_seed() {
    let (a, counts, bob_balance) = faulty_run(7).await;
    let (b, counts_b, _) = faulty_run(7).await;
    assert_eq!(a, b, "same seed, same faults");
    assert_eq!(counts, counts_b);
    let (c, _, _) = faulty_run(8).await;
    assert_ne!(a, c, "another seed, other faults");

    let five_xx = a.iter().filter(|s| **s == 500 || **s == 503).count() as u64;
    let lost = a.iter().filter(|s| **s == 504).count() as u64;
    let ok = a.iter().filter(|s| **s == 200).count() as i64;
    assert!(five_xx > 0 && lost > 0 && ok > 0, "{a:?}");
    assert_eq!(counts.server_errors_before_apply, five_xx);
    assert_eq!(counts.answers_lost_after_apply, lost);
    // A lost answer still paid: the ledger has every 200 and every 504.
    assert_eq!(bob_balance, 1_000 * XLM + (ok + lost as i64) * XLM);
}

/// Posts 30 payments to `path` in instant mode with 5xx and TRY_AGAIN_LATER faults; each
/// answer as `5xx`, `busy` (TRY_AGAIN_LATER) or its status, and the fault counts.
async fn busy_run(seed: u64, p_busy: f64, path: &str) -> (Vec<String>, FaultCounts) {
    let sim = Simulator::new(SimConfig {
        close_mode: CloseMode::Instant,
        seed,
        faults: Faults {
            p_5xx_before_apply: 0.3,
            p_try_again_later: p_busy,
            ..Faults::default()
        },
        ..manual_config()
    })
    .expect("starts");
    let app = router(Arc::clone(&sim));
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 1_000);
    let mut answers = Vec::new();
    for _ in 0..30 {
        let s = seq(&sim, &alice);
        let tx = Tx::new(
            &alice,
            s + 1,
            vec![payment(None, bob.muxed(), Asset::Native, XLM)],
        );
        let a = post_tx(&app, path, &tx.sign(&[&alice])).await;
        let busy = a.json["tx_status"] == "TRY_AGAIN_LATER"
            || a.json["extras"]["tx_status"] == "TRY_AGAIN_LATER";
        answers.push(if busy {
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(seq(&sim, &alice), s, "not accepted: nothing consumed");
            "busy".to_owned()
        } else if a.status.is_server_error() {
            "5xx".to_owned()
        } else {
            a.status.as_u16().to_string()
        });
    }
    (answers, sim.fault_counts())
}

#[tokio::test]
async fn try_again_later_fault_refuses_without_accepting_and_replays() {
    for path in ["/transactions", "/transactions_async"] {
        let (a, counts) = busy_run(3, 0.5, path).await;
        let (b, _) = busy_run(3, 0.5, path).await;
        assert_eq!(a, b, "{path}: same seed, same answers");
        let busy = a.iter().filter(|s| *s == "busy").count() as u64;
        assert!(busy > 0 && a.iter().any(|s| s == "5xx"), "{path}: {a:?}");
        assert_eq!(counts.try_again_later_injected, busy, "{path}");
        // Its own stream: the 5xx answers fall where they fall without it.
        let (without, _) = busy_run(3, 0.0, path).await;
        let five_xx = |v: &[String]| -> Vec<bool> { v.iter().map(|s| s == "5xx").collect() };
        assert_eq!(five_xx(&a), five_xx(&without), "{path}");
        assert!(!without.contains(&"busy".to_owned()));
    }
    // An envelope already pending is DUPLICATE first, as core checks that before its queue.
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let tx = Tx::new(
        &alice,
        seq(&sim, &alice) + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    let a = post_tx(&app, "/transactions_async", &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::CREATED);
    sim.set_faults(Faults {
        p_try_again_later: 1.0,
        ..Faults::default()
    });
    let a = post_tx(&app, "/transactions_async", &tx.sign(&[&alice])).await;
    assert_eq!(a.json["tx_status"], "DUPLICATE");
    let bad = Tx::new(
        &alice,
        seq(&sim, &alice) + 5,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    let a = post_tx(&app, "/transactions_async", &bad.sign(&[&alice])).await;
    assert_eq!(
        a.json["tx_status"], "ERROR",
        "an invalid one is an error first"
    );
}

#[tokio::test]
async fn reject_next_and_latency_faults() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    let bad = put_json(
        &app,
        "/sim/faults",
        json!({"reject_next": {"code": "tx_nonsense", "count": 1}}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let set = put_json(
        &app,
        "/sim/faults",
        json!({"latency_ms": 5, "reject_next": {"code": "tx_insufficient_fee", "count": 2}}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let tx = Tx::new(
        &alice,
        seq(&sim, &alice) + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    for _ in 0..2 {
        let a = post_tx(&app, "/transactions", &tx.sign(&[&alice])).await;
        assert_eq!(result_codes(&a).0, "tx_insufficient_fee");
        let r = decode_result(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
        assert_eq!(r.result, TransactionResultResult::TxInsufficientFee);
    }
    assert_eq!(
        submit_and_close(&sim, &app, &tx.sign(&[&alice]))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(sim.faults().reject_next, None);
    let counts = get(&app, "/sim/faults").await;
    assert_eq!(counts.json["rejected_by_code"], 2);
    assert_eq!(counts.json["latency"], 3);

    sim.set_faults(Faults {
        reject_next: Some(RejectNext {
            code: "tx_bad_seq".into(),
            count: 1,
        }),
        ..Faults::default()
    });
    let tx = Tx::new(
        &alice,
        seq(&sim, &alice) + 1,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    assert_eq!(
        result_codes(&post_tx(&app, "/transactions", &tx.sign(&[&alice])).await).0,
        "tx_bad_seq"
    );
}

fn temp_state_file(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "payoutd-sim-{name}-{}-{nanos}.jsonl",
        std::process::id()
    ))
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let path = temp_state_file("restart");
    let cfg = SimConfig {
        state_file: Some(path.clone()),
        ..manual_config()
    };
    let (issuer, alice, bob) = (Key::new("issuer"), Key::new("alice"), Key::new("bob"));
    let (tx, first) = {
        let sim = Simulator::new(cfg.clone()).expect("starts");
        let app = router(Arc::clone(&sim));
        fund(&sim, &[&issuer, &alice, &bob], 100);
        sim.add_trustline(&bob.g(), "USDC", &issuer.g(), 50 * XLM)
            .expect("trustline");
        sim.credit(&bob.g(), "USDC", &issuer.g(), 3 * XLM)
            .expect("credit");
        let tx = Tx::new(
            &alice,
            seq(&sim, &alice) + 1,
            vec![payment(None, bob.muxed(), Asset::Native, XLM)],
        )
        .memo(Memo::Id(42))
        .sign(&[&alice]);
        let first = submit_and_close(&sim, &app, &tx).await;
        assert_eq!(first.status, StatusCode::OK);
        sim.close_ledger();
        (tx, first)
    };

    let sim = Simulator::new(cfg.clone()).expect("restarts");
    let app = router(Arc::clone(&sim));
    assert_eq!(sim.latest_ledger().sequence, 3);
    assert_eq!(sim.latest_ledger().close_time, GENESIS + 10);
    assert_eq!(sim.balance(&bob.g(), None), Some(101 * XLM));
    assert_eq!(
        sim.balance(&bob.g(), Some(("USDC", &issuer.g()))),
        Some(3 * XLM)
    );
    assert_eq!(sim.account_sequence(&alice.g()), Some((1i64 << 32) + 1));
    assert_eq!(sim.transactions_count(), 1);
    let memo = PaymentFilter {
        memo: Some("id:42".into()),
        destination: None,
    };
    assert_eq!(sim.payments(&memo).len(), 1);
    let again = post_tx(&app, "/transactions", &tx).await;
    assert_eq!(
        (again.status, again.body),
        (first.status, first.body),
        "the original result survives"
    );

    // A torn last line (a crash mid-write) is ignored.
    drop(app);
    drop(sim);
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"kind\":\"delta\",\"header\":{\"sequ")
            .expect("write");
    }
    let sim = Simulator::new(cfg.clone()).expect("restarts after a torn write");
    assert_eq!(sim.latest_ledger().sequence, 3);
    sim.close_ledger();
    drop(sim);

    let other = Simulator::new(SimConfig {
        network_passphrase: PUBLIC_PASSPHRASE.into(),
        ..cfg.clone()
    });
    assert!(other.is_err(), "a state file of another network is refused");
    let sim = Simulator::new(cfg).expect("restarts");
    assert_eq!(sim.latest_ledger().sequence, 4);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn payments_filter_by_memo_and_destination() {
    let (sim, app) = manual_sim();
    let (alice, bob, carol) = (Key::new("alice"), Key::new("bob"), Key::new("carol"));
    fund(&sim, &[&alice, &bob, &carol], 100);
    let hash_memo = [7u8; 32];
    let payments = [
        (Memo::Id(1), bob.muxed()),
        (Memo::Id(2), carol.muxed()),
        (
            Memo::Text("reward-0042".try_into().expect("short")),
            bob.muxed_id(99),
        ),
        (Memo::Hash(stellar_xdr::Hash(hash_memo)), carol.muxed()),
    ];
    for (memo, dest) in payments {
        let tx = Tx::new(
            &alice,
            seq(&sim, &alice) + 1,
            vec![payment(None, dest, Asset::Native, XLM)],
        )
        .memo(memo);
        assert_eq!(
            submit_and_close(&sim, &app, &tx.sign(&[&alice]))
                .await
                .status,
            StatusCode::OK
        );
    }
    let by = |memo: Option<&str>, destination: Option<String>| {
        sim.payments(&PaymentFilter {
            memo: memo.map(str::to_owned),
            destination,
        })
    };
    let id1 = by(Some("id:1"), None);
    assert_eq!(id1.len(), 1);
    assert_eq!(
        (
            id1[0].destination.clone(),
            id1[0].amount_stroops,
            id1[0].asset.clone()
        ),
        (bob.g(), XLM, "native".to_owned())
    );
    assert_eq!(id1[0].memo.as_deref(), Some("id:1"));
    assert_eq!(
        by(Some("text:reward-0042"), None)[0].destination,
        bob.muxed_id(99).to_string()
    );
    assert_eq!(
        by(Some(&format!("hash:{}", hex::encode(hash_memo))), None).len(),
        1
    );
    assert_eq!(by(Some("id:3"), None).len(), 0);
    assert_eq!(
        by(None, Some(bob.g())).len(),
        2,
        "a G filter matches muxed payments to it"
    );
    assert_eq!(by(None, Some(bob.muxed_id(99).to_string())).len(), 1);
    assert_eq!(by(Some("id:2"), Some(bob.g())).len(), 0);
    assert_eq!(by(None, None).len(), 4);

    let a = get(&app, "/sim/payments?memo=id%3A2").await;
    assert_eq!(a.json["count"], 1);
    assert_eq!(a.json["payments"][0]["destination"], carol.g());
    assert_eq!(a.json["payments"][0]["memo"], "id:2");

    let tx_resource = get(
        &app,
        &format!(
            "/transactions/{}",
            by(Some("text:reward-0042"), None)[0].tx_hash
        ),
    )
    .await;
    assert_eq!(tx_resource.json["memo_type"], "text");
    let hash_payment = &by(Some(&format!("hash:{}", hex::encode(hash_memo))), None)[0];
    let tx_resource = get(&app, &format!("/transactions/{}", hash_payment.tx_hash)).await;
    assert_eq!(tx_resource.json["memo_type"], "hash");
    assert_eq!(
        tx_resource.json["memo"],
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
    );
}

#[tokio::test]
async fn admin_endpoints_and_friendbot() {
    let (sim, app) = manual_sim();
    let (issuer, alice) = (Key::new("issuer"), Key::new("alice"));
    let a = get(&app, &format!("/friendbot?addr={}", alice.g())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(sim.balance(&alice.g(), None), Some(10_000 * XLM));
    assert_eq!(
        get(&app, &format!("/friendbot?addr={}", alice.g()))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/friendbot?addr=GBAD").await.status,
        StatusCode::BAD_REQUEST
    );

    let ok = |a: &Answer| assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    ok(&post_json(
        &app,
        "/sim/accounts",
        json!({"account": issuer.g(), "xlm_stroops": 5 * XLM}),
    )
    .await);
    ok(&post_json(&app, "/sim/trustlines", json!({"account": alice.g(), "asset_code": "USDC", "issuer": issuer.g(), "limit_stroops": 100 * XLM})).await);
    ok(&post_json(&app, "/sim/credit", json!({"account": alice.g(), "asset_code": "USDC", "issuer": issuer.g(), "amount_stroops": 7 * XLM})).await);
    assert_eq!(
        sim.balance(&alice.g(), Some(("USDC", &issuer.g()))),
        Some(7 * XLM)
    );
    let over = post_json(&app, "/sim/credit", json!({"account": alice.g(), "asset_code": "USDC", "issuer": issuer.g(), "amount_stroops": 100 * XLM})).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    let unknown = post_json(&app, "/sim/credit", json!({"account": issuer.g(), "asset_code": "EURT", "issuer": alice.g(), "amount_stroops": 1})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    ok(&put_json(&app, "/sim/base_fee", json!({"stroops": 300})).await);
    assert_eq!(sim.base_fee(), 300);
    let closed = post_json(&app, "/sim/close_ledger", json!({})).await;
    assert_eq!(
        closed.json,
        json!({"sequence": 2, "close_time": GENESIS + 5})
    );
    let bad = post_json(
        &app,
        "/sim/accounts",
        json!({"account": "GBAD", "xlm_stroops": 1}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn interval_mode_over_real_http() {
    let sim = Simulator::new(SimConfig {
        close_mode: CloseMode::Interval {
            close_interval_ms: 50,
        },
        genesis_close_time: None,
        ..SimConfig::default()
    })
    .expect("starts");
    let handle = payoutd_simulator::spawn(sim, "127.0.0.1:0")
        .await
        .expect("binds");
    assert!(handle.base_url.starts_with("http://127.0.0.1:"));
    let http = reqwest::Client::new();
    let base_url = handle.base_url.clone();
    let url = |p: &str| format!("{base_url}{p}");

    let root: serde_json::Value = http
        .get(url("/"))
        .send()
        .await
        .expect("GET /")
        .json()
        .await
        .expect("json");
    assert_eq!(
        root["network_passphrase"],
        "Test SDF Network ; September 2015"
    );

    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    for k in [&alice, &bob] {
        let r = http
            .get(url(&format!("/friendbot?addr={}", k.g())))
            .send()
            .await
            .expect("friendbot");
        assert_eq!(r.status(), 200);
    }
    let account: serde_json::Value = http
        .get(url(&format!("/accounts/{}", alice.g())))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let seq: i64 = account["sequence"]
        .as_str()
        .expect("string")
        .parse()
        .expect("i64");

    let tx = Tx::new(
        &alice,
        seq + 1,
        vec![payment(None, bob.muxed(), Asset::Native, 3 * XLM)],
    )
    .memo(Memo::Id(9));
    let resp = http
        .post(url("/transactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("tx={}", form_encode(&tx.sign(&[&alice]))))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["hash"], tx.hash());
    assert_eq!(handle.sim.balance(&bob.g(), None), Some(10_003 * XLM));

    let list: serde_json::Value = http
        .get(url("/sim/payments?memo=id:9"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(list["count"], 1);

    // Ledgers keep closing on their own, empty or not.
    let before = handle.sim.latest_ledger().sequence;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(handle.sim.latest_ledger().sequence > before);
    handle.shutdown().await;
    assert!(
        http.get(url("/")).send().await.is_err(),
        "the server stopped"
    );
}
