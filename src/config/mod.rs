//! Configuration: built-in defaults < `config.toml` < `.env` < environment < command-line flags.
//!
//! The environment variables are the Python original's names, unchanged (`PROXY_API_KEY`,
//! `KIRO_CREDS_FILE`, `REFRESH_TOKEN`, …), so a migrating user keeps their `.env`. In
//! `config.toml` the same settings are snake_case keys; an unknown key is an error naming it.
//! `.env` never overrides a variable already set in the environment. Every key, its variable
//! and its default is listed in `config.toml.example` (a test parses that file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{CredentialSettings, ProfileArnPolicy};
use crate::layers::{ClientKey, DebugMode};
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

/// One `[[api_keys]]` table: a named client key, given as `key` or as `sha256` (the hex
/// SHA-256 of the key, so config.toml need not hold it), with an optional rate limit.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    pub name: String,
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// Requests a minute this key may make (absent: no limit); past it: 429 with Retry-After.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
}

/// One `[[accounts]]` table: a Kiro account of the pool. Credentials as in the single-account
/// form (the same precedence when several are given); everything else optional, defaulting to
/// the top-level setting of the same name.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub name: String,
    #[serde(default)]
    pub kiro_creds_file: Option<PathBuf>,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub kiro_cli_db_file: Option<PathBuf>,
    #[serde(default)]
    pub kiro_api_key: Option<Secret>,
    #[serde(default)]
    pub profile_arn: Option<String>,
    #[serde(default, alias = "region")]
    pub kiro_region: Option<String>,
    #[serde(default, alias = "protocol")]
    pub kiro_api_protocol: Option<String>,
    /// Outbound proxy of this account (`VPN_PROXY_URL` form); absent: the top-level one.
    #[serde(default, alias = "proxy")]
    pub vpn_proxy_url: Option<String>,
    /// `priority` selection: lower first.
    #[serde(default)]
    pub priority: i32,
    /// Share of the traffic (round robin, least in flight); default 1.
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub sqlite_readonly: Option<bool>,
    #[serde(default)]
    pub kiro_api_url: Option<String>,
    #[serde(default)]
    pub kiro_management_url: Option<String>,
    #[serde(default)]
    pub kiro_desktop_auth_url: Option<String>,
    #[serde(default)]
    pub kiro_oidc_url: Option<String>,
}

/// A `KIRO_ACCOUNTS_FILE`: `[[accounts]]` tables (TOML), or a JSON array of them, or a JSON
/// object with an `accounts` array.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    accounts: Vec<AccountConfig>,
}

