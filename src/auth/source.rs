//! Where credentials come from and where rotated ones go back to.
//!
//! Five sources: the four of spec section 2, the Kiro IDE JSON file and the AWS SSO OIDC JSON
//! file (both `KIRO_CREDS_FILE`), a bare `REFRESH_TOKEN`, and the kiro-cli SQLite database
//! (`KIRO_CLI_DB_FILE`); and a Kiro API key (`KIRO_API_KEY`, `ksk_...`, Kiro Pro+ tiers), sent
//! as the bearer with `tokentype: API_KEY` and never refreshed. Write-back keeps every field
//! it does not own: the JSON file is rewritten atomically (temp file in the same folder, fsync,
//! rename, mode 0600); the SQLite row is merged inside a transaction.
//!
//! **Precedence** when several are configured:
//! 1. `KIRO_API_KEY`: a complete credential on its own; the others are then ignored (with a
//!    warning), except `PROFILE_ARN` and `KIRO_REGION`;
//! 2. `KIRO_CLI_DB_FILE` (the JSON file is then ignored, as in the original);
//! 3. `KIRO_CREDS_FILE`;
//! 4. `REFRESH_TOKEN` alone.
//!
//! With 2 and 3, `REFRESH_TOKEN`, `PROFILE_ARN` and `KIRO_REGION` are starting values that
//! fields present in the file override (the original's rule).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::AuthError;
use crate::secret::Secret;

/// kiro-cli token keys, in the order they are tried (spec 2.3; note the `odic` spelling).
pub const SQLITE_TOKEN_KEYS: &[&str] = &[
    "kirocli:social:token",
    "kirocli:odic:token",
    "codewhisperer:odic:token",
];
/// kiro-cli device-registration keys, in the order they are tried.
pub const SQLITE_REGISTRATION_KEYS: &[&str] = &[
    "kirocli:odic:device-registration",
    "codewhisperer:odic:device-registration",
];

/// What the user configured (environment / `.env` / config file).
#[derive(Debug, Clone, Default)]
pub struct CredentialSettings {
    /// `REFRESH_TOKEN`
    pub refresh_token: Option<Secret>,
    /// `PROFILE_ARN`
    pub profile_arn: Option<String>,
    /// `KIRO_REGION` (default `us-east-1`)
    pub region: Option<String>,
    /// `KIRO_CREDS_FILE`
    pub creds_file: Option<PathBuf>,
    /// `KIRO_CLI_DB_FILE`
    pub cli_db_file: Option<PathBuf>,
    /// `KIRO_API_KEY`
    pub api_key: Option<Secret>,
    /// `SQLITE_READONLY`: never write to the kiro-cli database.
    pub sqlite_readonly: bool,
}

/// Which refresh flow a credential uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// Kiro desktop (social login): `POST {desktop}/refreshToken`.
    Desktop,
    /// AWS SSO OIDC (Builder ID, IAM Identity Center, kiro-cli): `POST {oidc}/token`.
    Oidc,
    /// A Kiro API key: no refresh at all.
    ApiKey,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Desktop => "kiro_desktop",
            AuthKind::Oidc => "aws_sso_oidc",
            AuthKind::ApiKey => "kiro_api_key",
        }
    }
}

/// Where the credentials were read from, and so where rotated ones are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `REFRESH_TOKEN` from the environment: nothing to write back to.
    Env,
    JsonFile {
        path: PathBuf,
    },
    Sqlite {
        path: PathBuf,
        token_key: String,
        /// `SQLITE_READONLY`: read only, never written (no write-back, no write lock).
        readonly: bool,
    },
    /// `KIRO_API_KEY`: nothing to refresh or write back.
    ApiKey,
}

impl CredentialSource {
    /// For messages: names the variable and the file, never a secret.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Env => "REFRESH_TOKEN".to_owned(),
            CredentialSource::JsonFile { path } => format!("KIRO_CREDS_FILE ({})", path.display()),
            CredentialSource::Sqlite {
                path, token_key, ..
            } => {
                format!("KIRO_CLI_DB_FILE ({}, key {token_key})", path.display())
            }
            CredentialSource::ApiKey => "KIRO_API_KEY".to_owned(),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            CredentialSource::Env => "env",
            CredentialSource::JsonFile { .. } => "json_file",
            CredentialSource::Sqlite { .. } => "kiro_cli_sqlite",
            CredentialSource::ApiKey => "api_key",
        }
    }
}

