//! Payouts to accounts that are not ready: create-account, create-claimable-balance and
//! claim-claimable-balance, with their reserves, result codes and ids, alone and batched
//! with payments.

mod support;

use axum::http::StatusCode;
use payoutd_simulator::{PaymentFilter, PaymentKind, SimConfig, Simulator, router};
use serde_json::json;
use stellar_xdr::{
    ClaimPredicate, ClaimableBalanceId, Claimant, ClaimantV0, CreateAccountResult,
    CreateClaimableBalanceOp, CreateClaimableBalanceResult, Hash, Operation, OperationBody,
    OperationResult, OperationResultTr, PaymentResult, TransactionResultResult,
};
use support::*;

/// The results of the operations of a `result_xdr`.
fn op_results(result_xdr: &str) -> Vec<OperationResult> {
    match decode_result(result_xdr).result {
        TransactionResultResult::TxSuccess(ops) | TransactionResultResult::TxFailed(ops) => {
            ops.to_vec()
        }
        other => panic!("no operation results in {other:?}"),
    }
}

fn horizon_account(sim: &Simulator, k: &Key) -> payoutd_simulator::state::Account {
    sim.account(&k.g()).expect("account exists")
}

#[tokio::test]
async fn create_account_creates_it_with_the_starting_balance_and_ledger_sequence() {
    let (sim, app) = manual_sim();
    let (alice, carol) = (Key::new("alice"), Key::new("carol"));
    fund(&sim, &[&alice], 100);
    let s = seq(&sim, &alice);
    let tx = Tx::new(&alice, s + 1, vec![create_account(None, &carol, 5 * XLM)]);
    let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["ledger"], 2);
    assert_eq!(
        op_results(a.json["result_xdr"].as_str().expect("result_xdr")),
        vec![OperationResult::OpInner(OperationResultTr::CreateAccount(
            CreateAccountResult::Success
        ))]
    );
    assert_eq!(sim.balance(&carol.g(), None), Some(5 * XLM));
    assert_eq!(sim.balance(&alice.g(), None), Some(95 * XLM - 100));
    assert_eq!(
        seq(&sim, &carol),
        2 << 32,
        "the sequence number of the ledger that created it"
    );
    let acct = get(&app, &format!("/accounts/{}", carol.g())).await;
    assert_eq!(acct.status, StatusCode::OK);
    assert_eq!(acct.json["sequence"], (2i64 << 32).to_string());
    assert_eq!(acct.json["balances"][0]["balance"], "5.0000000");

    // The new account can pay at once.
    let back = Tx::new(
        &carol,
        seq(&sim, &carol) + 1,
        vec![payment(
            None,
            alice.muxed(),
            stellar_xdr::Asset::Native,
            XLM,
        )],
    );
    let a = submit_and_close(&sim, &app, &back.sign(&[&carol])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let payments = sim.payments(&PaymentFilter {
        destination: Some(carol.g()),
        ..PaymentFilter::default()
    });
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].kind, PaymentKind::CreateAccount);
    assert_eq!(payments[0].source, alice.g());
    assert_eq!(payments[0].asset, "native");
    assert_eq!(payments[0].amount_stroops, 5 * XLM);
    let listed = get(&app, "/sim/payments").await;
    assert_eq!(listed.json["payments"][0]["kind"], "create_account");
    assert_eq!(listed.json["payments"][1]["kind"], "payment");
    assert!(listed.json["payments"][1].get("balance_id").is_none());
}

