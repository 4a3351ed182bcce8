//! The OpenAPI document served at `/openapi.json` (kept beside the code in `openapi.json`;
//! a test checks it parses and names every route).

pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    #[test]
    fn document_parses_and_lists_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        for path in [
            "/v1/payouts",
            "/v1/payouts/{id}",
            "/v1/payouts/{id}/cancel",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