/// Credentials as loaded.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<SystemTime>,
    pub profile_arn: Option<String>,
    /// Region of the chat, model-list and desktop-refresh hosts.
    pub api_region: String,
    /// Region of the OIDC host (defaults to the API region).
    pub sso_region: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// A Kiro API key (then nothing else is used for authentication).
    pub api_key: Option<Secret>,
}

impl Credentials {
    /// An API key when one is set; else OIDC when both a client id and secret are known
    /// (spec 2.1); else desktop.
    pub fn kind(&self) -> AuthKind {
        if self.api_key.is_some() {
            AuthKind::ApiKey
        } else if self.client_id.is_some() && self.client_secret.is_some() {
            AuthKind::Oidc
        } else {
            AuthKind::Desktop
        }
    }
}

/// What a refresh produced, to be written back.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_at: SystemTime,
    pub profile_arn: Option<String>,
}

/// The five ways to give the gateway credentials, for the "no credentials" error.
pub const HOW_TO_PROVIDE: &str = "no Kiro credentials found. Provide one of:\n  \
1. KIRO_CREDS_FILE=~/.aws/sso/cache/kiro-auth-token.json (the Kiro IDE's token file, after signing in to the IDE)\n  \
2. REFRESH_TOKEN=<refresh token> (optionally PROFILE_ARN and KIRO_REGION)\n  \
3. KIRO_CREDS_FILE=<AWS SSO cache file with clientId/clientSecret> (Builder ID, IAM Identity Center)\n  \
4. KIRO_CLI_DB_FILE=~/.local/share/kiro-cli/data.sqlite3 (after `kiro-cli login`)\n  \
5. KIRO_API_KEY=ksk_... (a Kiro API key, Kiro Pro+ tiers; with PROFILE_ARN on the runtime protocol)\n\
Set them in the environment, in .env, or in config.toml; or run with --demo to try the gateway on the bundled offline mock.";

/// Expand a leading `~` to the home folder.
pub fn expand_tilde(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    if let Some(rest) = s.strip_prefix("~/").or_else(|| s.strip_prefix("~\\")) {
        if let Some(home) = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
            return PathBuf::from(home).join(rest);
        }
    } else if s == "~" {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home);
        }
    }
    p.to_path_buf()
}

