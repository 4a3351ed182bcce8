//! Horizon as several nodes behind a load balancer: the `Latest-Ledger` header on every
//! answer, a lagging node that has not ingested the newest ledgers, and pruned history.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use payoutd_simulator::{Faults, PaymentFilter, SimConfig, Simulator, router};
use serde_json::json;
use stellar_xdr::{Asset, TransactionResultResult};
use support::*;

/// A manual-mode simulator with alice and bob funded and `closes` empty ledgers closed.
fn setup(cfg: SimConfig, closes: u32) -> (Arc<Simulator>, axum::Router, Key, Key) {
    let sim = Simulator::new(cfg).expect("starts");
    let app = router(Arc::clone(&sim));
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    for _ in 0..closes {
        sim.close_ledger();
    }
    (sim, app, alice, bob)
}

fn pay(sim: &Simulator, from: &Key, to: &Key, seq_offset: i64) -> Tx {
    Tx::new(
        from,
        seq(sim, from) + seq_offset,
        vec![payment(None, to.muxed(), Asset::Native, XLM)],
    )
}

fn lagging(lag: u32, p: f64) -> Faults {
    Faults {
        lookup_lag_ledgers: lag,
        p_lookup_lagging: p,
        ..Faults::default()
    }
}

#[tokio::test]
async fn every_horizon_answer_carries_latest_ledger() {
    let (sim, app, alice, bob) = setup(manual_config(), 2);
    let head = sim.latest_ledger().sequence;
    assert_eq!(head, 3);
    let check = |what: &str, a: &Answer, status: StatusCode, ledger: u32| {
        assert_eq!(a.status, status, "{what}: {}", a.body);
        assert_eq!(a.latest_ledger, Some(ledger), "{what}");
    };

    check("root", &get(&app, "/").await, StatusCode::OK, head);
    let acct = format!("/accounts/{}", alice.g());
    check("account", &get(&app, &acct).await, StatusCode::OK, head);
    let nobody = format!("/accounts/{}", Key::new("nobody").g());
    check(
        "no account",
        &get(&app, &nobody).await,
        StatusCode::NOT_FOUND,
        head,
    );
    check(
        "bad account id",
        &get(&app, "/accounts/GBAD").await,
        StatusCode::BAD_REQUEST,
        head,
    );
    let unknown_tx = format!("/transactions/{}", "ab".repeat(32));
    check(
        "unknown tx",
        &get(&app, &unknown_tx).await,
        StatusCode::NOT_FOUND,
        head,
    );
    check(
        "bad hash",
        &get(&app, "/transactions/xyz").await,
        StatusCode::BAD_REQUEST,
        head,
    );
    check(
        "wrong method",
        &get(&app, "/transactions_async").await,
        StatusCode::METHOD_NOT_ALLOWED,
        head,
    );
    for path in ["/transactions", "/transactions_async"] {
        check(
            path,
            &post_tx(&app, path, "AAAA").await,
            StatusCode::BAD_REQUEST,
            head,
        );
        let no_form = post_json(&app, path, json!({"tx": "AAAA"})).await;
        check(path, &no_form, StatusCode::BAD_REQUEST, head);
        let bad_seq = pay(&sim, &alice, &bob, 5).sign(&[&alice]);
        check(
            path,
            &post_tx(&app, path, &bad_seq).await,
            StatusCode::BAD_REQUEST,
            head,
        );
    }

    // Accepted, duplicate, one-per-source, then included: the answer after the close
    // carries the ledger it was included in.
    let tx = pay(&sim, &alice, &bob, 1);
    let a = post_tx(&app, "/transactions_async", &tx.sign(&[&alice])).await;
    check("pending", &a, StatusCode::CREATED, head);
    let a = post_tx(&app, "/transactions_async", &tx.sign(&[&alice])).await;
    check("duplicate", &a, StatusCode::CONFLICT, head);
    let other = pay(&sim, &alice, &bob, 1).memo(stellar_xdr::Memo::Id(1));
    for path in ["/transactions", "/transactions_async"] {
        let a = post_tx(&app, path, &other.sign(&[&alice])).await;
        check("try again later", &a, StatusCode::SERVICE_UNAVAILABLE, head);
    }
    // A sync post of the pending envelope waits for its inclusion, or, arriving after the
    // close, finds it included: the same answer either way.
    let task = post_in_task(&app, &tx.sign(&[&alice]));
    sim.close_ledger();
    let a = task.await.expect("post task");
    check("included", &a, StatusCode::OK, head + 1);
    let found = get(&app, &format!("/transactions/{}", tx.hash())).await;
    check("found", &found, StatusCode::OK, head + 1);

    // Injected faults carry it too.
    sim.set_faults(Faults {
        p_5xx_before_apply: 1.0,
        ..Faults::default()
    });
    let a = post_tx(
        &app,
        "/transactions",
        &pay(&sim, &alice, &bob, 1).sign(&[&alice]),
    )
    .await;
    assert!(a.status.is_server_error(), "{}", a.body);
    assert_eq!(a.latest_ledger, Some(head + 1));

    // The admin endpoints are not Horizon and do not.
    assert_eq!(get(&app, "/sim/status").await.latest_ledger, None);
}

