//! Signed webhooks against a real HTTP receiver on localhost: the signature verifies (by
//! payoutd's reference check and by the Python and Node receivers of docs/webhooks.md),
//! a payout's events arrive in version order, 500s and timeouts are retried, dead letters
//! are listed and replayed, a slow receiver holds up no other, and nothing is lost across a
//! SIGKILL of payoutd in the middle of a delivery (the event sent again carries the same id
//! and body).

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::helpers::{TempDir, payout, spawn_app};
use crate::helpers::{eventually, fresh_db_with_url};

const SECRET: &str = "whsec-test-0123456789abcdef";

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Ok,
    Status(u16),
    /// No answer until released (the sender's timeout, or a kill, ends it).
    Hang,
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    event_id: String,
    signature: String,
    attempt: u32,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A real HTTP server on localhost that records what it is sent and answers by plan
/// (then with `default`).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    plan: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    release: watch::Sender<bool>,
}

impl Receiver {
    async fn start(plan: &[Reply], default: Reply) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(plan.iter().copied().collect::<VecDeque<_>>()));
        let default = Arc::new(Mutex::new(default));
        let (release, released) = watch::channel(false);
        let (g, p, d) = (got.clone(), plan.clone(), default.clone());
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (g, p, d, mut released) = (g.clone(), p.clone(), d.clone(), released.clone());
            async move {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                g.lock().unwrap().push(Received {
                    event_id: h("payoutd-event-id"),
                    signature: h("payoutd-signature"),
                    attempt: h("payoutd-delivery-attempt").parse().unwrap_or(0),
                    body: String::from_utf8(body.to_vec()).unwrap(),
                });
                let reply = p.lock().unwrap().pop_front().unwrap_or(*d.lock().unwrap());
                match reply {
                    Reply::Ok => StatusCode::NO_CONTENT,
                    Reply::Status(s) => StatusCode::from_u16(s).unwrap(),
                    Reply::Hang => {
                        let _ = released.wait_for(|r| *r).await;
                        StatusCode::NO_CONTENT
                    }
                }
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hook?token=hook-url-token-4821",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            got,
            plan,
            default,
            release,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn answer(&self, plan: &[Reply], default: Reply) {
        *self.plan.lock().unwrap() = plan.iter().copied().collect();
        *self.default.lock().unwrap() = default;
        let _ = self.release.send(true);
    }
}