/// A warning when a credentials file can be read by other users (it holds live tokens).
pub fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o044 != 0 {
            return Some(format!(
                "{} is readable by other users (mode {:o}); it holds your Kiro tokens: run chmod 600 on it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

fn load_err(source: &str, detail: impl std::fmt::Display) -> AuthError {
    AuthError::Load {
        origin: source.to_owned(),
        detail: detail.to_string(),
    }
}

/// Load credentials in the precedence of the module docs: an API key if set; else the
/// reference's order (spec 2.1): start from the environment values, then the SQLite database
/// if configured, else the JSON file; fields present in the file win.
pub fn load(settings: &CredentialSettings) -> Result<(Credentials, CredentialSource), AuthError> {
    let region = settings
        .region
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "us-east-1".to_owned());
    if let Some(key) = settings.api_key.clone().filter(|k| !k.is_empty()) {
        let ignored: Vec<&str> = [
            ("KIRO_CLI_DB_FILE", settings.cli_db_file.is_some()),
            ("KIRO_CREDS_FILE", settings.creds_file.is_some()),
            (
                "REFRESH_TOKEN",
                settings
                    .refresh_token
                    .as_ref()
                    .is_some_and(|t| !t.is_empty()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if !ignored.is_empty() {
            tracing::warn!(
                "KIRO_API_KEY is set, so {} {} ignored",
                ignored.join(", "),
                if ignored.len() == 1 { "is" } else { "are" }
            );
        }
        if !key.expose().starts_with("ksk_") {
            // the documented form (peer 2ue/kiro.rs); not enforced, the service decides
            tracing::warn!("KIRO_API_KEY does not start with ksk_; Kiro API keys usually do");
        }
        let creds = Credentials {
            api_key: Some(key),
            profile_arn: settings.profile_arn.clone().filter(|s| !s.is_empty()),
            api_region: region,
            ..Default::default()
        };
        return Ok((creds, CredentialSource::ApiKey));
    }
    let mut creds = Credentials {
        refresh_token: settings.refresh_token.clone().filter(|s| !s.is_empty()),
        profile_arn: settings.profile_arn.clone().filter(|s| !s.is_empty()),
        api_region: region,
        ..Default::default()
    };
    let source = if let Some(db) = &settings.cli_db_file {
        let path = expand_tilde(db);
        let key = load_sqlite(&path, settings.sqlite_readonly, &mut creds)?;
        CredentialSource::Sqlite {
            path,
            token_key: key,
            readonly: settings.sqlite_readonly,
        }
    } else if let Some(file) = &settings.creds_file {
        let path = expand_tilde(file);
        recover_interrupted_write(&path);
        load_json(&path, &mut creds)?;
        CredentialSource::JsonFile { path }
    } else if creds.refresh_token.is_some() {
        CredentialSource::Env
    } else {
        return Err(AuthError::NoCredentials(HOW_TO_PROVIDE.to_owned()));
    };
    if let CredentialSource::JsonFile { path } | CredentialSource::Sqlite { path, .. } = &source {
        if let Some(w) = permission_warning(path) {
            tracing::warn!("{w}");
        }
    }
    if creds.refresh_token.is_none() {
        return Err(load_err(
            &source.describe(),
            "it holds no refresh token; sign in again so that a complete token is written",
        ));
    }
    Ok((creds, source))
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Parse an ISO-8601 / RFC 3339 expiry (`Z` or an offset).
pub fn parse_expiry(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(SystemTime::from)
        .or_else(|| {
            // a naive timestamp without zone: read it as UTC
            OffsetDateTime::parse(&format!("{}Z", s.trim()), &Rfc3339)
                .ok()
                .map(SystemTime::from)
        })
}

/// `t` as a UTC date, clamped to the years 1970 to 9999 (what RFC 3339 can write), so that a
/// time from the network or a file can never make the conversion panic.
fn utc(t: SystemTime) -> OffsetDateTime {
    let max = time::macros::datetime!(9999-12-31 23:59:59.999 UTC);
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => OffsetDateTime::UNIX_EPOCH
            .checked_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
            .map_or(max, |dt| dt.min(max)),
        Err(_) => OffsetDateTime::UNIX_EPOCH,
    }
}

/// RFC 3339 in UTC with milliseconds and `Z`, the form the Kiro IDE writes.
pub fn format_expiry(t: SystemTime) -> String {
    let dt = utc(t);
    let dt = dt
        .replace_nanosecond(dt.millisecond() as u32 * 1_000_000)
        .unwrap_or(dt);
    dt.format(&Rfc3339).unwrap_or_default()
}

fn load_json(path: &Path, creds: &mut Credentials) -> Result<(), AuthError> {
    let source = format!("KIRO_CREDS_FILE ({})", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| load_err(&source, e))?;
    let map: Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| load_err(&source, format!("not a JSON object: {e}")))?;
    if let Some(t) = str_field(&map, "accessToken") {
        creds.access_token = Some(Secret::new(t));
    }
    if let Some(t) = str_field(&map, "refreshToken") {
        creds.refresh_token = Some(Secret::new(t));
    }
    if let Some(t) = str_field(&map, "expiresAt") {
        creds.expires_at = parse_expiry(&t);
    }
    if let Some(a) = str_field(&map, "profileArn") {
        creds.profile_arn = Some(a);
    }
    if let Some(r) = str_field(&map, "region") {
        creds.api_region = r;
    }
    creds.client_id = str_field(&map, "clientId");
    creds.client_secret = str_field(&map, "clientSecret").map(Secret::new);
    if creds.client_id.is_none() {
        if let Some(hash) = str_field(&map, "clientIdHash") {
            load_device_registration(path, &hash, creds);
        }
    }
    Ok(())
}

/// "Enterprise" Kiro IDE files name their device registration by hash (spec 2.2).
fn load_device_registration(creds_path: &Path, hash: &str, creds: &mut Credentials) {
    let file = format!("{hash}.json");
    let mut candidates = Vec::new();
    if let Some(dir) = creds_path.parent() {
        candidates.push(dir.join(&file));
    }
    candidates.push(expand_tilde(Path::new("~/.aws/sso/cache")).join(&file));
    for c in candidates {
        let Ok(text) = std::fs::read_to_string(&c) else {
            continue;
        };
        let Ok(map) = serde_json::from_str::<Map<String, Value>>(&text) else {
            continue;
        };
        creds.client_id = str_field(&map, "clientId");
        creds.client_secret = str_field(&map, "clientSecret").map(Secret::new);
        if creds.client_id.is_some() {
            return;
        }
    }
    tracing::warn!(
        "credentials name a device registration ({hash}.json) that was not found; refreshing as a Kiro desktop account"
    );
}

/// How long a read or write of kiro-cli's database waits for a lock kiro-cli holds, outside a
/// refresh (at start). During a refresh the wait is what is left of
/// `CREDENTIALS_LOCK_TIMEOUT_SECS` (see [`super::lock`]).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Open kiro-cli's database (never creating it); `readonly` opens it read-only; a statement
/// waits at most `busy` for a lock another connection holds.
pub(crate) fn open_db(
    path: &Path,
    source: &str,
    readonly: bool,
    busy: Duration,
) -> Result<rusqlite::Connection, AuthError> {
    if !path.exists() {
        return Err(load_err(source, "file not found"));
    }
    use rusqlite::OpenFlags;
    let flags = if readonly {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, flags).map_err(|e| load_err(source, e))?;
    conn.busy_timeout(busy).map_err(|e| load_err(source, e))?;
    Ok(conn)
}

pub(crate) fn read_kv(conn: &rusqlite::Connection, key: &str) -> Option<Map<String, Value>> {
    let text: String = conn
        .query_row("SELECT value FROM auth_kv WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .ok()?;
    serde_json::from_str(&text).ok()
}

fn load_sqlite(path: &Path, readonly: bool, creds: &mut Credentials) -> Result<String, AuthError> {
    let source = format!("KIRO_CLI_DB_FILE ({})", path.display());
    let conn = open_db(path, &source, readonly, SQLITE_BUSY_TIMEOUT)?;
    let (key, token) = SQLITE_TOKEN_KEYS
        .iter()
        .find_map(|k| read_kv(&conn, k).map(|v| ((*k).to_owned(), v)))
        .ok_or_else(|| {
            load_err(
                &source,
                "no kiro-cli token in table auth_kv; run `kiro-cli login` first",
            )
        })?;
    apply_sqlite_token(&token, creds);
    if let Some(reg) = SQLITE_REGISTRATION_KEYS
        .iter()
        .find_map(|k| read_kv(&conn, k))
    {
        creds.client_id = str_field(&reg, "client_id");
        creds.client_secret = str_field(&reg, "client_secret").map(Secret::new);
        if creds.sso_region.is_none() {
            creds.sso_region = str_field(&reg, "region");
        }
    }
    if creds.profile_arn.is_none() {
        // kiro-cli keeps the selected profile in its `state` table (not every version has it)
        let profile: Option<String> = conn
            .query_row(
                "SELECT value FROM state WHERE key = 'api.codewhisperer.profile'",
                [],
                |r| r.get(0),
            )
            .ok();
        if let Some(map) = profile.and_then(|p| serde_json::from_str::<Map<String, Value>>(&p).ok())
        {
            creds.profile_arn = str_field(&map, "arn");
        }
    }
    Ok(key)
}

pub(crate) fn apply_sqlite_token(token: &Map<String, Value>, creds: &mut Credentials) {
    if let Some(t) = str_field(token, "access_token") {
        creds.access_token = Some(Secret::new(t));
    }
    if let Some(t) = str_field(token, "refresh_token") {
        creds.refresh_token = Some(Secret::new(t));
    }
    creds.expires_at = str_field(token, "expires_at").and_then(|t| parse_expiry(&t));
    if let Some(r) = str_field(token, "region") {
        // SQLite regions are the SSO region only; chat stays on KIRO_REGION (spec 2.7)
        creds.sso_region = Some(r);
    }
    if let Some(a) = str_field(token, "profile_arn") {
        creds.profile_arn = Some(a);
    }
}

/// Re-read what the source holds now (another program may have refreshed), waiting at most
/// `busy` for a database lock. `None` for `Env` or when the source cannot be read.
pub fn reread(source: &CredentialSource, busy: Duration) -> Option<Credentials> {
    let mut creds = Credentials::default();
    match source {
        CredentialSource::Env | CredentialSource::ApiKey => return None,
        CredentialSource::JsonFile { path } => load_json(path, &mut creds).ok()?,
        CredentialSource::Sqlite {
            path,
            token_key,
            readonly,
        } => {
            let conn = open_db(path, "", *readonly, busy).ok()?;
            apply_sqlite_token(&read_kv(&conn, token_key)?, &mut creds);
        }
    }
    Some(creds)
}

/// Write a rotation back to its source. Blocking I/O: call it from `spawn_blocking`.
pub fn persist(source: &CredentialSource, rot: &Rotation) -> Result<(), AuthError> {
    persist_within(source, rot, SQLITE_BUSY_TIMEOUT)
}

/// [`persist`], waiting at most `busy` for a database lock another connection holds.
pub fn persist_within(
    source: &CredentialSource,
    rot: &Rotation,
    busy: Duration,
) -> Result<(), AuthError> {
    match source {
        CredentialSource::Env | CredentialSource::ApiKey => Ok(()),
        CredentialSource::JsonFile { path } => persist_json(path, rot),
        CredentialSource::Sqlite { readonly: true, .. } => Ok(()),
        CredentialSource::Sqlite {
            path, token_key, ..
        } => persist_sqlite(path, token_key, rot, busy),
    }
}

pub(crate) fn persist_err(source: &str, detail: impl std::fmt::Display) -> AuthError {
    AuthError::Persist {
        origin: source.to_owned(),
        detail: detail.to_string(),
    }
}

fn persist_json(path: &Path, rot: &Rotation) -> Result<(), AuthError> {
    let source = format!("KIRO_CREDS_FILE ({})", path.display());
    // Merge into what the file holds now, so fields another program added survive.
    let mut map: Map<String, Value> = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => Map::new(),
    };
    map.insert(
        "accessToken".into(),
        Value::String(rot.access_token.expose().to_owned()),
    );
    map.insert(
        "refreshToken".into(),
        Value::String(rot.refresh_token.expose().to_owned()),
    );
    // in the style the file already uses (the Kiro IDE writes `.000Z`, the Python original
    // `+00:00`), so whoever else reads it sees what it expects
    let expires = match map.get("expiresAt").and_then(Value::as_str) {
        Some(old) => DateStyle::of(old).format(rot.expires_at),
        None => format_expiry(rot.expires_at),
    };
    map.insert("expiresAt".into(), Value::String(expires));
    if let Some(arn) = &rot.profile_arn {
        map.insert("profileArn".into(), Value::String(arn.clone()));
    }
    let text = serde_json::to_string_pretty(&map).map_err(|e| persist_err(&source, e))?;
    match write_atomic(path, text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // the folder is read-only but the file may not be: a rotated refresh token kept
            // in memory only is lost on restart, so rather overwrite the file in place
            tracing::warn!(
                file = %path.display(),
                error = %e,
                "cannot create a temp file beside the credentials file (the folder is not writable); rewriting the file in place instead, which a crash during the write can leave damaged. Make the folder writable for crash-safe write-back"
            );
            write_in_place(path, text.as_bytes()).map_err(|e| persist_err(&source, e))
        }
        other => other.map_err(|e| persist_err(&source, e)),
    }
}

/// Overwrite `path` (which must exist) with `data`, then fsync: for a folder the gateway may
/// not create files in.
fn write_in_place(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The name prefix of [`write_atomic`]'s temp files for `path`: `.<file name>.tmp-`.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".into());
    format!(".{name}.tmp-")
}

/// At start: a write-back cut short (the process killed between writing its temp file and
/// renaming it) leaves the credentials file with a refresh token the service has already
/// rotated away, and the new one in the orphaned temp file. The newest leftover temp file
/// that is newer than the credentials file and holds a complete JSON object with a refresh
/// token replaces the file (by a rename, as the write-back would have); the other leftovers
/// are removed. Done only under the credentials lock, and skipped when another process
/// holds it (its temp file may be a write in progress).
pub fn recover_interrupted_write(path: &Path) {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    let prefix = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let leftovers: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    if leftovers.is_empty() {
        return;
    }
    let Ok(lock) = open_lock_file(path) else {
        tracing::warn!(file = %path.display(), "leftover temp files of an interrupted write-back, but the lock file cannot be opened; leaving them");
        return;
    };
    if lock.try_lock().is_err() {
        // another gateway is writing back right now: its temp file is its own
        return;
    }
    let file_time = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let complete = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok())
            .is_some_and(|m| str_field(&m, "refreshToken").is_some())
    };
    let newest = leftovers
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .filter(|(t, _)| file_time.is_none_or(|f| *t > f))
        .filter(|(_, p)| complete(p))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone());
    if let Some(tmp) = &newest {
        match std::fs::rename(tmp, path) {
            Ok(()) => tracing::warn!(
                file = %path.display(),
                "recovered the credentials from a write-back that was interrupted (the gateway was stopped while saving a rotated token)"
            ),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "could not recover the credentials from an interrupted write-back")
            }
        }
    }
    for p in leftovers.iter().filter(|p| Some(*p) != newest.as_ref()) {
        if std::fs::remove_file(p).is_ok() {
            tracing::info!(file = %p.display(), "removed a stale temp file of an interrupted write-back");
        }
    }
    drop(lock);
}

