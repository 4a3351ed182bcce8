//! Layered configuration: built-in defaults (`config/default.toml`, compiled in) → an
//! optional file (`--config FILE` or `PAYOUTD_CONFIG`) → `PAYOUTD__SECTION__KEY`
//! environment variables. Secrets come only from the environment or from files and live
//! in `SecretString`, whose `Debug` is masked.

use std::path::{Path, PathBuf};

use payoutd_actors::destinations::{DestinationPolicy, NoAccount, NoTrust};
use payoutd_actors::domain::{Amount, Asset};
use payoutd_actors::limits::{AssetLimit, Limits, WhenReached};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub mod base;
pub mod ledger;

pub use crate::telemetry::{LogFormat, TelemetrySettings};
pub use base::{ConfigError, DEFAULTS, InvalidSetting, built_in};
pub use ledger::{LedgerMode, LedgerSettings, SimulatorProtocol, SimulatorSettings};

const ENV_PREFIX: &str = "PAYOUTD__";

/// Environment variables that hold secrets: read directly, never merged into the tree
/// (so a typo in a file can never make a secret appear in a dumped configuration).
pub const ENV_DISTRIBUTION_SEED: &str = "PAYOUTD__LEDGER__DISTRIBUTION_SEED";
pub const ENV_CHANNEL_SEEDS: &str = "PAYOUTD__LEDGER__CHANNEL_SEEDS";
pub const ENV_API_TOKENS: &str = "PAYOUTD__SERVER__API_TOKENS";
pub const ENV_ADMIN_TOKENS: &str = "PAYOUTD__SERVER__ADMIN_TOKENS";

/// A setting that cannot work, named by its whole key (`nats.in_flight_max`): what every
/// section's check answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub ledger: LedgerSettings,
    pub payouts: PayoutSettings,
    pub cluster: ClusterSettings,
    /// `[safety]`: the circuit breaker's thresholds (0 turns a signal off).
    pub safety: payoutd_actors::safety::BreakerConfig,
    #[serde(default)]
    pub limits: LimitsSettings,
    #[serde(default)]
    pub destinations: DestinationSettings,
    #[serde(default)]
    pub inbox: crate::inbox::InboxSettings,
    #[serde(default)]
    pub nats: crate::nats::NatsSettings,
    #[serde(default)]
    pub reconcile: crate::reconcile::ReconcileSettings,
    pub webhooks: crate::webhooks::WebhookSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub body_bytes_max: usize,
    pub request_timeout_ms: u64,
    pub batch_items_max: usize,
    pub batch_body_bytes_max: usize,
    /// Bearer tokens, from `PAYOUTD__SERVER__API_TOKENS` (comma-separated) or a file.
    /// Empty = authentication off (only sensible on loopback; a warning is logged).
    #[serde(skip)]
    pub api_tokens: Vec<SecretString>,
    #[serde(default)]
    pub api_tokens_file: Option<PathBuf>,
    /// Admin tokens (`/v1/admin/*`), separate from the payout tokens, each with a name the
    /// audit trail records: `name:token`, comma-separated, from
    /// `PAYOUTD__SERVER__ADMIN_TOKENS` or `admin_tokens_file`.
    #[serde(skip)]
    pub admin_tokens: Vec<AdminToken>,
    #[serde(default)]
    pub admin_tokens_file: Option<PathBuf>,
}

/// A named admin token. The name is what the audit trail shows; the token never is.
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub token: SecretString,
}

/// `[destinations]`: what pays a destination that is not ready (docs/protocol.md,
/// "Operation kinds"). Both off by default: the payout fails with the ledger's code.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSettings {
    pub no_trust: NoTrustSetting,
    pub no_account: NoAccountSetting,
    /// The network's base reserve, in stroops; a new account needs two.
    pub base_reserve_stroops: i64,
}

impl Default for DestinationSettings {
    /// The built-in defaults (`config/default.toml`, the one place they are written).
    fn default() -> Self {
        built_in(&["destinations"])
    }
}

/// `destinations.no_trust`: `"fail"` or `"claimable_balance"`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoTrustSetting {
    #[default]
    Fail,
    ClaimableBalance,
}

/// `destinations.no_account`: `"fail"` or `"create_account"`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoAccountSetting {
    #[default]
    Fail,
    CreateAccount,
}

