//! Horizon's account history listings (`/accounts/{id}/transactions`, `/operations`,
//! `/payments`): who is a participant, the record fields, paging, failed transactions, and
//! pruned or lagging history.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use payoutd_simulator::{Faults, Simulator};
use serde_json::{Value, json};
use stellar_xdr::{Asset, Memo};
use support::*;

/// Every record of a listing, following `next` links from `first` pages of `limit`.
async fn all_pages(app: &axum::Router, first: &str) -> (Vec<Value>, usize) {
    let mut records = Vec::new();
    let mut url = first.to_owned();
    let mut pages = 0;
    loop {
        let a = get(app, &url).await;
        assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.body);
        pages += 1;
        let page = a.json["_embedded"]["records"]
            .as_array()
            .expect("records")
            .clone();
        if page.is_empty() {
            return (records, pages);
        }
        records.extend(page);
        url = a.json["_links"]["next"]["href"]
            .as_str()
            .expect("next link")
            .to_owned();
        assert!(pages < 100, "paging does not end");
    }
}

fn tokens(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| {
            r["paging_token"]
                .as_str()
                .expect("paging_token")
                .parse()
                .expect("numeric token")
        })
        .collect()
}

struct Setup {
    sim: Arc<Simulator>,
    app: axum::Router,
    channel: Key,
    dist: Key,
    bob: Key,
    carol: Key,
    newbie: Key,
}