#[tokio::test]
async fn lagging_lookup_answers_404_until_the_lag_is_caught_up() {
    let (sim, app, alice, bob) = setup(manual_config(), 0);
    sim.set_faults(lagging(2, 1.0));
    let tx = pay(&sim, &alice, &bob, 1);
    // An async submission needs no ingestion; the lagging node answers PENDING at once.
    let a = post_tx(&app, "/transactions_async", &tx.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.latest_ledger, Some(1), "never below the genesis ledger");
    let included_in = sim.close_ledger().sequence;
    assert_eq!(included_in, 2);
    let lookup = format!("/transactions/{}", tx.hash());

    for head in [2, 3] {
        let a = get(&app, &lookup).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "head {head}: {}", a.body);
        assert_eq!(
            a.json["type"],
            "https://stellar.org/horizon-errors/not_found"
        );
        assert_eq!(a.latest_ledger, Some((head - 2).max(1)));
        // Meanwhile the head node shows the sequence number used and the ledger closed.
        let acct = get(&app, &format!("/accounts/{}", alice.g())).await;
        assert_eq!(acct.latest_ledger, Some(head));
        assert_eq!(acct.json["sequence"], seq(&sim, &alice).to_string());
        assert_eq!(seq(&sim, &alice), tx.seq, "the sequence number is consumed");
        let root = get(&app, "/").await;
        assert_eq!(root.json["history_latest_ledger"], head);
        sim.close_ledger();
    }
    // Head 4: the lagging node has ingested ledger 2.
    let a = get(&app, &lookup).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.latest_ledger, Some(2));
    assert_eq!(a.json["ledger"], included_in);

    let counts = sim.fault_counts();
    assert_eq!(counts.transactions_hidden_by_lag, 2);
    assert_eq!(
        counts.answers_from_lagging_node, 4,
        "one submission, three lookups"
    );
    // Catching up by removing the lag shows it on every node.
    sim.set_faults(Faults::default());
    assert_eq!(get(&app, &lookup).await.latest_ledger, Some(4));
}

#[tokio::test]
async fn repost_is_tx_bad_seq_on_the_lagging_node_and_the_original_on_the_head() {
    let (sim, app, alice, bob) = setup(manual_config(), 3);
    let tx = pay(&sim, &alice, &bob, 1);
    let env = tx.sign(&[&alice]);
    let first = submit_and_close(&sim, &app, &env).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let head = sim.latest_ledger().sequence;
    assert_eq!(head, 5);

    sim.set_faults(lagging(3, 1.0));
    let a = post_tx(&app, "/transactions", &env).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(
        a.json["type"],
        "https://stellar.org/horizon-errors/transaction_failed"
    );
    assert_eq!(result_codes(&a), ("tx_bad_seq".to_owned(), None));
    let r = decode_result(a.json["extras"]["result_xdr"].as_str().expect("result_xdr"));
    assert_eq!(r.result, TransactionResultResult::TxBadSeq);
    assert_eq!(a.latest_ledger, Some(head - 3));
    let a = post_tx(&app, "/transactions_async", &env).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["tx_status"], "ERROR");
    let r = decode_result(a.json["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(r.result, TransactionResultResult::TxBadSeq);
    assert_eq!(a.latest_ledger, Some(head - 3));
    assert_eq!(
        sim.fault_counts().transactions_hidden_by_lag,
        1,
        "async asks core only"
    );

    // The head node (p = 0) answers the original result.
    sim.set_faults(lagging(3, 0.0));
    let a = post_tx(&app, "/transactions", &env).await;
    assert_eq!((a.status, &a.body), (first.status, &first.body));
    assert_eq!(a.latest_ledger, Some(head));
    assert_eq!(sim.balance(&bob.g(), None), Some(101 * XLM), "paid once");

    // A fresh submission served by the lagging node is answered once that node has ingested
    // its ledger: with a lag of 1, one close after the close that included it.
    sim.set_faults(lagging(1, 1.0));
    let next = pay(&sim, &alice, &bob, 1);
    let task = post_in_task(&app, &next.sign(&[&alice]));
    until_pending(&sim, 1).await;
    let included_in = sim.close_ledger().sequence;
    assert!(sim.transaction(&next.hash()).is_some());
    sim.close_ledger();
    let a = task.await.expect("post task");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json["ledger"], included_in);
    assert_eq!(
        a.latest_ledger,
        Some(included_in),
        "answered by the node that ingested it"
    );
    // And a re-post to a lagging node that has ingested it gets the original result.
    let again = post_tx(&app, "/transactions", &next.sign(&[&alice])).await;
    assert_eq!((again.status, &again.body), (a.status, &a.body));
}