impl DestinationSettings {
    pub fn policy(&self) -> DestinationPolicy {
        DestinationPolicy {
            no_trust: match self.no_trust {
                NoTrustSetting::Fail => NoTrust::Fail,
                NoTrustSetting::ClaimableBalance => NoTrust::ClaimableBalance,
            },
            no_account: match self.no_account {
                NoAccountSetting::Fail => NoAccount::Fail,
                NoAccountSetting::CreateAccount => NoAccount::CreateAccount,
            },
            base_reserve_stroops: self.base_reserve_stroops,
        }
    }
}

/// `[limits]`: spending limits per asset (see docs/operations.md). Amounts are decimal
/// strings in the asset's units (`"1000"`, `"0.5"`), never floats.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// `wait`: a payout over a window limit is paid by itself once the window allows;
    /// `hold`: it waits for an operator.
    pub when_reached: String,
    /// None by default (the built-in defaults list none).
    #[serde(default)]
    pub assets: Vec<AssetLimitSettings>,
}

impl Default for LimitsSettings {
    /// The built-in defaults (`config/default.toml`, the one place they are written).
    fn default() -> Self {
        built_in(&["limits"])
    }
}

/// `[[limits.assets]]`: the limits of one asset; a limit left out is no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetLimitSettings {
    /// `native` (or `XLM`) or `CODE:ISSUER`.
    pub asset: String,
    pub per_payout_max: Option<String>,
    pub hourly_amount_max: Option<String>,
    pub hourly_count_max: Option<u32>,
    pub daily_amount_max: Option<String>,
    pub daily_count_max: Option<u32>,
}

impl LimitsSettings {
    /// The limits, checked: a misconfiguration is an error naming the key, never ignored.
    // Long because: every `[limits]` key checked in order, each refusal naming its key
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        let invalid = |key: String, detail: String| ConfigError::Invalid { key, detail };
        let when_reached = WhenReached::parse(&self.when_reached).ok_or_else(|| {
            invalid(
                "limits.when_reached".into(),
                format!("must be \"wait\" or \"hold\", not {:?}", self.when_reached),
            )
        })?;
        let mut assets: Vec<AssetLimit> = Vec::new();
        for (i, a) in self.assets.iter().enumerate() {
            let key = |field: &str| format!("limits.assets[{i}].{field}");
            let asset = Asset::parse(&a.asset).map_err(|e| invalid(key("asset"), e.to_string()))?;
            if assets.iter().any(|l| l.asset == asset) {
                return Err(invalid(
                    key("asset"),
                    format!("{} has limits twice (one entry per asset)", a.asset),
                ));
            }
            let amount =
                |field: &str, text: &Option<String>| -> Result<Option<Amount>, ConfigError> {
                    text.as_deref()
                        .map(|t| {
                            Amount::parse(t).map_err(|e| {
                                invalid(
                                    key(field),
                                    format!("must be an amount > 0 such as \"1000\": {e}"),
                                )
                            })
                        })
                        .transpose()
                };
            let count = |field: &str, n: Option<u32>| -> Result<Option<u32>, ConfigError> {
                match n {
                    Some(0) => Err(invalid(
                        key(field),
                        "must be at least 1 (leave it out for no limit)".into(),
                    )),
                    n => Ok(n),
                }
            };
            let limit = AssetLimit {
                asset,
                per_payout_max: amount("per_payout_max", &a.per_payout_max)?,
                hourly_amount_max: amount("hourly_amount_max", &a.hourly_amount_max)?,
                hourly_count_max: count("hourly_count_max", a.hourly_count_max)?,
                daily_amount_max: amount("daily_amount_max", &a.daily_amount_max)?,
                daily_count_max: count("daily_count_max", a.daily_count_max)?,
            };
            if limit.per_payout_max.is_none() && !limit.has_window() {
                return Err(invalid(
                    format!("limits.assets[{i}]"),
                    "sets no limit: give per_payout_max or an hourly/daily limit".into(),
                ));
            }
            if let (Some(h), Some(d)) = (limit.hourly_amount_max, limit.daily_amount_max)
                && h > d
            {
                return Err(invalid(
                    key("hourly_amount_max"),
                    "is above daily_amount_max: the hourly limit could never be reached".into(),
                ));
            }
            if let (Some(h), Some(d)) = (limit.hourly_count_max, limit.daily_count_max)
                && h > d
            {
                return Err(invalid(
                    key("hourly_count_max"),
                    "is above daily_count_max: the hourly limit could never be reached".into(),
                ));
            }
            if let Some(p) = limit.per_payout_max
                && [limit.hourly_amount_max, limit.daily_amount_max]
                    .into_iter()
                    .flatten()
                    .any(|w| p > w)
            {
                return Err(invalid(
                    key("per_payout_max"),
                    "is above a window's amount limit: such payouts could never be paid".into(),
                ));
            }
            assets.push(limit);
        }
        Ok(Limits {
            when_reached,
            assets,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May carry a password: shown masked.
    pub url: SecretString,
    pub local_data_dir: PathBuf,
    pub connections_max: u32,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutSettings {
    pub fee_per_op_stroops: u32,
    pub fee_per_op_max_stroops: u32,
    pub tx_validity_s: u64,
    pub attempts_max: u32,
    pub payments_per_tx_max: usize,
    pub batch_linger_ms: u64,
    pub poll_interval_ms: u64,
    pub io_retry_ms: u64,
    pub underfunded_retry_ms: u64,
    pub idle_passivate_ms: u64,
    pub live_actors_max: usize,
    pub restart_intensity: usize,
    pub restart_period_ms: u64,
    pub call_timeout_ms: u64,
    pub ready_queue_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub instance_id: String,
    pub heartbeat_interval_ms: u64,
    pub instance_ttl_ms: u64,
    pub orphan_sweep_interval_ms: u64,
    pub queue_refill_interval_ms: u64,
    pub worker_restart_intensity: usize,
    pub worker_restart_period_ms: u64,
    pub adopt_page_max: u32,
    pub pool_full_warn_ms: u64,
    pub control_poll_interval_ms: u64,
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        detail: e.to_string(),
    })
}

/// Parses an environment value as TOML (numbers, booleans, arrays) or else a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn split_secrets(raw: &str) -> Vec<SecretString> {
    raw.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_owned()))
        .collect()
}