/// Write `data` to `path` through a temp file in the same folder, fsync, then rename; the
/// file is created with mode 0600 on Unix.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        "{}{}",
        temp_prefix(path),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn persist_sqlite(path: &Path, key: &str, rot: &Rotation, busy: Duration) -> Result<(), AuthError> {
    let source = format!("KIRO_CLI_DB_FILE ({})", path.display());
    let mut conn = open_db(path, &source, false, busy).map_err(|e| persist_err(&source, e))?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| persist_err(&source, e))?;
    merge_sqlite_token(&tx, key, rot).map_err(|e| persist_err(&source, e))?;
    tx.commit().map_err(|e| persist_err(&source, e))
}

/// Merge a rotation into the token row `key`, inside the caller's transaction: only the three
/// token members change (and `profile_arn` when the row has one); `region`, `scopes`,
/// `profile_arn` and any member we do not know stay as they are.
pub(crate) fn merge_sqlite_token(
    conn: &rusqlite::Connection,
    key: &str,
    rot: &Rotation,
) -> rusqlite::Result<()> {
    let mut map = read_kv(conn, key).unwrap_or_default();
    map.insert(
        "access_token".into(),
        Value::String(rot.access_token.expose().to_owned()),
    );
    map.insert(
        "refresh_token".into(),
        Value::String(rot.refresh_token.expose().to_owned()),
    );
    let expires = match map.get("expires_at").and_then(Value::as_str) {
        Some(old) => DateStyle::of(old).format(rot.expires_at),
        None => format_expiry(rot.expires_at),
    };
    map.insert("expires_at".into(), Value::String(expires));
    if let Some(arn) = &rot.profile_arn {
        if map.contains_key("profile_arn") {
            map.insert("profile_arn".into(), Value::String(arn.clone()));
        }
    }
    let text = Value::Object(map).to_string();
    let changed = conn.execute("UPDATE auth_kv SET value = ?1 WHERE key = ?2", [&text, key])?;
    if changed == 0 {
        conn.execute(
            "INSERT INTO auth_kv (key, value) VALUES (?1, ?2)",
            [key, &text],
        )?;
    }
    Ok(())
}

