//! The table of settings. Each entry is written once here: its `config.toml` key (the field
//! name), its type, its default and its environment variables (the first is the name to use,
//! the others are older names still accepted, such as the Python original's
//! `FIRST_TOKEN_TIMEOUT` for `FIRST_TOKEN_TIMEOUT_SECS`), plus older `config.toml` keys. From
//! it come the [`Config`] struct, its `Default`, the environment and `config.toml` readers
//! and [`SETTINGS`], against which tests check `config.toml.example` and README.md.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::accounts::{QuotaPark, Strategy};
use crate::api::thinking::{ReasoningMode, ThinkingMode};
use crate::auth::ProfileArnPolicy;
use crate::kiro::ApiProtocol;
use crate::layers::DebugMode;
use crate::models::UnknownModelPolicy;
use crate::Secret;

use super::value::{LogFormat, LogLevel, SettingValue};
use super::{AccountConfig, ClientKeyConfig};

/// One setting of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The `config.toml` key (and the [`Config`] field).
    pub key: &'static str,
    /// Environment variables, the current name first, then older names still accepted. Empty
    /// for the settings that are `config.toml` tables only.
    pub env: &'static [&'static str],
    /// Older `config.toml` keys still accepted.
    pub old_keys: &'static [&'static str],
    /// What it means (the field's doc comment).
    pub doc: &'static str,
}

/// An environment value applied by the type's rule, or by the entry's own `apply` function.
macro_rules! apply_env {
    ($target:expr, $v:expr) => {
        SettingValue::apply_env($target, $v)
    };
    ($target:expr, $v:expr, $apply:path) => {
        $apply($target, $v)
    };
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident : $ty:ty = $default:expr,
            env [$($env:literal),*]
            $(, old_keys [$($old:literal),*])?
            $(, apply $apply:path)?
        ;
    )*) => {
        /// All settings, as `config.toml` spells them. Values are typed and read strictly when
        /// they are set (a bad one is an error naming the variable or key and the value);
        /// [`Config::validate`] checks how they fit together.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($field: $default,)* }
            }
        }

        /// Every setting, in the order of the table.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($field),
                env: &[$($env),*],
                old_keys: &[$($($old),*)?],
                doc: concat!($($doc, "\n"),*),
            },
        )*];

        impl Config {
            /// Apply an environment value to the setting with that variable name; `false` when
            /// no setting has that name.
            pub(super) fn set_by_env(&mut self, name: &str, v: &str) -> Result<bool, String> {
                $(if [$($env),*].contains(&name) {
                    apply_env!(&mut self.$field, v $(, $apply)?)?;
                    return Ok(true);
                })*
                Ok(false)
            }

            /// Set the setting with that `config.toml` key (current or older); the setting's
            /// key when there is one.
            pub(super) fn set_by_key(
                &mut self,
                key: &str,
                v: toml::Value,
            ) -> Option<(&'static str, Result<(), String>)> {
                $(if key == stringify!($field) $($(|| key == $old)*)? {
                    let r = <$ty as SettingValue>::from_toml(v).map(|x| self.$field = x);
                    return Some((stringify!($field), r));
                })*
                None
            }
        }
    };
}