/// The settings of one endpoint `name` at `url` (events: `events`), with short waits.
fn endpoint_env(endpoints: &[(&str, &str, &str)]) -> Vec<(String, String)> {
    let list: Vec<String> = endpoints
        .iter()
        .map(|(name, url, events)| {
            format!("{{name = \"{name}\", url = \"{url}\", events = {events}, secret_env = \"TEST_HOOK_SECRET\"}}")
        })
        .collect();
    [
        (
            "PAYOUTD__WEBHOOKS__ENDPOINTS",
            format!("[{}]", list.join(", ")),
        ),
        ("TEST_HOOK_SECRET", SECRET.to_owned()),
        ("PAYOUTD__WEBHOOKS__POLL_INTERVAL_MS", "20".into()),
        ("PAYOUTD__WEBHOOKS__RETRY_DELAY_MIN_MS", "20".into()),
        ("PAYOUTD__WEBHOOKS__RETRY_DELAY_MAX_MS", "80".into()),
        ("PAYOUTD__WEBHOOKS__TIMEOUT_MS", "400".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Sets `key` in `env` (replacing an earlier value).
fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The receivers of docs/webhooks.md (tests/api/webhook_verify.py and .mjs) accept it.
async fn documented_receivers_accept(r: &Received, secret: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api");
    for (program, script) in [
        ("python3", format!("{dir}/webhook_verify.py")),
        ("node", format!("{dir}/webhook_verify.mjs")),
    ] {
        let out = tokio::process::Command::new(program)
            .arg(&script)
            .env("WEBHOOK_SECRET", secret)
            .env("WEBHOOK_SIGNATURE", &r.signature)
            .env("WEBHOOK_BODY", &r.body)
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program} {script}: {e} (install {program})"));
        assert!(
            out.status.success(),
            "{script} refused a payoutd signature: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And refuses a body that was changed.
        let out = tokio::process::Command::new(program)
            .arg(&script)
            .env("WEBHOOK_SECRET", secret)
            .env("WEBHOOK_SIGNATURE", &r.signature)
            .env("WEBHOOK_BODY", r.body.replace("\"version\"", "\"versioN\""))
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{script} accepted a changed body");
    }
}

async fn deliveries(pool: &sqlx::PgPool, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn signed_events_arrive_in_version_order_and_verify() {
    let rx = Receiver::start(&[], Reply::Ok).await;
    let env = endpoint_env(&[("backend", &rx.url, "[\"*\"]")]);
    let app = spawn_app(&as_refs(&env)).await;
    for i in 0..3 {
        let (status, _) = app.submit(&payout(&format!("wh-{i}"), "1.5")).await;
        assert_eq!(status, 202);
    }
    for i in 0..3 {
        app.wait_state(&format!("wh-{i}"), "confirmed").await;
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM payout_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    eventually(20_000, "every event delivered", || async {
        deliveries(&app.pool, "delivered").await == events
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len() as i64, events, "one POST per event: {got:?}");
    let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &got {
        let v = r.json();
        assert_eq!(v["event_id"], r.event_id.as_str(), "header and body agree");
        assert_eq!(r.attempt, 1);
        assert!(
            payoutd::webhooks::signature::verify(
                &r.signature,
                SECRET.as_bytes(),
                r.body.as_bytes(),
                now_s(),
                300
            ),
            "signature of {}",
            r.event_id
        );
        versions
            .entry(v["payout_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["version"].as_i64().unwrap());
    }
    for (id, vs) in &versions {
        assert!(
            vs.windows(2).all(|w| w[0] < w[1]),
            "{id}: {vs:?} out of order"
        );
        assert_eq!(vs[0], 1, "{id} starts with its acceptance");
    }
    let confirmed = got
        .iter()
        .find(|r| r.json()["kind"] == "confirmed")
        .unwrap();
    assert_eq!(confirmed.json()["state"], "confirmed");
    documented_receivers_accept(confirmed, SECRET).await;
    // The metrics show the deliveries.
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("payoutd_webhook_attempts_total{result=\"delivered\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn retries_after_500s_and_timeouts_with_the_same_event() {
    let rx = Receiver::start(
        &[Reply::Status(500), Reply::Status(503), Reply::Hang],
        Reply::Ok,
    )
    .await;
    let env = endpoint_env(&[("backend", &rx.url, "[\"confirmed\"]")]);
    let app = spawn_app(&as_refs(&env)).await;
    app.submit(&payout("wh-retry", "2")).await;
    app.wait_state("wh-retry", "confirmed").await;
    eventually(20_000, "the confirmation delivered", || async {
        deliveries(&app.pool, "delivered").await == 1
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 4, "two 5xx, one timeout, one success: {got:?}");
    assert!(
        got.iter()
            .all(|r| r.event_id == got[0].event_id && r.body == got[0].body)
    );
    assert_eq!(
        got.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(got[0].json()["kind"], "confirmed");
    let row: (i32, Option<i32>) =
        sqlx::query_as("SELECT attempts, last_status FROM webhook_deliveries")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(row, (4, Some(204)));
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_with_an_audited_reason() {
    let rx = Receiver::start(&[], Reply::Status(500)).await;
    // And a receiver that is not there at all (connection refused), its URL with a token.
    let gone = "http://127.0.0.1:1/hook?token=hook-url-token-4821";
    let mut env = endpoint_env(&[
        ("backend", &rx.url, "[\"confirmed\"]"),
        ("gone", gone, "[\"confirmed\"]"),
    ]);
    set(&mut env, "PAYOUTD__WEBHOOKS__ATTEMPTS_MAX", "2");
    let app = spawn_app(&as_refs(&env)).await;
    app.submit(&payout("wh-dead", "3")).await;
    app.wait_state("wh-dead", "confirmed").await;
    eventually(20_000, "both deliveries dead-lettered", || async {
        deliveries(&app.pool, "dead").await == 2
    })
    .await;
    let (_, page) = app.get_json("/v1/webhooks/deliveries?state=dead").await;
    let refused = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["endpoint"] == "gone")
        .unwrap();
    assert!(refused["last_status"].is_null());
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("error sending request"),
        "{refused}"
    );
    assert!(
        !page.to_string().contains("hook-url-token"),
        "the URL (and its token) is never shown: {page}"
    );
    let (_, page) = app
        .get_json("/v1/webhooks/deliveries?state=dead&payout_id=wh-dead&limit=1")
        .await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get_json(&format!("/v1/webhooks/deliveries?state=dead&after={next}"))
        .await;
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next_cursor"].is_null());
    let dead = [&page["deliveries"][0], &rest["deliveries"][0]]
        .into_iter()
        .find(|d| d["endpoint"] == "backend")
        .unwrap()
        .clone();
    assert_eq!(dead["payout_id"], "wh-dead");
    assert_eq!(dead["attempts"], 2);
    assert_eq!(dead["last_status"], 500);
    let id = dead["id"].as_i64().unwrap();
    // Without a reason: refused.
    let (status, _) = app
        .post_json(&format!("/v1/webhooks/deliveries/{id}/replay"), &json!({}))
        .await;
    assert_eq!(status, 422);
    rx.answer(&[], Reply::Ok);
    let (status, body) = app
        .post_json(
            &format!("/v1/webhooks/deliveries/{id}/replay"),
            &json!({"reason": "receiver fixed (INC-7)"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["delivery"]["state"], "pending");
    assert_eq!(body["delivery"]["attempts"], 0);
    eventually(20_000, "the replay delivered", || async {
        deliveries(&app.pool, "delivered").await == 1
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2].event_id, got[0].event_id,
        "a replay is the same event"
    );
    let (_, audit) = app.get_json("/v1/admin/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "webhook_replay");
    assert_eq!(entry["reason"], "receiver fixed (INC-7)");
    assert_eq!(entry["detail"]["delivery_id"], id);
    // Unknown, malformed and pending ids.
    for (path, status, code) in [
        (
            "/v1/webhooks/deliveries/999999/replay",
            404,
            "delivery_not_found",
        ),
        (
            "/v1/webhooks/deliveries/x1/replay",
            404,
            "delivery_not_found",
        ),
    ] {
        let r = app
            .post(path)
            .json(&json!({"reason": "r"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code);
    }
    sqlx::query("UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now() + interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, _) = app
        .post_json(
            &format!("/v1/webhooks/deliveries/{id}/replay"),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, 409);
    // Filters and paging are checked.
    for (query, code) in [
        ("state=lost", "state_invalid"),
        ("after=abc", "cursor_invalid"),
        ("limit=0", "limit_invalid"),
        ("sort=id", "invalid_query"),
    ] {
        let (_, v) = app
            .get_json(&format!("/v1/webhooks/deliveries?{query}"))
            .await;
        assert_eq!(v["error"]["code"], code, "{query}");
    }
}

#[tokio::test]
async fn a_slow_receiver_holds_up_no_other_receiver_and_no_payout() {
    let slow = Receiver::start(&[], Reply::Hang).await;
    let fast = Receiver::start(&[], Reply::Ok).await;
    let mut env = endpoint_env(&[
        ("slow", &slow.url, "[\"confirmed\"]"),
        ("fast", &fast.url, "[\"confirmed\"]"),
    ]);
    // The slow one hangs until its timeout, far beyond what the rest takes.
    set(&mut env, "PAYOUTD__WEBHOOKS__TIMEOUT_MS", "60000");
    let app = spawn_app(&as_refs(&env)).await;
    for i in 0..5 {
        app.submit(&payout(&format!("wh-slow-{i}"), "1")).await;
    }
    for i in 0..5 {
        app.wait_state(&format!("wh-slow-{i}"), "confirmed").await;
    }
    eventually(
        20_000,
        "the fast receiver has every confirmation",
        || async { fast.got().len() == 5 },
    )
    .await;
    let slow_pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint = 'slow' AND state = 'pending' AND attempts = 0",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        slow_pending, 5,
        "the slow receiver's POSTs are still in flight"
    );
    slow.answer(&[], Reply::Ok);
}

/// payoutd, the binary, with the built-in simulator, on `db_url`, state in `dir`; and its
/// log, read as it comes (so the pipe never fills), whole once it exits.
fn start_payoutd(
    db_url: &str,
    dir: &std::path::Path,
    port: u16,
    env: &[(String, String)],
) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payoutd"))
        .arg("serve")
        .env("RUST_LOG", "debug")
        .env("PAYOUTD__DATABASE__URL", db_url)
        .env("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYOUTD__LEDGER__SIMULATOR__LISTEN", "127.0.0.1:0")
        .env("PAYOUTD__LEDGER__SIMULATOR__CLOSE_INTERVAL_MS", "50")
        .env(
            "PAYOUTD__LEDGER__SIMULATOR__STATE_FILE",
            dir.join("sim.json"),
        )
        .env("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "20")
        .env("PAYOUTD__CLUSTER__INSTANCE_ID", "webhook-kill")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start payoutd");
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    (child, log)
}

#[tokio::test]
async fn nothing_is_lost_across_a_sigkill_in_the_middle_of_a_delivery() {
    let rx = Receiver::start(&[], Reply::Hang).await;
    let mut env = endpoint_env(&[("backend", &rx.url, "[\"*\"]")]);
    // The POSTs hang until the kill (no timeout ends them first); their claims run out
    // timeout + 5 s later, and the restarted instance sends them again.
    set(&mut env, "PAYOUTD__WEBHOOKS__TIMEOUT_MS", "10000");
    let dir = TempDir::new("webhook-kill");
    let (pool, db_url) = fresh_db_with_url().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let (mut first, first_log) = start_payoutd(&db_url, &dir.0, port, &env);
    eventually(60_000, "payoutd up", || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    for i in 0..3 {
        let r = client
            .post(format!("{base}/v1/payouts"))
            .json(&payout(&format!("wh-kill-{i}"), "1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    eventually(
        30_000,
        "the payouts confirmed, deliveries in flight",
        || async {
            let confirmed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM payouts WHERE state = 'confirmed'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            confirmed == 3 && !rx.got().is_empty()
        },
    )
    .await;
    let in_flight = rx.got();
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let mut log = first_log.await.unwrap();
    // The receiver recovers (one more failure first, so an error is recorded), and
    // payoutd starts again on the same database.
    rx.answer(&[Reply::Status(500)], Reply::Ok);
    let (mut second, second_log) = start_payoutd(&db_url, &dir.0, port, &env);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM payout_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    eventually(
        60_000,
        "every event delivered after the restart",
        || async { deliveries(&pool, "delivered").await == events },
    )
    .await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    log.push_str(&second_log.await.unwrap());
    let got = rx.got();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT payout_id || ':' || version FROM payout_events")
            .fetch_all(&pool)
            .await
            .unwrap();
    for id in &ids {
        assert!(
            got.iter().any(|r| &r.event_id == id),
            "event {id} never delivered"
        );
    }
    for r in &in_flight {
        let again: Vec<&Received> = got.iter().filter(|g| g.event_id == r.event_id).collect();
        assert!(
            again.len() >= 2,
            "{} in flight at the kill is sent again",
            r.event_id
        );
        assert!(
            again.iter().all(|g| g.body == r.body),
            "the same body every time"
        );
    }
    // Neither the signing secret nor the URL's token is in the logs or the database.
    let dump: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(d::text, ' '), '') FROM webhook_deliveries d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let retried: i32 = sqlx::query_scalar("SELECT max(attempts) FROM webhook_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(retried, 2, "the 500 after the restart was retried");
    for (what, text) in [("the logs", &log), ("the deliveries table", &dump)] {
        assert!(!text.contains(SECRET), "the signing secret is in {what}");
        assert!(
            !text.contains("hook-url-token-4821"),
            "the URL's token is in {what}"
        );
    }
    assert!(log.contains("webhook dispatcher ready"), "{log}");
}
