//! What every settings section shares: the built-in defaults (`config/default.toml`, the
//! one place they are written), reading a section's defaults, and the errors that name
//! the offending key. A leaf: the modules that own a section import this, never the
//! whole configuration.

pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// The section at `path` of the built-in defaults, as its settings type: what a section's
/// `Default` is, so every default is written once, in `config/default.toml`.
pub fn built_in<T: serde::de::DeserializeOwned>(path: &[&str]) -> T {
    let mut value = toml::Value::Table(
        DEFAULTS
            .parse::<toml::Table>()
            .expect("config/default.toml is TOML"),
    );
    for key in path {
        value = value
            .as_table_mut()
            .and_then(|t| t.remove(*key))
            .unwrap_or_else(|| panic!("config/default.toml has no [{}]", path.join(".")));
    }
    value
        .try_into()
        .unwrap_or_else(|e| panic!("config/default.toml [{}]: {e}", path.join(".")))
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}: {detail}")]
pub struct InvalidSetting {
    pub key: String,
    pub detail: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

impl From<InvalidSetting> for ConfigError {
    fn from(e: InvalidSetting) -> Self {
        Self::Invalid {
            key: e.key,
            detail: e.detail,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration in {origin}: {detail}")]
    Parse { origin: String, detail: String },
    #[error("invalid setting {key}: {detail}")]
    Invalid { key: String, detail: String },
}
