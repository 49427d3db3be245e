//! Checking: [`Config::validate`] turns the settings into a [`ValidConfig`] (accounts with
//! their defaults filled in, client keys, bounds applied, durations as `Duration`).

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::{CredentialSettings, ProfileArnPolicy};
use crate::layers::{ClientKey, DebugMode};
use crate::Secret;

use super::tables::{AccountConfig, AccountsFile};
use super::value::LogFormat;
use super::{invalid, Config, ConfigError};

impl Config {
    /// `PROXY_API_KEY` (named `default`) and the `[[api_keys]]` tables, checked: names
    /// unique and not empty, exactly one of `key` and `sha256`, a limit above 0.
    fn client_keys(&self) -> Result<Vec<ClientKey>, ConfigError> {
        let mut keys = Vec::new();
        if !self.proxy_api_key.is_empty() {
            keys.push(ClientKey::new(
                crate::layers::auth::DEFAULT_CLIENT,
                self.proxy_api_key.expose(),
            ));
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            let at = format!("api_keys[{i}]");
            let name = k.name.trim();
            if name.is_empty() {
                return Err(invalid(&at, "needs a name"));
            }
            if keys.iter().any(|c: &ClientKey| c.name() == name) {
                return Err(invalid(
                    &at,
                    format!("the name {name:?} is used twice (PROXY_API_KEY is named \"default\")"),
                ));
            }
            let key = match (&k.key, &k.sha256) {
                (Some(key), None) if !key.expose().is_empty() => ClientKey::new(name, key.expose()),
                (None, Some(hex)) => {
                    ClientKey::from_sha256(name, hex).map_err(|e| invalid(&at, e))?
                }
                _ => return Err(invalid(&at, "needs exactly one of key and sha256")),
            };
            let key = match k.rate_limit_per_minute {
                Some(0) => return Err(invalid(&at, "rate_limit_per_minute must be above 0")),
                Some(n) => key.with_rate_limit_per_minute(n),
                None => key,
            };
            keys.push(key);
        }
        Ok(keys)
    }

    /// The single-account form's credentials are set (it is then the account `default`).
    fn has_env_credentials(&self) -> bool {
        self.kiro_api_key.is_some()
            || self.refresh_token.is_some()
            || self.kiro_creds_file.is_some()
            || self.kiro_cli_db_file.is_some()
    }

    /// The credentials of the single-account settings.
    fn env_credentials(&self) -> CredentialSettings {
        CredentialSettings {
            refresh_token: self.refresh_token.clone(),
            profile_arn: self.profile_arn.clone(),
            region: Some(self.kiro_region.clone()),
            creds_file: self.kiro_creds_file.clone(),
            cli_db_file: self.kiro_cli_db_file.clone(),
            api_key: self.kiro_api_key.clone(),
            sqlite_readonly: self.sqlite_readonly,
        }
    }