/// Ledger 2: the channel pays bob 1 XLM from the distribution account (op source).
/// Ledger 3: the distribution account creates newbie and a claimable balance for carol.
/// Ledger 4: carol claims it.
async fn setup() -> (Setup, [Tx; 3], String) {
    let (sim, app) = manual_sim();
    let (channel, dist, bob, carol, newbie) = (
        Key::new("channel"),
        Key::new("distribution"),
        Key::new("bob"),
        Key::new("carol"),
        Key::new("newbie"),
    );
    fund(&sim, &[&channel, &dist, &bob, &carol], 100);
    let t1 = Tx::new(
        &channel,
        seq(&sim, &channel) + 1,
        vec![payment(Some(&dist), bob.muxed_id(7), Asset::Native, XLM)],
    )
    .memo(Memo::Id(1));
    let a = submit_and_close(&sim, &app, &t1.sign(&[&channel, &dist])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let ds = seq(&sim, &dist);
    let t2 = Tx::new(
        &dist,
        ds + 1,
        vec![
            create_account(None, &newbie, 2 * XLM),
            create_balance(None, Asset::Native, 3 * XLM, &[&carol]),
        ],
    );
    let a = submit_and_close(&sim, &app, &t2.sign(&[&dist])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = expected_balance_id(&dist, ds + 1, 1);
    let t3 = Tx::new(&carol, seq(&sim, &carol) + 1, vec![claim(None, &id)]);
    let a = submit_and_close(&sim, &app, &t3.sign(&[&carol])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    (
        Setup {
            sim,
            app,
            channel,
            dist,
            bob,
            carol,
            newbie,
        },
        [t1, t2, t3],
        id,
    )
}

fn toid(ledger: u64, order: u64, op_number: u64) -> u64 {
    (ledger << 32) | (order << 12) | op_number
}

#[tokio::test]
async fn participants_follow_horizons_rule() {
    let (s, [t1, t2, t3], _) = setup().await;
    let hashes = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .map(|r| {
                r["transaction_hash"]
                    .as_str()
                    .or(r["hash"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let list = async |who: &Key, what: &str| -> Vec<Value> {
        let a = get(&s.app, &format!("/accounts/{}/{what}?limit=200", who.g())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.json["_embedded"]["records"]
            .as_array()
            .expect("records")
            .clone()
    };

    // Transactions: the source, every operation's source and the accounts they name.
    assert_eq!(
        hashes(&list(&s.channel, "transactions").await),
        vec![t1.hash()]
    );
    assert_eq!(
        hashes(&list(&s.dist, "transactions").await),
        vec![t1.hash(), t2.hash()]
    );
    assert_eq!(
        hashes(&list(&s.bob, "transactions").await),
        vec![t1.hash()],
        "muxed destination"
    );
    assert_eq!(
        hashes(&list(&s.newbie, "transactions").await),
        vec![t2.hash()]
    );
    assert_eq!(
        hashes(&list(&s.carol, "transactions").await),
        vec![t2.hash(), t3.hash()],
        "a claimant takes part in the balance's creation"
    );

    // Operations: the operation's source and the accounts it names; the channel, only the
    // transaction's source, takes part in none.
    assert!(list(&s.channel, "operations").await.is_empty());
    let dist_ops = list(&s.dist, "operations").await;
    let types: Vec<&str> = dist_ops
        .iter()
        .map(|r| r["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        vec!["payment", "create_account", "create_claimable_balance"]
    );
    let carol_ops = list(&s.carol, "operations").await;
    let types: Vec<&str> = carol_ops
        .iter()
        .map(|r| r["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        vec!["create_claimable_balance", "claim_claimable_balance"]
    );

    // Payments: payment and create-account only.
    let dist_payments = list(&s.dist, "payments").await;
    let types: Vec<&str> = dist_payments
        .iter()
        .map(|r| r["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, vec!["payment", "create_account"]);
    assert!(list(&s.carol, "payments").await.is_empty());
    assert_eq!(list(&s.newbie, "payments").await.len(), 1);
    assert_eq!(hashes(&list(&s.bob, "payments").await), vec![t1.hash()]);

    // An account with no history, or none at all, has an empty page.
    assert!(list(&Key::new("nobody"), "transactions").await.is_empty());
    let bad = get(&s.app, "/accounts/GBAD/payments").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json["extras"]["invalid_field"], "account_id");
}

#[tokio::test]
async fn records_have_horizons_fields_and_toid_paging_tokens() {
    let (s, [t1, t2, t3], id) = setup().await;
    let a = get(&s.app, &format!("/accounts/{}/operations", s.dist.g())).await;
    assert_eq!(a.latest_ledger, Some(4));
    let r = &a.json["_embedded"]["records"];
    let pay = &r[0];
    assert_eq!(pay["id"], toid(2, 1, 1).to_string());
    assert_eq!(pay["paging_token"], toid(2, 1, 1).to_string());
    assert_eq!(pay["type_i"], 1);
    assert_eq!(pay["transaction_hash"], t1.hash());
    assert_eq!(pay["transaction_successful"], true);
    assert_eq!(pay["created_at"], "2023-11-14T22:13:25Z");
    assert_eq!(pay["source_account"], s.dist.g());
    assert_eq!(pay["from"], s.dist.g());
    assert_eq!(pay["to"], s.bob.g());
    assert_eq!(pay["to_muxed"], muxed_str(&s.bob.muxed_id(7)));
    assert_eq!(pay["to_muxed_id"], "7");
    assert_eq!(pay["asset_type"], "native");
    assert!(pay.get("asset_code").is_none());
    assert_eq!(pay["amount"], "1.0000000");
    assert_eq!(
        pay["_links"]["transaction"]["href"],
        format!("/transactions/{}", t1.hash())
    );

    let create = &r[1];
    assert_eq!(create["type"], "create_account");
    assert_eq!(create["type_i"], 0);
    assert_eq!(create["paging_token"], toid(3, 1, 1).to_string());
    assert_eq!(create["funder"], s.dist.g());
    assert_eq!(create["account"], s.newbie.g());
    assert_eq!(create["starting_balance"], "2.0000000");
    assert_eq!(create["transaction_hash"], t2.hash());

    let cb = &r[2];
    assert_eq!(cb["type"], "create_claimable_balance");
    assert_eq!(cb["type_i"], 14);
    assert_eq!(cb["paging_token"], toid(3, 1, 2).to_string());
    assert_eq!(cb["asset"], "native");
    assert_eq!(cb["amount"], "3.0000000");
    assert_eq!(
        cb["claimants"],
        json!([{ "destination": s.carol.g(), "predicate": { "unconditional": true } }])
    );

    let a = get(&s.app, &format!("/accounts/{}/operations", s.carol.g())).await;
    let claim = &a.json["_embedded"]["records"][1];
    assert_eq!(claim["type"], "claim_claimable_balance");
    assert_eq!(claim["type_i"], 15);
    assert_eq!(claim["balance_id"], id);
    assert_eq!(claim["claimant"], s.carol.g());
    assert_eq!(claim["transaction_hash"], t3.hash());

    // Transaction records are the transaction resource, with its TOID as paging token.
    let a = get(&s.app, &format!("/accounts/{}/transactions", s.dist.g())).await;
    let txs = &a.json["_embedded"]["records"];
    assert_eq!(txs[0]["hash"], t1.hash());
    assert_eq!(txs[0]["paging_token"], toid(2, 1, 0).to_string());
    assert_eq!(txs[0]["memo"], "1");
    assert_eq!(txs[0]["source_account"], s.channel.g());
    let by_hash = get(&s.app, &format!("/transactions/{}", t1.hash())).await;
    assert_eq!(txs[0], by_hash.json);
}

#[tokio::test]
async fn pages_follow_next_and_prev_links_in_both_orders() {
    let (sim, app) = manual_sim();
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 1_000);
    // Seven transactions of two payments each, one per ledger.
    for _ in 0..7 {
        let tx = Tx::new(
            &alice,
            seq(&sim, &alice) + 1,
            vec![
                payment(None, bob.muxed(), Asset::Native, XLM),
                payment(None, bob.muxed(), Asset::Native, 2 * XLM),
            ],
        );
        let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let base = format!("/accounts/{}/payments", bob.g());
    let (all, pages) = all_pages(&app, &format!("{base}?limit=3")).await;
    assert_eq!(all.len(), 14);
    assert_eq!(pages, 6, "5 pages of records, then an empty one");
    let asc = tokens(&all);
    assert!(asc.windows(2).all(|w| w[0] < w[1]), "{asc:?}");
    assert_eq!(asc[0], toid(2, 1, 1));
    assert_eq!(asc[1], toid(2, 1, 2));

    let (desc_all, _) = all_pages(&app, &format!("{base}?order=desc&limit=4")).await;
    let mut desc = tokens(&desc_all);
    desc.reverse();
    assert_eq!(desc, asc);

    // Links: next after the last record, prev back from the first in the other order.
    let a = get(&app, &format!("{base}?cursor={}&limit=2", asc[3])).await;
    assert_eq!(
        tokens(a.json["_embedded"]["records"].as_array().expect("records")),
        asc[4..6]
    );
    assert_eq!(
        a.json["_links"]["self"]["href"],
        format!("{base}?cursor={}&limit=2&order=asc", asc[3])
    );
    assert_eq!(
        a.json["_links"]["next"]["href"],
        format!("{base}?cursor={}&limit=2&order=asc", asc[5])
    );
    assert_eq!(
        a.json["_links"]["prev"]["href"],
        format!("{base}?cursor={}&limit=2&order=desc", asc[4])
    );
    let prev = get(
        &app,
        a.json["_links"]["prev"]["href"].as_str().expect("prev"),
    )
    .await;
    assert_eq!(
        tokens(
            prev.json["_embedded"]["records"]
                .as_array()
                .expect("records")
        ),
        vec![asc[3], asc[2]]
    );
    // `now` pages ascending are empty, descending start at the newest.
    let a = get(&app, &format!("{base}?cursor=now")).await;
    assert_eq!(a.json["_embedded"]["records"], json!([]));
    assert_eq!(
        a.json["_links"]["next"]["href"],
        format!("{base}?cursor=now&limit=10&order=asc")
    );
    let a = get(&app, &format!("{base}?cursor=now&order=desc&limit=1")).await;
    assert_eq!(
        tokens(a.json["_embedded"]["records"].as_array().expect("records")),
        vec![asc[13]]
    );
    // The default page is 10 records.
    let a = get(&app, &base).await;
    assert_eq!(
        a.json["_embedded"]["records"].as_array().map(Vec::len),
        Some(10)
    );

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("order=up", "order"),
        ("cursor=abc", "cursor"),
        ("cursor=-5", "cursor"),
        ("include_failed=yes", "include_failed"),
    ] {
        let a = get(&app, &format!("{base}?{query}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(a.json["extras"]["invalid_field"], field, "{query}");
    }
    let a = get(&app, &format!("{base}?limit=200")).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn failed_transactions_are_listed_only_with_include_failed() {
    let (sim, app) = manual_sim();
    let (alice, bob, ghost) = (Key::new("alice"), Key::new("bob"), Key::new("ghost"));
    fund(&sim, &[&alice, &bob], 100);
    let s = seq(&sim, &alice);
    let failed = Tx::new(
        &alice,
        s + 1,
        vec![
            payment(None, bob.muxed(), Asset::Native, XLM),
            payment(None, ghost.muxed(), Asset::Native, XLM),
        ],
    );
    let a = submit_and_close(&sim, &app, &failed.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let ok = Tx::new(
        &alice,
        s + 2,
        vec![payment(None, bob.muxed(), Asset::Native, XLM)],
    );
    let a = submit_and_close(&sim, &app, &ok.sign(&[&alice])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    for what in ["transactions", "payments", "operations"] {
        let url = format!("/accounts/{}/{what}", bob.g());
        let a = get(&app, &url).await;
        let records = a.json["_embedded"]["records"]
            .as_array()
            .expect("records")
            .clone();
        assert_eq!(records.len(), 1, "{what}");
        let a = get(&app, &format!("{url}?include_failed=true")).await;
        let records = a.json["_embedded"]["records"]
            .as_array()
            .expect("records")
            .clone();
        assert_eq!(records.len(), 2, "{what}");
        let first_ok = records[0]
            .get("transaction_successful")
            .or(records[0].get("successful"))
            .cloned();
        assert_eq!(first_ok, Some(json!(false)), "{what}");
        assert!(
            a.json["_links"]["next"]["href"]
                .as_str()
                .is_some_and(|h| h.ends_with("&include_failed=true")),
            "{what}"
        );
    }
    // The failed transaction's ghost destination takes part too.
    let a = get(
        &app,
        &format!("/accounts/{}/payments?include_failed=true", ghost.g()),
    )
    .await;
    assert_eq!(a.json["_embedded"]["records"][0]["to"], ghost.g());
}

#[tokio::test]
async fn pruned_and_lagging_history_answers_as_horizon_does() {
    let (s, [t1, _, t3], _) = setup().await;
    for _ in 0..2 {
        s.sim.close_ledger();
    }
    // Head 6; keep 3 ledgers: the elder is 4, ledgers 2 and 3 are pruned.
    s.sim.set_faults(Faults {
        history_retention_ledgers: 3,
        ..Faults::default()
    });
    assert_eq!(get(&s.app, "/").await.json["history_elder_ledger"], 4);
    let base = format!("/accounts/{}/transactions", s.carol.g());
    // Ascending from before the elder starts at what the node holds.
    let a = get(&s.app, &format!("{base}?cursor=0")).await;
    assert_eq!(a.status, StatusCode::OK);
    let records = a.json["_embedded"]["records"]
        .as_array()
        .expect("records")
        .clone();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["hash"], t3.hash());
    assert!(
        tokens(&records)[0] > toid(3, 1, 0),
        "the reconciler sees its cursor's range was skipped"
    );
    // Descending into pruned history is 410 before_history.
    let a = get(
        &s.app,
        &format!("{base}?order=desc&cursor={}", toid(4, 0, 0)),
    )
    .await;
    assert_eq!(a.status, StatusCode::GONE, "{}", a.body);
    assert_eq!(
        a.json["type"],
        "https://stellar.org/horizon-errors/before_history"
    );
    assert_eq!(a.json["status"], 410);
    assert_eq!(a.latest_ledger, Some(6));
    let a = get(
        &s.app,
        &format!("{base}?order=desc&cursor={}", toid(4, 1, 0)),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "a cursor after the elder's start is fine"
    );
    let a = get(&s.app, &format!("{base}?order=desc")).await;
    assert_eq!(
        a.json["_embedded"]["records"].as_array().map(Vec::len),
        Some(1)
    );

    // A lagging node (head 6, lag 3: latest 3) holds ledgers up to 3 only.
    s.sim.set_faults(Faults {
        lookup_lag_ledgers: 3,
        ..Faults::default()
    });
    let a = get(&s.app, &format!("/accounts/{}/transactions", s.dist.g())).await;
    assert_eq!(a.latest_ledger, Some(3));
    assert_eq!(
        a.json["_embedded"]["records"].as_array().map(Vec::len),
        Some(2)
    );
    let a = get(&s.app, &base).await;
    let records = a.json["_embedded"]["records"]
        .as_array()
        .expect("records")
        .clone();
    assert_eq!(
        records.len(),
        1,
        "carol's claim in ledger 4 is not ingested yet"
    );
    assert_ne!(records[0]["hash"], t3.hash());
    let a = get(&s.app, &format!("/accounts/{}/payments", s.channel.g())).await;
    assert_eq!(a.json["_embedded"]["records"], json!([]));
    let a = get(&s.app, &format!("/accounts/{}/transactions", s.channel.g())).await;
    assert_eq!(a.json["_embedded"]["records"][0]["hash"], t1.hash());
}

#[tokio::test]
async fn listings_are_rebuilt_from_the_state_file() {
    let dir = std::env::temp_dir().join(format!("payoutd-sim-listings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state_file = dir.join("sim.jsonl");
    let _ = std::fs::remove_file(&state_file);
    let cfg = || payoutd_simulator::SimConfig {
        state_file: Some(state_file.clone()),
        ..manual_config()
    };
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let before = {
        let sim = Simulator::new(cfg()).expect("starts");
        let app = payoutd_simulator::router(Arc::clone(&sim));
        fund(&sim, &[&alice, &bob], 100);
        let tx = Tx::new(
            &alice,
            seq(&sim, &alice) + 1,
            vec![payment(None, bob.muxed(), Asset::Native, XLM)],
        );
        let a = submit_and_close(&sim, &app, &tx.sign(&[&alice])).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        get(&app, &format!("/accounts/{}/payments", bob.g()))
            .await
            .body
    };
    let sim = Simulator::new(cfg()).expect("restarts");
    let app = payoutd_simulator::router(sim);
    let after = get(&app, &format!("/accounts/{}/payments", bob.g()))
        .await
        .body;
    assert_eq!(after, before);
    assert!(after.contains("\"type\":\"payment\""));
    let _ = std::fs::remove_dir_all(&dir);
}
