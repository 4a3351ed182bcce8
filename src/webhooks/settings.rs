//! `[webhooks]`: the endpoints and the bounds of delivery. Defaults are in
//! `config/default.toml`; an endpoint's secret comes only from the environment
//! (`secret_env` names the variable) or from a file (`secret_file`), never from the file
//! that lists the endpoint.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::base::ConfigError;

/// The event kinds a payout's log can hold (`payout_events.kind`); an endpoint's `events`
/// names some of them, or `*` for all.
pub const EVENT_KINDS: &[&str] = &[
    "accepted",
    "prepared",
    "submitted",
    "confirmed",
    "failed",
    "parked",
    "requeued",
    "rerouted",
    "cancelled",
    "resumed",
    "adopted",
    "held",
    "released",
    "noted",
];

/// Shortest secret an endpoint may have, in bytes (HMAC-SHA256 keys shorter than this
/// can be guessed offline from one signed body).
pub const SECRET_BYTES_MIN: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where events go. Empty (the default): webhooks are off.
    #[serde(default)]
    pub endpoints: Vec<EndpointSettings>,
    /// Attempts of one delivery before it is dead-lettered.
    pub attempts_max: u32,
    /// A delivery still failing this long after it was created (or replayed) is
    /// dead-lettered, in milliseconds.
    pub retry_window_ms: u64,
    /// The wait after the first failure, doubled after each further one up to
    /// `retry_delay_max_ms`; each wait is drawn between half of it and all of it.
    pub retry_delay_min_ms: u64,
    pub retry_delay_max_ms: u64,
    /// One POST, connect to the last byte of the answer, in milliseconds.
    pub timeout_ms: u64,
    /// POSTs in flight to one endpoint at most.
    pub concurrency_max: u32,
    /// Deliveries one endpoint takes per round, and outbox rows fanned out per round.
    pub batch_max: u32,
    /// How often the outbox and the due deliveries are looked at without a nudge, in ms.
    pub poll_interval_ms: u64,
    /// Delivered rows are deleted this long after delivery, in milliseconds (dead ones
    /// stay until replayed).
    pub delivered_retention_ms: u64,
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// Names the endpoint in the deliveries table, the API, logs and metrics.
    pub name: String,
    /// Where events are POSTed (http or https). It may carry a token in its path or query:
    /// it is never logged, stored or shown (the name is).
    pub url: SecretString,
    /// Event kinds to send (`EVENT_KINDS`), or `["*"]` (the default) for every one.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// The environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A file holding the signing secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The signing secrets, read from `secret_env` or `secret_file`: one, or several
    /// separated by commas while a receiver rotates (each signs; see docs/webhooks.md).
    #[serde(skip)]
    pub secrets: Vec<SecretString>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

impl EndpointSettings {
    /// Whether this endpoint wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }

    /// The kinds as one comma-separated string (`*` for all), as the fan-out statement
    /// takes them.
    pub fn kinds_csv(&self) -> String {
        if self.events.iter().any(|e| e == "*") {
            "*".into()
        } else {
            self.events.join(",")
        }
    }
}

impl WebhookSettings {
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Reads each endpoint's secret (`env` is the process environment) and checks every
    /// setting; errors name the key, never a secret or the URL.
    pub fn resolve(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        self.check_bounds()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter_mut().enumerate() {
            if !names.insert(e.name.clone()) {
                return Err(invalid(
                    format!("webhooks.endpoints[{i}].name"),
                    format!("{} is used twice", e.name),
                ));
            }
            e.resolve(i, env)?;
        }
        Ok(())
    }

    fn check_bounds(&self) -> Result<(), ConfigError> {
        let bounds: [(&str, u64, u64, u64); 9] = [
            ("attempts_max", self.attempts_max.into(), 1, 100),
            ("retry_window_ms", self.retry_window_ms, 1, 30 * 86_400_000),
            ("retry_delay_min_ms", self.retry_delay_min_ms, 1, 86_400_000),
            ("retry_delay_max_ms", self.retry_delay_max_ms, 1, 86_400_000),
            ("timeout_ms", self.timeout_ms, 1, 300_000),
            ("concurrency_max", self.concurrency_max.into(), 1, 256),
            ("batch_max", self.batch_max.into(), 1, 10_000),
            ("poll_interval_ms", self.poll_interval_ms, 1, 60_000),
            (
                "delivered_retention_ms",
                self.delivered_retention_ms,
                1,
                u64::MAX,
            ),
        ];
        for (key, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    format!("webhooks.{key}"),
                    format!("must be {min} to {max}"),
                ));
            }
        }
        if self.retry_delay_max_ms < self.retry_delay_min_ms {
            return Err(invalid(
                "webhooks.retry_delay_max_ms".into(),
                "must be >= retry_delay_min_ms".into(),
            ));
        }
        Ok(())
    }
}

fn invalid(key: String, detail: String) -> ConfigError {
    ConfigError::Invalid { key, detail }
}

impl EndpointSettings {
    /// Checks endpoint `i` and reads its secret.
    fn resolve(&mut self, i: usize, env: &[(String, String)]) -> Result<(), ConfigError> {
        let key = |field: &str| format!("webhooks.endpoints[{i}].{field}");
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        if !name_ok {
            return Err(invalid(
                key("name"),
                "must be 1-64 characters of A-Z a-z 0-9 _ -".into(),
            ));
        }
        match reqwest::Url::parse(self.url.expose_secret()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(invalid(
                    key("url"),
                    "must be an absolute http:// or https:// URL".into(),
                ));
            }
        }
        if self.events.is_empty() {
            return Err(invalid(
                key("events"),
                "names no event kind (use [\"*\"] for all)".into(),
            ));
        }
        if let Some(bad) = self
            .events
            .iter()
            .find(|k| *k != "*" && !EVENT_KINDS.contains(&k.as_str()))
        {
            return Err(invalid(
                key("events"),
                format!(
                    "unknown event kind {bad:?}; known: * or {}",
                    EVENT_KINDS.join(", ")
                ),
            ));
        }
        self.read_secrets(&key, env)
    }

    /// The signing secrets, from the variable `secret_env` names or from `secret_file`.
    fn read_secrets(
        &mut self,
        key: &dyn Fn(&str) -> String,
        env: &[(String, String)],
    ) -> Result<(), ConfigError> {
        let (raw, secret_key) = match (&self.secret_env, &self.secret_file) {
            (Some(var), None) => (
                env.iter()
                    .find(|(k, _)| k == var)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        invalid(
                            key("secret_env"),
                            format!("the environment variable {var} is not set"),
                        )
                    })?,
                "secret_env",
            ),
            (None, Some(path)) => (
                std::fs::read_to_string(path).map_err(|err| {
                    invalid(
                        key("secret_file"),
                        format!("cannot read {}: {err}", path.display()),
                    )
                })?,
                "secret_file",
            ),
            _ => {
                return Err(invalid(
                    key("secret_env"),
                    "set exactly one of secret_env or secret_file (the signing secret never sits in the configuration file)".into(),
                ));
            }
        };
        self.secrets = raw
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        if self.secrets.is_empty()
            || self
                .secrets
                .iter()
                .any(|s| s.expose_secret().len() < SECRET_BYTES_MIN)
        {
            return Err(invalid(
                key(secret_key),
                format!("each signing secret must be at least {SECRET_BYTES_MIN} bytes"),
            ));
        }
        Ok(())
    }
}