    /// Every account: `default` from the single-account settings (when they hold
    /// credentials), then `[[accounts]]`, then `KIRO_ACCOUNTS_FILE`'s, each checked.
    fn account_settings(
        &self,
        protocol: crate::kiro::ApiProtocol,
    ) -> Result<Vec<AccountSettings>, ConfigError> {
        let mut out = Vec::new();
        if self.has_env_credentials() {
            out.push(AccountSettings {
                name: crate::layers::metrics::DEFAULT_ACCOUNT.into(),
                credentials: self.env_credentials(),
                protocol,
                endpoints: self.endpoints_for(protocol, &AccountConfig::default()),
                proxy: self.vpn_proxy_url.clone(),
                priority: 0,
                weight: 1,
            });
        }
        let mut tables: Vec<(String, AccountConfig)> = self
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("accounts[{i}]"), a.clone()))
            .collect();
        if let Some(path) = &self.kiro_accounts_file {
            let shown = path.display().to_string();
            let text =
                std::fs::read_to_string(crate::auth::source::expand_tilde(path)).map_err(|e| {
                    ConfigError::Read {
                        path: shown.clone(),
                        detail: e.to_string(),
                    }
                })?;
            // JSON by its extension, or by its content (a TOML file of tables starts with
            // `[[` too, but is no JSON)
            let json = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                || (text.trim_start().starts_with(['[', '{'])
                    && serde_json::from_str::<serde_json::Value>(&text).is_ok());
            let parsed: Vec<AccountConfig> = if json {
                // an array of accounts, or an object with an `accounts` array
                let parsed = if text.trim_start().starts_with('[') {
                    serde_json::from_str::<Vec<AccountConfig>>(&text)
                } else {
                    serde_json::from_str::<AccountsFile>(&text).map(|f| f.accounts)
                };
                parsed.map_err(|e| ConfigError::Parse {
                    path: shown.clone(),
                    detail: e.to_string(),
                })?
            } else {
                toml::from_str::<AccountsFile>(&text)
                    .map_err(|e| ConfigError::Parse {
                        path: shown.clone(),
                        detail: e.to_string(),
                    })?
                    .accounts
            };
            tables.extend(
                parsed
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| (format!("{shown}: accounts[{i}]"), a)),
            );
        }
        for (at, a) in tables {
            let name = a.name.trim();
            if name.is_empty() {
                return Err(invalid(&at, "needs a name"));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    &at,
                    format!("the name {name:?} may only hold letters, digits, '-', '_' and '.'"),
                ));
            }
            if out.iter().any(|o: &AccountSettings| o.name == name) {
                return Err(invalid(
                    &at,
                    format!("the name {name:?} is used twice (the single-account settings form the account \"default\")"),
                ));
            }
            if a.kiro_api_key.is_none()
                && a.refresh_token.is_none()
                && a.kiro_creds_file.is_none()
                && a.kiro_cli_db_file.is_none()
            {
                return Err(invalid(
                    &at,
                    format!("account {name:?} has no credentials: give one of kiro_creds_file, refresh_token, kiro_cli_db_file, kiro_api_key"),
                ));
            }
            let protocol = match &a.kiro_api_protocol {
                Some(p) => p.parse().map_err(|e: String| invalid(&at, e))?,
                None => protocol,
            };
            if a.weight == Some(0) {
                return Err(invalid(&at, "weight must be above 0"));
            }
            out.push(AccountSettings {
                name: name.to_owned(),
                credentials: CredentialSettings {
                    refresh_token: a.refresh_token.clone(),
                    profile_arn: a.profile_arn.clone(),
                    region: Some(
                        a.kiro_region
                            .clone()
                            .unwrap_or_else(|| self.kiro_region.clone()),
                    ),
                    creds_file: a.kiro_creds_file.clone(),
                    cli_db_file: a.kiro_cli_db_file.clone(),
                    api_key: a.kiro_api_key.clone(),
                    sqlite_readonly: a.sqlite_readonly.unwrap_or(self.sqlite_readonly),
                },
                protocol,
                endpoints: self.endpoints_for(protocol, &a),
                proxy: a
                    .vpn_proxy_url
                    .clone()
                    .or_else(|| self.vpn_proxy_url.clone()),
                priority: a.priority,
                weight: a.weight.unwrap_or(1),
            });
        }
        Ok(out)
    }

    /// The base URLs of an account: its own, else the top-level ones, else the protocol's.
    fn endpoints_for(
        &self,
        protocol: crate::kiro::ApiProtocol,
        a: &AccountConfig,
    ) -> crate::kiro::EndpointTemplates {
        let defaults = crate::kiro::EndpointTemplates::for_protocol(protocol);
        let pick = |own: &Option<String>, top: &str, default: String| match own
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(o) => o.to_owned(),
            None if !top.trim().is_empty() => top.trim().to_owned(),
            None => default,
        };
        crate::kiro::EndpointTemplates {
            api_url: pick(&a.kiro_api_url, &self.kiro_api_url, defaults.api_url),
            management_url: pick(
                &a.kiro_management_url,
                &self.kiro_management_url,
                defaults.management_url,
            ),
            desktop_auth_url: pick(
                &a.kiro_desktop_auth_url,
                &self.kiro_desktop_auth_url,
                defaults.desktop_auth_url,
            ),
            oidc_url: pick(&a.kiro_oidc_url, &self.kiro_oidc_url, defaults.oidc_url),
        }
    }

    /// Check how the values fit together and derive what the rest of the code takes: a
    /// [`ValidConfig`], which holds checked, typed values only.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let host: std::net::IpAddr = match self.host.as_str() {
            "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
            h => h
                .parse()
                .map_err(|e| invalid("SERVER_HOST", format!("{h:?} is not an IP address ({e})")))?,
        };
        let client_keys = self.client_keys()?;
        if !host.is_loopback() && client_keys.is_empty() {
            return Err(invalid(
                "PROXY_API_KEY",
                format!(
                    "refusing to listen on {host} without an API key: anyone who can reach it could use your Kiro account. Set PROXY_API_KEY (or [[api_keys]] in config.toml), or listen on 127.0.0.1"
                ),
            ));
        }
        let mut model_aliases = Vec::with_capacity(self.model_aliases.len());
        for (alias, target) in &self.model_aliases {
            let (alias, target) = (alias.trim(), target.trim());
            if alias.is_empty() || target.is_empty() {
                return Err(invalid(
                    "model_aliases",
                    format!("{alias:?} = {target:?} needs both an alias and a model"),
                ));
            }
            model_aliases.push((alias.to_owned(), target.to_owned()));
        }
        if self.streaming_read_timeout_secs <= self.first_token_timeout_secs {
            tracing::warn!(
                "STREAMING_READ_TIMEOUT_SECS ({}s) is not greater than FIRST_TOKEN_TIMEOUT_SECS ({}s)",
                self.streaming_read_timeout_secs,
                self.first_token_timeout_secs
            );
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("MAX_BODY_BYTES", "must be greater than 0"));
        }
        if self.max_inflight_body_bytes < self.max_body_bytes {
            return Err(invalid(
                "MAX_INFLIGHT_BODY_BYTES",
                format!(
                    "{} is less than MAX_BODY_BYTES ({}): a body of the largest accepted size could never be read",
                    self.max_inflight_body_bytes, self.max_body_bytes
                ),
            ));
        }
        let metrics_access = match &self.metrics_api_key {
            Some(k) if !k.expose().is_empty() => {
                MetricsAccess::Key(Sha256::digest(k.expose().as_bytes()).into())
            }
            _ if host.is_loopback() || self.metrics_public => MetricsAccess::Open,
            _ => MetricsAccess::Off,
        };
        let api_protocol = self.kiro_api_protocol;
        let accounts = self.account_settings(api_protocol)?;
        let pool = crate::accounts::PoolConfig {
            strategy: self.account_selection,
            cooldown: secs(self.account_cooldown_secs, 0.0),
            cooldown_max: secs(self.account_cooldown_max_secs, 0.0),
            failure_threshold: self.account_failure_threshold.max(1),
            quota_park: self.account_quota_park,
            sticky_ttl: Duration::from_secs(self.sticky_ttl_secs),
            ..Default::default()
        };
        let admin_key = self
            .admin_api_key
            .as_ref()
            .filter(|k| !k.expose().is_empty())
            .map(|k| Sha256::digest(k.expose().as_bytes()).into());
        Ok(ValidConfig {
            accounts,
            pool,
            admin_key,
            addr: std::net::SocketAddr::new(host, self.port),
            client_keys,
            proxy_api_key: self.proxy_api_key.clone(),
            metrics_access,
            default_credentials: self.env_credentials(),
            default_endpoints: self.endpoints_for(api_protocol, &AccountConfig::default()),
            api_protocol,
            profile_arn_policy: self.profile_arn_policy,
            token_refresh_margin: Duration::from_secs(self.token_refresh_margin_secs),
            credentials_lock_timeout: secs(self.credentials_lock_timeout_secs, 0.0),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            first_token_timeout: secs(self.first_token_timeout_secs, 0.05),
            first_token_max_attempts: self.first_token_max_retries.max(1),
            streaming_read_timeout: secs(self.streaming_read_timeout_secs, 0.05),
            retry_max_attempts: self.retry_max_attempts.max(1),
            retry_base_delay: Duration::from_millis(self.retry_base_delay_ms),
            retry_max_delay: Duration::from_millis(self.retry_max_delay_ms),
            retry_budget: Duration::from_secs(self.retry_budget_secs),
            retry_after_cap: secs(self.retry_after_max_secs, 0.0),
            shutdown_grace: secs(self.shutdown_grace_secs, 0.0),
            header_read_timeout: secs(self.header_read_timeout_secs, 0.1),
            max_connections: self.max_connections,
            max_body_bytes: self.max_body_bytes,
            max_inflight_body_bytes: self.max_inflight_body_bytes,
            kiro_max_payload_bytes: self.kiro_max_payload_bytes,
            auto_trim_payload: self.auto_trim_payload,
            responses_store_max: self.responses_store_max,
            responses_store_ttl: Duration::from_secs(self.responses_store_ttl_secs),
            cors_allow_origins: self.cors_allow_origins.clone(),
            model_cache_ttl: Duration::from_secs(self.model_cache_ttl_secs.max(1)),
            unknown_model_policy: self.unknown_model_policy,
            model_aliases,
            tool_description_max_length: self.tool_description_max_length,
            fake_reasoning: self.fake_reasoning,
            fake_reasoning_max_tokens: self.fake_reasoning_max_tokens,
            thinking_mode: self.fake_reasoning_handling,
            reasoning_mode: self.reasoning_mode,
            log_filter: self.log_level.filter(),
            json_logs: self.log_format == LogFormat::Json,
            debug_mode: self.debug_mode,
            debug_dir: self.debug_dir.clone(),
            debug_keep: self.debug_keep,
        })
    }
}