/// How a stored timestamp is written: its fraction digits and its zone suffix, so a rewrite
/// keeps the style of whoever wrote the file first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateStyle {
    /// Digits after the seconds (0, 3, 6 or 9).
    pub fraction_digits: u8,
    pub zone: ZoneStyle,
}

/// The zone suffix of a stored timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneStyle {
    /// `Z`
    Z,
    /// `+00:00` (Python's `isoformat()`)
    Offset,
    /// no zone at all (read as UTC)
    Naive,
}

impl DateStyle {
    /// The style of `s` (an RFC 3339 / ISO 8601 timestamp).
    pub fn of(s: &str) -> DateStyle {
        let s = s.trim();
        let time_part = s.split_once('T').map(|(_, t)| t).unwrap_or(s);
        let zone = if time_part.ends_with(['Z', 'z']) {
            ZoneStyle::Z
        } else if time_part.contains(['+', '-']) {
            ZoneStyle::Offset
        } else {
            ZoneStyle::Naive
        };
        let fraction_digits = time_part
            .split_once('.')
            .map(|(_, f)| f.chars().take_while(char::is_ascii_digit).count())
            .unwrap_or(0);
        let fraction_digits = match fraction_digits {
            0 => 0,
            1..=3 => 3,
            4..=6 => 6,
            _ => 9,
        };
        DateStyle {
            fraction_digits,
            zone,
        }
    }