#[tokio::test]
async fn create_account_failures_have_core_codes_and_consume_only_fee_and_sequence() {
    let (sim, app) = manual_sim();
    let (alice, bob, carol) = (Key::new("alice"), Key::new("bob"), Key::new("carol"));
    fund(&sim, &[&alice, &bob], 10);
    let s = std::cell::Cell::new(seq(&sim, &alice));
    let run = async |op: Operation| {
        s.set(s.get() + 1);
        let tx = Tx::new(&alice, s.get(), vec![op]);
        submit_and_close(&sim, &app, &tx.sign(&[&alice])).await
    };

    // Below a new account's minimum balance of 2 base reserves (1 XLM).
    let a = run(create_account(None, &carol, XLM - 1)).await;
    assert_eq!(
        result_codes(&a),
        (
            "tx_failed".to_owned(),
            Some(vec!["op_low_reserve".to_owned()])
        )
    );
    assert_eq!(sim.account(&carol.g()), None);
    let a = run(create_account(None, &bob, 2 * XLM)).await;
    assert_eq!(
        result_codes(&a).1,
        Some(vec!["op_already_exists".to_owned()])
    );
    // Alice has 10 XLM minus fees, 1 XLM of it reserved.
    let a = run(create_account(None, &carol, 9 * XLM)).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_underfunded".to_owned()]));
    assert_eq!(sim.balance(&alice.g(), None), Some(10 * XLM - 300));
    assert_eq!(seq(&sim, &alice), s.get());

    // Malformed ones never enter a ledger: nothing consumed.
    let before = seq(&sim, &alice);
    for op in [
        create_account(None, &carol, -1),
        create_account(None, &alice, 2 * XLM),
    ] {
        let tx = Tx::new(&alice, before + 1, vec![op]);
        let a = post_tx(&app, "/transactions", &tx.sign(&[&alice])).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            result_codes(&a),
            (
                "tx_failed".to_owned(),
                Some(vec!["op_malformed".to_owned()])
            )
        );
    }
    assert_eq!(seq(&sim, &alice), before);

    // At the exact minimum it works; the account then holds only its reserve.
    let a = run(create_account(None, &carol, XLM)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(sim.balance(&carol.g(), None), Some(XLM));
}