/// Which of `lookups` lookups by hash find a transaction in the head ledger, under a lag
/// served with probability 0.5, and the statuses of submissions interleaved with them.
async fn lagging_run(seed: u64, lookups: usize) -> (Vec<bool>, Vec<u16>) {
    let cfg = SimConfig {
        seed,
        faults: Faults {
            p_5xx_before_apply: 0.3,
            ..lagging(1, 0.5)
        },
        ..manual_config()
    };
    let (sim, app, alice, bob) = setup(cfg, 0);
    let mut found = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let tx = pay(&sim, &alice, &bob, 1);
        let a = post_tx(&app, "/transactions_async", &tx.sign(&[&alice])).await;
        statuses.push(a.status.as_u16());
        sim.close_ledger();
        for _ in 0..lookups {
            let a = get(&app, &format!("/transactions/{}", tx.hash())).await;
            found.push(a.status == StatusCode::OK);
        }
    }
    (found, statuses)
}

#[tokio::test]
async fn lagging_node_draws_replay_with_a_seed() {
    let (a, statuses) = lagging_run(11, 4).await;
    let (b, statuses_b) = lagging_run(11, 4).await;
    assert_eq!((&a, &statuses), (&b, &statuses_b), "same seed, same nodes");
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
    let (c, _) = lagging_run(12, 4).await;
    assert_ne!(a, c, "another seed, other nodes");
    // Node draws have their own stream: polling more or less does not shift the
    // submission faults of a seed.
    let (_, statuses_without_lookups) = lagging_run(11, 0).await;
    assert_eq!(statuses, statuses_without_lookups);
    assert!(statuses.iter().any(|s| *s >= 500), "{statuses:?}");
}

#[tokio::test]
async fn pruning_moves_the_elder_and_hides_old_transactions() {
    let (sim, app, alice, bob) = setup(manual_config(), 0);
    sim.set_faults(Faults {
        history_retention_ledgers: 3,
        ..Faults::default()
    });
    let tx = pay(&sim, &alice, &bob, 1);
    let env = tx.sign(&[&alice]);
    let first = submit_and_close(&sim, &app, &env).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.json["ledger"], 2);
    let lookup = format!("/transactions/{}", tx.hash());

    // Elder = max(1, head - 3 + 1).
    for (head, elder) in [(2, 1), (3, 1), (4, 2)] {
        assert_eq!(sim.latest_ledger().sequence, head);
        let root = get(&app, "/").await;
        assert_eq!(root.json["history_elder_ledger"], elder, "head {head}");
        assert_eq!(
            get(&app, &lookup).await.status,
            StatusCode::OK,
            "head {head}"
        );
        sim.close_ledger();
    }
    // Head 5: ledger 2 is pruned.
    let root = get(&app, "/").await;
    assert_eq!(root.json["history_elder_ledger"], 3);
    assert_eq!(root.json["history_latest_ledger"], 5);
    let a = get(&app, &lookup).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.latest_ledger, Some(5));
    let a = post_tx(&app, "/transactions", &env).await;
    assert_eq!(
        result_codes(&a).0,
        "tx_bad_seq",
        "Horizon can't find it; core says so"
    );
    assert_eq!(sim.fault_counts().transactions_hidden_by_pruning, 2);

    // Hidden, not deleted.
    assert!(sim.transaction(&tx.hash()).is_some());
    assert_eq!(sim.payments(&PaymentFilter::default()).len(), 1);
    sim.set_faults(Faults::default());
    assert_eq!(get(&app, "/").await.json["history_elder_ledger"], 1);
    let a = post_tx(&app, "/transactions", &env).await;
    assert_eq!((a.status, &a.body), (first.status, &first.body));

    // The lagging node prunes from its own latest ledger.
    sim.set_faults(Faults {
        history_retention_ledgers: 2,
        ..lagging(2, 1.0)
    });
    let status = get(&app, "/sim/status").await;
    assert_eq!(status.json["head_node"], json!({"latest": 5, "elder": 4}));
    assert_eq!(
        status.json["lagging_node"],
        json!({"latest": 3, "elder": 2})
    );
    assert_eq!(
        get(&app, &lookup).await.status,
        StatusCode::OK,
        "ledger 2 in 2..=3"
    );
}