    /// `t` in UTC, in this style.
    pub fn format(self, t: SystemTime) -> String {
        let dt = utc(t);
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        if self.fraction_digits > 0 {
            let nanos = format!("{:09}", dt.nanosecond());
            out.push('.');
            out.push_str(&nanos[..self.fraction_digits as usize]);
        }
        match self.zone {
            ZoneStyle::Z => out.push('Z'),
            ZoneStyle::Offset => out.push_str("+00:00"),
            ZoneStyle::Naive => {}
        }
        out
    }
}

/// The lock file beside a JSON credentials file: `<file>.lock`.
pub fn lock_path(creds: &Path) -> PathBuf {
    let mut name = creds
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "credentials".into());
    name.push(".lock");
    creds.with_file_name(name)
}

/// Open (creating if needed, mode 0600) the lock file for a credentials file.
pub fn open_lock_file(creds: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(lock_path(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_expiries() {
        let t = parse_expiry("2025-01-12T23:00:00.000Z").unwrap();
        assert_eq!(format_expiry(t), "2025-01-12T23:00:00Z");
        let t2 = parse_expiry("2025-01-12T23:00:00.123456+00:00").unwrap();
        assert_eq!(format_expiry(t2), "2025-01-12T23:00:00.123Z");
        assert!(parse_expiry("2025-01-12T23:00:00").is_some());
        assert!(parse_expiry("soon").is_none());
    }

    #[test]
    fn far_future_times_format_without_panicking() {
        // 3e11 s and more after 1970 is past year 9999: clamped, never a panic
        for secs in [300_000_000_000u64, u64::MAX / 2] {
            let t = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs));
            let Some(t) = t else { continue };
            assert_eq!(format_expiry(t), "9999-12-31T23:59:59.999Z");
            assert_eq!(
                DateStyle::of("2025-01-12T23:00:00+00:00").format(t),
                "9999-12-31T23:59:59+00:00"
            );
        }
        assert_eq!(
            format_expiry(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn keeps_the_date_style_of_the_file() {
        let t = parse_expiry("2030-05-06T07:08:09.123456Z").unwrap();
        for (old, expected) in [
            ("2025-01-12T23:00:00.000Z", "2030-05-06T07:08:09.123Z"),
            ("2025-01-12T23:00:00Z", "2030-05-06T07:08:09Z"),
            (
                "2025-01-12T23:00:00.123456+00:00",
                "2030-05-06T07:08:09.123456+00:00",
            ),
            ("2025-01-12T23:00:00+00:00", "2030-05-06T07:08:09+00:00"),
            ("2025-01-12T23:00:00", "2030-05-06T07:08:09"),
        ] {
            let written = DateStyle::of(old).format(t);
            assert_eq!(written, expected, "{old}");
            assert!(parse_expiry(&written).is_some());
        }
    }

    #[cfg(unix)]
    #[test]
    fn warns_about_credentials_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds.json");
        std::fs::write(&p, "{}").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = permission_warning(&p).unwrap();
        assert!(w.contains("chmod 600") && w.contains("644"), "{w}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(permission_warning(&p), None);
    }

    #[test]
    fn detects_oidc_by_client_credentials() {
        let mut c = Credentials::default();
        assert_eq!(c.kind(), AuthKind::Desktop);
        c.client_id = Some("id".into());
        c.client_secret = Some(Secret::new("s"));
        assert_eq!(c.kind(), AuthKind::Oidc);
    }

    #[test]
    fn no_credentials_explains_the_four_ways() {
        let err = load(&CredentialSettings::default()).unwrap_err();
        let text = err.to_string();
        for v in [
            "KIRO_CREDS_FILE",
            "REFRESH_TOKEN",
            "KIRO_CLI_DB_FILE",
            "--demo",
        ] {
            assert!(text.contains(v), "{text}");
        }
    }

    #[test]
    fn json_write_back_is_atomic_keeps_unknown_fields_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiro-auth-token.json");
        std::fs::write(
            &path,
            r#"{"accessToken":"a0","refreshToken":"r0","expiresAt":"2020-01-01T00:00:00Z","provider":"Github","authMethod":"social"}"#,
        )
        .unwrap();
        let rot = Rotation {
            access_token: Secret::new("a1"),
            refresh_token: Secret::new("r1"),
            expires_at: parse_expiry("2030-01-01T00:00:00Z").unwrap(),
            profile_arn: Some("arn:aws:codewhisperer:us-east-1:1:profile/X".into()),
        };
        persist(&CredentialSource::JsonFile { path: path.clone() }, &rot).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["accessToken"], "a1");
        assert_eq!(v["refreshToken"], "r1");
        assert_eq!(v["expiresAt"], "2030-01-01T00:00:00Z");
        assert_eq!(v["provider"], "Github");
        assert_eq!(v["authMethod"], "social");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // no temp file left behind
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn reads_the_enterprise_device_registration_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiro-auth-token.json");
        std::fs::write(&path, r#"{"refreshToken":"r","clientIdHash":"abc"}"#).unwrap();
        std::fs::write(
            dir.path().join("abc.json"),
            r#"{"clientId":"cid","clientSecret":"cs"}"#,
        )
        .unwrap();
        let (c, _) = load(&CredentialSettings {
            creds_file: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.kind(), AuthKind::Oidc);
        assert_eq!(c.client_id.as_deref(), Some("cid"));
    }

    #[test]
    fn an_api_key_wins_over_the_other_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiro-auth-token.json");
        std::fs::write(
            &path,
            r#"{"refreshToken":"r","profileArn":"arn:from-file"}"#,
        )
        .unwrap();
        let (c, src) = load(&CredentialSettings {
            api_key: Some(Secret::new("ksk_abc")),
            refresh_token: Some(Secret::new("r-env")),
            creds_file: Some(path),
            profile_arn: Some("arn:aws:codewhisperer:us-east-1:1:profile/P".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(src, CredentialSource::ApiKey);
        assert_eq!(c.kind(), AuthKind::ApiKey);
        assert_eq!(c.api_key.as_ref().map(Secret::expose), Some("ksk_abc"));
        assert_eq!(c.refresh_token, None);
        // only PROFILE_ARN counts with an API key; the file is not read
        assert_eq!(
            c.profile_arn.as_deref(),
            Some("arn:aws:codewhisperer:us-east-1:1:profile/P")
        );
        assert_eq!(src.describe(), "KIRO_API_KEY");
        assert!(!format!("{c:?}").contains("ksk_abc"));
        // an empty key is no key
        let err = load(&CredentialSettings {
            api_key: Some(Secret::new("")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("KIRO_API_KEY"), "{err}");
    }
}
