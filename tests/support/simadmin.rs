//! A client for the simulator's `/sim/*` admin endpoints: set up accounts, switch faults and
//! the base fee, read the head, the fault counters and the payments the ledger applied.

use payoutd_simulator::{AppliedPayment, FaultCounts, Faults};
use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::{ASSET_CODE, Accounts};

/// XLM of the distribution account, in stroops: far more than any run pays.
const DISTRIBUTION_STROOPS: i64 = 100_000_000 * 10_000_000;
/// Test-asset balance of the distribution account, in stroops.
const DISTRIBUTION_ASSET_STROOPS: i64 = 100_000_000 * 10_000_000;
/// XLM of each channel account (fees only), in stroops.
const CHANNEL_STROOPS: i64 = 10_000 * 10_000_000;
/// XLM of each destination and of the issuer, in stroops.
const DESTINATION_STROOPS: i64 = 100 * 10_000_000;

#[derive(Clone)]
pub struct SimAdmin {
    base_url: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct PaymentList {
    count: usize,
    payments: Vec<AppliedPayment>,
}

impl SimAdmin {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client with a timeout builds");
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Value {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("simulator {what}: {e}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("simulator {what}: unreadable answer: {e}"));
        assert!(status.is_success(), "simulator {what}: {status} {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base_url);
        self.send(self.http.post(url).json(&body), path).await
    }

    async fn put(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base_url);
        self.send(self.http.put(url).json(&body), path).await
    }

    /// Creates and funds every account of the run, the trustlines, and the distribution
    /// account's test-asset balance. Ghosts get nothing.
    pub async fn fund(&self, accounts: &Accounts) {
        let create = |account: String, xlm_stroops: i64| {
            self.post(
                "/sim/accounts",
                json!({ "account": account, "xlm_stroops": xlm_stroops }),
            )
        };
        create(accounts.distribution.id(), DISTRIBUTION_STROOPS).await;
        create(accounts.issuer.id(), DESTINATION_STROOPS).await;
        for c in &accounts.channels {
            create(c.id(), CHANNEL_STROOPS).await;
        }
        for d in &accounts.destinations {
            create(d.key.id(), DESTINATION_STROOPS).await;
        }
        let issuer = accounts.issuer.id();
        let trusting = std::iter::once(accounts.distribution.id()).chain(
            accounts
                .destinations
                .iter()
                .filter(|d| d.trusts_asset)
                .map(|d| d.key.id()),
        );
        for account in trusting {
            self.post(
                "/sim/trustlines",
                json!({ "account": account, "asset_code": ASSET_CODE, "issuer": issuer, "limit_stroops": i64::MAX }),
            )
            .await;
        }
        self.post(
            "/sim/credit",
            json!({ "account": accounts.distribution.id(), "asset_code": ASSET_CODE, "issuer": issuer, "amount_stroops": DISTRIBUTION_ASSET_STROOPS }),
        )
        .await;
    }

    pub async fn set_faults(&self, faults: &Faults) {
        let body = serde_json::to_value(faults).expect("faults serialize");
        self.put("/sim/faults", body).await;
    }

    pub async fn set_base_fee(&self, stroops: i64) {
        self.put("/sim/base_fee", json!({ "stroops": stroops }))
            .await;
    }

    /// The head: its sequence and close time (unix seconds), from `GET /sim/status`.
    pub async fn head(&self) -> (u32, u64) {
        let url = format!("{}/sim/status", self.base_url);
        let body = self.send(self.http.get(url), "GET /sim/status").await;
        let number = |key: &str| {
            body[key]
                .as_u64()
                .unwrap_or_else(|| panic!("GET /sim/status: no {key} in {body}"))
        };
        let sequence = u32::try_from(number("latest_ledger")).expect("a ledger number fits u32");
        (sequence, number("latest_ledger_close_time"))
    }

    pub async fn fault_counts(&self) -> FaultCounts {
        let url = format!("{}/sim/faults", self.base_url);
        let body = self.send(self.http.get(url), "GET /sim/faults").await;
        serde_json::from_value(body).expect("fault counts parse")
    }

    /// Successful payments, all of them or those carrying `memo` (`hash:…`, `id:…`, `text:…`).
    pub async fn payments(&self, memo: Option<&str>) -> Vec<AppliedPayment> {
        let url = format!("{}/sim/payments", self.base_url);
        let mut request = self.http.get(url);
        if let Some(memo) = memo {
            request = request.query(&[("memo", memo)]);
        }
        let body = self.send(request, "GET /sim/payments").await;
        let list: PaymentList = serde_json::from_value(body).expect("payment list parses");
        assert_eq!(list.count, list.payments.len(), "payment list count");
        list.payments
    }
}
