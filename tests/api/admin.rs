//! The admin API and the kill switch, through the running application (real PostgreSQL,
//! the built-in simulator over HTTP): admin tokens apart from payout tokens, every action
//! audited with who and why, a pause that stops new envelopes at once while live ones
//! settle, and the circuit breaker tripping on a planted `tx_bad_auth` spike.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, payout, spawn_app};

const PAYOUT_TOKEN: &str = "payout-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-abcdefghijkl";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";

async fn admin_app(extra: &[(&str, &str)]) -> TestApp {
    let admins = format!("alice:{ADMIN_TOKEN}");
    let mut env = vec![
        (payoutd::config::ENV_API_TOKENS, PAYOUT_TOKEN),
        (payoutd::config::ENV_ADMIN_TOKENS, admins.as_str()),
    ];
    env.extend_from_slice(extra);
    spawn_app(&env).await
}

async fn admin(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", app.base);
    let mut req = match &body {
        Some(b) => app.client.post(url).json(b),
        None => app.client.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put_faults(app: &TestApp, faults: Value) {
    let resp = app
        .client
        .put(format!("{}/sim/faults", app.simulator_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn admin_tokens_are_apart_from_payout_tokens_and_every_action_is_audited() {
    let app = admin_app(&[]).await;
    let reason = json!({ "reason": "incident 42" });
    // Who may call.
    let (s, b) = admin(&app, "/v1/admin/pause", None, Some(reason.clone())).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (s, b) = admin(
        &app,
        "/v1/admin/pause",
        Some(PAYOUT_TOKEN),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("admin_token_required"))
    );
    let (s, _) = admin(
        &app,
        "/v1/admin/pause",
        Some("admin-token-wrong000000"),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, 401);
    // The admin token is not a payout token either.
    let resp = app
        .client
        .post(format!("{}/v1/payouts", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&payout("adm-1", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Bad requests: each a clear error naming the field.
    for (body, code) in [
        (json!({}), "reason_missing"),
        (json!({ "reason": "  " }), "reason_missing"),
        (json!({ "reason": "x".repeat(501) }), "reason_too_long"),
        (
            json!({ "reason": format!("my key is {SEED}") }),
            "secret_in_reason",
        ),
        (json!({ "reason": "ok", "force": true }), "invalid_body"),
        (json!({ "reason": 7 }), "invalid_body"),
    ] {
        let (s, b) = admin(
            &app,
            "/v1/admin/pause",
            Some(ADMIN_TOKEN),
            Some(body.clone()),
        )
        .await;
        assert_eq!(b["error"]["code"], code, "{body}: {b}");
        assert!(s == 422 || s == 400, "{body}: {s}");
        assert!(!b.to_string().contains(SEED), "the seed never comes back");
    }
    let resp = app
        .client
        .post(format!("{}/v1/admin/pause", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .body("reason=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let (s, _) = admin(&app, "/v1/admin/audit?limit=0", Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 422);
    assert_eq!(
        count(&app, "SELECT count(*) FROM admin_audit").await,
        0,
        "nothing done yet"
    );

    // Pause, pause again (the first one stays), status, resume.
    let (s, b) = admin(&app, "/v1/admin/pause", Some(ADMIN_TOKEN), Some(reason)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["pause"]["by"], "alice");
    assert_eq!(b["pause"]["reason"], "incident 42");
    let (_, b) = admin(
        &app,
        "/v1/admin/pause",
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "again" })),
    )
    .await;
    assert_eq!(b["pause"]["reason"], "incident 42", "the first pause stays");
    let (s, b) = admin(&app, "/v1/admin/status", Some(ADMIN_TOKEN), None).await;
    assert_eq!((s, b["paused"].as_bool()), (200, Some(true)), "{b}");
    let (s, b) = admin(
        &app,
        "/v1/admin/resume",
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "fixed upstream" })),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lifted"]["by"], "alice");
    let (_, b) = admin(&app, "/v1/admin/status", Some(ADMIN_TOKEN), None).await;
    assert_eq!(b["paused"], false);
    let (s, b) = admin(&app, "/v1/admin/audit", Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 200);
    let trail: Vec<(String, String, String)> = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let who = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        trail,
        [
            who("alice", "resume", "fixed upstream"),
            who("alice", "pause", "again"),
            who("alice", "pause", "incident 42"),
        ],
        "newest first"
    );
    let stored: String = sqlx::query_scalar(
        "SELECT string_agg(actor || reason || detail::text, ' ') FROM admin_audit",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!stored.contains(ADMIN_TOKEN) && !stored.contains(PAYOUT_TOKEN));
}

#[tokio::test]
async fn without_admin_tokens_the_admin_api_is_closed_unless_the_whole_api_is_open() {
    let closed = spawn_app(&[(payoutd::config::ENV_API_TOKENS, PAYOUT_TOKEN)]).await;
    let (s, b) = admin(&closed, "/v1/admin/status", Some(PAYOUT_TOKEN), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("admin_disabled"))
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PAYOUTD__SERVER__ADMIN_TOKENS")
    );
    // The loopback demo (no tokens at all): open, audited as anonymous.
    let open = spawn_app(&[]).await;
    let (s, b) = admin(
        &open,
        "/v1/admin/pause",
        None,
        Some(json!({ "reason": "demo" })),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["pause"]["by"], "anonymous");
}

#[tokio::test]
async fn a_pause_stops_new_envelopes_at_once_while_live_ones_settle() {
    let app = admin_app(&[]).await;
    // The first payout's envelope is journaled, but every submission fails before it is
    // accepted: it stays live.
    put_faults(&app, json!({ "p_5xx_before_apply": 1.0 })).await;
    let (s, b) = app.submit(&payout("live-1", "1")).await;
    assert_eq!(s, 202, "{b}");
    app.wait_state("live-1", "submitted").await;
    let (s, b) = admin(
        &app,
        "/v1/admin/pause",
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "drill" })),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let envelopes = count(&app, "SELECT count(*) FROM envelopes").await;
    // Ingress keeps accepting while paused.
    for id in ["held-1", "held-2"] {
        let (s, b) = app.submit(&payout(id, "2")).await;
        assert_eq!(s, 202, "{b}");
    }
    // The live envelope still settles.
    put_faults(&app, json!({})).await;
    app.wait_state("live-1", "confirmed").await;
    // Nothing new: a few hundred milliseconds of ledgers later, the same envelopes, and
    // the new payouts still wait.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            count(&app, "SELECT count(*) FROM envelopes").await,
            envelopes
        );
    }
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM envelopes e, controls c WHERE e.created_at >= c.paused_at"
        )
        .await,
        0,
        "no envelope journaled after the pause committed"
    );
    for id in ["held-1", "held-2"] {
        let (_, v) = app.get_json(&format!("/v1/payouts/{id}")).await;
        assert_eq!(v["state"], "accepted", "{v}");
    }
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("\npayoutd_paused 1\n"), "{metrics}");
    // Resumed: they are paid.
    let (s, _) = admin(
        &app,
        "/v1/admin/resume",
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "drill over" })),
    )
    .await;
    assert_eq!(s, 200);
    for id in ["held-1", "held-2"] {
        app.wait_state(id, "confirmed").await;
    }
}

