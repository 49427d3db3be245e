//! One Kiro account of the pool: its upstream service, its figures, and where its health is
//! kept; and the snapshot `/health/accounts` shows of it.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

use super::health::{AccountHealth, AccountHealthStore, AccountState, Avail, MemoryHealthStore};
use crate::auth::TokenManager;
use crate::kiro::{Error, GenerateRequest, GenerateResponse, KiroClient};

/// The upstream service of one account.
pub type AccountService = BoxCloneSyncService<GenerateRequest, GenerateResponse, Error>;

/// One Kiro account of the pool.
pub struct Account {
    pub(super) name: Arc<str>,
    pub(super) priority: i32,
    pub(super) weight: u32,
    pub(super) tokens: Option<TokenManager>,
    pub(super) client: Option<KiroClient>,
    /// `origin` its protocol puts into every message.
    pub(super) origin: &'static str,
    pub(super) service: AccountService,
    health: Arc<dyn AccountHealthStore>,
    pub(super) in_flight: AtomicUsize,
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Credits metered on its answers, in millionths.
    pub(super) micro_credits: AtomicU64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// An account served by any upstream service (a fake in tests and benches).
    pub fn new(name: impl Into<Arc<str>>, service: AccountService) -> Self {
        Account {
            name: name.into(),
            priority: 0,
            weight: 1,
            tokens: None,
            client: None,
            origin: "AI_EDITOR",
            service,
            health: Arc::new(MemoryHealthStore::default()),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            micro_credits: AtomicU64::new(0),
        }
    }

    /// A real Kiro account: its token manager's auth layer over its client.
    pub fn kiro(name: impl Into<Arc<str>>, tokens: TokenManager, client: KiroClient) -> Self {
        use tower_layer::Layer;
        let service = BoxCloneSyncService::new(
            crate::layers::KiroAuthLayer::new(tokens.clone()).layer(client.clone()),
        );
        let origin = client.body_requirements().origin;
        let mut a = Account::new(name, service);
        a.origin = origin;
        a.tokens = Some(tokens);
        a.client = Some(client);
        a
    }

    /// Tried before accounts with a higher value (by the `priority` strategy).
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Share of the traffic relative to the others (at least 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Keep its health (cooling, parked, probes…) in `store` instead of this process's
    /// memory (see [`AccountHealthStore`] for what a shared store must guarantee).
    pub fn with_health_store(mut self, store: Arc<dyn AccountHealthStore>) -> Self {
        self.health = store;
        self
    }

    /// Its name (unique in a pool).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its token manager (a real Kiro account).
    pub fn tokens(&self) -> Option<&TokenManager> {
        self.tokens.as_ref()
    }

    /// Its client (a real Kiro account).
    pub fn client(&self) -> Option<&KiroClient> {
        self.client.as_ref()
    }

    /// What it is doing now.
    pub fn state(&self) -> AccountState {
        let state = self.health().state;
        if state == AccountState::Ok && self.refresh_problem().is_some() {
            return AccountState::RefreshFailing;
        }
        state
    }

    /// Exclusive access to its health record (never hold two at once, nor across an await).
    pub(super) fn health(&self) -> Box<dyn std::ops::DerefMut<Target = AccountHealth> + '_> {
        self.health.lock()
    }

    /// Why its token manager cannot give it a usable token (see
    /// [`TokenManager::refresh_problem`]).
    pub(super) fn refresh_problem(&self) -> Option<String> {
        self.tokens.as_ref().and_then(TokenManager::refresh_problem)
    }

    /// Whether a request now could be served by it: not out of rotation, and not without a
    /// usable token because its refresh fails (a due probe does not make such an account
    /// available: it would fail the request it is tried with).
    pub(super) fn available(&self, now: Instant) -> bool {
        let up = !matches!(self.health().avail(now), Avail::Down(_));
        up && self.refresh_problem().is_none()
    }

    pub(super) fn profile_arn(&self) -> Option<String> {
        self.tokens
            .as_ref()
            .and_then(TokenManager::profile_arn_for_requests)
    }
}

/// One account's figures and state, for `/health/accounts` (no secrets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountSnapshot {
    pub name: String,
    pub state: &'static str,
    /// Whether a request now could go to it.
    pub available: bool,
    pub auth_type: Option<&'static str>,
    pub source: Option<&'static str>,
    pub protocol: Option<&'static str>,
    pub region: Option<String>,
    pub token_expires_at: Option<String>,
    pub token_expires_in_secs: Option<u64>,
    /// When a cooling, parked or refresh-failing account is next tried (RFC 3339).
    pub retry_at: Option<String>,
    pub retry_in_secs: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Why the account has no usable token: its last refresh failed and its access token has
    /// expired (the failure, naming the credential source). The account is then not
    /// available, and `/health` counts it so.
    pub refresh_error: Option<String>,
    pub priority: i32,
    pub weight: u32,
    pub in_flight: usize,
    /// Upstream attempts sent to it since start.
    pub requests: u64,
    /// Attempts that failed.
    pub errors: u64,
    /// Credits metered on its answers since start.
    pub credits: f64,
    pub token_refreshes: u64,
    pub token_refresh_failures: u64,
}

impl<'a> From<&'a AccountSnapshot> for crate::layers::metrics::AccountGauge<'a> {
    fn from(a: &'a AccountSnapshot) -> Self {
        crate::layers::metrics::AccountGauge {
            name: &a.name,
            state: a.state,
            available: a.available,
            token_refreshes: a.token_refreshes,
            token_refresh_failures: a.token_refresh_failures,
        }
    }
}
