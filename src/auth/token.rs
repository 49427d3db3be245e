//! [`TokenManager`]: hands out a valid access token, refreshing it ahead of expiry.
//!
//! - **Ahead of expiry, not before every request.** A token is refreshed once it is within the
//!   margin of its expiry; the margin is capped at half the token's lifetime, so a service that
//!   issues 10-minute tokens does not cause a refresh per request (the original's defect 12).
//! - **Single-flight.** Concurrent callers that find the token due wait on one refresh and share
//!   its result. A 403 forces a refresh only if the token that failed is still the current one;
//!   otherwise the caller gets the token another task already fetched (defect 11).
//! - **Nothing lost.** A rotated refresh token is written back to its source before the new
//!   token is handed out; if the write fails the error is logged loudly and retried on the next
//!   refresh, and the in-memory token keeps working.
//! - **Shared sources.** A refresh holds the source's lock (see [`super::lock`]) across
//!   re-read, refresh and write-back, so two gateways on one file never refresh the same
//!   token. The source is re-read first: a newer valid token there (the Kiro IDE, kiro-cli or
//!   another gateway refreshed) is adopted instead of refreshing, and a refresh token rotated
//!   by someone else replaces ours (ours is spent). A refused refresh (`invalid_grant`, 400,
//!   401) re-reads once more and retries with what is there now; if that fails too but the
//!   current access token has not expired, it keeps being used, with a warning.
//! - **State behind a seam.** The tokens, expiry, generation and failure memory sit behind
//!   [`TokenStore`] ([`MemoryTokenStore`] by default), so that gateways sharing one account
//!   can share them ([`TokenManager::new_with_store`]).
//! - **API keys are never refreshed.** With `KIRO_API_KEY` the key is the bearer of every call;
//!   a forced refresh is answered with [`AuthError::ApiKeyRefused`], never with a call to an
//!   auth service.

use std::ops::DerefMut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::json;

use super::lock::SourceLock;
use super::source::{self, AuthKind, CredentialSource, Credentials, Rotation};
use super::AuthError;
use crate::kiro::client::{BearerKind, EndpointTemplates, KiroHeaders, UpstreamHttp};
use crate::secret::Secret;

/// Settings of the token manager.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Refresh when the token expires within this margin (capped at half its lifetime).
    pub refresh_margin: Duration,
    /// After a failed refresh, callers within this window get the same error instead of a new
    /// refresh attempt (no refresh storms against a failing auth service).
    pub failure_cooldown: Duration,
    /// Lifetime assumed when a refresh answer carries no `expiresIn`.
    pub default_lifetime: Duration,
    /// When requests carry the profile ARN (spec 2.8: the sources disagree, so it is a knob).
    pub profile_arn_policy: ProfileArnPolicy,
    /// `CREDENTIALS_LOCK_TIMEOUT_SECS`: longest wait for the source lock before refreshing
    /// without it.
    pub lock_timeout: Duration,
}

/// Whether `profileArn` goes into generate and model-list requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileArnPolicy {
    /// The reference's rule for q.amazonaws.com: Kiro desktop accounts send it, AWS SSO OIDC
    /// accounts never do (the service answers 403 when they do).
    #[default]
    Auto,
    /// Always send it when one is known (runtime.kiro.dev requires it for every account; the
    /// runtime protocol switches to this whatever was configured).
    Always,
    /// Never send it.
    Never,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            refresh_margin: Duration::from_secs(300),
            failure_cooldown: Duration::from_secs(2),
            default_lifetime: Duration::from_secs(3600),
            profile_arn_policy: ProfileArnPolicy::Auto,
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// A token another program wrote is adopted only with at least this much life left.
const MIN_ADOPT_LIFETIME: Duration = Duration::from_secs(2);

/// An access token as handed out, with the generation it belongs to (for 403 handling).
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub generation: u64,
    /// Where it came from: a 403 on a token that was not [`TokenOrigin::Refreshed`] by us
    /// has not yet cost the request its one refresh.
    pub origin: TokenOrigin,
}

/// Where the current access token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Read from the source at start (or an API key).
    Loaded,
    /// Taken from the source, where another program (the Kiro IDE, kiro-cli, another
    /// gateway) wrote it after its own refresh.
    Adopted,
    /// Issued to this gateway by its own refresh.
    Refreshed,
}

/// What `/health` may show about the token: never the token.
#[derive(Debug, Clone)]
pub struct TokenStatus {
    pub auth_kind: AuthKind,
    pub source: String,
    pub expires_at: Option<SystemTime>,
    pub refreshes: u64,
    /// A rotated token is held in memory only because writing it back failed.
    pub unsaved_rotation: bool,
}