#[tokio::test]
async fn the_breaker_pauses_paying_on_a_spike_of_tx_bad_auth() {
    let app = admin_app(&[("PAYOUTD__PAYOUTS__PAYMENTS_PER_TX_MAX", "1")]).await;
    // Every channel's next envelopes are refused as if its key were wrong.
    put_faults(
        &app,
        json!({ "reject_next": { "code": "tx_bad_auth", "count": 6 } }),
    )
    .await;
    for n in 0..6 {
        let (s, b) = app.submit(&payout(&format!("auth-{n}"), "1")).await;
        assert_eq!(s, 202, "{b}");
    }
    let mut status = Value::Null;
    for _ in 0..500 {
        status = admin(&app, "/v1/admin/status", Some(ADMIN_TOKEN), None)
            .await
            .1;
        if status["paused"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["paused"], true, "{status}");
    assert_eq!(status["pause"]["by"], "circuit-breaker");
    let reason = status["pause"]["reason"].as_str().unwrap();
    assert!(reason.contains("tx_bad_auth"), "{reason}");
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("\npayoutd_breaker_trips_total 1\n"),
        "{metrics}"
    );
    let trail = admin(&app, "/v1/admin/audit", Some(ADMIN_TOKEN), None)
        .await
        .1;
    assert_eq!(trail["entries"][0]["actor"], "circuit-breaker", "{trail}");
}