/// Who may read `/metrics`.
#[derive(Clone, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who can reach the gateway (a loopback bind, or `metrics_public`).
    Open,
    /// Only with `Authorization: Bearer <METRICS_API_KEY>` (the key's SHA-256).
    Key([u8; 32]),
    /// Nobody (a non-loopback bind without `METRICS_API_KEY` or `metrics_public`).
    Off,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetricsAccess::Open => "Open",
            MetricsAccess::Key(_) => "Key(***)",
            MetricsAccess::Off => "Off",
        })
    }
}

/// One account, checked and with its defaults filled in.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub name: String,
    pub credentials: CredentialSettings,
    pub protocol: crate::kiro::ApiProtocol,
    pub endpoints: crate::kiro::EndpointTemplates,
    pub proxy: Option<String>,
    pub priority: i32,
    pub weight: u32,
}

/// A checked configuration: typed values with their bounds applied, what the server and the
/// binary take. Nothing here is raw input.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// Every account (`default` first when the single-account settings hold credentials).
    pub accounts: Vec<AccountSettings>,
    pub pool: crate::accounts::PoolConfig,
    /// SHA-256 of `ADMIN_API_KEY` (`None`: the admin routes are off).
    pub admin_key: Option<[u8; 32]>,
    pub addr: std::net::SocketAddr,
    /// `PROXY_API_KEY` and `[[api_keys]]`.
    pub client_keys: Vec<ClientKey>,
    /// `PROXY_API_KEY` itself (empty: none), for the demo's example command.
    pub proxy_api_key: Secret,
    pub metrics_access: MetricsAccess,
    /// The single-account settings' credentials and base URLs.
    default_credentials: CredentialSettings,
    default_endpoints: crate::kiro::EndpointTemplates,

    // upstream and credentials
    pub api_protocol: crate::kiro::ApiProtocol,
    pub profile_arn_policy: ProfileArnPolicy,
    pub token_refresh_margin: Duration,
    pub credentials_lock_timeout: Duration,
    pub connect_timeout: Duration,

    // timeouts and retries (`FIRST_TOKEN_MAX_RETRIES` and `RETRY_MAX_ATTEMPTS` at least 1,
    // the first-token and streaming timeouts at least 50 ms)
    pub first_token_timeout: Duration,
    pub first_token_max_attempts: u32,
    pub streaming_read_timeout: Duration,
    pub retry_max_attempts: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub retry_budget: Duration,
    pub retry_after_cap: Duration,

    // the server (the header timeout at least 100 ms)
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// At least `max_body_bytes`.
    pub max_inflight_body_bytes: usize,
    pub kiro_max_payload_bytes: usize,
    pub auto_trim_payload: bool,
    pub responses_store_max: usize,
    pub responses_store_ttl: Duration,
    pub cors_allow_origins: Vec<String>,

    // models and reasoning (the catalogue's refresh at least every second)
    pub model_cache_ttl: Duration,
    pub unknown_model_policy: crate::models::UnknownModelPolicy,
    /// `MODEL_ALIASES` and `[model_aliases]`, checked: `(alias, model)`.
    pub model_aliases: Vec<(String, String)>,
    pub tool_description_max_length: usize,
    pub fake_reasoning: bool,
    pub fake_reasoning_max_tokens: u32,
    pub thinking_mode: crate::api::thinking::ThinkingMode,
    pub reasoning_mode: crate::api::thinking::ReasoningMode,

    // logs and debugging
    /// `tracing` filter directive for the level.
    pub log_filter: &'static str,
    pub json_logs: bool,
    pub debug_mode: DebugMode,
    pub debug_dir: PathBuf,
    pub debug_keep: usize,
}

impl ValidConfig {
    /// The single-account settings' credentials (the account `default`).
    pub fn credentials(&self) -> CredentialSettings {
        self.default_credentials.clone()
    }

    /// The base URLs in force for the single-account settings: the configured ones, else the
    /// protocol's hosts.
    pub fn endpoints(&self) -> crate::kiro::EndpointTemplates {
        self.default_endpoints.clone()
    }

    /// At least one account has credentials.
    pub fn has_credentials(&self) -> bool {
        !self.accounts.is_empty()
    }
}

/// A configured number of seconds as a `Duration`: at least `min`, and an hour for a value
/// that is not finite.
pub fn secs(v: f64, min: f64) -> Duration {
    if v.is_finite() {
        Duration::from_secs_f64(v.max(min))
    } else {
        Duration::from_secs(3600)
    }
}
