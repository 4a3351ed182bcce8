//! The HTTP API end to end: the whole application on port 0 (fresh database, the built-in
//! simulator closing ledgers on a short cadence), driven with a real HTTP client.

use payoutd::app::DEMO_DESTINATION;
use serde_json::{Value, json};

use crate::helpers::{payout, spawn_app};

#[tokio::test]
async fn submit_confirm_duplicate_conflict_read_and_list() {
    let app = spawn_app(&[]).await;
    let (status, body) = app.submit(&payout("http-1", "12.5")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "accepted");
    let done = app.wait_state("http-1", "confirmed").await;
    assert_eq!(done["amount_stroops"], 125_000_000);
    assert!(done["tx_hash"].as_str().unwrap().len() == 64);
    assert!(done["ledger"].as_u64().unwrap() > 0);
    assert_eq!(done["fee_charged_stroops"], 100);
    let kinds: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "prepared", "confirmed"]);

    // Duplicate: 200 with the current state. Same content written differently is the same.
    let (status, body) = app.submit(&json!({ "payout_id": "http-1", "destination": DEMO_DESTINATION, "asset": "XLM", "amount": "12.50" })).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("confirmed")));
    // Conflict: 409, stored payout untouched.
    let (status, body) = app.submit(&payout("http-1", "13")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("payout_conflict"))
    );
    assert_eq!(
        app.wait_state("http-1", "confirmed").await["amount"],
        "12.5"
    );

    // Unknown payout.
    let resp = app.get("/v1/payouts/nope").send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // List with a filter and a cursor.
    for i in 2..=4 {
        app.submit(&payout(&format!("http-{i}"), "1")).await;
    }
    for i in 2..=4 {
        app.wait_state(&format!("http-{i}"), "confirmed").await;
    }
    let (_, page) = app.get_json("/v1/payouts?state=confirmed&limit=2").await;
    assert_eq!(page["payouts"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page2: Value = app
        .get(&format!(
            "/v1/payouts?state=confirmed&limit=2&after={cursor}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["payouts"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_string() || page2["next_cursor"].is_null());
    let bad = app.get("/v1/payouts?state=bogus").send().await.unwrap();
    assert_eq!(bad.status(), 422);

    // Cancel after an envelope exists: 409 with the reason.
    let resp = app.post("/v1/payouts/http-1/cancel").send().await.unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payout_not_cancellable");
}

#[tokio::test]
async fn cancel_before_an_envelope_exists() {
    // No channel accounts: payouts wait in `accepted`, so they can still be cancelled.
    let app = spawn_app(&[("PAYOUTD__LEDGER__SIMULATOR__CHANNELS", "0")]).await;
    app.submit(&payout("http-cancel", "1")).await;
    let resp = app
        .post("/v1/payouts/http-cancel/cancel")
        .json(&json!({ "reason": "customer asked" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["reason"], "customer asked");
    // A duplicate afterwards answers with the cancelled state; nothing is paid.
    let (status, body) = app.submit(&payout("http-cancel", "1")).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("cancelled")));
}

#[tokio::test]
async fn bearer_tokens_guard_the_api_but_not_health() {
    let app = spawn_app(&[(
        payoutd::config::ENV_API_TOKENS,
        "tok-first-0123456789,tok-second-0123456789",
    )])
    .await;
    let url = format!("{}/v1/payouts", app.base);
    let no_token = app
        .client
        .post(&url)
        .json(&payout("auth-1", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let body: Value = no_token.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("tok-first-0123456788")
        .json(&payout("auth-1", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let wrong_body = wrong.text().await.unwrap();
    assert!(
        !wrong_body.contains("tok-first"),
        "a token must never be echoed"
    );
    let second = app
        .client
        .post(&url)
        .bearer_auth("tok-second-0123456789")
        .json(&payout("auth-1", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(
        app.payout_rows().await,
        1,
        "refused requests stored nothing"
    );
    for open in ["/healthz", "/metrics", "/openapi.json", "/readyz"] {
        let resp = app
            .client
            .get(format!("{}{open}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn transport_level_bad_input() {
    let app = spawn_app(&[]).await;
    let url = format!("{}/v1/payouts", app.base);
    let good = serde_json::to_vec(&payout("t-1", "1")).unwrap();
    // Wrong content type.
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Missing content type.
    let r = app
        .client
        .post(&url)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Broken UTF-8.
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(b"{\"payout_id\":\"\xff\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Oversized body.
    let huge = format!(
        r#"{{"payout_id":"t-2","destination":"{}","asset":"native","amount":"1","memo":{{"type":"text","value":"{}"}}}}"#,
        DEMO_DESTINATION,
        "a".repeat(40_000)
    );
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Not JSON at all, and JSON of the wrong shape (an object with fields missing is a
    // 422 naming the first missing field, see `a_json_type_error_names_the_field`).
    for body in ["not json", "[]", "null"] {
        let r = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_body");
    }
    // Unknown route: JSON 404.
    let r = app
        .client
        .get(format!("{}/v2/nothing", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["code"].is_string());
    assert_eq!(app.payout_rows().await, 0);
}

#[tokio::test]
async fn metrics_and_readiness() {
    let app = spawn_app(&[]).await;
    app.submit(&payout("m-1", "1")).await;
    app.submit(&payout("m-1", "1")).await;
    app.wait_state("m-1", "confirmed").await;
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (&ready["database"], &ready["ledger"]),
        (&json!(true), &json!(true))
    );
    // The built-in simulator's eight demo channels, all usable, each described.
    assert_eq!(ready["channels"]["usable"], 8, "{ready}");
    assert_eq!(ready["channels"]["detail"].as_array().unwrap().len(), 8);
    assert!(
        ready["channels"]["detail"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| ["idle", "busy"].contains(&c["state"].as_str().unwrap())),
        "{ready}"
    );
    assert_eq!(ready["warnings"], json!([]));
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "payoutd_payouts_accepted_total 1",
        "payoutd_duplicates_total 1",
        "payoutd_conflicts_total",
        "payoutd_payouts_confirmed_total 1",
        "payoutd_payouts_failed_total",
        "payoutd_ready_queue",
        "payoutd_channels_busy",
        "payoutd_channels_disabled",
        "payoutd_batch_size_bucket",
        "payoutd_live_actors",
        "payoutd_actor_restarts_total",
        "payoutd_ledger_outcomes_total{code=\"applied\"}",
        "payoutd_submit_latency_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}

/// One row of `dead_letters`: source, source_ref, payload, code, reason.
type DeadLetter = (String, Option<String>, String, String, String);

async fn dead_letters(pool: &sqlx::PgPool) -> Vec<DeadLetter> {
    sqlx::query_as("SELECT source, source_ref, payload, code, reason FROM dead_letters ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn refused_requests_that_name_their_sender_are_dead_lettered() {
    const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
    let app = spawn_app(&[(payoutd::config::ENV_API_TOKENS, "dl-token")]).await;
    let send = |body: String, source: Option<&str>, source_ref: Option<&str>| {
        let mut r = app
            .post("/v1/payouts")
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = source {
            r = r.header("Payoutd-Source", s);
        }
        if let Some(s) = source_ref {
            r = r.header("Payoutd-Source-Ref", s);
        }
        r.send()
    };
    let json = |v: &Value| v.to_string();
    // Accepted and duplicate requests leave no dead letter.
    let good = json(&payout("dl-ok", "1"));
    for want in [202, 200] {
        let r = send(good.clone(), Some("bullmq"), Some("payouts:1"))
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    // Refused without the header: answered as before, nothing recorded.
    let bad_dest = json(
        &json!({"payout_id": "dl-1", "destination": "GBAD", "asset": "native", "amount": "1"}),
    );
    let r = send(bad_dest.clone(), None, None).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(dead_letters(&app.pool).await.is_empty());

    // 422 (a field), 409 (conflict), 400 (a number where the amount string belongs), 415.
    let r = send(bad_dest.clone(), Some("bullmq"), Some("payouts:2"))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let answered: Value = r.json().await.unwrap();
    let r = send(
        json(&payout("dl-ok", "2")),
        Some("bullmq"),
        Some("payouts:3"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let numeric = r#"{"payout_id":"dl-3","destination":"GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2","asset":"native","amount":12.5}"#;
    let r = send(numeric.into(), Some("bullmq"), Some("payouts:4"))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = app
        .post("/v1/payouts")
        .header("content-type", "text/plain")
        .header("Payoutd-Source", "bullmq")
        .header("Payoutd-Source-Ref", "payouts:5")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // 413: the body was never read, so the payload is empty; the answer is JSON with a code.
    let huge = json(
        &json!({"payout_id": "dl-6", "destination": DEMO_DESTINATION, "asset": "native", "amount": "1", "memo": {"type": "text", "value": "a".repeat(40_000)}}),
    );
    let r = send(huge, Some("bullmq"), Some("payouts:6")).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );
    // A seed in the body and in the reference is never stored; the source name is one of
    // the allowed set (any case) or "http"; a long reference is cut.
    let seeded =
        json(&json!({"payout_id": "dl-7", "destination": SEED, "asset": "native", "amount": "1"}));
    let r = send(seeded, Some("BullMQ"), Some(&format!("payouts:{SEED}")))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let long_ref = format!("payouts:{}", "é".repeat(300));
    let r = send(bad_dest.clone(), Some("someone-else"), Some(&long_ref))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // No reference header: recorded without one.
    let r = send(bad_dest.clone(), Some("bullmq"), None).await.unwrap();
    assert_eq!(r.status(), 422);
    // Unauthenticated requests write nothing, headers or not.
    let r = app
        .client
        .post(format!("{}/v1/payouts", app.base))
        .header("content-type", "application/json")
        .header("Payoutd-Source", "bullmq")
        .header("Payoutd-Source-Ref", "payouts:9")
        .body(bad_dest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let rows = dead_letters(&app.pool).await;
    let summary: Vec<(&str, Option<&str>, &str)> = rows
        .iter()
        .map(|(s, r, _, c, _)| (s.as_str(), r.as_deref(), c.as_str()))
        .collect();
    assert_eq!(
        summary[..6],
        [
            (
                "bullmq",
                Some("payouts:2"),
                answered["error"]["code"].as_str().unwrap()
            ),
            ("bullmq", Some("payouts:3"), "payout_conflict"),
            ("bullmq", Some("payouts:4"), "field_type"),
            ("bullmq", Some("payouts:5"), "unsupported_media_type"),
            ("bullmq", Some("payouts:6"), "body_too_large"),
            (
                "bullmq",
                Some("payouts:[redacted secret seed]"),
                "destination_is_secret"
            ),
        ]
    );
    assert_eq!(rows.len(), 8, "{rows:?}");
    // Payload as sent (the bodies that were read), reason with the field, as the other
    // ingresses record them.
    assert_eq!(rows[0].2, bad_dest);
    assert_eq!(
        rows[0].4,
        format!(
            "destination: {}",
            answered["error"]["message"].as_str().unwrap()
        )
    );
    assert!(rows[1].4.contains("dl-ok"), "{}", rows[1].4);
    assert_eq!(rows[2].2, numeric);
    assert_eq!(rows[4].2, "");
    assert!(
        rows.iter()
            .all(|r| !format!("{r:?}").contains(&SEED[1..40]))
    );
    let (source, source_ref, ..) = &rows[6];
    assert_eq!(source, "http");
    let source_ref = source_ref.as_deref().unwrap();
    assert!(source_ref.len() <= payoutd::ingress::SOURCE_REF_BYTES_MAX);
    assert!(source_ref.len() > payoutd::ingress::SOURCE_REF_BYTES_MAX - 2);
    assert!(long_ref.starts_with(source_ref));
    assert_eq!((rows[7].0.as_str(), rows[7].1.as_deref()), ("bullmq", None));
    // The refused requests stored no payout.
    assert_eq!(app.payout_rows().await, 1);
}

#[tokio::test]
async fn a_batch_answers_item_by_item_and_pays_each_once() {
    let app = spawn_app(&[]).await;
    let (status, _) = app.submit(&payout("batch-0", "1")).await;
    assert_eq!(status, 202);
    let mut items: Vec<Value> = (1..=20)
        .map(|i| payout(&format!("batch-{i}"), "2"))
        .collect();
    items.push(payout("batch-0", "1")); // a duplicate of an earlier payout
    items.push(payout("batch-0", "9")); // a conflict with it
    items.push(json!({ "payout_id": "batch-bad", "destination": DEMO_DESTINATION, "asset": "native", "amount": 12.5 }));
    items.push(payout("batch-5", "2")); // a duplicate inside the batch
    let resp = app
        .post("/v1/payouts/batch")
        .json(&json!({ "payouts": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 24);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    assert!(results[..20].iter().all(|r| r["status"] == "created"));
    assert_eq!(results[20]["status"], "duplicate");
    assert_eq!(results[21]["status"], "conflict");
    assert_eq!(results[21]["code"], "payout_conflict");
    assert_eq!(
        (
            &results[22]["status"],
            &results[22]["code"],
            &results[22]["field"]
        ),
        (&json!("invalid"), &json!("field_type"), &json!("amount"))
    );
    assert_eq!(results[22]["payout_id"], "batch-bad");
    assert!(["created", "duplicate"].contains(&results[23]["status"].as_str().unwrap()));
    assert_eq!(body["counts"]["invalid"], 1);
    for i in 0..=20 {
        app.wait_state(&format!("batch-{i}"), "confirmed").await;
    }
    assert_eq!(app.payout_rows().await, 21);
    // Too many items, and not a batch at all.
    let many: Vec<Value> = (0..1001).map(|i| payout(&format!("m-{i}"), "1")).collect();
    let resp = app
        .post("/v1/payouts/batch")
        .json(&json!({ "payouts": many }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "batch_size");
    let resp = app
        .post("/v1/payouts/batch")
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn a_json_type_error_names_the_field() {
    let app = spawn_app(&[]).await;
    let (status, body) = app
        .submit(&json!({ "payout_id": "t-1", "destination": DEMO_DESTINATION, "asset": "native", "amount": 12.5 }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "amount");
    assert_eq!(body["error"]["code"], "field_type");
    let (status, body) = app
        .submit(&json!({ "payout_id": "t-2", "destination": DEMO_DESTINATION, "asset": "native" }))
        .await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("amount")));
    assert_eq!(app.payout_rows().await, 0);
}

#[tokio::test]
async fn an_explicit_none_memo_means_no_memo_on_the_transaction() {
    let app = spawn_app(&[]).await;
    let mut with_none = payout("memo-none", "1.5");
    with_none["memo"] = json!({ "type": "none" });
    assert_eq!(app.submit(&with_none).await.0, 202);
    let done = app.wait_state("memo-none", "confirmed").await;
    let tx: Value = app
        .client
        .get(format!(
            "{}/transactions/{}",
            app.simulator_url(),
            done["tx_hash"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tx["memo_type"], "none", "{tx}");
    // Without a memo, payoutd puts one that names the payout (or its batch).
    assert_eq!(app.submit(&payout("memo-absent", "1.6")).await.0, 202);
    let done = app.wait_state("memo-absent", "confirmed").await;
    let tx: Value = app
        .client
        .get(format!(
            "{}/transactions/{}",
            app.simulator_url(),
            done["tx_hash"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tx["memo_type"], "hash", "{tx}");
    // And the two are different requests for the same id.
    let mut absent_again = payout("memo-none", "1.5");
    absent_again.as_object_mut().unwrap().remove("memo");
    assert_eq!(app.submit(&absent_again).await.0, 409);
}

/// The fast checks, through the router itself (no socket): what the API answers before any
/// payout exists.
#[tokio::test]
async fn the_router_answers_without_a_socket() {
    use axum::body::Body;
    use axum::http::Request;
    let app = spawn_app(&[]).await;
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
    let (status, _, body) = app
        .call(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status.as_u16(), json(&body)["status"].clone()),
        (200, json!("ok"))
    );
    let (status, _, body) = app
        .call(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["openapi"], "3.1.0");
    for (request, code, status) in [
        (
            Request::get("/v2/nothing").body(Body::empty()).unwrap(),
            "not_found",
            404,
        ),
        (
            Request::delete("/v1/payouts").body(Body::empty()).unwrap(),
            "method_not_allowed",
            405,
        ),
        (
            Request::post("/v1/payouts")
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
            "invalid_body",
            400,
        ),
        (
            Request::post("/v1/payouts")
                .header("content-type", "application/json")
                .body(Body::from(payout("bad id!", "1").to_string()))
                .unwrap(),
            "payout_id_charset",
            422,
        ),
        (
            Request::get("/v1/payouts/nobody")
                .body(Body::empty())
                .unwrap(),
            "payout_not_found",
            404,
        ),
    ] {
        let (got, _, body) = app.call(request).await;
        assert_eq!(got.as_u16(), status, "{code}");
        assert_eq!(json(&body)["error"]["code"], code);
    }
}