/// A token manager's state: the access and refresh tokens, expiry, profile ARN, generation,
/// the refused generation, the rotation not yet written back and the last refresh failure.
/// Opaque outside this module (secrets print as `***`): stores hold it, the manager reads and
/// changes it.
#[derive(Debug, Clone)]
pub struct TokenState {
    access: Option<Secret>,
    refresh: Secret,
    expires_at: Option<SystemTime>,
    /// Lifetime of the current token when known (it came from our refresh).
    lifetime: Option<Duration>,
    profile_arn: Option<String>,
    generation: u64,
    origin: TokenOrigin,
    /// The service refused the access token of this generation (and no refresh replaced
    /// it): it is not handed out again, however far its expiry.
    refused_generation: Option<u64>,
    /// A rotation that could not be written back yet.
    unsaved: Option<Rotation>,
    /// The refresh token the source held when we last read or wrote it: a different one there
    /// now means another program rotated it (and ours is spent); the same one means the source
    /// is behind us (a failed write-back, `SQLITE_READONLY`) and must not be taken.
    source_refresh: Option<Secret>,
    last_failure: Option<(tokio::time::Instant, AuthError)>,
}

/// Where a [`TokenManager`] keeps its [`TokenState`].
///
/// The in-memory [`MemoryTokenStore`] is the default. A store shared by several gateways
/// serving the same account (issue 21) must guarantee:
/// - **exclusive guards**: while a guard from [`lock`](Self::lock) is alive, no other `lock`
///   of the same state (in this process or another) returns. Each of the manager's
///   read-modify-writes is one guard: handing out the current token with its generation,
///   marking a refused generation, adopting a token from the source, installing a refreshed
///   token (generation + 1, its rotation recorded as unsaved);
/// - **visibility**: what was changed through a guard is what the next `lock` sees once the
///   guard is dropped (write back on drop), so a token one gateway refreshed is handed out by
///   the others without a refresh of their own;
/// - **compare-and-set of a refresh**: the generation is the version a refresh is checked
///   against (a 403 refreshes only if the refused token's generation is still current). The
///   manager makes the check, the refresh and the install one critical section with its own
///   single-flight lock and the credential source's lock (a file or SQLite lock, which spans
///   processes on one machine). Gateways on several machines, or on `REFRESH_TOKEN`, need a
///   lease of the shared store's own around the refresh as well: this trait does not carry
///   one yet, so a shared store must not be used across machines until it does;
/// - **no waiting on the holder**: a guard is held for a few field updates, never across an
///   `.await` (the guard is not `Send`, so a `Send` future cannot keep it over an await).
///
/// The state holds a [`tokio::time::Instant`] (the last failure's time), which means nothing
/// in another process: a shared store keeps the failure and restarts its cool-down.
pub trait TokenStore: Send + Sync {
    /// Exclusive access to the state until the guard is dropped.
    fn lock(&self) -> Box<dyn DerefMut<Target = TokenState> + '_>;
}

/// A token manager's state in this process's memory (the default).
#[derive(Debug)]
pub struct MemoryTokenStore {
    state: Mutex<TokenState>,
}

impl MemoryTokenStore {
    /// A store holding `state` (the seed [`TokenManager::new_with_store`] hands over).
    pub fn new(state: TokenState) -> Self {
        MemoryTokenStore {
            state: Mutex::new(state),
        }
    }
}

impl TokenStore for MemoryTokenStore {
    fn lock(&self) -> Box<dyn DerefMut<Target = TokenState> + '_> {
        // A poisoned lock only means a panic elsewhere while holding it; the state itself is
        // always consistent (single assignments), so keep using it.
        Box::new(crate::lock(&self.state))
    }
}

struct Inner {
    state: Arc<dyn TokenStore>,
    refresh_lock: tokio::sync::Mutex<()>,
    kind: AuthKind,
    source: CredentialSource,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    api_region: String,
    refresh_url: String,
    http: UpstreamHttp,
    headers: KiroHeaders,
    cfg: TokenConfig,
    refreshes: AtomicU64,
    /// Refreshes that failed (transport, refusal, bad answer).
    refresh_failures: AtomicU64,
    /// Retries a write-back that failed (a locked database): owned here, aborted with the
    /// manager.
    saver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Woken whenever no rotation is left unsaved (see [`TokenManager::wait_saved`]).
    saved: tokio::sync::Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = crate::lock(&self.saver).take() {
            task.abort();
        }
    }
}