/// All settings, as `config.toml` spells them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `SERVER_HOST`
    pub host: String,
    /// `SERVER_PORT`
    pub port: u16,
    /// `PROXY_API_KEY`: the key clients must send. Empty: no check (loopback only).
    pub proxy_api_key: Secret,
    /// `[[api_keys]]`: more client keys, each with a name (metrics, logs) and an optional rate
    /// limit.
    pub api_keys: Vec<ClientKeyConfig>,
    /// `METRICS_API_KEY`: the bearer `/metrics` requires (empty: none; then `/metrics` is open
    /// on a loopback bind and off on any other unless `metrics_public`).
    pub metrics_api_key: Option<Secret>,
    /// `METRICS_PUBLIC`: serve `/metrics` without a key on a non-loopback bind.
    pub metrics_public: bool,
    /// `ADMIN_API_KEY`: the bearer the admin routes (`/admin/...`) require; unset: they are off.
    pub admin_api_key: Option<Secret>,

    /// `[[accounts]]`: Kiro accounts of the pool, after the single-account form's `default`
    /// (when its credentials are set).
    pub accounts: Vec<AccountConfig>,
    /// `KIRO_ACCOUNTS_FILE`: more `[[accounts]]` from a TOML or JSON file.
    pub kiro_accounts_file: Option<PathBuf>,
    /// `ACCOUNT_SELECTION`: least_in_flight, round_robin or priority
    pub account_selection: String,
    /// `ACCOUNT_COOLDOWN_SECS`: first cool-down of a throttled or failing account (doubles)
    pub account_cooldown_secs: f64,
    /// `ACCOUNT_COOLDOWN_MAX_SECS`: longest cool-down
    pub account_cooldown_max_secs: f64,
    /// `ACCOUNT_FAILURE_THRESHOLD`: 5xx / connection failures in a row that cool an account
    pub account_failure_threshold: u32,
    /// `ACCOUNT_QUOTA_PARK`: how long an account out of monthly quota is parked: `monthly`
    /// (until 00:00 UTC on the 1st) or seconds
    pub account_quota_park: String,
    /// `STICKY_TTL_SECS`: a conversation's account binding is forgotten after this long unused
    pub sticky_ttl_secs: u64,

    /// `KIRO_CREDS_FILE`
    pub kiro_creds_file: Option<PathBuf>,
    /// `REFRESH_TOKEN`
    pub refresh_token: Option<Secret>,
    /// `PROFILE_ARN`
    pub profile_arn: Option<String>,
    /// `KIRO_REGION`
    pub kiro_region: String,
    /// `KIRO_CLI_DB_FILE`
    pub kiro_cli_db_file: Option<PathBuf>,
    /// `PROFILE_ARN_POLICY`: `auto` (desktop accounts send it, OIDC ones never), `always`, `never`
    pub profile_arn_policy: String,
    /// `TOKEN_REFRESH_MARGIN_SECS`
    pub token_refresh_margin_secs: u64,
    /// `KIRO_API_KEY`: a Kiro API key (`ksk_...`); wins over the other credential sources
    pub kiro_api_key: Option<Secret>,
    /// `SQLITE_READONLY`: never write to kiro-cli's database (no write-back, no write lock)
    pub sqlite_readonly: bool,
    /// `CREDENTIALS_LOCK_TIMEOUT_SECS`: longest wait for the lock shared with other programs
    /// around read-refresh-write; then the refresh goes ahead without it (with a warning)
    pub credentials_lock_timeout_secs: f64,

    /// `KIRO_API_PROTOCOL`: `q` (the original's q.{region}.amazonaws.com REST paths) or
    /// `runtime` (kiro-cli's runtime.{region}.kiro.dev JSON protocol)
    pub kiro_api_protocol: String,
    /// `KIRO_API_URL` (`{region}` is replaced); empty: the protocol's host
    pub kiro_api_url: String,
    /// `KIRO_MANAGEMENT_URL`: model-list base of the runtime protocol; empty: its host
    pub kiro_management_url: String,
    /// `KIRO_DESKTOP_AUTH_URL`
    pub kiro_desktop_auth_url: String,
    /// `KIRO_OIDC_URL`
    pub kiro_oidc_url: String,
    /// `VPN_PROXY_URL`
    pub vpn_proxy_url: Option<String>,
    /// `CONNECT_TIMEOUT`, seconds
    pub connect_timeout: u64,

    /// `FIRST_TOKEN_TIMEOUT`, seconds (fractions allowed)
    pub first_token_timeout: f64,
    /// `FIRST_TOKEN_MAX_RETRIES`: attempts that may time out before 504
    pub first_token_max_retries: u32,
    /// `STREAMING_READ_TIMEOUT`, seconds between upstream frames (fractions allowed)
    pub streaming_read_timeout: f64,
    /// `SHUTDOWN_GRACE_SECS`: how long running requests may finish after SIGTERM/SIGINT
    pub shutdown_grace_secs: f64,
    /// `HEADER_READ_TIMEOUT`: seconds a client has to send its request headers
    pub header_read_timeout: f64,
    /// `RETRY_MAX_ATTEMPTS`: attempts in all on 429 / 5xx / connection errors
    pub retry_max_attempts: u32,
    /// `RETRY_BASE_DELAY_MS`
    pub retry_base_delay_ms: u64,
    /// `RETRY_MAX_DELAY_MS`
    pub retry_max_delay_ms: u64,
    /// `RETRY_BUDGET_SECS`: no new attempt after this long
    pub retry_budget_secs: u64,
    /// `RETRY_AFTER_MAX_SECS`: longest upstream retry hint waited out before retrying; a longer
    /// one is passed to the client as `Retry-After` without a retry
    pub retry_after_max_secs: f64,

    /// `MODEL_CACHE_TTL`, seconds
    pub model_cache_ttl: u64,
    /// `UNKNOWN_MODEL_POLICY`: `nearest` (the newest catalogue model of the family the name
    /// names, else 400), `reject` (400 with close matches) or `pass` (sent as written)
    pub unknown_model_policy: String,
    /// `MODEL_ALIASES` (`alias=model,alias2=model2`) and `[model_aliases]`: names tools
    /// hard-code, mapped to catalogue models before normalisation
    pub model_aliases: std::collections::BTreeMap<String, String>,
    /// `TOOL_DESCRIPTION_MAX_LENGTH` (0: never move descriptions)
    pub tool_description_max_length: usize,
    /// `FAKE_REASONING`: ask the model to reason when the client does not say (off only with
    /// false, 0, no, disabled, off)
    pub fake_reasoning: bool,
    /// `FAKE_REASONING_MAX_TOKENS`: the default reasoning budget
    pub fake_reasoning_max_tokens: u32,
    /// `FAKE_REASONING_HANDLING`: as_reasoning_content, remove, pass, strip_tags
    pub fake_reasoning_handling: String,
    /// `REASONING_MODE`: auto (native reasoning where the model advertises it, else prompt
    /// tags), native, prompt
    pub reasoning_mode: String,
    /// `MAX_BODY_BYTES`
    pub max_body_bytes: usize,
    /// `MAX_INFLIGHT_BODY_BYTES`: request-body bytes all requests together may hold while they
    /// are read and translated; a body past it gets a 503 with `Retry-After`
    pub max_inflight_body_bytes: usize,
    /// `MAX_CONNECTIONS`: open client connections; past it new ones are closed at once
    /// (0: from the open-file limit)
    pub max_connections: usize,
    /// `KIRO_MAX_PAYLOAD_BYTES`: largest translated request sent to Kiro (0: no limit)
    pub kiro_max_payload_bytes: usize,
    /// `AUTO_TRIM_PAYLOAD`: over the payload limit, drop the oldest turns instead of refusing
    pub auto_trim_payload: bool,
    /// `RESPONSES_STORE_MAX`: Responses-API responses kept in memory (0: none)
    pub responses_store_max: usize,
    /// `RESPONSES_STORE_TTL_SECS`: how long a kept response stays
    pub responses_store_ttl_secs: u64,
    /// `CORS_ALLOW_ORIGINS`: comma-separated origins; empty: CORS off
    pub cors_allow_origins: Vec<String>,

    /// `WORKER_THREADS`: async worker threads (0: one per CPU core; 1: a single-threaded runtime)
    pub worker_threads: usize,
    /// `LOG_LEVEL`: trace, debug, info, warning, error
    pub log_level: String,
    /// `LOG_FORMAT`: text or json
    pub log_format: String,
    /// `DEBUG_MODE`: off, errors, all
    pub debug_mode: String,
    /// `DEBUG_DIR`
    pub debug_dir: PathBuf,
    /// `DEBUG_KEEP`: request folders kept
    pub debug_keep: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8000,
            proxy_api_key: Secret::new(""),
            api_keys: Vec::new(),
            metrics_api_key: None,
            metrics_public: false,
            admin_api_key: None,
            accounts: Vec::new(),
            kiro_accounts_file: None,
            account_selection: "least_in_flight".into(),
            account_cooldown_secs: 30.0,
            account_cooldown_max_secs: 900.0,
            account_failure_threshold: 2,
            account_quota_park: "monthly".into(),
            sticky_ttl_secs: 3600,
            kiro_creds_file: None,
            refresh_token: None,
            profile_arn: None,
            kiro_region: "us-east-1".into(),
            kiro_cli_db_file: None,
            profile_arn_policy: "auto".into(),
            token_refresh_margin_secs: 300,
            kiro_api_key: None,
            sqlite_readonly: false,
            credentials_lock_timeout_secs: 10.0,
            kiro_api_protocol: "q".into(),
            kiro_api_url: String::new(),
            kiro_management_url: String::new(),
            kiro_desktop_auth_url: "https://prod.{region}.auth.desktop.kiro.dev".into(),
            kiro_oidc_url: "https://oidc.{region}.amazonaws.com".into(),
            vpn_proxy_url: None,
            connect_timeout: 30,
            first_token_timeout: 15.0,
            first_token_max_retries: 3,
            streaming_read_timeout: 300.0,
            shutdown_grace_secs: 30.0,
            header_read_timeout: 30.0,
            retry_max_attempts: 3,
            retry_base_delay_ms: 1000,
            retry_max_delay_ms: 10_000,
            retry_budget_secs: 60,
            retry_after_max_secs: 10.0,
            model_cache_ttl: 3600,
            unknown_model_policy: "nearest".into(),
            model_aliases: Default::default(),
            tool_description_max_length: 10_000,
            fake_reasoning: true,
            fake_reasoning_max_tokens: 4000,
            fake_reasoning_handling: "as_reasoning_content".into(),
            reasoning_mode: "auto".into(),
            max_body_bytes: 32 * 1024 * 1024,
            max_inflight_body_bytes: 256 * 1024 * 1024,
            max_connections: 0,
            kiro_max_payload_bytes: 600_000,
            auto_trim_payload: false,
            responses_store_max: 1000,
            responses_store_ttl_secs: 3600,
            cors_allow_origins: Vec::new(),
            worker_threads: 0,
            log_level: "info".into(),
            log_format: "text".into(),
            debug_mode: "off".into(),
            debug_dir: PathBuf::from("debug_logs"),
            debug_keep: 50,
        }
    }
}

