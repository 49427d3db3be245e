//! Configuration: built-in defaults < `config.toml` < `.env` < environment < command-line flags.
//!
//! Every setting is one entry of the table in `settings.rs`: its `config.toml` key, its type,
//! its default and its environment variables. The variables are the Python original's names,
//! unchanged (`PROXY_API_KEY`, `KIRO_CREDS_FILE`, `REFRESH_TOKEN`, …), so a migrating user keeps
//! their `.env`; durations have names ending in `_SECS` / `_MS`, and the older names without a
//! unit (`FIRST_TOKEN_TIMEOUT`, `connect_timeout`, …) are still accepted. In `config.toml` the
//! same settings are snake_case keys; an unknown key is an error naming it. `.env` never
//! overrides a variable already set in the environment.
//!
//! A value is read strictly where it is given: a number that is not one, a boolean other than
//! true/false, 1/0, yes/no, on/off, enabled/disabled, or a word outside a setting's set of
//! values is an error naming the variable (or key) and the value. [`Config::validate`] then
//! checks how the settings fit together and returns a [`ValidConfig`] of typed, checked values,
//! which is all the server takes. Every key, its variable and its default is listed in
//! `config.toml.example` and README.md (tests check both against the table).

mod settings;
mod tables;
mod valid;
mod value;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use settings::{Config, Setting, SETTINGS};
pub use tables::{AccountConfig, ClientKeyConfig};
pub use valid::{secs, AccountSettings, MetricsAccess, ValidConfig};
pub use value::{LogFormat, LogLevel};

use crate::Secret;

/// A configuration problem, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{name}: {detail}")]
    Invalid { name: String, detail: String },
}

fn invalid(name: &str, detail: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        detail: detail.to_string(),
    }
}

/// Strip matching quotes the way .env files often carry them.
fn unquote(v: &str) -> &str {
    let t = v.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return &t[1..t.len() - 1];
        }
    }
    t
}

/// The setting of a `config.toml` key, current or older.
fn setting_of_key(key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.key == key || s.old_keys.contains(&key))
}

impl Config {
    /// Point this configuration at a mock upstream (the offline demo, examples, tests): all
    /// four URLs at `url`, credentials = the mock's refresh token, no credential files.
    pub fn use_mock(&mut self, mock: &crate::mock::MockKiro) {
        let url = mock.url();
        self.kiro_api_url = url.clone();
        self.kiro_management_url = url.clone();
        self.kiro_desktop_auth_url = url.clone();
        self.kiro_oidc_url = url;
        self.refresh_token = Some(Secret::new(mock.config().initial_refresh_token.clone()));
        self.kiro_creds_file = None;
        self.kiro_cli_db_file = None;
    }

    /// Parse a `config.toml` text. An unknown key, a value of the wrong type or outside the
    /// setting's values, and a setting given under two keys (its name and an older one) are
    /// errors naming the key.
    pub fn from_toml(text: &str, path: &str) -> Result<Config, ConfigError> {
        let parse = |detail: String| ConfigError::Parse {
            path: path.to_owned(),
            detail,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        let mut cfg = Config::default();
        let mut seen: Vec<(&'static str, String)> = Vec::new();
        for (key, value) in table {
            let Some((setting, result)) = cfg.set_by_key(&key, value) else {
                return Err(parse(format!(
                    "unknown key `{key}` (config.toml.example lists every key)"
                )));
            };
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == setting) {
                return Err(parse(format!(
                    "`{first}` and `{key}` are the same setting: give only `{setting}`"
                )));
            }
            seen.push((setting, key.clone()));
            if let Err(e) = result {
                let env = setting_of_key(setting)
                    .and_then(|s| s.env.first())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(parse(format!("{key}{env}: {e}")));
            }
        }
        Ok(cfg)
    }

    /// Read a `config.toml` file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Apply one setting by its environment name (current or older; surrounding quotes are
    /// stripped). A name no setting has is ignored.
    pub fn set_env(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
        self.set_by_env(name, unquote(raw))
            .map(|_| ())
            .map_err(|e| invalid(name, e))
    }

    /// Overlay every known variable from an environment lookup. A setting set under both its
    /// name and an older one must have the same value under both.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            let mut first: Option<(&str, String)> = None;
            for name in setting.env {
                let Some(v) = get(name) else { continue };
                match &first {
                    Some((other, w)) if unquote(w) != unquote(&v) => {
                        return Err(invalid(
                            name,
                            format!(
                                "{v:?} disagrees with {other}={w:?}: they are the same setting (set only {})",
                                setting.env[0]
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.set_env(name, &v)?;
                        first = Some((name, v));
                    }
                }
            }
        }
        Ok(())
    }

    /// Load: defaults, then `config_file` (or `./config.toml` if it exists), then `.env` from
    /// the working directory (not overriding set variables), then the environment.
    pub fn load(config_file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match config_file {
            Some(p) => Self::from_file(p)?,
            None if Path::new("config.toml").exists() => Self::from_file(Path::new("config.toml"))?,
            None => Config::default(),
        };
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError::Parse {
                    path: ".env".into(),
                    detail: e.to_string(),
                })
            }
        }
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }
}