#[tokio::test]
async fn claimable_balance_has_cores_id_locks_a_reserve_per_claimant_and_claiming_returns_it() {
    let (sim, app) = manual_sim();
    let (alice, carol, dave) = (Key::new("alice"), Key::new("carol"), Key::new("dave"));
    fund(&sim, &[&alice, &carol, &dave], 100);
    let s = seq(&sim, &alice);
    // A payment first, so the balance is operation 1 of the transaction.
    let tx = Tx::new(
        &alice,
        s + 1,
        vec![
            payment(None, dave.muxed(), stellar_xdr::Asset::Native, XLM),
            create_balance(None, stellar_xdr::Asset::Native, 20 * XLM, &[&carol, &dave]),
        ],
    );
    let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = expected_balance_id(&alice, s + 1, 1);
    let mut id_hash = [0u8; 32];
    hex::decode_to_slice(&id[8..], &mut id_hash).expect("hex");
    let results = op_results(a.json["result_xdr"].as_str().expect("result_xdr"));
    assert_eq!(
        results[1],
        OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(
            CreateClaimableBalanceResult::Success(ClaimableBalanceId::ClaimableBalanceIdTypeV0(
                Hash(id_hash)
            ))
        )),
        "the result carries the id core computes"
    );

    // 20 XLM moved, and two reserves (one per claimant) are locked on alice.
    let fee = 200;
    assert_eq!(sim.balance(&alice.g(), None), Some(79 * XLM - fee));
    assert_eq!(horizon_account(&sim, &alice).num_sponsoring, 2);
    let acct = get(&app, &format!("/accounts/{}", alice.g())).await;
    assert_eq!(acct.json["num_sponsoring"], 2);
    let listed = get(
        &app,
        &format!("/sim/claimable_balances?claimant={}", dave.g()),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.json["count"], 1);
    let cb = &listed.json["claimable_balances"][0];
    assert_eq!(cb["id"], id);
    assert_eq!(cb["asset"], "native");
    assert_eq!(cb["amount_stroops"], 20 * XLM);
    assert_eq!(cb["claimants"], json!([carol.g(), dave.g()]));
    assert_eq!(cb["sponsor"], alice.g());
    assert_eq!(cb["tx_hash"], tx.hash());
    assert_eq!(cb["op_index"], 1);
    let by_id = get(&app, &format!("/sim/claimable_balances/{id}")).await;
    assert_eq!(&by_id.json, cb);
    let nobody = get(
        &app,
        &format!("/sim/claimable_balances?claimant={}", alice.g()),
    )
    .await;
    assert_eq!(nobody.json["count"], 0);
    let bad = get(&app, "/sim/claimable_balances?claimant=GBAD").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // The payments list has it, found by any claimant.
    let p = sim.payments(&PaymentFilter {
        destination: Some(carol.g()),
        ..PaymentFilter::default()
    });
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, PaymentKind::CreateClaimableBalance);
    assert_eq!(p[0].balance_id.as_deref(), Some(id.as_str()));
    assert_eq!(p[0].destination, carol.g());
    assert_eq!(p[0].claimants, vec![carol.g(), dave.g()]);
    assert_eq!(p[0].op_index, 1);

    // The locked reserves cannot be spent: alice's 79 XLM minus fees, minus 3 reserves
    // (2 base + 2 sponsored = 2 XLM) leaves less than 77 XLM.
    let spend = Tx::new(
        &alice,
        s + 2,
        vec![payment(
            None,
            carol.muxed(),
            stellar_xdr::Asset::Native,
            77 * XLM,
        )],
    );
    let a = submit_and_close(&sim, &app, &spend.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_underfunded".to_owned()]));

    // Only a claimant may claim.
    let steal = Tx::new(&alice, s + 3, vec![claim(None, &id)]);
    let a = submit_and_close(&sim, &app, &steal.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_cannot_claim".to_owned()]));

    // Carol claims it: she receives it, alice's reserves are released, the balance is gone.
    let before = sim.balance(&carol.g(), None).expect("carol");
    let take = Tx::new(&carol, seq(&sim, &carol) + 1, vec![claim(None, &id)]);
    let a = submit_and_close(&sim, &app, &take.sign(&[&carol])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(sim.balance(&carol.g(), None), Some(before + 20 * XLM - 100));
    assert_eq!(horizon_account(&sim, &alice).num_sponsoring, 0);
    assert_eq!(
        get(&app, &format!("/sim/claimable_balances/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Claimed once: a second claim finds nothing.
    let again = Tx::new(&dave, seq(&sim, &dave) + 1, vec![claim(None, &id)]);
    let a = submit_and_close(&sim, &app, &again.sign(&[&dave])).await;
    assert_eq!(
        result_codes(&a).1,
        Some(vec!["op_does_not_exist".to_owned()])
    );
    // Alice can now spend what the reserves held.
    let spend = Tx::new(
        &alice,
        s + 4,
        vec![payment(
            None,
            carol.muxed(),
            stellar_xdr::Asset::Native,
            77 * XLM,
        )],
    );
    let a = submit_and_close(&sim, &app, &spend.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn credit_claimable_balances_need_trust_to_create_and_to_claim() {
    let (sim, app) = manual_sim();
    let (issuer, dist, carol) = (
        Key::new("issuer"),
        Key::new("distribution"),
        Key::new("carol"),
    );
    fund(&sim, &[&issuer, &dist, &carol], 100);
    let usdc_bal = |k: &Key| sim.balance(&k.g(), Some(("USDC", issuer.g().as_str())));
    let s = std::cell::Cell::new(seq(&sim, &dist));
    let send = async |ops: Vec<Operation>| {
        s.set(s.get() + 1);
        submit_and_close(&sim, &app, &Tx::new(&dist, s.get(), ops).sign(&[&dist])).await
    };

    let a = send(vec![create_balance(None, usdc(&issuer), XLM, &[&carol])]).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_no_trust".to_owned()]));
    sim.add_trustline(&dist.g(), "USDC", &issuer.g(), 1_000 * XLM)
        .expect("trustline");
    sim.credit(&dist.g(), "USDC", &issuer.g(), 50 * XLM)
        .expect("mint");
    let a = send(vec![create_balance(
        None,
        usdc(&issuer),
        60 * XLM,
        &[&carol],
    )])
    .await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_underfunded".to_owned()]));

    // Carol has no USDC trustline: a claimable balance is how to pay her.
    let a = send(vec![create_balance(
        None,
        usdc(&issuer),
        30 * XLM,
        &[&carol],
    )])
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = expected_balance_id(&dist, s.get(), 0);
    assert_eq!(usdc_bal(&dist), Some(20 * XLM));
    let cb = sim.claimable_balance(&id).expect("open");
    assert_eq!(cb.asset, format!("USDC:{}", issuer.g()));

    let mut cs = seq(&sim, &carol);
    let a = submit_and_close(
        &sim,
        &app,
        &Tx::new(&carol, cs + 1, vec![claim(None, &id)]).sign(&[&carol]),
    )
    .await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_no_trust".to_owned()]));
    cs += 1;
    sim.add_trustline(&carol.g(), "USDC", &issuer.g(), 10 * XLM)
        .expect("trustline");
    let a = submit_and_close(
        &sim,
        &app,
        &Tx::new(&carol, cs + 1, vec![claim(None, &id)]).sign(&[&carol]),
    )
    .await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_line_full".to_owned()]));
    cs += 1;
    sim.add_trustline(&carol.g(), "USDC", &issuer.g(), 100 * XLM)
        .expect("raise the limit");
    let a = submit_and_close(
        &sim,
        &app,
        &Tx::new(&carol, cs + 1, vec![claim(None, &id)]).sign(&[&carol]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(usdc_bal(&carol), Some(30 * XLM));
    assert!(sim.claimable_balance(&id).is_none());

    // The issuer creates its own asset without a trustline.
    let is = seq(&sim, &issuer);
    let a = submit_and_close(
        &sim,
        &app,
        &Tx::new(
            &issuer,
            is + 1,
            vec![create_balance(None, usdc(&issuer), XLM, &[&carol])],
        )
        .sign(&[&issuer]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn claimable_balance_needs_a_free_reserve_per_claimant_and_valid_claimants() {
    let (sim, app) = manual_sim();
    let (alice, carol, dave) = (Key::new("alice"), Key::new("carol"), Key::new("dave"));
    fund(&sim, &[&alice, &carol], 10);
    let s = seq(&sim, &alice);
    // 10 XLM - 1 XLM reserve - fee leaves just under 9 XLM: 8.5 XLM for the balance leaves
    // less than the 2 reserves (1 XLM) two claimants need.
    let tx = Tx::new(
        &alice,
        s + 1,
        vec![create_balance(
            None,
            stellar_xdr::Asset::Native,
            85 * XLM / 10,
            &[&carol, &dave],
        )],
    );
    let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_low_reserve".to_owned()]));
    let tx = Tx::new(
        &alice,
        s + 2,
        vec![create_balance(
            None,
            stellar_xdr::Asset::Native,
            95 * XLM / 10,
            &[&carol],
        )],
    );
    let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
    assert_eq!(result_codes(&a).1, Some(vec!["op_underfunded".to_owned()]));
    assert_eq!(horizon_account(&sim, &alice).num_sponsoring, 0);
    assert!(sim.claimable_balances(None).expect("list").is_empty());

    // Refused before inclusion, nothing consumed: no claimants, a repeated claimant, a zero
    // amount (op_malformed), and a predicate the simulator does not model.
    let conditional = Operation {
        source_account: None,
        body: OperationBody::CreateClaimableBalance(CreateClaimableBalanceOp {
            asset: stellar_xdr::Asset::Native,
            amount: XLM,
            claimants: vec![Claimant::ClaimantTypeV0(ClaimantV0 {
                destination: carol.account_id(),
                predicate: ClaimPredicate::BeforeAbsoluteTime(1_800_000_000),
            })]
            .try_into()
            .expect("one claimant"),
        }),
    };
    for (op, code) in [
        (
            create_balance(None, stellar_xdr::Asset::Native, XLM, &[]),
            "op_malformed",
        ),
        (
            create_balance(None, stellar_xdr::Asset::Native, XLM, &[&carol, &carol]),
            "op_malformed",
        ),
        (
            create_balance(None, stellar_xdr::Asset::Native, 0, &[&carol]),
            "op_malformed",
        ),
        (conditional, "op_not_supported"),
    ] {
        let tx = Tx::new(&alice, s + 3, vec![op]);
        let a = post_tx(&app, "/transactions", &tx.sign(&[&alice])).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{code}");
        assert_eq!(
            result_codes(&a),
            ("tx_failed".to_owned(), Some(vec![code.to_owned()]))
        );
    }
    assert_eq!(seq(&sim, &alice), s + 2);
}

#[tokio::test]
async fn a_failing_operation_in_a_mixed_batch_undoes_the_whole_batch() {
    let (sim, app) = manual_sim();
    let (dist, channel, bob, newbie, carol, ghost) = (
        Key::new("distribution"),
        Key::new("channel"),
        Key::new("bob"),
        Key::new("newbie"),
        Key::new("carol"),
        Key::new("ghost"),
    );
    fund(&sim, &[&dist, &channel, &bob, &carol], 100);
    let ops = |last: Operation| {
        vec![
            payment(Some(&dist), bob.muxed(), stellar_xdr::Asset::Native, XLM),
            create_account(Some(&dist), &newbie, 2 * XLM),
            create_balance(Some(&dist), stellar_xdr::Asset::Native, 3 * XLM, &[&carol]),
            last,
        ]
    };
    let cs = seq(&sim, &channel);
    let bad = Tx::new(
        &channel,
        cs + 1,
        ops(payment(
            Some(&dist),
            ghost.muxed(),
            stellar_xdr::Asset::Native,
            XLM,
        )),
    );
    let a = submit_and_close(&sim, &app, &bad.sign(&[&channel, &dist])).await;
    assert_eq!(
        result_codes(&a),
        (
            "tx_failed".to_owned(),
            Some(vec![
                "op_success".to_owned(),
                "op_success".to_owned(),
                "op_success".to_owned(),
                "op_no_destination".to_owned(),
            ])
        )
    );
    // The would-be balance's result still names its id, as core's does.
    let results = op_results(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
    assert!(matches!(
        &results[2],
        OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(
            CreateClaimableBalanceResult::Success(_)
        ))
    ));
    assert!(matches!(
        results[3],
        OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::NoDestination))
    ));
    // Nothing happened but the fee and the sequence number.
    assert_eq!(sim.balance(&dist.g(), None), Some(100 * XLM));
    assert_eq!(sim.balance(&bob.g(), None), Some(100 * XLM));
    assert_eq!(sim.account(&newbie.g()), None);
    assert!(sim.claimable_balances(None).expect("list").is_empty());
    assert_eq!(horizon_account(&sim, &dist).num_sponsoring, 0);
    assert!(sim.payments(&PaymentFilter::default()).is_empty());
    assert_eq!(sim.balance(&channel.g(), None), Some(100 * XLM - 400));
    assert_eq!(seq(&sim, &channel), cs + 1);

    // The same batch with a good last operation applies all four.
    let good = Tx::new(
        &channel,
        cs + 2,
        ops(payment(
            Some(&dist),
            carol.muxed(),
            stellar_xdr::Asset::Native,
            XLM,
        )),
    );
    let a = submit_and_close(&sim, &app, &good.sign(&[&channel, &dist])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(sim.balance(&newbie.g(), None), Some(2 * XLM));
    // The balance id comes from the transaction's source (the channel), not the
    // operation's source (the distribution account).
    let id = expected_balance_id(&channel, cs + 2, 2);
    assert_eq!(
        sim.claimable_balance(&id).map(|cb| cb.sponsor.to_string()),
        Some(dist.g())
    );
    let kinds: Vec<PaymentKind> = sim
        .payments(&PaymentFilter::default())
        .iter()
        .map(|p| p.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            PaymentKind::Payment,
            PaymentKind::CreateAccount,
            PaymentKind::CreateClaimableBalance,
            PaymentKind::Payment
        ]
    );
    assert_eq!(sim.balance(&dist.g(), None), Some(93 * XLM));
}

#[tokio::test]
async fn claimable_balances_and_reserves_survive_a_restart() {
    let dir =
        std::env::temp_dir().join(format!("payoutd-sim-cb-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state_file = dir.join("sim.jsonl");
    let _ = std::fs::remove_file(&state_file);
    let cfg = || SimConfig {
        state_file: Some(state_file.clone()),
        ..manual_config()
    };
    let (alice, carol) = (Key::new("alice"), Key::new("carol"));
    let id = {
        let sim = Simulator::new(cfg()).expect("starts");
        let app = router(sim.clone());
        fund(&sim, &[&alice, &carol], 100);
        let s = seq(&sim, &alice);
        let tx = Tx::new(
            &alice,
            s + 1,
            vec![create_balance(
                None,
                stellar_xdr::Asset::Native,
                5 * XLM,
                &[&carol],
            )],
        );
        let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        expected_balance_id(&alice, s + 1, 0)
    };
    let sim = Simulator::new(cfg()).expect("restarts");
    let app = router(sim.clone());
    let cb = sim.claimable_balance(&id).expect("kept across the restart");
    assert_eq!(cb.amount_stroops, 5 * XLM);
    assert_eq!(horizon_account(&sim, &alice).num_sponsoring, 1);
    let p = sim.payments(&PaymentFilter::default());
    assert_eq!(p[0].kind, PaymentKind::CreateClaimableBalance);
    let take = Tx::new(&carol, seq(&sim, &carol) + 1, vec![claim(None, &id)]);
    let a = submit_and_close(&sim, &app, &take.sign(&[&carol])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    drop(sim);
    let sim = Simulator::new(cfg()).expect("restarts again");
    assert!(
        sim.claimable_balance(&id).is_none(),
        "the claim is kept too"
    );
    assert_eq!(horizon_account(&sim, &alice).num_sponsoring, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