/// Environment variable → config key, for every setting.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("SERVER_HOST", "host"),
    ("SERVER_PORT", "port"),
    ("PROXY_API_KEY", "proxy_api_key"),
    ("METRICS_API_KEY", "metrics_api_key"),
    ("METRICS_PUBLIC", "metrics_public"),
    ("ADMIN_API_KEY", "admin_api_key"),
    ("KIRO_ACCOUNTS_FILE", "kiro_accounts_file"),
    ("ACCOUNT_SELECTION", "account_selection"),
    ("ACCOUNT_COOLDOWN_SECS", "account_cooldown_secs"),
    ("ACCOUNT_COOLDOWN_MAX_SECS", "account_cooldown_max_secs"),
    ("ACCOUNT_FAILURE_THRESHOLD", "account_failure_threshold"),
    ("ACCOUNT_QUOTA_PARK", "account_quota_park"),
    ("STICKY_TTL_SECS", "sticky_ttl_secs"),
    ("KIRO_CREDS_FILE", "kiro_creds_file"),
    ("REFRESH_TOKEN", "refresh_token"),
    ("PROFILE_ARN", "profile_arn"),
    ("KIRO_REGION", "kiro_region"),
    ("KIRO_CLI_DB_FILE", "kiro_cli_db_file"),
    ("PROFILE_ARN_POLICY", "profile_arn_policy"),
    ("TOKEN_REFRESH_MARGIN_SECS", "token_refresh_margin_secs"),
    ("KIRO_API_KEY", "kiro_api_key"),
    ("SQLITE_READONLY", "sqlite_readonly"),
    (
        "CREDENTIALS_LOCK_TIMEOUT_SECS",
        "credentials_lock_timeout_secs",
    ),
    ("KIRO_API_PROTOCOL", "kiro_api_protocol"),
    ("KIRO_API_URL", "kiro_api_url"),
    ("KIRO_MANAGEMENT_URL", "kiro_management_url"),
    ("KIRO_DESKTOP_AUTH_URL", "kiro_desktop_auth_url"),
    ("KIRO_OIDC_URL", "kiro_oidc_url"),
    ("VPN_PROXY_URL", "vpn_proxy_url"),
    ("CONNECT_TIMEOUT", "connect_timeout"),
    ("FIRST_TOKEN_TIMEOUT", "first_token_timeout"),
    ("FIRST_TOKEN_MAX_RETRIES", "first_token_max_retries"),
    ("STREAMING_READ_TIMEOUT", "streaming_read_timeout"),
    ("SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("HEADER_READ_TIMEOUT", "header_read_timeout"),
    ("RETRY_MAX_ATTEMPTS", "retry_max_attempts"),
    ("RETRY_BASE_DELAY_MS", "retry_base_delay_ms"),
    ("RETRY_MAX_DELAY_MS", "retry_max_delay_ms"),
    ("RETRY_BUDGET_SECS", "retry_budget_secs"),
    ("RETRY_AFTER_MAX_SECS", "retry_after_max_secs"),
    ("MODEL_CACHE_TTL", "model_cache_ttl"),
    ("UNKNOWN_MODEL_POLICY", "unknown_model_policy"),
    ("MODEL_ALIASES", "model_aliases"),
    ("TOOL_DESCRIPTION_MAX_LENGTH", "tool_description_max_length"),
    ("FAKE_REASONING", "fake_reasoning"),
    ("FAKE_REASONING_MAX_TOKENS", "fake_reasoning_max_tokens"),
    ("FAKE_REASONING_HANDLING", "fake_reasoning_handling"),
    ("REASONING_MODE", "reasoning_mode"),
    ("MAX_BODY_BYTES", "max_body_bytes"),
    ("MAX_INFLIGHT_BODY_BYTES", "max_inflight_body_bytes"),
    ("MAX_CONNECTIONS", "max_connections"),
    ("KIRO_MAX_PAYLOAD_BYTES", "kiro_max_payload_bytes"),
    ("AUTO_TRIM_PAYLOAD", "auto_trim_payload"),
    ("RESPONSES_STORE_MAX", "responses_store_max"),
    ("RESPONSES_STORE_TTL_SECS", "responses_store_ttl_secs"),
    ("CORS_ALLOW_ORIGINS", "cors_allow_origins"),
    ("WORKER_THREADS", "worker_threads"),
    ("LOG_LEVEL", "log_level"),
    ("LOG_FORMAT", "log_format"),
    ("DEBUG_MODE", "debug_mode"),
    ("DEBUG_DIR", "debug_dir"),
    ("DEBUG_KEEP", "debug_keep"),
];

