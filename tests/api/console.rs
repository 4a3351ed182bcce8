//! The console's reads, over HTTP against a running app (the browser tests in
//! tests/console drive the page itself): the overview, a run's progress, a payout's
//! envelopes, the listing's prefix and time filters, and the page's headers.

use crate::helpers::{payout, spawn_app};

#[tokio::test]
async fn overview_progress_envelopes_and_filters() {
    let app = spawn_app(&[]).await;
    for id in ["run-a-1", "run-a-2", "run-b-1"] {
        assert_eq!(app.submit(&payout(id, "1")).await.0, 202);
    }
    for id in ["run-a-1", "run-a-2", "run-b-1"] {
        app.wait_state(id, "confirmed").await;
    }
    let (status, o) = app.get_json("/v1/overview").await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["total"], 3);
    assert_eq!(o["counts"]["confirmed"], 3);
    assert_eq!(o["counts"]["held"], 0, "every state is present");
    assert!(o["oldest_unfinished"].is_null());
    let minutes = o["confirmed_per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 10);
    let confirmed: i64 = minutes.iter().map(|m| m["payouts"].as_i64().unwrap()).sum();
    assert_eq!(confirmed, 3);
    assert_eq!(o["paused"], false);
    assert!(o["channels"]["usable"].as_u64().unwrap() >= 1);

    let (_, p) = app.get_json("/v1/progress?id_prefix=run-a-").await;
    assert_eq!(
        (
            p["total"].as_i64(),
            p["done"].as_i64(),
            p["pending"].as_i64()
        ),
        (Some(2), Some(2), Some(0))
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (_, later) = app
        .get_json(&format!("/v1/progress?since_unix_ms={}", now_ms + 60_000))
        .await;
    assert_eq!(later["total"], 0);

    let (_, page) = app.get_json("/v1/payouts?id_prefix=run-a-&limit=10").await;
    let ids: Vec<&str> = page["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["payout_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["run-a-1", "run-a-2"]);
    let (_, page) = app
        .get_json(&format!("/v1/payouts?until_unix_ms={}", now_ms - 3_600_000))
        .await;
    assert_eq!(page["payouts"].as_array().unwrap().len(), 0);

    let (status, e) = app.get_json("/v1/payouts/run-a-1/envelopes").await;
    assert_eq!(status, 200);
    let env = &e["envelopes"][0];
    assert_eq!(env["status"], "applied");
    assert_eq!(env["tx_hash"].as_str().unwrap().len(), 64);
    assert!(env["op_index"].as_i64().unwrap() < env["operations"].as_i64().unwrap());
    let (status, _) = app.get_json("/v1/payouts/nobody/envelopes").await;
    assert_eq!(status, 404);

    for (path, field) in [
        ("/v1/payouts?since_unix_ms=yesterday", "since_unix_ms"),
        ("/v1/progress?until_unix_ms=-1", "until_unix_ms"),
        ("/v1/progress?id_prefix=a%20b", "id_prefix"),
    ] {
        let (status, v) = app.get_json(path).await;
        assert_eq!(status, 422, "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{path}");
    }
}

#[tokio::test]
async fn the_console_page_is_served_with_a_strict_policy_and_no_data() {
    let app = spawn_app(&[(payoutd::config::ENV_API_TOKENS, "console-token-0001")]).await;
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        // Served without a token: the page holds no data; the API it calls needs one.
        let (status, headers, body) = app.call(get(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert!(!String::from_utf8_lossy(&body).contains("console-token-0001"));
    }
    let (status, _, _) = app.call(get("/v1/overview")).await;
    assert_eq!(status, 401);
    // The same over a socket.
    let r = app
        .client
        .get(format!("{}/console", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
