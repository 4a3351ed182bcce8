//! The OpenAPI document, served at [`PATH`] (and, for old clients, at `/openapi.json`).
//!
//! It is written by hand, beside the code, in `openapi.json`, and checked against the code
//! rather than generated from it: the document carries what the handlers cannot say about
//! themselves (patterns for ids, StrKeys and amounts, the codes each status can carry, a
//! description of every rule JSON Schema cannot express, an example for every request and
//! answer), and payoutd parses requests by hand (`RawPayoutRequest`) rather than through
//! derive macros a generator could read. The checks: the tests below (the document lists
//! exactly the routes the router serves, with the right authentication; every error code it
//! names is an [`ErrorCode`] answered with the status it is listed under; every code an HTTP
//! answer can carry is in it; every operation has examples), and the contract test
//! (`tests/api/contract.rs`), which runs schemathesis against a running payoutd.

pub const DOCUMENT: &str = include_str!("openapi.json");

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use payoutd_actors::ErrorCode;
    use serde_json::Value;

    use crate::http::{Auth, operations, status_of};

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn document() -> Value {
        serde_json::from_str(super::DOCUMENT).expect("src/openapi.json is JSON")
    }

    /// Follows a local `$ref` (`#/components/…`) until the value is not a reference.
    fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            let pointer = r.strip_prefix('#').expect("local reference");
            v = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{r} does not resolve"));
        }
        v
    }

    /// The error codes a response schema allows: the `enum` of `error.code`, through
    /// references and `oneOf`/`anyOf`/`allOf`.
    fn schema_codes(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
        let schema = resolve(doc, schema);
        for key in ["oneOf", "anyOf", "allOf"] {
            for s in schema
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                schema_codes(doc, s, out);
            }
        }
        if let Some(error) = schema.pointer("/properties/error") {
            let code = resolve(
                doc,
                resolve(doc, error).pointer("/properties/code").unwrap(),
            );
            let values = code
                .get("enum")
                .and_then(Value::as_array)
                .expect("error.code has an enum");
            out.extend(values.iter().map(|v| v.as_str().unwrap().to_owned()));
        }
    }

    /// (method, path) → status → the error codes documented for it.
    type Responses = BTreeMap<(String, String), BTreeMap<String, BTreeSet<String>>>;

    fn documented_codes(doc: &Value) -> Responses {
        let mut all = Responses::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let entry = all.entry((method.into(), path.clone())).or_default();
                for (status, response) in op["responses"].as_object().unwrap() {
                    let response = resolve(doc, response);
                    let codes = entry.entry(status.clone()).or_default();
                    for media in response
                        .get("content")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flat_map(|c| c.values())
                    {
                        schema_codes(doc, &media["schema"], codes);
                    }
                }
            }
        }
        all
    }

    /// Codes an HTTP answer can carry.
    fn http_codes() -> BTreeSet<String> {
        ErrorCode::ALL
            .iter()
            .filter(|c| status_of(**c).is_some())
            .map(|c| c.to_string())
            .collect()
    }

    /// Codes answered on any path rather than by an operation: an unknown path, a method an
    /// endpoint does not take. The document names them in `components/schemas/ErrorCode`
    /// and in its description.
    const ROUTER_CODES: [ErrorCode; 2] = [ErrorCode::NotFound, ErrorCode::MethodNotAllowed];

    #[test]
    fn document_lists_exactly_the_served_operations() {
        let doc = document();
        assert_eq!(
            doc["security"],
            serde_json::json!([{ "bearer": [] }]),
            "operations need a payout token unless they say otherwise"
        );
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let auth = match op.get("security") {
                    None => Auth::Payout,
                    Some(s) if s == &serde_json::json!([]) => Auth::Open,
                    Some(s) if s == &serde_json::json!([{ "adminBearer": [] }]) => Auth::Admin,
                    Some(other) => panic!("{method} {path}: unexpected security {other}"),
                };
                documented.insert((method.to_owned(), path.clone(), auth));
            }
        }
        let served: BTreeSet<_> = operations()
            .into_iter()
            .map(|o| (o.method.to_owned(), o.path.to_owned(), o.auth))
            .collect();
        assert_eq!(
            documented, served,
            "the document's operations (method, path, token) are the router's"
        );
        assert!(served.contains(&("get".into(), super::PATH.into(), Auth::Open)));
    }

    #[test]
    fn every_documented_code_is_an_error_code_answered_with_its_status() {
        let doc = document();
        for ((method, path), statuses) in documented_codes(&doc) {
            for (status, codes) in statuses {
                for code in codes {
                    let parsed = ErrorCode::parse(&code).unwrap_or_else(|| {
                        panic!("{method} {path} {status}: {code} is not an ErrorCode")
                    });
                    let answered = status_of(parsed).unwrap_or_else(|| {
                        panic!("{method} {path} {status}: {code} is never an HTTP answer")
                    });
                    assert_eq!(
                        answered.as_str(),
                        status,
                        "{method} {path}: {code} is documented under {status} but answered with {answered}"
                    );
                }
            }
        }
        let listed: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("components/schemas/ErrorCode lists every code")
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed,
            http_codes(),
            "components/schemas/ErrorCode is exactly the codes an HTTP answer can carry"
        );
    }

    #[test]
    fn every_code_an_http_answer_can_carry_is_documented() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for statuses in documented_codes(&doc).into_values() {
            documented.extend(statuses.into_values().flatten());
        }
        documented.extend(ROUTER_CODES.iter().map(|c| c.to_string()));
        let missing: Vec<_> = http_codes().difference(&documented).cloned().collect();
        assert!(
            missing.is_empty(),
            "codes no operation documents: {missing:?}"
        );
        let description = doc["info"]["description"].as_str().unwrap();
        for code in ROUTER_CODES {
            assert!(description.contains(code.as_str()), "{code} not described");
        }
    }

    #[test]
    fn every_operation_has_an_example_request_and_answer() {
        let doc = document();
        let has_example = |media: &Value| {
            media.get("example").is_some()
                || media
                    .get("examples")
                    .and_then(Value::as_object)
                    .is_some_and(|e| !e.is_empty())
        };
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                if let Some(body) = op.get("requestBody") {
                    let body = resolve(&doc, body);
                    for (media_type, media) in body["content"].as_object().unwrap() {
                        assert!(
                            has_example(media),
                            "{method} {path}: no example {media_type} request"
                        );
                    }
                }
                for (status, response) in op["responses"].as_object().unwrap() {
                    let response = resolve(&doc, response);
                    for (media_type, media) in response
                        .get("content")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        assert!(
                            has_example(media),
                            "{method} {path} {status}: no example {media_type} answer"
                        );
                    }
                }
            }
        }
    }

    /// The wire text of a code is written in one place, `ErrorCode`: no other source file
    /// of the service spells one as a string literal outside its tests.
    #[test]
    fn no_error_code_is_spelled_outside_the_enum() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        // Words that are a code's text and also something else: the CSV column `memo_type`,
        // the batch item status `unavailable` (written by the server, read by the CSV client).
        let other_meaning = [
            ("src/cli/submit/records.rs", "memo_type"),
            ("src/cli/submit/send.rs", "unavailable"),
            ("src/http/mod.rs", "unavailable"),
        ];
        let mut found = Vec::new();
        let mut dirs = vec![root.join("src"), root.join("actors/src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs")
                    || path.ends_with("actors/src/error_code.rs")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code_part = text.split("#[cfg(test)]\nmod tests").next().unwrap();
                let file = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                for (n, line) in code_part.lines().enumerate() {
                    if line.trim_start().starts_with("//") {
                        continue;
                    }
                    for literal in line.split('"').skip(1).step_by(2) {
                        if codes.contains(literal)
                            && !other_meaning.contains(&(file.as_str(), literal))
                        {
                            found.push(format!("{file}:{}: \"{literal}\"", n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "error codes written as strings (use ErrorCode): {found:#?}"
        );
    }

    /// docs/errors.md has one row per code, in the enum's order, with its HTTP status.
    #[test]
    fn the_error_page_lists_every_code_with_its_status() {
        let page = include_str!("../docs/errors.md");
        let rows: Vec<(String, String)> = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .map(|l| {
                let (code, rest) = l.split_once('`').unwrap();
                let status = rest
                    .trim_start_matches(" |")
                    .split('|')
                    .next()
                    .unwrap()
                    .trim();
                (code.to_owned(), status.to_owned())
            })
            .collect();
        let expected: Vec<(String, String)> = ErrorCode::ALL
            .iter()
            .map(|c| {
                let status = status_of(*c).map_or("-".to_owned(), |s| s.as_str().to_owned());
                (c.to_string(), status)
            })
            .collect();
        assert_eq!(
            rows, expected,
            "docs/errors.md: one row per ErrorCode, with its status"
        );
    }

    /// The states the document names are the core's, so a new state cannot go undocumented.
    #[test]
    fn payout_states_are_the_cores() {
        let doc = document();
        let documented: Vec<&str> = doc["components"]["schemas"]["PayoutState"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let core: Vec<&str> = payoutd_actors::state::PayoutState::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(documented, core);
    }
}