settings! {
    // --- server
    /// `SERVER_HOST`: address to listen on (an IP address or `localhost`).
    host: String = "127.0.0.1".into(), env ["SERVER_HOST"];
    /// `SERVER_PORT`
    port: u16 = 8000, env ["SERVER_PORT"];
    /// `PROXY_API_KEY`: the key clients must send. Empty: no check (loopback only).
    proxy_api_key: Secret = Secret::new(""), env ["PROXY_API_KEY"];
    /// `METRICS_API_KEY`: the bearer `/metrics` requires (empty: none; then `/metrics` is open
    /// on a loopback bind and off on any other unless `metrics_public`).
    metrics_api_key: Option<Secret> = None, env ["METRICS_API_KEY"];
    /// `METRICS_PUBLIC`: serve `/metrics` without a key on a non-loopback bind.
    metrics_public: bool = false, env ["METRICS_PUBLIC"];
    /// `ADMIN_API_KEY`: the bearer the admin routes (`/admin/...`) require; unset: they are off.
    admin_api_key: Option<Secret> = None, env ["ADMIN_API_KEY"];
    /// `MAX_BODY_BYTES`
    max_body_bytes: usize = 32 * 1024 * 1024, env ["MAX_BODY_BYTES"];
    /// `KIRO_MAX_PAYLOAD_BYTES`: largest translated request sent to Kiro (0: no limit)
    kiro_max_payload_bytes: usize = 600_000, env ["KIRO_MAX_PAYLOAD_BYTES"];
    /// `AUTO_TRIM_PAYLOAD`: over the payload limit, drop the oldest turns instead of refusing
    auto_trim_payload: bool = false, env ["AUTO_TRIM_PAYLOAD"];
    /// `RESPONSES_STORE_MAX`: Responses-API responses kept in memory (0: none)
    responses_store_max: usize = 1000, env ["RESPONSES_STORE_MAX"];
    /// `RESPONSES_STORE_TTL_SECS`: how long a kept response stays
    responses_store_ttl_secs: u64 = 3600, env ["RESPONSES_STORE_TTL_SECS"];
    /// `CORS_ALLOW_ORIGINS`: comma-separated origins; empty: CORS off
    cors_allow_origins: Vec<String> = Vec::new(), env ["CORS_ALLOW_ORIGINS"];
    /// `SHUTDOWN_GRACE_SECS`: how long running requests may finish after SIGTERM/SIGINT
    shutdown_grace_secs: f64 = 30.0, env ["SHUTDOWN_GRACE_SECS"];
    /// `HEADER_READ_TIMEOUT_SECS` (or `HEADER_READ_TIMEOUT`): seconds a client has to send its
    /// request headers
    header_read_timeout_secs: f64 = 30.0,
        env ["HEADER_READ_TIMEOUT_SECS", "HEADER_READ_TIMEOUT"], old_keys ["header_read_timeout"];
    /// `MAX_CONNECTIONS`: open client connections; past it new ones are closed at once
    /// (0: from the open-file limit)
    max_connections: usize = 0, env ["MAX_CONNECTIONS"];
    /// `MAX_INFLIGHT_BODY_BYTES`: request-body bytes all requests together may hold while they
    /// are read and translated; a body past it gets a 503 with `Retry-After`
    max_inflight_body_bytes: usize = 256 * 1024 * 1024, env ["MAX_INFLIGHT_BODY_BYTES"];

    // --- credentials of the account `default`
    /// `KIRO_API_KEY`: a Kiro API key (`ksk_...`); wins over the other credential sources
    kiro_api_key: Option<Secret> = None, env ["KIRO_API_KEY"];
    /// `KIRO_CREDS_FILE`
    kiro_creds_file: Option<PathBuf> = None, env ["KIRO_CREDS_FILE"];
    /// `REFRESH_TOKEN`
    refresh_token: Option<Secret> = None, env ["REFRESH_TOKEN"];
    /// `PROFILE_ARN`
    profile_arn: Option<String> = None, env ["PROFILE_ARN"];
    /// `KIRO_CLI_DB_FILE`
    kiro_cli_db_file: Option<PathBuf> = None, env ["KIRO_CLI_DB_FILE"];
    /// `KIRO_REGION` (an empty variable leaves it as it is)
    kiro_region: String = "us-east-1".into(), env ["KIRO_REGION"], apply unless_empty;
    /// `PROFILE_ARN_POLICY`: `auto` (desktop accounts send it, OIDC ones never), `always`, `never`
    profile_arn_policy: ProfileArnPolicy = ProfileArnPolicy::Auto, env ["PROFILE_ARN_POLICY"];
    /// `TOKEN_REFRESH_MARGIN_SECS`
    token_refresh_margin_secs: u64 = 300, env ["TOKEN_REFRESH_MARGIN_SECS"];
    /// `SQLITE_READONLY`: never write to kiro-cli's database (no write-back, no write lock)
    sqlite_readonly: bool = false, env ["SQLITE_READONLY"];
    /// `CREDENTIALS_LOCK_TIMEOUT_SECS`: longest wait for the lock shared with other programs
    /// around read-refresh-write; then the refresh goes ahead without it (with a warning)
    credentials_lock_timeout_secs: f64 = 10.0, env ["CREDENTIALS_LOCK_TIMEOUT_SECS"];

    // --- accounts
    /// `KIRO_ACCOUNTS_FILE`: more `[[accounts]]` from a TOML or JSON file.
    kiro_accounts_file: Option<PathBuf> = None, env ["KIRO_ACCOUNTS_FILE"];
    /// `ACCOUNT_SELECTION`: least_in_flight, round_robin or priority
    account_selection: Strategy = Strategy::LeastInFlight, env ["ACCOUNT_SELECTION"];
    /// `ACCOUNT_COOLDOWN_SECS`: first cool-down of a throttled or failing account (doubles)
    account_cooldown_secs: f64 = 30.0, env ["ACCOUNT_COOLDOWN_SECS"];
    /// `ACCOUNT_COOLDOWN_MAX_SECS`: longest cool-down
    account_cooldown_max_secs: f64 = 900.0, env ["ACCOUNT_COOLDOWN_MAX_SECS"];
    /// `ACCOUNT_FAILURE_THRESHOLD`: 5xx / connection failures in a row that cool an account
    account_failure_threshold: u32 = 2, env ["ACCOUNT_FAILURE_THRESHOLD"];
    /// `ACCOUNT_QUOTA_PARK`: how long an account out of monthly quota is parked: `monthly`
    /// (until 00:00 UTC on the 1st) or seconds
    account_quota_park: QuotaPark = QuotaPark::NextMonth, env ["ACCOUNT_QUOTA_PARK"];
    /// `STICKY_TTL_SECS`: a conversation's account binding is forgotten after this long unused
    sticky_ttl_secs: u64 = 3600, env ["STICKY_TTL_SECS"];

    // --- upstream
    /// `KIRO_API_PROTOCOL`: `q` (the original's q.{region}.amazonaws.com REST paths) or
    /// `runtime` (kiro-cli's runtime.{region}.kiro.dev JSON protocol)
    kiro_api_protocol: ApiProtocol = ApiProtocol::Q, env ["KIRO_API_PROTOCOL"];
    /// `KIRO_API_URL` (`{region}` is replaced); empty: the protocol's host
    kiro_api_url: String = String::new(), env ["KIRO_API_URL"];
    /// `KIRO_MANAGEMENT_URL`: model-list base of the runtime protocol; empty: its host
    kiro_management_url: String = String::new(), env ["KIRO_MANAGEMENT_URL"];
    /// `KIRO_DESKTOP_AUTH_URL`
    kiro_desktop_auth_url: String = "https://prod.{region}.auth.desktop.kiro.dev".into(),
        env ["KIRO_DESKTOP_AUTH_URL"];
    /// `KIRO_OIDC_URL`
    kiro_oidc_url: String = "https://oidc.{region}.amazonaws.com".into(), env ["KIRO_OIDC_URL"];
    /// `VPN_PROXY_URL`
    vpn_proxy_url: Option<String> = None, env ["VPN_PROXY_URL"];
    /// `CONNECT_TIMEOUT_SECS` (or `CONNECT_TIMEOUT`): seconds to connect upstream
    connect_timeout_secs: u64 = 30,
        env ["CONNECT_TIMEOUT_SECS", "CONNECT_TIMEOUT"], old_keys ["connect_timeout"];

    // --- timeouts and retries
    /// `FIRST_TOKEN_TIMEOUT_SECS` (or `FIRST_TOKEN_TIMEOUT`): seconds (fractions allowed) for
    /// the headers and the first content event of an attempt
    first_token_timeout_secs: f64 = 15.0,
        env ["FIRST_TOKEN_TIMEOUT_SECS", "FIRST_TOKEN_TIMEOUT"], old_keys ["first_token_timeout"];
    /// `FIRST_TOKEN_MAX_RETRIES`: attempts that may time out before 504
    first_token_max_retries: u32 = 3, env ["FIRST_TOKEN_MAX_RETRIES"];
    /// `STREAMING_READ_TIMEOUT_SECS` (or `STREAMING_READ_TIMEOUT`): seconds between upstream
    /// frames (fractions allowed)
    streaming_read_timeout_secs: f64 = 300.0,
        env ["STREAMING_READ_TIMEOUT_SECS", "STREAMING_READ_TIMEOUT"],
        old_keys ["streaming_read_timeout"];
    /// `RETRY_MAX_ATTEMPTS`: attempts in all on 429 / 5xx / connection errors
    retry_max_attempts: u32 = 3, env ["RETRY_MAX_ATTEMPTS"];
    /// `RETRY_BASE_DELAY_MS`
    retry_base_delay_ms: u64 = 1000, env ["RETRY_BASE_DELAY_MS"];
    /// `RETRY_MAX_DELAY_MS`
    retry_max_delay_ms: u64 = 10_000, env ["RETRY_MAX_DELAY_MS"];
    /// `RETRY_BUDGET_SECS`: no new attempt after this long
    retry_budget_secs: u64 = 60, env ["RETRY_BUDGET_SECS"];
    /// `RETRY_AFTER_MAX_SECS`: longest upstream retry hint waited out before retrying; a longer
    /// one is passed to the client as `Retry-After` without a retry
    retry_after_max_secs: f64 = 10.0, env ["RETRY_AFTER_MAX_SECS"];

    // --- models and requests
    /// `MODEL_CACHE_TTL_SECS` (or `MODEL_CACHE_TTL`): seconds between model-list refreshes
    model_cache_ttl_secs: u64 = 3600,
        env ["MODEL_CACHE_TTL_SECS", "MODEL_CACHE_TTL"], old_keys ["model_cache_ttl"];
    /// `UNKNOWN_MODEL_POLICY`: `nearest` (the newest catalogue model of the family the name
    /// names, else 400), `reject` (400 with close matches) or `pass` (sent as written)
    unknown_model_policy: UnknownModelPolicy = UnknownModelPolicy::Nearest,
        env ["UNKNOWN_MODEL_POLICY"];
    /// `MODEL_ALIASES` (`alias=model,alias2=model2`, added to the table) and `[model_aliases]`:
    /// names tools hard-code, mapped to catalogue models before normalisation
    model_aliases: BTreeMap<String, String> = BTreeMap::new(), env ["MODEL_ALIASES"];
    /// `TOOL_DESCRIPTION_MAX_LENGTH` (0: never move descriptions)
    tool_description_max_length: usize = 10_000, env ["TOOL_DESCRIPTION_MAX_LENGTH"];

    // --- reasoning
    /// `FAKE_REASONING`: ask the model to reason when the client does not say
    fake_reasoning: bool = true, env ["FAKE_REASONING"];
    /// `FAKE_REASONING_MAX_TOKENS`: the default reasoning budget
    fake_reasoning_max_tokens: u32 = 4000, env ["FAKE_REASONING_MAX_TOKENS"];
    /// `FAKE_REASONING_HANDLING`: as_reasoning_content, remove, pass, strip_tags
    fake_reasoning_handling: ThinkingMode = ThinkingMode::AsReasoningContent,
        env ["FAKE_REASONING_HANDLING"];
    /// `REASONING_MODE`: auto (native reasoning where the model advertises it, else prompt
    /// tags), native, prompt
    reasoning_mode: ReasoningMode = ReasoningMode::Auto, env ["REASONING_MODE"];

    /// `WORKER_THREADS`: async worker threads (0: one per CPU core; 1: a single-threaded runtime)
    worker_threads: usize = 0, env ["WORKER_THREADS"];

    // --- logs and debugging
    /// `LOG_LEVEL`: trace, debug, info, warning, error
    log_level: LogLevel = LogLevel::Info, env ["LOG_LEVEL"];
    /// `LOG_FORMAT`: text or json
    log_format: LogFormat = LogFormat::Text, env ["LOG_FORMAT"];
    /// `DEBUG_MODE`: off, errors, all
    debug_mode: DebugMode = DebugMode::Off, env ["DEBUG_MODE"];
    /// `DEBUG_DIR`
    debug_dir: PathBuf = PathBuf::from("debug_logs"), env ["DEBUG_DIR"];
    /// `DEBUG_KEEP`: request folders kept
    debug_keep: usize = 50, env ["DEBUG_KEEP"];

    // --- tables (config.toml only; keep them last in the file)
    /// `[[api_keys]]`: more client keys, each with a name (metrics, logs) and an optional rate
    /// limit.
    api_keys: Vec<ClientKeyConfig> = Vec::new(), env [];
    /// `[[accounts]]`: Kiro accounts of the pool, after the single-account form's `default`
    /// (when its credentials are set).
    accounts: Vec<AccountConfig> = Vec::new(), env [];
}

/// Replace the value unless the variable is empty (`KIRO_REGION=` keeps the region in force).
fn unless_empty(target: &mut String, v: &str) -> Result<(), String> {
    if !v.is_empty() {
        *target = v.to_owned();
    }
    Ok(())
}