fn invalid(name: &str, detail: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        detail: detail.to_string(),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim()
        .parse()
        .map_err(|e| invalid(name, format!("{v:?} is not a valid number ({e})")))
}

/// A boolean variable: true for 1, true, yes, on, enabled (any case).
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "enabled"
    )
}

/// `MODEL_ALIASES`: `alias=model` entries separated by commas (spaces around either ignored).
fn parse_aliases(name: &str, v: &str) -> Result<Vec<(String, String)>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((a, m)) if !a.trim().is_empty() && !m.trim().is_empty() => {
                Ok((a.trim().to_owned(), m.trim().to_owned()))
            }
            _ => Err(invalid(
                name,
                format!("{entry:?} is not alias=model (the form is alias=model,alias2=model2)"),
            )),
        })
        .collect()
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

    /// Parse a `config.toml` text (unknown keys are errors).
    pub fn from_toml(text: &str, path: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Read a `config.toml` file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Apply one setting by its environment name.
    pub fn set_env(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let v = unquote(raw);
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        match name {
            "SERVER_HOST" => self.host = v.to_owned(),
            "SERVER_PORT" => self.port = parse_num(name, v)?,
            "PROXY_API_KEY" => self.proxy_api_key = Secret::new(v),
            "METRICS_API_KEY" => self.metrics_api_key = opt(v).map(Secret::new),
            "METRICS_PUBLIC" => self.metrics_public = truthy(v),
            "ADMIN_API_KEY" => self.admin_api_key = opt(v).map(Secret::new),
            "KIRO_ACCOUNTS_FILE" => self.kiro_accounts_file = opt(v).map(PathBuf::from),
            "ACCOUNT_SELECTION" => self.account_selection = v.to_owned(),
            "ACCOUNT_COOLDOWN_SECS" => self.account_cooldown_secs = parse_num(name, v)?,
            "ACCOUNT_COOLDOWN_MAX_SECS" => self.account_cooldown_max_secs = parse_num(name, v)?,
            "ACCOUNT_FAILURE_THRESHOLD" => self.account_failure_threshold = parse_num(name, v)?,
            "ACCOUNT_QUOTA_PARK" => self.account_quota_park = v.to_owned(),
            "STICKY_TTL_SECS" => self.sticky_ttl_secs = parse_num(name, v)?,
            "KIRO_CREDS_FILE" => self.kiro_creds_file = opt(v).map(PathBuf::from),
            "REFRESH_TOKEN" => self.refresh_token = opt(v).map(Secret::new),
            "PROFILE_ARN" => self.profile_arn = opt(v),
            "KIRO_REGION" if !v.is_empty() => self.kiro_region = v.to_owned(),
            "KIRO_CLI_DB_FILE" => self.kiro_cli_db_file = opt(v).map(PathBuf::from),
            "PROFILE_ARN_POLICY" => self.profile_arn_policy = v.to_owned(),
            "TOKEN_REFRESH_MARGIN_SECS" => self.token_refresh_margin_secs = parse_num(name, v)?,
            "KIRO_API_KEY" => self.kiro_api_key = opt(v).map(Secret::new),
            "SQLITE_READONLY" => self.sqlite_readonly = truthy(v),
            "CREDENTIALS_LOCK_TIMEOUT_SECS" => {
                self.credentials_lock_timeout_secs = parse_num(name, v)?
            }
            "KIRO_API_PROTOCOL" => self.kiro_api_protocol = v.to_owned(),
            "KIRO_API_URL" => self.kiro_api_url = v.to_owned(),
            "KIRO_MANAGEMENT_URL" => self.kiro_management_url = v.to_owned(),
            "KIRO_DESKTOP_AUTH_URL" => self.kiro_desktop_auth_url = v.to_owned(),
            "KIRO_OIDC_URL" => self.kiro_oidc_url = v.to_owned(),
            "VPN_PROXY_URL" => self.vpn_proxy_url = opt(v),
            "CONNECT_TIMEOUT" => self.connect_timeout = parse_num(name, v)?,
            "FIRST_TOKEN_TIMEOUT" => self.first_token_timeout = parse_num(name, v)?,
            "FIRST_TOKEN_MAX_RETRIES" => self.first_token_max_retries = parse_num(name, v)?,
            "STREAMING_READ_TIMEOUT" => self.streaming_read_timeout = parse_num(name, v)?,
            "SHUTDOWN_GRACE_SECS" => self.shutdown_grace_secs = parse_num(name, v)?,
            "HEADER_READ_TIMEOUT" => self.header_read_timeout = parse_num(name, v)?,
            "RETRY_MAX_ATTEMPTS" => self.retry_max_attempts = parse_num(name, v)?,
            "RETRY_BASE_DELAY_MS" => self.retry_base_delay_ms = parse_num(name, v)?,
            "RETRY_MAX_DELAY_MS" => self.retry_max_delay_ms = parse_num(name, v)?,
            "RETRY_BUDGET_SECS" => self.retry_budget_secs = parse_num(name, v)?,
            "RETRY_AFTER_MAX_SECS" => self.retry_after_max_secs = parse_num(name, v)?,
            "MODEL_CACHE_TTL" => self.model_cache_ttl = parse_num(name, v)?,
            "UNKNOWN_MODEL_POLICY" => self.unknown_model_policy = v.to_owned(),
            // merged over the config file's table; the same alias here wins
            "MODEL_ALIASES" => self.model_aliases.extend(parse_aliases(name, v)?),
            "TOOL_DESCRIPTION_MAX_LENGTH" => self.tool_description_max_length = parse_num(name, v)?,
            "MAX_BODY_BYTES" => self.max_body_bytes = parse_num(name, v)?,
            "MAX_INFLIGHT_BODY_BYTES" => self.max_inflight_body_bytes = parse_num(name, v)?,
            "MAX_CONNECTIONS" => self.max_connections = parse_num(name, v)?,
            "KIRO_MAX_PAYLOAD_BYTES" => self.kiro_max_payload_bytes = parse_num(name, v)?,
            "RESPONSES_STORE_MAX" => self.responses_store_max = parse_num(name, v)?,
            "RESPONSES_STORE_TTL_SECS" => self.responses_store_ttl_secs = parse_num(name, v)?,
            "AUTO_TRIM_PAYLOAD" => {
                self.auto_trim_payload = matches!(
                    v.to_ascii_lowercase().as_str(),
                    "true" | "1" | "yes" | "enabled" | "on"
                )
            }
            "FAKE_REASONING" => {
                self.fake_reasoning = !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "false" | "0" | "no" | "disabled" | "off"
                )
            }
            "FAKE_REASONING_MAX_TOKENS" => self.fake_reasoning_max_tokens = parse_num(name, v)?,
            "FAKE_REASONING_HANDLING" => self.fake_reasoning_handling = v.to_owned(),
            "REASONING_MODE" => self.reasoning_mode = v.to_owned(),
            "CORS_ALLOW_ORIGINS" => {
                self.cors_allow_origins = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "WORKER_THREADS" => self.worker_threads = parse_num(name, v)?,
            "LOG_LEVEL" => self.log_level = v.to_owned(),
            "LOG_FORMAT" => self.log_format = v.to_owned(),
            "DEBUG_MODE" => self.debug_mode = v.to_owned(),
            "DEBUG_DIR" => self.debug_dir = PathBuf::from(v),
            "DEBUG_KEEP" => self.debug_keep = parse_num(name, v)?,
            _ => {}
        }
        Ok(())
    }

    /// Overlay every known variable from an environment lookup.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (name, _) in ENV_KEYS {
            if let Some(v) = get(name) {
                self.set_env(name, &v)?;
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

    /// Check values and derive what the rest of the code takes.
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
        let profile_arn_policy = match self.profile_arn_policy.to_ascii_lowercase().as_str() {
            "auto" | "" => ProfileArnPolicy::Auto,
            "always" => ProfileArnPolicy::Always,
            "never" => ProfileArnPolicy::Never,
            other => {
                return Err(invalid(
                    "PROFILE_ARN_POLICY",
                    format!("{other:?} is not auto, always or never"),
                ))
            }
        };
        let api_protocol: crate::kiro::ApiProtocol = self
            .kiro_api_protocol
            .parse()
            .map_err(|e: String| invalid("KIRO_API_PROTOCOL", e))?;
        let unknown_model_policy: crate::models::UnknownModelPolicy = self
            .unknown_model_policy
            .parse()
            .map_err(|e: String| invalid("UNKNOWN_MODEL_POLICY", e))?;
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
        let thinking_mode: crate::api::thinking::ThinkingMode = self
            .fake_reasoning_handling
            .parse()
            .map_err(|e: String| invalid("FAKE_REASONING_HANDLING", e))?;
        let reasoning_mode: crate::api::thinking::ReasoningMode = self
            .reasoning_mode
            .parse()
            .map_err(|e: String| invalid("REASONING_MODE", e))?;
        let debug_mode: DebugMode = self
            .debug_mode
            .parse()
            .map_err(|e: String| invalid("DEBUG_MODE", e))?;
        let log_filter = match self.log_level.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "info" | "" => "info",
            "warning" | "warn" => "warn",
            "error" | "critical" => "error",
            other => {
                return Err(invalid(
                    "LOG_LEVEL",
                    format!("{other:?} is not trace, debug, info, warning or error"),
                ))
            }
        };
        let json_logs = match self.log_format.to_ascii_lowercase().as_str() {
            "text" | "" => false,
            "json" => true,
            other => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        if self.streaming_read_timeout <= self.first_token_timeout {
            tracing::warn!(
                "STREAMING_READ_TIMEOUT ({}s) is not greater than FIRST_TOKEN_TIMEOUT ({}s)",
                self.streaming_read_timeout,
                self.first_token_timeout
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
        let accounts = self.account_settings(api_protocol)?;
        let pool = crate::accounts::PoolConfig {
            strategy: self
                .account_selection
                .parse()
                .map_err(|e: String| invalid("ACCOUNT_SELECTION", e))?,
            cooldown: secs(self.account_cooldown_secs, 0.0),
            cooldown_max: secs(self.account_cooldown_max_secs, 0.0),
            failure_threshold: self.account_failure_threshold.max(1),
            quota_park: self
                .account_quota_park
                .parse()
                .map_err(|e: String| invalid("ACCOUNT_QUOTA_PARK", e))?,
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
            metrics_access,
            raw: self.clone(),
            api_protocol,
            profile_arn_policy,
            unknown_model_policy,
            model_aliases,
            debug_mode,
            log_filter,
            json_logs,
            thinking_mode,
            reasoning_mode,
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

/// A checked configuration.
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
    pub metrics_access: MetricsAccess,
    pub raw: Config,
    pub api_protocol: crate::kiro::ApiProtocol,
    pub profile_arn_policy: ProfileArnPolicy,
    pub unknown_model_policy: crate::models::UnknownModelPolicy,
    /// `MODEL_ALIASES` and `[model_aliases]`, checked: `(alias, model)`.
    pub model_aliases: Vec<(String, String)>,
    pub debug_mode: DebugMode,
    /// `tracing` filter directive for the level.
    pub log_filter: &'static str,
    pub json_logs: bool,
    pub thinking_mode: crate::api::thinking::ThinkingMode,
    pub reasoning_mode: crate::api::thinking::ReasoningMode,
}

impl ValidConfig {
    /// The single-account settings' credentials (the account `default`).
    pub fn credentials(&self) -> CredentialSettings {
        self.raw.env_credentials()
    }

    /// The base URLs in force for the single-account settings: the configured ones, else the
    /// protocol's hosts.
    pub fn endpoints(&self) -> crate::kiro::EndpointTemplates {
        self.raw
            .endpoints_for(self.api_protocol, &AccountConfig::default())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let text = include_str!("../config.toml.example");
        // the example sets every key to its default value
        let parsed = Config::from_toml(text, "config.toml.example").unwrap();
        assert_eq!(parsed, Config::default());
        // and names every key and its environment variable
        for (env, key) in ENV_KEYS {
            assert!(
                text.contains(&format!("\n{key} =")) || text.contains(&format!("\n# {key} =")),
                "{key} missing"
            );
            assert!(text.contains(env), "{env} missing");
        }
    }

    #[test]
    fn unknown_keys_are_errors_naming_them() {
        let err = Config::from_toml("port = 1\nprot = 2\n", "config.toml").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c =
            Config::from_toml("port = 9000\nkiro_region = \"eu-central-1\"\n", "c").unwrap();
        c.apply_env(|k| match k {
            "SERVER_PORT" => Some("9100".into()),
            "REFRESH_TOKEN" => Some("\"tok\"".into()),
            "DEBUG_MODE" => Some("errors".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.port, 9100);
        assert_eq!(c.kiro_region, "eu-central-1");
        assert_eq!(c.refresh_token.as_ref().map(Secret::expose), Some("tok"));
        let v = c.validate().unwrap();
        assert_eq!(v.debug_mode, DebugMode::Errors);
        let mut bad = Config::default();
        assert!(bad.set_env("SERVER_PORT", "eighty").is_err());
    }

    #[test]
    fn refuses_a_public_address_without_a_key() {
        let c = Config {
            host: "0.0.0.0".into(),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("PROXY_API_KEY"), "{err}");
        let ok = Config {
            host: "0.0.0.0".into(),
            proxy_api_key: "k".into(),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn protocol_picks_the_default_hosts_and_urls_stay_overridable() {
        let q = Config::default().validate().unwrap();
        assert_eq!(q.api_protocol, crate::kiro::ApiProtocol::Q);
        assert_eq!(
            q.endpoints().api("us-east-1"),
            "https://q.us-east-1.amazonaws.com"
        );
        let mut c = Config::default();
        c.apply_env(|k| (k == "KIRO_API_PROTOCOL").then(|| "runtime".into()))
            .unwrap();
        let rt = c.validate().unwrap();
        assert_eq!(rt.api_protocol, crate::kiro::ApiProtocol::Runtime);
        let e = rt.endpoints();
        assert_eq!(
            e.api("eu-central-1"),
            "https://runtime.eu-central-1.kiro.dev"
        );
        assert_eq!(
            e.management("eu-central-1"),
            "https://management.eu-central-1.kiro.dev"
        );
        c.set_env("KIRO_MANAGEMENT_URL", "http://127.0.0.1:9/m")
            .unwrap();
        c.set_env("KIRO_API_URL", "http://127.0.0.1:9/r").unwrap();
        let e = c.validate().unwrap().endpoints();
        assert_eq!(e.management("x"), "http://127.0.0.1:9/m");
        assert_eq!(e.api("x"), "http://127.0.0.1:9/r");
        c.set_env("KIRO_API_PROTOCOL", "grpc").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("KIRO_API_PROTOCOL"), "{err}");
    }

    #[test]
    fn the_api_key_is_a_secret_in_debug_output() {
        let mut c = Config::default();
        c.set_env("KIRO_API_KEY", "ksk_supersecret123").unwrap();
        c.set_env("PROXY_API_KEY", "client-supersecret").unwrap();
        c.set_env("REFRESH_TOKEN", "refresh-supersecret").unwrap();
        let v = c.validate().unwrap();
        assert!(v.has_credentials());
        assert_eq!(
            v.credentials().api_key.as_ref().map(Secret::expose),
            Some("ksk_supersecret123")
        );
        for text in [
            format!("{c:?}"),
            format!("{v:?}"),
            format!("{:?}", v.credentials()),
        ] {
            assert!(!text.contains("supersecret"), "{text}");
        }
        let from_toml = Config::from_toml("kiro_api_key = \"ksk_t\"\n", "c").unwrap();
        assert_eq!(
            from_toml.kiro_api_key.map(|k| k.expose().to_owned()),
            Some("ksk_t".into())
        );
    }

    #[test]
    fn accounts_come_from_the_environment_the_tables_and_the_accounts_file() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("accounts.json");
        std::fs::write(
            &json,
            r#"[{"name": "j1", "refresh_token": "r1", "protocol": "runtime", "profile_arn": "arn:x"},
                {"name": "j2", "kiro_api_key": "ksk_j2", "weight": 3}]"#,
        )
        .unwrap();
        let toml_file = dir.path().join("accounts.toml");
        std::fs::write(
            &toml_file,
            "[[accounts]]\nname = \"t1\"\nrefresh_token = \"r\"\nregion = \"eu-central-1\"\nproxy = \"http://127.0.0.1:3128\"\n",
        )
        .unwrap();
        let mut c = Config::from_toml(
            "[[accounts]]\nname = \"team-a\"\nkiro_creds_file = \"/x/creds.json\"\npriority = 2\nkiro_api_url = \"http://127.0.0.1:9\"\n",
            "c",
        )
        .unwrap();
        c.set_env("REFRESH_TOKEN", "env-token").unwrap();
        c.set_env("KIRO_ACCOUNTS_FILE", &json.display().to_string())
            .unwrap();
        let v = c.validate().unwrap();
        let names: Vec<&str> = v.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["default", "team-a", "j1", "j2"]);
        assert_eq!(v.accounts[1].priority, 2);
        assert_eq!(v.accounts[1].endpoints.api_url, "http://127.0.0.1:9");
        assert_eq!(v.accounts[2].protocol, crate::kiro::ApiProtocol::Runtime);
        assert!(v.accounts[2].endpoints.api_url.contains("kiro.dev"));
        assert_eq!(v.accounts[3].weight, 3);
        // the secrets stay secrets in debug output
        let text = format!("{v:?}");
        assert!(
            !text.contains("ksk_j2") && !text.contains("env-token"),
            "{text}"
        );

        // a mistake in the file is reported as what it is, with the file's name
        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"[{"name": "x", "refresh_token": "r", "colour": "red"}]"#,
        )
        .unwrap();
        c.kiro_accounts_file = Some(bad);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("colour"), "{err}");

        c.kiro_accounts_file = Some(toml_file);
        let v = c.validate().unwrap();
        let t1 = v.accounts.iter().find(|a| a.name == "t1").unwrap();
        assert_eq!(t1.credentials.region.as_deref(), Some("eu-central-1"));
        assert_eq!(t1.proxy.as_deref(), Some("http://127.0.0.1:3128"));
    }

    #[test]
    fn bad_accounts_are_refused_with_their_place() {
        let check = |toml_text: &str, env: bool, want: &str| {
            let mut c = Config::from_toml(toml_text, "c").unwrap();
            if env {
                c.set_env("REFRESH_TOKEN", "t").unwrap();
            }
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        };
        check("[[accounts]]\nname = \"a\"\n", false, "has no credentials");
        check(
            "[[accounts]]\nname = \"default\"\nrefresh_token = \"x\"\n",
            true,
            "used twice",
        );
        check(
            "[[accounts]]\nname = \"a b\"\nrefresh_token = \"x\"\n",
            false,
            "may only hold",
        );
        check(
            "[[accounts]]\nname = \"a\"\nrefresh_token = \"x\"\nweight = 0\n",
            false,
            "weight",
        );
        check(
            "[[accounts]]\nname = \"a\"\nrefresh_token = \"x\"\nprotocol = \"grpc\"\n",
            false,
            "accounts[0]",
        );
        check(
            "account_selection = \"random\"\n",
            true,
            "ACCOUNT_SELECTION",
        );
        check(
            "account_quota_park = \"weekly\"\n",
            true,
            "ACCOUNT_QUOTA_PARK",
        );
        // the tables alone are credentials enough
        let c =
            Config::from_toml("[[accounts]]\nname = \"a\"\nrefresh_token = \"x\"\n", "c").unwrap();
        assert!(c.validate().unwrap().has_credentials());
        assert!(!Config::default().validate().unwrap().has_credentials());
    }

    #[test]
    fn model_aliases_come_from_the_table_and_the_variable() {
        let mut c = Config::from_toml(
            "[model_aliases]\n\"gpt-4o\" = \"claude-sonnet-4.5\"\no3 = \"claude-opus-4.5\"\n",
            "c",
        )
        .unwrap();
        c.set_env(
            "MODEL_ALIASES",
            " o3 = claude-sonnet-4 , gpt-4.1=claude-haiku-4.5,",
        )
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(
            v.model_aliases,
            [
                ("gpt-4.1".to_owned(), "claude-haiku-4.5".to_owned()),
                ("gpt-4o".to_owned(), "claude-sonnet-4.5".to_owned()),
                ("o3".to_owned(), "claude-sonnet-4".to_owned()),
            ]
        );
        let err = Config::default()
            .set_env("MODEL_ALIASES", "gpt-4o")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "MODEL_ALIASES: \"gpt-4o\" is not alias=model (the form is alias=model,alias2=model2)"
        );
        let err = Config::from_toml("[model_aliases]\n\"gpt-4o\" = \"\"\n", "c")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "model_aliases: \"gpt-4o\" = \"\" needs both an alias and a model"
        );
    }

    #[test]
    fn unknown_model_policy_defaults_to_nearest_and_checks_its_value() {
        use crate::models::UnknownModelPolicy;
        let v = Config::default().validate().unwrap();
        assert_eq!(v.unknown_model_policy, UnknownModelPolicy::Nearest);
        let mut c = Config::default();
        c.set_env("UNKNOWN_MODEL_POLICY", "pass").unwrap();
        assert_eq!(
            c.validate().unwrap().unknown_model_policy,
            UnknownModelPolicy::Pass
        );
        c.set_env("UNKNOWN_MODEL_POLICY", "drop").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "UNKNOWN_MODEL_POLICY: \"drop\" is not nearest, reject or pass"
        );
    }
}
