//! The bad-input catalogue: one table of more than fifty distinct bad payout requests,
//! sent through every ingress of the running application — HTTP, NATS JetStream, the
//! Postgres inbox and CSV files — each answered with a clear error (the same stable code
//! everywhere), nothing stored and nothing lost (every broker message and inbox row ends as
//! a dead letter with its reason).

use std::time::Duration;

use payoutd::app::DEMO_DESTINATION as DEST;
use payoutd::cli::submit::{Outcome, SubmitOptions, read_rows, submit_rows};
use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::nats::NatsServer;

const ISSUER: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
const BAD_SEED: &str = "SBGWKM3CD4IL47QN6X54N6Y33T3JDNVI6AIJ6CD5IM47HG3IG4O36XCX";
const BAD_CHECKSUM: &str = "GBPXXOA5N4JYPESHAADMQKBPWZWQDQ64ZV6ZL2S3LAGW4SY7NTCMWIVT";

/// One bad input: a label, the JSON body, the expected error code, and whether the same
/// mistake can be written as a CSV row (field values only, not JSON structure).
struct Bad {
    label: &'static str,
    body: String,
    code: &'static str,
    csv: Option<[String; 6]>,
}

fn fields(id: &str, dest: &str, asset: &str, amount: &str, memo: Option<(&str, &str)>) -> Bad {
    let mut body =
        json!({ "payout_id": id, "destination": dest, "asset": asset, "amount": amount });
    if let Some((t, v)) = memo {
        body["memo"] = json!({ "type": t, "value": v });
    }
    let (mt, mv) = memo.unwrap_or(("", ""));
    Bad {
        label: "",
        body: body.to_string(),
        code: "",
        csv: Some([
            id.into(),
            dest.into(),
            asset.into(),
            amount.into(),
            mt.into(),
            mv.into(),
        ]),
    }
}

fn case(label: &'static str, code: &'static str, mut bad: Bad) -> Bad {
    bad.label = label;
    bad.code = code;
    bad
}

fn raw(label: &'static str, code: &'static str, body: &str) -> Bad {
    Bad {
        label,
        body: body.to_owned(),
        code,
        csv: None,
    }
}