/// `name:token` pairs, comma- or newline-separated. The error names the key and the entry
/// by position, never its text (it holds a secret).
fn admin_tokens(raw: &str, key: &str) -> Result<Vec<AdminToken>, ConfigError> {
    let mut out: Vec<AdminToken> = Vec::new();
    for (i, entry) in raw
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let invalid = |detail: &str| ConfigError::Invalid {
            key: key.into(),
            detail: format!("entry {}: {detail}", i + 1),
        };
        let Some((name, token)) = entry.split_once(':') else {
            return Err(invalid(
                "must be name:token (the name goes into the audit trail)",
            ));
        };
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            return Err(invalid(
                "the name must be 1-64 characters of A-Z a-z 0-9 . _ - @",
            ));
        }
        if token.trim().len() < 16 {
            return Err(invalid("the token must be at least 16 characters"));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(invalid("the name is used twice"));
        }
        out.push(AdminToken {
            name: name.to_owned(),
            token: SecretString::from(token.trim().to_owned()),
        });
    }
    Ok(out)
}

fn read_secret_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key: key.into(),
        detail: format!("cannot read {}: {e}", path.display()),
    })
}

/// A setting refused: the key and why.
fn invalid(key: &str, detail: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        detail: detail.into(),
    })
}

impl Settings {
    /// Loads defaults, then `file`, then the given environment (pass `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_for(file, env, true)
    }

    /// As `load`, for commands that only read (`payoutd reconcile`): no signing seed is
    /// required.
    pub fn load_read_only(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_for(file, env, false)
    }

    fn load_for(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        signs: bool,
    ) -> Result<Self, ConfigError> {
        let mut tree = parse_table(DEFAULTS, "built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            merge(&mut tree, parse_table(&text, &path.display().to_string())?);
        }
        let mut secrets = std::collections::HashMap::new();
        // Kept whole: a webhook endpoint's secret_env may name any variable.
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (key, value) in env.iter().cloned() {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if [
                ENV_DISTRIBUTION_SEED,
                ENV_CHANNEL_SEEDS,
                ENV_API_TOKENS,
                ENV_ADMIN_TOKENS,
            ]
            .contains(&key.as_str())
            {
                secrets.insert(key, value);
                continue;
            }
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let mut over = toml::Table::new();
            let mut cursor = &mut over;
            for (i, part) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    cursor.insert(part.clone(), env_value(&value));
                } else {
                    cursor = match cursor
                        .entry(part.clone())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    {
                        toml::Value::Table(t) => t,
                        _ => unreachable!("just inserted a table"),
                    };
                }
            }
            merge(&mut tree, over);
        }
        let mut settings: Settings =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: "merged configuration".into(),
                    detail: e.to_string(),
                })?;
        settings.read_secrets(&secrets)?;
        settings.webhooks.resolve(&env)?;
        settings.validate(signs)?;
        Ok(settings)
    }

    /// The secrets, from their environment variables (`secrets`) or else their files.
    fn read_secrets(
        &mut self,
        secrets: &std::collections::HashMap<String, String>,
    ) -> Result<(), ConfigError> {
        let settings = self;
        let ledger = &mut settings.ledger;
        if let Some(seed) = secrets.get(ENV_DISTRIBUTION_SEED) {
            ledger.distribution_seed = Some(SecretString::from(seed.trim().to_owned()));
        } else if let Some(path) = &ledger.distribution_seed_file {
            ledger.distribution_seed = Some(SecretString::from(
                read_secret_file(path, "ledger.distribution_seed_file")?
                    .trim()
                    .to_owned(),
            ));
        }
        if let Some(seeds) = secrets.get(ENV_CHANNEL_SEEDS) {
            ledger.channel_seeds = split_secrets(seeds);
        } else if let Some(path) = &ledger.channel_seeds_file {
            ledger.channel_seeds =
                split_secrets(&read_secret_file(path, "ledger.channel_seeds_file")?);
        }
        if let Some(tokens) = secrets.get(ENV_API_TOKENS) {
            settings.server.api_tokens = split_secrets(tokens);
        } else if let Some(path) = &settings.server.api_tokens_file {
            settings.server.api_tokens =
                split_secrets(&read_secret_file(path, "server.api_tokens_file")?);
        }
        if let Some(tokens) = secrets.get(ENV_ADMIN_TOKENS) {
            settings.server.admin_tokens = admin_tokens(tokens, "server.admin_tokens")?;
        } else if let Some(path) = &settings.server.admin_tokens_file {
            settings.server.admin_tokens = admin_tokens(
                &read_secret_file(path, "server.admin_tokens_file")?,
                "server.admin_tokens_file",
            )?;
        }
        Ok(())
    }

    /// `signs`: the command builds and signs transactions (its seeds are required).
    fn validate(&self, signs: bool) -> Result<(), ConfigError> {
        self.validate_payouts()?;
        self.validate_sections()?;
        self.validate_safety()?;
        self.validate_server()?;
        self.validate_cluster()?;
        self.validate_ledger(signs)
    }

    /// `[payouts]`.
    fn validate_payouts(&self) -> Result<(), ConfigError> {
        if self.payouts.fee_per_op_stroops < 100 {
            return invalid(
                "payouts.fee_per_op_stroops",
                "must be at least 100 (the network minimum)",
            );
        }
        if self.payouts.fee_per_op_max_stroops < self.payouts.fee_per_op_stroops {
            return invalid(
                "payouts.fee_per_op_max_stroops",
                "must be >= fee_per_op_stroops",
            );
        }
        if self.payouts.live_actors_max == 0 {
            return invalid("payouts.live_actors_max", "must be at least 1");
        }
        if !(1..=payoutd_actors::policy::OPERATIONS_PER_TX_MAX)
            .contains(&self.payouts.payments_per_tx_max)
        {
            return invalid(
                "payouts.payments_per_tx_max",
                "must be 1 to 100 (a Stellar transaction holds at most 100 operations)",
            );
        }
        if self.payouts.ready_queue_max == 0 {
            return invalid("payouts.ready_queue_max", "must be at least 1");
        }
        if self.payouts.attempts_max == 0 {
            return invalid("payouts.attempts_max", "must be at least 1");
        }
        Ok(())
    }

    /// The sections that check themselves: nats, inbox, reconcile, limits, destinations.
    fn validate_sections(&self) -> Result<(), ConfigError> {
        if self.nats.enabled {
            self.nats.validate()?;
        }
        if self.nats.enabled && self.nats.max_deliver != -1 && !self.inbox.enabled {
            return invalid(
                "nats.max_deliver",
                "a finite cap needs inbox.enabled = true (a request that cannot be made durable on its last delivery is stored there)",
            );
        }
        self.inbox.validate()?;
        self.reconcile.validate()?;
        self.limits.limits()?;
        if self.destinations.base_reserve_stroops < 1 {
            return invalid(
                "destinations.base_reserve_stroops",
                "must be at least 1 (the network's base reserve in stroops: 5000000 on the public network)",
            );
        }
        Ok(())
    }

    /// `[safety]`, and the control poll.
    fn validate_safety(&self) -> Result<(), ConfigError> {
        let s = &self.safety;
        if s.window_ms == 0 {
            return invalid("safety.breaker_window_ms", "must be at least 1");
        }
        if s.failure_percent_max > 100 {
            return invalid(
                "safety.breaker_failure_percent_max",
                "is a percentage: 0 (off) to 100",
            );
        }
        if s.failure_percent_max > 0 && s.failure_samples_min == 0 {
            return invalid(
                "safety.breaker_failure_samples_min",
                "must be at least 1 when breaker_failure_percent_max is set",
            );
        }
        if self.cluster.control_poll_interval_ms == 0 {
            return invalid("cluster.control_poll_interval_ms", "must be at least 1");
        }
        Ok(())
    }

    /// `[server]`.
    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.batch_items_max == 0 || self.server.batch_items_max > 10_000 {
            return invalid("server.batch_items_max", "must be 1 to 10000");
        }
        if self.server.batch_body_bytes_max < self.server.body_bytes_max {
            return invalid(
                "server.batch_body_bytes_max",
                "must be at least server.body_bytes_max",
            );
        }
        Ok(())
    }

    /// `[cluster]`.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.heartbeat_interval_ms == 0 || c.orphan_sweep_interval_ms == 0 {
            return invalid(
                "cluster.heartbeat_interval_ms",
                "heartbeat and sweep intervals must be at least 1 ms",
            );
        }
        if c.instance_ttl_ms < 2 * c.heartbeat_interval_ms {
            return invalid(
                "cluster.instance_ttl_ms",
                "must be at least twice cluster.heartbeat_interval_ms (one late heartbeat must not look like a death)",
            );
        }
        if c.adopt_page_max == 0 {
            return invalid("cluster.adopt_page_max", "must be at least 1");
        }
        if c.worker_restart_period_ms == 0 {
            return invalid("cluster.worker_restart_period_ms", "must be at least 1");
        }
        if c.instance_id.len() > 200 {
            return invalid("cluster.instance_id", "must be at most 200 bytes");
        }
        Ok(())
    }

    /// `[ledger]`: what its mode needs.
    fn validate_ledger(&self, signs: bool) -> Result<(), ConfigError> {
        if self.ledger.mode == LedgerMode::Horizon {
            if self.ledger.horizon_url.is_empty() {
                return invalid(
                    "ledger.horizon_url",
                    "is required when ledger.mode = \"horizon\"",
                );
            }
            if signs && self.ledger.distribution_seed.is_none() {
                return invalid(
                    "ledger.distribution_seed",
                    "is required in horizon mode: set PAYOUTD__LEDGER__DISTRIBUTION_SEED or ledger.distribution_seed_file",
                );
            }
        }
        if self.ledger.mode == LedgerMode::Rpc {
            ledger::validate_rpc(&self.ledger, signs)?;
        }
        Ok(())
    }
    /// This instance's name in the cluster: `cluster.instance_id`, or the host name and the
    /// port of `server.listen`.
    pub fn instance_id(&self) -> String {
        if !self.cluster.instance_id.trim().is_empty() {
            return self.cluster.instance_id.trim().to_owned();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let port = self
            .server
            .listen
            .rsplit_once(':')
            .map(|(_, p)| p)
            .unwrap_or("0");
        format!("{host}:{port}")
    }

    /// True when no database URL is configured and a private cluster must be started.
    pub fn wants_local_postgres(&self) -> bool {
        self.database.url.expose_secret().trim().is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Environment pairs as `Settings::load` takes them (the settings tests share it).
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn admin_tokens_are_named_and_bad_ones_are_refused_without_echoing_them() {
        let s = Settings::load(
            None,
            env(&[(
                ENV_ADMIN_TOKENS,
                "alice:aaaaaaaaaaaaaaaa1, bob@ops:bbbbbbbbbbbbbbbb2",
            )]),
        )
        .unwrap();
        let names: Vec<&str> = s
            .server
            .admin_tokens
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["alice", "bob@ops"]);
        assert!(!format!("{:?}", s.server.admin_tokens).contains("aaaaaaaaaaaaaaaa1"));
        for (raw, want) in [
            ("secret-without-a-name-xyz", "entry 1: must be name:token"),
            ("alice:short", "entry 1: the token must be at least 16"),
            ("a b:cccccccccccccccccc", "entry 1: the name must be"),
            (
                "x:dddddddddddddddddd,x:eeeeeeeeeeeeeeeeee",
                "entry 2: the name is used twice",
            ),
        ] {
            let e = Settings::load(None, env(&[(ENV_ADMIN_TOKENS, raw)])).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("server.admin_tokens") && text.contains(want),
                "{text}"
            );
            for secret in ["secret-without", "short", "cccc", "dddd", "eeee"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    fn with_file(name: &str, toml: &str) -> Result<Settings, ConfigError> {
        let path =
            std::env::temp_dir().join(format!("payoutd-config-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap();
        let out = Settings::load(Some(&path), env(&[]));
        let _ = std::fs::remove_file(&path);
        out
    }

    const USDC: &str = "USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5";

    #[test]
    fn limits_load_from_the_file() {
        let s = with_file(
            "limits-ok",
            &format!(
                "[limits]\nwhen_reached = \"hold\"\n[[limits.assets]]\nasset = \"{USDC}\"\nper_payout_max = \"1000\"\ndaily_amount_max = \"10000.5\"\nhourly_count_max = 100\n"
            ),
        )
        .unwrap();
        let limits = s.limits.limits().unwrap();
        assert_eq!(limits.when_reached, WhenReached::Hold);
        let l = &limits.assets[0];
        assert_eq!(l.per_payout_max.unwrap().stroops(), 10_000_000_000);
        assert_eq!(l.daily_amount_max.unwrap().stroops(), 100_005_000_000);
        assert_eq!(l.hourly_count_max, Some(100));
        assert!(
            Settings::load(None, env(&[]))
                .unwrap()
                .limits
                .limits()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_limit_misconfiguration_refuses_to_start() {
        for (name, body, key, want) in [
            (
                "mode",
                "[limits]\nwhen_reached = \"later\"\n".to_owned(),
                "limits.when_reached",
                "\"wait\" or \"hold\"",
            ),
            (
                "asset",
                "[[limits.assets]]\nasset = \"USDC\"\nper_payout_max = \"1\"\n".to_owned(),
                "limits.assets[0].asset",
                "",
            ),
            (
                "amount",
                format!("[[limits.assets]]\nasset = \"{USDC}\"\nper_payout_max = \"-5\"\n"),
                "limits.assets[0].per_payout_max",
                "amount > 0",
            ),
            (
                "decimals",
                format!(
                    "[[limits.assets]]\nasset = \"{USDC}\"\ndaily_amount_max = \"1.123456789\"\n"
                ),
                "limits.assets[0].daily_amount_max",
                "",
            ),
            (
                "count",
                format!("[[limits.assets]]\nasset = \"{USDC}\"\ndaily_count_max = 0\n"),
                "limits.assets[0].daily_count_max",
                "at least 1",
            ),
            (
                "empty",
                format!("[[limits.assets]]\nasset = \"{USDC}\"\n"),
                "limits.assets[0]",
                "sets no limit",
            ),
            (
                "twice",
                format!(
                    "[[limits.assets]]\nasset = \"{USDC}\"\nper_payout_max = \"1\"\n[[limits.assets]]\nasset = \"{USDC}\"\nper_payout_max = \"2\"\n"
                ),
                "limits.assets[1].asset",
                "twice",
            ),
            (
                "order",
                "[[limits.assets]]
asset = \"native\"
hourly_amount_max = \"20\"
daily_amount_max = \"10\"
"
                .to_owned(),
                "limits.assets[0].hourly_amount_max",
                "never be reached",
            ),
            (
                "never",
                "[[limits.assets]]
asset = \"native\"
per_payout_max = \"20\"
daily_amount_max = \"10\"
"
                .to_owned(),
                "limits.assets[0].per_payout_max",
                "never be paid",
            ),
            (
                "unknown",
                "[[limits.assets]]
asset = \"native\"
weekly_amount_max = \"20\"
"
                .to_owned(),
                "weekly_amount_max",
                "",
            ),
        ] {
            let e = with_file(name, &body).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(want), "{name}: {e}");
        }
    }

    #[test]
    fn breaker_settings_are_checked() {
        for (key, value, named) in [
            (
                "PAYOUTD__SAFETY__BREAKER_WINDOW_MS",
                "0",
                "safety.breaker_window_ms",
            ),
            (
                "PAYOUTD__SAFETY__BREAKER_FAILURE_PERCENT_MAX",
                "101",
                "safety.breaker_failure_percent_max",
            ),
            (
                "PAYOUTD__SAFETY__BREAKER_FAILURE_SAMPLES_MIN",
                "0",
                "safety.breaker_failure_samples_min",
            ),
            (
                "PAYOUTD__CLUSTER__CONTROL_POLL_INTERVAL_MS",
                "0",
                "cluster.control_poll_interval_ms",
            ),
            (
                "PAYOUTD__SAFETY__BREAKER_UNDERFUNDED_MAX",
                "-1",
                "breaker_underfunded_max",
            ),
        ] {
            let e = Settings::load(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{key}={value}: {e}");
        }
    }

    #[test]
    fn destination_settings_are_checked_and_named() {
        for (key, value, named) in [
            (
                "PAYOUTD__DESTINATIONS__NO_TRUST",
                "pay_anyway",
                "claimable_balance",
            ),
            (
                "PAYOUTD__DESTINATIONS__NO_ACCOUNT",
                "claimable_balance",
                "create_account",
            ),
            (
                "PAYOUTD__DESTINATIONS__BASE_RESERVE_STROOPS",
                "0",
                "destinations.base_reserve_stroops",
            ),
            (
                "PAYOUTD__DESTINATIONS__BASE_RESERVE_STROOPS",
                "0.5",
                "base_reserve_stroops",
            ),
        ] {
            let e = Settings::load(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{key}={value}: {e}");
        }
        let off = Settings::load(None, env(&[]))
            .unwrap()
            .destinations
            .policy();
        assert_eq!(off, DestinationPolicy::default());
        let on = Settings::load(
            None,
            env(&[
                ("PAYOUTD__DESTINATIONS__NO_TRUST", "claimable_balance"),
                ("PAYOUTD__DESTINATIONS__NO_ACCOUNT", "create_account"),
                ("PAYOUTD__DESTINATIONS__BASE_RESERVE_STROOPS", "1000000"),
            ]),
        )
        .unwrap()
        .destinations
        .policy();
        assert_eq!(on.no_trust, NoTrust::ClaimableBalance);
        assert_eq!(on.no_account, NoAccount::CreateAccount);
        assert_eq!(on.account_min_stroops(), 2_000_000);
    }

    #[test]
    fn the_production_example_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml");
        // Its placeholders (the account, the seeds that never go in a file) come from the
        // environment, as they would in production; every key in the file must be real.
        let seed = payoutd_actors::strkey::encode(payoutd_actors::strkey::VERSION_SEED, &[3; 32]);
        let account = payoutd_stellar::Keypair::from_seed(&seed)
            .unwrap()
            .account();
        let s = Settings::load(
            Some(&path),
            env(&[
                (ENV_DISTRIBUTION_SEED, &seed),
                (
                    "PAYOUTD__LEDGER__DISTRIBUTION_ACCOUNT",
                    &account.to_strkey(),
                ),
                (
                    "PAYOUTD_BACKEND_WEBHOOK_SECRET",
                    "whsec-production-0123456789",
                ),
            ]),
        );
        assert!(s.is_ok(), "{:?}", s.err());
    }

    #[test]
    fn webhook_endpoints_are_checked_and_their_secrets_never_shown() {
        let endpoints = |e: &str| {
            format!(
                "[{{name = \"backend\", url = \"https://h.example/x?token=url-token-99\", {e}}}]"
            )
        };
        let load = |e: &str, extra: &[(&str, &str)]| {
            let list = endpoints(e);
            let mut vars = vec![("PAYOUTD__WEBHOOKS__ENDPOINTS", list.as_str())];
            vars.extend_from_slice(extra);
            Settings::load(None, env(&vars))
        };
        let ok = load(
            "events = [\"confirmed\"], secret_env = \"HOOK_SECRET\"",
            &[(
                "HOOK_SECRET",
                "old-secret-0123456789, new-secret-0123456789",
            )],
        )
        .unwrap();
        assert_eq!(ok.webhooks.endpoints[0].secrets.len(), 2);
        let dump = format!("{ok:?}");
        assert!(
            !dump.contains("old-secret") && !dump.contains("url-token-99"),
            "{dump}"
        );
        for (e, extra, key) in [
            (
                "secret_env = \"HOOK_SECRET\"",
                &[][..],
                "webhooks.endpoints[0].secret_env",
            ),
            ("", &[][..], "webhooks.endpoints[0].secret_env"),
            (
                "secret_env = \"HOOK_SECRET\"",
                &[("HOOK_SECRET", "short")][..],
                "webhooks.endpoints[0].secret_env",
            ),
            (
                "events = [\"paid\"], secret_env = \"HOOK_SECRET\"",
                &[("HOOK_SECRET", "a-secret-0123456789")][..],
                "webhooks.endpoints[0].events",
            ),
        ] {
            match load(e, extra) {
                Err(ConfigError::Invalid { key: k, detail }) => {
                    assert_eq!(k, key, "{e}: {detail}");
                    assert!(!detail.contains("url-token-99"), "{detail}");
                }
                other => panic!("{e}: {other:?}"),
            }
        }
        let bad_url = Settings::load(
            None,
            env(&[
                (
                    "PAYOUTD__WEBHOOKS__ENDPOINTS",
                    "[{name = \"b\", url = \"ftp://h/x\", secret_env = \"S\"}]",
                ),
                ("S", "a-secret-0123456789"),
            ]),
        );
        assert!(
            matches!(bad_url, Err(ConfigError::Invalid { key, .. }) if key == "webhooks.endpoints[0].url")
        );
        // A secret written into the file itself is refused by name.
        let inline = Settings::load(
            None,
            env(&[(
                "PAYOUTD__WEBHOOKS__ENDPOINTS",
                "[{name = \"b\", url = \"https://h/x\", secret = \"a-secret-0123456789\"}]",
            )]),
        );
        let text = format!("{:?}", inline.unwrap_err());
        assert!(text.contains("unknown field `secret`"), "{text}");
    }

    #[test]
    fn section_defaults_are_the_built_in_file() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.inbox, crate::inbox::InboxSettings::default());
        let nats = crate::nats::NatsSettings::default();
        assert_eq!(
            (s.nats.stream, s.nats.outbox.batch_max),
            (nats.stream, nats.outbox.batch_max)
        );
        assert_eq!(
            s.reconcile.interval_ms,
            crate::reconcile::ReconcileSettings::default().interval_ms
        );
        assert_eq!(
            s.destinations.base_reserve_stroops,
            DestinationSettings::default().base_reserve_stroops
        );
        assert_eq!(
            s.limits.when_reached,
            LimitsSettings::default().when_reached
        );
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.ledger.mode, LedgerMode::Simulator);
        assert!(s.wants_local_postgres());
    }

    #[test]
    fn env_overrides_and_types() {
        let s = Settings::load(
            None,
            env(&[
                ("PAYOUTD__SERVER__LISTEN", "0.0.0.0:9000"),
                ("PAYOUTD__PAYOUTS__LIVE_ACTORS_MAX", "7"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:9000");
        assert_eq!(s.payouts.live_actors_max, 7);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Settings::load(None, env(&[("PAYOUTD__PAYOUTS__LIVE_ACTORS", "7")])).unwrap_err();
        assert!(err.to_string().contains("live_actors"), "{err}");
    }

    #[test]
    fn secrets_are_masked_in_debug() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        let s = Settings::load(
            None,
            env(&[
                (ENV_DISTRIBUTION_SEED, seed),
                (ENV_API_TOKENS, "tok-123456,tok-abcdef"),
                ("PAYOUTD__DATABASE__URL", "postgres://u:hunter2@h/db"),
            ]),
        )
        .unwrap();
        let dump = format!("{s:?}");
        for secret in [seed, "tok-123456", "tok-abcdef", "hunter2"] {
            assert!(!dump.contains(secret), "{secret} leaked into Debug");
        }
        assert_eq!(s.server.api_tokens.len(), 2);
    }

    #[test]
    fn reconcile_keys_with_wrong_values_are_named() {
        for (key, value, says) in [
            (
                "PAYOUTD__RECONCILE__INTERVAL_MS",
                "50",
                "reconcile.interval_ms",
            ),
            ("PAYOUTD__RECONCILE__INTERVAL_MS", "-1", "interval_ms"),
            (
                "PAYOUTD__RECONCILE__LEDGERS_PER_RUN_MAX",
                "0",
                "reconcile.ledgers_per_run_max",
            ),
            (
                "PAYOUTD__RECONCILE__PAGE_RECORDS",
                "0",
                "reconcile.page_records",
            ),
            (
                "PAYOUTD__RECONCILE__PAGE_RECORDS",
                "201",
                "reconcile.page_records",
            ),
            (
                "PAYOUTD__RECONCILE__PAGE_RECORDS",
                "\"many\"",
                "page_records",
            ),
            ("PAYOUTD__RECONCILE__INTERVAL", "1000", "interval"),
        ] {
            let err = Settings::load(None, env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(says), "{key}={value}: {err}");
        }
        let s = Settings::load(None, env(&[("PAYOUTD__RECONCILE__INTERVAL_MS", "0")])).unwrap();
        assert_eq!(s.reconcile.interval_ms, 0);
    }

    #[test]
    fn the_read_only_load_needs_no_seed() {
        let horizon = [
            ("PAYOUTD__LEDGER__MODE", "horizon"),
            ("PAYOUTD__LEDGER__HORIZON_URL", "http://127.0.0.1:8000"),
            ("PAYOUTD__DATABASE__URL", "postgres://127.0.0.1/payoutd"),
        ];
        let err = Settings::load(None, env(&horizon)).unwrap_err();
        assert!(err.to_string().contains("distribution_seed"), "{err}");
        let s = Settings::load_read_only(None, env(&horizon)).unwrap();
        assert!(s.ledger.distribution_seed.is_none());
    }
}
