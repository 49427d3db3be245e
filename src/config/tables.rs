//! The `config.toml` tables: `[[api_keys]]` and `[[accounts]]` (also the entries of a
//! `KIRO_ACCOUNTS_FILE`). Their fields are checked by [`super::Config::validate`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::Secret;

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
pub(super) struct AccountsFile {
    pub(super) accounts: Vec<AccountConfig>,
}