fn catalogue() -> Vec<Bad> {
    let id = |n: usize| format!("bad-{n}");
    let muxed_bad = {
        let d = payoutd_actors::domain::Destination::Muxed {
            account: payoutd_actors::domain::AccountId::parse(DEST).unwrap(),
            id: 7,
        }
        .to_strkey();
        let mut chars: Vec<char> = d.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    vec![
        case(
            "empty payout id",
            "payout_id_length",
            fields("", DEST, "native", "1", None),
        ),
        case(
            "65-character payout id",
            "payout_id_length",
            fields(&"x".repeat(65), DEST, "native", "1", None),
        ),
        case(
            "space in payout id",
            "payout_id_charset",
            fields("a b", DEST, "native", "1", None),
        ),
        case(
            "slash in payout id",
            "payout_id_charset",
            fields("a/b", DEST, "native", "1", None),
        ),
        case(
            "accent in payout id",
            "payout_id_charset",
            fields("paiement-é", DEST, "native", "1", None),
        ),
        case(
            "newline in payout id",
            "payout_id_charset",
            fields("a\nb", DEST, "native", "1", None),
        ),
        case(
            "NUL in payout id",
            "payout_id_charset",
            fields("a\u{0}b", DEST, "native", "1", None),
        ),
        case(
            "SQL in payout id",
            "payout_id_charset",
            fields("x'; DROP TABLE payouts;--", DEST, "native", "1", None),
        ),
        case(
            "emoji in payout id",
            "payout_id_charset",
            fields("pay-💸", DEST, "native", "1", None),
        ),
        case(
            "destination with a bad checksum",
            "destination_invalid",
            fields(&id(10), BAD_CHECKSUM, "native", "1", None),
        ),
        case(
            "a secret seed as destination",
            "destination_is_secret",
            fields(&id(11), SEED, "native", "1", None),
        ),
        case(
            "a seed with a bad checksum as destination",
            "destination_is_secret",
            fields(&id(12), BAD_SEED, "native", "1", None),
        ),
        case(
            "lowercase destination",
            "destination_invalid",
            fields(&id(13), &DEST.to_lowercase(), "native", "1", None),
        ),
        case(
            "truncated destination",
            "destination_invalid",
            fields(&id(14), &DEST[..55], "native", "1", None),
        ),
        case(
            "empty destination",
            "destination_invalid",
            fields(&id(15), "", "native", "1", None),
        ),
        case(
            "hex key as destination",
            "destination_invalid",
            fields(&id(16), &"ab".repeat(32), "native", "1", None),
        ),
        case(
            "federation address",
            "destination_invalid",
            fields(&id(17), "bob*example.com", "native", "1", None),
        ),
        case(
            "muxed destination with a bad checksum",
            "destination_invalid",
            fields(&id(18), &muxed_bad, "native", "1", None),
        ),
        case(
            "destination with a trailing space",
            "destination_invalid",
            fields(&id(19), &format!("{DEST} "), "native", "1", None),
        ),
        case(
            "lowercase asset word",
            "asset_format",
            fields(&id(20), DEST, "usd", "1", None),
        ),
        case(
            "asset code without issuer",
            "asset_format",
            fields(&id(21), DEST, "USDC", "1", None),
        ),
        case(
            "asset without code",
            "asset_code",
            fields(&id(22), DEST, &format!(":{ISSUER}"), "1", None),
        ),
        case(
            "13-character asset code",
            "asset_code",
            fields(&id(23), DEST, &format!("ABCDEFGHIJKLM:{ISSUER}"), "1", None),
        ),
        case(
            "dash in asset code",
            "asset_code",
            fields(&id(24), DEST, &format!("US-D:{ISSUER}"), "1", None),
        ),
        case(
            "issuer with a bad checksum",
            "asset_issuer",
            fields(&id(25), DEST, &format!("USDC:{BAD_CHECKSUM}"), "1", None),
        ),
        case(
            "a seed as issuer",
            "asset_issuer",
            fields(&id(26), DEST, &format!("USDC:{SEED}"), "1", None),
        ),
        case(
            "empty issuer",
            "asset_issuer",
            fields(&id(27), DEST, "native:", "1", None),
        ),
        case(
            "lowercase xlm",
            "asset_format",
            fields(&id(28), DEST, "xlm", "1", None),
        ),
        case(
            "zero amount",
            "amount_not_positive",
            fields(&id(29), DEST, "native", "0", None),
        ),
        case(
            "negative amount",
            "amount_format",
            fields(&id(30), DEST, "native", "-1", None),
        ),
        case(
            "leading plus",
            "amount_format",
            fields(&id(31), DEST, "native", "+1", None),
        ),
        case(
            "exponent",
            "amount_format",
            fields(&id(32), DEST, "native", "1e5", None),
        ),
        case(
            "eight decimals",
            "amount_precision",
            fields(&id(33), DEST, "native", "1.12345678", None),
        ),
        case(
            "one stroop over i64",
            "amount_too_large",
            fields(&id(34), DEST, "native", "922337203685.4775808", None),
        ),
        case(
            "empty amount",
            "amount_format",
            fields(&id(35), DEST, "native", "", None),
        ),
        case(
            "leading space in amount",
            "amount_format",
            fields(&id(36), DEST, "native", " 1", None),
        ),
        case(
            "decimal comma",
            "amount_format",
            fields(&id(37), DEST, "native", "1,5", None),
        ),
        case(
            "NaN",
            "amount_format",
            fields(&id(38), DEST, "native", "NaN", None),
        ),
        case(
            "hex amount",
            "amount_format",
            fields(&id(39), DEST, "native", "0x10", None),
        ),
        case(
            "trailing point",
            "amount_format",
            fields(&id(40), DEST, "native", "1.", None),
        ),
        case(
            "leading point",
            "amount_format",
            fields(&id(41), DEST, "native", ".5", None),
        ),
        case(
            "Infinity",
            "amount_format",
            fields(&id(42), DEST, "native", "Infinity", None),
        ),
        case(
            "29-byte text memo",
            "memo_text_too_long",
            fields(
                &id(43),
                DEST,
                "native",
                "1",
                Some(("text", &"a".repeat(29))),
            ),
        ),
        case(
            "memo id over u64",
            "memo_id_format",
            fields(
                &id(44),
                DEST,
                "native",
                "1",
                Some(("id", "18446744073709551616")),
            ),
        ),
        case(
            "negative memo id",
            "memo_id_format",
            fields(&id(45), DEST, "native", "1", Some(("id", "-1"))),
        ),
        case(
            "63-character memo hash",
            "memo_hash_format",
            fields(
                &id(46),
                DEST,
                "native",
                "1",
                Some(("hash", &"a".repeat(63))),
            ),
        ),
        case(
            "non-hex memo hash",
            "memo_hash_format",
            fields(
                &id(47),
                DEST,
                "native",
                "1",
                Some(("hash", &"zz".repeat(32))),
            ),
        ),
        case(
            "unknown memo type",
            "memo_type",
            fields(&id(48), DEST, "native", "1", Some(("return", "ab"))),
        ),
        raw(
            "text memo without a value",
            "memo_value_missing",
            &format!(
                r#"{{"payout_id":"bad-49","destination":"{DEST}","asset":"native","amount":"1","memo":{{"type":"text"}}}}"#
            ),
        ),
        raw(
            "none memo with a value",
            "memo_value_unexpected",
            &format!(
                r#"{{"payout_id":"bad-50","destination":"{DEST}","asset":"native","amount":"1","memo":{{"type":"none","value":"x"}}}}"#
            ),
        ),
        raw(
            "unknown field",
            "invalid_body",
            &format!(
                r#"{{"payout_id":"bad-51","destination":"{DEST}","asset":"native","amount":"1","extra":true}}"#
            ),
        ),
        raw(
            "unknown field holding a seed",
            "invalid_body",
            &format!(
                r#"{{"payout_id":"bad-52","destination":"{DEST}","asset":"native","amount":"1","{SEED}":1}}"#
            ),
        ),
        raw(
            "amount as a JSON number",
            "field_type",
            &format!(
                r#"{{"payout_id":"bad-53","destination":"{DEST}","asset":"native","amount":12.5}}"#
            ),
        ),
        raw(
            "missing amount",
            "field_missing",
            &format!(r#"{{"payout_id":"bad-54","destination":"{DEST}","asset":"native"}}"#),
        ),
        raw(
            "null payout id",
            "field_type",
            &format!(
                r#"{{"payout_id":null,"destination":"{DEST}","asset":"native","amount":"1"}}"#
            ),
        ),
        raw(
            "payout id as a number",
            "field_type",
            &format!(r#"{{"payout_id":42,"destination":"{DEST}","asset":"native","amount":"1"}}"#),
        ),
        raw(
            "duplicate key",
            "invalid_body",
            &format!(
                r#"{{"payout_id":"bad-57","payout_id":"bad-57b","destination":"{DEST}","asset":"native","amount":"1"}}"#
            ),
        ),
        raw(
            "object as destination",
            "field_type",
            r#"{"payout_id":"bad-58","destination":{"id":"G"},"asset":"native","amount":"1"}"#,
        ),
        raw(
            "unknown memo field",
            "invalid_body",
            &format!(
                r#"{{"payout_id":"bad-59","destination":"{DEST}","asset":"native","amount":"1","memo":{{"type":"id","value":"1","x":1}}}}"#
            ),
        ),
        raw(
            "memo as a string",
            "field_type",
            &format!(
                r#"{{"payout_id":"bad-60","destination":"{DEST}","asset":"native","amount":"1","memo":"hello"}}"#
            ),
        ),
        case(
            "payout id that is a secret seed",
            "payout_id_is_secret",
            fields(SEED, DEST, "native", "1", None),
        ),
        raw("empty object", "field_missing", "{}"),
        raw("array", "invalid_body", "[]"),
        raw("JSON null", "invalid_body", "null"),
        raw("not JSON", "invalid_body", "hello"),
        raw(
            "truncated JSON",
            "invalid_body",
            r#"{"payout_id":"bad-65","destination":"#,
        ),
    ]
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn every_bad_input_through_every_ingress_gets_a_clear_error_and_nothing_is_stored_or_lost() {
    let cases = catalogue();
    assert!(
        cases.len() >= 50,
        "the catalogue holds {} inputs",
        cases.len()
    );
    let nats = NatsServer::start().await;
    let app = spawn_app(&[
        ("PAYOUTD__NATS__ENABLED", "true"),
        ("PAYOUTD__NATS__URL", nats.url.as_str()),
        ("PAYOUTD__NATS__FETCH_WAIT_MS", "200"),
        ("PAYOUTD__INBOX__POLL_INTERVAL_MS", "100"),
    ])
    .await;

    // HTTP: each answered with its code (422 for a field, 400 for the body), nothing stored.
    for c in &cases {
        let resp = app
            .post("/v1/payouts")
            .header("content-type", "application/json")
            .body(c.body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        let expected_status = if c.code == "invalid_body" { 400 } else { 422 };
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (expected_status, Some(c.code)),
            "HTTP: {}",
            c.label
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "HTTP: {} has no message", c.label);
        assert!(
            !message.contains(SEED) && !message.contains(BAD_SEED),
            "HTTP: {} echoes a seed",
            c.label
        );
    }
    // Broken UTF-8 exists only as bytes.
    let resp = app
        .post("/v1/payouts")
        .header("content-type", "application/json")
        .body(b"{\"payout_id\":\"\xff\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // NATS: every message ends as a dead letter with the same code.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // The consumer creates the stream; wait for it before publishing.
    for _ in 0..500 {
        if js.get_stream("PAYOUTS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in &cases {
        js.publish("payouts.requests.catalogue", c.body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js.publish(
        "payouts.requests.catalogue",
        b"{\"payout_id\":\"\xff\"}".to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // Inbox: every row ends as a dead letter with the same code.
    for c in &cases {
        sqlx::query("INSERT INTO payout_inbox (payload) VALUES ($1)")
            .bind(c.body.clone())
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let total = cases.len() as i64;
    for _ in 0..1_500 {
        let n = count(&app.pool, "SELECT count(*) FROM dead_letters").await;
        let left = count(&app.pool, "SELECT count(*) FROM payout_inbox").await;
        if n > 2 * total && left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (source, extra) in [("nats", 1), ("inbox", 0)] {
        let mut got: Vec<String> =
            sqlx::query_scalar("SELECT code FROM dead_letters WHERE source = $1")
                .bind(source)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        let mut want: Vec<String> = cases.iter().map(|c| c.code.to_owned()).collect();
        if extra == 1 {
            want.push("invalid_utf8".into());
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "{source}: dead-letter codes");
        let reasons: Vec<String> =
            sqlx::query_scalar("SELECT reason || payload FROM dead_letters WHERE source = $1")
                .bind(source)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        for r in &reasons {
            assert!(
                !r.contains(SEED) && !r.contains(BAD_SEED),
                "{source}: a seed was stored"
            );
        }
    }
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM payout_inbox").await,
        0,
        "no inbox row left behind"
    );

    // CSV: every field-level mistake is reported invalid with its code and line.
    let mut text = String::from("payout_id,destination,asset,amount,memo_type,memo_value\n");
    let quote = |f: &str| format!("\"{}\"", f.replace('"', "\"\""));
    let csv_cases: Vec<&Bad> = cases.iter().filter(|c| c.csv.is_some()).collect();
    for c in &csv_cases {
        let row: Vec<String> = c.csv.as_ref().unwrap().iter().map(|f| quote(f)).collect();
        text.push_str(&row.join(","));
        text.push('\n');
    }
    let rows = read_rows(&text).unwrap();
    assert_eq!(rows.len(), csv_cases.len());
    let mut options = SubmitOptions::new(app.base.clone());
    options.progress = false;
    let report = submit_rows(rows, &options).await.unwrap();
    for (row, c) in report.rows.iter().zip(&csv_cases) {
        match &row.outcome {
            Outcome::Invalid { code, .. } => assert_eq!(code, c.code, "CSV: {}", c.label),
            other => panic!("CSV: {} gave {other:?}", c.label),
        }
    }
    assert!(
        !format!("{report}").contains(SEED),
        "CSV report echoes a seed"
    );

    // Nothing stored anywhere.
    assert_eq!(count(&app.pool, "SELECT count(*) FROM payouts").await, 0);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM payout_events").await,
        0
    );
}