/// The first wait before a failed write-back is tried again; it doubles up to
/// [`SAVE_RETRY_MAX`].
const SAVE_RETRY_FIRST: Duration = Duration::from_secs(1);
const SAVE_RETRY_MAX: Duration = Duration::from_secs(60);

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("kind", &self.inner.kind)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

/// The longest token lifetime believed from a refresh answer. Kiro and AWS SSO issue tokens
/// for about an hour; a larger `expiresIn` is clamped to this, so that a broken or hostile
/// answer (`3e11`, `1e20`) can never push an expiry past what the date arithmetic and the
/// RFC 3339 formatting handle. Refreshing a day early costs one refresh.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The lifetime to believe for a refresh answer's `expiresIn` (seconds): `default` when it is
/// missing, not a number or not positive; at most [`MAX_TOKEN_LIFETIME`]. Both corrections
/// are logged.
pub fn token_lifetime(expires_in: Option<f64>, default: Duration) -> Duration {
    match expires_in {
        None => default,
        Some(s) if !s.is_finite() || s <= 0.0 => {
            tracing::warn!(
                expires_in = s,
                "the refresh answer's expiresIn is not a positive number; assuming {default:?}"
            );
            default
        }
        Some(s) if s > MAX_TOKEN_LIFETIME.as_secs_f64() => {
            tracing::warn!(
                expires_in = s,
                "the refresh answer's expiresIn is implausibly long; treating the token as valid for {MAX_TOKEN_LIFETIME:?}"
            );
            MAX_TOKEN_LIFETIME
        }
        Some(s) => Duration::from_secs_f64(s),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    profile_arn: Option<String>,
}

impl TokenManager {
    /// Build from loaded credentials, keeping the token state in memory.
    pub fn new(
        creds: Credentials,
        source: CredentialSource,
        endpoints: &EndpointTemplates,
        http: UpstreamHttp,
        headers: KiroHeaders,
        cfg: TokenConfig,
    ) -> Result<Self, AuthError> {
        Self::new_with_store(creds, source, endpoints, http, headers, cfg, |seed| {
            Arc::new(MemoryTokenStore::new(seed))
        })
    }

    /// [`new`](Self::new), keeping the token state in the store `store` returns for the
    /// state the credentials give (the seed: a shared store that already holds a state for
    /// this account keeps its own). See [`TokenStore`] for what a shared store must
    /// guarantee.
    pub fn new_with_store(
        creds: Credentials,
        source: CredentialSource,
        endpoints: &EndpointTemplates,
        http: UpstreamHttp,
        headers: KiroHeaders,
        cfg: TokenConfig,
        store: impl FnOnce(TokenState) -> Arc<dyn TokenStore>,
    ) -> Result<Self, AuthError> {
        let kind = creds.kind();
        let refresh = match (kind, creds.refresh_token.clone()) {
            (AuthKind::ApiKey, r) => r.unwrap_or_else(|| Secret::new("")),
            (_, Some(r)) => r,
            (_, None) => {
                return Err(AuthError::Load {
                    origin: source.describe(),
                    detail: "no refresh token".into(),
                })
            }
        };
        let refresh_url = match kind {
            AuthKind::Desktop => endpoints.desktop_refresh(&creds.api_region),
            AuthKind::Oidc => {
                endpoints.oidc_token(creds.sso_region.as_deref().unwrap_or(&creds.api_region))
            }
            AuthKind::ApiKey => String::new(),
        };
        let access = match kind {
            AuthKind::ApiKey => creds.api_key,
            _ => creds.access_token,
        };
        Ok(TokenManager {
            inner: Arc::new(Inner {
                state: store(TokenState {
                    access,
                    refresh,
                    expires_at: creds.expires_at,
                    lifetime: None,
                    profile_arn: creds.profile_arn,
                    generation: 0,
                    origin: TokenOrigin::Loaded,
                    refused_generation: None,
                    unsaved: None,
                    source_refresh: creds.refresh_token.clone(),
                    last_failure: None,
                }),
                refresh_lock: tokio::sync::Mutex::new(()),
                kind,
                source,
                client_id: creds.client_id,
                client_secret: creds.client_secret,
                api_region: creds.api_region,
                refresh_url,
                http,
                headers,
                cfg,
                refreshes: AtomicU64::new(0),
                refresh_failures: AtomicU64::new(0),
                saver: Mutex::new(None),
                saved: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Load the configured source (see [`source::load`]) and build a manager for it.
    pub fn load(
        settings: &super::CredentialSettings,
        endpoints: &EndpointTemplates,
        http: UpstreamHttp,
        headers: KiroHeaders,
        cfg: TokenConfig,
    ) -> Result<Self, AuthError> {
        let (creds, source) = source::load(settings)?;
        Self::new(creds, source, endpoints, http, headers, cfg)
    }

    pub fn auth_kind(&self) -> AuthKind {
        self.inner.kind
    }

    pub fn source(&self) -> &CredentialSource {
        &self.inner.source
    }

    /// What the bearer handed out is: an API key or an OAuth access token.
    pub fn bearer_kind(&self) -> BearerKind {
        match self.inner.kind {
            AuthKind::ApiKey => BearerKind::ApiKey,
            _ => BearerKind::AccessToken,
        }
    }

    /// Region of the chat and model-list hosts.
    pub fn api_region(&self) -> &str {
        &self.inner.api_region
    }

    /// The profile ARN known for the account (from the credentials or the last refresh).
    pub fn profile_arn(&self) -> Option<String> {
        self.lock_state().profile_arn.clone()
    }

    /// The profile ARN to put into requests, following [`ProfileArnPolicy`].
    pub fn profile_arn_for_requests(&self) -> Option<String> {
        match (self.inner.cfg.profile_arn_policy, self.inner.kind) {
            (ProfileArnPolicy::Never, _) | (ProfileArnPolicy::Auto, AuthKind::Oidc) => None,
            _ => self.profile_arn(),
        }
    }

    /// Refreshes performed by this manager since it started.
    pub fn refresh_count(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// Refreshes attempted that failed.
    pub fn refresh_failure_count(&self) -> u64 {
        self.inner.refresh_failures.load(Ordering::Relaxed)
    }

    /// Why this account cannot get a usable token now: its last refresh failed (refused or
    /// in transit) and it holds no unexpired access token. `None` when it can serve (an API
    /// key always can, as far as refreshing goes). The text names the source (and its file),
    /// for `/health/accounts` and the log, never for clients.
    pub fn refresh_problem(&self) -> Option<String> {
        if self.inner.kind == AuthKind::ApiKey {
            return None;
        }
        let s = self.lock_state();
        let (_, err) = s.last_failure.as_ref()?;
        let usable = s.access.is_some()
            && s.refused_generation != Some(s.generation)
            && s.expires_at.is_some_and(|e| SystemTime::now() < e);
        (!usable).then(|| err.to_string())
    }

    pub fn status(&self) -> TokenStatus {
        let s = self.lock_state();
        TokenStatus {
            auth_kind: self.inner.kind,
            source: self.inner.source.describe(),
            expires_at: s.expires_at,
            refreshes: self.refresh_count(),
            unsaved_rotation: s.unsaved.is_some(),
        }
    }

    fn lock_state(&self) -> Box<dyn DerefMut<Target = TokenState> + '_> {
        self.inner.state.lock()
    }

    fn margin(&self, s: &TokenState) -> Duration {
        match s.lifetime {
            Some(l) => self.inner.cfg.refresh_margin.min(l / 2),
            None => self.inner.cfg.refresh_margin,
        }
    }

    /// The current token if it is not due for refresh.
    fn fresh(&self) -> Option<AccessToken> {
        let s = self.lock_state();
        if s.refused_generation == Some(s.generation) {
            return None;
        }
        let access = s.access.clone()?;
        let exp = s.expires_at?;
        (SystemTime::now() + self.margin(&s) < exp).then_some(AccessToken {
            token: access,
            generation: s.generation,
            origin: s.origin,
        })
    }

    /// The current token if it has not expired (used when a refresh fails transiently).
    fn unexpired(&self) -> Option<AccessToken> {
        let s = self.lock_state();
        if s.refused_generation == Some(s.generation) {
            return None;
        }
        let access = s.access.clone()?;
        (SystemTime::now() < s.expires_at?).then_some(AccessToken {
            token: access,
            generation: s.generation,
            origin: s.origin,
        })
    }

    /// The API key as the bearer (API-key accounts only).
    fn api_key(&self) -> Option<AccessToken> {
        if self.inner.kind != AuthKind::ApiKey {
            return None;
        }
        let s = self.lock_state();
        s.access.clone().map(|token| AccessToken {
            token,
            generation: s.generation,
            origin: s.origin,
        })
    }

    /// The error for a refused API key.
    pub fn api_key_refused(status: u16, message: impl Into<String>) -> AuthError {
        AuthError::ApiKeyRefused {
            status,
            message: message.into(),
        }
    }

    /// A valid access token, refreshing first if it is due (an API key is handed out as it
    /// is).
    pub async fn access_token(&self) -> Result<AccessToken, AuthError> {
        if self.inner.kind == AuthKind::ApiKey {
            return self.api_key().ok_or_else(|| AuthError::Load {
                origin: self.inner.source.describe(),
                detail: "the API key is empty".into(),
            });
        }
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _guard = self.inner.refresh_lock.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        match self.refresh_locked(None, true).await {
            Ok(t) => Ok(t),
            Err(e @ (AuthError::Transient { .. } | AuthError::Refused { .. })) => {
                match self.unexpired() {
                    Some(t) => {
                        tracing::warn!(error = %e, "token refresh failed; the current access token has not expired yet, so it stays in use until it does");
                        Ok(t)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The service rejected `failed` as invalid: refresh, unless another task already replaced
    /// it, in which case the newer token is returned without a second refresh.
    ///
    /// An API key cannot be refreshed: the answer is [`AuthError::ApiKeyRefused`].
    pub async fn force_refresh(&self, failed: &AccessToken) -> Result<AccessToken, AuthError> {
        self.replace_refused(failed, true).await
    }

    /// After a failed refresh for a token the service refused: that token, if it is still
    /// the current one, is not handed out again.
    fn note_refused(&self, failed: &AccessToken, result: &Result<AccessToken, AuthError>) {
        if result.is_err() {
            let mut s = self.lock_state();
            if s.generation == failed.generation {
                s.refused_generation = Some(failed.generation);
            }
        }
    }

    /// The service refused `failed`, a token that this gateway did not get from its own
    /// refresh (one adopted from the source, or loaded at start): a real refresh, with the
    /// source's current refresh token, under the source lock, adopting no access token from
    /// the source. A token another task of this process got from a real refresh after
    /// `failed` is returned instead. An IDE that rotates and revokes every access token
    /// issued before can leave the source holding a token that is already dead; adopting it
    /// must not use up the one refresh a request may cause.
    pub async fn refresh_without_adopting(
        &self,
        failed: &AccessToken,
    ) -> Result<AccessToken, AuthError> {
        self.replace_refused(failed, false).await
    }

    /// A new token for `failed`, which the service refused (never that token again), under
    /// the refresh lock. A token another task got meanwhile is returned instead: any newer one
    /// when `adopt`, only one from a real refresh otherwise. `adopt` also lets the refresh take
    /// an access token found in the source instead of refreshing.
    async fn replace_refused(
        &self,
        failed: &AccessToken,
        adopt: bool,
    ) -> Result<AccessToken, AuthError> {
        if self.inner.kind == AuthKind::ApiKey {
            return Err(Self::api_key_refused(
                403,
                "the service refused the key as a bearer",
            ));
        }
        let _guard = self.inner.refresh_lock.lock().await;
        {
            let s = self.lock_state();
            let newer =
                s.generation != failed.generation && (adopt || s.origin == TokenOrigin::Refreshed);
            if newer {
                if let Some(access) = s.access.clone() {
                    return Ok(AccessToken {
                        token: access,
                        generation: s.generation,
                        origin: s.origin,
                    });
                }
            }
        }
        let result = self.refresh_locked(Some(&failed.token), adopt).await;
        self.note_refused(failed, &result);
        result
    }

    /// Under the source lock: re-read, adopt or refresh, write back. `refused` is an access
    /// token the service rejected (never adopted again); `adopt`: an access token found in the
    /// source may be taken instead of refreshing (a rotated refresh token always is).
    async fn refresh_locked(
        &self,
        refused: Option<&Secret>,
        adopt: bool,
    ) -> Result<AccessToken, AuthError> {
        let mut lock = SourceLock::acquire(&self.inner.source, self.inner.cfg.lock_timeout).await;
        // a rotation an earlier write-back failed to save: save it now that we hold the lock
        let unsaved = self.lock_state().unsaved.clone();
        if let Some(rot) = unsaved {
            if self.inner.source != CredentialSource::Env {
                match lock.persist(&rot).await {
                    Ok(()) => {
                        tracing::info!(source = %self.inner.source.describe(), "saved the rotated token that could not be written before");
                        self.mark_saved(&rot);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the rotated token is still kept in memory only")
                    }
                }
                if !lock.is_held() {
                    // the SQLite commit ended the transaction: take it again
                    // the SQLite commit ended the transaction: take it again, within what is
                    // left of the same wait
                    lock = SourceLock::acquire(&self.inner.source, lock.remaining()).await;
                }
            }
        }
        let held = lock.reread().await;
        if let Some(t) = self.adopt(held.as_ref(), refused, adopt) {
            self.lock_state().last_failure = None;
            return Ok(t);
        }
        {
            let s = self.lock_state();
            if let Some((at, err)) = &s.last_failure {
                if at.elapsed() < self.inner.cfg.failure_cooldown {
                    return Err(err.clone());
                }
            }
        }
        let used = self.lock_state().refresh.clone();
        let mut result = self.refresh_now().await;
        if let Err(first @ AuthError::Refused { .. }) = &result {
            // someone else may have rotated the token between our read and our refresh (or
            // refreshed without our lock): look once more and retry with what is there now
            let now_held = lock.reread().await;
            if let Some(t) = self.adopt(now_held.as_ref(), refused, adopt) {
                self.lock_state().last_failure = None;
                return Ok(t);
            }
            let current = self.lock_state().refresh.clone();
            if current != used {
                tracing::info!(source = %self.inner.source.describe(), "the refresh token was refused, but the source now holds another one; retrying with it");
                result = self.refresh_now().await;
            } else {
                tracing::warn!(error = %first, "the refresh token was refused and the source holds no newer one");
            }
        }
        let result = match result {
            Ok((token, rot, rotated)) => {
                self.write_back(&mut lock, rot, rotated).await;
                Ok(token)
            }
            Err(e) => Err(e),
        };
        drop(lock);
        let mut s = self.lock_state();
        match &result {
            Ok(_) => s.last_failure = None,
            Err(e) => s.last_failure = Some((tokio::time::Instant::now(), e.clone())),
        }
        result
    }

    fn mark_saved(&self, rot: &Rotation) {
        let mut s = self.lock_state();
        s.source_refresh = Some(rot.refresh_token.clone());
        if s.unsaved.as_ref().map(|u| &u.access_token) == Some(&rot.access_token) {
            s.unsaved = None;
            drop(s);
            self.inner.saved.notify_waiters();
        }
    }

    /// Resolves once no rotated refresh token is waiting to be written back to the source:
    /// at once when every rotation is saved (or the source is never written: `REFRESH_TOKEN`,
    /// `SQLITE_READONLY`), otherwise when the background retry (1 s, doubling up to a minute;
    /// see `schedule_save`) or the next refresh has written it, or has found that another
    /// program wrote newer credentials there. It writes nothing itself. A source that stays
    /// locked or unwritable keeps it waiting: bound it with `tokio::time::timeout`. For
    /// tests and orderly shutdowns that must know the file or database holds the rotation.
    pub async fn wait_saved(&self) {
        loop {
            let notified = self.inner.saved.notified();
            tokio::pin!(notified);
            // registered before the check, so a save between the check and the await wakes it
            notified.as_mut().enable();
            if self.lock_state().unsaved.is_none() {
                return;
            }
            notified.await;
        }
    }

    /// What the source holds now, if it is worth taking: a refresh token that changed there
    /// since we last read or wrote it replaces ours (another program rotated it, so ours is
    /// spent); an access token that is not ours, not `refused`, unexpired
    /// (with [`MIN_ADOPT_LIFETIME`] left) and newer than ours is adopted and returned, if
    /// `take_access` allows it.
    fn adopt(
        &self,
        held: Option<&Credentials>,
        refused: Option<&Secret>,
        take_access: bool,
    ) -> Option<AccessToken> {
        let held = held?;
        let mut s = self.lock_state();
        if let Some(r) = held.refresh_token.as_ref().filter(|r| !r.is_empty()) {
            if s.source_refresh.as_ref() != Some(r) {
                if *r != s.refresh {
                    tracing::info!(source = %self.inner.source.describe(), "the refresh token was rotated by another program; using the new one");
                    s.refresh = r.clone();
                }
                s.source_refresh = Some(r.clone());
            }
        }
        if !take_access {
            return None;
        }
        let access = held.access_token.clone()?;
        let exp = held.expires_at?;
        if s.access.as_ref() == Some(&access) || refused == Some(&access) {
            return None;
        }
        let remaining = exp.duration_since(SystemTime::now()).ok()?;
        if remaining < MIN_ADOPT_LIFETIME {
            return None;
        }
        // newer than ours, unless ours was refused (then any valid one is better)
        let ours_refused = refused.is_some() && refused == s.access.as_ref();
        if !ours_refused && s.expires_at.is_some_and(|ours| exp <= ours) {
            return None;
        }
        tracing::info!(source = %self.inner.source.describe(), "adopting a token refreshed by another program");
        s.access = Some(access.clone());
        s.expires_at = Some(exp);
        // its real lifetime is unknown: what is left of it is the best estimate
        s.lifetime = Some(remaining);
        s.generation += 1;
        s.origin = TokenOrigin::Adopted;
        Some(AccessToken {
            token: access,
            generation: s.generation,
            origin: TokenOrigin::Adopted,
        })
    }

    fn hint(&self) -> String {
        match (&self.inner.source, self.inner.kind) {
            (CredentialSource::Sqlite { .. }, _) => {
                "run `kiro-cli login` to sign in again".to_owned()
            }
            (CredentialSource::Env, _) => {
                "get a new refresh token (sign in to the Kiro IDE again) and set REFRESH_TOKEN"
                    .to_owned()
            }
            (CredentialSource::JsonFile { path }, AuthKind::Oidc) => format!(
                "sign in again (Kiro IDE or `kiro-cli login`) so that {} gets a new token",
                path.display()
            ),
            (CredentialSource::JsonFile { path }, _) => format!(
                "sign in to the Kiro IDE again so that it rewrites {}",
                path.display()
            ),
            (CredentialSource::ApiKey, _) => {
                "check KIRO_API_KEY, or create a new key in your Kiro account".to_owned()
            }
        }
    }

    /// One call to the auth service. On success the new token is in the state and the
    /// rotation to write back is returned with it (and whether the refresh token changed).
    async fn refresh_now(&self) -> Result<(AccessToken, Rotation, bool), AuthError> {
        let started = self.refresh_count();
        let result = self.refresh_once().await;
        // a failure counts only when a refresh request was actually made
        if result.is_err() && self.refresh_count() != started {
            self.inner.refresh_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn refresh_once(&self) -> Result<(AccessToken, Rotation, bool), AuthError> {
        let inner = &self.inner;
        let source = inner.source.describe();
        let refresh = self.lock_state().refresh.clone();
        let (body, ua) = match inner.kind {
            AuthKind::ApiKey => {
                return Err(Self::api_key_refused(403, "an API key cannot be refreshed"))
            }
            AuthKind::Desktop => (
                json!({ "refreshToken": refresh.expose() }),
                inner.headers.refresh_user_agent.clone(),
            ),
            AuthKind::Oidc => (
                json!({
                    "grantType": "refresh_token",
                    "clientId": inner.client_id.as_deref().unwrap_or_default(),
                    "clientSecret": inner.client_secret.as_ref().map(Secret::expose).unwrap_or_default(),
                    "refreshToken": refresh.expose(),
                }),
                http::HeaderValue::from_static("aws-sdk-js/3.980.0 KiroIDE"),
            ),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(&inner.refresh_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, ua)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| AuthError::Load {
                origin: source.clone(),
                detail: format!("bad refresh URL {:?}: {e}", inner.refresh_url),
            })?;
        inner.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            kind = inner.kind.as_str(),
            "refreshing the Kiro access token"
        );
        let (status, _headers, body) =
            inner
                .http
                .call_json(req)
                .await
                .map_err(|e| AuthError::Transient {
                    origin: source.clone(),
                    detail: e.to_string(),
                })?;
        if !status.is_success() {
            return Err(self.classify_failure(status, &body));
        }
        let answer: RefreshAnswer =
            serde_json::from_slice(&body).map_err(|e| AuthError::Transient {
                origin: source.clone(),
                detail: format!("the refresh answer is not the expected JSON: {e}"),
            })?;
        if answer.access_token.is_empty() {
            return Err(AuthError::Transient {
                origin: source,
                detail: "the refresh answer has an empty accessToken".into(),
            });
        }
        let lifetime = token_lifetime(answer.expires_in, inner.cfg.default_lifetime);
        let access = Secret::new(answer.access_token);
        let expires_at = SystemTime::now() + lifetime;
        let rotation_and_gen = {
            let mut s = self.lock_state();
            let mut rotated = false;
            if let Some(r) = answer.refresh_token.filter(|r| !r.is_empty()) {
                rotated = r != s.refresh.expose();
                s.refresh = Secret::new(r);
            }
            if inner.kind == AuthKind::Desktop {
                if let Some(arn) = answer.profile_arn.filter(|a| !a.is_empty()) {
                    s.profile_arn = Some(arn);
                }
            }
            s.access = Some(access.clone());
            s.expires_at = Some(expires_at);
            s.lifetime = Some(lifetime);
            s.generation += 1;
            s.origin = TokenOrigin::Refreshed;
            let rot = Rotation {
                access_token: access.clone(),
                refresh_token: s.refresh.clone(),
                expires_at,
                profile_arn: s.profile_arn.clone(),
            };
            s.unsaved = Some(rot.clone());
            (rot, s.generation, rotated)
        };
        let (rotation, generation, rotated) = rotation_and_gen;
        Ok((
            AccessToken {
                token: access,
                generation,
                origin: TokenOrigin::Refreshed,
            },
            rotation,
            rotated,
        ))
    }

    async fn write_back(&self, lock: &mut SourceLock, rot: Rotation, rotated: bool) {
        match &self.inner.source {
            CredentialSource::Env => {
                if rotated {
                    tracing::warn!(
                        "the auth service rotated the refresh token from REFRESH_TOKEN; the new one is kept in memory only. Use KIRO_CREDS_FILE or KIRO_CLI_DB_FILE so that it survives a restart"
                    );
                }
                self.lock_state().unsaved = None;
                self.inner.saved.notify_waiters();
                return;
            }
            CredentialSource::Sqlite { readonly: true, .. } => {
                if rotated {
                    tracing::warn!(
                        "SQLITE_READONLY: the rotated refresh token is kept in memory only and kiro-cli's copy is now spent; run `kiro-cli login` if kiro-cli stops working"
                    );
                }
                self.lock_state().unsaved = None;
                self.inner.saved.notify_waiters();
                return;
            }
            _ => {}
        }
        match lock.persist(&rot).await {
            Ok(()) => self.mark_saved(&rot),
            Err(e) => {
                tracing::error!(error = %e, "the rotated token is kept in memory; writing it back is tried again shortly");
                self.schedule_save();
            }
        }
    }

    /// Try the unsaved rotation's write-back again in the background (the source was locked
    /// past `CREDENTIALS_LOCK_TIMEOUT_SECS`, or unwritable): after 1 s, doubling up to a
    /// minute, until it is written or replaced. The token was handed out without waiting.
    fn schedule_save(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // a weak reference: the task must not keep a dropped manager alive
        let weak = Arc::downgrade(&self.inner);
        let task = rt.spawn(async move {
            let mut wait = SAVE_RETRY_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if (TokenManager { inner }).save_unsaved().await {
                    return;
                }
                wait = (wait * 2).min(SAVE_RETRY_MAX);
            }
        });
        if let Some(old) = crate::lock(&self.inner.saver).replace(task) {
            old.abort();
        }
    }

    /// Write the unsaved rotation, under the refresh single-flight and the source lock.
    /// `true` when there is nothing left to do: written, or the source now holds another
    /// program's newer credentials (never written over).
    async fn save_unsaved(&self) -> bool {
        let _guard = self.inner.refresh_lock.lock().await;
        let Some(rot) = self.lock_state().unsaved.clone() else {
            return true;
        };
        let mut lock = SourceLock::acquire(&self.inner.source, self.inner.cfg.lock_timeout).await;
        if let Some(held) = lock.reread().await {
            let mut s = self.lock_state();
            let theirs = held.refresh_token.filter(|r| !r.is_empty());
            if let Some(r) = theirs {
                if s.source_refresh.as_ref() != Some(&r) && r != rot.refresh_token {
                    tracing::warn!(source = %self.inner.source.describe(), "another program wrote new credentials before the rotated token could be saved; keeping theirs in the source");
                    s.unsaved = None;
                    drop(s);
                    self.inner.saved.notify_waiters();
                    return true;
                }
            }
        }
        match lock.persist(&rot).await {
            Ok(()) => {
                tracing::info!(source = %self.inner.source.describe(), "saved the rotated token that could not be written before");
                self.mark_saved(&rot);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the rotated token is still kept in memory only");
                false
            }
        }
    }

    fn classify_failure(&self, status: StatusCode, body: &[u8]) -> AuthError {
        let source = self.inner.source.describe();
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let message = field("error_description")
            .or_else(|| field("message"))
            .or_else(|| field("error"))
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
        let invalid_grant = field("error").as_deref() == Some("invalid_grant");
        let refused = invalid_grant
            || matches!(
                status,
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            );
        if refused {
            AuthError::Refused {
                origin: source,
                status: status.as_u16(),
                message,
                hint: self.hint(),
            }
        } else {
            AuthError::Transient {
                origin: source,
                detail: format!("auth service answered {}: {message}", status.as_u16()),
            }
        }
    }
}
